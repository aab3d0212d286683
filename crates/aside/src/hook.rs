//! `aside hook claude` and `aside hook gemini`: the Claude Code and Gemini CLI adapters. The host
//! runs it as a command hook with the hook event as JSON on stdin; it answers so that the
//! owner's pending results appear in the conversation, and so that when the agent is about to
//! stop it continues with them instead of going idle. Gemini CLI's hooks take Claude Code's
//! answers, under its own event names.
//!
//! - Claude `SessionStart`, `UserPromptSubmit`, `PostToolUse` (Gemini `SessionStart`,
//!   `BeforeAgent`, `AfterTool`): pending results become `hookSpecificOutput.additionalContext`.
//! - Claude `Stop`, `SubagentStop` (Gemini `AfterAgent`): while results are pending,
//!   `{"decision": "block", "reason": …}` makes the agent continue with them. With
//!   `--wait-on-stop DUR` and nothing pending yet, it first waits up to DUR for one of the
//!   session's running processes to end.
//!
//! Each result is delivered once (taken, which acknowledges it, when printed), so the `Stop` loop ends without
//! looking at `stop_hook_active` (Claude Code also caps consecutive stop blocks). A hook
//! must never break Claude: without a daemon, on bad input or on any error it prints nothing
//! (errors go to stderr) and exits 0, and it never starts a daemon.
//!
//! Every event also records the session with the daemon (owner, `session_id`, `cwd`, the host's
//! program, settings and pid) and, unless `--no-wake`, registers a wake that resumes this
//! session (`claude -p --resume`, `gemini --resume`) when a result arrives after it ended. A
//! stop with nothing to deliver marks the owner idle, for wake commands and webhooks. The owner
//! is `$ASIDE_OWNER`, else the session's (`claude:ID`, `gemini:ID`), the one `aside mcp` takes
//! under the same session.

use std::io::Read;
use std::time::Duration;

use aside_core::hosts;
use aside_core::paths::StateDir;
use aside_proto::{AgentHost, HostSession, TakeRequest, WaitQuery};
use serde::Deserialize;
use serde_json::json;

use crate::client::{Client, ClientError};
use aside_core::present::notification_block;

/// Largest hook payload read from stdin (PostToolUse carries the tool's response).
const MAX_PAYLOAD: u64 = 16 * 1024 * 1024;

/// The fields of a hook event that the adapter uses (Claude Code's and Gemini CLI's agree).
#[derive(Debug, Deserialize)]
pub struct HookEvent {
    /// `SessionStart`, `UserPromptSubmit`, `PostToolUse`, `Stop`, … (Gemini: `BeforeAgent`,
    /// `AfterTool`, `AfterAgent`, …)
    pub hook_event_name: String,
    /// The host's session id.
    #[serde(default)]
    pub session_id: Option<String>,
    /// The session's working directory.
    #[serde(default)]
    pub cwd: Option<String>,
}

/// Options of `aside hook claude|gemini`.
#[derive(Debug, Clone)]
pub struct HookOptions {
    /// Which host runs the hook.
    pub host: AgentHost,
    /// The owner whose results to deliver (default: `$ASIDE_OWNER`, else the session's).
    pub owner: Option<String>,
    /// On `Stop` with nothing pending, wait this long for a running process to end.
    pub wait_on_stop: Option<Duration>,
    /// Register the wake that resumes this session.
    pub wake: bool,
}

/// Runs the adapter on stdin/stdout; always returns 0 (a hook must not break its host).
pub fn run(opts: HookOptions) -> i32 {
    let mut input = String::new();
    if let Err(e) = std::io::stdin()
        .take(MAX_PAYLOAD)
        .read_to_string(&mut input)
    {
        eprintln!("aside hook: cannot read the hook event: {e}");
        return 0;
    }
    let event: HookEvent = match serde_json::from_str(&input) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("aside hook: not a {} hook event ({e})", opts.host.title());
            return 0;
        }
    };
    let Ok(state) = StateDir::from_env() else {
        return 0;
    };
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return 0;
    };
    match rt.block_on(answer(&event, &opts, state)) {
        Ok(Some(out)) => println!("{out}"),
        Ok(None) => {}
        Err(e) => eprintln!("aside hook: {e}"),
    }
    0
}

/// The owner a hook event speaks for.
pub fn hook_owner(event: &HookEvent, opts: &HookOptions) -> Option<String> {
    opts.owner.clone().filter(|o| !o.is_empty()).or_else(|| {
        event
            .session_id
            .as_ref()
            .filter(|s| !s.is_empty())
            .map(|s| hosts::owner(opts.host, s))
    })
}

/// What an event of `host` asks of the adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Moment {
    /// Results may be added to the conversation as context.
    Context,
    /// The agent is about to stop: results make it continue.
    Stop,
}

fn moment(host: AgentHost, event: &str) -> Option<Moment> {
    match (host, event) {
        (AgentHost::ClaudeCode, "SessionStart" | "UserPromptSubmit" | "PostToolUse")
        | (AgentHost::Gemini, "SessionStart" | "BeforeAgent" | "AfterTool") => {
            Some(Moment::Context)
        }
        (AgentHost::ClaudeCode, "Stop" | "SubagentStop") | (AgentHost::Gemini, "AfterAgent") => {
            Some(Moment::Stop)
        }
        _ => None,
    }
}

async fn answer(
    event: &HookEvent,
    opts: &HookOptions,
    state: StateDir,
) -> Result<Option<String>, ClientError> {
    let kind = event.hook_event_name.as_str();
    let Some(moment) = moment(opts.host, kind) else {
        return Ok(None);
    };
    let stop = moment == Moment::Stop;
    let Some(owner) = hook_owner(event, opts) else {
        return Ok(None);
    };
    // Never start a daemon from a hook: no daemon, nothing pending.
    let client = Client::new(state, owner.clone(), false);
    if client.connect().await.is_err() {
        return Ok(None);
    }
    if let Some(session) = host_session(opts.host, event, &owner)
        && let Err(e) = crate::mcp::register_session(&client, &session, opts.wake).await
    {
        eprintln!("aside hook: cannot record the session of {owner}: {e}");
    }
    // Taken results are acknowledged as they are handed out: they are in this answer only.
    let mut taken = client.take(&owner, &TakeRequest::default()).await?;
    if taken.notifications.is_empty()
        && stop
        && let Some(limit) = opts.wait_on_stop
        && wait_for_any_exit(&client, &owner, limit).await?
    {
        taken = client.take(&owner, &TakeRequest::default()).await?;
    }
    if taken.notifications.is_empty() {
        if stop {
            // Going idle: a wake command or webhook may fire for what arrives now.
            client.mark_idle(&owner).await?;
        }
        return Ok(None);
    }
    let text = format!(
        "Results of background commands (from aside):\n{}",
        taken
            .notifications
            .iter()
            .map(notification_block)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let out = if stop {
        json!({
            "decision": "block",
            "reason": format!("{text}\nContinue the task with these results."),
        })
    } else {
        json!({
            "hookSpecificOutput": {
                "hookEventName": kind,
                "additionalContext": text,
            }
        })
    };
    Ok(Some(out.to_string()))
}

/// The session of `event`: its id and directory from the event, the host's program, settings
/// and pid from the process that ran this hook.
fn host_session(host_kind: AgentHost, event: &HookEvent, owner: &str) -> Option<HostSession> {
    let session_id = event.session_id.clone().filter(|s| !s.is_empty())?;
    let host = hosts::host_process(std::os::unix::process::parent_id());
    let cwd = event
        .cwd
        .clone()
        .filter(|c| c.starts_with('/'))
        .or_else(|| {
            host.and_then(|(pid, _)| std::fs::read_link(format!("/proc/{pid}/cwd")).ok())
                .map(|p| p.display().to_string())
        })?;
    Some(HostSession {
        owner: owner.to_string(),
        host: host_kind,
        session_id,
        cwd,
        program: host
            .map(|(pid, _)| hosts::program_of(pid))
            .unwrap_or_default(),
        env: host
            .map(|(pid, _)| hosts::process_env(host_kind, pid))
            .unwrap_or_default(),
        pid: host.map(|(pid, _)| pid),
        pid_start: host.map(|(_, start)| start),
        updated_at: None,
    })
}

/// Waits up to `limit` for any of `owner`'s running processes to end; false when none runs.
async fn wait_for_any_exit(
    client: &Client,
    owner: &str,
    limit: Duration,
) -> Result<bool, ClientError> {
    let procs = client
        .processes(&aside_proto::ListQuery {
            owner: Some(owner.into()),
            ..Default::default()
        })
        .await?;
    let running: Vec<String> = procs
        .into_iter()
        .filter(|p| !p.status.is_terminal())
        .map(|p| p.id.0)
        .collect();
    if running.is_empty() {
        return Ok(false);
    }
    let q = WaitQuery {
        timeout_ms: Some(limit.as_millis() as u64),
        ..WaitQuery::default()
    };
    let waits = running.iter().map(|id| Box::pin(client.wait(id, &q)));
    let (first, _, _) = futures_util::future::select_all(waits).await;
    first?;
    Ok(true)
}
