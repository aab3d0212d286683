//! The command line: a superset of agent-procs' commands, flags and exit codes
//! (0 success, 1 error or timeout, 2 no such process or no logs).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use aside_core::paths::StateDir;
use aside_core::units::{parse_bytes, parse_duration_ms};
use aside_proto::{
    AckRequest, Autorestart, Command, ErrorCode, LogEntry, LogQuery, LogStream, ProcessInfo,
    ReadyProbe, RestartPolicy, RunRequest, Status, StopAllRequest, StopRequest, StreamFilter,
    WaitOutcome, WaitQuery,
};
use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::client::{Client, ClientError, Result, env_owner, owner_or_human, start_daemon};
use crate::daemon::DaemonOptions;
use crate::render::{self, print_json, print_raw, read_ndjson};

/// Set a command aside; get its result back.
#[derive(Debug, Parser)]
#[command(name = "aside", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// The project (agent-procs: session): `run` starts in it, `status` shows it, and names
    /// are looked up in it.
    #[arg(
        long,
        global = true,
        visible_alias = "session",
        env = "ASIDE_PROJECT",
        value_name = "NAME"
    )]
    project: Option<String>,
    /// Talk to the daemon listening at this address (`aside daemon start --listen`) instead of
    /// the local one, with the member token in $ASIDE_TOKEN: http://127.0.0.1:PORT (through an
    /// SSH tunnel from another machine).
    #[arg(long, global = true, env = "ASIDE_REMOTE", value_name = "URL")]
    remote: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start a command in the background (answers at once with its name, id and pid).
    Run(Box<RunArgs>),
    /// Show processes: live ones and finished ones whose result is unread (`--all`: every one kept).
    #[command(visible_alias = "ps")]
    Status(StatusArgs),
    /// Print a process's output.
    Logs(LogsArgs),
    /// Wait for a process to exit, or for a pattern in its output.
    Wait(WaitArgs),
    /// Stop a process: SIGTERM to its whole tree, SIGKILL after the grace period.
    Stop(StopArgs),
    /// Stop every running process (that you may stop).
    StopAll(StopAllArgs),
    /// Stop a process if it runs, then start it again with the same command.
    Restart(RestartArgs),
    /// Show (and acknowledge) the results waiting for an owner.
    Inbox(InboxArgs),
    /// Show the structured result of a finished process.
    Result(ResultArgs),
    /// Agent host adapters: `aside hook claude` answers Claude Code hook events.
    Hook {
        #[command(subcommand)]
        host: HookHost,
    },
    /// Register what wakes an owner that is idle when a result arrives (a command or a webhook).
    Wake {
        #[command(subcommand)]
        cmd: WakeCmd,
    },
    /// From inside a run started by aside: say what it is doing now (shown in `status`, the
    /// dashboard, `aside ui` and MCP `list`, and sent as a `run_progress` event).
    Progress {
        /// One line, e.g. "round 3: running tests".
        text: String,
        /// Structured detail, as a JSON value.
        #[arg(long, value_name = "JSON")]
        json: Option<String>,
    },
    /// Mark an owner idle now: its next result fires its wake action at once.
    Idle {
        /// The owner (default: $ASIDE_OWNER, else human).
        #[arg(long, env = "ASIDE_OWNER")]
        owner: Option<String>,
    },
    /// Write a line to the stdin of a process started with `--interactive`.
    Stdin {
        /// Process name or id.
        reference: String,
        /// The text; a newline is added unless --no-newline.
        text: String,
        /// Do not add a newline.
        #[arg(long)]
        no_newline: bool,
        /// Who is asking (only the owner or a human may write).
        #[arg(long, env = "ASIDE_OWNER")]
        owner: Option<String>,
    },
    /// Stream events (run started, exited, results created and read) as they happen; across a
    /// daemon's stop and restart (said on stderr), missing none.
    Events(EventsArgs),
    /// Control the daemon.
    Daemon {
        #[command(subcommand)]
        cmd: DaemonCmd,
    },
    /// Print shell completions.
    Completions {
        /// bash, zsh, fish, powershell or elvish.
        shell: clap_complete::Shell,
    },
    /// Check the permission policy for agents, or explain its verdict on a command.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
    /// Start a project from aside.yaml, agent-procs.yaml or a Procfile, in dependency order.
    Up(crate::up::UpArgs),
    /// Stop a project's processes, dependents first.
    Down(crate::up::DownArgs),
    /// List projects (agent-procs sessions), or forget those with nothing running.
    Session {
        #[command(subcommand)]
        cmd: crate::up::SessionCmd,
    },
    /// Check a project config file, or print its JSON Schema.
    Config {
        #[command(subcommand)]
        cmd: crate::up::ConfigCmd,
    },
    /// The terminal monitor: every process, live, with its log (j/k move, x stop, r restart, q quit).
    Ui(crate::ui::UiArgs),
    /// Print the address of the web dashboard (the daemon serves it on 127.0.0.1); `--open` opens it.
    Web(crate::access::WebArgs),
    /// Bearer tokens for team members on the daemon's TCP listener.
    Token {
        #[command(subcommand)]
        cmd: crate::access::TokenCmd,
    },
    /// Serve agents over MCP on stdin/stdout (`claude mcp add aside -- aside mcp`).
    Mcp {
        /// The owner of every process this connection starts (default: $ASIDE_OWNER, else the
        /// client's name plus a session id).
        #[arg(long, env = "ASIDE_OWNER")]
        owner: Option<String>,
        /// The team of this connection.
        #[arg(long, env = "ASIDE_TEAM")]
        team: Option<String>,
        /// Resume this host session (Claude Code, Codex) with a result that arrives after it
        /// ended: registers a host wake for its owner, unless it has a wake action already.
        #[arg(long)]
        wake: bool,
    },
    /// Print the JSON Schema of a `--json` output (status, process, result, notification, inbox, log-entry, logs, wait, run-request, token, web, stats, error, …).
    Schema {
        /// Which schema; all of them when omitted.
        name: Option<String>,
    },
}

fn parse_autorestart(s: &str) -> std::result::Result<Autorestart, String> {
    Autorestart::parse(s).ok_or_else(|| format!("{s:?}: use always, on-failure or never"))
}

/// Milliseconds as a bare number (agent-procs' `--restart-delay 2000`), or a duration.
pub(crate) fn parse_ms(s: &str) -> std::result::Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(ms) => Ok(ms),
        Err(_) => parse_duration_ms(s),
    }
}

fn parse_env(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("invalid --env {s:?}: use KEY=VALUE")),
    }
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The command: one argument is run by `sh -c`; several are run as an argv, without a
    /// shell. Put `--` before a command whose arguments start with `-`.
    #[arg(required = true, num_args = 1.., value_name = "CMD")]
    cmd: Vec<String>,
    /// Name, unique among running processes (default: from the command).
    #[arg(long)]
    name: Option<String>,
    /// Owner of the process.
    #[arg(long, env = "ASIDE_OWNER")]
    owner: Option<String>,
    /// Team of the process.
    #[arg(long, env = "ASIDE_TEAM")]
    team: Option<String>,
    /// What it is for, in a few words (shown to people watching).
    #[arg(long)]
    description: Option<String>,
    /// Working directory (default: the current one).
    #[arg(long)]
    cwd: Option<PathBuf>,
    /// Set an environment variable (repeatable); the rest of the environment is this shell's.
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Kill the whole tree after this long (500ms, 30s, 5m, 1h).
    #[arg(long, value_parser = parse_duration_ms, value_name = "DUR")]
    timeout: Option<u64>,
    /// Grace between SIGTERM and SIGKILL when stopping (default 5s).
    #[arg(long, value_parser = parse_duration_ms, value_name = "DUR")]
    grace: Option<u64>,
    /// Log cap: the head and a rotating tail of this many bytes are kept (default 8MiB).
    #[arg(long, value_parser = parse_bytes, value_name = "BYTES")]
    log_cap: Option<u64>,
    /// Keep stdin open so `aside stdin NAME TEXT` (or MCP write_stdin) can write to it.
    #[arg(long)]
    interactive: bool,
    /// Restart it when it exits: always, on-failure or never.
    #[arg(long, value_parser = parse_autorestart, value_name = "MODE")]
    autorestart: Option<Autorestart>,
    /// Most restarts in a row (default: unlimited).
    #[arg(long, value_name = "N")]
    max_restarts: Option<u32>,
    /// Wait before a restart: milliseconds, or 2s (default 1000).
    #[arg(long, value_parser = parse_ms, value_name = "MS")]
    restart_delay: Option<u64>,
    /// Double the restart delay per attempt, up to this cap (e.g. 30s; a bare number is
    /// seconds, like every duration but --restart-delay).
    #[arg(long, value_parser = parse_duration_ms, value_name = "DUR")]
    restart_backoff: Option<u64>,
    /// Restart when files matching this glob change (repeatable; relative to the cwd).
    #[arg(long, value_name = "GLOB")]
    watch: Vec<String>,
    /// Ignore files matching this glob (repeatable; .git, node_modules, target, __pycache__ always are).
    #[arg(long, value_name = "GLOB")]
    watch_ignore: Vec<String>,
    /// The port it listens on: PORT and HOST=127.0.0.1 are set for it.
    #[arg(long)]
    port: Option<u16>,
    /// Route http://NAME.localhost:PROXY_PORT to it (it gets a port from 4000-4999 if it has none).
    #[arg(long)]
    proxy: bool,
    /// It is ready once its output shows this text (status `ready`).
    #[arg(long, value_name = "PATTERN")]
    ready: Option<String>,
    /// Foreground: stream the output, wait for the end (or DUR), exit with its exit code.
    #[arg(long, value_name = "DUR", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    wait: Option<String>,
    /// Where it runs: local (this machine), or slurm[:PARTITION] (a Slurm batch job running the
    /// same shim on a compute node; the state directory must be shared with the nodes).
    #[arg(long, value_name = "EXECUTOR", env = "ASIDE_EXECUTOR")]
    on: Option<String>,
    /// Slurm: CPUs for the job (--cpus-per-task).
    #[arg(long, value_name = "N")]
    cpus: Option<u32>,
    /// Slurm: memory per node, e.g. 4GiB (--mem).
    #[arg(long, value_parser = parse_bytes, value_name = "SIZE")]
    mem: Option<u64>,
    /// Slurm: GPUs for the job (--gpus).
    #[arg(long, value_name = "N")]
    gpus: Option<u32>,
    /// Slurm: nodes for the job (--nodes).
    #[arg(long, value_name = "N")]
    nodes: Option<u32>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// One process, by name or id.
    reference: Option<String>,
    /// Include finished processes whose result was already read.
    #[arg(long)]
    all: bool,
    /// Only this owner's processes.
    #[arg(long)]
    owner: Option<String>,
    /// Only this team's processes.
    #[arg(long)]
    team: Option<String>,
    /// Print JSON (schema: `aside schema status`).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "`--all` is agent-procs' (every process, each line prefixed `[name] `); \
both streams of one process, aside's earlier `--all`, is now `--streams both`. Text shows the \
last 100 lines by default, as agent-procs; `--tail all` shows every line."
)]
struct LogsArgs {
    /// Process name or id; omitted (or with `--all`): every process, interleaved.
    reference: Option<String>,
    /// Last N lines, or `all` (default for text: 100, as agent-procs; with `--json`, `--head`
    /// or `--since`: all).
    #[arg(long, value_parser = parse_tail, value_name = "N|all")]
    tail: Option<Tail>,
    /// First N lines.
    #[arg(long, conflicts_with = "tail")]
    head: Option<usize>,
    /// Only what comes after this cursor (from `--json` output).
    #[arg(long)]
    since: Option<u64>,
    /// Keep printing new output (until the process ends for good, `--lines` or `--timeout`).
    #[arg(long, short)]
    follow: bool,
    /// With `--follow`: stop after this long, exit 0 (a bare number is seconds; default 30s, as
    /// agent-procs; `0`: until the process ends).
    #[arg(long, value_parser = parse_duration_ms, value_name = "DUR")]
    timeout: Option<u64>,
    /// With `--follow`: stop after this many new lines (agent-procs' `--lines`).
    #[arg(long)]
    lines: Option<usize>,
    /// Standard output (the default).
    #[arg(long, group = "one_stream")]
    stdout: bool,
    /// Standard error.
    #[arg(long, group = "one_stream")]
    stderr: bool,
    /// Which streams: stdout (default), stderr, or both interleaved in arrival order.
    #[arg(long, value_parser = parse_streams, conflicts_with = "one_stream")]
    streams: Option<StreamFilter>,
    /// Every process, interleaved in time order, each line prefixed `[name] ` (agent-procs).
    #[arg(long)]
    all: bool,
    /// Only lines matching this regex.
    #[arg(long)]
    grep: Option<String>,
    /// A specific run (default: every run of the process, in order).
    #[arg(long)]
    run: Option<String>,
    /// One JSON record per line (stream, ts, cursor, text).
    #[arg(long)]
    json: bool,
}

/// `logs --tail`: a line count, or every line.
#[derive(Debug, Clone, Copy)]
enum Tail {
    Last(usize),
    All,
}

/// Lines `logs` shows by default when asked for text of no particular range: agent-procs'
/// `--tail` default.
const DEFAULT_TAIL_LINES: usize = 100;

fn parse_tail(s: &str) -> std::result::Result<Tail, String> {
    match s {
        "all" => Ok(Tail::All),
        n => n
            .parse()
            .map(Tail::Last)
            .map_err(|_| format!("`{n}` is neither a line count nor `all`")),
    }
}

impl LogsArgs {
    /// How many of the last lines to read: `--tail`, else agent-procs' 100 for text of no
    /// particular range, else every line.
    fn tail_lines(&self) -> Option<usize> {
        match self.tail {
            Some(Tail::Last(n)) => Some(n),
            Some(Tail::All) => None,
            None if self.json || self.head.is_some() || self.since.is_some() => None,
            None => Some(DEFAULT_TAIL_LINES),
        }
    }
}

/// Default `logs --follow --timeout`, as agent-procs': 30 s.
const FOLLOW_TIMEOUT_MS: u64 = 30_000;

fn parse_streams(s: &str) -> std::result::Result<StreamFilter, String> {
    match s {
        "stdout" => Ok(StreamFilter::Stdout),
        "stderr" => Ok(StreamFilter::Stderr),
        "both" | "all" => Ok(StreamFilter::All),
        _ => Err(format!("{s:?}: use stdout, stderr or both")),
    }
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("until_or_exit").multiple(false)))]
struct WaitArgs {
    /// Process name or id.
    reference: String,
    /// Wait for the process to exit, with its output fully captured (the default).
    #[arg(long, group = "until_or_exit")]
    exit: bool,
    /// Wait for this text in the output (before or after the call, either stream).
    #[arg(long, group = "until_or_exit", value_name = "PATTERN")]
    until: Option<String>,
    /// Treat PATTERN as a regex.
    #[arg(long)]
    regex: bool,
    /// Give up after this long (exit 1).
    #[arg(long, value_parser = parse_duration_ms, value_name = "DUR")]
    timeout: Option<u64>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct StopArgs {
    /// Process name or id.
    reference: String,
    /// First signal (default SIGTERM).
    #[arg(long)]
    signal: Option<String>,
    /// Grace before SIGKILL (default: the process's own, 5s unless set at run).
    #[arg(long, value_parser = parse_duration_ms, value_name = "DUR")]
    grace: Option<u64>,
    /// Who is asking (only the owner or a human may stop).
    #[arg(long, env = "ASIDE_OWNER")]
    owner: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct StopAllArgs {
    /// Only this owner's processes.
    #[arg(long)]
    owner: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct RestartArgs {
    /// Process name or id.
    reference: String,
    /// Who is asking (only the owner or a human may restart).
    #[arg(long, env = "ASIDE_OWNER")]
    owner: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("ack_or_drain").multiple(false)))]
struct InboxArgs {
    /// Whose inbox (default: $ASIDE_OWNER, else human).
    #[arg(long, env = "ASIDE_OWNER")]
    owner: Option<String>,
    /// Acknowledge these notification ids.
    #[arg(long, num_args = 1.., group = "ack_or_drain", value_name = "ID")]
    ack: Vec<String>,
    /// Print every pending result and acknowledge them.
    #[arg(long, group = "ack_or_drain")]
    drain: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct EventsArgs {
    /// Only this owner's events.
    #[arg(long)]
    owner: Option<String>,
    /// Only these kinds (run_started, run_ready, run_progress, run_exited, restarts_exhausted, notification_created, notification_acked).
    #[arg(long, value_delimiter = ',')]
    kind: Vec<String>,
    /// Replay the log from after this sequence number first (0: everything kept).
    #[arg(long)]
    since: Option<u64>,
    /// Exit after this many events.
    #[arg(long)]
    count: Option<usize>,
    /// One JSON event per line (schema: `aside schema event`).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ResultArgs {
    /// Process name or id.
    reference: String,
    /// Print JSON (schema: `aside schema result`).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Args)]
struct DaemonFlags {
    /// Exit after this long with nothing running and no requests (0: never).
    #[arg(long, env = "ASIDE_IDLE_TIMEOUT", value_parser = parse_duration_ms, default_value = "5m", value_name = "DUR")]
    idle_timeout: u64,
    /// Prune finished runs (whose results were read) older than this.
    #[arg(long, env = "ASIDE_PRUNE_AFTER", value_parser = parse_duration_ms, default_value = "24h", value_name = "DUR")]
    prune_after: u64,
    /// Default per-run log cap.
    #[arg(long, env = "ASIDE_LOG_CAP", value_parser = parse_bytes, default_value = "8MiB", value_name = "BYTES")]
    log_cap: u64,
    /// Permission policy file for agents (default: policy.json in the state directory).
    #[arg(long, env = "ASIDE_POLICY", value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Wake actions wait this long to batch results that arrive together.
    #[arg(long, env = "ASIDE_WAKE_DEBOUNCE", value_parser = parse_duration_ms, default_value = "500ms", value_name = "DUR")]
    wake_debounce: u64,
    /// First wait before an unacknowledged wake is tried again (doubles each time, up to 10m).
    #[arg(long, env = "ASIDE_WAKE_BACKOFF", value_parser = parse_duration_ms, default_value = "2s", value_name = "DUR")]
    wake_backoff: u64,
    /// Also serve the API and dashboard on this loopback TCP address, for members with tokens
    /// (`aside token create`); the daemon then stays up when idle.
    #[arg(long, env = "ASIDE_LISTEN", value_parser = parse_listen, value_name = "127.0.0.1:PORT")]
    listen: Option<std::net::SocketAddr>,
    /// Rebuild the state database from the run directories: for a database that is missing,
    /// empty or damaged (it is moved aside as aside.db.damaged-<time>). Live commands are
    /// re-attached; results of runs that had ended are kept, as read.
    #[arg(long)]
    recover: bool,
}

fn parse_listen(s: &str) -> std::result::Result<std::net::SocketAddr, String> {
    let addr: std::net::SocketAddr = s
        .parse()
        .map_err(|_| format!("{s:?} is not an address: use 127.0.0.1:PORT"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{s}: aside listens on loopback only (127.0.0.1 or [::1]); reach it from other machines through an SSH tunnel"
        ));
    }
    Ok(addr)
}

impl DaemonFlags {
    fn options(&self) -> DaemonOptions {
        DaemonOptions {
            idle_timeout: Duration::from_millis(self.idle_timeout),
            prune_after: Duration::from_millis(self.prune_after),
            log_cap: self.log_cap,
            policy: self.policy.clone(),
            wake_debounce: Duration::from_millis(self.wake_debounce),
            wake_backoff: Duration::from_millis(self.wake_backoff),
            listen: self.listen,
            recover: self.recover,
        }
    }

    fn args(&self) -> Vec<String> {
        vec![
            format!("--idle-timeout={}ms", self.idle_timeout),
            format!("--prune-after={}ms", self.prune_after),
            format!("--log-cap={}", self.log_cap),
            format!("--wake-debounce={}ms", self.wake_debounce),
            format!("--wake-backoff={}ms", self.wake_backoff),
        ]
        .into_iter()
        .chain(
            self.policy
                .iter()
                .map(|p| format!("--policy={}", p.display())),
        )
        .chain(self.listen.iter().map(|a| format!("--listen={a}")))
        .chain(self.recover.then(|| "--recover".to_string()))
        .collect()
    }
}

#[derive(Debug, Subcommand)]
enum WakeCmd {
    /// Set the owner's wake action: `-- CMD ARGS…` (gets the results as JSON on stdin) or
    /// `--webhook URL` (gets them as the POST body).
    Set {
        /// The owner (default: $ASIDE_OWNER, else human).
        #[arg(long, env = "ASIDE_OWNER")]
        owner: Option<String>,
        /// An http:// URL to POST the results to.
        #[arg(long, conflicts_with = "command")]
        webhook: Option<String>,
        /// Resume the owner's own session of this agent host (claude-code, codex, gemini) with
        /// the results as its prompt, once the session has ended (`aside mcp` and `aside hook`
        /// record the session).
        #[arg(long, value_parser = parse_host, conflicts_with_all = ["command", "webhook"])]
        host: Option<aside_proto::AgentHost>,
        /// Idle after this long without requests (default 1m).
        #[arg(long, value_parser = parse_duration_ms, value_name = "DUR")]
        idle_after: Option<u64>,
        /// The command and its arguments (after `--`); never run through a shell by aside.
        #[arg(last = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Show the owner's wake action.
    Show {
        /// The owner (default: $ASIDE_OWNER, else human).
        #[arg(long, env = "ASIDE_OWNER")]
        owner: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove the owner's wake action.
    Clear {
        /// The owner (default: $ASIDE_OWNER, else human).
        #[arg(long, env = "ASIDE_OWNER")]
        owner: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum HookHost {
    /// Claude Code: reads a hook event (SessionStart, UserPromptSubmit, PostToolUse, Stop) on
    /// stdin and answers with the owner's pending results as context, or on Stop makes Claude
    /// continue with them.
    Claude(HookArgs),
    /// Gemini CLI: the same for its hook events (SessionStart, BeforeAgent, AfterTool,
    /// AfterAgent); also tells `aside mcp` under the same session which owner it speaks for.
    Gemini(HookArgs),
}

#[derive(Debug, clap::Args)]
struct HookArgs {
    /// Whose results (default: $ASIDE_OWNER, else claude:<session_id> / gemini:<session_id>).
    #[arg(long, env = "ASIDE_OWNER")]
    owner: Option<String>,
    /// When the agent is about to stop with nothing pending, wait this long for a running
    /// process of the owner to end.
    #[arg(long, value_parser = parse_duration_ms, value_name = "DUR")]
    wait_on_stop: Option<u64>,
    /// Do not register the wake that resumes this session when a result arrives after it
    /// ended (also `ASIDE_WAKE=off`).
    #[arg(long)]
    no_wake: bool,
}

#[derive(Debug, Subcommand)]
enum PolicyCmd {
    /// Validate a policy file (default: $ASIDE_POLICY, else policy.json in the state directory).
    Check {
        /// The file.
        file: Option<PathBuf>,
    },
    /// Say which rule allows each part of a run — its command segments and redirections, its
    /// directory, the variables it sets beyond this shell's environment, its probe — or why
    /// one is refused.
    Explain {
        /// The command, as an agent would run it.
        command: String,
        /// The working directory (default: the current one).
        #[arg(long)]
        cwd: Option<PathBuf>,
        /// A variable the agent sets (judged as it differs from this shell's environment).
        #[arg(long = "env", value_name = "K=V")]
        env: Vec<String>,
        /// A readiness probe command (`ready: {exec: …}`).
        #[arg(long, value_name = "CMD")]
        probe_exec: Option<String>,
        /// A URL a probe or webhook would connect to.
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// The policy file (default as for `check`).
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum DaemonCmd {
    /// Start the daemon in the background (if it is not running).
    Start(DaemonFlags),
    /// Stop the daemon; processes keep running under their shims.
    Stop,
    /// Show whether the daemon runs, its pid, socket and state directory.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the daemon in the foreground (what `start` and auto-start run).
    #[command(hide = true)]
    Run(DaemonFlags),
}

/// The port of a proxied process's URL (`http://api.localhost:9090` → 9090).
fn proxy_port_of(url: &str) -> Option<u16> {
    url.rsplit_once(':')?.1.trim_end_matches('/').parse().ok()
}

/// Exit code for a child's ending, shell style: its code, 128 + signal, 124 for a timeout.
fn child_exit_code(p: &ProcessInfo) -> i32 {
    match (p.status, p.exit_code, &p.signal) {
        (Status::TimedOut, _, _) => 124,
        (_, Some(c), _) => c,
        (_, None, Some(sig)) => 128 + aside_core::proc::parse_signal(sig).unwrap_or(0),
        (Status::Completed | Status::CompletedEmpty, None, None) => 0,
        _ => 1,
    }
}

/// Runs a parsed command line; returns the process exit code.
pub fn main(cli: Cli) -> i32 {
    if let Cmd::Daemon {
        cmd: DaemonCmd::Run(flags),
    } = &cli.cmd
    {
        return crate::daemon::run(flags.options());
    }
    if let Some(url) = &cli.remote {
        match crate::client::Remote::parse(url, std::env::var("ASIDE_TOKEN").ok()) {
            Ok(r) => crate::client::set_remote(r),
            Err(e) => {
                eprintln!("aside: {e}");
                return 1;
            }
        }
    }
    if let Cmd::Completions { shell } = &cli.cmd {
        let mut script = Vec::new();
        clap_complete::generate(*shell, &mut Cli::command(), "aside", &mut script);
        // A reader that stops early (`| head`) is not an error of ours.
        if let Err(e) = std::io::stdout().lock().write_all(&script)
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            eprintln!("aside: cannot write the completions: {e}");
            return 1;
        }
        return 0;
    }
    if let Cmd::Schema { name } = &cli.cmd {
        return schema(name.as_deref());
    }
    if let Cmd::Policy { cmd } = &cli.cmd {
        return policy(cmd);
    }
    if let Cmd::Hook { host } = &cli.cmd {
        let (kind, a) = match host {
            HookHost::Claude(a) => (aside_proto::AgentHost::ClaudeCode, a),
            HookHost::Gemini(a) => (aside_proto::AgentHost::Gemini, a),
        };
        let wake_off = std::env::var("ASIDE_WAKE").is_ok_and(|v| v == "off" || v == "0");
        return crate::hook::run(crate::hook::HookOptions {
            host: kind,
            owner: a.owner.clone(),
            wait_on_stop: a.wait_on_stop.map(Duration::from_millis),
            wake: !a.no_wake && !wake_off,
        });
    }
    match &cli.cmd {
        Cmd::Config { cmd } => return crate::up::config(cmd),
        Cmd::Mcp { owner, team, wake } => {
            return crate::mcp::run(crate::mcp::McpOptions {
                owner: owner.clone(),
                team: team.clone(),
                wake: *wake,
            });
        }
        _ => {}
    }
    let state = match StateDir::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("aside: {e}");
            return 1;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("aside: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let mut cmd = cli.cmd;
    let project = cli.project.filter(|p| !p.is_empty());
    if let Some(p) = &project {
        scope(&mut cmd, p);
    }
    match rt.block_on(dispatch(cmd, project, state)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("aside: {e}");
            e.exit_code()
        }
    }
}

/// `aside policy check|explain`: judged here, without the daemon, exactly as the daemon would.
fn policy(cmd: &PolicyCmd) -> i32 {
    use aside_core::policy::{Policy, Verdict};
    let default_path = || -> Option<PathBuf> {
        std::env::var_os("ASIDE_POLICY")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| StateDir::from_env().ok().map(|s| s.default_policy()))
    };
    let (file, explicit) = match cmd {
        PolicyCmd::Check { file } | PolicyCmd::Explain { file, .. } => match file {
            Some(f) => (Some(f.clone()), true),
            None => (default_path(), false),
        },
    };
    let Some(file) = file else {
        eprintln!(
            "aside: cannot find the policy file: set ASIDE_POLICY or ASIDE_HOME, or name the file"
        );
        return 1;
    };
    let loaded = match Policy::load(&file) {
        Ok(Some(p)) => p,
        Ok(None) if explicit => {
            eprintln!("aside: no policy file at {}", file.display());
            return 2;
        }
        Ok(None) => Policy::builtin(),
        Err(e) => {
            eprintln!("aside: {e}");
            return 1;
        }
    };
    let name = loaded.source().map_or(
        format!("no file at {}: the built-in policy", file.display()),
        |p| format!("policy {}", p.display()),
    );
    match cmd {
        PolicyCmd::Check { .. } => {
            println!("ok: {name} {}", loaded.describe());
            0
        }
        PolicyCmd::Explain {
            command,
            cwd,
            env,
            probe_exec,
            url,
            ..
        } => {
            let cwd = cwd
                .clone()
                .or_else(|| std::env::current_dir().ok())
                .unwrap_or_default();
            let trusted = aside_core::policy::Trusted::from_process();
            let mut spec_env = trusted.env.clone();
            for kv in env {
                match kv.split_once('=') {
                    Some((k, v)) => {
                        spec_env.insert(k.to_string(), v.to_string());
                    }
                    None => {
                        eprintln!("aside: --env {kv:?} is not KEY=VALUE");
                        return 2;
                    }
                }
            }
            let spec = aside_proto::Spec {
                cmd: Command::Shell(command.clone()),
                cwd: cwd.display().to_string(),
                env: spec_env,
                timeout_ms: None,
                grace_ms: 0,
                log_cap_bytes: 0,
                interactive: false,
                restart: None,
                ready: probe_exec
                    .clone()
                    .map(|cmd| aside_proto::ReadyProbe::new(aside_proto::ReadyCheck::Exec { cmd })),
                port: None,
                proxy: false,
                watch: None,
                depends_on: Vec::new(),
                digest: None,
                executor: aside_proto::Executor::Local,
            };
            let mut verdicts = vec![loaded.judge(&spec, &trusted)];
            if let Some(u) = url {
                verdicts.push(loaded.check_url(u, &trusted));
            }
            let mut allowed = true;
            for v in &verdicts {
                match v {
                    Verdict::Allowed(parts) => {
                        for (what, rule) in parts {
                            println!("allowed: {what:?} by {rule:?}");
                        }
                    }
                    Verdict::Refused(why) => {
                        allowed = false;
                        println!("refused: {why}");
                    }
                }
            }
            println!("({name})");
            if allowed { 0 } else { 1 }
        }
    }
}

fn schema(name: Option<&str>) -> i32 {
    let all = aside_proto::schemas();
    match name {
        None => {
            let map: serde_json::Map<String, serde_json::Value> =
                all.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            print_json(&map);
            0
        }
        Some(n) => match all.into_iter().find(|(k, _)| *k == n) {
            Some((_, v)) => {
                print_json(&v);
                0
            }
            None => {
                let names: Vec<&str> = aside_proto::schemas().iter().map(|(k, _)| *k).collect();
                eprintln!("aside: no schema named {n:?} (known: {})", names.join(", "));
                2
            }
        },
    }
}

/// Qualifies bare process names with `project` (`api` → `project/api`).
fn scope(cmd: &mut Cmd, project: &str) {
    let reference = match cmd {
        Cmd::Status(StatusArgs {
            reference: Some(r), ..
        }) => r,
        Cmd::Logs(LogsArgs {
            reference: Some(r), ..
        }) => r,
        Cmd::Wait(WaitArgs { reference, .. })
        | Cmd::Stop(StopArgs { reference, .. })
        | Cmd::Restart(RestartArgs { reference, .. })
        | Cmd::Result(ResultArgs { reference, .. })
        | Cmd::Stdin { reference, .. } => reference,
        _ => return,
    };
    if !reference.contains('/') {
        *reference = format!("{project}/{reference}");
    }
}

async fn dispatch(cmd: Cmd, project: Option<String>, state: StateDir) -> Result<i32> {
    match cmd {
        Cmd::Run(a) => run(*a, project, state).await,
        Cmd::Up(a) => crate::up::up(a, project, state).await,
        Cmd::Down(a) => crate::up::down(a, project, state).await,
        Cmd::Session { cmd } => crate::up::session(cmd, state).await,
        Cmd::Status(a) => status(a, project, state).await,
        Cmd::Logs(a) => logs(a, project, state).await,
        Cmd::Wait(a) => wait(a, state).await,
        Cmd::Stop(a) => stop(a, state).await,
        Cmd::StopAll(a) => stop_all(a, state).await,
        Cmd::Restart(a) => restart(a, state).await,
        Cmd::Inbox(a) => inbox(a, state).await,
        Cmd::Result(a) => result(a, state).await,
        Cmd::Events(a) => events(a, state).await,
        Cmd::Stdin {
            reference,
            text,
            no_newline,
            owner,
        } => {
            let client = Client::new(state, owner_or_human(owner), true);
            let chars = if no_newline {
                text
            } else {
                format!("{text}\n")
            };
            let p = client
                .stdin(&reference, &aside_proto::StdinRequest { chars })
                .await?;
            println!("{}: written", p.name);
            Ok(0)
        }
        Cmd::Wake { cmd } => wake(cmd, state).await,
        Cmd::Progress { text, json } => {
            let (Ok(run), Ok(token)) = (
                std::env::var(aside_core::supervisor::RUN_ID_VAR),
                std::env::var(aside_core::supervisor::RUN_TOKEN_VAR),
            ) else {
                return Err(ClientError::new(
                    ErrorCode::InvalidRequest,
                    "aside progress reports from inside a run that aside started ($ASIDE_RUN_ID and $ASIDE_RUN_TOKEN are not set here)",
                ));
            };
            let data = match json {
                Some(j) => Some(serde_json::from_str(&j).map_err(|e| {
                    ClientError::new(
                        ErrorCode::InvalidRequest,
                        format!("--json takes a JSON object, e.g. '{{\"round\":3}}': {e}"),
                    )
                })?),
                None => None,
            };
            let client = Client::new(state, env_owner(), true);
            let req = aside_proto::ProgressRequest {
                token,
                text: text.clone(),
                data,
            };
            client.report_progress(&run, &req).await?;
            Ok(0)
        }
        Cmd::Idle { owner } => {
            let owner = owner_or_human(owner);
            let client = Client::new(state, owner.clone(), true);
            client.mark_idle(&owner).await?;
            println!("{owner} is idle: its next result fires its wake action");
            Ok(0)
        }
        Cmd::Daemon { cmd } => daemon(cmd, state).await,
        Cmd::Web(a) => crate::access::web(a, state).await,
        Cmd::Ui(a) => crate::ui::ui(a, state).await,
        Cmd::Token { cmd } => crate::access::token(cmd, state).await,
        Cmd::Completions { .. }
        | Cmd::Schema { .. }
        | Cmd::Policy { .. }
        | Cmd::Hook { .. }
        | Cmd::Config { .. }
        | Cmd::Mcp { .. } => Ok(0),
    }
}

async fn run(mut a: RunArgs, project: Option<String>, state: StateDir) -> Result<i32> {
    // `--wait 2s CMD…`: the duration written after a space (clap takes `--wait=2s` only).
    if a.wait.as_deref() == Some("") && a.cmd.len() >= 2 && parse_duration_ms(&a.cmd[0]).is_ok() {
        a.wait = Some(a.cmd.remove(0));
    }
    let here = std::env::current_dir().map_err(|e| {
        ClientError::new(
            ErrorCode::InvalidRequest,
            format!("the current directory is unusable ({e}): pass --cwd"),
        )
    })?;
    let cwd = match a.cwd {
        Some(c) if c.is_absolute() => c,
        Some(c) => here.join(c),
        None => here,
    };
    let mut env: BTreeMap<String, String> = std::env::vars().collect();
    if a.port.is_some() || a.proxy {
        // PORT and HOST come from --port (unless --env sets them), not from this shell.
        env.remove("PORT");
        env.remove("HOST");
    }
    env.extend(a.env);
    let cwd_text = cwd.display().to_string();
    let cmd = if a.cmd.len() == 1 {
        Command::Shell(a.cmd[0].clone())
    } else {
        Command::Argv(a.cmd)
    };
    let owner = owner_or_human(a.owner);
    let resources = aside_proto::SlurmResources {
        partition: None,
        cpus: a.cpus,
        mem_mib: a.mem.map(|b| b.div_ceil(1024 * 1024)),
        gpus: a.gpus,
        nodes: a.nodes,
    };
    let executor = aside_proto::Executor::from_on(a.on.as_deref().unwrap_or("local"), resources)
        .map_err(|e| ClientError::new(ErrorCode::InvalidRequest, e))?;
    let req = RunRequest {
        executor: (!executor.is_local()).then_some(executor),
        cmd: Some(cmd),
        name: a.name,
        // A retry after a cut connection gets this process, not a second one.
        idempotency_key: Some(uuid::Uuid::now_v7().to_string()),
        owner: Some(owner.clone()),
        team: a.team,
        description: a.description,
        cwd: Some(cwd_text.clone()),
        env,
        timeout_ms: a.timeout,
        grace_ms: a.grace,
        log_cap_bytes: a.log_cap,
        interactive: a.interactive,
        project: project.clone(),
        restart: a.autorestart.map(|mode| RestartPolicy {
            max_restarts: a.max_restarts,
            delay_ms: a
                .restart_delay
                .unwrap_or(aside_proto::DEFAULT_RESTART_DELAY_MS),
            backoff_max_ms: a.restart_backoff,
            ..RestartPolicy::new(mode)
        }),
        ready: a.ready.map(|pattern| {
            ReadyProbe::new(aside_proto::ReadyCheck::Log {
                pattern,
                regex: false,
            })
        }),
        port: a.port,
        proxy: a.proxy,
        watch: (!a.watch.is_empty()).then(|| aside_proto::WatchSpec {
            root: cwd_text.clone(),
            patterns: a.watch,
            ignore: a.watch_ignore,
        }),
        ..Default::default()
    };
    let client = Client::new(state, owner, true).with_team(req.team.clone());
    let info = client.run(&req).await?;
    let Some(wait_for) = a.wait else {
        if a.json {
            print_json(&info);
        } else if info.status == Status::Failed {
            eprintln!(
                "aside: {} failed to start: {}",
                info.name,
                info.error.as_deref().unwrap_or("unknown error")
            );
        } else {
            println!("{}", render::id_line(&info));
            // How agent-procs' users find the proxy's port.
            if let Some(port) = info.url.as_deref().and_then(proxy_port_of) {
                eprintln!("Proxy listening on http://localhost:{port}");
            }
        }
        return Ok(if info.status == Status::Failed { 1 } else { 0 });
    };
    let limit = if wait_for.is_empty() {
        None
    } else {
        Some(Duration::from_millis(
            parse_duration_ms(&wait_for)
                .map_err(|e| ClientError::new(ErrorCode::InvalidRequest, e))?,
        ))
    };
    // Foreground: stream the output live, then the result.
    let follow = async {
        if a.json {
            return Ok(());
        }
        let q = LogQuery {
            stream: StreamFilter::All,
            ..LogQuery::default()
        };
        let resp = client.follow_logs(&info.id, &q).await?;
        read_ndjson(resp, |e: &LogEntry| {
            let line = render::entry(e, false);
            match e {
                LogEntry::Line {
                    stream: LogStream::Stderr,
                    ..
                } => eprintln!("{line}"),
                _ => println!("{line}"),
            }
        })
        .await
    };
    let finished = match limit {
        Some(d) => tokio::time::timeout(d, follow).await.ok(),
        None => Some(follow.await),
    };
    match finished {
        Some(r) => r?,
        None => {
            eprintln!(
                "[aside] {} is still running in the background after {}: follow it with `aside logs {} -f`, wait with `aside wait {} --exit`",
                info.name,
                render::duration(limit.map_or(0, |d| d.as_millis() as u64)),
                info.name,
                info.name
            );
            return Ok(1);
        }
    }
    let w = client.wait(&info.id, &WaitQuery::default()).await?;
    if a.json {
        print_json(&w.result);
    } else if let Some(r) = &w.result {
        eprintln!(
            "[aside] {} {} in {}",
            r.name,
            render::result_outcome(r),
            render::duration(r.duration_ms)
        );
    }
    if let Some(r) = &w.result {
        // Shown here in the foreground: delivered, so it does not wait in the inbox as well.
        let ack = aside_proto::AckRequest {
            ids: vec![r.run_id.to_string()],
            all: false,
        };
        if let Err(e) = client.ack(&r.owner, &ack).await {
            eprintln!("aside: the result stays in the inbox of {}: {e}", r.owner);
        }
    }
    Ok(child_exit_code(&w.process))
}

async fn status(a: StatusArgs, project: Option<String>, state: StateDir) -> Result<i32> {
    let client = Client::new(state, env_owner(), true);
    if let Some(r) = a.reference {
        if a.json {
            print_raw(&client.process_raw(&r).await?);
            return Ok(0);
        }
        let p = client.process(&r).await?;
        print!("{}", render::table(std::slice::from_ref(&p)));
        if p.progress.is_some() {
            // What the latest run said along the way, oldest first.
            let history = client.progress(&p.run_id).await?;
            println!("\nprogress of run {}:", p.run_id);
            for r in history.iter().take(10).rev() {
                println!("  {}  {}", render::time(r.at), r.text);
            }
        }
        return Ok(0);
    }
    let q = aside_proto::ListQuery {
        all: a.all,
        owner: a.owner,
        team: a.team,
        project,
    };
    if a.json {
        // The daemon's bytes as they are: `status --json` is the hot path of polling agents.
        print_raw(&client.processes_raw(&q).await?);
        return Ok(0);
    }
    let procs = client.processes(&q).await?;
    if procs.is_empty() {
        println!(
            "no processes (`aside status --all` includes finished ones whose result was read)"
        );
    } else {
        print!("{}", render::table(&procs));
    }
    Ok(0)
}

async fn logs(a: LogsArgs, project: Option<String>, state: StateDir) -> Result<i32> {
    let client = Client::new(state, env_owner(), true);
    let stream = match (a.streams, a.stderr) {
        (Some(s), _) => s,
        (None, true) => StreamFilter::Stderr,
        (None, false) => StreamFilter::Stdout,
    };
    let q = LogQuery {
        stream,
        tail: a.tail_lines(),
        head: a.head,
        since: a.since,
        grep: a.grep.clone(),
        follow: false,
        run: a.run.clone(),
    };
    let with_stream = stream == StreamFilter::All;
    let line = |e: &LogEntry, name: Option<&str>| {
        let text = if a.json {
            serde_json::to_string(e).unwrap_or_default()
        } else {
            render::entry(e, with_stream)
        };
        match name {
            Some(n) if !a.json => format!("[{n}] {text}"),
            _ => text,
        }
    };
    let reference = match (&a.reference, a.all) {
        (Some(r), false) => r.clone(),
        _ => return logs_of_all(&client, &a, project, &q, line).await,
    };
    if a.follow && a.head.is_none() {
        // What is there now, then what comes, for as long as asked.
        let now = client.logs(&reference, &q).await?;
        print_lines(now.entries.iter().map(|e| line(e, None)));
        let from = LogQuery {
            since: Some(now.cursor),
            tail: None,
            ..q.clone()
        };
        let resp = client.follow_logs(&reference, &from).await?;
        follow_for(&a, vec![(None, resp)], line).await?;
        return Ok(0);
    }
    let resp = client.logs(&reference, &q).await?;
    if resp.entries.is_empty() && resp.cursor == 0 && a.since.is_none() {
        // Nothing to show is not an error (agent-procs exits 0 too); said on stderr.
        let p = client.process(&reference).await?;
        if p.status.is_terminal() {
            eprintln!(
                "aside: {} {} without writing any {}",
                p.name,
                render::process_outcome(&p),
                stream_words(stream)
            );
        } else {
            eprintln!("aside: no {} from {} yet", stream_words(stream), p.name);
        }
        return Ok(0);
    }
    print_lines(resp.entries.iter().map(|e| line(e, None)));
    Ok(0)
}

/// What a stream filter reads, in words: `output`, `stdout`, `stderr`.
fn stream_words(s: StreamFilter) -> &'static str {
    match s {
        StreamFilter::All => "output",
        StreamFilter::Stdout => "stdout",
        StreamFilter::Stderr => "stderr",
    }
}

/// Prints lines in 64 KiB writes, not one per line (stdout is line-buffered). A closed stdout
/// (`| head`) has read what it wanted.
fn print_lines(mut lines: impl Iterator<Item = String>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    let written = lines
        .try_for_each(|l| writeln!(out, "{l}"))
        .and_then(|()| out.flush());
    if let Err(e) = written {
        tracing::debug!("stdout: {e}");
    }
}

/// `logs --all` (or no name): every listed process's output, interleaved in time order, each
/// line prefixed `[name] ` (agent-procs' `logs --all`); with `--follow`, then new lines of
/// any of them as they come.
async fn logs_of_all(
    client: &Client,
    a: &LogsArgs,
    project: Option<String>,
    q: &LogQuery,
    line: impl Fn(&LogEntry, Option<&str>) -> String,
) -> Result<i32> {
    let listing = aside_proto::ListQuery {
        project,
        ..Default::default()
    };
    let procs = client.processes(&listing).await?;
    let mut merged: Vec<(jiff::Timestamp, usize, &str, LogEntry)> = Vec::new();
    let mut open = Vec::new();
    for p in &procs {
        let got = client.logs(&p.id, q).await?;
        for (i, e) in got.entries.into_iter().enumerate() {
            let ts = match &e {
                LogEntry::Line { ts, .. } => *ts,
                LogEntry::Elided { .. } => p.started_at,
            };
            merged.push((ts, i, p.name.as_str(), e));
        }
        if !got.complete {
            open.push((p, got.cursor));
        }
    }
    merged.sort_by(|x, y| x.0.cmp(&y.0).then(x.1.cmp(&y.1)));
    print_lines(merged.iter().map(|(_, _, name, e)| line(e, Some(name))));
    if !a.follow {
        return Ok(0);
    }
    let mut streams = Vec::new();
    for (p, cursor) in open {
        let from = LogQuery {
            since: Some(cursor),
            tail: None,
            ..q.clone()
        };
        streams.push((
            Some(p.name.clone()),
            client.follow_logs(&p.id, &from).await?,
        ));
    }
    follow_for(a, streams, line).await?;
    Ok(0)
}

/// A followed log stream, with the process name its lines are prefixed with (if any).
type Followed = (Option<String>, hyper::Response<hyper::body::Incoming>);

/// Prints followed entries until every stream ends, `--lines` new lines were printed, or
/// `--timeout` (default 30 s) passed: agent-procs' `logs --follow`, which exits 0 when its time
/// runs out. Errors: a stream that broke or failed (said, not taken for the process's end).
async fn follow_for(
    a: &LogsArgs,
    streams: Vec<Followed>,
    line: impl Fn(&LogEntry, Option<&str>) -> String,
) -> Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<(Option<String>, LogEntry)>>(256);
    for (name, resp) in streams {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut reader = crate::client::NdjsonReader::new(resp);
            loop {
                let batch = match reader.next_batch::<LogEntry>().await {
                    Ok(Some(b)) => b,
                    Ok(None) => return,
                    Err(e) => {
                        // When nobody receives, the follow below has ended already.
                        if tx.send(Err(e)).await.is_err() {
                            tracing::debug!("follow ended before its stream failed");
                        }
                        return;
                    }
                };
                for e in batch {
                    if tx.send(Ok((name.clone(), e))).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    drop(tx);
    let limit = match a.timeout.unwrap_or(FOLLOW_TIMEOUT_MS) {
        0 => None,
        ms => Some(tokio::time::Instant::now() + Duration::from_millis(ms)),
    };
    let mut printed = 0usize;
    let mut out = std::io::stdout();
    loop {
        if a.lines.is_some_and(|n| printed >= n) {
            return Ok(());
        }
        let next = match limit {
            Some(at) => match tokio::time::timeout_at(at, rx.recv()).await {
                Ok(n) => n,
                Err(_) => return Ok(()),
            },
            None => rx.recv().await,
        };
        let Some(item) = next else { return Ok(()) };
        let (name, e) = item?;
        // A closed stdout (`| head`) ends the follow.
        if writeln!(out, "{}", line(&e, name.as_deref()))
            .and_then(|()| out.flush())
            .is_err()
        {
            return Ok(());
        }
        if matches!(e, LogEntry::Line { .. }) {
            printed += 1;
        }
    }
}

async fn wait(a: WaitArgs, state: StateDir) -> Result<i32> {
    let client = Client::new(state, env_owner(), true);
    let q = WaitQuery {
        until: a.until.clone(),
        regex: a.regex,
        timeout_ms: a.timeout,
    };
    let w = client.wait(&a.reference, &q).await?;
    if a.json {
        print_json(&w);
    } else {
        let p = &w.process;
        let ended = render::process_outcome(p);
        // agent-procs' lines: the matched line alone; `exited with code N`.
        match w.outcome {
            WaitOutcome::Matched => println!("{}", w.line.as_deref().unwrap_or("")),
            WaitOutcome::Exited => match p.exit_code {
                Some(code) => println!("exited with code {code}"),
                None => println!("exited by signal"),
            },
            WaitOutcome::ExitedWithoutMatch => eprintln!(
                "aside: {} ended ({ended}) without printing {:?}",
                p.name,
                a.until.as_deref().unwrap_or("")
            ),
            WaitOutcome::TimedOut => eprintln!(
                "timeout\naside: timed out after {} waiting for {}; it is {}",
                render::duration(a.timeout.unwrap_or(0)),
                p.name,
                p.status
            ),
        }
    }
    Ok(match w.outcome {
        WaitOutcome::Matched | WaitOutcome::Exited => 0,
        WaitOutcome::ExitedWithoutMatch | WaitOutcome::TimedOut => 1,
    })
}

async fn stop(a: StopArgs, state: StateDir) -> Result<i32> {
    if let Some(sig) = &a.signal {
        aside_core::proc::parse_signal(sig)
            .map_err(|e| ClientError::new(ErrorCode::InvalidRequest, e))?;
    }
    let client = Client::new(state, owner_or_human(a.owner), true);
    let req = StopRequest {
        signal: a.signal,
        grace_ms: a.grace,
    };
    let before = client.process(&a.reference).await?;
    let ended_before = before.status.is_terminal()
        && before
            .autorestart
            .as_ref()
            .is_none_or(|r| r.state != aside_proto::RestartState::Active);
    // Asked even when it has ended: the daemon decides who may stop it, and disables a
    // restart that may be due.
    let p = client.stop(&a.reference, &req).await?;
    if a.json {
        print_json(&p);
    } else {
        // agent-procs' line on stdout, how it went on stderr.
        println!("stopped {}", p.name);
        if ended_before && p.run_id == before.run_id {
            // Nothing ran: say so rather than report a fresh stop.
            eprintln!(
                "aside: {} had already ended ({}); nothing to stop",
                p.name,
                render::process_outcome(&p)
            );
        } else {
            eprintln!(
                "aside: {} {} after {}",
                p.name,
                render::process_outcome(&p),
                render::duration(p.duration_ms)
            );
        }
    }
    Ok(0)
}

async fn stop_all(a: StopAllArgs, state: StateDir) -> Result<i32> {
    let client = Client::new(state, env_owner(), true);
    let resp = client.stop_all(&StopAllRequest { owner: a.owner }).await?;
    if a.json {
        print_json(&resp);
    } else {
        // agent-procs' line, then which ones.
        println!("all processes stopped");
        for p in &resp.stopped {
            println!("{}: {}", p.name, render::process_outcome(p));
        }
        if resp.stopped.is_empty() {
            eprintln!("aside: nothing was running");
        }
        if !resp.refused.is_empty() {
            eprintln!(
                "aside: not stopped (owned by others): {}",
                resp.refused.join(", ")
            );
        }
    }
    Ok(if resp.refused.is_empty() { 0 } else { 1 })
}

async fn restart(a: RestartArgs, state: StateDir) -> Result<i32> {
    let client = Client::new(state, owner_or_human(a.owner), true);
    let p = client.restart(&a.reference).await?;
    if a.json {
        print_json(&p);
    } else {
        println!("restarted {}", render::id_line(&p));
    }
    Ok(if p.status == Status::Failed { 1 } else { 0 })
}

async fn inbox(a: InboxArgs, state: StateDir) -> Result<i32> {
    let owner = owner_or_human(a.owner);
    let client = Client::new(state, owner.clone(), true);
    if a.drain || !a.ack.is_empty() {
        let req = AckRequest {
            ids: a.ack.clone(),
            all: a.drain,
        };
        let resp = client.ack(&owner, &req).await?;
        if a.json {
            print_json(&resp);
        } else {
            for n in &resp.acked {
                print!("{}", render::notification(n));
            }
            if resp.acked.is_empty() && a.drain {
                println!("no pending results for {owner}");
            }
        }
        let missing: Vec<&String> = a
            .ack
            .iter()
            .filter(|id| !resp.acked.iter().any(|n| &n.id == *id))
            .collect();
        if !missing.is_empty() {
            eprintln!(
                "aside: no pending notification for {owner} with id {}",
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            return Ok(2);
        }
        return Ok(0);
    }
    let resp = client.inbox(&owner).await?;
    if a.json {
        print_json(&resp);
    } else if resp.notifications.is_empty() {
        println!("no pending results for {owner}");
    } else {
        for n in &resp.notifications {
            print!("{}", render::notification(n));
        }
    }
    Ok(0)
}

/// What a wake action does, in words.
fn wake_text(a: &aside_proto::WakeAction) -> String {
    let idle = render::duration(
        a.idle_after_ms
            .unwrap_or(aside_core::supervisor::DEFAULT_IDLE_AFTER_MS),
    );
    match (&a.command, &a.webhook, a.host) {
        (_, _, Some(host)) => {
            format!("resuming its {host} session once that session has ended")
        }
        (Some(c), _, _) => format!("{c:?} when idle for {idle}"),
        (_, Some(w), _) => format!("{w} when idle for {idle}"),
        _ => String::new(),
    }
}

fn parse_host(s: &str) -> std::result::Result<aside_proto::AgentHost, String> {
    aside_proto::AgentHost::parse(s).ok_or_else(|| {
        format!(
            "unknown agent host {s:?}: one of {}",
            aside_proto::AgentHost::ALL.map(|h| h.as_str()).join(", ")
        )
    })
}

async fn wake(cmd: WakeCmd, state: StateDir) -> Result<i32> {
    match cmd {
        WakeCmd::Set {
            owner,
            webhook,
            host,
            idle_after,
            command,
        } => {
            let owner = owner_or_human(owner);
            let client = Client::new(state, owner.clone(), true);
            let action = aside_proto::WakeAction {
                owner: owner.clone(),
                command: (!command.is_empty()).then_some(command),
                webhook,
                host,
                idle_after_ms: idle_after,
            };
            let set = client.set_wake(&owner, &action).await?;
            println!("{owner} is woken by {}", wake_text(&set));
            Ok(0)
        }
        WakeCmd::Show { owner, json } => {
            let owner = owner_or_human(owner);
            let client = Client::new(state, owner.clone(), true);
            let a = client.wake(&owner).await?;
            if json {
                print_json(&a);
            } else {
                println!("{owner}: {}", wake_text(&a));
            }
            Ok(0)
        }
        WakeCmd::Clear { owner } => {
            let owner = owner_or_human(owner);
            let client = Client::new(state, owner.clone(), true);
            let v = client.clear_wake(&owner).await?;
            println!(
                "{owner}: {}",
                if v.cleared {
                    "wake action removed"
                } else {
                    "had no wake action"
                }
            );
            Ok(0)
        }
    }
}

async fn events(a: EventsArgs, state: StateDir) -> Result<i32> {
    let client = Client::new(state, env_owner(), true);
    let q = aside_proto::EventsQuery {
        owner: a.owner.clone(),
        kind: (!a.kind.is_empty()).then(|| a.kind.join(",")),
        since: a.since,
    };
    let mut seen = 0usize;
    let mut out = std::io::stdout();
    let each = |_: &str, data: &str| {
        let line = if a.json {
            // As the daemon sent it, whether or not this aside knows its kind.
            data.to_string()
        } else {
            match serde_json::from_str::<aside_proto::Event>(data) {
                Ok(e) => event_line(&e),
                Err(err) => {
                    // A newer daemon's event: say so and go on.
                    eprintln!("aside: an event this aside does not know ({err}): {data}");
                    return true;
                }
            }
        };
        // A closed stdout (`| head`) ends the follow.
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return false;
        }
        seen += 1;
        a.count.is_none_or(|n| seen < n)
    };
    // The stream outlives its daemon: said on stderr, and it goes on with the next one.
    let connectivity = |c: crate::client::Connectivity| match c {
        crate::client::Connectivity::Connected => eprintln!("aside: connected to the daemon again"),
        crate::client::Connectivity::Stopped(why) => eprintln!(
            "aside: {why}; waiting for it to come back (`aside daemon start`, or any command), Ctrl-C to quit"
        ),
        crate::client::Connectivity::Lost(e) => {
            eprintln!("aside: lost the daemon ({e}); reconnecting")
        }
    };
    crate::client::follow_events(&client, q, each, connectivity).await?;
    Ok(0)
}

/// One event as an `aside events` line: seq, time, kind, owner, process, what changed.
fn event_line(e: &aside_proto::Event) -> String {
    let what = e.process().map_or("", |p| p.name.as_str());
    let status = match (&e.data, e.process()) {
        (aside_proto::EventData::RunProgress { process }, _) => process
            .progress
            .as_ref()
            .map_or(String::new(), |r| format!("— {}", r.text)),
        (_, p) => p.map_or(String::new(), |p| p.status.to_string()),
    };
    format!(
        "{} {} {:<20} {} {} {}",
        e.seq,
        render::time(e.ts),
        e.kind().as_str(),
        e.owner.as_deref().unwrap_or("-"),
        what,
        status
    )
}

async fn result(a: ResultArgs, state: StateDir) -> Result<i32> {
    let client = Client::new(state, env_owner(), true);
    let r = client.result(&a.reference).await?;
    if a.json {
        print_json(&r);
    } else {
        print!("{}", render::result(&r));
    }
    Ok(0)
}

async fn daemon(cmd: DaemonCmd, state: StateDir) -> Result<i32> {
    if let (Some(r), DaemonCmd::Start(_) | DaemonCmd::Stop) = (crate::client::remote(), &cmd) {
        return Err(ClientError::new(
            ErrorCode::Forbidden,
            format!(
                "the daemon at http://{} is started and stopped on its own machine, not with --remote",
                r.authority
            ),
        ));
    }
    match cmd {
        DaemonCmd::Start(flags) => {
            start_daemon(&state, &flags.args())?;
            let client = Client::new(state, env_owner(), false);
            let s = client.daemon_status().await?;
            println!("aside daemon running (pid {}, socket {})", s.pid, s.socket);
            Ok(0)
        }
        DaemonCmd::Stop => {
            let client = Client::new(state, env_owner(), false);
            let s = match client.daemon_status().await {
                Ok(s) => s,
                Err(_) => {
                    println!("aside daemon is not running");
                    return Ok(0);
                }
            };
            client.stop_daemon().await?;
            wait_for_exit(s.pid as i32, Duration::from_secs(10));
            println!(
                "aside daemon stopped (pid {}); running processes keep running",
                s.pid
            );
            Ok(0)
        }
        DaemonCmd::Status { json } => {
            let client = Client::new(state.clone(), env_owner(), false);
            match client.daemon_status().await {
                Ok(s) if json => {
                    print_json(&s);
                    Ok(0)
                }
                Ok(s) => {
                    println!(
                        "aside daemon running: pid {}, protocol {}, version {}\n  socket {}\n  state  {}\n  {} live processes, up since {}",
                        s.pid,
                        s.protocol,
                        s.version,
                        s.socket,
                        s.state_dir,
                        s.live_processes,
                        render::time(s.started_at)
                    );
                    Ok(0)
                }
                Err(e) if e.code == ErrorCode::ProtocolMismatch => Err(e),
                Err(_) => {
                    if json {
                        print_json(
                            &serde_json::json!({ "running": false, "socket": state.socket() }),
                        );
                    } else {
                        println!(
                            "aside daemon is not running (socket {})",
                            state.socket().display()
                        );
                    }
                    Ok(3)
                }
            }
        }
        DaemonCmd::Run(_) => Ok(0),
    }
}

/// Blocks until process `pid` exits (via a pidfd) or `limit` passes.
fn wait_for_exit(pid: i32, limit: Duration) {
    let Some(p) = rustix::process::Pid::from_raw(pid) else {
        return;
    };
    let Ok(fd) = rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()) else {
        return; // already gone
    };
    let mut fds = [libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&fd),
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: a valid one-element pollfd array.
    unsafe { libc::poll(fds.as_mut_ptr(), 1, limit.as_millis() as i32) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
