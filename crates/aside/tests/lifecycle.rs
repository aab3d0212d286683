//! Run, watch, stop and collect: the life of one process through the real CLI and daemon.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn lines(out: &str) -> Vec<&str> {
    out.lines().collect()
}

#[test]
fn full_cycle_run_status_logs_wait_result_inbox() {
    let env = Env::new();
    // Pauses between writes: two pipes cannot order writes the shim sees at the same moment.
    let p = env.run(&[
        "--name",
        "job",
        "echo one; sleep 0.1; echo two >&2; sleep 0.1; echo three",
    ]);
    assert_eq!(p["name"], "job");
    assert_eq!(p["owner"], "human");
    assert!(p["pid"].as_u64().is_some(), "run answers with the pid: {p}");

    let w = env.wait_exit("job");
    assert_eq!(w["outcome"], "exited");
    assert_eq!(w["process"]["status"], "completed");
    assert_eq!(w["process"]["exit_code"], 0);

    // wait --exit returns once output is fully captured: logs shows the last line at once.
    let out = env.aside(&["logs", "job"]).ok();
    assert_eq!(lines(&out.stdout), ["one", "three"]);
    let err = env.aside(&["logs", "job", "--stderr"]).ok();
    assert_eq!(lines(&err.stdout), ["two"]);
    let all = env.aside(&["logs", "job", "--streams", "both"]).ok();
    assert_eq!(lines(&all.stdout), ["one", "[stderr] two", "three"]);

    let st = env.status("job");
    assert_eq!(st["status"], "completed");
    assert!(st["ended_at"].is_string());

    let r = env.aside(&["result", "job", "--json"]).ok().json();
    assert_eq!(r["status"], "completed");
    assert_eq!(r["exit_code"], 0);
    assert_eq!(r["output"]["stdout_bytes"], 10);
    assert_eq!(r["output"]["stderr_bytes"], 4);
    assert!(r["output"]["head"].as_str().unwrap().contains("three"));

    let inbox = env.aside(&["inbox", "--json"]).ok().json();
    let notes = inbox["notifications"].as_array().unwrap();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0]["id"], p["run_id"]);
    assert_eq!(notes[0]["result"]["name"], "job");

    // Unread results show in plain `status`; once acknowledged only `--all` shows them.
    let listed = env.aside(&["status", "--json"]).ok().json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let run_id = p["run_id"].as_str().unwrap();
    env.aside(&["inbox", "--ack", run_id]).ok();
    let inbox = env.aside(&["inbox", "--json"]).ok().json();
    assert!(inbox["notifications"].as_array().unwrap().is_empty());
    let listed = env.aside(&["status", "--json"]).ok().json();
    assert!(listed.as_array().unwrap().is_empty());
    assert_eq!(env.status_all().len(), 1);
}

#[test]
fn missing_command_fails_with_exit_127() {
    let env = Env::new();
    env.run(&["--name", "nope", "definitely-not-a-command-xyz"]);
    let w = env.wait_exit("nope");
    assert_eq!(w["process"]["status"], "failed");
    assert_eq!(w["process"]["exit_code"], 127);
    let err = env.aside(&["logs", "nope", "--stderr"]).ok();
    assert!(err.stdout.contains("not found"), "{}", err.stdout);

    // The same without a shell: an argv whose program does not exist.
    let o = env.aside(&[
        "run",
        "--name",
        "argv",
        "--",
        "definitely-not-a-command-xyz",
        "-v",
    ]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("failed to start"), "{}", o.stderr);
    assert_eq!(env.status("argv")["exit_code"], 127);

    // Foreground mode exits with the child's code.
    let o = env.aside(&["run", "--name", "fg", "--wait", "exit 42"]);
    assert_eq!(o.code, 42, "{}", o.stderr);
}

#[test]
fn a_command_the_kernel_refuses_after_its_pid_was_given_ends_failed_saying_why() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    // There and executable when the shim looks before the fork, refused by `exec` after it:
    // open for writing (ETXTBSY), as a program replaced while it starts would be.
    let prog = env.write("busy", "#!/bin/sh\necho never\n");
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _writer = std::fs::OpenOptions::new().write(true).open(&prog).unwrap();
    let started = env.run(&["--name", "busy", "--", prog.to_str().unwrap()]);
    assert!(started["pid"].as_i64().is_some(), "{started}");
    let w = env.wait_exit("busy");
    assert_eq!(w["process"]["status"], "failed", "{w}");
    let logs = env.aside(&["logs", "busy"]).ok();
    assert!(
        logs.stdout.contains("could not start") && logs.stdout.contains("Text file busy"),
        "{}",
        logs.stdout
    );
    assert!(!logs.stdout.contains("never"), "{}", logs.stdout);
    // The shim is gone with its run, its child reaped: nothing of it is left running.
    let run_id = w["process"]["run_id"].as_str().unwrap();
    eventually(Duration::from_secs(10), "the shim to end", || {
        pids_with_cmdline(run_id).is_empty()
    });
}

#[test]
fn the_command_gets_the_runs_environment_and_never_the_shims_own() {
    let env = Env::new();
    let mark = marker("tunables");
    // The daemon tunes glibc for the shim (its heap) with GLIBC_TUNABLES; the command must
    // not inherit that, nor lose the client's own setting.
    let run = |name: &str, client_tunables: Option<&str>| {
        let mut c = env.command();
        match client_tunables {
            Some(t) => c.env("GLIBC_TUNABLES", t),
            None => c.env_remove("GLIBC_TUNABLES"),
        };
        let script = format!("echo \"[${{GLIBC_TUNABLES-unset}}]\"; sleep 30; : {mark}");
        let o = c
            .args(["run", "--json", "--name", name, &script])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    run("plain", None);
    run("tuned", Some("glibc.malloc.check=0"));
    for (name, seen) in [("plain", "[unset]"), ("tuned", "[glibc.malloc.check=0]")] {
        env.aside(&["wait", name, "--until", "]", "--timeout", "20s"])
            .ok();
        let out = env.aside(&["logs", name]).ok().stdout;
        assert_eq!(out.trim(), seen, "{name}");
    }
    // The shim itself (the command's parent) runs with the tunable.
    let pid = env.status("plain")["pid"].as_i64().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let shim: i64 = after.split(' ').nth(1).unwrap().parse().unwrap();
    let environ = std::fs::read(format!("/proc/{shim}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        environ
            .split('\0')
            .any(|v| v == "GLIBC_TUNABLES=glibc.malloc.tcache_count=0"),
        "{environ}"
    );
    // And with nothing of the daemon's environment but what it reads itself (the test's
    // ASIDE_HOME, above all, is not there).
    let names: Vec<&str> = environ
        .split('\0')
        .filter(|v| !v.is_empty())
        .map(|v| v.split('=').next().unwrap_or(v))
        .collect();
    for name in &names {
        assert!(
            ["PATH", "GLIBC_TUNABLES", "ASIDE_SHIM_NOFILE"].contains(name),
            "the shim's environment has {name}: {environ}"
        );
    }
    assert!(names.contains(&"PATH"), "{environ}");
    env.aside(&["stop", "plain"]).ok();
    env.aside(&["stop", "tuned"]).ok();
}

/// The signals a process ignores, from its `/proc/PID/status` (`SigIgn`, a mask: bit N-1 for
/// signal N).
fn ignored_signals(pid: i64) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .unwrap()
        .trim();
    u64::from_str_radix(mask, 16).unwrap()
}

#[test]
fn the_shim_ignores_sigpipe_and_its_command_does_not() {
    // A shim whose report finds the daemon gone must get EPIPE, not die of SIGPIPE (the
    // small shim starts without Rust's runtime, which would ignore it); the command starts
    // with SIGPIPE at its default, as from a shell, so `yes | head` ends.
    let env = Env::new();
    let mark = marker("sigpipe");
    let o = env
        .command()
        .args([
            "run",
            "--json",
            "--name",
            "pipe",
            &format!("sleep 30; : {mark}"),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pid = env.status("pipe")["pid"].as_i64().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let shim: i64 = after.split(' ').nth(1).unwrap().parse().unwrap();
    let sigpipe = 1u64 << (13 - 1);
    assert_ne!(
        ignored_signals(shim) & sigpipe,
        0,
        "the shim does not ignore SIGPIPE"
    );
    assert_eq!(
        ignored_signals(pid) & sigpipe,
        0,
        "the command ignores SIGPIPE"
    );
    env.aside(&["stop", "pipe"]).ok();
}

#[test]
fn empty_output_is_completed_empty() {
    let env = Env::new();
    env.run(&["--name", "quiet", "true"]);
    assert_eq!(
        env.wait_exit("quiet")["process"]["status"],
        "completed_empty"
    );
    // Nothing to show is exit 0 (agent-procs' too), said on stderr.
    let o = env.aside(&["logs", "quiet"]);
    assert_eq!((o.code, o.stdout.as_str()), (0, ""), "{}", o.stderr);
    assert!(
        o.stderr.contains("without writing any stdout"),
        "{}",
        o.stderr
    );
}

#[test]
fn timeout_kills_the_whole_tree() {
    let env = Env::new();
    let m = marker("tmo");
    let cmd = format!(
        "setsid sleep 300 {m} & (sleep 301 {m} &); nohup sleep 302 {m} >/dev/null 2>&1 & sleep 303 {m}"
    );
    let cmd = cmd.replace(&format!(" {m}"), &format!(" --{m}"));
    // GNU sleep rejects unknown options, so use a harmless variable instead.
    let cmd = cmd.replace(&format!("--{m}"), "");
    let cmd = format!("export M={m}; {cmd}");
    env.run(&[
        "--name",
        "tree",
        "--timeout",
        "1s",
        "--grace",
        "500ms",
        &cmd,
    ]);
    let w = env.wait_exit("tree");
    assert_eq!(w["process"]["status"], "timed_out");
    let logs = env.aside(&["logs", "tree"]).ok().stdout;
    assert!(
        logs.contains("[aside] timed out after 1s: SIGTERM to"),
        "{logs}"
    );
    let leftovers = pids_with_env("M", &m);
    assert!(
        leftovers.is_empty(),
        "processes of the tree survived: {leftovers:?}"
    );
}

/// Pids whose environment has `key=value`.
fn pids_with_env(key: &str, value: &str) -> Vec<i32> {
    let needle = format!("{key}={value}");
    let mut out = Vec::new();
    for pid in all_pids() {
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ"))
            && env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes())
            && alive(pid)
        {
            out.push(pid);
        }
    }
    out
}

#[test]
fn stop_kills_setsid_grandchild_and_double_forked_daemon() {
    let env = Env::new();
    let m = marker("stp");
    let script = env.write(
        "tree.sh",
        "setsid sh -c 'sleep 400' &\n\
         sh -c 'sh -c \"sleep 401\" &' \n\
         echo spawned\n\
         sleep 402\n",
    );
    let cmd = format!("export M={m}; sh {}", script.display());
    env.run(&["--name", "svc", &cmd]);
    env.aside(&["wait", "svc", "--until", "spawned", "--timeout", "10s"])
        .ok();
    eventually(Duration::from_secs(5), "the tree to be up", || {
        pids_with_env("M", &m).len() >= 4
    });
    let before = pids_with_env("M", &m);
    let stopped = env.aside(&["stop", "svc", "--json"]).ok().json();
    assert_eq!(stopped["status"], "stopped");
    assert_eq!(stopped["stopped_by"], "human");
    let left: Vec<i32> = before.into_iter().filter(|p| alive(*p)).collect();
    assert!(left.is_empty(), "survived stop: {left:?}");
    // Stopping again is idempotent.
    let again = env.aside(&["stop", "svc", "--json"]).ok().json();
    assert_eq!(again["status"], "stopped");
}

#[test]
fn main_exit_kills_leftovers_and_says_so() {
    let env = Env::new();
    let m = marker("lft");
    let cmd = format!("export M={m}; nohup sleep 500 >/dev/null 2>&1 & echo main done");
    env.run(&["--name", "leaver", "--grace", "300ms", &cmd]);
    let w = env.wait_exit("leaver");
    assert_eq!(w["process"]["status"], "completed");
    let logs = env.aside(&["logs", "leaver"]).ok().stdout;
    assert!(
        logs.contains("[aside] main process ended (exit 0); SIGTERM to 1 leftover process"),
        "{logs}"
    );
    assert!(pids_with_env("M", &m).is_empty());
}

#[test]
fn sigterm_ignoring_process_is_killed_after_grace_while_status_answers() {
    let env = Env::new();
    env.run(&[
        "--name",
        "stubborn",
        "trap 'echo ignoring TERM' TERM; echo armed; while :; do sleep 0.05; done",
    ]);
    env.aside(&["wait", "stubborn", "--until", "armed", "--timeout", "10s"])
        .ok();
    let home = env.home.clone();
    let work = env.work.clone();
    let stopper = std::thread::spawn(move || {
        std::process::Command::new(BIN)
            .env("ASIDE_HOME", &home)
            .current_dir(&work)
            .args(["stop", "stubborn", "--grace", "3s", "--json"])
            .output()
            .expect("stop")
    });
    // The stop is under way once the process has seen its SIGTERM...
    env.aside(&[
        "wait",
        "stubborn",
        "--until",
        "ignoring TERM",
        "--timeout",
        "10s",
    ])
    .ok();
    // ...and status answers during the grace period, before the SIGKILL.
    let st = env.status("stubborn");
    assert_eq!(
        st["status"], "running",
        "status must answer while the stop waits: {st}"
    );
    let out: Out = stopper.join().expect("stopper").into();
    let p = out.ok().json();
    assert_eq!(p["status"], "stopped");
    assert_eq!(p["signal"], "SIGKILL");
    let logs = env.aside(&["logs", "stubborn"]).ok().stdout;
    assert!(
        logs.contains("grace period of 3s over: SIGKILL to"),
        "{logs}"
    );
}

#[test]
fn stop_with_a_signal_and_restart_makes_a_new_run() {
    let env = Env::new();
    let first = env.run(&[
        "--name",
        "loop",
        "trap 'echo got INT; exit 5' INT; echo up; while :; do sleep 0.05; done",
    ]);
    env.aside(&["wait", "loop", "--until", "up", "--timeout", "10s"])
        .ok();
    let p = env
        .aside(&["stop", "loop", "--signal", "INT", "--json"])
        .ok()
        .json();
    assert_eq!(p["status"], "stopped");
    assert_eq!(p["exit_code"], 5);
    let r = env.aside(&["restart", "loop", "--json"]).ok().json();
    assert_eq!(r["id"], first["id"]);
    assert_ne!(r["run_id"], first["run_id"]);
    assert_eq!(r["restarts"], 1);
    assert_eq!(r["status"], "running");
    env.aside(&["wait", "loop", "--until", "up", "--timeout", "10s"])
        .ok();
    // Logs of the earlier run stay readable.
    let old = env
        .aside(&["logs", "loop", "--run", first["run_id"].as_str().unwrap()])
        .ok();
    assert!(old.stdout.contains("got INT"), "{}", old.stdout);
}

#[test]
fn only_the_owner_or_a_human_may_stop() {
    let env = Env::new();
    env.run(&[
        "--name", "mine", "--owner", "agent-a", "--team", "t1", "sleep 60",
    ]);
    let o = env.aside(&["stop", "mine", "--owner", "agent-b"]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr
            .contains("agent-b may not stop \"mine\": it is owned by agent-a"),
        "{}",
        o.stderr
    );
    assert_eq!(env.status("mine")["status"], "running");
    let o = env.aside(&["restart", "mine", "--owner", "agent-b"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    // stop-all by another agent leaves it alone and says so.
    let o = env
        .command()
        .env("ASIDE_OWNER", "agent-b")
        .args(["stop-all"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(env.status("mine")["status"], "running");
    let team = env.aside(&["status", "--team", "t1", "--json"]).ok().json();
    assert_eq!(team.as_array().unwrap().len(), 1);
    let p = env
        .aside(&["stop", "mine", "--owner", "agent-a", "--json"])
        .ok()
        .json();
    assert_eq!(p["stopped_by"], "agent-a");
    // Its result goes to its owner's inbox, not the human's.
    let inbox = env
        .aside(&["inbox", "--owner", "agent-a", "--json"])
        .ok()
        .json();
    assert_eq!(inbox["notifications"].as_array().unwrap().len(), 1);
    let human = env.aside(&["inbox", "--json"]).ok().json();
    assert!(human["notifications"].as_array().unwrap().is_empty());
}

#[test]
fn wait_until_sees_output_before_and_after_and_fails_on_exit_without_match() {
    let env = Env::new();
    let gate = env.work.join("gate");
    let cmd = format!(
        "echo early-line; while [ ! -e {} ]; do sleep 0.02; done; echo late-line; sleep 60",
        gate.display()
    );
    env.run(&["--name", "w", &cmd]);
    // Written before the call.
    env.aside(&["wait", "w", "--until", "early-line", "--timeout", "10s"])
        .ok();
    let home = env.home.clone();
    let waiter = std::thread::spawn(move || {
        std::process::Command::new(BIN)
            .env("ASIDE_HOME", home)
            .args([
                "wait",
                "w",
                "--until",
                "late-l[a-z]+",
                "--regex",
                "--timeout",
                "20s",
            ])
            .output()
            .expect("wait")
    });
    std::fs::write(&gate, "").unwrap();
    let o: Out = waiter.join().unwrap().into();
    assert_eq!(o.ok().stdout, "late-line\n", "the matched line alone");

    env.run(&["--name", "short", "echo something else; exit 0"]);
    let o = env.aside(&[
        "wait",
        "short",
        "--until",
        "never-printed",
        "--timeout",
        "20s",
    ]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("without printing"), "{}", o.stderr);

    let o = env.aside(&["wait", "w", "--until", "never", "--timeout", "300ms"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("timed out"), "{}", o.stderr);
}

#[test]
fn logs_since_cursor_tail_head_grep_and_follow() {
    let env = Env::new();
    let gate = env.work.join("gate");
    let cmd = format!(
        "for i in 1 2 3 4 5; do echo line$i; done; while [ ! -e {} ]; do sleep 0.02; done; echo line6",
        gate.display()
    );
    env.run(&["--name", "l", &cmd]);
    env.aside(&["wait", "l", "--until", "line5", "--timeout", "10s"])
        .ok();
    let tail = env.aside(&["logs", "l", "--tail", "2"]).ok();
    assert_eq!(lines(&tail.stdout), ["line4", "line5"]);
    let head = env.aside(&["logs", "l", "--head", "1"]).ok();
    assert_eq!(lines(&head.stdout), ["line1"]);
    let grep = env.aside(&["logs", "l", "--grep", "line[24]"]).ok();
    assert_eq!(lines(&grep.stdout), ["line2", "line4"]);
    let json = env.aside(&["logs", "l", "--json"]).ok();
    let last: Value = serde_json::from_str(json.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["stream"], "stdout");
    assert!(last["ts"].is_string());
    let cursor = last["cursor"].as_u64().unwrap().to_string();

    let home = env.home.clone();
    let follower = std::thread::spawn(move || {
        std::process::Command::new(BIN)
            .env("ASIDE_HOME", home)
            .args(["logs", "l", "--follow", "--tail", "1"])
            .output()
            .expect("follow")
    });
    std::fs::write(&gate, "").unwrap();
    env.wait_exit("l");
    let f: Out = follower.join().unwrap().into();
    let f = f.ok();
    assert_eq!(lines(&f.stdout).last(), Some(&"line6"), "{}", f.stdout);

    let since = env.aside(&["logs", "l", "--since", &cursor]).ok();
    assert_eq!(lines(&since.stdout), ["line6"]);
}

#[test]
fn trailing_ampersand_is_stripped() {
    let env = Env::new();
    let p = env.run(&["--name", "amp", "echo bg &"]);
    assert_eq!(p["command"], "echo bg");
    env.wait_exit("amp");
    assert_eq!(env.aside(&["logs", "amp"]).ok().stdout, "bg\n");
}

#[test]
fn run_wait_streams_output_and_times_out_into_the_background() {
    let env = Env::new();
    let o = env.aside(&[
        "run",
        "--name",
        "fg",
        "--wait",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(o.code, 3);
    assert_eq!(o.stdout, "out\n");
    assert!(o.stderr.contains("err\n"), "{}", o.stderr);
    assert!(o.stderr.contains("fg failed (exit 3)"), "{}", o.stderr);

    let o = env.aside(&[
        "run",
        "--name",
        "slow",
        "--wait=300ms",
        "echo begun; sleep 30",
    ]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("still running in the background"),
        "{}",
        o.stderr
    );
    assert_eq!(env.status("slow")["status"], "running");
}

#[test]
fn env_and_cwd_are_the_callers_with_overrides() {
    let env = Env::new();
    let sub = env.work.join("sub");
    std::fs::create_dir(&sub).unwrap();
    let o = env
        .command()
        .env("FROM_CALLER", "yes")
        .args([
            "run", "--name", "e", "--cwd", "sub", "--env", "EXTRA=1", "--json",
        ])
        .arg("echo $FROM_CALLER $EXTRA $(pwd)")
        .output()
        .unwrap();
    assert!(o.status.success());
    env.wait_exit("e");
    let out = env.aside(&["logs", "e"]).ok().stdout;
    assert_eq!(out.trim(), format!("yes 1 {}", sub.display()));
    // stdin is /dev/null: a reader sees EOF at once.
    env.run(&["--name", "stdin", "cat; echo eof"]);
    env.wait_exit("stdin");
    assert_eq!(env.aside(&["logs", "stdin"]).ok().stdout, "eof\n");
}

#[test]
fn commands_keep_the_open_files_limit_the_daemon_started_with() {
    let env = Env::new();
    // The daemon starts under a low soft limit and raises its own; commands get 512 back.
    let o: Out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -Sn 512 && exec {BIN} run --name nofile 'ulimit -Sn'"
        ))
        .env("ASIDE_HOME", &env.home)
        .current_dir(&env.work)
        .output()
        .unwrap()
        .into();
    o.ok();
    env.wait_exit("nofile");
    assert_eq!(env.aside(&["logs", "nofile"]).ok().stdout, "512\n");
    // The next run's shim was started ahead, by the daemon alone: the same limit.
    env.aside(&["run", "--name", "nofile2", "ulimit -Sn"]).ok();
    env.wait_exit("nofile2");
    assert_eq!(env.aside(&["logs", "nofile2"]).ok().stdout, "512\n");
    let daemon = env.daemon_pid().unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{daemon}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert!(
        !line.contains(" 512 "),
        "the daemon raised its own limit: {line}"
    );
}

#[test]
fn shims_run_from_the_small_binary_or_fall_back_to_aside_itself() {
    // Beside the built `aside` lies `aside-shim`: the daemon uses it.
    let env = Env::new();
    let p = env.run(&["--name", "small", "sleep 30"]);
    let shim: Value = serde_json::from_str(
        &std::fs::read_to_string(env.run_dir(p["run_id"].as_str().unwrap()).join("shim.json"))
            .unwrap(),
    )
    .unwrap();
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", shim["shim_pid"])).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).contains("aside-shim"));

    // A lone copy of `aside` runs its shims as `aside __shim`.
    let lone_dir = env.dir.path().join("bin");
    std::fs::create_dir_all(&lone_dir).unwrap();
    let lone = lone_dir.join("aside");
    std::fs::copy(BIN, &lone).unwrap();
    let other = Env::new();
    let run = |args: &[&str]| -> Out {
        // A just-written executable can be briefly "busy" (ETXTBSY) while a process forked
        // by another test thread still holds the copy's write descriptor: retry the exec.
        for _ in 0..100 {
            match std::process::Command::new(&lone)
                .args(args)
                .env("ASIDE_HOME", &other.home)
                .current_dir(&other.work)
                .output()
            {
                Ok(o) => return o.into(),
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                Err(e) => panic!("cannot run the copy of aside: {e}"),
            }
        }
        panic!("the copy of aside stayed busy");
    };
    run(&["run", "--name", "lone", "echo via fallback"]).ok();
    let w = run(&["wait", "lone", "--exit", "--timeout", "30s"]).ok();
    assert_eq!(w.stdout, "exited with code 0\n");
    assert_eq!(run(&["logs", "lone"]).ok().stdout, "via fallback\n");
    run(&["daemon", "stop"]).ok();
}

#[test]
fn interactive_stdin_takes_writes_even_across_a_daemon_crash() {
    let env = Env::new();
    env.run(&[
        "--name",
        "q",
        "--interactive",
        "read a; echo \"got $a\"; read b; echo \"then $b\"",
    ]);
    env.aside(&["stdin", "q", "first"]).ok();
    env.aside(&["wait", "q", "--until", "got first", "--timeout", "10s"])
        .ok();
    assert_eq!(
        env.status("q")["status"],
        "running",
        "it waits for more, no EOF in between"
    );
    env.kill_daemon();
    env.aside(&["stdin", "q", "second"]).ok();
    let w = env.wait_exit("q");
    assert_eq!(w["process"]["status"], "completed");
    assert_eq!(
        env.aside(&["logs", "q"]).ok().stdout,
        "got first\nthen second\n"
    );
    // Not interactive, or ended: a clear refusal.
    let o = env.aside(&["stdin", "q", "late"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("has ended"), "{}", o.stderr);
    env.run(&["--name", "plain", "sleep 30"]);
    let o = env.aside(&["stdin", "plain", "x"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("not started interactive"), "{}", o.stderr);
}

#[test]
fn a_processs_log_spans_its_runs_and_a_follow_goes_through_restarts() {
    let env = Env::new();
    let p = env.run(&[
        "--name",
        "flaky",
        "--autorestart",
        "on-failure",
        "--max-restarts",
        "2",
        "--restart-delay",
        "100",
        "echo attempt-$$; exit 1",
    ]);
    let first_run = p["run_id"].as_str().unwrap().to_string();
    // Followed from the start: the follow goes through both restarts and ends by itself once
    // the restarts are used up.
    let follow = env
        .command()
        .args([
            "logs",
            "flaky",
            "--follow",
            "--timeout",
            "0",
            "--streams",
            "both",
        ])
        .output()
        .expect("logs --follow");
    let followed = String::from_utf8_lossy(&follow.stdout);
    assert_eq!(followed.matches("attempt-").count(), 3, "{followed}");
    assert_eq!(
        followed.matches("[aside] restarted").count(),
        2,
        "{followed}"
    );
    eventually(
        Duration::from_secs(20),
        "the restarts to be used up",
        || env.status("flaky")["autorestart"]["state"] == "exhausted",
    );
    // Read back: every run in order, the restart notes between them.
    let all = env
        .aside(&["logs", "flaky", "--streams", "both"])
        .ok()
        .stdout;
    let lines: Vec<&str> = all.lines().collect();
    let attempts: Vec<usize> = (0..lines.len())
        .filter(|i| lines[*i].starts_with("attempt-"))
        .collect();
    assert_eq!(attempts.len(), 3, "{all}");
    assert!(
        lines[attempts[0] + 1..attempts[1]]
            .iter()
            .any(|l| l.contains("restarted")),
        "{all}"
    );
    // One run by its id, or the latest.
    let one = env
        .aside(&["logs", &first_run, "--streams", "both"])
        .ok()
        .stdout;
    assert_eq!(one.matches("attempt-").count(), 1, "{one}");
    let latest = env.aside(&["logs", "flaky", "--run", "latest"]).ok().stdout;
    assert_eq!(latest.matches("attempt-").count(), 1, "{latest}");
    assert!(
        !latest.contains(one.lines().next().unwrap_or("?")),
        "another run's"
    );
}

#[test]
fn small_things_say_what_happened() {
    let env = Env::new();
    // Completions into a pipe that closes early: no panic.
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{BIN} completions bash | head -1"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stderr).is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // `--wait 2s CMD`: the duration, then the command.
    let o = env.aside(&["run", "--wait", "5s", "echo", "waited"]).ok();
    assert!(o.stdout.contains("waited"), "{}", o.stdout);
    // What was shown in the foreground is not left unread.
    let inbox = env.aside(&["inbox", "--json"]).ok().json();
    assert_eq!(inbox["notifications"], serde_json::json!([]), "{inbox}");
    // A run that wrote nothing, and a stop of something already ended, say so.
    env.run(&["--name", "quiet", "true"]);
    env.wait_exit("quiet");
    let o = env.aside(&["logs", "quiet"]).ok();
    assert!(
        o.stderr.contains("without writing any stdout"),
        "{}",
        o.stderr
    );
    let o = env.aside(&["stop", "quiet"]).ok();
    assert_eq!(o.stdout, "stopped quiet\n");
    assert!(o.stderr.contains("already ended"), "{}", o.stderr);
    // A bare number for --restart-backoff is seconds, as for every duration but --restart-delay.
    let p = env.run(&[
        "--name",
        "b",
        "--autorestart",
        "always",
        "--restart-backoff",
        "2",
        "sleep 60",
    ]);
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(env.run_dir(p["run_id"].as_str().unwrap()).join("spec.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(spec["restart"]["backoff_max_ms"], 2000, "{spec}");
}

#[test]
fn a_run_reports_progress_from_inside() {
    let env = Env::new();
    // One report, then (once the test says go) ten in quick succession, then it keeps running.
    let p = env.run(&[
        "--name",
        "rounds",
        &format!(
            "{BIN} progress 'round 1 of 11' --json '{{\"round\":1}}' && \
             while [ ! -e go ]; do sleep 0.05; done && \
             for i in 2 3 4 5 6 7 8 9 10 11; do {BIN} progress \"round $i of 11\"; done && sleep 60"
        ),
    ]);
    let run = p["run_id"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(20), "the first report shows", || {
        env.status("rounds")["progress"]["text"] == "round 1 of 11"
    });
    assert_eq!(env.status("rounds")["progress"]["data"]["round"], 1);
    std::fs::write(env.work.join("go"), "").unwrap();
    eventually(Duration::from_secs(20), "the last report shows", || {
        env.status("rounds")["progress"]["text"] == "round 11 of 11"
    });
    let status = env.status("rounds");
    assert_eq!(status["progress"].get("data"), None, "{status}");
    // `status` says it, and `status NAME` lists the run's latest reports in order.
    let o = env.aside(&["status"]).ok();
    assert!(o.stdout.contains("— round 11 of 11"), "{}", o.stdout);
    let o = env.aside(&["status", "rounds"]).ok();
    let history = o.stdout.split("progress of run").nth(1).unwrap_or_default();
    let at = |r: &str| {
        history
            .find(r)
            .unwrap_or_else(|| panic!("{r}: {}", o.stdout))
    };
    assert!(at("round 2 of") < at("round 7 of") && at("round 7 of") < at("round 11 of"));
    assert!(!history.contains("round 1 of"), "ten shown: {}", o.stdout);
    // The token is the run's: not shown, and a forged one is refused, leaving things as they were.
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(env.run_dir(&run).join("spec.json")).unwrap(),
    )
    .unwrap();
    let token = spec["env"]["ASIDE_RUN_TOKEN"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 32);
    assert!(
        !env.aside(&["status", "--json"])
            .ok()
            .stdout
            .contains(&token)
    );
    let report = |token: &str, text: &str| -> Out {
        env.command()
            .args(["progress", text])
            .env("ASIDE_RUN_ID", &run)
            .env("ASIDE_RUN_TOKEN", token)
            .output()
            .unwrap()
            .into()
    };
    let o = report(&"0".repeat(32), "forged");
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("does not come from run"), "{}", o.stderr);
    let o: Out = env
        .command()
        .args(["progress", "listed", "--json", "[1]"])
        .env("ASIDE_RUN_ID", &run)
        .env("ASIDE_RUN_TOKEN", &token)
        .output()
        .unwrap()
        .into();
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("takes a JSON object"), "{}", o.stderr);
    assert_eq!(env.status("rounds")["progress"]["text"], "round 11 of 11");
    // Outside a run there is nothing to report on.
    let o = env.aside(&["progress", "x"]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("from inside a run"), "{}", o.stderr);
    // The report the throttle held back is announced while the run goes on.
    events_until(&env, |e| {
        e["kind"] == "run_progress" && e["data"]["process"]["progress"]["text"] == "round 11 of 11"
    });
    // Once the run ended, its token reports nothing more.
    env.aside(&["stop", "rounds"]).ok();
    let o = report(&token, "late");
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("is not running"), "{}", o.stderr);
    assert_eq!(env.status("rounds")["progress"]["text"], "round 11 of 11");
    // Events: throttled (fewer than the eleven reports), the latest report winning, before
    // the end.
    let events = events_until(&env, |e| e["kind"] == "run_exited");
    let texts = progress_texts(&events, "rounds");
    assert_eq!(
        texts.first().map(String::as_str),
        Some("round 1 of 11"),
        "{texts:?}"
    );
    assert_eq!(
        texts.last().map(String::as_str),
        Some("round 11 of 11"),
        "{texts:?}"
    );
    assert!(texts.len() < 11, "{texts:?}");
    // A run that ends right after reporting: what it said last is announced before its end.
    env.run(&[
        "--name",
        "burst",
        &format!("{BIN} progress a && {BIN} progress b"),
    ]);
    let events = events_until(&env, |e| {
        e["kind"] == "run_exited" && e["data"]["process"]["name"] == "burst"
    });
    assert_eq!(progress_texts(&events, "burst"), ["a", "b"]);
}

/// The progress texts of process `name`'s `run_progress` events, in order.
fn progress_texts(events: &[Value], name: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["kind"] == "run_progress" && e["data"]["process"]["name"] == name)
        .map(|e| {
            e["data"]["process"]["progress"]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// The event log from the start up to the first event that `last` accepts (within 30 s).
fn events_until(env: &Env, last: impl Fn(&Value) -> bool) -> Vec<Value> {
    use std::io::BufRead;
    let mut child = env
        .command()
        .args(["events", "--since", "0", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("not the awaited event ({e}) after {out:?}"));
        let e: Value = serde_json::from_str(&line).unwrap();
        let done = last(&e);
        out.push(e);
        if done {
            break;
        }
    }
    child.kill().ok();
    child.wait().ok();
    out
}

/// The run directory a prestarted shim waits with (its last argument).
fn prestarted_dir(pid: i32) -> Option<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    cmdline
        .split(|b| *b == 0)
        .rfind(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
}

/// The daemon's waiting prestarted shims: their run directory holds no spec yet.
fn prestarted_shims(env: &Env) -> Vec<i32> {
    pids_with_cmdline("--prestarted")
        .into_iter()
        .filter(|pid| {
            prestarted_dir(*pid).is_some_and(|dir| {
                dir.starts_with(env.home.to_str().unwrap())
                    && !std::path::Path::new(&dir).join("spec.json").exists()
            })
        })
        .collect()
}

/// Runs `first` (`sleep 300`) and returns the shim the daemon then starts for the next run: it
/// waits, already started (and is no process of anyone's).
fn first_run_and_its_spare(env: &Env) -> i32 {
    env.run(&["--name", "first", "sleep 300"]);
    eventually(Duration::from_secs(10), "a prestarted shim", || {
        prestarted_shims(env).len() == 1
    });
    prestarted_shims(env)[0]
}

#[test]
fn a_prestarted_shim_that_died_costs_only_speed_and_none_outlives_the_daemon() {
    let env = Env::new();
    let spare = first_run_and_its_spare(&env);
    assert_eq!(env.status_all().len(), 1);
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(spare, libc::SIGKILL) };
    eventually(
        Duration::from_secs(10),
        "the prestarted shim to die",
        || !alive(spare),
    );
    // The next run starts a shim of its own, and runs as any other.
    let p = env.run(&["--name", "second", "echo after; sleep 300"]);
    assert_eq!(env.status("second")["status"], "running");
    let pid = p["pid"].as_i64().unwrap() as i32;
    assert!(alive(pid), "its pid is its command's: {p}");
    let w = env.aside(&["wait", "second", "--until", "after", "--timeout", "10"]);
    assert_eq!(w.code, 0, "{}", w.stderr);
    // And one that goes on the fast path again works the same.
    eventually(Duration::from_secs(10), "another prestarted shim", || {
        prestarted_shims(&env).len() == 1
    });
    env.run(&["--name", "third", "echo third"]);
    assert_eq!(env.wait_exit("third")["process"]["status"], "completed");
    assert_eq!(env.aside(&["logs", "third"]).ok().stdout, "third\n");
    // A stopped daemon leaves no waiting shim behind, nor the directory prepared for its run;
    // the runs' shims keep going.
    let waiting = prestarted_shims(&env);
    assert_eq!(waiting.len(), 1);
    let runs = env.home.join("runs");
    let unused = || {
        std::fs::read_dir(&runs)
            .unwrap()
            .flatten()
            .filter(|d| !d.path().join("spec.json").exists())
            .count()
    };
    assert_eq!(unused(), 1, "the waiting shim's directory is prepared");
    env.aside(&["daemon", "stop"]).ok();
    eventually(Duration::from_secs(10), "the waiting shim to end", || {
        waiting.iter().all(|p| !alive(*p))
    });
    assert_eq!(unused(), 0, "an unused prepared directory is removed");
    assert!(alive(pid), "a run's command outlives its daemon");
    env.aside(&["stop-all"]).ok();
}

/// The parent of `pid`, from its `/proc/PID/stat`.
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(1)?.parse().ok()
}

/// `POST /v1/processes` over the daemon's socket, as the CLI sends it; the answer's body.
fn post_run(env: &Env, name: &str, cmd: &str) -> Value {
    use std::io::{Read, Write};
    let body = serde_json::json!({
        "cmd": cmd, "name": name, "cwd": env.work.to_str().unwrap(),
        "env": {"PATH": std::env::var("PATH").unwrap()}, "owner": "human",
    })
    .to_string();
    let mut s = std::os::unix::net::UnixStream::connect(env.home.join("run/aside.sock")).unwrap();
    write!(
        s,
        "POST /v1/processes HTTP/1.1\r\nhost: aside\r\naside-protocol: 1\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 201"), "{answer}");
    serde_json::from_str(body).unwrap()
}

#[test]
fn back_to_back_runs_each_start_on_a_prestarted_shim() {
    let env = Env::new();
    env.run(&["--name", "first", "sleep 300"]);
    let daemon = env.daemon_pid().unwrap();
    eventually(Duration::from_secs(10), "a prestarted shim", || {
        prestarted_shims(&env).len() == 1
    });
    // Each `run` comes as soon as the one before has its answer (over the socket: no CLI to
    // start in between), while the next spare is still being made: it waits for that spare
    // rather than starting a shim of its own (the daemon's child, not the zygote's).
    let runs: Vec<Value> = (0..8)
        .map(|i| post_run(&env, &format!("next-{i}"), "sleep 300"))
        .collect();
    let own: Vec<String> = runs
        .iter()
        .filter_map(|r| {
            let run_id = r["run_id"].as_str().unwrap();
            let shim: Value = serde_json::from_str(
                &std::fs::read_to_string(env.run_dir(run_id).join("shim.json")).unwrap(),
            )
            .unwrap();
            let pid = shim["shim_pid"].as_i64().unwrap() as i32;
            (parent_of(pid) == Some(daemon)).then(|| r["name"].to_string())
        })
        .collect();
    // One may miss its spare on a machine busy with other tests (it waits 50 ms at most).
    assert!(
        own.len() <= 1,
        "runs that started a shim of their own: {own:?}"
    );
}

#[test]
fn prestarted_shims_come_from_one_zygote_that_is_replaced_when_it_dies_and_ends_with_its_daemon() {
    let env = Env::new();
    let daemon = {
        env.run(&["--name", "first", "sleep 300"]);
        env.daemon_pid().unwrap()
    };
    // The spare is forked by the zygote, the daemon's child, and shows its own arguments.
    eventually(Duration::from_secs(10), "a prestarted shim", || {
        prestarted_shims(&env).len() == 1
    });
    let spare = prestarted_shims(&env)[0];
    let zygote = parent_of(spare).unwrap();
    let cmdline = String::from_utf8_lossy(
        &std::fs::read(format!("/proc/{zygote}/cmdline")).unwrap_or_default(),
    )
    .replace('\0', " ");
    assert!(
        cmdline.contains("--zygote"),
        "the spare's parent is {cmdline}"
    );
    assert_eq!(
        parent_of(zygote),
        Some(daemon),
        "the zygote is the daemon's child"
    );
    // A run on it works as on any shim, its end seen on its own.
    env.run(&["--name", "forked", "echo forked"]);
    assert_eq!(env.wait_exit("forked")["process"]["status"], "completed");
    assert_eq!(env.aside(&["logs", "forked"]).ok().stdout, "forked\n");
    // A zygote that dies costs a run its speed, not its start; the next spare comes from a
    // new zygote.
    eventually(Duration::from_secs(10), "the next prestarted shim", || {
        prestarted_shims(&env).len() == 1
    });
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(zygote, libc::SIGKILL) };
    eventually(Duration::from_secs(10), "the zygote to die", || {
        !alive(zygote)
    });
    for name in ["after-1", "after-2", "after-3"] {
        env.run(&["--name", name, &format!("echo {name}")]);
        assert_eq!(env.wait_exit(name)["process"]["status"], "completed");
        assert_eq!(env.aside(&["logs", name]).ok().stdout, format!("{name}\n"));
    }
    eventually(Duration::from_secs(10), "a spare from a new zygote", || {
        prestarted_shims(&env)
            .first()
            .and_then(|s| parent_of(*s))
            .is_some_and(|z| z != zygote && z != daemon && parent_of(z) == Some(daemon))
    });
    let zygote = parent_of(prestarted_shims(&env)[0]).unwrap();
    // Stopped, the daemon leaves neither its zygote nor a waiting shim; runs go on.
    let running = env.status("first")["pid"].as_i64().unwrap() as i32;
    let waiting = prestarted_shims(&env);
    env.aside(&["daemon", "stop"]).ok();
    eventually(
        Duration::from_secs(10),
        "the zygote and the waiting shim to end",
        || !alive(zygote) && waiting.iter().all(|p| !alive(*p)),
    );
    assert!(alive(running), "a run's command outlives its daemon");
    env.aside(&["stop-all"]).ok();
}

#[test]
fn a_waiting_shim_told_sigterm_ends_unused_and_the_next_run_is_not_stopped() {
    let env = Env::new();
    let spare = first_run_and_its_spare(&env);
    let dir = prestarted_dir(spare).unwrap();
    // It sets up its signal handlers while it waits (the kernel's SigCgt mask says when)...
    let catches_term = || {
        let status = std::fs::read_to_string(format!("/proc/{spare}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .is_some_and(|m| m & (1 << (libc::SIGTERM - 1)) != 0)
    };
    eventually(
        Duration::from_secs(10),
        "the waiting shim to catch SIGTERM",
        catches_term,
    );
    // ...yet a SIGTERM ends it as it would end a shim that runs nothing.
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(spare, libc::SIGTERM) };
    eventually(Duration::from_secs(10), "the waiting shim to end", || {
        !alive(spare)
    });
    assert!(
        !std::path::Path::new(&dir).exists(),
        "its prepared directory {dir} is removed"
    );
    // The next run is not the one the signal was for.
    env.run(&["--name", "second", "echo second; sleep 300"]);
    let w = env.aside(&["wait", "second", "--until", "second", "--timeout", "10"]);
    assert_eq!(w.code, 0, "{}", w.stderr);
    assert_eq!(env.status("second")["status"], "running");
    env.aside(&["stop-all"]).ok();
}

#[test]
fn a_simple_command_is_its_own_pid_and_a_shell_line_still_runs_in_sh() {
    let env = Env::new();
    let comm = |p: &Value| {
        let pid = p["pid"].as_i64().unwrap();
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap()
            .trim()
            .to_string()
    };
    // No shell left between the shim and a plain program: the pid `run` gives is the program's.
    // (`run` answers once `sh` started; its `exec` of the program follows at once.)
    let simple = env.run(&["--name", "plain", "sleep 300"]);
    eventually(Duration::from_secs(10), "sh to become sleep", || {
        comm(&simple) == "sleep"
    });
    // A line that needs the shell keeps it (and its meaning).
    let shell = env.run(&["--name", "line", "sleep 300; echo never"]);
    assert_eq!(comm(&shell), "sh");
    env.run(&["--name", "builtin", "echo -n built; echo in"]);
    assert_eq!(env.wait_exit("builtin")["process"]["status"], "completed");
    assert_eq!(env.aside(&["logs", "builtin"]).ok().stdout, "builtin\n");
    env.aside(&["stop-all"]).ok();
}
