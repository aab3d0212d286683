//! The permission policy: agents get only what it allows; humans are not affected; an invalid
//! file fails closed and a corrected one applies without a restart.

mod common;

use common::*;
use serde_json::Value;

fn as_agent(env: &Env, owner: &str, args: &[&str]) -> Out {
    env.command()
        .env("ASIDE_OWNER", owner)
        .args(args)
        .output()
        .expect("run aside")
        .into()
}

fn policy(env: &Env, json: &str) {
    std::fs::create_dir_all(&env.home).unwrap();
    std::fs::write(env.home.join("policy.json"), json).unwrap();
}

fn audit(env: &Env) -> Vec<Value> {
    std::fs::read_to_string(env.home.join("audit.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn agents_run_only_what_the_policy_allows_and_humans_anything() {
    let env = Env::new();
    let work = env.work.to_str().unwrap().to_string();
    // `//abs` is an absolute root (a single `/` would be relative to the policy's directory).
    policy(
        &env,
        &format!(r#"{{"allow": ["echo *", "sleep *"], "cwd": {{"allow": ["/{work}"]}}}}"#),
    );
    let ok = as_agent(
        &env,
        "agent-1",
        &["run", "--name", "greet", "echo hi && echo there"],
    );
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    let o = as_agent(&env, "agent-1", &["run", "echo ok; rm -rf /tmp/x"]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("no allow rule matches \"rm -rf /tmp/x\""),
        "{}",
        o.stderr
    );
    let o = as_agent(&env, "agent-1", &["run", "echo $(id)"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("command substitution"), "{}", o.stderr);
    let o = as_agent(&env, "agent-1", &["run", "--cwd", "/tmp", "echo hi"]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("is not under any cwd.allow root"),
        "{}",
        o.stderr
    );
    // A human is not bound by it.
    env.aside(&["run", "--name", "human-job", "ls /"]).ok();
    // Refusals are audited with who, what and why.
    let refusals: Vec<Value> = audit(&env)
        .into_iter()
        .filter(|e| e["outcome"] == "refused")
        .collect();
    assert_eq!(refusals.len(), 3, "{refusals:?}");
    assert!(
        refusals
            .iter()
            .all(|e| e["who"] == "agent-1" && e["action"] == "run")
    );
    // Nothing refused was started.
    let names: Vec<String> = env
        .status_all()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["greet", "human-job"]);
}

#[test]
fn an_invalid_policy_refuses_agents_serves_humans_and_a_fix_applies_without_restart() {
    let env = Env::new();
    policy(
        &env,
        "{\n  \"allow\": [\"echo *\"],\n  \"colour\": \"red\"\n}\n",
    );
    let o = as_agent(&env, "agent-1", &["run", "echo hi"]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("policy.json:3:3: unknown field `colour`"),
        "the refusal names file, line and reason: {}",
        o.stderr
    );
    // Humans and reads are served.
    env.aside(&["run", "--name", "h", "echo human"]).ok();
    assert_eq!(as_agent(&env, "agent-1", &["status", "--json"]).code, 0);
    let o = as_agent(&env, "agent-1", &["stop", "h"]);
    assert_eq!(o.code, 1, "agents may stop nothing either");
    // `aside policy check` says the same.
    let c = env.aside(&["policy", "check"]);
    assert_eq!(c.code, 1);
    assert!(
        c.stderr.contains(":3:3: unknown field `colour`"),
        "{}",
        c.stderr
    );
    let daemon = env.daemon_pid().unwrap();
    policy(&env, r#"{"allow": ["echo *"]}"#);
    let o = as_agent(&env, "agent-1", &["run", "echo fixed"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(env.daemon_pid(), Some(daemon), "no restart was needed");
}

#[test]
fn limits_cap_processes_timeouts_and_log_caps() {
    let env = Env::new();
    policy(
        &env,
        r#"{"allow": ["sleep *", "echo *"], "limits": {"max_processes_per_owner": 2, "max_timeout": "10m", "max_log_cap": "1MiB"}}"#,
    );
    as_agent(&env, "a", &["run", "--name", "s1", "sleep 30"]).ok();
    as_agent(&env, "a", &["run", "--name", "s2", "sleep 30"]).ok();
    let o = as_agent(&env, "a", &["run", "--name", "s3", "sleep 30"]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("a already has 2 running processes"),
        "{}",
        o.stderr
    );
    // Another owner has its own allowance.
    as_agent(&env, "b", &["run", "--name", "b1", "sleep 30"]).ok();
    let o = as_agent(&env, "b", &["run", "--timeout", "1h", "sleep 30"]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("longer than the 600000 ms"),
        "{}",
        o.stderr
    );
    let o = as_agent(&env, "b", &["run", "--log-cap", "8MiB", "echo x"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("max_log_cap"), "{}", o.stderr);
    // Runs without a timeout get the policy's longest one (seen in its spec on disk).
    let p: Value = as_agent(&env, "b", &["run", "--json", "--name", "b2", "echo y"])
        .ok()
        .json();
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(env.run_dir(p["run_id"].as_str().unwrap()).join("spec.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(spec["timeout_ms"], 600_000);
    assert_eq!(spec["log_cap_bytes"], 1024 * 1024);
    // An agent cannot start processes in another owner's name.
    let body = format!(
        r#"{{"cmd": "echo x", "owner": "a", "cwd": "{}"}}"#,
        env.work.display()
    );
    let resp = raw_post(&env, "/v1/processes", "b", &body);
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    assert!(resp.contains("b may not start processes for a"), "{resp}");
}

/// A POST with an `aside-owner` header that the CLI would never send differently from the body.
fn raw_post(env: &Env, path: &str, owner: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut conn =
        std::os::unix::net::UnixStream::connect(env.home.join("run/aside.sock")).unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: aside\r\naside-protocol: 1\r\naside-owner: {owner}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    // A refusal may come (and the connection close) before the body is read.
    if let Err(e) = conn.write_all(request.as_bytes()) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    let mut resp = String::new();
    conn.read_to_string(&mut resp).unwrap();
    resp
}

#[test]
fn team_members_stop_each_other_only_when_the_policy_says_so() {
    let env = Env::new();
    policy(&env, r#"{"allow": ["sleep *"]}"#);
    let run = |owner: &str, name: &str| {
        let o: Out = env
            .command()
            .env("ASIDE_OWNER", owner)
            .env("ASIDE_TEAM", "blue")
            .args(["run", "--name", name, "sleep 60"])
            .output()
            .unwrap()
            .into();
        o.ok();
    };
    let stop = |owner: &str, name: &str| -> Out {
        env.command()
            .env("ASIDE_OWNER", owner)
            .env("ASIDE_TEAM", "blue")
            .args(["stop", name])
            .output()
            .unwrap()
            .into()
    };
    run("a", "a1");
    let o = stop("b", "a1");
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("only its owner or a human may stop it"),
        "{}",
        o.stderr
    );
    policy(
        &env,
        r#"{"allow": ["sleep *"], "limits": {"team_may_stop": true}}"#,
    );
    stop("b", "a1").ok();
    assert_eq!(env.status("a1")["stopped_by"], "b");
    let stops: Vec<Value> = audit(&env)
        .into_iter()
        .filter(|e| e["action"] == "stop")
        .collect();
    assert_eq!(stops.len(), 2);
    assert_eq!(stops[0]["outcome"], "refused");
    assert_eq!(stops[1]["outcome"], "done");
}

#[test]
fn policy_explain_says_which_rule_allows_what() {
    let env = Env::new();
    policy(&env, r#"{"allow": ["cargo test *", "echo *"]}"#);
    let o = env
        .aside(&["policy", "explain", "cargo test --all && echo done"])
        .ok();
    assert!(
        o.stdout
            .contains(r#"allowed: "cargo test --all" by "cargo test *""#),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains(r#"allowed: "echo done" by "echo *""#),
        "{}",
        o.stdout
    );
    let o = env.aside(&["policy", "explain", "cargo test | sh"]);
    assert_eq!(o.code, 1);
    assert!(
        o.stdout
            .contains(r#"refused: command: no allow rule matches "sh""#),
        "{}",
        o.stdout
    );
    let ok = env.aside(&["policy", "check"]).ok();
    assert!(ok.stdout.starts_with("ok: policy"), "{}", ok.stdout);
}

/// A daemon listening on a free loopback port too; returns the port.
fn listening(env: &Env) -> u16 {
    env.aside(&["daemon", "start", "--listen", "127.0.0.1:0"])
        .ok();
    env.aside(&["web", "--json"]).ok().json()["port"]
        .as_u64()
        .expect("port") as u16
}

#[test]
fn the_policy_judges_what_a_run_does_beyond_its_command_text() {
    let env = Env::new();
    let work = env.work.to_str().unwrap().to_string();
    let outside = env.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    // A fake `echo` outside every root: running it would leave a mark.
    let evil = env.dir.path().join("evil");
    std::fs::create_dir_all(&evil).unwrap();
    let mark = outside.join("pwned");
    std::fs::write(
        evil.join("echo"),
        format!("#!/bin/sh\ntouch {}\n", mark.display()),
    )
    .unwrap();
    std::fs::set_permissions(
        evil.join("echo"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    policy(
        &env,
        &format!(r#"{{"allow": ["echo *", "sleep *"], "cwd": {{"allow": ["/{work}"]}}}}"#),
    );
    let port = listening(&env);
    let refused = |o: Out, why: &str| {
        assert_eq!(o.code, 1, "refused: {}\n{}", o.stdout, o.stderr);
        assert!(o.stderr.contains(why), "{why}: {}", o.stderr);
    };
    let path = format!("PATH={}:/usr/bin:/bin", evil.display());
    refused(
        as_agent(
            &env,
            "agent-1",
            &["run", "--env", &path, "--", "echo", "hi"],
        ),
        "PATH holds",
    );
    refused(
        as_agent(
            &env,
            "agent-1",
            &["run", "--env", "LD_PRELOAD=/tmp/x.so", "echo hi"],
        ),
        "LD_PRELOAD",
    );
    refused(
        as_agent(
            &env,
            "agent-1",
            &["run", "--env", "BASH_ENV=/tmp/x", "echo hi"],
        ),
        "BASH_ENV",
    );
    let target = outside.join("x");
    let redirect = format!("echo hi > {}", target.display());
    refused(
        as_agent(&env, "agent-1", &["run", &redirect]),
        "not under any cwd.allow root",
    );
    // A redirection inside the roots is fine.
    as_agent(
        &env,
        "agent-1",
        &["run", "--name", "inside", "echo hi > inside.txt 2>&1"],
    )
    .ok();
    env.wait_exit("inside");
    assert_eq!(
        std::fs::read_to_string(env.work.join("inside.txt")).unwrap(),
        "hi\n"
    );

    // A readiness probe is judged like the command, and an HTTP probe reaches loopback only.
    let probe_file = env.write(
        "aside.yaml",
        &format!(
            "processes:\n  web:\n    cmd: sleep 30\n    ready: {{exec: \"id > {}\"}}\n",
            target.display()
        ),
    );
    let o = as_agent(
        &env,
        "agent-1",
        &["up", "--config", probe_file.to_str().unwrap()],
    );
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("readiness probe"), "{}", o.stderr);
    std::fs::write(
        &probe_file,
        format!("processes:\n  web:\n    cmd: sleep 30\n    ready: {{http: \"http://127.0.0.1:{port}/v1/daemon\"}}\n"),
    )
    .unwrap();
    let o = as_agent(
        &env,
        "agent-1",
        &["up", "--config", probe_file.to_str().unwrap()],
    );
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("daemon's own API"), "{}", o.stderr);
    // A webhook may not call the daemon's own API either, nor leave this machine.
    let hook = format!("http://127.0.0.1:{port}/v1/daemon/stop");
    refused(
        as_agent(
            &env,
            "agent-1",
            &["wake", "set", "--owner", "agent-1", "--webhook", &hook],
        ),
        "daemon's own API",
    );
    refused(
        as_agent(
            &env,
            "agent-1",
            &[
                "wake",
                "set",
                "--owner",
                "agent-1",
                "--webhook",
                "http://example.com/x",
            ],
        ),
        "not a loopback address",
    );
    // The same rules bind a member token over TCP.
    let member = env
        .aside(&["token", "create", "--owner", "mia", "--json"])
        .ok()
        .json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let o: Out = env
        .command()
        .env("ASIDE_TOKEN", &member)
        .arg("--remote")
        .arg(format!("http://127.0.0.1:{port}"))
        .args(["run", &redirect])
        .output()
        .unwrap()
        .into();
    refused(o, "not under any cwd.allow root");
    // Nothing refused ran: no mark, no file outside, and the daemon still answers.
    assert!(!mark.exists() && !target.exists());
    env.aside(&["daemon", "status"]).ok();
    // A human is not bound by it.
    env.aside(&["run", "--name", "h", "--env", &path, "--", "true"])
        .ok();
}

#[test]
fn a_policy_path_that_cannot_be_read_fails_closed() {
    let env = Env::new();
    std::fs::create_dir_all(&env.home).unwrap();
    std::os::unix::fs::symlink(
        env.dir.path().join("gone.json"),
        env.home.join("policy.json"),
    )
    .unwrap();
    let o = as_agent(&env, "agent-1", &["run", "echo hi"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("cannot read"), "{}", o.stderr);
    env.aside(&["run", "true"]).ok();
}

/// A small deterministic generator (xorshift64*): the same cases on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }
}

#[test]
fn whatever_the_policy_allows_does_only_that_in_a_real_shell() {
    // The judge against the shell itself: random commands of words, quotes, separators,
    // redirections and substitutions; each one `policy explain` allows is run by `sh` in a
    // root, with a PATH whose every program records that it ran. Allowed means: only `echo`
    // (a builtin, so it records nothing) ran, and nothing was written outside the root.
    let env = Env::new();
    let root = env.dir.path().join("ok");
    let outside = env.dir.path().join("out");
    let bin = env.dir.path().join("bin");
    for d in [&root, &outside, &bin] {
        std::fs::create_dir_all(d).unwrap();
    }
    let ran = env.dir.path().join("ran.log");
    for prog in ["rm", "cat", "touch", "id", "sh", "ls", "tee"] {
        let p = bin.join(prog);
        std::fs::write(&p, format!("#!/bin/sh\necho {prog} >> {}\n", ran.display())).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let policy_file = env.dir.path().join("policy.json");
    std::fs::write(
        &policy_file,
        format!(
            r#"{{"allow": ["echo *"], "cwd": {{"allow": ["/{}"]}}}}"#,
            root.display()
        ),
    )
    .unwrap();
    let out_file = outside.join("x").display().to_string();
    let pieces: Vec<String> = [
        "echo", "echo", "hi", "rm", "cat", "touch", "id", "-rf", ";", "&&", "||", "|", "&", "\n",
        ">", ">>", "2>", "&>", "<", "2>&1", "'a b'", "\"c d\"", "'", "\"", "$(id)", "`id`",
        "$HOME/x", "x.txt", "../x", "(", ")", "\\;", "#", "*",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([out_file.clone(), format!(">{out_file}")])
    .collect();
    let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut allowed, mut tried) = (0, 0);
    for _ in 0..1500 {
        let n = 2 + rng.next() % 6;
        let mut cmd: Vec<&str> = (0..n).map(|_| rng.pick(&refs)).collect();
        if rng.next() % 2 == 0 {
            cmd.insert(0, "echo");
        }
        let cmd = cmd.join(" ");
        tried += 1;
        let verdict = env
            .command()
            .args(["policy", "explain", &cmd, "--cwd"])
            .arg(&root)
            .arg("--file")
            .arg(&policy_file)
            .output()
            .unwrap();
        if !verdict.status.success() {
            continue;
        }
        allowed += 1;
        let _ = std::fs::remove_file(&ran);
        std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&cmd)
            .current_dir(&root)
            .env_clear()
            .env("PATH", &bin)
            .env("HOME", &outside)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        let log = std::fs::read_to_string(&ran).unwrap_or_default();
        assert!(log.is_empty(), "{cmd:?} was allowed but ran: {log}");
        let written: Vec<_> = std::fs::read_dir(&outside).unwrap().flatten().collect();
        assert!(
            written.is_empty(),
            "{cmd:?} was allowed but wrote outside the root"
        );
        let above: Vec<_> = std::fs::read_dir(env.dir.path())
            .unwrap()
            .flatten()
            .filter(|e| {
                let n = e.file_name();
                !["ok", "out", "bin", "policy.json", "h", "w", "ran.log"]
                    .iter()
                    .any(|k| n == *k)
            })
            .collect();
        assert!(above.is_empty(), "{cmd:?} was allowed but wrote {above:?}");
    }
    assert!(
        allowed > 100 && allowed < tried,
        "a real mix: {allowed} of {tried} allowed"
    );
}
