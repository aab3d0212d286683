//! `aside hook claude` against recorded Claude Code hook payloads, one per event.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use common::*;
use serde_json::Value;

/// Feeds the fixture `name` (with its session id replaced) to `aside hook claude ARGS`.
fn hook(env: &Env, name: &str, session: &str, args: &[&str]) -> Out {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/claude")
        .join(format!("{name}.json"));
    let payload = std::fs::read_to_string(fixture)
        .unwrap()
        .replace("SESSION", session);
    let mut child = env
        .command()
        .args(["hook", "claude"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(payload.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap().into()
}

fn finished(env: &Env, owner: &str, name: &str, cmd: &str) {
    env.run(&["--owner", owner, "--name", name, cmd]);
    env.wait_exit(name);
}

#[test]
fn prompt_and_tool_events_carry_pending_results_once() {
    let env = Env::new();
    finished(&env, "claude:s1", "build", "echo compiled ok");
    finished(&env, "claude:other", "theirs", "echo not yours");
    for event in ["user_prompt_submit", "post_tool_use", "session_start"] {
        finished(&env, "claude:s1", &format!("job-{event}"), "echo done");
        let o = hook(&env, event, "s1", &[]).ok();
        let v: Value =
            serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", o.stdout));
        let out = &v["hookSpecificOutput"];
        let expected_name = match event {
            "user_prompt_submit" => "UserPromptSubmit",
            "post_tool_use" => "PostToolUse",
            _ => "SessionStart",
        };
        assert_eq!(out["hookEventName"], expected_name);
        let ctx = out["additionalContext"].as_str().unwrap();
        assert!(ctx.contains(&format!("<name>job-{event}</name>")), "{ctx}");
        assert!(
            !ctx.contains("theirs"),
            "another session's result leaked: {ctx}"
        );
    }
    // The first answer also carried the earlier `build`; now nothing is pending.
    let o = hook(&env, "user_prompt_submit", "s1", &[]).ok();
    assert_eq!(o.stdout, "", "delivered once");
    let inbox = env
        .aside(&["inbox", "--owner", "claude:s1", "--json"])
        .ok()
        .json();
    assert!(inbox["notifications"].as_array().unwrap().is_empty());
    let theirs = env
        .aside(&["inbox", "--owner", "claude:other", "--json"])
        .ok()
        .json();
    assert_eq!(theirs["notifications"].as_array().unwrap().len(), 1);
}

#[test]
fn stop_continues_while_results_are_pending_and_then_lets_claude_stop() {
    let env = Env::new();
    finished(&env, "claude:s2", "tests", "echo 12 passed; exit 1");
    let o = hook(&env, "stop", "s2", &[]).ok();
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["decision"], "block");
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.contains("<status>failed</status>") && reason.contains("12 passed"),
        "{reason}"
    );
    let o = hook(&env, "stop", "s2", &[]).ok();
    assert_eq!(o.stdout, "", "nothing pending: Claude may stop");
}

#[test]
fn stop_with_wait_on_stop_waits_for_a_running_process() {
    let env = Env::new();
    let gate = env.work.join("gate");
    let cmd = format!(
        "while [ ! -e {} ]; do sleep 0.02; done; echo server built",
        gate.display()
    );
    env.run(&["--owner", "claude:s3", "--name", "slow", &cmd]);
    let gate2 = gate.clone();
    let opener = std::thread::spawn(move || {
        // Release the process once the hook is (most likely) waiting; if it is not yet, the
        // result is simply pending when it looks, and the answer is the same.
        std::thread::sleep(std::time::Duration::from_millis(300));
        std::fs::write(gate2, "").unwrap();
    });
    let o = hook(&env, "stop", "s3", &["--wait-on-stop", "30s"]).ok();
    opener.join().unwrap();
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["decision"], "block");
    assert!(v["reason"].as_str().unwrap().contains("server built"));
}

#[test]
fn other_events_no_daemon_and_bad_input_answer_nothing_and_never_fail() {
    let env = Env::new();
    // No daemon: nothing to say, and no daemon is started by a hook.
    let o = hook(&env, "user_prompt_submit", "s4", &[]).ok();
    assert_eq!(o.stdout, "");
    assert!(!env.home.join("run/aside.sock").exists());
    // An event the adapter does not handle.
    finished(&env, "claude:s4", "x", "true");
    assert_eq!(hook(&env, "pre_tool_use", "s4", &[]).ok().stdout, "");
    // Not JSON at all: exit 0, a note on stderr.
    let mut child = env
        .command()
        .args(["hook", "claude"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"not json").unwrap();
    let o: Out = child.wait_with_output().unwrap().into();
    assert_eq!(o.code, 0);
    assert_eq!(o.stdout, "");
    assert!(
        o.stderr.contains("not a Claude Code hook event"),
        "{}",
        o.stderr
    );
    // ASIDE_OWNER (set in settings.json `env`) wins over the session id.
    let o: Out = {
        let mut c = env
            .command()
            .env("ASIDE_OWNER", "claude:s4")
            .args(["hook", "claude"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin
            .take()
            .unwrap()
            .write_all(
                br#"{"session_id":"unrelated","hook_event_name":"UserPromptSubmit","prompt":"hi"}"#,
            )
            .unwrap();
        c.wait_with_output().unwrap().into()
    };
    assert!(o.ok().stdout.contains("<name>x</name>"));
}

#[test]
fn the_hook_records_its_session_and_registers_the_wake_unless_told_not_to() {
    let env = Env::new();
    env.aside(&["daemon", "start"]).ok();
    let feed = |session: &str, args: &[&str], wake_env: Option<&str>| {
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/claude/session_start.json");
        let payload = std::fs::read_to_string(fixture)
            .unwrap()
            .replace("SESSION", session);
        let mut c = env.command();
        c.env_remove("ASIDE_WAKE");
        if let Some(v) = wake_env {
            c.env("ASIDE_WAKE", v);
        }
        let mut child = c
            .args(["hook", "claude"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(payload.as_bytes())
            .unwrap();
        Out::from(child.wait_with_output().unwrap()).ok();
    };
    feed("w1", &[], None);
    let s = env.aside(&["schema", "host-session"]).ok();
    assert!(s.stdout.contains("session_id"));
    let wake = env
        .aside(&["wake", "show", "--owner", "claude:w1", "--json"])
        .ok()
        .json();
    assert_eq!(wake["host"], "claude-code", "registered by default");
    feed("w2", &["--no-wake"], None);
    assert_eq!(
        env.aside(&["wake", "show", "--owner", "claude:w2"]).code,
        2,
        "--no-wake"
    );
    feed("w3", &[], Some("off"));
    assert_eq!(
        env.aside(&["wake", "show", "--owner", "claude:w3"]).code,
        2,
        "ASIDE_WAKE=off"
    );
    // A user's own wake command is never replaced by the hook's.
    env.aside(&["wake", "set", "--owner", "claude:w4", "--", "true"])
        .ok();
    feed("w4", &[], None);
    let wake = env
        .aside(&["wake", "show", "--owner", "claude:w4", "--json"])
        .ok()
        .json();
    assert_eq!(wake["command"], serde_json::json!(["true"]));
}
