//! `aside mcp`: the stdio MCP server for agents (official `rmcp` SDK, pinned `~3.9`).
//!
//! A thin front end on the daemon's API, like the CLI: it starts the daemon when needed and
//! never writes anything but JSON-RPC on stdout.
//!
//! **Who it speaks for.** `--owner`, else `$ASIDE_OWNER`, else the host session it runs in
//! (Claude Code: `claude:$CLAUDE_CODE_SESSION_ID`, the owner `aside hook claude` uses too;
//! Codex: `codex:<thread_id>` from each `tools/call`'s `_meta`), else the client's name plus a
//! session id fixed for the connection. A host session is recorded with the daemon (host,
//! session id, cwd, the host's program and settings) the first time it is seen, so a wake can
//! resume it; with `--wake` the server also registers that wake.
//!
//! **Every tool answer carries the owner's pending results** (the *piggyback*), each once, in
//! `structuredContent` (what Claude Code and Codex show a model) and in the text (what Gemini
//! CLI shows): see [`answer`]. Only what is put into an answer is acknowledged.

mod answer;
mod schema;
mod stdio;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aside_core::hosts;
use aside_core::paths::StateDir;
use aside_core::supervisor::strip_trailing_ampersand;
use aside_proto::{
    AgentHost, Command, ErrorCode, HostSession, ListQuery, LogEntry, LogQuery, LogStream,
    ProcessInfo, RunRequest, RunResult, Status, StopRequest, TakeRequest, TakeResponse, UpMessage,
    UpState, WaitOutcome, WaitQuery, WakeAction,
};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, ListResourcesResult, PaginatedRequestParams,
    ProgressNotificationParam, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult,
    RequestMetaObject, Resource, ResourceContents, ServerCapabilities, ServerConfig,
    SubscribeRequestParams, UnsubscribeRequestParams,
};
use rmcp::model::{
    ResourceUpdatedNotification, ResourceUpdatedNotificationParam, ServerNotification,
    SubscriptionFilter,
};
use rmcp::service::{Peer, RoleServer};
use rmcp::service::{RequestContext, SubscriptionContext, SubscriptionSink};
use rmcp::{ErrorData, ServerHandler, ServiceExt, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::client::{Client, ClientError};
use crate::render;
use answer::{Answer, Delivered};
pub use aside_core::present::{bound_output, fence};
use schema::lenient;

/// Default bound on output shown to a model: 32 KiB.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 32 * 1024;
/// Default and longest foreground wait of `run`, in ms.
const DEFAULT_YIELD_MS: u64 = 30_000;
const MAX_YIELD_MS: u64 = 600_000;
/// How often a waiting `wait` call reports progress (when the client asked for it).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// What a model is told when a command runs on in the background.
const BACKGROUND_GUIDANCE: &str = "It runs in the background. You will be notified with its result when it ends, once: in background_results of a later tool answer, or as a new message when you are idle. Do not poll, sleep or wait in a loop for it; use `output` to look in on it and `stop` to end it.";
/// What a model is told when an answer carries results.
const RESULTS_GUIDANCE: &str = "background_results holds background commands that finished since your last call; each result is shown once, so act on it now.";

/// How `aside mcp` was started.
#[derive(Debug, Clone, Default)]
pub struct McpOptions {
    /// Fixed owner (`--owner` / `$ASIDE_OWNER`).
    pub owner: Option<String>,
    /// Team (`--team` / `$ASIDE_TEAM`).
    pub team: Option<String>,
    /// Register a wake that resumes the host session when a result arrives after it ended.
    pub wake: bool,
}

/// Runs the server on stdin/stdout until the client disconnects. Returns the exit code.
pub fn run(opts: McpOptions) -> i32 {
    // stdout is the protocol: logs go to stderr only.
    crate::log_to_stderr("warn");
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprintln!(
            "aside mcp: this is an MCP server: it speaks JSON-RPC on stdin/stdout for an agent host (e.g. `claude mcp add aside -- aside mcp`); Ctrl-D ends it"
        );
    }
    if opts.owner.as_deref() == Some(aside_proto::HUMAN_OWNER) {
        // `human` is the person at the CLI, whom the policy does not bind; an agent never is.
        eprintln!(
            "aside mcp: an MCP connection speaks for an agent and cannot be owner {:?} (the policy does not bind a human): leave --owner/ASIDE_OWNER unset, or name the agent",
            aside_proto::HUMAN_OWNER
        );
        return 2;
    }
    let state = match StateDir::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("aside mcp: {e}");
            return 1;
        }
    };
    let rt = match crate::server_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("aside mcp: cannot start the async runtime: {e}");
            return 1;
        }
    };
    rt.block_on(async move {
        let mut opts = opts;
        // Against a shared daemon the token decides who this connection is: take its owner and
        // team (a member may not read another owner's inbox), and fail before the handshake
        // when the token is refused.
        if let Some(r) = crate::client::remote() {
            let client = Client::new(state.clone(), crate::client::owner_or_human(None), false);
            match client.whoami().await {
                Ok(who) => {
                    opts.owner = Some(who.owner);
                    opts.team = who.team;
                }
                Err(e) => {
                    eprintln!(
                        "aside mcp: the daemon at http://{} refused: {e}",
                        r.authority
                    );
                    return 1;
                }
            }
        }
        let io = stdio::start();
        let server = AsideMcp::new(state, opts, io.closed.clone());
        server.end_subscriptions_on_close();
        match server.clone().serve((io.read, io.write)).await {
            Ok(service) => {
                if let Err(e) = service.waiting().await {
                    tracing::debug!("the MCP service ended: {e}");
                }
                0
            }
            Err(e) => {
                eprintln!("aside mcp: the MCP handshake failed: {e}");
                1
            }
        }
    })
}

/// The MCP server: one per connection.
#[derive(Clone)]
pub struct AsideMcp {
    state: StateDir,
    fixed_owner: Option<String>,
    derived_owner: Arc<OnceLock<String>>,
    /// The owner a hook of our host recorded (Gemini CLI), once found.
    bound_owner: Arc<OnceLock<String>>,
    /// The Claude Code session this server was started for (`$CLAUDE_CODE_SESSION_ID`).
    claude_session: Option<String>,
    session: String,
    team: Option<String>,
    cwd: PathBuf,
    wake: bool,
    /// Owners whose host session this connection recorded already.
    recorded: Arc<Mutex<HashSet<String>>>,
    /// Legacy `resources/subscribe` followers, by URI.
    subscriptions: Arc<Mutex<HashMap<String, tokio::task::AbortHandle>>>,
    /// True once stdin ended: subscriptions end so the server exits at once.
    closed: watch::Receiver<bool>,
    tool_router: ToolRouter<Self>,
}

/// `run` tool input. Also accepts the names other hosts use: `cmd`, `is_background`,
/// `timeout`, `workdir`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct RunArgs {
    /// The shell command, run by `sh -c` in its own process group. Do not end it with `&`.
    #[serde(alias = "cmd")]
    pub command: String,
    /// What the command is for, in a few words (shown to people watching).
    #[serde(default)]
    pub description: Option<String>,
    /// A name to refer to it by (unique among running processes).
    #[serde(default)]
    pub name: Option<String>,
    /// Working directory (default: the directory `aside mcp` was started in).
    #[serde(default, alias = "workdir")]
    pub cwd: Option<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Kill the command after this many ms.
    #[serde(default, alias = "timeout", deserialize_with = "lenient::opt_u64")]
    pub timeout_ms: Option<u64>,
    /// Start it and answer at once; you will be notified when it ends. Use for servers,
    /// watchers and long builds.
    #[serde(default, alias = "is_background", deserialize_with = "lenient::bool")]
    pub run_in_background: bool,
    /// Keep its stdin open for `write_stdin` (for programs that ask questions).
    #[serde(default, deserialize_with = "lenient::bool")]
    pub interactive: bool,
    /// Foreground only: how long to wait for it to end before moving it to the background
    /// (default 30000, at most 600000 ms). It is never killed for taking longer.
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub yield_time_ms: Option<u64>,
    /// Where it runs: `local` (default, this machine), `slurm` or `slurm:PARTITION` (a Slurm
    /// batch job; it shows `queued` while it waits for resources).
    #[serde(default)]
    pub on: Option<String>,
    /// Slurm: CPUs for the job.
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub cpus: Option<u64>,
    /// Slurm: memory per node, e.g. `4GiB`.
    #[serde(default)]
    pub mem: Option<String>,
    /// Slurm: GPUs for the job.
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub gpus: Option<u64>,
    /// Slurm: nodes for the job.
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub nodes: Option<u64>,
}

/// The executor a `run` call asks for, from its `on`, `cpus`, `mem`, `gpus` and `nodes`.
fn executor_of(a: &RunArgs) -> Result<Option<aside_proto::Executor>, ClientError> {
    let invalid = |m: String| ClientError::new(ErrorCode::InvalidRequest, m);
    let small = |what: &str, n: Option<u64>| {
        n.map(|n| u32::try_from(n).map_err(|_| invalid(format!("{what} {n} is too large"))))
            .transpose()
    };
    let mem_mib = a
        .mem
        .as_deref()
        .map(|m| aside_core::units::parse_bytes(m).map(|b| b.div_ceil(1024 * 1024)))
        .transpose()
        .map_err(|e| invalid(format!("mem: {e}")))?;
    let resources = aside_proto::SlurmResources {
        partition: None,
        cpus: small("cpus", a.cpus)?,
        mem_mib,
        gpus: small("gpus", a.gpus)?,
        nodes: small("nodes", a.nodes)?,
    };
    let executor = aside_proto::Executor::from_on(a.on.as_deref().unwrap_or("local"), resources)
        .map_err(invalid)?;
    Ok((!executor.is_local()).then_some(executor))
}

/// `list` tool input.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct ListArgs {
    /// Only processes with this status (e.g. `running`, `failed`).
    #[serde(default)]
    pub status: Option<String>,
    /// Also show the running processes of your team (read-only).
    #[serde(default, deserialize_with = "lenient::bool")]
    pub include_team: bool,
}

/// `output` tool input.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct OutputArgs {
    /// Process id or name.
    pub id: String,
    /// Continue after this cursor (from an earlier answer); nothing is consumed while it runs.
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub since_cursor: Option<u64>,
    /// Only the last N lines.
    #[serde(default, deserialize_with = "lenient::opt_usize")]
    pub tail_lines: Option<usize>,
    /// Only the first N lines.
    #[serde(default, deserialize_with = "lenient::opt_usize")]
    pub head_lines: Option<usize>,
    /// Only lines matching this regex.
    #[serde(default)]
    pub grep: Option<String>,
    /// Bound on the text returned (default 32768 bytes): head and tail are kept.
    #[serde(default, deserialize_with = "lenient::opt_usize")]
    pub max_output_bytes: Option<usize>,
    /// Wait server-side for new output or the end, up to `timeout_ms`.
    #[serde(default, deserialize_with = "lenient::bool")]
    pub block: bool,
    /// For `block`: longest wait in ms (default 30000).
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub timeout_ms: Option<u64>,
}

/// What `wait` waits for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Until {
    /// Every listed process has exited.
    #[default]
    Exit,
    /// Any listed process has exited.
    Any,
    /// Every listed process has exited (same as `exit`).
    All,
    /// `pattern` appeared in the output of any listed process.
    Pattern,
}

/// `wait` tool input.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct WaitArgs {
    /// Process ids or names.
    #[serde(deserialize_with = "lenient::names")]
    pub ids: Vec<String>,
    /// What to wait for (default `exit`).
    #[serde(default)]
    pub until: Until,
    /// For `until: pattern`: a regex.
    #[serde(default)]
    pub pattern: Option<String>,
    /// Longest wait in ms (default 30000, at most 600000).
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub timeout_ms: Option<u64>,
}

/// `stop` tool input.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct StopArgs {
    /// Process id or name.
    pub id: String,
    /// First signal (default SIGTERM).
    #[serde(default)]
    pub signal: Option<String>,
    /// Grace before SIGKILL, in ms (default 5000).
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub grace_ms: Option<u64>,
}

/// `write_stdin` tool input.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct WriteStdinArgs {
    /// Process id or name.
    pub id: String,
    /// Characters to write.
    pub chars: String,
}

/// The structured answer of `run`, `stop` and `list` entries.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RunAnswer {
    /// Process id.
    pub id: String,
    /// Process name.
    pub name: String,
    /// Status now.
    pub status: Status,
    /// Pid of the main process.
    pub pid: Option<u32>,
    /// Start time (RFC 3339).
    pub started_at: String,
    /// True when the command was moved to (or started in) the background.
    pub background: bool,
    /// The result, when it ended before the answer.
    pub result: Option<RunResult>,
    /// Its output (bounded), when it ended before the answer.
    pub output: Option<String>,
    /// The cluster job it is (with `on: slurm`).
    pub job: Option<aside_proto::Job>,
}

/// The structured answer of `list`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ListAnswer {
    /// Your processes: running ones and finished ones whose result you have not read.
    pub processes: Vec<ProcessInfo>,
    /// Your team's running processes (with `include_team`).
    pub team: Vec<ProcessInfo>,
}

/// The structured answer of `output`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct OutputAnswer {
    /// Process id.
    pub id: String,
    /// Status now.
    pub status: Status,
    /// The text (bounded, ANSI stripped).
    pub output: String,
    /// Bytes left out to respect the bound.
    pub omitted_bytes: usize,
    /// Pass as `since_cursor` to read only what comes next.
    pub cursor: u64,
    /// True when the process has ended: nothing more will come.
    pub complete: bool,
    /// What the run last said it is doing (`aside progress` inside it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<aside_proto::Progress>,
}

/// The structured answer of `wait`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct WaitAnswer {
    /// True when the condition was met before the timeout.
    pub met: bool,
    /// The line that matched, for `until: pattern`.
    pub matched_line: Option<String>,
    /// The processes as the wait ended.
    pub processes: Vec<ProcessInfo>,
}

/// `up` tool input.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct UpArgs {
    /// The project's config file (aside.yaml, agent-procs.yaml or a Procfile), relative to the
    /// session's directory; default: the one found there or in a parent.
    #[serde(default)]
    pub config: Option<String>,
    /// Start only these processes (and what they depend on).
    #[serde(default, deserialize_with = "lenient::names")]
    pub only: Vec<String>,
}

/// `down` tool input.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct DownArgs {
    /// The project's config file (as for `up`).
    #[serde(default)]
    pub config: Option<String>,
}

/// One process of an `up`, as it settled.
#[derive(Debug, Serialize, JsonSchema)]
pub struct UpProcess {
    /// Its name in the project.
    pub name: String,
    /// Where it stands.
    pub state: UpState,
    /// Why, for a process that is not up.
    pub detail: Option<String>,
    /// Its id, once it started.
    pub id: Option<String>,
    /// Its proxy URL, with the proxy on.
    pub url: Option<String>,
}

/// The structured answer of `up`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct UpAnswer {
    /// The project.
    pub project: String,
    /// The config file.
    pub config: String,
    /// Each selected process.
    pub processes: Vec<UpProcess>,
    /// Those that did not come up (failed, not ready in time, or skipped).
    pub failed: Vec<String>,
    /// The proxy's port, with the proxy on.
    pub proxy_port: Option<u16>,
}

/// The structured answer of `down`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DownAnswer {
    /// The project.
    pub project: String,
    /// The processes stopped.
    pub stopped: Vec<ProcessInfo>,
    /// Processes you may not stop.
    pub refused: Vec<String>,
}

fn owner_name_part(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_matches('-').to_string();
    if clean.is_empty() {
        "mcp".into()
    } else {
        clean
    }
}

fn entries_text(entries: &[LogEntry]) -> String {
    let mut out = String::new();
    for e in entries {
        match e {
            LogEntry::Line { stream, text, .. } => {
                if *stream == LogStream::Stderr {
                    out.push_str("[stderr] ");
                }
                out.push_str(text);
                out.push('\n');
            }
            LogEntry::Elided { bytes, .. } => {
                out.push_str(&format!(
                    "[aside] … {bytes} bytes elided by the log cap …\n"
                ));
            }
        }
    }
    out
}

/// The answer of a tool before results are added: its structured fields (a JSON object, shaped
/// by the tool's output schema minus [`Delivered`]) and its text, plus what it delivered itself.
struct Reply {
    value: serde_json::Value,
    text: String,
    guidance: Option<&'static str>,
    /// Results this answer shows already (a foreground `run`'s own): acknowledged, not repeated.
    delivered: Vec<String>,
}

impl Reply {
    fn new<T: Serialize>(value: &T, text: String) -> Reply {
        Reply {
            value: serde_json::to_value(value).unwrap_or_default(),
            text,
            guidance: None,
            delivered: Vec::new(),
        }
    }

    fn guided(mut self, guidance: &'static str) -> Reply {
        self.guidance = Some(guidance);
        self
    }
}

/// The output schema of a tool whose own fields are `T`.
fn output_schema<T: JsonSchema + 'static>() -> Arc<serde_json::Map<String, serde_json::Value>> {
    rmcp::handler::server::common::schema_for_output::<Answer<T>>()
}

/// The host session behind one request: which host, and its session (or thread) id.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SeenSession {
    host: AgentHost,
    id: String,
}

/// Codex's thread id in a request's `_meta` (`x-codex-turn-metadata.thread_id`, or `threadId`).
fn codex_thread(meta: &RequestMetaObject) -> Option<String> {
    let m = &meta.0.0;
    m.get("x-codex-turn-metadata")
        .and_then(|t| t.get("thread_id"))
        .or_else(|| m.get("threadId"))
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl AsideMcp {
    /// A server for the daemon of `state`; `closed` turns true when stdin ends.
    pub fn new(state: StateDir, opts: McpOptions, closed: watch::Receiver<bool>) -> AsideMcp {
        let session = uuid::Uuid::now_v7().simple().to_string();
        let mut tool_router = Self::tool_router();
        // Plain JSON Schema for every client (see `schema`).
        for route in tool_router.map.values_mut() {
            route.attr.input_schema = Arc::new(schema::standard_input(&route.attr.input_schema));
            if let Some(out) = &route.attr.output_schema {
                route.attr.output_schema = Some(Arc::new(schema::standard_output(out)));
            }
        }
        AsideMcp {
            state,
            fixed_owner: opts.owner.filter(|o| !o.is_empty()),
            derived_owner: Arc::new(OnceLock::new()),
            bound_owner: Arc::new(OnceLock::new()),
            claude_session: std::env::var("CLAUDE_CODE_SESSION_ID")
                .ok()
                .filter(|s| !s.is_empty()),
            // The random tail of a UUIDv7, short enough to read.
            session: session[session.len() - 8..].to_string(),
            team: opts.team.filter(|t| !t.is_empty()),
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            wake: opts.wake,
            recorded: Arc::new(Mutex::new(HashSet::new())),
            subscriptions: Arc::new(Mutex::new(HashMap::new())),
            closed,
            tool_router,
        }
    }

    /// The host session a request comes from: Codex names its thread in every call; Claude
    /// Code names its session in our environment.
    fn seen_session(&self, meta: Option<&RequestMetaObject>) -> Option<SeenSession> {
        if let Some(id) = meta.and_then(codex_thread) {
            return Some(SeenSession {
                host: AgentHost::Codex,
                id,
            });
        }
        self.claude_session.as_ref().map(|id| SeenSession {
            host: AgentHost::ClaudeCode,
            id: id.clone(),
        })
    }

    /// Who a request speaks for: `--owner`/`$ASIDE_OWNER`, else its host session, else
    /// `<client name>:<connection id>`.
    fn owner_of(&self, peer: &Peer<RoleServer>, meta: Option<&RequestMetaObject>) -> String {
        if let Some(o) = &self.fixed_owner {
            return o.clone();
        }
        if let Some(s) = self.seen_session(meta) {
            return hosts::owner(s.host, &s.id);
        }
        if let Some(o) = self.bound_owner.get() {
            return o.clone();
        }
        self.derived_owner
            .get_or_init(|| {
                let name = peer
                    .peer_info()
                    .map(|i| owner_name_part(&i.client_info.name))
                    .unwrap_or_else(|| "mcp".into());
                format!("{name}:{}", self.session)
            })
            .clone()
    }

    /// The owner of a request; the first time a host session is seen, it is recorded with the
    /// daemon (and with `--wake`, a wake that resumes it). A host that names no session to its
    /// MCP servers (Gemini CLI) is matched to the session its hooks recorded for the same host
    /// process, so both speak for one owner.
    async fn owner(&self, peer: &Peer<RoleServer>, meta: &RequestMetaObject) -> String {
        if self.fixed_owner.is_none()
            && self.seen_session(Some(meta)).is_none()
            && self.bound_owner.get().is_none()
            && let Some(owner) = self.owner_from_hooks().await
        {
            // Another call may have bound it meanwhile, to the same hook-recorded owner.
            if self.bound_owner.set(owner).is_err() {
                tracing::debug!("owner bound by a concurrent call");
            }
        }
        let owner = self.owner_of(peer, Some(meta));
        let first = |r: &mut HashSet<String>| r.insert(owner.clone());
        if let Some(seen) = self.seen_session(Some(meta))
            && self
                .recorded
                .lock()
                .map(|mut r| first(&mut r))
                .unwrap_or(false)
            && let Err(e) = self.record_session(&owner, &seen).await
        {
            tracing::warn!("cannot record the {} session of {owner}: {e}", seen.host);
            // Tried again with the next request.
            if let Ok(mut r) = self.recorded.lock() {
                r.remove(&owner);
            }
        }
        owner
    }

    /// The owner of the session a hook recorded for our host process, if one did.
    async fn owner_from_hooks(&self) -> Option<String> {
        let (pid, start) = hosts::host_process(std::os::unix::process::parent_id())?;
        let client = self.client(aside_proto::HUMAN_OWNER);
        match client.session_of_process(pid, start).await {
            Ok(s) => Some(s.owner),
            Err(e) if e.code == ErrorCode::NotFound => None,
            Err(e) => {
                tracing::debug!("cannot look up the session of host process {pid}: {e}");
                None
            }
        }
    }

    async fn record_session(&self, owner: &str, seen: &SeenSession) -> Result<(), ClientError> {
        // The host is the process that started us (through a shell, if it used one).
        let host = hosts::host_process(std::os::unix::process::parent_id());
        let cwd = host
            .and_then(|(pid, _)| std::fs::read_link(format!("/proc/{pid}/cwd")).ok())
            .unwrap_or_else(|| self.cwd.clone());
        let session = HostSession {
            owner: owner.to_string(),
            host: seen.host,
            session_id: seen.id.clone(),
            cwd: cwd.display().to_string(),
            program: host
                .map(|(pid, _)| hosts::program_of(pid))
                .unwrap_or_default(),
            env: host
                .map(|(pid, _)| hosts::process_env(seen.host, pid))
                .unwrap_or_default(),
            pid: host.map(|(pid, _)| pid),
            pid_start: host.map(|(_, start)| start),
            updated_at: None,
        };
        register_session(&self.client(owner), &session, self.wake).await
    }

    fn client(&self, owner: &str) -> Client {
        Client::new(self.state.clone(), owner.to_string(), true).with_team(self.team.clone())
    }

    /// Turns a tool's reply into its answer: the owner's deliverable results are taken (within
    /// [`answer::RESULTS_BUDGET`], acknowledged as they are handed out) and added to the
    /// structured fields and to the text. An error is text only (hosts show the text of a
    /// failed call).
    async fn finish(
        &self,
        owner: &str,
        r: Result<Reply, ClientError>,
    ) -> Result<CallToolResult, ErrorData> {
        let client = self.client(owner);
        let take = TakeRequest {
            max_bytes: Some(answer::RESULTS_BUDGET),
            ack: r.as_ref().map(|r| r.delivered.clone()).unwrap_or_default(),
        };
        // Taken results are acknowledged by the daemon as they are handed out: they go into
        // this answer, and no other answer.
        let taken = match client.take(owner, &take).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("cannot take the results of {owner}: {e}");
                TakeResponse::default()
            }
        };
        let more = taken.more;
        let shown: Vec<answer::BackgroundResult> = taken
            .notifications
            .iter()
            .map(answer::BackgroundResult::of)
            .collect();
        let blocks: Vec<&str> = shown.iter().map(|b| b.notification.as_str()).collect();
        let results_text = (!blocks.is_empty()).then(|| {
            let mut t = format!(
                "Background results since your last call:\n{}",
                blocks.join("\n")
            );
            if more > 0 {
                t.push_str(&format!(
                    "\n({more} more finished; they come with your next call.)"
                ));
            }
            t
        });
        let reply = match r {
            Ok(reply) => reply,
            Err(e) => {
                let mut content = vec![ContentBlock::text(format!("Error: {e}"))];
                content.extend(results_text.map(ContentBlock::text));
                return Ok(CallToolResult::error(content));
            }
        };
        let guidance = match (reply.guidance, shown.is_empty()) {
            (Some(g), true) => Some(g.to_string()),
            (Some(g), false) => Some(format!("{g} {RESULTS_GUIDANCE}")),
            (None, false) => Some(RESULTS_GUIDANCE.to_string()),
            (None, true) => None,
        };
        let delivered = Delivered {
            background_results: shown,
            more_background_results: more,
            guidance: guidance.clone(),
        };
        let mut value = reply.value;
        if let (Some(obj), Ok(serde_json::Value::Object(extra))) =
            (value.as_object_mut(), serde_json::to_value(&delivered))
        {
            obj.extend(extra);
        }
        let mut content = vec![ContentBlock::text(reply.text)];
        if let Some(g) = guidance.filter(|_| reply.guidance.is_some()) {
            content.push(ContentBlock::text(g));
        }
        content.extend(results_text.map(ContentBlock::text));
        let mut result = CallToolResult::success(content);
        result.structured_content = Some(value);
        Ok(result)
    }

    async fn full_output(
        &self,
        client: &Client,
        id: &str,
        max: usize,
    ) -> Result<(String, usize), ClientError> {
        let logs = client.logs(id, &all_streams()).await?;
        Ok(bound_output(&entries_text(&logs.entries), max))
    }

    async fn do_run(&self, owner: &str, a: RunArgs) -> Result<Reply, ClientError> {
        let client = self.client(owner);
        let executor = executor_of(&a)?;
        let stripped = strip_trailing_ampersand(&a.command).to_string();
        let background = a.run_in_background || stripped != a.command.trim_end();
        let cwd = match a.cwd {
            Some(c) if PathBuf::from(&c).is_absolute() => c,
            Some(c) => self.cwd.join(c).display().to_string(),
            None => self.cwd.display().to_string(),
        };
        let mut env: BTreeMap<String, String> = std::env::vars().collect();
        env.extend(a.env);
        let req = RunRequest {
            executor,
            cmd: Some(Command::Shell(stripped)),
            name: a.name,
            // A retry after a cut connection gets this process, not a second one.
            idempotency_key: Some(uuid::Uuid::now_v7().to_string()),
            owner: Some(owner.to_string()),
            team: self.team.clone(),
            description: a.description,
            cwd: Some(cwd),
            env,
            timeout_ms: a.timeout_ms,
            grace_ms: None,
            log_cap_bytes: None,
            interactive: a.interactive,
            ..Default::default()
        };
        let info = client.run(&req).await?;
        let answer = |info: &ProcessInfo,
                      background: bool,
                      result: Option<RunResult>,
                      output: Option<String>| RunAnswer {
            id: info.id.to_string(),
            name: info.name.clone(),
            status: info.status,
            pid: info.pid,
            started_at: info.started_at.to_string(),
            background,
            result,
            output,
            job: info.job.clone(),
        };
        if background && !info.status.is_terminal() {
            let mut text = format!(
                "Started {} in the background (id {}, pid {}).",
                info.name,
                info.id,
                info.pid.map_or("-".into(), |p| p.to_string())
            );
            if let Some(j) = &info.job {
                text.push_str(&format!(
                    " It is {} job {}, {} now.",
                    j.executor, j.id, info.status
                ));
            }
            return Ok(
                Reply::new(&answer(&info, true, None, None), text).guided(BACKGROUND_GUIDANCE)
            );
        }
        let yield_ms = a
            .yield_time_ms
            .unwrap_or(DEFAULT_YIELD_MS)
            .min(MAX_YIELD_MS);
        let w = client.wait(&info.id, &wait_at_most(yield_ms)).await?;
        if w.outcome == WaitOutcome::TimedOut {
            let p = &w.process;
            let (so_far, _) = self.full_output(&client, &p.id, 4096).await?;
            let text = format!(
                "{} is still running after {}: moved to the background, not killed (id {}, pid {}).\nOutput so far:\n{}",
                p.name,
                render::duration(yield_ms),
                p.id,
                p.pid.map_or("-".into(), |v| v.to_string()),
                fence(&so_far)
            );
            return Ok(Reply::new(&answer(p, true, None, None), text).guided(BACKGROUND_GUIDANCE));
        }
        let (output, _) = self
            .full_output(&client, &info.id, DEFAULT_MAX_OUTPUT_BYTES)
            .await?;
        let p = &w.process;
        let text = format!(
            "{} {} in {}\n{}",
            p.name,
            render::process_outcome(p),
            render::duration(p.duration_ms),
            fence(&output)
        );
        // The result is in this answer: it is delivered, not piggybacked again.
        let mut reply = Reply::new(&answer(p, false, w.result.clone(), Some(output)), text);
        reply.delivered.push(p.run_id.to_string());
        Ok(reply)
    }
}

/// Records `session` with the daemon; with `wake`, also a wake that resumes it, unless the
/// owner has a wake action already (a user's own command or webhook is never replaced).
pub async fn register_session(
    client: &Client,
    session: &HostSession,
    wake: bool,
) -> Result<(), ClientError> {
    let owner = &session.owner;
    client.set_session(owner, session).await?;
    if !wake {
        return Ok(());
    }
    match client.wake(owner).await {
        Ok(_) => Ok(()),
        Err(e) if e.code == ErrorCode::NotFound => {
            let action = WakeAction {
                owner: owner.clone(),
                host: Some(session.host),
                ..Default::default()
            };
            client.set_wake(owner, &action).await?;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

#[tool_router]
impl AsideMcp {
    #[tool(
        name = "run",
        description = "Run a shell command. For servers, watchers, long builds and test suites set run_in_background: true: the call returns at once and you are notified with the result when the command ends, so never poll, sleep or end the command with `&`. In the foreground (the default) the call waits up to yield_time_ms (30 s) and returns the full result; a command still running then is moved to the background, never killed.",
        output_schema = output_schema::<RunAnswer>(),
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = true)
    )]
    async fn run(
        &self,
        Parameters(a): Parameters<RunArgs>,
        peer: Peer<RoleServer>,
        meta: RequestMetaObject,
    ) -> Result<CallToolResult, ErrorData> {
        let owner = self.owner(&peer, &meta).await;
        let r = self.do_run(&owner, a).await;
        self.finish(&owner, r).await
    }

    #[tool(
        name = "list",
        description = "List your background processes: the running ones and the finished ones whose result you have not read. With include_team, also your team's running processes (read-only).",
        output_schema = output_schema::<ListAnswer>(),
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    async fn list(
        &self,
        Parameters(a): Parameters<ListArgs>,
        peer: Peer<RoleServer>,
        meta: RequestMetaObject,
    ) -> Result<CallToolResult, ErrorData> {
        let owner = self.owner(&peer, &meta).await;
        let client = self.client(&owner);
        let r = async {
            let mut mine = client.processes(&owned_by(&owner)).await?;
            let mut team = match (&self.team, a.include_team) {
                (Some(t), true) => {
                    let q = ListQuery {
                        team: Some(t.clone()),
                        ..ListQuery::default()
                    };
                    client.processes(&q).await?
                }
                _ => Vec::new(),
            };
            team.retain(|p| p.owner != owner && !p.status.is_terminal());
            if let Some(s) = &a.status {
                mine.retain(|p| p.status.as_str() == s);
                team.retain(|p| p.status.as_str() == s);
            }
            let mut text = if mine.is_empty() {
                "You have no background processes.".to_string()
            } else {
                render::table(&mine)
            };
            if !team.is_empty() {
                text.push_str(&format!(
                    "\nYour team's running processes:\n{}",
                    render::table(&team)
                ));
            }
            Ok(Reply::new(
                &ListAnswer {
                    processes: mine,
                    team,
                },
                text,
            ))
        }
        .await;
        self.finish(&owner, r).await
    }

    #[tool(
        name = "output",
        description = "Read a process's output (stdout and stderr interleaved). While it runs nothing is consumed: pass the returned cursor as since_cursor to read only what is new, or block: true to wait server-side for new output or its end. Reading a finished process's output marks its result read.",
        output_schema = output_schema::<OutputAnswer>(),
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    async fn output(
        &self,
        Parameters(a): Parameters<OutputArgs>,
        peer: Peer<RoleServer>,
        meta: RequestMetaObject,
    ) -> Result<CallToolResult, ErrorData> {
        let owner = self.owner(&peer, &meta).await;
        let client = self.client(&owner);
        let mut delivered: Vec<String> = Vec::new();
        let r = async {
            let q = LogQuery {
                since: a.since_cursor,
                grep: a.grep.clone(),
                tail: a.tail_lines,
                head: a.head_lines,
                ..all_streams()
            };
            if a.block {
                let timeout = a.timeout_ms.unwrap_or(DEFAULT_YIELD_MS).min(MAX_YIELD_MS);
                self.block_for_output(&client, &a.id, a.since_cursor.unwrap_or(0), timeout)
                    .await;
            }
            let logs = client.logs(&a.id, &q).await?;
            let p = settled(&client, &a.id, logs.complete).await?;
            let (output, omitted) = bound_output(
                &entries_text(&logs.entries),
                a.max_output_bytes.unwrap_or(DEFAULT_MAX_OUTPUT_BYTES),
            );
            if logs.complete && p.owner == owner {
                // Reading a finished run's output delivers its result (acknowledged with the
                // answer, not shown again).
                delivered.push(p.run_id.to_string());
            }
            let said = p
                .progress
                .as_ref()
                .map_or(String::new(), |r| format!(" It last said: {}.", r.text));
            let text = format!(
                "{} is {}; cursor {} ({}).{said}\n{}",
                p.name,
                render::process_outcome(&p),
                logs.cursor,
                if logs.complete {
                    "complete"
                } else {
                    "more may come"
                },
                fence(&output)
            );
            Ok(Reply::new(
                &OutputAnswer {
                    id: p.id.to_string(),
                    status: p.status,
                    output,
                    omitted_bytes: omitted,
                    cursor: logs.cursor,
                    complete: logs.complete,
                    progress: p.progress.clone(),
                },
                text,
            ))
        }
        .await;
        let r = r.map(|mut reply: Reply| {
            reply.delivered = delivered;
            reply
        });
        self.finish(&owner, r).await
    }

    #[tool(
        name = "wait",
        description = "Wait server-side (instead of sleeping or polling) until the listed processes exit (until: exit or all), any of them exits (any), or a regex pattern appears in their output (pattern), at most timeout_ms (default 30 s).",
        output_schema = output_schema::<WaitAnswer>(),
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    async fn wait(
        &self,
        Parameters(a): Parameters<WaitArgs>,
        peer: Peer<RoleServer>,
        meta: RequestMetaObject,
    ) -> Result<CallToolResult, ErrorData> {
        let owner = self.owner(&peer, &meta).await;
        let client = self.client(&owner);
        // Progress notifications while waiting, when the client asked for them.
        let ticker = meta.get_progress_token().map(|token| {
            let peer = peer.clone();
            let ids = a.ids.join(", ");
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let mut tick = tokio::time::interval(PROGRESS_EVERY);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let waited = started.elapsed().as_secs_f64();
                    let sent = peer
                        .notify_progress(
                            ProgressNotificationParam::new(token.clone(), waited)
                                .with_message(format!("waiting for {ids}: {waited:.0} s")),
                        )
                        .await;
                    // A keep-alive only: a client that went away gets its answer (or not) anyway.
                    if let Err(e) = sent {
                        tracing::debug!("progress notification: {e}");
                    }
                }
            })
        });
        let r = async {
            if a.ids.is_empty() {
                return Err(ClientError::new(
                    aside_proto::ErrorCode::InvalidRequest,
                    "ids is empty: name at least one process",
                ));
            }
            if a.until == Until::Pattern && a.pattern.is_none() {
                return Err(ClientError::new(
                    aside_proto::ErrorCode::InvalidRequest,
                    "until: pattern needs a pattern",
                ));
            }
            let timeout = a.timeout_ms.unwrap_or(DEFAULT_YIELD_MS).min(MAX_YIELD_MS);
            let q = match (&a.until, &a.pattern) {
                (Until::Pattern, Some(p)) => WaitQuery {
                    until: Some(p.clone()),
                    regex: true,
                    timeout_ms: Some(timeout),
                },
                _ => wait_at_most(timeout),
            };
            let waits = a.ids.iter().map(|id| Box::pin(client.wait(id, &q)));
            let (met, line) = match a.until {
                Until::Exit | Until::All => {
                    let all = futures_util::future::join_all(waits).await;
                    let mut met = true;
                    for w in all {
                        met &= w?.outcome == WaitOutcome::Exited;
                    }
                    (met, None)
                }
                Until::Any | Until::Pattern => {
                    let (first, _, _) = futures_util::future::select_all(waits).await;
                    let w = first?;
                    (
                        matches!(w.outcome, WaitOutcome::Exited | WaitOutcome::Matched),
                        w.line,
                    )
                }
            };
            let mut processes = Vec::new();
            for id in &a.ids {
                processes.push(client.process(id).await?);
            }
            let text = format!(
                "{}{}\n{}",
                if met {
                    "Done waiting."
                } else {
                    "Timed out waiting; still running ones carry on."
                },
                line.as_ref()
                    .map_or(String::new(), |l| format!(" Matched: {}", fence(l))),
                render::table(&processes)
            );
            Ok(Reply::new(
                &WaitAnswer {
                    met,
                    matched_line: line,
                    processes,
                },
                text,
            ))
        }
        .await;
        if let Some(t) = ticker {
            t.abort();
        }
        self.finish(&owner, r).await
    }

    #[tool(
        name = "stop",
        description = "Stop a process you own: SIGTERM (or signal) to its whole process tree, SIGKILL after grace_ms. Idempotent; returns its final status.",
        output_schema = output_schema::<ProcessInfo>(),
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn stop(
        &self,
        Parameters(a): Parameters<StopArgs>,
        peer: Peer<RoleServer>,
        meta: RequestMetaObject,
    ) -> Result<CallToolResult, ErrorData> {
        let owner = self.owner(&peer, &meta).await;
        let client = self.client(&owner);
        let r = async {
            let req = StopRequest {
                signal: a.signal,
                grace_ms: a.grace_ms,
            };
            let p = client.stop(&a.id, &req).await?;
            let text = format!(
                "{}: {} after {}",
                p.name,
                render::process_outcome(&p),
                render::duration(p.duration_ms)
            );
            Ok(Reply::new(&p, text))
        }
        .await;
        self.finish(&owner, r).await
    }

    #[tool(
        name = "write_stdin",
        description = "Write characters to the stdin of a process you started with interactive: true (e.g. an answer to a prompt; include \\n to end a line). Use output to read its reply.",
        output_schema = output_schema::<ProcessInfo>(),
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = false)
    )]
    async fn write_stdin(
        &self,
        Parameters(a): Parameters<WriteStdinArgs>,
        peer: Peer<RoleServer>,
        meta: RequestMetaObject,
    ) -> Result<CallToolResult, ErrorData> {
        let owner = self.owner(&peer, &meta).await;
        let client = self.client(&owner);
        let n = a.chars.chars().count();
        let r = async {
            let req = aside_proto::StdinRequest { chars: a.chars };
            let p = client.stdin(&a.id, &req).await?;
            let text = format!("Wrote {n} characters to the stdin of {}.", p.name);
            Ok(Reply::new(&p, text))
        }
        .await;
        self.finish(&owner, r).await
    }

    #[tool(
        name = "up",
        description = "Bring your project up from its config file (aside.yaml, agent-procs.yaml or Procfile in the session's directory or a parent, or `config`): each process starts once what it depends on is ready. Answers when every selected process is up, failed, or not ready in time; processes already running unchanged are left alone. Progress comes as notifications while it starts.",
        output_schema = output_schema::<UpAnswer>(),
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = true)
    )]
    async fn up(
        &self,
        Parameters(a): Parameters<UpArgs>,
        peer: Peer<RoleServer>,
        meta: RequestMetaObject,
    ) -> Result<CallToolResult, ErrorData> {
        let owner = self.owner(&peer, &meta).await;
        let token = meta.get_progress_token();
        let r = self.do_up(&owner, a, &peer, token).await;
        self.finish(&owner, r).await
    }

    #[tool(
        name = "down",
        description = "Stop your project's processes (named by its config file, found as for `up`), dependents first.",
        output_schema = output_schema::<DownAnswer>(),
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn down(
        &self,
        Parameters(a): Parameters<DownArgs>,
        peer: Peer<RoleServer>,
        meta: RequestMetaObject,
    ) -> Result<CallToolResult, ErrorData> {
        let owner = self.owner(&peer, &meta).await;
        let client = self.client(&owner);
        let r = async {
            let project = crate::up::load_from(a.config.map(PathBuf::from), &self.cwd)?;
            let resp = client.down(&project.name).await?;
            let names: Vec<&str> = resp.stopped.iter().map(|p| p.name.as_str()).collect();
            let mut text = if names.is_empty() {
                format!("Nothing was running in project {}.", project.name)
            } else {
                format!("Project {}: stopped {}.", project.name, names.join(", "))
            };
            if !resp.refused.is_empty() {
                text.push_str(&format!(" Not yours to stop: {}.", resp.refused.join(", ")));
            }
            Ok(Reply::new(
                &DownAnswer {
                    project: project.name,
                    stopped: resp.stopped,
                    refused: resp.refused,
                },
                text,
            ))
        }
        .await;
        self.finish(&owner, r).await
    }
}

impl AsideMcp {
    /// `up`: the project's `UpRequest` to the daemon, its `UpMessage`s as progress
    /// notifications, the settled state as the answer.
    async fn do_up(
        &self,
        owner: &str,
        a: UpArgs,
        peer: &Peer<RoleServer>,
        token: Option<rmcp::model::ProgressToken>,
    ) -> Result<Reply, ClientError> {
        let project = crate::up::load_from(a.config.map(PathBuf::from), &self.cwd)?;
        let env: BTreeMap<String, String> = std::env::vars().collect();
        let req = project.request(&env, owner, self.team.as_deref(), a.only, false);
        let client = self.client(owner);
        let resp = client.up(&project.name, &req).await?;
        let mut reader = crate::client::NdjsonReader::new(resp);
        let mut order: Vec<String> = Vec::new();
        let mut states: HashMap<String, UpProcess> = HashMap::new();
        let mut failed = None;
        let mut proxy_port = None;
        let mut step = 0u32;
        while let Some(batch) = reader.next_batch::<UpMessage>().await? {
            for m in batch {
                match m {
                    UpMessage::Proxy { port } => proxy_port = Some(port),
                    UpMessage::Process {
                        name,
                        state,
                        detail,
                        process,
                    } => {
                        if let Some(t) = &token {
                            step += 1;
                            let message = match &detail {
                                Some(d) => format!("{name}: {state} ({d})", state = state.as_str()),
                                None => format!("{name}: {}", state.as_str()),
                            };
                            if let Err(e) = peer
                                .notify_progress(
                                    ProgressNotificationParam::new(t.clone(), f64::from(step))
                                        .with_message(message),
                                )
                                .await
                            {
                                tracing::debug!("cannot send up progress: {e}");
                            }
                        }
                        if !states.contains_key(&name) {
                            order.push(name.clone());
                        }
                        states.insert(
                            name.clone(),
                            UpProcess {
                                name,
                                state,
                                detail,
                                id: process.as_ref().map(|p| p.id.to_string()),
                                url: process.and_then(|p| p.url),
                            },
                        );
                    }
                    UpMessage::Done { failed: f } => failed = Some(f),
                }
            }
        }
        let failed = failed.ok_or_else(|| {
            ClientError::new(
                ErrorCode::Internal,
                "the daemon ended the up before every process settled: see `aside status`",
            )
        })?;
        let processes: Vec<UpProcess> = order.iter().filter_map(|n| states.remove(n)).collect();
        let lines: Vec<String> = processes
            .iter()
            .map(|p| match &p.detail {
                Some(d) => format!("  {}: {} ({d})", p.name, p.state.as_str()),
                None => format!("  {}: {}", p.name, p.state.as_str()),
            })
            .collect();
        let text = if failed.is_empty() {
            format!("Project {} is up:\n{}", project.name, lines.join("\n"))
        } else {
            format!(
                "Project {}: {} did not come up ({}):\n{}",
                project.name,
                failed.len(),
                failed.join(", "),
                lines.join("\n")
            )
        };
        Ok(Reply::new(
            &UpAnswer {
                project: project.name,
                config: project.path.display().to_string(),
                processes,
                failed,
                proxy_port,
            },
            text,
        )
        .guided("The project's processes run in the background; their results come by themselves when they end. Use `list` and `output` to look in, `down` to stop them."))
    }
}

impl AsideMcp {
    /// Waits until the process has output after `since`, has ended, or `timeout_ms` passed.
    async fn block_for_output(&self, client: &Client, id: &str, since: u64, timeout_ms: u64) {
        use http_body_util::BodyExt;
        let q = LogQuery {
            since: Some(since),
            ..all_streams()
        };
        let wait = async {
            // The first frame is new output (or the stream's end once the run has ended). A
            // failure only ends the wait early: the caller reads the output as it stands.
            match client.follow_logs(id, &q).await {
                Ok(resp) => {
                    if let Some(Err(e)) = resp.into_body().frame().await {
                        tracing::debug!("waiting for output of {id}: {e}");
                    }
                }
                Err(e) => tracing::debug!("waiting for output of {id}: {e}"),
            }
        };
        if tokio::time::timeout(Duration::from_millis(timeout_ms), wait)
            .await
            .is_err()
        {
            tracing::trace!("no new output from {id} within {timeout_ms} ms");
        }
    }
}

/// The process `id` as it stands; once its output is `complete`, as it ended: the output is
/// complete when the shim wrote its exit record, a moment before the daemon records the
/// result, and an answer must not say "complete" beside "running".
async fn settled(client: &Client, id: &str, complete: bool) -> Result<ProcessInfo, ClientError> {
    let p = client.process(id).await?;
    if !complete || p.status.is_terminal() {
        return Ok(p);
    }
    Ok(client.wait(id, &wait_at_most(5000)).await?.process)
}

/// Both streams, interleaved: what every tool shows.
fn all_streams() -> LogQuery {
    LogQuery {
        stream: aside_proto::StreamFilter::All,
        ..LogQuery::default()
    }
}

/// A wait for the end, at most `ms`.
fn wait_at_most(ms: u64) -> WaitQuery {
    WaitQuery {
        timeout_ms: Some(ms),
        ..WaitQuery::default()
    }
}

/// `owner`'s processes.
fn owned_by(owner: &str) -> ListQuery {
    ListQuery {
        owner: Some(owner.into()),
        ..ListQuery::default()
    }
}

/// URI scheme of a process as an MCP resource: `aside://runs/{process id or name}`.
pub const RESOURCE_PREFIX: &str = "aside://runs/";

impl AsideMcp {
    async fn resource_list(&self, owner: &str) -> Result<Vec<Resource>, ClientError> {
        let procs = self.client(owner).processes(&owned_by(owner)).await?;
        Ok(procs
            .into_iter()
            .map(|p| {
                Resource::new(format!("{RESOURCE_PREFIX}{}", p.id), p.name.clone())
                    .with_description(format!("{}: {}", render::process_outcome(&p), p.command))
                    .with_mime_type("application/json")
            })
            .collect())
    }

    async fn resource_read(&self, owner: &str, uri: &str) -> Result<String, ClientError> {
        let id = resource_id(uri)?;
        let client = self.client(owner);
        let q = LogQuery {
            tail: Some(50),
            ..all_streams()
        };
        let logs = client.logs(id, &q).await?;
        let p = settled(&client, id, logs.complete).await?;
        let (tail, omitted) = bound_output(&entries_text(&logs.entries), 16 * 1024);
        Ok(serde_json::json!({
            "process": p,
            "output_tail": tail,
            "omitted_bytes": omitted,
            "cursor": logs.cursor,
            "complete": logs.complete,
        })
        .to_string())
    }
}

/// The process reference in an `aside://runs/…` URI.
fn resource_id(uri: &str) -> Result<&str, ClientError> {
    uri.strip_prefix(RESOURCE_PREFIX)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| {
            ClientError::new(
                ErrorCode::NotFound,
                format!("{uri:?} is not an aside resource: use {RESOURCE_PREFIX}<id>"),
            )
        })
}

/// At most one `resources/updated` per subscribed process in this interval.
const UPDATE_THROTTLE: Duration = Duration::from_millis(250);

/// Where `resources/updated` notifications go: a 2026-07-28 `subscriptions/listen` stream, or
/// the connection itself for a legacy `resources/subscribe` (2025-06-18, 2025-11-25).
enum UpdateSink {
    Listen(SubscriptionSink),
    Legacy(Peer<RoleServer>),
}

impl UpdateSink {
    async fn updated(&self, uri: &str) {
        let param = ResourceUpdatedNotificationParam::new(uri);
        let sent = match self {
            UpdateSink::Listen(sink) => {
                let n = ServerNotification::ResourceUpdatedNotification(
                    ResourceUpdatedNotification::new(param),
                );
                sink.send(n).await.map_err(|e| e.to_string())
            }
            UpdateSink::Legacy(peer) => peer
                .notify_resource_updated(param)
                .await
                .map_err(|e| e.to_string()),
        };
        if let Err(e) = sent {
            tracing::debug!("cannot send resources/updated for {uri}: {e}");
        }
    }
}

impl AsideMcp {
    /// Sends `notifications/resources/updated` for `uri` whenever its process writes output
    /// (throttled) and when it ends, until the subscription is cancelled. `live_when_asked`:
    /// the process had not ended when the subscription was asked for (`None`: not known), so
    /// an end found when the follow starts came meanwhile and is sent.
    async fn follow_resource(
        &self,
        owner: &str,
        uri: &str,
        sink: &UpdateSink,
        live_when_asked: Option<bool>,
    ) {
        use http_body_util::BodyExt;
        let Ok(id) = resource_id(uri) else {
            return;
        };
        let client = self.client(owner);
        // Start from the current end of its output: only what happens from now on counts.
        let end = LogQuery {
            tail: Some(0),
            ..all_streams()
        };
        let Ok(now) = client.logs(id, &end).await else {
            return;
        };
        if now.complete {
            // Ended between the subscription and this look: that end is the update.
            if live_when_asked != Some(false) {
                sink.updated(uri).await;
            }
            return;
        }
        let from = LogQuery {
            since: Some(now.cursor),
            ..all_streams()
        };
        let Ok(resp) = client.follow_logs(id, &from).await else {
            return;
        };
        let mut body = resp.into_body();
        let mut pending = false;
        let mut next = tokio::time::Instant::now();
        loop {
            tokio::select! {
                frame = body.frame() => match frame {
                    Some(Ok(_)) => pending = true,
                    // The stream ends with the run: its status changed.
                    _ => break,
                },
                _ = tokio::time::sleep_until(next), if pending => {
                    sink.updated(uri).await;
                    pending = false;
                    next = tokio::time::Instant::now() + UPDATE_THROTTLE;
                }
            }
        }
        sink.updated(uri).await;
    }

    /// Resolves when stdin has ended (the client is gone).
    async fn stdin_closed(&self) {
        let mut closed = self.closed.clone();
        if closed.wait_for(|c| *c).await.is_err() {
            // The transport's pump is gone: so is the client.
        }
    }

    /// Ends every legacy subscription once stdin ends: each holds the connection open.
    fn end_subscriptions_on_close(&self) {
        let me = self.clone();
        tokio::spawn(async move {
            me.stdin_closed().await;
            if let Ok(mut subs) = me.subscriptions.lock() {
                for (_, task) in subs.drain() {
                    task.abort();
                }
            }
        });
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for AsideMcp {
    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        let ours = requested
            .resource_subscriptions
            .iter()
            .flatten()
            .filter(|u| u.starts_with(RESOURCE_PREFIX))
            .cloned();
        Some(
            SubscriptionFilter::builder()
                .resource_subscriptions(ours)
                .build(),
        )
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let rc = context.request_context();
        let owner = self.owner(&rc.peer, &rc.meta).await;
        let uris = context
            .accepted()
            .resource_subscriptions
            .clone()
            .unwrap_or_default();
        let followers: Vec<_> = uris
            .into_iter()
            .map(|uri| {
                let me = self.clone();
                let owner = owner.clone();
                let sink = UpdateSink::Listen(context.sink().clone());
                tokio::spawn(async move { me.follow_resource(&owner, &uri, &sink, None).await })
            })
            .collect();
        tokio::select! {
            _ = context.cancelled() => {}
            _ = self.stdin_closed() => {}
        }
        for f in followers {
            f.abort();
        }
        Ok(())
    }

    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let owner = self.owner(&ctx.peer, &ctx.meta).await;
        let uri = request.uri;
        // Subscribing to something that does not exist is an error, as for a read.
        let id = resource_id(&uri).map_err(|e| ErrorData::resource_not_found(e.message, None))?;
        let process = self
            .client(&owner)
            .process(id)
            .await
            .map_err(|e| match e.code {
                ErrorCode::NotFound => ErrorData::resource_not_found(e.message, None),
                _ => ErrorData::internal_error(e.message, None),
            })?;
        let live = !process.status.is_terminal();
        let me = self.clone();
        let sink = UpdateSink::Legacy(ctx.peer.clone());
        let followed = uri.clone();
        let task = tokio::spawn(async move {
            me.follow_resource(&owner, &followed, &sink, Some(live))
                .await
        });
        if let Ok(mut subs) = self.subscriptions.lock()
            && let Some(old) = subs.insert(uri, task.abort_handle())
        {
            old.abort();
        }
        Ok(())
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        if let Ok(mut subs) = self.subscriptions.lock()
            && let Some(task) = subs.remove(&request.uri)
        {
            task.abort();
        }
        Ok(())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let owner = self.owner(&ctx.peer, &ctx.meta).await;
        self.resource_list(&owner)
            .await
            .map(ListResourcesResult::with_all_items)
            .map_err(|e| ErrorData::internal_error(e.message, None))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let owner = self.owner(&ctx.peer, &ctx.meta).await;
        match self.resource_read(&owner, &request.uri).await {
            Ok(text) => Ok(
                ReadResourceResult::new(vec![ResourceContents::TextResourceContents {
                    uri: request.uri,
                    mime_type: Some("application/json".into()),
                    text,
                    meta: None,
                }])
                .into(),
            ),
            Err(e) if e.code == ErrorCode::NotFound => {
                Err(ErrorData::resource_not_found(e.message, None))
            }
            Err(e) => Err(ErrorData::internal_error(e.message, None)),
        }
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_resources_subscribe()
                .build(),
        )
            .with_server_info(Implementation::new("aside", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "aside runs shell commands in the background and tells you their results. Use `run` with run_in_background for anything long; results of finished commands come by themselves in background_results of your next tool answers (and as <task-notification> blocks in their text), each once. Never poll with sleep: use `wait` or `output` with block.",
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_names_are_tidy() {
        assert_eq!(owner_name_part("Claude Code"), "claude-code");
        assert_eq!(owner_name_part("???"), "mcp");
    }
}
