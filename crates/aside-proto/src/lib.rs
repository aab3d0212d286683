//! Wire types of the `aside` API, shared by the daemon and every client.
//!
//! Everything here is plain data: serde for JSON on the wire and schemars for the JSON Schema
//! that documents `--json` output (`aside schema`). This crate does no IO.
//!
//! Vocabulary follows DESIGN.md: a *process* is one managed command (id + optional name), a
//! *run* is one execution of it, a *result* is the record of a terminal run and a
//! *notification* is a result waiting in its owner's *inbox*.
//!
//! ```
//! use aside_proto::{Command, Status};
//! let cmd: Command = serde_json::from_str(r#""make test""#).unwrap();
//! assert_eq!(cmd.display(), "make test");
//! assert!(Status::TimedOut.is_terminal());
//! ```

#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::fmt;

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Version of the HTTP API. Client and daemon send it in [`PROTOCOL_HEADER`] on every request
/// and response and refuse to talk when it differs.
pub const PROTOCOL_VERSION: u32 = 1;
/// Header carrying [`PROTOCOL_VERSION`] in both directions.
pub const PROTOCOL_HEADER: &str = "aside-protocol";
/// Header carrying the requester's owner (who is asking), e.g. for stop permission checks.
pub const OWNER_HEADER: &str = "aside-owner";
/// Header carrying the requester's team, if any (for the policy's `team_may_stop`).
pub const TEAM_HEADER: &str = "aside-team";
/// How a request reached the daemon (`socket`, `web`, `token:ID`), set by the daemon's TCP
/// listener for the audit log; clients do not send it.
pub const VIA_HEADER: &str = "aside-via";
/// The owner of a person at the CLI or dashboard; a `human` may stop anything.
pub const HUMAN_OWNER: &str = "human";

/// Lifecycle status of a run, exactly DESIGN.md's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Submitted to a cluster's scheduler and waiting there for resources (Slurm's PENDING;
    /// `job.reason` says why).
    Queued,
    /// Accepted; the shim is starting the command.
    Starting,
    /// The command is running.
    Running,
    /// Still running, and its ready pattern was seen.
    Ready,
    /// Exited 0 and wrote output.
    Completed,
    /// Exited 0 and wrote no output at all.
    CompletedEmpty,
    /// Non-zero exit, killed by a signal it did not ask for, or could not be started.
    Failed,
    /// Killed because it ran past its timeout.
    TimedOut,
    /// Ended by a stop request (`stopped_by` says whose).
    Stopped,
    /// Lost across a host or shim crash; its result is unknown.
    Abandoned,
}

impl Status {
    /// Every status, in lifecycle order.
    pub const ALL: [Status; 10] = [
        Status::Queued,
        Status::Starting,
        Status::Running,
        Status::Ready,
        Status::Completed,
        Status::CompletedEmpty,
        Status::Failed,
        Status::TimedOut,
        Status::Stopped,
        Status::Abandoned,
    ];

    /// True once the run has ended and will never change again.
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            Status::Queued | Status::Starting | Status::Running | Status::Ready
        )
    }

    /// The snake_case name used on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Starting => "starting",
            Status::Running => "running",
            Status::Ready => "ready",
            Status::Completed => "completed",
            Status::CompletedEmpty => "completed_empty",
            Status::Failed => "failed",
            Status::TimedOut => "timed_out",
            Status::Stopped => "stopped",
            Status::Abandoned => "abandoned",
        }
    }

    /// Inverse of [`Status::as_str`]; `None` for an unknown name.
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to run: a shell string (run as `sh -c CMD`) or an argv list (run directly).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Command {
    /// Run by `sh -c`.
    Shell(String),
    /// Executed directly; the first element is the program.
    Argv(Vec<String>),
}

impl Command {
    /// A one-line rendering for tables and results (argv elements joined by spaces).
    pub fn display(&self) -> String {
        match self {
            Command::Shell(s) => s.clone(),
            Command::Argv(v) => v.join(" "),
        }
    }
}

/// `POST /v1/processes`: start a command in the background.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// The command. A trailing `&` on a shell string is stripped: it runs in the background anyway.
    pub cmd: Option<Command>,
    /// Unique among live processes; generated from the command when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// Owner of the process; `human` when absent.
    #[serde(default)]
    pub owner: Option<String>,
    /// Optional team.
    #[serde(default)]
    pub team: Option<String>,
    /// What the command is for, in a few words (shown to people watching).
    #[serde(default)]
    pub description: Option<String>,
    /// Absolute working directory; must exist.
    pub cwd: Option<String>,
    /// Complete environment of the command (the CLI sends its own, with `--env` overrides).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Kill the whole tree after this many ms.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Time between SIGTERM and SIGKILL when stopping, in ms (default 5000).
    #[serde(default)]
    pub grace_ms: Option<u64>,
    /// Log cap in bytes (default 8 MiB): the head and a rotating tail are kept.
    #[serde(default)]
    pub log_cap_bytes: Option<u64>,
    /// Keep stdin open for writing to it later (`POST …/stdin`); default: stdin is `/dev/null`.
    #[serde(default)]
    pub interactive: bool,
    /// The project it belongs to: names are unique within a project (absent: the default one).
    #[serde(default)]
    pub project: Option<String>,
    /// Restart it when it exits (see [`RestartPolicy`]).
    #[serde(default)]
    pub restart: Option<RestartPolicy>,
    /// When it counts as ready (status `ready`); dependents wait for it.
    #[serde(default)]
    pub ready: Option<ReadyProbe>,
    /// Port it listens on: `PORT` and `HOST=127.0.0.1` are set unless `env` sets them.
    #[serde(default)]
    pub port: Option<u16>,
    /// Give it a port from 4000–4999 when it has none, and route `http://NAME.localhost:PROXY`
    /// to it through its project's reverse proxy.
    #[serde(default)]
    pub proxy: bool,
    /// Restart it when files matching these change.
    #[serde(default)]
    pub watch: Option<WatchSpec>,
    /// Names of processes of the same project that must be ready before it starts (`up` only).
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Digest of the configuration it came from: `up` leaves a running process alone while it
    /// is unchanged and restarts it when it differs.
    #[serde(default)]
    pub digest: Option<String>,
    /// A key of the caller's choosing (at most 128 bytes): another request with the same key
    /// from the same owner answers with the process the first one started instead of starting
    /// a second (a retry after a cut connection; keys are kept 24 h). The CLI and the MCP
    /// server send one.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Where it runs: this machine when absent (see [`Executor`]).
    #[serde(default)]
    pub executor: Option<Executor>,
}

/// When a process is restarted after it exits (agent-procs' `autorestart`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Autorestart {
    /// After any exit (but not after a stop request).
    Always,
    /// After a non-zero exit, a signal it did not ask for or a timeout.
    OnFailure,
    /// Never (the default).
    #[default]
    Never,
}

impl Autorestart {
    /// The name in configs and on the wire: `always`, `on-failure`, `never`.
    pub fn as_str(self) -> &'static str {
        match self {
            Autorestart::Always => "always",
            Autorestart::OnFailure => "on-failure",
            Autorestart::Never => "never",
        }
    }

    /// Inverse of [`Autorestart::as_str`].
    pub fn parse(s: &str) -> Option<Autorestart> {
        [
            Autorestart::Always,
            Autorestart::OnFailure,
            Autorestart::Never,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }
}

/// Default wait before a restart, in ms (agent-procs: 1000).
pub const DEFAULT_RESTART_DELAY_MS: u64 = 1_000;
/// A run that lasted this long resets the restart count, in ms (pm2 resets its exponential
/// backoff after a stable run the same way).
pub const DEFAULT_RESTART_RESET_MS: u64 = 30_000;

/// Restart policy of a process. Delays: `delay_ms` before the first restart; with `backoff_max_ms`
/// each further attempt doubles it up to that cap (pm2's exponential backoff).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestartPolicy {
    /// When to restart.
    pub autorestart: Autorestart,
    /// Most restarts in a row before giving up (absent: unlimited).
    #[serde(default)]
    pub max_restarts: Option<u32>,
    /// Wait before restarting, in ms.
    #[serde(default = "default_restart_delay")]
    pub delay_ms: u64,
    /// Exponential backoff: double the delay per attempt, up to this many ms.
    #[serde(default)]
    pub backoff_max_ms: Option<u64>,
    /// A run lasting this long (ms) resets the attempt count.
    #[serde(default = "default_restart_reset")]
    pub reset_after_ms: u64,
}

fn default_restart_delay() -> u64 {
    DEFAULT_RESTART_DELAY_MS
}

fn default_restart_reset() -> u64 {
    DEFAULT_RESTART_RESET_MS
}

impl RestartPolicy {
    /// A policy with agent-procs' defaults for `autorestart`.
    pub fn new(autorestart: Autorestart) -> RestartPolicy {
        RestartPolicy {
            autorestart,
            max_restarts: None,
            delay_ms: DEFAULT_RESTART_DELAY_MS,
            backoff_max_ms: None,
            reset_after_ms: DEFAULT_RESTART_RESET_MS,
        }
    }

    /// The wait before restart `attempt` (1-based), in ms.
    pub fn delay_for(&self, attempt: u32) -> u64 {
        match self.backoff_max_ms {
            None => self.delay_ms,
            Some(cap) => {
                let factor = 1u64
                    .checked_shl(attempt.saturating_sub(1).min(40))
                    .unwrap_or(u64::MAX);
                self.delay_ms
                    .saturating_mul(factor)
                    .min(cap.max(self.delay_ms))
            }
        }
    }
}

/// Default interval between readiness checks, in ms.
pub const DEFAULT_READY_INTERVAL_MS: u64 = 250;
/// Default time a process gets to become ready, in ms.
pub const DEFAULT_READY_TIMEOUT_MS: u64 = 60_000;

/// What makes a process ready (process-compose's readiness probes, plus agent-procs' log pattern).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadyCheck {
    /// A line of its output (stdout or stderr) contains `pattern`, or matches it with `regex`.
    Log {
        /// Substring, or regex with `regex`.
        pattern: String,
        /// Treat `pattern` as a regex.
        #[serde(default)]
        regex: bool,
    },
    /// A TCP connection to 127.0.0.1:`port` succeeds.
    Tcp {
        /// The port.
        port: u16,
    },
    /// An HTTP GET of `url` (`http://` only) answers 2xx or 3xx.
    Http {
        /// The URL.
        url: String,
    },
    /// `sh -c CMD` in the process's cwd and environment exits 0.
    Exec {
        /// The check command.
        cmd: String,
    },
}

/// A readiness probe: a check, tried every `interval_ms` for at most `timeout_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadyProbe {
    /// What is checked.
    pub check: ReadyCheck,
    /// Between checks, in ms (probes other than `log`).
    #[serde(default = "default_ready_interval")]
    pub interval_ms: u64,
    /// Give up after this many ms: the process keeps running but its dependents are not started.
    #[serde(default = "default_ready_timeout")]
    pub timeout_ms: u64,
}

fn default_ready_interval() -> u64 {
    DEFAULT_READY_INTERVAL_MS
}

fn default_ready_timeout() -> u64 {
    DEFAULT_READY_TIMEOUT_MS
}

impl ReadyProbe {
    /// A probe with the default interval and timeout.
    pub fn new(check: ReadyCheck) -> ReadyProbe {
        ReadyProbe {
            check,
            interval_ms: DEFAULT_READY_INTERVAL_MS,
            timeout_ms: DEFAULT_READY_TIMEOUT_MS,
        }
    }
}

/// Directory names never watched (agent-procs' list): `.git`, `node_modules`, `target`,
/// `__pycache__`.
pub const DEFAULT_WATCH_IGNORE: [&str; 4] = [".git", "node_modules", "target", "__pycache__"];

/// File watching: restart the process when a file under `root` matching `patterns` (and none of
/// `ignore` nor [`DEFAULT_WATCH_IGNORE`]) changes, after a 500 ms quiet period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WatchSpec {
    /// Absolute directory the globs are relative to.
    pub root: String,
    /// Globs such as `src/**` or `*.py`.
    pub patterns: Vec<String>,
    /// Globs to ignore.
    #[serde(default)]
    pub ignore: Vec<String>,
}

/// `POST /v1/processes/{ref}/stdin`: characters for an interactive process.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StdinRequest {
    /// What to write (a newline is not added).
    pub chars: String,
}

/// The stored, validated form of what a process runs. Restarts reuse it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Spec {
    /// What to run.
    pub cmd: Command,
    /// Absolute working directory.
    pub cwd: String,
    /// Complete environment.
    pub env: BTreeMap<String, String>,
    /// Timeout in ms, if any.
    pub timeout_ms: Option<u64>,
    /// SIGTERM → SIGKILL grace in ms.
    pub grace_ms: u64,
    /// Log cap in bytes.
    pub log_cap_bytes: u64,
    /// Stdin is a pipe that stays open for `write_stdin` (else `/dev/null`).
    #[serde(default)]
    pub interactive: bool,
    /// Restart policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartPolicy>,
    /// Readiness probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<ReadyProbe>,
    /// Port it listens on (set in `PORT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Routed by its project's reverse proxy.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub proxy: bool,
    /// File watching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<WatchSpec>,
    /// Processes of its project it starts after (and `down` stops before).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Digest of the configuration it came from (see [`RunRequest::digest`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Where it runs (absent: this machine).
    #[serde(default, skip_serializing_if = "Executor::is_local")]
    pub executor: Executor,
}

/// Declares a string id type: the same JSON as a string (`#[serde(transparent)]`), but a
/// type of its own, so a run id cannot be passed where a process id is meant.
macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub String);

        /// A plain string in every schema (inlined: hosts read the schemas, not the types).
        impl JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }

            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
                String::json_schema(generator)
            }
        }

        impl $name {
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> $name {
                $name(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> $name {
                $name(s.to_string())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }
    };
}

string_id!(
    /// A process's id (UUIDv7): the same through all its runs.
    ProcessId
);
string_id!(
    /// A run's id (UUIDv7): one execution of a process; also its result's and notification's id.
    RunId
);

/// One process as `status` shows it: identity plus the state of its latest run.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ProcessInfo {
    /// Process id (UUIDv7).
    pub id: ProcessId,
    /// Process name, unique among live processes.
    pub name: String,
    /// Who started it.
    pub owner: String,
    /// Optional team.
    pub team: Option<String>,
    /// The command, rendered on one line.
    pub command: String,
    /// Working directory.
    pub cwd: String,
    /// Id of the latest run (UUIDv7).
    pub run_id: RunId,
    /// How many times the process was restarted (runs − 1).
    pub restarts: u32,
    /// Status of the latest run.
    pub status: Status,
    /// Pid of the main process (also its process group and session id), once started.
    pub pid: Option<u32>,
    /// Exit code, when it exited normally.
    pub exit_code: Option<i32>,
    /// Name of the signal that ended it (e.g. `SIGKILL`), when one did.
    pub signal: Option<String>,
    /// When the run started.
    pub started_at: Timestamp,
    /// When the run ended.
    pub ended_at: Option<Timestamp>,
    /// Run time in ms: to `ended_at`, or to now while running.
    pub duration_ms: u64,
    /// Who asked for the stop, for `stopped` runs.
    pub stopped_by: Option<String>,
    /// Why it failed to start, for spawn errors and abandoned runs.
    pub error: Option<String>,
    /// What it is for, as given when it was started.
    #[serde(default)]
    pub description: Option<String>,
    /// Its project (absent: the default one).
    #[serde(default)]
    pub project: Option<String>,
    /// Port it listens on.
    #[serde(default)]
    pub port: Option<u16>,
    /// `http://NAME.localhost:PORT` when its project's proxy routes to it.
    #[serde(default)]
    pub url: Option<String>,
    /// Its restart policy, and whether it is still applied.
    #[serde(default)]
    pub autorestart: Option<AutorestartState>,
    /// Set when its latest run has ended but the result could not be recorded yet (the disk
    /// is full, say): why. The daemon keeps trying; until then `status` stays the last one
    /// recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unrecorded: Option<String>,
    /// What its latest run last said it is doing (`aside progress` from inside the run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// agent-procs' state: `running` (not ended), `failed` (its restart policy gave up), or
    /// `exited` (ended otherwise, whatever its exit code); `status` says more.
    #[serde(default)]
    pub state: ProcessState,
    /// agent-procs' uptime: whole seconds running (absent once ended).
    #[serde(default)]
    pub uptime_secs: Option<u64>,
    /// agent-procs' restart count (`restarts`), present with a restart policy.
    #[serde(default)]
    pub restart_count: Option<u32>,
    /// agent-procs' restart limit, present with a restart policy that has one.
    #[serde(default)]
    pub max_restarts: Option<u32>,
    /// agent-procs' restart policy (`always`, `on-failure`), present with one.
    #[serde(default)]
    pub restart_policy: Option<String>,
    /// agent-procs' `watched`: true when a file watch restarts it, else absent (`null`).
    #[serde(default)]
    pub watched: Option<bool>,
    /// The cluster job the latest run is, for a run on another executor than this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<Job>,
}

/// Where runs execute. `local` (the default): under a shim on the daemon's machine. `slurm`:
/// as a Slurm batch job that runs the same shim on a compute node, so the run directory (under
/// the state directory) must be on a filesystem the nodes share.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum Executor {
    /// This machine.
    #[default]
    Local,
    /// A Slurm cluster, reached through its commands (`sbatch`, `squeue`, `sacct`, `scancel`)
    /// with the daemon's `SLURM_CONF`.
    Slurm(SlurmResources),
}

impl Executor {
    /// True for [`Executor::Local`] (kept out of specs written before executors existed).
    pub fn is_local(&self) -> bool {
        matches!(self, Executor::Local)
    }

    /// The executor `--on` names: `local`, `slurm` or `slurm:PARTITION`, with the resources
    /// asked for (only for Slurm). Errors say what is accepted.
    pub fn from_on(on: &str, resources: SlurmResources) -> Result<Executor, String> {
        let (kind, partition) = match on.split_once(':') {
            Some((k, p)) => (k, Some(p)),
            None => (on, None),
        };
        match kind {
            "local" if partition.is_none() => {
                if resources != SlurmResources::default() {
                    return Err(
                        "--cpus, --mem, --gpus and --nodes are for a cluster: add --on slurm[:PARTITION]"
                            .into(),
                    );
                }
                Ok(Executor::Local)
            }
            "slurm" => {
                if partition.is_some_and(|p| p.is_empty()) {
                    return Err(
                        "--on slurm: needs a partition after the colon, e.g. --on slurm:gpu".into(),
                    );
                }
                Ok(Executor::Slurm(SlurmResources {
                    partition: partition.map(str::to_string),
                    ..resources
                }))
            }
            _ => Err(format!(
                "unknown executor {on:?}: use local, slurm or slurm:PARTITION"
            )),
        }
    }

    /// How `--on` would name it: `local`, `slurm`, `slurm:PARTITION`.
    pub fn on(&self) -> String {
        match self {
            Executor::Local => "local".into(),
            Executor::Slurm(r) => match &r.partition {
                Some(p) => format!("slurm:{p}"),
                None => "slurm".into(),
            },
        }
    }
}

/// What a Slurm job asks for; each absent field is the cluster's default (`sbatch`'s options
/// of the same names).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlurmResources {
    /// `--partition`; the cluster's default partition when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// `--cpus-per-task`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// `--mem`, in MiB (per node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_mib: Option<u64>,
    /// `--gpus`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
    /// `--nodes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<u32>,
}

/// A run as a cluster job: which, and what its scheduler says of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Job {
    /// The executor (`slurm`).
    pub executor: String,
    /// The scheduler's job id.
    pub id: String,
    /// The scheduler's state, as it names it (`PENDING`, `RUNNING`, `COMPLETED`, `TIMEOUT`, …).
    #[serde(default)]
    pub state: Option<String>,
    /// Why it waits or how it ended, as the scheduler says (`Resources`, `Priority`, …).
    #[serde(default)]
    pub reason: Option<String>,
    /// The node(s) it runs on.
    #[serde(default)]
    pub node: Option<String>,
}

/// What a running command says it is doing now (protoCLI's progress emitter, Claude Code's task
/// progress): reported from inside the run with `aside progress TEXT [--json DATA]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Progress {
    /// One line, e.g. `round 3: running tests` (at most 1000 characters).
    pub text: String,
    /// Structured detail of the command's choosing: a JSON object (at most 4 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Map<String, serde_json::Value>>,
    /// When it was reported.
    pub at: Timestamp,
}

/// `POST /v1/runs/{run_id}/progress`: a progress report from inside run `run_id`, which
/// proves where it comes from with the run's own token (`$ASIDE_RUN_TOKEN`, set by aside in
/// the run's environment).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgressRequest {
    /// The run's token.
    pub token: String,
    /// What it is doing now.
    pub text: String,
    /// Structured detail: a JSON object.
    #[serde(default)]
    pub data: Option<serde_json::Map<String, serde_json::Value>>,
}

/// How a process's restart policy stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AutorestartState {
    /// The policy's mode.
    pub mode: Autorestart,
    /// Restarts in a row so far (reset by a stable run, a manual restart or a watch restart).
    pub attempts: u32,
    /// The policy's limit (absent: unlimited).
    pub max_restarts: Option<u32>,
    /// Whether the policy still applies.
    pub state: RestartState,
}

/// Whether a process's restart policy still applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RestartState {
    /// Restarts happen as the policy says.
    #[default]
    Active,
    /// A manual stop turned them off (`restart` or `up` turns them on again).
    Disabled,
    /// `max_restarts` was reached: the process stays ended.
    Exhausted,
}

impl RestartState {
    /// The snake_case name used on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartState::Active => "active",
            RestartState::Disabled => "disabled",
            RestartState::Exhausted => "exhausted",
        }
    }

    /// Inverse of [`RestartState::as_str`]; `None` for an unknown name.
    pub fn parse(s: &str) -> Option<RestartState> {
        [
            RestartState::Active,
            RestartState::Disabled,
            RestartState::Exhausted,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// agent-procs' three states of a process (its `status --json` `state`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProcessState {
    /// Not ended.
    #[default]
    Running,
    /// Ended (any exit code, a signal, a stop).
    Exited,
    /// Ended and its restart policy gave up (agent-procs' `FAILED`).
    Failed,
}

impl ProcessInfo {
    /// `PROJECT/NAME`, or the name alone in the default project: how to refer to it.
    pub fn reference(&self) -> String {
        match &self.project {
            Some(p) => format!("{p}/{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// A bounded extract of a run's output: its head and tail, with the bytes between them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct OutputSummary {
    /// First bytes of the interleaved output (lossy UTF-8).
    pub head: String,
    /// Last bytes of the interleaved output (lossy UTF-8); empty when `head` holds it all.
    pub tail: String,
    /// Bytes between `head` and `tail`, whether dropped by the log cap or just not shown.
    pub elided_bytes: u64,
    /// Bytes written to stdout.
    pub stdout_bytes: u64,
    /// Bytes written to stderr.
    pub stderr_bytes: u64,
}

/// The structured record of a terminal run.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RunResult {
    /// Run id.
    pub run_id: RunId,
    /// Process id.
    pub process_id: ProcessId,
    /// Process name.
    pub name: String,
    /// Owner.
    pub owner: String,
    /// Team.
    pub team: Option<String>,
    /// The command, on one line.
    pub command: String,
    /// Working directory.
    pub cwd: String,
    /// Terminal status.
    pub status: Status,
    /// Exit code, when it exited normally.
    pub exit_code: Option<i32>,
    /// Signal name, when a signal ended it.
    pub signal: Option<String>,
    /// Start time.
    pub started_at: Timestamp,
    /// End time.
    pub ended_at: Timestamp,
    /// `ended_at − started_at` in ms.
    pub duration_ms: u64,
    /// Who stopped it, for `stopped`.
    pub stopped_by: Option<String>,
    /// Spawn error or abandonment reason.
    pub error: Option<String>,
    /// Head and tail of the output.
    pub output: OutputSummary,
    /// Directory holding the run's logs.
    pub log_dir: String,
}

/// A result waiting in its owner's inbox until acknowledged. Its id is the run id: one per run.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Notification {
    /// Notification id (equal to the run id).
    pub id: RunId,
    /// Addressee.
    pub owner: String,
    /// When the run's result was recorded.
    pub created_at: Timestamp,
    /// When it was acknowledged, if it was.
    pub acked_at: Option<Timestamp>,
    /// Since when a resumed host session is being given it (a wake in flight): hooks and MCP
    /// answers do not deliver it again meanwhile; it is acknowledged when that turn ends well,
    /// and pending again when it fails.
    #[serde(default)]
    pub delivering_since: Option<Timestamp>,
    /// The result.
    pub result: RunResult,
}

/// `POST /v1/processes/{ref}/stop`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StopRequest {
    /// First signal to send (default `SIGTERM`), e.g. `SIGINT`, `INT` or `2`.
    #[serde(default)]
    pub signal: Option<String>,
    /// Grace before SIGKILL, in ms (default: the process's own).
    #[serde(default)]
    pub grace_ms: Option<u64>,
}

/// `POST /v1/stop-all`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StopAllRequest {
    /// Only this owner's processes.
    #[serde(default)]
    pub owner: Option<String>,
}

/// Answer of stop-all: the processes it stopped, in their final state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct StopAllResponse {
    /// Final state of each stopped process.
    pub stopped: Vec<ProcessInfo>,
    /// Live processes left running because the requester may not stop them.
    pub refused: Vec<String>,
}

/// Which streams a log read covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StreamFilter {
    /// Standard output (and `aside` annotations).
    #[default]
    Stdout,
    /// Standard error (and `aside` annotations).
    Stderr,
    /// Both, interleaved in arrival order.
    All,
}

impl StreamFilter {
    /// The wire name: `stdout`, `stderr` or `all` (the `stream` query parameter).
    pub fn as_str(self) -> &'static str {
        match self {
            StreamFilter::Stdout => "stdout",
            StreamFilter::Stderr => "stderr",
            StreamFilter::All => "all",
        }
    }
}

/// Where a piece of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    /// The process's stdout.
    Stdout,
    /// The process's stderr.
    Stderr,
    /// An annotation written by `aside` itself (`[aside] timed out after 30s: …`).
    Aside,
}

/// `GET /v1/processes/{ref}/logs` query.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct LogQuery {
    /// Streams to read.
    #[serde(default)]
    pub stream: StreamFilter,
    /// Last N lines only.
    #[serde(default)]
    pub tail: Option<usize>,
    /// First N lines only.
    #[serde(default)]
    pub head: Option<usize>,
    /// Start after this cursor (from an earlier read); non-consuming and resumable.
    #[serde(default)]
    pub since: Option<u64>,
    /// Only lines matching this regex.
    #[serde(default)]
    pub grep: Option<String>,
    /// Keep the response open and stream new entries as NDJSON until the run ends.
    #[serde(default)]
    pub follow: bool,
    /// A specific run of the process (default: its latest).
    #[serde(default)]
    pub run: Option<String>,
}

/// One entry of a log read: a line, or the marker of a gap left by the log cap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LogEntry {
    /// A line (or the unterminated end of one), without its newline, rendered lossily.
    Line {
        /// Stream it was written to.
        stream: LogStream,
        /// When the chunk holding it was read.
        ts: Timestamp,
        /// Position just after this line; pass as `since` to continue.
        cursor: u64,
        /// The text.
        text: String,
    },
    /// Output dropped by the log cap between head and tail.
    Elided {
        /// How many bytes of output are missing here.
        bytes: u64,
        /// Position just after the gap.
        cursor: u64,
    },
}

/// Answer of a (non-follow) log read.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LogsResponse {
    /// The run read.
    pub run_id: RunId,
    /// Entries, oldest first.
    pub entries: Vec<LogEntry>,
    /// Cursor to pass as `since` to read only what comes next.
    pub cursor: u64,
    /// True when the run has ended: nothing more will be written.
    pub complete: bool,
}

/// `GET /v1/processes/{ref}/wait` query.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct WaitQuery {
    /// Output pattern to wait for (substring, or regex with `regex`).
    #[serde(default)]
    pub until: Option<String>,
    /// Treat `until` as a regex.
    #[serde(default)]
    pub regex: bool,
    /// Give up after this many ms.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WaitOutcome {
    /// The pattern was seen.
    Matched,
    /// The run ended (its output fully captured).
    Exited,
    /// The run ended without the pattern appearing.
    ExitedWithoutMatch,
    /// The timeout passed first.
    TimedOut,
}

/// Answer of a wait.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WaitResponse {
    /// How the wait ended.
    pub outcome: WaitOutcome,
    /// The process as the wait ended.
    pub process: ProcessInfo,
    /// The line that matched, for `matched`.
    pub line: Option<String>,
    /// The result, when the run ended.
    pub result: Option<RunResult>,
}

/// What an [`Event`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A run was queued by a cluster's scheduler: [`EventData::RunQueued`].
    RunQueued,
    /// A run started (or failed to): [`EventData::RunStarted`].
    RunStarted,
    /// A run became ready: [`EventData::RunReady`].
    RunReady,
    /// A run reported progress: [`EventData::RunProgress`].
    RunProgress,
    /// A run ended: [`EventData::RunExited`].
    RunExited,
    /// A process's restart policy gave up: [`EventData::RestartsExhausted`].
    RestartsExhausted,
    /// A result entered its owner's inbox: [`EventData::NotificationCreated`].
    NotificationCreated,
    /// A result was read: [`EventData::NotificationAcked`].
    NotificationAcked,
}

impl EventKind {
    /// The snake_case name (the SSE `event:` field).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::RunQueued => "run_queued",
            EventKind::RunStarted => "run_started",
            EventKind::RunReady => "run_ready",
            EventKind::RunProgress => "run_progress",
            EventKind::RunExited => "run_exited",
            EventKind::RestartsExhausted => "restarts_exhausted",
            EventKind::NotificationCreated => "notification_created",
            EventKind::NotificationAcked => "notification_acked",
        }
    }

    /// Inverse of [`EventKind::as_str`].
    pub fn parse(s: &str) -> Option<EventKind> {
        [
            EventKind::RunQueued,
            EventKind::RunStarted,
            EventKind::RunReady,
            EventKind::RunProgress,
            EventKind::RunExited,
            EventKind::RestartsExhausted,
            EventKind::NotificationCreated,
            EventKind::NotificationAcked,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// Why a daemon is stopping: the last Server-Sent Event of every `/v1/events` stream
/// (`event: daemon_stopping`, data `{"reason": "signal", "signal": "SIGTERM"}`). It is not in the
/// event log and has no id, so a client that reconnects with `Last-Event-ID` misses nothing. A
/// daemon that dies without stopping (`kill -9`) sends nothing: the stream just breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum DaemonStopping {
    /// Asked to (`aside daemon stop`, `POST /v1/daemon/stop`).
    Requested,
    /// A signal (`SIGTERM`, `SIGINT`).
    Signal {
        /// Its name, e.g. `SIGTERM`.
        signal: String,
    },
    /// Nothing ran and nobody watched for its idle timeout (`ASIDE_IDLE_TIMEOUT`).
    Idle {
        /// The idle timeout, ms.
        idle_timeout_ms: u64,
    },
}

impl DaemonStopping {
    /// The name of its Server-Sent Event.
    pub const EVENT: &'static str = "daemon_stopping";
}

impl fmt::Display for DaemonStopping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaemonStopping::Requested => {
                write!(f, "the daemon was asked to stop (aside daemon stop)")
            }
            DaemonStopping::Signal { signal } => write!(f, "the daemon stopped on {signal}"),
            DaemonStopping::Idle { idle_timeout_ms } => write!(
                f,
                "the daemon stopped after {} s with nothing running",
                idle_timeout_ms / 1000
            ),
        }
    }
}

/// What an event says, by kind: each variant carries what a client needs to update its view
/// from that event alone — for run events, the process as it stands after the change. On the
/// wire: `"kind": "run_exited", "data": {…}` beside the [`Event`]'s other fields. A client that
/// meets a kind it does not know (a newer daemon) logs it and goes on.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
// An event is built once and moved to its readers; boxing the process would only add an
// allocation per event.
#[allow(clippy::large_enum_variant)]
pub enum EventData {
    /// A run waits in a cluster's queue (Slurm's PENDING), or its reason for waiting changed.
    RunQueued {
        /// The process after the change (`job` says which job and why it waits).
        process: ProcessInfo,
    },
    /// A run started (or failed to start).
    RunStarted {
        /// The process after the change.
        process: ProcessInfo,
    },
    /// A run became ready (its readiness probe passed).
    RunReady {
        /// The process after the change.
        process: ProcessInfo,
    },
    /// A run reported progress (at most every 250 ms per run; the latest wins).
    RunProgress {
        /// The process after the change (its `progress` is the latest report).
        process: ProcessInfo,
    },
    /// A run ended, by itself or not.
    RunExited {
        /// The process after the change (its status is the run's terminal one).
        process: ProcessInfo,
        /// The run's result.
        result: RunResult,
    },
    /// A process's restart policy reached `max_restarts` after a run ended: it stays ended
    /// (pm2's "errored", supervisord's FATAL).
    RestartsExhausted {
        /// The process after the change (its `autorestart.state` is `exhausted`).
        process: ProcessInfo,
    },
    /// A result entered its owner's inbox.
    NotificationCreated {
        /// The notification (run) id.
        id: RunId,
        /// Its owner.
        owner: String,
    },
    /// A result was read (acknowledged).
    NotificationAcked {
        /// The notification (run) id.
        id: RunId,
        /// Its owner.
        owner: String,
        /// The process after the change (a listing of unread results no longer holds it),
        /// when it is still known.
        #[serde(default)]
        process: Option<ProcessInfo>,
    },
}

impl EventData {
    /// Its kind.
    pub fn kind(&self) -> EventKind {
        match self {
            EventData::RunQueued { .. } => EventKind::RunQueued,
            EventData::RunStarted { .. } => EventKind::RunStarted,
            EventData::RunReady { .. } => EventKind::RunReady,
            EventData::RunProgress { .. } => EventKind::RunProgress,
            EventData::RunExited { .. } => EventKind::RunExited,
            EventData::RestartsExhausted { .. } => EventKind::RestartsExhausted,
            EventData::NotificationCreated { .. } => EventKind::NotificationCreated,
            EventData::NotificationAcked { .. } => EventKind::NotificationAcked,
        }
    }

    /// The process after the change, for the events that carry it.
    pub fn process(&self) -> Option<&ProcessInfo> {
        match self {
            EventData::RunQueued { process }
            | EventData::RunStarted { process }
            | EventData::RunReady { process }
            | EventData::RunProgress { process }
            | EventData::RestartsExhausted { process }
            | EventData::RunExited { process, .. } => Some(process),
            EventData::NotificationAcked { process, .. } => process.as_ref(),
            EventData::NotificationCreated { .. } => None,
        }
    }
}

/// One entry of the daemon's event log, as streamed by `GET /v1/events` (SSE `id:` is `seq`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Event {
    /// Position in the event log; increases by one per event.
    pub seq: u64,
    /// When it happened.
    pub ts: Timestamp,
    /// The process concerned.
    pub process_id: Option<ProcessId>,
    /// The run concerned.
    pub run_id: Option<RunId>,
    /// The owner concerned.
    pub owner: Option<String>,
    /// What happened (`kind` and `data`).
    #[serde(flatten)]
    pub data: EventData,
}

impl Event {
    /// What kind of event it is.
    pub fn kind(&self) -> EventKind {
        self.data.kind()
    }

    /// The process after the change, for the events that carry it.
    pub fn process(&self) -> Option<&ProcessInfo> {
        self.data.process()
    }
}

/// What to do when a result arrives for an owner that is idle: run a command (argv, never a
/// shell string built from data) with the pending results as JSON on stdin, POST them as the
/// body to an `http://` webhook, or resume the owner's agent-host session with them as its
/// prompt. Exactly one of `command`, `webhook` and `host`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WakeAction {
    /// The owner it wakes (set from the URL).
    #[serde(default)]
    pub owner: String,
    /// Program and arguments.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// An `http://` URL.
    #[serde(default)]
    pub webhook: Option<String>,
    /// Resume the owner's recorded [`HostSession`] of this host non-interactively (in its cwd,
    /// the results as the prompt), once the session's host process has ended.
    #[serde(default)]
    pub host: Option<AgentHost>,
    /// The owner counts as idle after this long without API requests (ms, default 60000).
    #[serde(default)]
    pub idle_after_ms: Option<u64>,
}

/// An agent host whose sessions `aside` knows how to name and resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AgentHost {
    /// Claude Code (`claude`): sessions resumed with `claude -p --resume ID`.
    ClaudeCode,
    /// Codex CLI (`codex`): threads resumed with `codex exec resume ID -`.
    Codex,
    /// Gemini CLI (`gemini`): sessions resumed with `gemini --resume ID -p …`.
    Gemini,
}

impl AgentHost {
    /// Every host, for listings and parsing.
    pub const ALL: [AgentHost; 3] = [AgentHost::ClaudeCode, AgentHost::Codex, AgentHost::Gemini];

    /// The wire name: `claude-code`, `codex`, `gemini`.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentHost::ClaudeCode => "claude-code",
            AgentHost::Codex => "codex",
            AgentHost::Gemini => "gemini",
        }
    }

    /// The host's own name, for messages: `Claude Code`, `Codex`, `Gemini CLI`.
    pub fn title(self) -> &'static str {
        match self {
            AgentHost::ClaudeCode => "Claude Code",
            AgentHost::Codex => "Codex",
            AgentHost::Gemini => "Gemini CLI",
        }
    }

    /// Parses a wire name; `claude` is accepted for `claude-code`.
    pub fn parse(s: &str) -> Option<AgentHost> {
        match s {
            "claude" => Some(AgentHost::ClaudeCode),
            _ => AgentHost::ALL.into_iter().find(|h| h.as_str() == s),
        }
    }
}

impl fmt::Display for AgentHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The agent-host session an owner speaks for: recorded by `aside mcp` and `aside hook` so a
/// wake can resume that very session. `PUT /v1/owners/{owner}/session`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostSession {
    /// The owner (set from the URL).
    #[serde(default)]
    pub owner: String,
    /// Which host.
    pub host: AgentHost,
    /// The host's session (Claude Code, Gemini CLI) or thread (Codex) id.
    pub session_id: String,
    /// The session's working directory (hosts find sessions by it).
    pub cwd: String,
    /// The argv prefix that starts this host (its executable, and for a script its
    /// interpreter first); empty: the host's usual name on `PATH`.
    #[serde(default)]
    pub program: Vec<String>,
    /// The host's own settings from its environment (config directory, API endpoint and key),
    /// so a resumed session talks to the same place; only the variables the host reads.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Pid of the host process while the session is open.
    #[serde(default)]
    pub pid: Option<u32>,
    /// That process's start time (clock ticks since boot, `/proc/PID/stat` field 22): pids
    /// are reused.
    #[serde(default)]
    pub pid_start: Option<u64>,
    /// When it was recorded (set by the daemon).
    #[serde(default)]
    pub updated_at: Option<Timestamp>,
}

/// What a wake action receives (stdin of the command, body of the webhook).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WakePayload {
    /// The owner being woken.
    pub owner: String,
    /// Its pending results, oldest first (acknowledge them to stop further wakes).
    pub notifications: Vec<Notification>,
}

/// `GET /v1/owners/{owner}/inbox` answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct InboxResponse {
    /// Unacknowledged notifications, oldest first.
    pub notifications: Vec<Notification>,
}

/// `POST /v1/owners/{owner}/inbox/ack`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    /// Notification ids to acknowledge.
    #[serde(default)]
    pub ids: Vec<String>,
    /// Acknowledge every pending notification of the owner.
    #[serde(default)]
    pub all: bool,
}

/// Answer of an ack: the notifications acknowledged now.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct AckResponse {
    /// Acknowledged notifications.
    pub acked: Vec<Notification>,
}

/// `POST /v1/owners/{owner}/inbox/take`: what a front end that shows results to a model asks
/// for. Picks the owner's deliverable results (oldest first, those no resumed host session is
/// being given) within `max_bytes` of rendered `<task-notification>` text, and acknowledges
/// them together with `ack` in one step, so two callers never show the same result.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TakeRequest {
    /// Bound on the rendered blocks taken, in bytes (at least one is taken however long);
    /// none: all.
    #[serde(default)]
    pub max_bytes: Option<usize>,
    /// Results the caller showed by itself (a foreground `run`'s own): acknowledged, not
    /// returned.
    #[serde(default)]
    pub ack: Vec<String>,
}

/// Answer of a take: the results to show now (acknowledged already), and how many more wait.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct TakeResponse {
    /// Results to show, oldest first.
    pub notifications: Vec<Notification>,
    /// Deliverable results left for a later take.
    pub more: usize,
}

/// `GET /v1/daemon` answer.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DaemonStatus {
    /// Daemon pid.
    pub pid: u32,
    /// [`PROTOCOL_VERSION`] of the daemon.
    pub protocol: u32,
    /// Daemon version (crate version).
    pub version: String,
    /// State directory.
    pub state_dir: String,
    /// Socket path.
    pub socket: String,
    /// When it started.
    pub started_at: Timestamp,
    /// Live (not terminal) processes.
    pub live_processes: usize,
    /// Idle time after which it exits with nothing running, in ms (0: never).
    pub idle_timeout_ms: u64,
}

/// `GET /v1/processes?all&owner&team&project`: which processes to list (default: the live
/// ones and the latest run of each ended one the requester may see).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct ListQuery {
    /// Every run kept, not only each process's latest.
    #[serde(default)]
    pub all: bool,
    /// Only this owner's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Only this team's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Only this project's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
}

/// `GET /v1/events?owner&kind&since`: which events to stream.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct EventsQuery {
    /// Only this owner's events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Only these kinds, comma-separated (`run_started,run_exited,…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Replay from after this sequence number (`Last-Event-ID` wins); default: only new ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
}

/// `GET /v1/version` answer (also unversioned clients may ask it).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct VersionInfo {
    /// [`PROTOCOL_VERSION`] of the daemon.
    pub protocol: u32,
    /// Daemon version (crate version).
    pub version: String,
}

/// `POST /v1/daemon/stop` answer: the daemon stops once it has answered.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DaemonStopAnswer {
    /// Always true: it is stopping.
    pub stopping: bool,
    /// The stopping daemon's pid.
    pub pid: u32,
}

/// `DELETE /v1/owners/{owner}/wake` answer.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WakeCleared {
    /// The owner.
    pub owner: String,
    /// Whether it had a wake action to remove.
    pub cleared: bool,
}

/// `POST /v1/owners/{owner}/idle` answer.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct IdleMarked {
    /// The owner.
    pub owner: String,
    /// Always true: it is marked idle (its wake action may fire).
    pub idle: bool,
}

/// `POST /v1/runs/{run_id}/progress` answer.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ProgressRecorded {
    /// The run.
    pub run_id: RunId,
    /// Always true: kept as the run's latest report.
    pub recorded: bool,
}

/// `GET /v1/whoami` answer: who the daemon takes the requester for.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Whoami {
    /// The owner requests act as.
    pub owner: String,
    /// Their team, if any.
    pub team: Option<String>,
    /// A read-only member token: it changes nothing.
    pub read_only: bool,
    /// How the request came: `socket`, `web` (the dashboard token) or `token:ID`.
    pub via: String,
    /// Whether a member token authenticated it.
    pub member: bool,
}

/// `POST /v1/projects/{project}/up`: start a project's processes in dependency order.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpRequest {
    /// Absolute path of the config file it came from (shown by `session list`).
    #[serde(default)]
    pub config: Option<String>,
    /// Every process of the project, each with its `name` (and `depends_on`, `digest`).
    pub processes: Vec<RunRequest>,
    /// Start only these, and what they depend on (agent-procs' `--only`); empty: all.
    #[serde(default)]
    pub only: Vec<String>,
    /// Run the project's reverse proxy.
    #[serde(default)]
    pub proxy: bool,
    /// Pin the proxy to this port (default: the first free one in 9090–9190).
    #[serde(default)]
    pub proxy_port: Option<u16>,
}

/// Where one process of an `up` stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UpState {
    /// Already running with the same configuration: left alone.
    Unchanged,
    /// Waiting for its dependencies (`detail` names them).
    Waiting,
    /// Started (or restarted because its configuration changed); waiting to be ready.
    Starting,
    /// Running, and it has no readiness probe.
    Running,
    /// Its readiness probe passed.
    Ready,
    /// It has no readiness probe and had already ended with exit status 0 when `up` looked (a
    /// one-shot step: a migration, a build). Counted as up, as agent-procs counts a started
    /// process and process-compose a `Completed` one.
    Completed,
    /// It exited or could not be started (`detail` says how).
    Failed,
    /// It did not get ready within its probe's timeout; it is left running.
    NotReady,
    /// Not started, because a dependency failed or did not get ready.
    Skipped,
}

impl UpState {
    /// The snake_case name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            UpState::Unchanged => "unchanged",
            UpState::Waiting => "waiting",
            UpState::Starting => "starting",
            UpState::Running => "running",
            UpState::Ready => "ready",
            UpState::Completed => "completed",
            UpState::Failed => "failed",
            UpState::NotReady => "not_ready",
            UpState::Skipped => "skipped",
        }
    }

    /// True once the process will not move on in this `up`.
    pub fn is_settled(self) -> bool {
        !matches!(self, UpState::Waiting | UpState::Starting)
    }

    /// True for the states `up` counts as success.
    pub fn is_ok(self) -> bool {
        matches!(
            self,
            UpState::Unchanged | UpState::Running | UpState::Ready | UpState::Completed
        )
    }
}

/// One line of the NDJSON stream answering an `up`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum UpMessage {
    /// The project's proxy listens on `127.0.0.1:port`.
    Proxy {
        /// The port.
        port: u16,
    },
    /// A process moved on.
    Process {
        /// Its name.
        name: String,
        /// Where it stands.
        state: UpState,
        /// What it waits on, or why it failed.
        #[serde(default)]
        detail: Option<String>,
        /// The process, once it exists.
        #[serde(default)]
        process: Option<Box<ProcessInfo>>,
    },
    /// Every process settled; `failed` names those that failed, did not get ready or were skipped.
    Done {
        /// Names of the processes that did not come up.
        failed: Vec<String>,
    },
}

/// One project, as `session list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ProjectInfo {
    /// Project name.
    pub name: String,
    /// Config file of its last `up`.
    pub config: Option<String>,
    /// Port of its reverse proxy, while it runs.
    pub proxy_port: Option<u16>,
    /// Processes not yet terminal.
    pub live: usize,
    /// Processes known (live or not).
    pub processes: usize,
}

/// `POST /v1/tokens` (local socket only): a bearer token for a team member on the TCP listener.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The owner the token acts as; requests made with it are that owner's (never `human`).
    pub owner: String,
    /// The owner's team: the member also sees the team's running processes.
    #[serde(default)]
    pub team: Option<String>,
    /// Only reads (list, logs, results, events): every change is refused.
    #[serde(default)]
    pub read_only: bool,
}

/// One member token as `aside token list` shows it; the secret itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TokenInfo {
    /// Short public id, for `aside token revoke ID`.
    pub id: String,
    /// The owner it acts as.
    pub owner: String,
    /// The owner's team.
    pub team: Option<String>,
    /// Whether it may only read.
    pub read_only: bool,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it was last accepted.
    pub last_used_at: Option<Timestamp>,
    /// When it was revoked; a revoked token is refused.
    pub revoked_at: Option<Timestamp>,
}

/// Answer to `POST /v1/tokens`: the secret (shown once) and its record.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TokenCreated {
    /// The bearer token: `Authorization: Bearer …`, or `ASIDE_TOKEN` for `--remote`.
    pub token: String,
    /// Its record.
    pub info: TokenInfo,
}

/// `POST /v1/web` (local socket only): start the dashboard's listener if needed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebRequest {
    /// Port on 127.0.0.1; `None`: the listener's current port, else the default.
    #[serde(default)]
    pub port: Option<u16>,
}

/// Where the dashboard is: `url` carries the dashboard token once (it becomes a cookie).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WebInfo {
    /// `http://127.0.0.1:PORT/?token=…`.
    pub url: String,
    /// The TCP port on 127.0.0.1.
    pub port: u16,
}

/// CPU and memory of one process's whole tree (the command and every descendant), sampled
/// from `/proc`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ProcessStats {
    /// The process id.
    pub id: String,
    /// CPU use since the previous sample, in percent of one core (may exceed 100).
    pub cpu_percent: f64,
    /// Resident memory of the tree in bytes.
    pub memory_bytes: u64,
    /// Processes in the tree.
    pub tasks: u32,
}

/// Machine-readable error kinds; each maps to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No such process, run or notification (404; CLI exit 2).
    NotFound,
    /// The request is malformed or names something invalid (400).
    InvalidRequest,
    /// It clashes with current state, e.g. a name in use (409).
    Conflict,
    /// The requester may not do this (403).
    Forbidden,
    /// Client and daemon speak different protocol versions (400).
    ProtocolMismatch,
    /// The feature is not built yet (501).
    NotSupported,
    /// Anything else (500).
    Internal,
}

/// Error body of every non-2xx answer: `{"error": {"code": …, "message": …}}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ApiError,
}

/// An error: a kind plus one sentence saying what is wrong and what to do.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ApiError {
    /// Kind.
    pub code: ErrorCode,
    /// What happened, to what, and what to do next.
    pub message: String,
}

/// JSON Schemas of the documented `--json` outputs, by name (`status`, `result`, …).
pub fn schemas() -> Vec<(&'static str, serde_json::Value)> {
    fn s<T: JsonSchema>() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(T)).unwrap_or_default()
    }
    vec![
        ("status", s::<Vec<ProcessInfo>>()),
        ("process", s::<ProcessInfo>()),
        ("result", s::<RunResult>()),
        ("notification", s::<Notification>()),
        ("inbox", s::<InboxResponse>()),
        ("log-entry", s::<LogEntry>()),
        ("logs", s::<LogsResponse>()),
        ("wait", s::<WaitResponse>()),
        ("run-request", s::<RunRequest>()),
        ("up-request", s::<UpRequest>()),
        ("up-message", s::<UpMessage>()),
        ("projects", s::<Vec<ProjectInfo>>()),
        ("event", s::<Event>()),
        ("wake-action", s::<WakeAction>()),
        ("wake-payload", s::<WakePayload>()),
        ("host-session", s::<HostSession>()),
        ("token", s::<TokenInfo>()),
        ("token-created", s::<TokenCreated>()),
        ("web", s::<WebInfo>()),
        ("stats", s::<Vec<ProcessStats>>()),
        ("error", s::<ErrorBody>()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_round_trip() {
        for st in Status::ALL {
            assert_eq!(Status::parse(st.as_str()), Some(st));
            let json = serde_json::to_string(&st).unwrap();
            assert_eq!(json, format!("\"{}\"", st.as_str()));
        }
        assert_eq!(Status::parse("killed"), None);
    }

    #[test]
    fn command_accepts_string_or_argv() {
        let c: Command = serde_json::from_str(r#"["ls","-l"]"#).unwrap();
        assert_eq!(c, Command::Argv(vec!["ls".into(), "-l".into()]));
        assert_eq!(c.display(), "ls -l");
    }

    #[test]
    fn every_schema_generates() {
        for (name, schema) in schemas() {
            assert!(schema.is_object(), "{name}");
        }
    }
}
