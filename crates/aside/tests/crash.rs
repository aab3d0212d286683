//! Losing nothing: `kill -9` of the daemon, a killed shim, restarts and the daemon's own life.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn notifications(env: &Env, owner: &str) -> Vec<Value> {
    let inbox = env
        .aside(&["inbox", "--owner", owner, "--json"])
        .ok()
        .json();
    inbox["notifications"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn kill_9_of_the_daemon_loses_no_process_output_exit_status_or_result() {
    let env = Env::new();
    let gate = env.work.join("gate");
    let wait_gate = format!("while [ ! -e {} ]; do sleep 0.02; done", gate.display());
    // 1. floods numbered lines from before the crash until after the restart (under its cap:
    //    no gap allowed), then stops by itself.
    let flood_gate = env.work.join("flood-gate");
    let flood = format!(
        "i=1; while [ ! -e {} ]; do echo $i; i=$((i+1)); done; echo $i; echo flood-end",
        flood_gate.display()
    );
    env.run(&["--name", "flood", "--log-cap", "256MiB", &flood]);
    // 2. exits while the daemon is down, with code 7.
    env.run(&[
        "--name",
        "downtime",
        &format!("echo before; {wait_gate}; echo after; exit 7"),
    ]);
    // 3. keeps running across the restart.
    env.run(&[
        "--name",
        "survivor",
        &format!("echo up; {wait_gate}; sleep 30"),
    ]);
    // 4. dies by a signal while the daemon is down.
    env.run(&["--name", "killed", &format!("{wait_gate}; kill -KILL $$")]);
    // 5. finished before the crash.
    env.run(&["--name", "early", "echo early"]);
    env.wait_exit("early");
    env.aside(&["wait", "survivor", "--until", "up", "--timeout", "10s"])
        .ok();

    let daemon = env.kill_daemon();

    // While the daemon is down: release the gate, and let those processes end.
    std::fs::write(&gate, "").unwrap();
    let downtime_pid = pid_of_run_with(&env, "exit 7");
    let killed_pid = pid_of_run_with(&env, "kill -KILL");
    eventually(Duration::from_secs(10), "downtime to exit", || {
        !alive(downtime_pid)
    });
    eventually(Duration::from_secs(10), "killed to die", || {
        !alive(killed_pid)
    });
    let flood_dir = run_dir_with(&env, "flood-end");
    assert!(
        !flood_dir.join("exit.json").exists(),
        "the flood goes on through the crash"
    );

    // Any command starts a new daemon, which reconciles.
    let procs = env.status_all();
    assert_eq!(env.status("flood")["status"], "running");
    std::fs::write(&flood_gate, "").unwrap();
    env.wait_exit("flood");
    assert_ne!(env.daemon_pid(), Some(daemon));
    let by_name = |n: &str| -> Value {
        procs
            .iter()
            .find(|p| p["name"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("{n} missing from {procs:?}"))
    };
    assert_eq!(by_name("downtime")["status"], "failed");
    assert_eq!(by_name("downtime")["exit_code"], 7);
    assert_eq!(by_name("killed")["status"], "failed");
    assert_eq!(by_name("killed")["signal"], "SIGKILL");
    assert_eq!(by_name("survivor")["status"], "running");
    assert_eq!(by_name("early")["status"], "completed");

    let downtime_logs = env.aside(&["logs", "downtime"]).ok().stdout;
    assert_eq!(downtime_logs, "before\nafter\n");
    // The flood's output is whole: every number, in order, across the crash.
    assert_eq!(env.status("flood")["status"], "completed");
    let flood = env.aside(&["logs", "flood", "--tail", "all"]).ok().stdout;
    let mut expected = 1u64;
    let mut lines = flood.lines();
    for line in lines.by_ref() {
        if line == "flood-end" {
            break;
        }
        assert_eq!(
            line,
            expected.to_string(),
            "gap or disorder in the flood's log"
        );
        expected += 1;
    }
    assert!(expected > 1000, "the flood wrote {expected} lines");
    assert_eq!(lines.next(), None);

    // The survivor is re-attached: stoppable, and its result arrives.
    let p = env.aside(&["stop", "survivor", "--json"]).ok().json();
    assert_eq!(p["status"], "stopped");

    // Exactly one notification per run, whatever crashed.
    let notes = notifications(&env, "human");
    let mut names: Vec<String> = notes
        .iter()
        .map(|n| n["result"]["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["downtime", "early", "flood", "killed", "survivor"]);

    // A second restart reconciles nothing twice.
    env.kill_daemon();
    assert_eq!(notifications(&env, "human").len(), 5);
}

fn run_id(env: &Env, name: &str) -> String {
    env.status(name)["run_id"].as_str().unwrap().to_string()
}

fn shim_record(env: &Env, name: &str) -> Value {
    let path = env.run_dir(&run_id(env, name)).join("shim.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The run directory whose command contains `needle` (read from disk: the daemon may be down).
fn run_dir_with(env: &Env, needle: &str) -> std::path::PathBuf {
    std::fs::read_dir(env.home.join("runs"))
        .unwrap()
        .flatten()
        .map(|r| r.path())
        .find(|p| {
            std::fs::read_to_string(p.join("spec.json"))
                .ok()
                .and_then(|s| serde_json::from_str::<Value>(&s).ok())
                .is_some_and(|v| v["cmd"].as_str().is_some_and(|c| c.contains(needle)))
        })
        .unwrap_or_else(|| panic!("no run of {needle:?}"))
}

fn pid_of_run_with(env: &Env, needle: &str) -> i32 {
    let shim = std::fs::read_to_string(run_dir_with(env, needle).join("shim.json")).unwrap();
    serde_json::from_str::<Value>(&shim).unwrap()["pid"]
        .as_i64()
        .unwrap() as i32
}

#[test]
fn a_killed_shim_makes_the_run_abandoned_and_leaves_no_process() {
    let env = Env::new();
    env.run(&["--name", "orphan", "echo up; sleep 300"]);
    env.aside(&["wait", "orphan", "--until", "up", "--timeout", "10s"])
        .ok();
    let shim = shim_record(&env, "orphan");
    let shim_pid = shim["shim_pid"].as_i64().unwrap() as i32;
    let pid = shim["pid"].as_i64().unwrap() as i32;
    unsafe { libc::kill(shim_pid, libc::SIGKILL) };
    let w = env.wait_exit("orphan");
    assert_eq!(w["process"]["status"], "abandoned");
    assert!(
        w["process"]["error"]
            .as_str()
            .unwrap()
            .contains("without recording an exit status"),
        "{w}"
    );
    eventually(
        Duration::from_secs(5),
        "the orphaned command to be killed",
        || session_members(pid).is_empty(),
    );
    assert_eq!(notifications(&env, "human").len(), 1);
}

#[test]
fn a_shim_killed_while_the_daemon_is_down_is_abandoned_at_restart() {
    let env = Env::new();
    env.run(&["--name", "lost", "echo up; sleep 300"]);
    env.aside(&["wait", "lost", "--until", "up", "--timeout", "10s"])
        .ok();
    let shim = shim_record(&env, "lost");
    let pid = shim["pid"].as_i64().unwrap() as i32;
    env.kill_daemon();
    unsafe { libc::kill(shim["shim_pid"].as_i64().unwrap() as i32, libc::SIGKILL) };
    eventually(Duration::from_secs(5), "the shim to die", || {
        !alive(shim["shim_pid"].as_i64().unwrap() as i32)
    });
    let st = env.status("lost");
    assert_eq!(st["status"], "abandoned");
    assert!(
        session_members(pid).is_empty(),
        "leftovers of an abandoned run are killed"
    );
}

#[test]
fn a_directory_prepared_for_a_run_that_never_came_is_removed_after_a_crash() {
    let env = Env::new();
    env.run(&["--name", "kept", "sleep 300"]);
    // The next run's shim waits with its directory prepared (no spec.json yet).
    let home = env.home.to_str().unwrap().to_string();
    let mut waiting = Vec::new();
    eventually(Duration::from_secs(10), "a prestarted shim", || {
        waiting = pids_with_cmdline("--prestarted")
            .into_iter()
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&home))
            })
            .collect();
        waiting.len() == 1
    });
    let unused = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(env.home.join("runs"))
            .unwrap()
            .flatten()
            .map(|d| d.path())
            .filter(|d| !d.join("spec.json").exists())
            .collect()
    };
    assert_eq!(unused().len(), 1);
    // Both gone at once (a reboot, an OOM kill of everything): nobody removed it.
    unsafe { libc::kill(waiting[0], libc::SIGKILL) };
    env.kill_daemon();
    eventually(Duration::from_secs(5), "the waiting shim to die", || {
        !alive(waiting[0])
    });
    assert_eq!(unused().len(), 1);
    // The next daemon (started by `status`, which prestarts nothing) removes it, and keeps
    // the run that was.
    assert_eq!(env.status("kept")["status"], "running");
    assert_eq!(unused(), Vec::<std::path::PathBuf>::new());
    assert!(
        env.run_dir(&run_id(&env, "kept"))
            .join("spec.json")
            .exists()
    );
    env.aside(&["stop", "kept"]).ok();
}

#[test]
fn sigterm_to_the_daemon_leaves_processes_running_and_removes_the_socket() {
    let env = Env::new();
    env.run(&["--name", "keeps", "sleep 300"]);
    let pid = env.status("keeps")["pid"].as_i64().unwrap() as i32;
    let daemon = env.daemon_pid().unwrap();
    unsafe { libc::kill(daemon, libc::SIGTERM) };
    eventually(Duration::from_secs(5), "the daemon to exit", || {
        !alive(daemon)
    });
    assert!(!env.home.join("run/aside.sock").exists());
    assert!(alive(pid), "the process outlives the daemon");
    let st = env.status("keeps");
    assert_eq!(st["status"], "running");
    env.aside(&["stop", "keeps"]).ok();
    assert!(!alive(pid));
}

#[test]
fn daemon_start_status_stop_and_idle_exit() {
    let env = Env::new();
    let o = env.aside(&["daemon", "status"]);
    assert_eq!(o.code, 3, "not running yet: {}", o.stdout);
    let o = env
        .command()
        .args(["daemon", "start", "--idle-timeout", "1s"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pid = env.daemon_pid().unwrap();
    let s = env.aside(&["daemon", "status", "--json"]).ok().json();
    assert_eq!(s["protocol"], 1);
    assert_eq!(s["idle_timeout_ms"], 1000);
    // The socket is private, in a private directory.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&env.home.join("run")), 0o700);
    assert_eq!(mode(&env.home.join("run/aside.sock")), 0o600);
    // Starting again finds the running one.
    env.aside(&["daemon", "start"]).ok();
    assert_eq!(env.daemon_pid(), Some(pid));
    // Idle with nothing running: it exits by itself.
    eventually(Duration::from_secs(10), "the idle daemon to exit", || {
        !alive(pid)
    });

    env.aside(&["daemon", "start"]).ok();
    let pid = env.daemon_pid().unwrap();
    env.aside(&["daemon", "stop"]).ok();
    assert!(!alive(pid));
    assert_eq!(env.aside(&["daemon", "status"]).code, 3);
}

#[test]
fn killing_the_callers_process_group_does_not_kill_the_daemon() {
    let env = Env::new();
    // A shell in its own process group auto-starts the daemon, then the whole group is killed.
    use std::os::unix::process::CommandExt;
    let mut sh = std::process::Command::new("sh");
    sh.arg("-c")
        .arg(format!(
            "{BIN} run --name g 'sleep 60' >/dev/null; sleep 60"
        ))
        .env("ASIDE_HOME", &env.home)
        .process_group(0);
    let mut child = sh.spawn().unwrap();
    let pgid = child.id() as i32;
    eventually(Duration::from_secs(10), "the run to be recorded", || {
        env.home.join("run/aside.sock").exists() && env.aside(&["status", "g"]).code == 0
    });
    let daemon = env.daemon_pid().unwrap();
    let sid = |pid: i32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let close = stat.rfind(')').unwrap();
        stat[close + 1..]
            .split_whitespace()
            .nth(3)
            .unwrap()
            .parse::<i32>()
            .unwrap()
    };
    assert_eq!(sid(daemon), daemon, "the daemon leads its own session");
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = child.wait();
    assert!(alive(daemon));
    assert_eq!(env.status("g")["status"], "running");
}

#[test]
fn prune_removes_old_read_results_but_never_unread_ones() {
    let env = Env::new();
    env.run(&["--name", "read", "echo a"]);
    env.run(&["--name", "unread", "--owner", "agent", "echo b"]);
    env.wait_exit("read");
    env.wait_exit("unread");
    env.aside(&["inbox", "--drain"]).ok();
    let read_dir = env.run_dir(&run_id(&env, "read"));
    assert!(read_dir.exists());
    env.aside(&["daemon", "stop"]).ok();
    let o = env
        .command()
        .args(["daemon", "start", "--prune-after", "1ms"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let names: Vec<String> = env
        .status_all()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["unread"]);
    assert!(!read_dir.exists(), "the pruned run's directory is removed");
    assert_eq!(notifications(&env, "agent").len(), 1);
}
