//! Results reach the model inside the real agent hosts: Claude Code, Codex CLI and Gemini CLI
//! (from npm, pinned) driven through whole turns against a scripted stand-in for their model
//! APIs. Every assertion is on what the host actually sent to the model.
//!
//! The marker each test looks for is printed by the command (`echo $((40+2))…`), so it appears
//! in a request only where a result was shown, never where the command was merely echoed.

mod common;

use std::time::Duration;

use common::hosts::*;
use common::*;
use serde_json::{Value, json};

const TURN: Duration = Duration::from_secs(120);

fn inbox_of(env: &Env, owner: &str) -> Vec<Value> {
    env.aside(&["inbox", "--owner", owner, "--json"])
        .ok()
        .json()["notifications"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The one owner whose processes this test's host started.
fn only_owner(env: &Env) -> String {
    let all = env.status_all();
    let owners: std::collections::BTreeSet<String> = all
        .iter()
        .map(|p| p["owner"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(owners.len(), 1, "one owner: {owners:?}");
    owners.into_iter().next().unwrap_or_default()
}

/// The plan of a turn that starts a background job and later calls `wait`: the job's result
/// must reach the model through the `wait` answer alone.
fn piggyback_plan(marker_cmd: &str) -> Value {
    json!({"steps": [
        {"tool": "run", "args": {"command": marker_cmd, "run_in_background": true, "name": "job"}},
        {"tool": "wait", "args": {"ids": ["job"], "timeout_ms": 30000}},
        {"text": "done"},
    ]})
}

#[test]
fn claude_code_shows_the_model_a_background_result_in_the_next_mcp_answer() {
    let hosts = Hosts::get();
    let env = Env::new();
    let api = StandIn::start(
        &env.dir.path().join("api"),
        piggyback_plan("sleep 1; echo $((40+2))claude"),
    );
    let claude = Claude::new(&hosts, &env, &api, &[]);
    claude.settings(&env, None);
    let out = run_for(claude.prompt(&env, "build it in the background"), TURN).ok();
    assert!(out.stdout.contains("\"is_error\":false"), "{}", out.stdout);
    assert_eq!(
        api.deliveries("42claude"),
        1,
        "shown exactly once:\n{}",
        api.dump()
    );
    let msg = body_text(&api.first_turn_with("42claude").expect("shown"));
    assert!(
        msg.contains("tool_result") && msg.contains("background_results"),
        "{msg}"
    );
    assert!(msg.contains("task-notification"), "{msg}");
    // The background answer told the model not to poll, in what it sees.
    assert!(
        api.first_turn_with("Do not poll").is_some(),
        "{}",
        api.dump()
    );
    // The owner is the Claude Code session's, and nothing is left unread.
    let owner = only_owner(&env);
    assert!(owner.starts_with("claude:"), "{owner}");
    assert!(inbox_of(&env, &owner).is_empty());
}

#[test]
fn codex_shows_the_model_a_background_result_in_the_next_mcp_answer() {
    let hosts = Hosts::get();
    let env = Env::new();
    let api = StandIn::start(
        &env.dir.path().join("api"),
        piggyback_plan("sleep 1; echo $((40+2))codex"),
    );
    let codex = Codex::new(&hosts, &env, &api, &[]);
    let out = run_for(codex.exec(&env, "build it in the background"), TURN).ok();
    let thread = out
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| v["thread_id"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no thread id: {}", out.stdout));
    assert_eq!(api.deliveries("42codex"), 1, "{}", api.dump());
    let msg = body_text(&api.first_turn_with("42codex").expect("shown"));
    assert!(
        msg.contains("function_call_output") && msg.contains("background_results"),
        "{msg}"
    );
    // One owner per Codex thread, taken from the thread id Codex sends with each call.
    assert_eq!(only_owner(&env), format!("codex:{thread}"));
    assert!(inbox_of(&env, &format!("codex:{thread}")).is_empty());
}

#[test]
fn gemini_cli_shows_the_model_a_background_result_in_the_next_mcp_answer() {
    let hosts = Hosts::get();
    let env = Env::new();
    let api = StandIn::start(
        &env.dir.path().join("api"),
        piggyback_plan("sleep 1; echo $((40+2))gemini"),
    );
    let gemini = Gemini::new(&hosts, &env, &api);
    run_for(gemini.prompt(&env, "build it in the background"), TURN).ok();
    assert_eq!(api.deliveries("42gemini"), 1, "{}", api.dump());
    let msg = body_text(&api.first_turn_with("42gemini").expect("shown"));
    assert!(
        msg.contains("functionResponse") && msg.contains("task-notification"),
        "{msg}"
    );
    assert!(inbox_of(&env, &only_owner(&env)).is_empty());
}

/// README.md's hook block, with `aside` spelled as this build's binary.
fn readme_hooks(wait_on_stop: bool) -> Value {
    let hook = format!("{BIN} hook claude");
    let stop = if wait_on_stop {
        format!("{hook} --wait-on-stop 10m")
    } else {
        hook.clone()
    };
    json!({
        "SessionStart":     [{ "hooks": [{ "type": "command", "command": hook }] }],
        "UserPromptSubmit": [{ "hooks": [{ "type": "command", "command": hook }] }],
        "PostToolUse":      [{ "matcher": "*", "hooks": [{ "type": "command", "command": hook }] }],
        "Stop":             [{ "hooks": [{ "type": "command", "command": stop, "timeout": 660 }] }],
    })
}

#[test]
fn claude_codes_stop_hook_continues_with_the_result_with_no_aside_owner_set() {
    let hosts = Hosts::get();
    let env = Env::new();
    // The turn ends right after starting the job; the Stop hook waits for it and makes Claude
    // continue with its result.
    let plan = json!({"steps": [
        {"tool": "run", "args": {"command": "sleep 1; echo $((40+2))stop", "run_in_background": true}},
        {"text": "started it; going idle"},
        {"when": "42stop", "text": "read the result"},
    ]});
    let api = StandIn::start(&env.dir.path().join("api"), plan);
    let claude = Claude::new(&hosts, &env, &api, &[]);
    claude.settings(&env, Some(readme_hooks(true)));
    let out = run_for(claude.prompt(&env, "start the build"), TURN).ok();
    assert!(
        out.stdout.contains("read the result"),
        "Claude continued: {}",
        out.stdout
    );
    assert_eq!(api.deliveries("42stop"), 1, "{}", api.dump());
    // The MCP server and the hook spoke for the same owner, by themselves.
    let owner = only_owner(&env);
    assert!(owner.starts_with("claude:"), "{owner}");
    assert!(inbox_of(&env, &owner).is_empty());
}

#[test]
fn an_ended_claude_code_session_is_resumed_with_its_result_once_across_a_daemon_kill() {
    let hosts = Hosts::get();
    let env = Env::new();
    let gate = env.work.join("gate");
    let plan = json!({"steps": [
        {"tool": "run", "args": {
            "command": format!("while [ ! -e {} ]; do sleep 0.05; done; echo $((40+2))resumed", gate.display()),
            "run_in_background": true, "name": "slow",
        }},
        {"text": "started it; I will stop here"},
        {"when": "42resumed", "text": "resumed with the result"},
    ]});
    let api = StandIn::start(&env.dir.path().join("api"), plan);
    let claude = Claude::new(&hosts, &env, &api, &[]);
    claude.settings(&env, Some(readme_hooks(false)));
    let out = run_for(claude.prompt(&env, "start the slow job"), TURN).ok();
    let session: Value = serde_json::from_str(&out.stdout).expect("claude's JSON result");
    let session_id = session["session_id"]
        .as_str()
        .expect("a session id")
        .to_string();
    let owner = format!("claude:{session_id}");
    // The session is over, its hook registered the wake; now the daemon dies, and the job ends
    // while no daemon runs.
    let wake = env
        .aside(&["wake", "show", "--owner", &owner, "--json"])
        .ok()
        .json();
    assert_eq!(wake["host"], "claude-code");
    env.kill_daemon();
    std::fs::write(&gate, "").expect("gate");
    env.aside(&["daemon", "start"]).ok();
    api.wait_for("42resumed", TURN);
    // The resumed turn is that very session: it carries the first prompt's history.
    let resumed = body_text(&api.first_turn_with("42resumed").expect("the resumed turn"));
    assert!(
        resumed.contains("start the slow job"),
        "the same session: {resumed}"
    );
    // Acknowledged once the resumed turn ended well; then the wake has nothing left.
    eventually(TURN, "the result to be acknowledged", || {
        inbox_of(&env, &owner).is_empty()
    });
    eventually(TURN, "the wake to be audited", || {
        std::fs::read_to_string(env.home.join("audit.log"))
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("\"action\":\"wake\"") && l.contains("\"outcome\":\"done\""))
    });
    assert_eq!(api.deliveries("42resumed"), 1, "{}", api.dump());
}

#[test]
fn a_resumed_turn_that_fails_is_retried_and_one_cut_short_by_a_daemon_kill_is_not_repeated() {
    let hosts = Hosts::get();
    let env = Env::new();
    let plan = json!({"steps": [
        {"tool": "run", "args": {"command": "sleep 1; echo $((40+2))retry", "run_in_background": true}},
        {"text": "started it; I will stop here"},
        // The first resumed turn fails (a 400 is not retried by Claude Code itself) ...
        {"when": "42retry", "status": 400},
        // ... the wake tries again after its backoff; that turn takes a while, and the daemon
        // is killed while it runs.
        {"when": "42retry", "delay_ms": 3000, "text": "resumed with the result"},
    ]});
    let api = StandIn::start(&env.dir.path().join("api"), plan);
    let claude = Claude::new(&hosts, &env, &api, &[]);
    claude.settings(&env, Some(readme_hooks(false)));
    let out = run_for(claude.prompt(&env, "start the job"), TURN).ok();
    let session: Value = serde_json::from_str(&out.stdout).expect("claude's JSON result");
    let owner = format!(
        "claude:{}",
        session["session_id"].as_str().unwrap_or_default()
    );
    let audited = |what: &str| {
        std::fs::read_to_string(env.home.join("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"action\":\"wake\"") && l.contains(what))
            .count()
    };
    eventually(TURN, "the failed resume to be audited", || {
        audited("failed") >= 1
    });
    // The second turn is under way: two resumed requests reached the model.
    eventually(TURN, "the retry to reach the model", || {
        api.turns()
            .iter()
            .filter(|t| body_text(t).contains("42retry"))
            .count()
            >= 2
    });
    env.kill_daemon();
    env.aside(&["daemon", "start"]).ok();
    // The next daemon waits for the resumed turn that is still running, then counts it as
    // delivered: acknowledged, and never resumed again.
    eventually(TURN, "the result to be acknowledged", || {
        inbox_of(&env, &owner).is_empty()
    });
    let resumed_turns = api
        .turns()
        .iter()
        .filter(|t| body_text(t).contains("42retry"))
        .count();
    assert_eq!(
        resumed_turns,
        2,
        "one failed turn, one that got through: {}",
        api.dump()
    );
}

/// A turn whose next tool call fails after the job ended: the failed call's answer (text only,
/// as hosts show failures) carries the result.
fn error_plan(marker_cmd: &str) -> Value {
    json!({"steps": [
        {"tool": "run", "args": {"command": marker_cmd, "run_in_background": true}},
        {"delay_ms": 2500, "tool": "stop", "args": {"id": "no-such-process"}},
        {"text": "done"},
    ]})
}

#[test]
fn a_failed_tool_call_still_shows_results_in_claude_code_and_codex() {
    let hosts = Hosts::get();
    let env = Env::new();
    let api = StandIn::start(
        &env.dir.path().join("api"),
        error_plan("sleep 1; echo $((40+2))err1"),
    );
    let claude = Claude::new(&hosts, &env, &api, &[]);
    claude.settings(&env, None);
    run_for(claude.prompt(&env, "go"), TURN).ok();
    assert_eq!(api.deliveries("42err1"), 1, "{}", api.dump());
    let msg = body_text(&api.first_turn_with("42err1").expect("shown"));
    assert!(
        msg.contains("no-such-process") || msg.contains("is_error"),
        "{msg}"
    );

    let env = Env::new();
    let api = StandIn::start(
        &env.dir.path().join("api"),
        error_plan("sleep 1; echo $((40+2))err2"),
    );
    let codex = Codex::new(&hosts, &env, &api, &[]);
    run_for(codex.exec(&env, "go"), TURN).ok();
    assert_eq!(api.deliveries("42err2"), 1, "{}", api.dump());
}

#[test]
fn an_ended_codex_thread_is_resumed_with_its_result() {
    let hosts = Hosts::get();
    let env = Env::new();
    let plan = json!({"steps": [
        {"tool": "run", "args": {"command": "sleep 2; echo $((40+2))thread", "run_in_background": true}},
        {"text": "started it"},
        {"when": "42thread", "text": "resumed with the result"},
    ]});
    let api = StandIn::start(&env.dir.path().join("api"), plan);
    let codex = Codex::new(&hosts, &env, &api, &["--wake"]);
    run_for(codex.exec(&env, "start the job and stop"), TURN).ok();
    api.wait_for("42thread", TURN);
    let owner = only_owner(&env);
    assert!(owner.starts_with("codex:"), "{owner}");
    eventually(TURN, "the result to be acknowledged", || {
        inbox_of(&env, &owner).is_empty()
    });
    assert_eq!(api.deliveries("42thread"), 1, "{}", api.dump());
    // `codex exec resume` continued the same thread: its first prompt is in the request.
    let resumed = body_text(&api.first_turn_with("42thread").expect("the resumed turn"));
    assert!(resumed.contains("start the job and stop"), "{resumed}");
}

/// README.md's Gemini CLI hook block, with `aside` spelled as this build's binary.
fn gemini_hooks(wait_on_stop: bool) -> Value {
    let hook = format!("{BIN} hook gemini");
    let stop = if wait_on_stop {
        format!("{hook} --wait-on-stop 10m")
    } else {
        hook.clone()
    };
    json!({
        "SessionStart": [{ "hooks": [{ "type": "command", "command": hook }] }],
        "BeforeAgent":  [{ "hooks": [{ "type": "command", "command": hook }] }],
        "AfterTool":    [{ "matcher": "*", "hooks": [{ "type": "command", "command": hook }] }],
        "AfterAgent":   [{ "hooks": [{ "type": "command", "command": stop, "timeout": 660000 }] }],
    })
}

#[test]
fn gemini_clis_after_agent_hook_continues_with_the_result_under_the_mcp_servers_owner() {
    let hosts = Hosts::get();
    let env = Env::new();
    let plan = json!({"steps": [
        {"tool": "run", "args": {"command": "sleep 1; echo $((40+2))after", "run_in_background": true}},
        {"text": "started it; going idle"},
        {"when": "42after", "text": "read the result"},
    ]});
    let api = StandIn::start(&env.dir.path().join("api"), plan);
    let gemini = Gemini::with_hooks(&hosts, &env, &api, Some(gemini_hooks(true)));
    let out = run_for(gemini.prompt(&env, "start the build"), TURN).ok();
    assert!(
        out.stdout.contains("read the result"),
        "Gemini continued: {}",
        out.stdout
    );
    assert_eq!(api.deliveries("42after"), 1, "{}", api.dump());
    // Gemini names no session to its MCP servers; the hook's session binds them to one owner.
    let owner = only_owner(&env);
    assert!(owner.starts_with("gemini:"), "{owner}");
    assert!(inbox_of(&env, &owner).is_empty());
}

#[test]
fn an_ended_gemini_session_is_resumed_with_its_result() {
    let hosts = Hosts::get();
    let env = Env::new();
    let gate = env.work.join("gate");
    let plan = json!({"steps": [
        {"tool": "run", "args": {
            "command": format!("while [ ! -e {} ]; do sleep 0.05; done; echo $((40+2))gemresumed", gate.display()),
            "run_in_background": true,
        }},
        {"text": "started it; I will stop here"},
        {"when": "42gemresumed", "text": "resumed with the result"},
    ]});
    let api = StandIn::start(&env.dir.path().join("api"), plan);
    let gemini = Gemini::with_hooks(&hosts, &env, &api, Some(gemini_hooks(false)));
    run_for(gemini.prompt(&env, "start the gated job"), TURN).ok();
    let owner = only_owner(&env);
    let wake = env
        .aside(&["wake", "show", "--owner", &owner, "--json"])
        .ok()
        .json();
    assert_eq!(wake["host"], "gemini");
    std::fs::write(&gate, "").expect("gate");
    api.wait_for("42gemresumed", TURN);
    let resumed = body_text(
        &api.first_turn_with("42gemresumed")
            .expect("the resumed turn"),
    );
    assert!(
        resumed.contains("start the gated job"),
        "the same session: {resumed}"
    );
    eventually(TURN, "the result to be acknowledged", || {
        inbox_of(&env, &owner).is_empty()
    });
    assert_eq!(api.deliveries("42gemresumed"), 1, "{}", api.dump());
}

#[test]
fn the_inspectors_strict_tools_listing_finds_nothing_to_report() {
    let hosts = Hosts::get();
    let env = Env::new();
    let mut cmd = std::process::Command::new(hosts.inspector());
    cmd.args(["--cli", "--strict", "-e"])
        .arg(format!("ASIDE_HOME={}", env.home.display()))
        .args(["--method", "tools/list", BIN, "mcp"])
        .current_dir(&env.work);
    let out = run_for(cmd, TURN);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.stderr.trim(), "", "no warning and no error");
    let tools: Value = serde_json::from_str(&out.stdout).expect("the listing");
    let names: Vec<&str> = tools["tools"]
        .as_array()
        .map(|t| t.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(names.contains(&"run") && names.contains(&"up"), "{names:?}");
    for t in tools["tools"].as_array().into_iter().flatten() {
        assert!(
            t["annotations"]["readOnlyHint"].is_boolean(),
            "annotations on {t}"
        );
    }
    let text = out.stdout;
    for bad in [
        "\"uint",
        "\"int32",
        "\"int64",
        "[\"integer\",\"null\"]",
        "\"null\"]",
    ] {
        assert!(
            !text.replace(' ', "").contains(bad),
            "non-standard schema: {bad}"
        );
    }
}

#[test]
fn the_typescript_sdk_subscribes_with_legacy_resources_subscribe() {
    let hosts = Hosts::get();
    let env = Env::new();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hosts/subscribe.mjs");
    let mut cmd = std::process::Command::new("node");
    cmd.arg(script)
        .env("ASIDE_BIN", BIN)
        .env("ASIDE_HOME", &env.home)
        .env("NODE_PATH", hosts.node_modules())
        .env("ASIDE_HOSTS_NODE_MODULES", hosts.node_modules())
        .current_dir(&env.work);
    let out = run_for(cmd, TURN);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("legacy subscribe checks passed"),
        "{}",
        out.stdout
    );
}
