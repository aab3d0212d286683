//! agent-procs 0.6 compatibility: its documented workflows run against `aside`, checking what
//! a script reads — `status --json` fields and values, `logs --all` prefixes, `logs --follow
//! --lines`/`--timeout`, the one-line answers of `run`, `restart`, `stop`, `wait`, `session
//! clean`, and the proxy's stderr line and 502 text. The expected values were taken from
//! agent-procs 0.6.3 itself (`cargo install agent-procs`), run side by side.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// `status --json` as agent-procs' scripts read it: its rows by name.
fn rows(env: &Env) -> Vec<Value> {
    env.aside(&["status", "--json"])
        .ok()
        .json()
        .as_array()
        .cloned()
        .unwrap()
}

fn row(env: &Env, name: &str) -> Value {
    rows(env)
        .into_iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no row named {name}"))
}

#[test]
fn status_json_has_agent_procs_fields_and_values_beside_asides() {
    let env = Env::new();
    std::fs::create_dir_all(env.work.join("src")).unwrap();
    env.run(&["--name", "web", "sleep 300"]);
    env.run(&["--name", "done", "echo bye"]);
    env.run(&[
        "--name",
        "flaky",
        "--autorestart",
        "on-failure",
        "--max-restarts",
        "2",
        "--restart-delay",
        "100",
        "exit 1",
    ]);
    env.run(&["--name", "watched", "--watch", "src/*.txt", "sleep 300"]);
    env.wait_exit("done");
    eventually(Duration::from_secs(20), "flaky to give up", || {
        row(&env, "flaky")["state"] == "failed"
    });
    let all = rows(&env);
    // Sorted by name, as agent-procs lists them.
    let names: Vec<&str> = all.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["done", "flaky", "watched", "web"]);
    for r in &all {
        for key in [
            "name",
            "id",
            "pid",
            "state",
            "exit_code",
            "uptime_secs",
            "command",
            "port",
            "url",
            "restart_count",
            "max_restarts",
            "restart_policy",
            "watched",
        ] {
            assert!(r.get(key).is_some(), "{} has no {key}: {r}", r["name"]);
        }
        // aside's own fields stay beside them.
        assert!(r["status"].is_string() && r["restarts"].is_u64(), "{r}");
    }
    let web = row(&env, "web");
    assert_eq!(web["state"], "running");
    assert!(web["uptime_secs"].is_u64());
    assert_eq!(web["restart_count"], Value::Null);
    assert_eq!(web["watched"], Value::Null);
    let done = row(&env, "done");
    assert_eq!(
        (done["state"].clone(), done["exit_code"].clone()),
        ("exited".into(), 0.into())
    );
    assert_eq!(done["uptime_secs"], Value::Null);
    let flaky = row(&env, "flaky");
    assert_eq!(flaky["exit_code"], 1);
    assert_eq!(flaky["restart_count"], 2);
    assert_eq!(flaky["max_restarts"], 2);
    assert_eq!(flaky["restart_policy"], "on-failure");
    assert_eq!(flaky["status"], "failed");
    assert_eq!(row(&env, "watched")["watched"], true);
}

#[test]
fn a_name_names_one_process() {
    let env = Env::new();
    env.run(&["--name", "f", "echo first"]);
    env.wait_exit("f");
    env.run(&["--name", "f", "echo second"]);
    env.wait_exit("f");
    let fs: Vec<Value> = rows(&env)
        .into_iter()
        .filter(|r| r["name"] == "f")
        .collect();
    assert_eq!(fs.len(), 1, "{fs:?}");
    assert_eq!(fs[0]["command"], "echo second");
    // The first stays in the history and in the inbox.
    let every = env.aside(&["status", "--all", "--json"]).ok().json();
    let both = every
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["name"] == "f")
        .count();
    assert_eq!(both, 2);
    let inbox = env.aside(&["inbox", "--json"]).ok().json();
    assert_eq!(inbox["notifications"].as_array().unwrap().len(), 2);
}

#[test]
fn the_one_line_answers_are_agent_procs_lines() {
    let env = Env::new();
    let out = env
        .aside(&["run", "--name", "web", "echo hello; sleep 300"])
        .ok();
    let p = env.status("web");
    assert_eq!(
        out.stdout.trim(),
        format!("web (id: {}, pid: {})", p["id"].as_str().unwrap(), p["pid"])
    );
    let w = env
        .aside(&["wait", "web", "--until", "hel+o", "--regex"])
        .ok();
    assert_eq!(w.stdout, "hello\n", "the matched line alone");
    let out = env.aside(&["restart", "web"]).ok();
    let p = env.status("web");
    assert_eq!(
        out.stdout.trim(),
        format!(
            "restarted web (id: {}, pid: {})",
            p["id"].as_str().unwrap(),
            p["pid"]
        )
    );
    assert_eq!(env.aside(&["stop", "web"]).ok().stdout, "stopped web\n");
    env.run(&["--name", "bad", "exit 3"]);
    let w = env.aside(&["wait", "bad", "--exit"]).ok();
    assert_eq!(w.stdout, "exited with code 3\n");
    // Neither --until nor --exit: the exit, as agent-procs.
    assert_eq!(
        env.aside(&["wait", "bad"]).ok().stdout,
        "exited with code 3\n"
    );
    env.run(&["--name", "long", "sleep 300"]);
    let t = env.aside(&["wait", "long", "--until", "never", "--timeout", "1"]);
    assert_eq!(t.code, 1);
    assert_eq!(t.stderr.lines().next(), Some("timeout"), "{}", t.stderr);
    assert_eq!(
        env.aside(&["stop-all"]).ok().stdout.lines().next(),
        Some("all processes stopped")
    );
}

#[test]
fn logs_all_interleaves_every_process_with_name_prefixes() {
    let env = Env::new();
    env.run(&["--name", "a", "echo a1; sleep 0.3; echo a2"]);
    env.run(&["--name", "b", "sleep 0.15; echo b1; echo oops >&2"]);
    env.run(&["--name", "c", "sleep 0.45; echo c1"]);
    for n in ["a", "b", "c"] {
        env.wait_exit(n);
    }
    let expected = "[a] a1\n[b] b1\n[a] a2\n[c] c1\n";
    assert_eq!(env.aside(&["logs", "--all"]).ok().stdout, expected);
    // No name means the same; a name with --all too (agent-procs ignores it).
    assert_eq!(env.aside(&["logs"]).ok().stdout, expected);
    assert_eq!(env.aside(&["logs", "a", "--all"]).ok().stdout, expected);
    // aside's both-streams view of one process moved to --streams both.
    let both = env.aside(&["logs", "b", "--streams", "both"]).ok().stdout;
    assert_eq!(both, "b1\n[stderr] oops\n");
    // A process that printed nothing on stdout: nothing, exit 0 (said on stderr).
    env.run(&["--name", "quiet", "echo only-err >&2"]);
    env.wait_exit("quiet");
    let quiet = env.aside(&["logs", "quiet"]);
    assert_eq!((quiet.code, quiet.stdout.as_str()), (0, ""));
    assert_eq!(env.aside(&["logs", "nosuch"]).code, 2);
}

#[test]
fn logs_shows_the_last_hundred_lines_unless_asked_for_more() {
    let env = Env::new();
    env.run(&["--name", "long", "seq 150"]);
    env.wait_exit("long");
    let numbers = |args: &[&str]| -> Vec<u32> {
        let o = env.aside(args).ok();
        o.stdout.lines().map(|l| l.parse().unwrap()).collect()
    };
    // agent-procs' default: the last 100.
    assert_eq!(numbers(&["logs", "long"]), (51..=150).collect::<Vec<_>>());
    assert_eq!(numbers(&["logs", "long", "--tail", "3"]), [148, 149, 150]);
    assert_eq!(numbers(&["logs", "long", "--tail", "all"]).len(), 150);
    assert_eq!(numbers(&["logs", "long", "--head", "2"]), [1, 2]);
    // --all: the last 100 of each process, as agent-procs.
    let all = env.aside(&["logs", "--all"]).ok().stdout;
    assert_eq!(all.lines().count(), 100);
    assert_eq!(all.lines().next(), Some("[long] 51"));
    // Machine-read JSON is whole unless a range is asked for.
    assert_eq!(env.json_lines(&["logs", "long", "--json"]).len(), 150);
    let bad = env.aside(&["logs", "long", "--tail", "many"]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("neither a line count nor `all`"),
        "{}",
        bad.stderr
    );
}

#[test]
fn logs_follow_stops_after_lines_or_its_timeout() {
    let env = Env::new();
    env.run(&[
        "--name",
        "tick",
        "i=0; while :; do i=$((i+1)); echo tick-$i; sleep 0.1; done",
    ]);
    env.aside(&["wait", "tick", "--until", "tick-3"]).ok();
    // What is there, then two new lines, then the end (exit 0).
    let out = env
        .aside(&["logs", "tick", "--follow", "--tail", "1", "--lines", "2"])
        .ok();
    let got: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(got.len(), 3, "{got:?}");
    let n = |l: &str| l.trim_start_matches("tick-").parse::<u32>().unwrap();
    assert_eq!((n(got[1]), n(got[2])), (n(got[0]) + 1, n(got[0]) + 2));
    // --timeout: ends by itself while the process goes on, exit 0.
    let started = Instant::now();
    let out = env
        .aside(&["logs", "tick", "--follow", "--timeout", "1"])
        .ok();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(out.stdout.lines().count() > 3, "{}", out.stdout);
    assert_eq!(env.status("tick")["status"], "running");
}

#[test]
fn the_proxy_says_where_it_listens_and_answers_unknown_names_in_plain_text() {
    let env = Env::new();
    let out = env
        .aside(&["run", "--name", "api", "--proxy", "sleep 300"])
        .ok();
    let line = out
        .stderr
        .lines()
        .find(|l| l.starts_with("Proxy listening on http://localhost:"))
        .unwrap_or_else(|| panic!("no proxy line on stderr: {}", out.stderr));
    let port: u16 = line.rsplit(':').next().unwrap().parse().unwrap();
    let url = env.status("api")["url"].as_str().unwrap().to_string();
    assert!(
        out.stdout.trim().ends_with(&format!(", {url})")),
        "{}",
        out.stdout
    );
    let (code, body) = http(port, "GET / HTTP/1.1\r\nHost: web.localhost", "");
    assert_eq!(code, 502);
    assert!(
        body.contains(&format!(
            "502 Bad Gateway: no running process named 'web' with a port. Visit http://localhost:{port} to see available routes."
        )),
        "{body}"
    );
    assert!(
        body.contains(&format!("http://api.localhost:{port} -> 127.0.0.1:")),
        "{body}"
    );
}

#[test]
fn session_clean_says_what_it_cleaned() {
    let env = Env::new();
    let dir = env.work.join("p");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("agent-procs.yaml"),
        "session: demo\nprocesses:\n  one:\n    cmd: echo one\n",
    )
    .unwrap();
    let mut up = env.command();
    up.current_dir(&dir).args(["up"]);
    let o: Out = up.output().unwrap().into();
    o.ok();
    env.wait_exit("demo/one");
    let out = env.aside(&["session", "clean"]).ok();
    assert_eq!(out.stdout, "cleaned stale session: demo\n");
}

#[test]
fn up_and_down_print_agent_procs_lines() {
    let env = Env::new();
    let dir = env.work.join("p");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("agent-procs.yaml"),
        "session: demo\nprocesses:\n  db:\n    cmd: \"echo db ready; sleep 300\"\n    ready: \"db ready\"\n  api:\n    cmd: \"echo listening; sleep 300\"\n    ready: listening\n    depends_on: [db]\n",
    )
    .unwrap();
    let in_dir = |args: &[&str]| -> Out {
        let mut c = env.command();
        c.current_dir(&dir).args(args);
        c.output().unwrap().into()
    };
    let up = in_dir(&["up"]).ok();
    let lines: Vec<&str> = up.stdout.lines().collect();
    let at = |l: &str| {
        lines
            .iter()
            .position(|x| x.starts_with(l))
            .unwrap_or_else(|| panic!("no {l:?} in {lines:?}"))
    };
    let db = env.status("demo/db");
    let started_db = format!(
        "started db (id: {}, pid: {})",
        db["id"].as_str().unwrap(),
        db["pid"]
    );
    assert!(lines.contains(&started_db.as_str()), "{lines:?}");
    // In dependency order, as agent-procs: db started and ready before api starts.
    assert!(at("started db") < at("db is ready"));
    assert!(at("db is ready") < at("started api"));
    assert!(at("started api") < at("api is ready"));
    assert!(at("api is ready") < at("all processes started"));
    let down = in_dir(&["down"]).ok();
    assert_eq!(down.stdout.lines().next(), Some("all processes stopped"));
}

// ---------- side by side with agent-procs itself ----------

/// The pinned agent-procs, for the side-by-side test (`.ci/run` reads the same file).
const AGENT_PROCS_VERSION: &str = include_str!("agent-procs.version").trim_ascii();

/// agent-procs' binary: installed with `cargo install` into `$ASIDE_TEST_PEERS` (which
/// `.ci/run` points at a cache directory) or else under the target directory, once, under a lock.
fn agent_procs() -> std::path::PathBuf {
    let root = std::env::var_os("ASIDE_TEST_PEERS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("peers"));
    let dir = root.join(format!("agent-procs-{AGENT_PROCS_VERSION}"));
    std::fs::create_dir_all(&root).expect("peers directory");
    let lock = std::fs::File::create(root.join(".lock")).expect("peers lock file");
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).expect("peers lock");
    let bin = dir.join("bin/agent-procs");
    if !bin.exists() {
        let out = std::process::Command::new("cargo")
            .args(["install", "--locked", "--quiet", "agent-procs", "--version"])
            .arg(AGENT_PROCS_VERSION)
            .arg("--root")
            .arg(&dir)
            .output()
            .expect("cargo install agent-procs");
        assert!(
            out.status.success(),
            "cannot install agent-procs {AGENT_PROCS_VERSION}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    bin
}

/// One CLI with a state of its own: agent-procs (its daemon under a private HOME and runtime
/// directory) or aside (its own `ASIDE_HOME`).
struct Side {
    name: &'static str,
    bin: std::path::PathBuf,
    /// Leading arguments: agent-procs' `--session` (its daemons are told apart by session only).
    args: Vec<String>,
    env: Vec<(String, std::path::PathBuf)>,
    _dir: tempfile::TempDir,
}

impl Side {
    fn agent_procs() -> Side {
        let dir = tempfile::tempdir().unwrap();
        let (home, run) = (dir.path().join("home"), dir.path().join("run"));
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&run).unwrap();
        let session = format!(
            "aside-compat-{}-{}",
            std::process::id(),
            dir.path().file_name().unwrap().to_string_lossy()
        );
        Side {
            name: "agent-procs",
            bin: agent_procs(),
            args: vec!["--session".into(), session],
            env: vec![
                ("HOME".into(), home.clone()),
                ("XDG_STATE_HOME".into(), home.join("state")),
                ("XDG_RUNTIME_DIR".into(), run),
            ],
            _dir: dir,
        }
    }

    fn aside() -> Side {
        let dir = tempfile::tempdir().unwrap();
        Side {
            name: "aside",
            bin: BIN.into(),
            args: Vec::new(),
            env: vec![("ASIDE_HOME".into(), dir.path().join("home"))],
            _dir: dir,
        }
    }

    fn cli(&self, args: &[&str]) -> Out {
        let mut c = std::process::Command::new(&self.bin);
        c.args(&self.args)
            .args(args)
            .current_dir(self._dir.path())
            .env("ASIDE_IDLE_TIMEOUT", "60s")
            .env_remove("ASIDE_OWNER");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.output().expect("the CLI").into()
    }

    fn row(&self, name: &str) -> Value {
        let rows: Value = serde_json::from_str(&self.cli(&["status", "--json"]).stdout).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    }
}

impl Drop for Side {
    fn drop(&mut self) {
        self.cli(&["stop-all"]);
        if self.name == "aside" {
            self.cli(&["daemon", "stop"]);
            return;
        }
        // agent-procs has no daemon stop: its pid file says whom to end.
        let uid = rustix::process::getuid().as_raw();
        let pid_file = format!("/tmp/agent-procs-{uid}/{}.pid", self.args[1]);
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}

/// What a script would compare: the exit code, and stdout with ids and pids masked.
fn seen(o: &Out) -> (i32, String) {
    let mask = |line: &str| -> String {
        let (Some(at), Some(pid)) = (line.find("(id: "), line.find(", pid: ")) else {
            return line.to_string();
        };
        let digits = line[pid + 7..]
            .find(|c: char| !c.is_ascii_digit())
            .map_or(line.len(), |n| pid + 7 + n);
        format!("{}(id: ID, pid: PID{}", &line[..at], &line[digits..])
    };
    let masked: Vec<String> = o.stdout.lines().map(mask).collect();
    (o.code, masked.join("\n"))
}

#[test]
fn the_same_workflow_reads_the_same_from_agent_procs_and_aside() {
    let sides = [Side::agent_procs(), Side::aside()];
    let both = |args: &[&str]| -> Vec<(i32, String)> {
        sides.iter().map(|s| seen(&s.cli(args))).collect()
    };
    let same = |args: &[&str]| {
        let got = both(args);
        assert_eq!(
            got[0],
            got[1],
            "`{}`: agent-procs, then aside",
            args.join(" ")
        );
        got
    };
    same(&["run", "--name", "web", "echo hello; sleep 300"]);
    same(&["run", "--name", "bad", "echo oops >&2; exit 3"]);
    same(&[
        "run",
        "--name",
        "flaky",
        "--autorestart",
        "on-failure",
        "--max-restarts",
        "2",
        "--restart-delay",
        "100",
        "echo try; exit 1",
    ]);
    same(&["wait", "web", "--until", "hello", "--timeout", "10"]);
    same(&["wait", "bad", "--exit", "--timeout", "10"]);
    same(&["run", "--name", "long", "seq 150"]);
    same(&["wait", "long", "--exit", "--timeout", "10"]);
    for s in &sides {
        eventually(Duration::from_secs(20), "flaky to give up", || {
            s.row("flaky")["state"] == "failed"
        });
    }
    // status --json: the same fields with the same values (ids, pids and times aside).
    for name in ["web", "bad", "flaky"] {
        let (theirs, ours) = (sides[0].row(name), sides[1].row(name));
        for (key, value) in theirs.as_object().unwrap() {
            if ["id", "pid", "uptime_secs"].contains(&key.as_str()) {
                assert_eq!(value.is_null(), ours[key].is_null(), "{name}.{key}");
                continue;
            }
            assert_eq!(&ours[key], value, "{name}.{key}: {ours}");
        }
    }
    same(&["logs", "web"]);
    same(&["logs", "bad"]);
    same(&["logs", "bad", "--stderr"]);
    same(&["logs", "long"]);
    same(&["logs", "long", "--tail", "7"]);
    same(&["logs", "web", "--follow", "--timeout", "1"]);
    assert_eq!(
        both(&["logs", "nosuch"])
            .iter()
            .map(|x| x.0)
            .collect::<Vec<_>>(),
        [2, 2]
    );
    let timed_out: Vec<(i32, Option<String>)> = sides
        .iter()
        .map(|s| {
            let o = s.cli(&["wait", "web", "--until", "never", "--timeout", "1"]);
            (o.code, o.stderr.lines().next().map(str::to_string))
        })
        .collect();
    assert_eq!(timed_out[0], timed_out[1]);
    same(&["restart", "web"]);
    same(&["stop", "web"]);
    let stop_all = both(&["stop-all"]);
    let first = |x: &(i32, String)| (x.0, x.1.lines().next().map(str::to_string));
    assert_eq!(first(&stop_all[0]), first(&stop_all[1]));
}
