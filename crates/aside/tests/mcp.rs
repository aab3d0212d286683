//! `aside mcp` driven by a real MCP client nobody here wrote: the official Python SDK.
//!
//! The SDK is installed into a virtualenv under the target directory on first use (PyPI), so
//! `cargo test` needs nothing installed by hand beyond Python 3.10+.

mod common;

use common::*;

/// Runs `tests/mcp/SCRIPT` against a fresh state directory.
fn run_script(script: &str, done: &str) {
    run_mcp_script(&Env::new(), script, done, &[]);
}

#[test]
fn the_official_python_sdk_drives_every_tool() {
    run_script("client_test.py", "all MCP checks passed");
}

#[test]
fn resource_subscriptions_notify_as_a_process_writes_and_ends() {
    run_script("listen_test.py", "all listen checks passed");
}

#[test]
fn an_agent_on_another_account_works_against_a_shared_daemon_with_remote() {
    run_script("remote_test.py", "all remote checks passed");
}

#[test]
fn a_raw_peer_gets_parse_errors_a_prompt_exit_on_eof_and_a_terminal_hint() {
    run_script("hygiene_test.py", "all hygiene checks passed");
}

#[test]
fn an_agent_brings_its_project_up_and_down_over_mcp() {
    run_script("project_test.py", "all project checks passed");
}

#[test]
fn an_mcp_connection_cannot_speak_for_the_human() {
    let env = Env::new();
    let out = env
        .command()
        .env("ASIDE_OWNER", "human")
        .arg("mcp")
        .output()
        .expect("aside mcp");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be owner \"human\""));
}
