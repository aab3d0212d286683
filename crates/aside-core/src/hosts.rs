//! Agent hosts (Claude Code, Codex CLI, Gemini CLI): how `aside` names their sessions, finds
//! the host process a client runs under, keeps the settings a resumed session needs, and
//! resumes a session non-interactively. Every host-specific decision lives here.
//!
//! Facts this follows (from the hosts' own behaviour, checked against the real CLIs):
//! - Claude Code exports `CLAUDE_CODE_SESSION_ID` to its MCP servers and passes `session_id`
//!   and `cwd` to hooks; `claude -p --resume ID` (prompt on stdin) continues that session, and
//!   it finds sessions by the working directory.
//! - Codex sends `_meta["x-codex-turn-metadata"].thread_id` with every `tools/call`, starts MCP
//!   servers with a minimal environment, and resumes with `codex exec resume ID -` (prompt on
//!   stdin).
//! - Gemini CLI resumes with `gemini --resume ID -p TEXT`, TEXT appended to what stdin holds.
//!
//! ```
//! use aside_core::hosts;
//! use aside_proto::AgentHost;
//! assert_eq!(hosts::owner(AgentHost::ClaudeCode, "5f3c"), "claude:5f3c");
//! assert_eq!(hosts::from_client_name("codex-mcp-client"), Some(AgentHost::Codex));
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aside_proto::{AgentHost, HostSession};

use crate::proc;

/// The owner that speaks for `session_id` of `host`: `claude:ID`, `codex:ID`, `gemini:ID`
/// (`claude:` is what `aside hook claude` always used).
pub fn owner(host: AgentHost, session_id: &str) -> String {
    let prefix = match host {
        AgentHost::ClaudeCode => "claude",
        AgentHost::Codex => "codex",
        AgentHost::Gemini => "gemini",
    };
    format!("{prefix}:{session_id}")
}

/// The host behind an MCP client, from the `clientInfo.name` of its `initialize`.
pub fn from_client_name(name: &str) -> Option<AgentHost> {
    match name {
        "claude-code" => Some(AgentHost::ClaudeCode),
        "codex-mcp-client" | "codex" => Some(AgentHost::Codex),
        "gemini-cli-mcp-client" | "gemini-cli" => Some(AgentHost::Gemini),
        _ => None,
    }
}

/// The program that starts `host` when none was recorded: its usual name on `PATH`.
pub fn default_program(host: AgentHost) -> &'static str {
    match host {
        AgentHost::ClaudeCode => "claude",
        AgentHost::Codex => "codex",
        AgentHost::Gemini => "gemini",
    }
}

/// Whether a resumed session of `host` gets the variable `key` from the recorded session: the
/// host's own configuration (where its state lives, which API and key it uses) and nothing
/// else, so a recorded session cannot smuggle `PATH`, `LD_PRELOAD` or the like into a wake.
pub fn keeps_env(host: AgentHost, key: &str) -> bool {
    let exact: &[&str] = match host {
        AgentHost::ClaudeCode => &[
            "CLAUDE_CONFIG_DIR",
            "CLAUDE_CODE_USE_BEDROCK",
            "CLAUDE_CODE_USE_VERTEX",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
            "DISABLE_AUTOUPDATER",
            "DISABLE_TELEMETRY",
        ],
        AgentHost::Codex => &["CODEX_HOME"],
        AgentHost::Gemini => &["GEMINI_CLI_HOME", "GEMINI_API_KEY", "GEMINI_MODEL"],
    };
    let prefixes: &[&str] = match host {
        AgentHost::ClaudeCode => &["ANTHROPIC_"],
        AgentHost::Codex => &["OPENAI_"],
        AgentHost::Gemini => &[
            "GOOGLE_GEMINI_",
            "GOOGLE_API_KEY",
            "GOOGLE_CLOUD_",
            "GOOGLE_GENAI_",
        ],
    };
    exact.contains(&key) || prefixes.iter().any(|p| key.starts_with(p))
}

/// The variables of `env` that a resumed session of `host` keeps ([`keeps_env`]).
pub fn session_env(
    host: AgentHost,
    env: impl IntoIterator<Item = (String, String)>,
) -> BTreeMap<String, String> {
    env.into_iter()
        .filter(|(k, _)| keeps_env(host, k))
        .collect()
}

/// The environment of process `pid` (`/proc/PID/environ`), filtered to what `host` keeps.
/// Empty when it cannot be read.
pub fn process_env(host: AgentHost, pid: u32) -> BTreeMap<String, String> {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return BTreeMap::new();
    };
    session_env(
        host,
        raw.split(|b| *b == 0).filter_map(|kv| {
            let kv = std::str::from_utf8(kv).ok()?;
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        }),
    )
}

/// Programs that are shells or interpreters rather than the host itself.
fn is_shell(name: &str) -> bool {
    matches!(
        name,
        "sh" | "bash" | "dash" | "zsh" | "fish" | "ksh" | "busybox"
    )
}

fn is_interpreter(name: &str) -> bool {
    name == "node" || name == "bun" || name == "deno" || name.starts_with("python")
}

fn exe(pid: u32) -> Option<PathBuf> {
    let target = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    // A binary replaced on disk since it started (an upgrade) reads as "… (deleted)".
    let text = target.to_string_lossy();
    let path = PathBuf::from(text.strip_suffix(" (deleted)").unwrap_or(&text));
    path.is_file().then_some(path)
}

fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The host process a client runs under: `pid` itself, or the nearest ancestor of it that is
/// not a shell (hooks run through `sh -c`). Returns its pid and start time.
pub fn host_process(pid: u32) -> Option<(u32, u64)> {
    let mut pid = pid;
    for _ in 0..4 {
        let stat = proc::stat(pid as i32)?;
        let name = exe(pid)
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default();
        if !is_shell(&name) {
            return Some((pid, stat.starttime));
        }
        pid = u32::try_from(stat.ppid).ok().filter(|p| *p > 1)?;
    }
    None
}

/// The argv prefix that starts the same host as process `pid`: its executable, or for a script
/// run by an interpreter (Gemini CLI under `node`) the interpreter and the script. Empty when
/// it cannot be told.
pub fn program_of(pid: u32) -> Vec<String> {
    let Some(exe) = exe(pid) else {
        return Vec::new();
    };
    let name = exe
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !is_interpreter(&name) {
        return vec![exe.display().to_string()];
    }
    // The script is the first argument that is not an interpreter option.
    let Some(script) = cmdline(pid)
        .into_iter()
        .skip(1)
        .find(|a| !a.starts_with('-'))
    else {
        return Vec::new();
    };
    let script = Path::new(&script);
    let script = if script.is_absolute() {
        script.to_path_buf()
    } else {
        match std::fs::read_link(format!("/proc/{pid}/cwd")) {
            Ok(cwd) => cwd.join(script),
            Err(_) => return Vec::new(),
        }
    };
    vec![exe.display().to_string(), script.display().to_string()]
}

/// Variables that mark a process as running inside some host session: the daemon inherits them
/// from whoever started it (often an `aside mcp` under a host), and a resumed host must not
/// believe it runs inside that other session.
pub const SESSION_MARKERS: &[&str] = &[
    "CLAUDECODE",
    "CLAUDE_CODE_SESSION_ID",
    "CLAUDE_CODE_ENTRYPOINT",
    "CLAUDE_PROJECT_DIR",
    "AI_AGENT",
    "CODEX_THREAD_ID",
    "CODEX_SANDBOX",
    "CODEX_SANDBOX_NETWORK_DISABLED",
    "GEMINI_CLI",
    "GEMINI_CLI_NO_RELAUNCH",
    "GEMINI_SESSION_ID",
    "ASIDE_OWNER",
    "ASIDE_TEAM",
];

/// How to resume a session: run `argv` in `cwd` with `env` added (and [`SESSION_MARKERS`]
/// removed), `stdin` written to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// Program and arguments (never a shell string).
    pub argv: Vec<String>,
    /// The prompt (or the results), written to the program's stdin.
    pub stdin: String,
    /// Where to run it: the session's directory.
    pub cwd: PathBuf,
    /// Variables added to the daemon's environment.
    pub env: BTreeMap<String, String>,
}

/// The command that resumes `session` with `prompt`, per host; `prompt` only ever goes to
/// stdin.
pub fn resume(session: &HostSession, prompt: &str) -> Resume {
    let mut argv = if session.program.is_empty() {
        vec![default_program(session.host).to_string()]
    } else {
        session.program.clone()
    };
    let id = session.session_id.clone();
    match session.host {
        AgentHost::ClaudeCode => {
            argv.extend(["-p".into(), "--resume".into(), id]);
            argv.extend(["--output-format".into(), "json".into()]);
        }
        AgentHost::Codex => {
            argv.extend(["exec".into(), "--skip-git-repo-check".into()]);
            argv.extend(["resume".into(), id, "-".into()]);
        }
        AgentHost::Gemini => {
            argv.extend(["--resume".into(), id, "-p".into()]);
            argv.push("(The results above arrived while you were idle.)".into());
        }
    }
    Resume {
        argv,
        stdin: prompt.to_string(),
        cwd: PathBuf::from(&session.cwd),
        env: session_env(session.host, session.env.clone()),
    }
}

/// Whether the host process recorded with `session` is still running (the session is open).
pub fn session_open(session: &HostSession) -> bool {
    match session.pid {
        Some(pid) => proc::is_alive(pid as i32, session.pid_start),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(host: AgentHost) -> HostSession {
        HostSession {
            owner: owner(host, "s1"),
            host,
            session_id: "s1".into(),
            cwd: "/work".into(),
            program: vec![],
            env: BTreeMap::from([
                ("CODEX_HOME".to_string(), "/c".to_string()),
                ("LD_PRELOAD".to_string(), "/evil.so".to_string()),
            ]),
            pid: None,
            pid_start: None,
            updated_at: None,
        }
    }

    #[test]
    fn each_host_resumes_with_its_own_cli_and_the_prompt_on_stdin() {
        let r = resume(&session(AgentHost::ClaudeCode), "results");
        assert_eq!(
            r.argv,
            ["claude", "-p", "--resume", "s1", "--output-format", "json"]
        );
        assert_eq!(r.stdin, "results");
        assert_eq!(r.cwd, PathBuf::from("/work"));
        let r = resume(&session(AgentHost::Codex), "results");
        assert_eq!(
            r.argv,
            [
                "codex",
                "exec",
                "--skip-git-repo-check",
                "resume",
                "s1",
                "-"
            ]
        );
        assert_eq!(r.env.get("CODEX_HOME").map(String::as_str), Some("/c"));
        assert!(
            !r.env.contains_key("LD_PRELOAD"),
            "only the host's settings"
        );
        let r = resume(&session(AgentHost::Gemini), "the results");
        assert_eq!(&r.argv[..4], ["gemini", "--resume", "s1", "-p"]);
        assert!(
            !r.argv.iter().any(|a| a.contains("the results")),
            "never in argv"
        );
        assert_eq!(r.stdin, "the results");
    }

    #[test]
    fn the_host_process_of_this_test_is_itself() {
        let me = std::process::id();
        let (pid, start) = host_process(me).unwrap();
        assert_eq!(pid, me);
        assert_eq!(Some(start), proc::stat(me as i32).map(|s| s.starttime));
        assert!(!program_of(me).is_empty());
    }
}
