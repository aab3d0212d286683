//! `Store`: the daemon's SQLite state (bundled SQLite, WAL, one writer).
//!
//! Holds processes, their runs, and the inbox. Migrations are hand-written and versioned with
//! `PRAGMA user_version`; the file is marked with `PRAGMA application_id` so `aside` refuses a
//! database that belongs to something else instead of overwriting it.
//!
//! Exactly-once results: [`Store::finish_run`] writes a run's terminal state, its result and
//! its inbox notification in one transaction, and only while the run is not yet terminal. Any
//! number of callers (the live exit path, reconcile after a crash) can race to finish a run;
//! exactly one notification exists afterwards.

use std::path::Path;

use aside_proto::{
    Autorestart, AutorestartState, Event, EventData, EventKind, HostSession, Job, Notification,
    ProcessId, ProcessInfo, ProcessState, Progress, ProjectInfo, RestartState, RunId, RunResult,
    Spec, Status, TokenInfo, TokenRequest, WakeAction,
};
use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::proc::signal_name;

/// `PRAGMA application_id` of an aside database ("asid").
pub const APPLICATION_ID: i32 = 0x6173_6964;

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE processes (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    owner       TEXT NOT NULL,
    team        TEXT,
    command     TEXT NOT NULL,
    cwd         TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
-- The spec holds the whole environment (kilobytes): kept apart so listing reads small rows.
CREATE TABLE specs (
    process_id  TEXT PRIMARY KEY REFERENCES processes(id) ON DELETE CASCADE,
    spec        TEXT NOT NULL
);
CREATE INDEX processes_name ON processes(name);
CREATE TABLE runs (
    id              TEXT PRIMARY KEY,
    process_id      TEXT NOT NULL REFERENCES processes(id) ON DELETE CASCADE,
    seq             INTEGER NOT NULL,
    status          TEXT NOT NULL,
    pid             INTEGER,
    exit_code       INTEGER,
    signal          INTEGER,
    started_at      INTEGER NOT NULL,
    ended_at        INTEGER,
    stopped_by      TEXT,
    error           TEXT,
    -- 1 for the newest run of its process (denormalized so listing is one index scan).
    latest          INTEGER NOT NULL DEFAULT 1,
    -- 1 while its notification is unacknowledged (mirrors inbox.acked_at IS NULL).
    unread          INTEGER NOT NULL DEFAULT 0,
    UNIQUE(process_id, seq)
);
CREATE INDEX runs_status ON runs(status);
CREATE INDEX runs_latest ON runs(latest, status);
-- One notification per terminal run; it carries the run's result (JSON RunResult).
CREATE TABLE inbox (
    run_id      TEXT PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
    owner       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    acked_at    INTEGER,
    result      TEXT NOT NULL
);
CREATE INDEX inbox_owner ON inbox(owner, acked_at);
"#,
    r#"
ALTER TABLE processes ADD COLUMN description TEXT;
"#,
    r#"
-- The event log behind GET /v1/events (SSE with Last-Event-ID replay).
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    ts          INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    process_id  TEXT,
    run_id      TEXT,
    owner       TEXT,
    data        TEXT NOT NULL
);
CREATE INDEX events_ts ON events(ts);
"#,
    r#"
-- Wake actions: what to run for an owner that is idle when a result arrives.
CREATE TABLE wake_actions (
    owner       TEXT PRIMARY KEY,
    action      TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
"#,
    r#"
-- Projects (agent-procs sessions): names are unique per project; NULL is the default project.
ALTER TABLE processes ADD COLUMN project TEXT;
ALTER TABLE processes ADD COLUMN port INTEGER;
ALTER TABLE processes ADD COLUMN proxied INTEGER NOT NULL DEFAULT 0;
-- Restart supervision: the policy's mode and limit, restarts in a row, and
-- 'active' | 'disabled' (a manual stop) | 'exhausted' (max_restarts reached).
ALTER TABLE processes ADD COLUMN autorestart TEXT;
ALTER TABLE processes ADD COLUMN max_restarts INTEGER;
ALTER TABLE processes ADD COLUMN restart_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE processes ADD COLUMN restart_state TEXT;
CREATE INDEX processes_project ON processes(project, name);
-- One row per project that was brought `up` ('' is the default project's).
CREATE TABLE projects (
    name        TEXT PRIMARY KEY,
    config      TEXT,
    proxy_port  INTEGER,
    updated_at  INTEGER NOT NULL
);
"#,
    r#"
-- Bearer tokens of team members on the TCP listener: only a SHA-256 of the secret is kept.
CREATE TABLE tokens (
    id            TEXT PRIMARY KEY,
    hash          TEXT NOT NULL UNIQUE,
    owner         TEXT NOT NULL,
    team          TEXT,
    read_only     INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER,
    revoked_at    INTEGER
);
"#,
    r#"
-- The agent-host session each owner speaks for (JSON HostSession), recorded by `aside mcp`
-- and `aside hook`, so a wake can resume that very session.
CREATE TABLE host_sessions (
    owner       TEXT PRIMARY KEY,
    session     TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);
-- A wake that resumes a host session holds the notifications it carries until that turn ends:
-- since when, and the resumed host process (pid and start time), which outlives a daemon.
ALTER TABLE inbox ADD COLUMN delivering_since INTEGER;
ALTER TABLE inbox ADD COLUMN delivering_pid INTEGER;
ALTER TABLE inbox ADD COLUMN delivering_start INTEGER;
"#,
    r#"
-- Idempotency keys of `run` requests: a retry with the same key and owner gets the same process.
CREATE TABLE idempotency (
    owner       TEXT NOT NULL,
    key         TEXT NOT NULL,
    process_id  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (owner, key)
);
"#,
    r#"
-- What a run says it is doing: the latest report on the run (JSON Progress), and the history.
ALTER TABLE runs ADD COLUMN progress TEXT;
CREATE TABLE progress (
    run_id  TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    ts      INTEGER NOT NULL,
    report  TEXT NOT NULL
);
CREATE INDEX progress_run ON progress(run_id, ts);
"#,
    // 10: whether a process is restarted by a file watch (agent-procs' `watched` in listings),
    // kept beside the spec so a listing need not read specs.
    r#"
ALTER TABLE processes ADD COLUMN watched INTEGER NOT NULL DEFAULT 0;
UPDATE processes SET watched = 1 WHERE id IN
    (SELECT process_id FROM specs WHERE json_extract(spec, '$.watch') IS NOT NULL);
"#,
    // 11: the cluster job a run is (JSON `Job`: executor, job id, the scheduler's state).
    r#"
ALTER TABLE runs ADD COLUMN job TEXT;
"#,
    // 12: a spec's environment (most of a spec's bytes, and mostly the same from one process
    // to the next: its client's) is kept once per content, by the SHA-256 of its JSON, and
    // the spec refers to it. Specs written before keep their environment inline
    // (`env_hash` NULL).
    r#"
CREATE TABLE envs (
    hash  TEXT PRIMARY KEY,
    env   TEXT NOT NULL
) WITHOUT ROWID;
ALTER TABLE specs ADD COLUMN env_hash TEXT REFERENCES envs(hash);
CREATE INDEX specs_env ON specs(env_hash) WHERE env_hash IS NOT NULL;
"#,
];

/// SQL test of a run that is not terminal.
const LIVE: &str = "r.status IN ('queued', 'starting', 'running', 'ready')";

/// Notifications held by one wake delivery: the resumed host process being given them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Their owner.
    pub owner: String,
    /// The resumed host process, once it started.
    pub pid: Option<u32>,
    /// Its start time (clock ticks since boot).
    pub start: Option<u64>,
    /// Notification (run) ids.
    pub ids: Vec<String>,
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file is not an aside database (another program's, or not SQLite at all).
    #[error(
        "{path} is not an aside database ({why}); refusing to touch it: move it away or set ASIDE_HOME to another directory"
    )]
    Foreign {
        /// The database path.
        path: String,
        /// What gave it away.
        why: String,
    },
    /// The database was written by a newer aside.
    #[error(
        "{path} has schema version {found}, newer than this aside knows ({known}): upgrade aside"
    )]
    TooNew {
        /// The database path.
        path: String,
        /// Its version.
        found: i64,
        /// Ours.
        known: i64,
    },
    /// The file is an aside database, but damaged.
    #[error(
        "{path} is damaged ({why}); refusing to use or change it: move it aside and start with `aside daemon start --recover`, which rebuilds the state from the run directories"
    )]
    Damaged {
        /// The database path.
        path: String,
        /// What the integrity check said.
        why: String,
    },
    /// The database is missing or empty while run directories exist: the state was lost.
    #[error(
        "{path} is {what}, but {runs} run directories exist in {runs_dir}: the state was lost, and starting over would leave their commands running untracked; start with `aside daemon start --recover` to rebuild it from the run directories (or move {runs_dir} away)"
    )]
    Lost {
        /// The database path.
        path: String,
        /// `missing` or `empty`.
        what: &'static str,
        /// How many run directories.
        runs: usize,
        /// Where they are.
        runs_dir: String,
    },
    /// Any SQLite error.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored JSON column did not parse.
    #[error("corrupt record in the database: {0}")]
    Json(#[from] serde_json::Error),
}

type Result<T> = std::result::Result<T, StoreError>;

/// Deletes runs `ids` inside `tx`, then the processes left without a run.
fn delete_runs(tx: &rusqlite::Transaction<'_>, ids: &[String]) -> Result<()> {
    for id in ids {
        tx.prepare_cached("DELETE FROM runs WHERE id = ?1")?
            .execute(params![id])?;
    }
    tx.prepare_cached("DELETE FROM processes WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.process_id = processes.id)")?.execute([])?;
    Ok(())
}

/// Appends an event inside `tx` and returns it with its sequence number.
fn append_event(
    tx: &rusqlite::Transaction<'_>,
    data: EventData,
    process_id: Option<&str>,
    run_id: Option<&str>,
    owner: Option<&str>,
    now: Timestamp,
) -> Result<Event> {
    // Stored as the `data` object alone, beside its kind (the wire form's two halves).
    let wire = serde_json::to_value(&data)?;
    let inner = wire.get("data").cloned().unwrap_or_default();
    tx.prepare_cached(
        "INSERT INTO events (ts, kind, process_id, run_id, owner, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![ms(now), data.kind().as_str(), process_id, run_id, owner, inner.to_string()],
    )?;
    Ok(Event {
        seq: tx.last_insert_rowid() as u64,
        ts: ts(ms(now)),
        process_id: process_id.map(ProcessId::from),
        run_id: run_id.map(RunId::from),
        owner: owner.map(str::to_string),
        data,
    })
}

/// The process of run `run_id` as it stands in `tx`.
fn info_of_run(tx: &rusqlite::Transaction<'_>, run_id: &str) -> Result<ProcessInfo> {
    let sql = format!("SELECT {INFO_COLUMNS} FROM {INFO_FROM} WHERE r.id = ?1");
    Ok(tx
        .prepare_cached(&sql)?
        .query_row(params![run_id], process_info)?)
}

/// Appends a run-started or run-ready event about run `run_id` inside `tx`, with the process
/// as it stands in `tx`.
fn append_run_event(
    tx: &rusqlite::Transaction<'_>,
    kind: EventKind,
    run_id: &str,
) -> Result<Event> {
    let process = info_of_run(tx, run_id)?;
    let (id, owner) = (process.id.clone(), process.owner.clone());
    let data = match kind {
        EventKind::RunReady => EventData::RunReady { process },
        EventKind::RunQueued => EventData::RunQueued { process },
        _ => EventData::RunStarted { process },
    };
    append_event(
        tx,
        data,
        Some(&id),
        Some(run_id),
        Some(&owner),
        Timestamp::now(),
    )
}

fn progress_event(tx: &rusqlite::Transaction<'_>, run_id: &str) -> Result<Event> {
    let process = info_of_run(tx, run_id)?;
    let (id, owner) = (process.id.clone(), process.owner.clone());
    append_event(
        tx,
        EventData::RunProgress { process },
        Some(&id),
        Some(run_id),
        Some(&owner),
        Timestamp::now(),
    )
}

/// An event as stored: its kind and `data`; events written by an older aside (whose run
/// events held the process or result as `data` itself) are read as well as they can be.
fn stored_event(kind: &str, data: &str) -> Option<EventData> {
    let value: serde_json::Value = serde_json::from_str(data).ok()?;
    let typed = serde_json::json!({ "kind": kind, "data": value });
    if let Ok(d) = serde_json::from_value::<EventData>(typed) {
        return Some(d);
    }
    match kind {
        "run_started" | "run_ready" => serde_json::from_value::<EventData>(serde_json::json!({
            "kind": kind, "data": { "process": value }
        }))
        .ok(),
        _ => None,
    }
}

fn ms(t: Timestamp) -> i64 {
    t.as_millisecond()
}

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A new process and its first run, as inserted by `run`.
#[derive(Debug, Clone)]
pub struct NewProcess {
    /// Process id.
    pub id: String,
    /// Unique among live processes.
    pub name: String,
    /// Owner.
    pub owner: String,
    /// Team.
    pub team: Option<String>,
    /// What it is for, in a few words.
    pub description: Option<String>,
    /// Its project (`None`: the default one).
    pub project: Option<String>,
    /// What it runs.
    pub spec: Spec,
    /// The request's idempotency key, remembered with the process in one transaction.
    pub idempotency_key: Option<String>,
}

/// A stored process with its latest run, as the supervisor needs it.
#[derive(Debug, Clone)]
pub struct ProcessRow {
    /// The process as shown to clients.
    pub info: ProcessInfo,
    /// Its spec.
    pub spec: Spec,
    /// Run sequence number of the latest run (0 for the first).
    pub seq: u32,
}

/// How a run ended: the one type for it, built from the shim's exit record
/// ([`RunEnd::from_exit`]) or, with no shim to ask, from what the supervisor knows
/// ([`RunEnd::without_shim`]); written by [`Store::finish_run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunEnd {
    /// Terminal status.
    pub status: Status,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Signal number.
    pub signal: Option<i32>,
    /// End time.
    pub ended_at: Timestamp,
    /// Who stopped it.
    pub stopped_by: Option<String>,
    /// Spawn error or abandonment reason.
    pub error: Option<String>,
}

impl RunEnd {
    /// The end an exit record describes. Its status, first match wins: a spawn error →
    /// `failed`; a stop request → `stopped` (by its requester); the timeout → `timed_out`;
    /// exit 0 → `completed`, or `completed_empty` with no output at all; anything else →
    /// `failed`.
    pub fn from_exit(exit: &crate::rundir::ExitRecord) -> RunEnd {
        let (status, stopped_by) = if exit.error.is_some() {
            (Status::Failed, None)
        } else if let Some(stop) = &exit.stop {
            (Status::Stopped, Some(stop.requested_by.clone()))
        } else if exit.timed_out {
            (Status::TimedOut, None)
        } else {
            match exit.exit_code {
                Some(0) if exit.stdout_bytes + exit.stderr_bytes == 0 => {
                    (Status::CompletedEmpty, None)
                }
                Some(0) => (Status::Completed, None),
                _ => (Status::Failed, None),
            }
        };
        RunEnd {
            status,
            exit_code: exit.exit_code,
            signal: exit.signal,
            ended_at: exit.ended_at,
            stopped_by,
            error: exit.error.clone(),
        }
    }

    /// An end known without the shim's word (it could not start, or left no record), now.
    pub fn without_shim(status: Status, error: String) -> RunEnd {
        RunEnd {
            status,
            exit_code: None,
            signal: None,
            ended_at: Timestamp::now(),
            stopped_by: None,
            error: Some(error),
        }
    }
}

/// The state database. One per state directory; the daemon is its only writer.
pub struct Store {
    conn: Connection,
    /// The last listing, kept while the database is unchanged (see [`Store::list`]).
    listed: std::cell::RefCell<Option<Listing>>,
}

/// A listing as [`Store::list`] read it, and when.
struct Listing {
    /// The connection's `total_changes` when it was read: every row inserted, updated or
    /// deleted since moves it (the daemon is the database's only writer).
    changes: u64,
    filter: ListFilter,
    list: Vec<ProcessInfo>,
}

/// Columns of a process with one of its runs, for [`process_info`].
const INFO_COLUMNS: &str = "p.id, p.name, p.owner, p.team, p.command, r.id, r.seq, r.status, r.pid, \
     r.exit_code, r.signal, r.started_at, r.ended_at, r.stopped_by, r.error, p.cwd, p.description, \
     p.project, p.port, p.proxied, j.proxy_port, p.autorestart, p.max_restarts, p.restart_attempts, \
     p.restart_state, r.progress, p.watched, r.job";
/// Index of the spec column in [`PROCESS_COLUMNS`]; its environment (when kept apart) is
/// the next.
const SPEC_COLUMN: usize = 28;
/// [`INFO_COLUMNS`] plus the spec, which holds the whole environment: read only where it is
/// needed, so listing stays cheap.
const PROCESS_COLUMNS: &str = "p.id, p.name, p.owner, p.team, p.command, r.id, r.seq, r.status, r.pid, \
     r.exit_code, r.signal, r.started_at, r.ended_at, r.stopped_by, r.error, p.cwd, p.description, \
     p.project, p.port, p.proxied, j.proxy_port, p.autorestart, p.max_restarts, p.restart_attempts, \
     p.restart_state, r.progress, p.watched, r.job, s.spec, e.env";
/// What a lookup of one process goes by.
#[derive(Debug, Clone, Copy)]
enum FindBy {
    /// `?1` is the project, `?2` the name.
    ProjectName,
    /// `?1` is the process id.
    Id,
    /// `?1` is the name (a live one first, then one of the default project, then the newest).
    Name,
}

/// The query of a lookup of one process's latest run, with `columns` from `from` (one of the
/// `_ONE` tables).
fn find_sql(columns: &str, from: &str, by: FindBy) -> String {
    match by {
        FindBy::ProjectName => format!(
            "SELECT {columns} FROM {from}
             WHERE p.project = ?1 AND p.name = ?2 AND +r.latest = 1
             ORDER BY p.created_at DESC, p.id DESC LIMIT 1"
        ),
        FindBy::Id => format!("SELECT {columns} FROM {from} WHERE p.id = ?1 AND +r.latest = 1"),
        FindBy::Name => format!(
            "SELECT {columns} FROM {from}
             WHERE p.name = ?1 AND +r.latest = 1
             ORDER BY {LIVE} DESC, (p.project IS NULL) DESC, p.created_at DESC, p.id DESC LIMIT 1"
        ),
    }
}

/// Whether a live process of project `?2` is named `?1`.
const LIVE_NAME_TAKEN_SQL: &str = "SELECT EXISTS (SELECT 1 FROM processes p CROSS JOIN runs r ON r.process_id = p.id
     WHERE p.name = ?1 AND p.project IS ?2 AND r.status IN ('queued', 'starting', 'running', 'ready'))";

/// Names of live processes of project `?2` that are `?1` or start with `?1-`; the range makes
/// it a search of the name index ('.' follows '-').
const LIVE_NAMES_LIKE_SQL: &str =
    "SELECT p.name FROM processes p CROSS JOIN runs r ON r.process_id = p.id
     WHERE p.name >= ?1 AND p.name < ?1 || '.'
       AND (p.name = ?1 OR substr(p.name, 1, length(?1) + 1) = ?1 || '-')
       AND p.project IS ?2 AND r.status IN ('queued', 'starting', 'running', 'ready')";

/// Takes the ended processes named `?1` in project `?2`, other than `?3`, out of the listing
/// (`+r.latest`: by each one's runs, not a scan of every latest run).
fn unlist_same_name_sql() -> String {
    format!(
        "UPDATE runs AS r SET unread = 0 WHERE +r.latest = 1 AND NOT ({LIVE}) AND r.process_id IN
         (SELECT id FROM processes WHERE name = ?1 AND coalesce(project, '') = coalesce(?2, '')
          AND id != ?3)"
    )
}

/// The tables behind [`INFO_COLUMNS`].
const INFO_FROM: &str = "processes p JOIN runs r ON r.process_id = p.id \
     LEFT JOIN projects j ON j.name = coalesce(p.project, '')";
/// The tables behind [`PROCESS_COLUMNS`].
const PROCESS_FROM: &str = "processes p JOIN runs r ON r.process_id = p.id \
     LEFT JOIN projects j ON j.name = coalesce(p.project, '') JOIN specs s ON s.process_id = p.id \
     LEFT JOIN envs e ON e.hash = s.env_hash";
/// [`INFO_FROM`] for a lookup of one process by id or name: `CROSS JOIN` makes SQLite find
/// the process first (by its key or name index) and then its runs by `process_id`; a lookup
/// must also write `+r.latest`, or the planner, which has no statistics, scans every latest
/// run through `runs_latest` (measured: 180 µs per lookup at 160 processes, growing with them).
const INFO_FROM_ONE: &str = "processes p CROSS JOIN runs r ON r.process_id = p.id \
     LEFT JOIN projects j ON j.name = coalesce(p.project, '')";
/// [`PROCESS_FROM`] for a lookup of one process (see [`INFO_FROM_ONE`]).
const PROCESS_FROM_ONE: &str = "processes p CROSS JOIN runs r ON r.process_id = p.id \
     LEFT JOIN projects j ON j.name = coalesce(p.project, '') JOIN specs s ON s.process_id = p.id \
     LEFT JOIN envs e ON e.hash = s.env_hash";

/// How long a run has lasted at `now`, or lasted (ms).
fn duration_ms(started_at: Timestamp, ended_at: Option<Timestamp>, now: Timestamp) -> u64 {
    ended_at
        .unwrap_or(now)
        .duration_since(started_at)
        .as_millis()
        .max(0) as u64
}

/// `p` as of `now`: the fields that grow while a run lasts.
fn as_of(mut p: ProcessInfo, now: Timestamp) -> ProcessInfo {
    if p.ended_at.is_none() {
        p.duration_ms = duration_ms(p.started_at, None, now);
        if p.uptime_secs.is_some() {
            p.uptime_secs = Some(p.duration_ms / 1000);
        }
    }
    p
}

fn process_info(row: &Row<'_>) -> rusqlite::Result<ProcessInfo> {
    let status_s: String = row.get(7)?;
    let started_at = ts(row.get(11)?);
    let ended_at: Option<i64> = row.get(12)?;
    let ended_at = ended_at.map(ts);
    let duration_ms = duration_ms(started_at, ended_at, Timestamp::now());
    let signal: Option<i32> = row.get(10)?;
    let name: String = row.get(1)?;
    let port: Option<u16> = row.get(18)?;
    let proxied: bool = row.get(19)?;
    let proxy_port: Option<u16> = row.get(20)?;
    let url = match (proxied, proxy_port) {
        (true, Some(pp)) => Some(format!("http://{name}.localhost:{pp}")),
        _ => None,
    };
    let mode: Option<String> = row.get(21)?;
    let autorestart = match mode.as_deref().and_then(Autorestart::parse) {
        Some(mode) if mode != Autorestart::Never => Some(AutorestartState {
            mode,
            max_restarts: row.get(22)?,
            attempts: row.get(23)?,
            state: row
                .get::<_, Option<String>>(24)?
                .and_then(|s| RestartState::parse(&s))
                .unwrap_or_default(),
        }),
        _ => None,
    };
    let status = Status::parse(&status_s).unwrap_or(Status::Abandoned);
    let watched: bool = row.get(26)?;
    // agent-procs' fields, from the same columns (its `status --json` rows).
    let state = match (&autorestart, status.is_terminal()) {
        (_, false) => ProcessState::Running,
        (Some(a), true) if a.state == RestartState::Exhausted => ProcessState::Failed,
        (_, true) => ProcessState::Exited,
    };
    let uptime_secs = (!status.is_terminal()).then_some(duration_ms / 1000);
    let restarts: u32 = row.get(6)?;
    Ok(ProcessInfo {
        state,
        uptime_secs,
        restart_count: autorestart.as_ref().map(|_| restarts),
        max_restarts: autorestart.as_ref().and_then(|a| a.max_restarts),
        restart_policy: autorestart.as_ref().map(|a| a.mode.as_str().to_string()),
        watched: watched.then_some(true),
        id: row.get::<_, String>(0)?.into(),
        name,
        owner: row.get(2)?,
        team: row.get(3)?,
        command: row.get(4)?,
        cwd: row.get(15)?,
        run_id: row.get::<_, String>(5)?.into(),
        restarts,
        status,
        pid: row.get::<_, Option<i64>>(8)?.map(|p| p as u32),
        exit_code: row.get(9)?,
        signal: signal.map(signal_name),
        started_at,
        ended_at,
        duration_ms,
        stopped_by: row.get(13)?,
        error: row.get(14)?,
        description: row.get(16)?,
        project: row.get(17)?,
        port,
        url,
        autorestart,
        unrecorded: None,
        progress: row
            .get::<_, Option<String>>(25)?
            .and_then(|j| serde_json::from_str(&j).ok()),
        job: row
            .get::<_, Option<String>>(27)?
            .and_then(|j| serde_json::from_str(&j).ok()),
    })
}

/// Stores `spec`'s environment in `envs` (once per content) and returns the spec's JSON
/// without it, with the environment's key (the hex SHA-256 of its JSON).
fn put_env(tx: &rusqlite::Transaction<'_>, spec: &Spec) -> Result<(String, String)> {
    use sha2::Digest;
    let env = serde_json::to_string(&spec.env)?;
    let hash: String = sha2::Sha256::digest(env.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    tx.prepare_cached("INSERT OR IGNORE INTO envs (hash, env) VALUES (?1, ?2)")?
        .execute(params![hash, env])?;
    let bare = Spec {
        env: Default::default(),
        ..spec.clone()
    };
    Ok((serde_json::to_string(&bare)?, hash))
}

fn process_row(row: &Row<'_>) -> rusqlite::Result<ProcessRow> {
    let info = process_info(row)?;
    let spec_json: String = row.get(SPEC_COLUMN)?;
    let unreadable = |column: usize, e: serde_json::Error| {
        rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, Box::new(e))
    };
    let mut spec: Spec =
        serde_json::from_str(&spec_json).map_err(|e| unreadable(SPEC_COLUMN, e))?;
    if let Some(env) = row.get::<_, Option<String>>(SPEC_COLUMN + 1)? {
        spec.env = serde_json::from_str(&env).map_err(|e| unreadable(SPEC_COLUMN + 1, e))?;
    }
    Ok(ProcessRow {
        seq: info.restarts,
        info,
        spec,
    })
}

/// Filters for [`Store::list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Include terminal processes whose result was already read.
    pub all: bool,
    /// Only this owner's.
    pub owner: Option<String>,
    /// Only this team's.
    pub team: Option<String>,
    /// Only this project's.
    pub project: Option<String>,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and migrates it. Errors: the file is
    /// not an aside database ([`StoreError::Foreign`]), is newer ([`StoreError::TooNew`]), or
    /// cannot be opened.
    pub fn open(path: &Path) -> Result<Store> {
        let display = path.display().to_string();
        // 0600 whatever the umask (its WAL holds environments): SQLite gives the WAL and shm
        // files the main file's mode, so creating it first sets all three.
        {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            let created = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path);
            if let Err(e) = created {
                tracing::debug!("cannot pre-create {}: {e}", path.display());
            }
            for suffix in ["", "-wal", "-shm"] {
                let mut f = path.as_os_str().to_owned();
                f.push(suffix);
                if let Err(e) = std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600))
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!("cannot make {} 0600: {e}", Path::new(&f).display());
                }
            }
        }
        let conn = Connection::open(path)?;
        let foreign = |why: String| StoreError::Foreign {
            path: display.clone(),
            why,
        };
        // Reading the header is the first real access: a non-SQLite file fails here.
        let app_id: i32 = conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .map_err(|e| foreign(e.to_string()))?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let tables: i64 = conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
            [],
            |r| r.get(0),
        )?;
        if app_id != APPLICATION_ID && (app_id != 0 || tables > 0) {
            return Err(foreign(format!(
                "application_id {app_id:#x}, {tables} tables"
            )));
        }
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::TooNew {
                path: display,
                found: version,
                known,
            });
        }
        if tables > 0 {
            // Damage anywhere in the file is found now, not when a query happens on it.
            let check: String = conn
                .query_row("PRAGMA quick_check", [], |r| r.get(0))
                .unwrap_or_else(|e| e.to_string());
            if check != "ok" {
                return Err(StoreError::Damaged {
                    path: display,
                    why: check.lines().take(3).collect::<Vec<_>>().join("; "),
                });
            }
        }
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Every statement on a hot path is prepared once (rusqlite keeps 16 by default)...
        conn.set_prepared_statement_cache_capacity(128);
        // ...and stays compiled: without the query planner stability guarantee SQLite
        // recompiles a statement for each new value of a parameter it could weigh against a
        // partial index (`specs_env`) or a LIKE pattern: every lookup of a run's start was
        // parsed anew (16% of the daemon's CPU in a loop of `run`s). Every query here chooses
        // its plan by its text alone.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // 16 MiB of page cache (default 2 MiB): listings of a thousand processes stay in memory.
        conn.pragma_update(None, "cache_size", -16384)?;
        let mut store = Store {
            conn,
            listed: Default::default(),
        };
        store.migrate(version)?;
        Ok(store)
    }

    fn migrate(&mut self, from: i64) -> Result<()> {
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(from as usize) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.pragma_update(None, "application_id", APPLICATION_ID)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// Inserts a process and its first run (status `starting`).
    pub fn insert_process(&mut self, p: &NewProcess, run_id: &str, now: Timestamp) -> Result<()> {
        let tx = self.conn.transaction()?;
        let mode = p.spec.restart.as_ref().map(|r| r.autorestart.as_str());
        let max = p.spec.restart.as_ref().and_then(|r| r.max_restarts);
        tx.prepare_cached(
            "INSERT INTO processes (id, name, owner, team, command, cwd, created_at, description,
                 project, port, proxied, autorestart, max_restarts, watched)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )?
        .execute(params![
            p.id,
            p.name,
            p.owner,
            p.team,
            p.spec.cmd.display(),
            p.spec.cwd,
            ms(now),
            p.description,
            p.project,
            p.spec.port,
            p.spec.proxy,
            mode,
            max,
            p.spec.watch.is_some()
        ])?;
        let (spec, env_hash) = put_env(&tx, &p.spec)?;
        tx.prepare_cached("INSERT INTO specs (process_id, spec, env_hash) VALUES (?1, ?2, ?3)")?
            .execute(params![p.id, spec, env_hash])?;
        tx.prepare_cached(
            "INSERT INTO runs (id, process_id, seq, status, started_at) VALUES (?1, ?2, 0, 'starting', ?3)",
        )?
        .execute(params![run_id, p.id, ms(now)])?;
        // A name names one process: an ended one of the same name (and project) leaves the
        // listing (its result stays in the inbox, its history under `status --all`).
        tx.prepare_cached(&unlist_same_name_sql())?
            .execute(params![p.name, p.project, p.id])?;
        if let Some(key) = &p.idempotency_key {
            tx.prepare_cached("INSERT INTO idempotency (owner, key, process_id, created_at) VALUES (?1, ?2, ?3, ?4)")?.execute(params![p.owner, key, p.id, ms(now)])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The process an earlier `run` of `owner` with idempotency `key` started, if any.
    pub fn process_for_key(&self, owner: &str, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .prepare_cached("SELECT process_id FROM idempotency WHERE owner = ?1 AND key = ?2")?
            .query_row(params![owner, key], |r| r.get(0))
            .optional()?)
    }

    /// Inserts run number `seq` of an existing process (a restart), status `starting`.
    pub fn insert_run(
        &mut self,
        process_id: &str,
        run_id: &str,
        seq: u32,
        now: Timestamp,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.prepare_cached("UPDATE runs SET latest = 0 WHERE process_id = ?1 AND latest = 1")?
            .execute(params![process_id])?;
        tx.prepare_cached("INSERT INTO runs (id, process_id, seq, status, started_at) VALUES (?1, ?2, ?3, 'starting', ?4)")?.execute(params![run_id, process_id, seq, ms(now)])?;
        tx.commit()?;
        Ok(())
    }

    /// Marks a starting run `running` with its main pid and real start time.
    /// Marks a starting run `running` with its main pid and real start time, and logs the
    /// `run_started` event (returned, for live delivery), once.
    pub fn set_running(
        &mut self,
        run_id: &str,
        pid: i32,
        started_at: Timestamp,
    ) -> Result<Option<Event>> {
        let tx = self.conn.transaction()?;
        let changed = tx
            .prepare_cached(
                "UPDATE runs SET status = 'running', pid = ?2, started_at = ?3
                 WHERE id = ?1 AND status IN ('queued', 'starting')",
            )?
            .execute(params![run_id, pid, ms(started_at)])?;
        if changed == 0 {
            return Ok(None);
        }
        let event = append_run_event(&tx, EventKind::RunStarted, run_id)?;
        tx.commit()?;
        Ok(Some(event))
    }

    /// Records what the cluster says of a live run's job; with `queued`, the run is (still)
    /// `queued` too. Returns the `run_queued` event (for live delivery) when a queued run's
    /// job changed, `None` when nothing changed or the run is no longer live.
    pub fn set_job(&mut self, run_id: &str, job: &Job, queued: bool) -> Result<Option<Event>> {
        let json = serde_json::to_string(job)?;
        let tx = self.conn.transaction()?;
        let changed = tx
            .prepare_cached(
                "UPDATE runs SET job = ?2,
                 status = CASE WHEN ?3 AND status = 'starting' THEN 'queued' ELSE status END
             WHERE id = ?1 AND status IN ('queued', 'starting', 'running', 'ready')
               AND (job IS NOT ?2 OR (?3 AND status = 'starting'))",
            )?
            .execute(params![run_id, json, queued])?;
        if changed == 0 {
            return Ok(None);
        }
        let status: String = tx
            .prepare_cached("SELECT status FROM runs WHERE id = ?1")?
            .query_row([run_id], |r| r.get(0))?;
        let event = if status == "queued" {
            Some(append_run_event(&tx, EventKind::RunQueued, run_id)?)
        } else {
            None
        };
        tx.commit()?;
        Ok(event)
    }

    /// Records a job's last state on a run that ended (its result names the run's end; this
    /// keeps what the cluster said beside it).
    pub fn set_final_job(&mut self, run_id: &str, job: &Job) -> Result<()> {
        let json = serde_json::to_string(job)?;
        self.conn
            .prepare_cached("UPDATE runs SET job = ?2 WHERE id = ?1")?
            .execute(params![run_id, json])?;
        Ok(())
    }

    /// Makes a run terminal, stores its result, creates its owner's notification and logs the
    /// `run_exited` and `notification_created` events, in one transaction. Returns the events
    /// (for live delivery), or `None` (having changed nothing) when the run was already terminal.
    pub fn finish_run(
        &mut self,
        run_id: &str,
        f: &RunEnd,
        result: &RunResult,
        owner: &str,
    ) -> Result<Option<Vec<Event>>> {
        let tx = self.conn.transaction()?;
        let changed = tx.prepare_cached("UPDATE runs SET status = ?2, exit_code = ?3, signal = ?4, ended_at = ?5, stopped_by = ?6, error = ?7, unread = 1
             WHERE id = ?1 AND status IN ('queued', 'starting', 'running', 'ready')")?.execute(params![
                run_id,
                f.status.as_str(),
                f.exit_code,
                f.signal,
                ms(f.ended_at),
                f.stopped_by,
                f.error
            ])?;
        if changed == 0 {
            return Ok(None);
        }
        tx.prepare_cached("INSERT OR IGNORE INTO inbox (run_id, owner, created_at, result) VALUES (?1, ?2, ?3, ?4)")?.execute(params![run_id, owner, ms(f.ended_at), serde_json::to_string(result)?])?;
        let now = Timestamp::now();
        let pid = Some(result.process_id.as_str());
        let process = info_of_run(&tx, run_id)?;
        let events = vec![
            append_event(
                &tx,
                EventData::RunExited {
                    process,
                    result: result.clone(),
                },
                pid,
                Some(run_id),
                Some(owner),
                now,
            )?,
            append_event(
                &tx,
                EventData::NotificationCreated {
                    id: run_id.into(),
                    owner: owner.to_string(),
                },
                pid,
                Some(run_id),
                Some(owner),
                now,
            )?,
        ];
        tx.commit()?;
        Ok(Some(events))
    }

    /// Events after `since` (oldest first, at most `limit`), of `owner` when given.
    pub fn events_since(
        &self,
        since: u64,
        owner: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, ts, kind, process_id, run_id, owner, data FROM events
             WHERE seq > ?1 AND (?2 IS NULL OR owner = ?2) ORDER BY seq LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![since as i64, owner, limit as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, String>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, t, kind, process_id, run_id, owner, data) = row?;
            let Some(kind) = EventKind::parse(&kind) else {
                continue;
            };
            let Some(data) = stored_event(kind.as_str(), &data) else {
                tracing::debug!(
                    "event {seq}: a {} this aside cannot read, skipped",
                    kind.as_str()
                );
                continue;
            };
            out.push(Event {
                seq: seq as u64,
                ts: ts(t),
                process_id: process_id.map(ProcessId::from),
                run_id: run_id.map(RunId::from),
                owner,
                data,
            });
        }
        Ok(out)
    }

    /// Sets (replaces) the wake action of `action.owner`.
    pub fn set_wake(&mut self, action: &WakeAction, now: Timestamp) -> Result<()> {
        self.set_owner_json(
            "INSERT INTO wake_actions (owner, action, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(owner) DO UPDATE SET action = excluded.action, created_at = excluded.created_at",
            &action.owner,
            action,
            now,
        )
    }

    /// The wake action of `owner`, if any.
    pub fn wake(&self, owner: &str) -> Result<Option<WakeAction>> {
        self.owner_json("SELECT action FROM wake_actions WHERE owner = ?1", owner)
    }

    /// Writes `value` as the JSON of `owner`'s row with `upsert` (`?1` owner, `?2` JSON, `?3`
    /// time).
    fn set_owner_json<T: serde::Serialize>(
        &mut self,
        upsert: &str,
        owner: &str,
        value: &T,
        now: Timestamp,
    ) -> Result<()> {
        self.conn.execute(
            upsert,
            params![owner, serde_json::to_string(value)?, ms(now)],
        )?;
        Ok(())
    }

    /// The JSON column `select` (`?1` owner) reads for `owner`, parsed.
    fn owner_json<T: serde::de::DeserializeOwned>(
        &self,
        select: &str,
        owner: &str,
    ) -> Result<Option<T>> {
        let json: Option<String> = self
            .conn
            .query_row(select, params![owner], |r| r.get(0))
            .optional()?;
        Ok(match json {
            Some(j) => Some(serde_json::from_str(&j)?),
            None => None,
        })
    }

    /// Removes the wake action of `owner`; true when there was one.
    pub fn clear_wake(&mut self, owner: &str) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("DELETE FROM wake_actions WHERE owner = ?1")?
            .execute(params![owner])?
            > 0)
    }

    /// Owners with a wake action and unacknowledged notifications (to resume after a restart).
    pub fn owners_to_wake(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare(
            "SELECT w.owner FROM wake_actions w WHERE EXISTS
             (SELECT 1 FROM inbox i WHERE i.owner = w.owner AND i.acked_at IS NULL)",
        )?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The newest event's sequence number (0 when there is none).
    pub fn last_event_seq(&self) -> Result<u64> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT coalesce(max(seq), 0) FROM events")?
            .query_row([], |r| r.get(0))?;
        Ok(n as u64)
    }

    /// Marks a running run `ready` and logs the `run_ready` event (returned), once.
    pub fn set_ready(&mut self, run_id: &str) -> Result<Option<Event>> {
        let tx = self.conn.transaction()?;
        let changed = tx
            .prepare_cached(
                "UPDATE runs SET status = 'ready' WHERE id = ?1 AND status = 'running'",
            )?
            .execute(params![run_id])?;
        if changed == 0 {
            return Ok(None);
        }
        let event = append_run_event(&tx, EventKind::RunReady, run_id)?;
        tx.commit()?;
        Ok(Some(event))
    }

    /// The process with this id; else, for `PROJECT/NAME`, the newest process of that name in
    /// that project; else the newest process with this name, live ones first, the default
    /// project's first.
    pub fn find(&self, reference: &str) -> Result<Option<ProcessRow>> {
        self.find_with(reference, PROCESS_COLUMNS, PROCESS_FROM_ONE, process_row)
    }

    /// [`Store::find`] without the spec (which holds the whole environment): for lookups that
    /// only need what `status` shows, such as the proxy's route per request.
    pub fn find_info(&self, reference: &str) -> Result<Option<ProcessInfo>> {
        self.find_with(reference, INFO_COLUMNS, INFO_FROM_ONE, process_info)
    }

    fn find_with<T>(
        &self,
        reference: &str,
        columns: &str,
        from: &str,
        map: fn(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Option<T>> {
        if let Some((project, name)) = reference.split_once('/') {
            let sql = find_sql(columns, from, FindBy::ProjectName);
            return Ok(self
                .conn
                .prepare_cached(&sql)?
                .query_row(params![project, name], map)
                .optional()?);
        }
        // An id first; a name only when no process has that id (two lookups, each by an index:
        // one query with `p.id = ?1 OR p.name = ?1` scans).
        let found = self
            .conn
            .prepare_cached(&find_sql(columns, from, FindBy::Id))?
            .query_row(params![reference], map)
            .optional()?;
        if found.is_some() {
            return Ok(found);
        }
        Ok(self
            .conn
            .prepare_cached(&find_sql(columns, from, FindBy::Name))?
            .query_row(params![reference], map)
            .optional()?)
    }

    /// Projects (other than the default one) with a live process named `name`.
    pub fn live_projects_named(&self, name: &str) -> Result<Vec<String>> {
        let sql = format!(
            "SELECT DISTINCT p.project FROM processes p CROSS JOIN runs r ON r.process_id = p.id
             WHERE p.name = ?1 AND p.project IS NOT NULL AND +r.latest = 1 AND {LIVE}
             ORDER BY p.project"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![name], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Replaces the spec of a process (an `up` whose configuration changed) and resets its
    /// restart count.
    pub fn replace_spec(
        &mut self,
        process_id: &str,
        spec: &Spec,
        owner: &str,
        team: Option<&str>,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        let mode = spec.restart.as_ref().map(|r| r.autorestart.as_str());
        let max = spec.restart.as_ref().and_then(|r| r.max_restarts);
        tx.prepare_cached("UPDATE processes SET command = ?2, cwd = ?3, port = ?4, proxied = ?5, autorestart = ?6,
                 max_restarts = ?7, restart_attempts = 0, restart_state = NULL, owner = ?8, team = ?9,
                 watched = ?10
             WHERE id = ?1")?.execute(params![
                process_id,
                spec.cmd.display(),
                spec.cwd,
                spec.port,
                spec.proxy,
                mode,
                max,
                owner,
                team,
                spec.watch.is_some()
            ])?;
        let (spec, env_hash) = put_env(&tx, spec)?;
        tx.prepare_cached("UPDATE specs SET spec = ?2, env_hash = ?3 WHERE process_id = ?1")?
            .execute(params![process_id, spec, env_hash])?;
        tx.commit()?;
        Ok(())
    }

    /// Sets a process's restart count (restarts in a row) and restart state.
    pub fn set_restart_state(
        &mut self,
        process_id: &str,
        attempts: u32,
        state: RestartState,
    ) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE processes SET restart_attempts = ?2, restart_state = ?3 WHERE id = ?1",
            )?
            .execute(params![process_id, attempts, state.as_str()])?;
        Ok(())
    }

    /// Marks process `process_id`'s restarts exhausted after run `run_id` (its latest) ended,
    /// with the `restarts_exhausted` event in the same transaction.
    pub fn exhaust_restarts(
        &mut self,
        process_id: &str,
        run_id: &str,
        attempts: u32,
    ) -> Result<Event> {
        let tx = self.conn.transaction()?;
        tx.prepare_cached(
            "UPDATE processes SET restart_attempts = ?2, restart_state = ?3 WHERE id = ?1",
        )?
        .execute(params![
            process_id,
            attempts,
            RestartState::Exhausted.as_str()
        ])?;
        let process = info_of_run(&tx, run_id)?;
        let owner = process.owner.clone();
        let e = append_event(
            &tx,
            EventData::RestartsExhausted { process },
            Some(process_id),
            Some(run_id),
            Some(&owner),
            Timestamp::now(),
        )?;
        tx.commit()?;
        Ok(e)
    }

    /// Records a project's config file (creating the project).
    pub fn upsert_project(
        &mut self,
        name: &str,
        config: Option<&str>,
        now: Timestamp,
    ) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO projects (name, config, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET config = coalesce(excluded.config, config),
                 updated_at = excluded.updated_at",
            )?
            .execute(params![name, config, ms(now)])?;
        Ok(())
    }

    /// Records the port of a project's proxy (`None`: it stopped). Creates the project.
    pub fn set_proxy_port(&mut self, name: &str, port: Option<u16>, now: Timestamp) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO projects (name, proxy_port, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET proxy_port = excluded.proxy_port,
                 updated_at = excluded.updated_at",
            )?
            .execute(params![name, port, ms(now)])?;
        Ok(())
    }

    /// Every project: those brought `up` and those with processes (`''` is the default one).
    pub fn projects(&self) -> Result<Vec<ProjectInfo>> {
        let sql = format!(
            "WITH names AS (SELECT name FROM projects
                            UNION SELECT coalesce(project, '') FROM processes)
             SELECT n.name, j.config, j.proxy_port,
                    (SELECT count(*) FROM processes p JOIN runs r ON r.process_id = p.id
                     WHERE coalesce(p.project, '') = n.name AND r.latest = 1 AND {LIVE}),
                    (SELECT count(*) FROM processes p WHERE coalesce(p.project, '') = n.name)
             FROM names n LEFT JOIN projects j ON j.name = n.name ORDER BY n.name"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([], |r| {
            Ok(ProjectInfo {
                name: r.get(0)?,
                config: r.get(1)?,
                proxy_port: r.get(2)?,
                live: r.get::<_, i64>(3)? as usize,
                processes: r.get::<_, i64>(4)? as usize,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Forgets a project with nothing live: its row, and its processes whose results were all
    /// read. Returns the run ids deleted (for their directories). Processes with unread results
    /// are kept (never lose a result).
    pub fn forget_project(&mut self, name: &str) -> Result<Vec<String>> {
        let tx = self.conn.transaction()?;
        let ids: Vec<String> = {
            let mut stmt = tx.prepare(
                "SELECT r.id FROM runs r JOIN processes p ON p.id = r.process_id
                 WHERE coalesce(p.project, '') = ?1
                   AND NOT EXISTS (SELECT 1 FROM runs x WHERE x.process_id = p.id
                       AND (x.status IN ('queued', 'starting', 'running', 'ready') OR x.unread = 1))",
            )?;
            stmt.query_map(params![name], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?
        };
        delete_runs(&tx, &ids)?;
        tx.prepare_cached("DELETE FROM projects WHERE name = ?1")?
            .execute(params![name])?;
        tx.commit()?;
        Ok(ids)
    }

    /// Results of the terminal runs of process `process_id`, newest first, at most `limit`.
    pub fn history(&self, process_id: &str, limit: usize) -> Result<Vec<RunResult>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT i.result FROM runs r JOIN inbox i ON i.run_id = r.id
             WHERE r.process_id = ?1 ORDER BY r.seq DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![process_id, limit as i64], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for json in rows {
            out.push(serde_json::from_str(&json?)?);
        }
        Ok(out)
    }

    /// Records `report` as run `run_id`'s latest progress (a live run only) and in its history
    /// (the newest 100 kept); with `announce`, appends a `run_progress` event in the same
    /// transaction. Returns whether the run was live, and the event.
    pub fn set_progress(
        &mut self,
        run_id: &str,
        report: &Progress,
        announce: bool,
    ) -> Result<(bool, Option<Event>)> {
        let tx = self.conn.transaction()?;
        let json = serde_json::to_string(report)?;
        let changed = tx.prepare_cached("UPDATE runs SET progress = ?2 WHERE id = ?1 AND status IN ('queued', 'starting', 'running', 'ready')")?.execute(params![run_id, json])?;
        if changed == 0 {
            return Ok((false, None));
        }
        tx.prepare_cached("INSERT INTO progress (run_id, ts, report) VALUES (?1, ?2, ?3)")?
            .execute(params![run_id, ms(report.at), json])?;
        tx.prepare_cached(
            "DELETE FROM progress WHERE run_id = ?1 AND rowid NOT IN
             (SELECT rowid FROM progress WHERE run_id = ?1 ORDER BY ts DESC, rowid DESC LIMIT 100)",
        )?
        .execute(params![run_id])?;
        let event = if announce {
            Some(progress_event(&tx, run_id)?)
        } else {
            None
        };
        tx.commit()?;
        Ok((true, event))
    }

    /// A `run_progress` event with run `run_id`'s process as it stands (a report that was
    /// held back by the throttle, announced late); `None` once the run has ended.
    pub fn announce_progress(&mut self, run_id: &str) -> Result<Option<Event>> {
        let tx = self.conn.transaction()?;
        let live: bool = tx.prepare_cached("SELECT status IN ('queued', 'starting', 'running', 'ready') FROM runs WHERE id = ?1")?.query_row(params![run_id], |r| r.get(0))?;
        if !live {
            return Ok(None);
        }
        let e = progress_event(&tx, run_id)?;
        tx.commit()?;
        Ok(Some(e))
    }

    /// Run `run_id`'s progress reports, newest first (at most `limit`).
    pub fn progress_history(&self, run_id: &str, limit: usize) -> Result<Vec<Progress>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT report FROM progress WHERE run_id = ?1 ORDER BY ts DESC, rowid DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![run_id, limit as i64], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(serde_json::from_str(&r?)?);
        }
        Ok(out)
    }

    /// The runs of process `process_id` still kept, oldest first: `(seq, run id)`.
    pub fn runs_of(&self, process_id: &str) -> Result<Vec<(u32, String)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, id FROM runs WHERE process_id = ?1 ORDER BY seq")?;
        let rows = stmt.query_map(params![process_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Stores a member token: its public `id` and the SHA-256 `hash` of its secret.
    pub fn insert_token(
        &mut self,
        id: &str,
        hash: &str,
        req: &TokenRequest,
        now: Timestamp,
    ) -> Result<TokenInfo> {
        self.conn.prepare_cached("INSERT INTO tokens (id, hash, owner, team, read_only, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?.execute(params![id, hash, req.owner, req.team, req.read_only, ms(now)])?;
        Ok(TokenInfo {
            id: id.into(),
            owner: req.owner.clone(),
            team: req.team.clone(),
            read_only: req.read_only,
            created_at: ts(ms(now)),
            last_used_at: None,
            revoked_at: None,
        })
    }

    fn tokens_where(&self, where_sql: &str, p: &[&dyn rusqlite::ToSql]) -> Result<Vec<TokenInfo>> {
        let sql = format!(
            "SELECT id, owner, team, read_only, created_at, last_used_at, revoked_at FROM tokens
             WHERE {where_sql} ORDER BY created_at, id"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(p, |r| {
            Ok(TokenInfo {
                id: r.get(0)?,
                owner: r.get(1)?,
                team: r.get(2)?,
                read_only: r.get(3)?,
                created_at: ts(r.get(4)?),
                last_used_at: r.get::<_, Option<i64>>(5)?.map(ts),
                revoked_at: r.get::<_, Option<i64>>(6)?.map(ts),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every member token, revoked ones included, oldest first.
    pub fn tokens(&self) -> Result<Vec<TokenInfo>> {
        self.tokens_where("1", &[])
    }

    /// The unrevoked token whose secret hashes to `hash`, marked used at `now` (written at
    /// most once a minute: every request of a member passes here).
    pub fn use_token(&mut self, hash: &str, now: Timestamp) -> Result<Option<TokenInfo>> {
        let found = self
            .tokens_where("hash = ?1 AND revoked_at IS NULL", &[&hash])?
            .pop();
        if let Some(t) = &found {
            self.conn
                .prepare_cached(
                    "UPDATE tokens SET last_used_at = ?2
                 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2 - 60000)",
                )?
                .execute(params![t.id, ms(now)])?;
        }
        Ok(found)
    }

    /// Revokes token `id`; `None` if there is no such token. Revoking twice keeps the first time.
    pub fn revoke_token(&mut self, id: &str, now: Timestamp) -> Result<Option<TokenInfo>> {
        self.conn
            .prepare_cached(
                "UPDATE tokens SET revoked_at = coalesce(revoked_at, ?2) WHERE id = ?1",
            )?
            .execute(params![id, ms(now)])?;
        Ok(self.tokens_where("id = ?1", &[&id])?.pop())
    }

    /// The process of run `run_id`, with that run's state (not necessarily its latest).
    pub fn find_by_run(&self, run_id: &str) -> Result<Option<ProcessRow>> {
        let sql = format!("SELECT {PROCESS_COLUMNS} FROM {PROCESS_FROM} WHERE r.id = ?1");
        Ok(self
            .conn
            .query_row(&sql, params![run_id], process_row)
            .optional()?)
    }

    /// Processes with their latest run, by name (then id: UUIDv7, oldest first). Without `all`:
    /// live ones, plus terminal ones whose notification is unread. The same filter asked again
    /// while no row of the database changed is answered from the last listing, its durations
    /// brought to now.
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<ProcessInfo>> {
        let sql = format!(
            "SELECT {INFO_COLUMNS} FROM {INFO_FROM}
             WHERE r.latest = 1
               AND (?1 OR {LIVE} OR r.unread = 1)
               AND (?2 IS NULL OR p.owner = ?2)
               AND (?3 IS NULL OR p.team = ?3)
               AND (?4 IS NULL OR p.project = ?4)
             ORDER BY p.name, p.id"
        );
        // A listing asked again with nothing changed meanwhile (a screen or an agent polling)
        // is answered from memory: only the durations move.
        let changes = self.conn.total_changes();
        if let Some(l) = self.listed.borrow().as_ref()
            && l.changes == changes
            && l.filter == *filter
        {
            let now = Timestamp::now();
            return Ok(l.list.iter().map(|p| as_of(p.clone(), now)).collect());
        }
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(
            params![filter.all, filter.owner, filter.team, filter.project],
            process_info,
        )?;
        let list: Vec<ProcessInfo> = rows.collect::<rusqlite::Result<_>>()?;
        *self.listed.borrow_mut() = Some(Listing {
            changes,
            filter: filter.clone(),
            list: list.clone(),
        });
        Ok(list)
    }

    /// What run `run_id`'s `process.json` says of its process (one indexed lookup, without the
    /// spec); `None` for no such run.
    pub fn process_record(&self, run_id: &str) -> Result<Option<crate::rundir::ProcessRecord>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT p.id, p.name, p.owner, p.team, p.project, p.description, r.seq
                 FROM runs r JOIN processes p ON p.id = r.process_id WHERE r.id = ?1",
            )?
            .query_row([run_id], |r| {
                Ok(crate::rundir::ProcessRecord {
                    process_id: r.get(0)?,
                    name: r.get(1)?,
                    owner: r.get(2)?,
                    team: r.get(3)?,
                    project: r.get(4)?,
                    description: r.get(5)?,
                    seq: r.get(6)?,
                })
            })
            .optional()?)
    }

    /// Runs not yet terminal: `(run_id, process row)` for reconcile.
    pub fn unfinished_runs(&self) -> Result<Vec<(String, ProcessRow)>> {
        let sql = format!(
            "SELECT {PROCESS_COLUMNS} FROM {PROCESS_FROM}
             WHERE r.status IN ('queued', 'starting', 'running', 'ready') ORDER BY r.started_at"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([], process_row)?;
        Ok(rows
            .map(|r| r.map(|p| (p.info.run_id.to_string(), p)))
            .collect::<rusqlite::Result<_>>()?)
    }

    /// True when a live process of `project` already uses `name`.
    pub fn live_name_taken(&self, project: Option<&str>, name: &str) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached(LIVE_NAME_TAKEN_SQL)?
            .query_row(params![name, project], |r| r.get(0))?)
    }

    /// Names of live processes of `project` that are `base` or start with `base-`.
    pub fn live_names_like(
        &self,
        project: Option<&str>,
        base: &str,
    ) -> Result<std::collections::HashSet<String>> {
        let mut stmt = self.conn.prepare_cached(LIVE_NAMES_LIKE_SQL)?;
        let rows = stmt.query_map(params![base, project], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Live processes of `owner`, and of `team` when given.
    pub fn live_counts(&self, owner: &str, team: Option<&str>) -> Result<(usize, usize)> {
        let (by_owner, by_team): (i64, i64) = self.conn.prepare_cached("SELECT coalesce(sum(p.owner = ?1), 0), coalesce(sum(?2 IS NOT NULL AND p.team = ?2), 0)
             FROM processes p JOIN runs r ON r.process_id = p.id
             WHERE r.latest = 1 AND r.status IN ('queued', 'starting', 'running', 'ready')")?.query_row(params![owner, team], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok((by_owner as usize, by_team as usize))
    }

    /// Ports of live processes.
    pub fn live_ports(&self) -> Result<Vec<u16>> {
        let sql = format!(
            "SELECT p.port FROM processes p JOIN runs r ON r.process_id = p.id
             WHERE r.latest = 1 AND p.port IS NOT NULL AND {LIVE}"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Number of live runs.
    pub fn live_count(&self) -> Result<usize> {
        let n: i64 = self.conn.prepare_cached("SELECT count(*) FROM runs WHERE status IN ('queued', 'starting', 'running', 'ready')")?.query_row([], |r| r.get(0))?;
        Ok(n as usize)
    }

    /// The stored result of a terminal run.
    pub fn result(&self, run_id: &str) -> Result<Option<RunResult>> {
        let json: Option<Option<String>> = self
            .conn
            .prepare_cached("SELECT result FROM inbox WHERE run_id = ?1")?
            .query_row(params![run_id], |r| r.get(0))
            .optional()?;
        Ok(match json.flatten() {
            Some(j) => Some(serde_json::from_str(&j)?),
            None => None,
        })
    }

    fn notifications(
        &self,
        where_sql: &str,
        p: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<Notification>> {
        let sql = format!(
            "SELECT i.run_id, i.owner, i.created_at, i.acked_at, i.result, i.delivering_since
             FROM inbox i WHERE {where_sql} ORDER BY i.created_at, i.run_id"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(p, |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<i64>>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, Option<i64>>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, owner, created, acked, result, delivering) = row?;
            out.push(Notification {
                id: id.into(),
                owner,
                created_at: ts(created),
                acked_at: acked.map(ts),
                delivering_since: delivering.map(ts),
                result: serde_json::from_str(&result)?,
            });
        }
        Ok(out)
    }

    /// Unacknowledged notifications of `owner`, oldest first.
    pub fn inbox(&self, owner: &str) -> Result<Vec<Notification>> {
        self.notifications("i.owner = ?1 AND i.acked_at IS NULL", &[&owner])
    }

    /// Unacknowledged notifications of `owner` that no resumed host session is being given
    /// now: what a hook or an MCP answer may deliver.
    pub fn deliverable(&self, owner: &str) -> Result<Vec<Notification>> {
        self.notifications(
            "i.owner = ?1 AND i.acked_at IS NULL AND i.delivering_since IS NULL",
            &[&owner],
        )
    }

    /// Marks `ids` of `owner` as being delivered by a resumed host session since `now` (only
    /// those still pending and not held by another delivery); returns the ones it marked.
    pub fn hold_for_delivery(
        &mut self,
        owner: &str,
        ids: &[String],
        now: Timestamp,
    ) -> Result<Vec<String>> {
        let tx = self.conn.transaction()?;
        let mut held = Vec::new();
        for id in ids {
            let n = tx.prepare_cached("UPDATE inbox SET delivering_since = ?3, delivering_pid = NULL, delivering_start = NULL
                 WHERE run_id = ?1 AND owner = ?2 AND acked_at IS NULL AND delivering_since IS NULL")?.execute(params![id, owner, ms(now)])?;
            if n > 0 {
                held.push(id.clone());
            }
        }
        tx.commit()?;
        Ok(held)
    }

    /// Records the host process (pid, start time) that is being given the held `ids`.
    pub fn set_delivery_process(&mut self, ids: &[String], pid: u32, start: u64) -> Result<()> {
        let tx = self.conn.transaction()?;
        for id in ids {
            tx.prepare_cached(
                "UPDATE inbox SET delivering_pid = ?2, delivering_start = ?3
                 WHERE run_id = ?1 AND acked_at IS NULL AND delivering_since IS NOT NULL",
            )?
            .execute(params![id, pid, start as i64])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Makes held `ids` pending again (their delivery failed).
    pub fn release_delivery(&mut self, ids: &[String]) -> Result<()> {
        let tx = self.conn.transaction()?;
        for id in ids {
            tx.prepare_cached("UPDATE inbox SET delivering_since = NULL, delivering_pid = NULL, delivering_start = NULL
                 WHERE run_id = ?1 AND acked_at IS NULL")?.execute(params![id])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Deliveries in flight, grouped by owner and host process: `(owner, pid, start, ids)`;
    /// pid and start are `None` when the daemon stopped before the host process started.
    pub fn deliveries(&self) -> Result<Vec<Delivery>> {
        let mut stmt = self.conn.prepare(
            "SELECT owner, delivering_pid, delivering_start, run_id FROM inbox
             WHERE acked_at IS NULL AND delivering_since IS NOT NULL
             ORDER BY owner, delivering_pid, created_at",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut out: Vec<Delivery> = Vec::new();
        for row in rows {
            let (owner, pid, start, id) = row?;
            let pid = pid.map(|p| p as u32);
            let start = start.map(|s| s as u64);
            match out.last_mut() {
                Some(d) if d.owner == owner && d.pid == pid && d.start == start => d.ids.push(id),
                _ => out.push(Delivery {
                    owner,
                    pid,
                    start,
                    ids: vec![id],
                }),
            }
        }
        Ok(out)
    }

    /// Records (replaces) the host session of `session.owner`.
    pub fn set_host_session(&mut self, session: &HostSession, now: Timestamp) -> Result<()> {
        self.set_owner_json(
            "INSERT INTO host_sessions (owner, session, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(owner) DO UPDATE SET session = excluded.session, updated_at = excluded.updated_at",
            &session.owner,
            session,
            now,
        )
    }

    /// The host session `owner` speaks for, if one was recorded.
    pub fn host_session(&self, owner: &str) -> Result<Option<HostSession>> {
        self.owner_json("SELECT session FROM host_sessions WHERE owner = ?1", owner)
    }

    /// The host session recorded for host process `pid` started at `start`, if any (the newest
    /// when several owners name it).
    pub fn host_session_of_process(&self, pid: u32, start: u64) -> Result<Option<HostSession>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT session FROM host_sessions ORDER BY updated_at DESC")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        for row in rows {
            let s: HostSession = serde_json::from_str(&row?)?;
            if s.pid == Some(pid) && s.pid_start == Some(start) {
                return Ok(Some(s));
            }
        }
        Ok(None)
    }

    /// Acknowledges `ids` of `owner` (all pending ones when `ids` is empty and `all`); returns
    /// the notifications acknowledged now. Unknown or already acknowledged ids are skipped.
    pub fn ack(
        &mut self,
        owner: &str,
        ids: &[String],
        all: bool,
        now: Timestamp,
    ) -> Result<(Vec<Notification>, Vec<Event>)> {
        let pending = self.inbox(owner)?;
        let chosen: Vec<Notification> = pending
            .into_iter()
            .filter(|n| all || ids.contains(&n.id.0))
            .collect();
        let tx = self.conn.transaction()?;
        let mut events = Vec::new();
        for n in &chosen {
            tx.prepare_cached("UPDATE inbox SET acked_at = ?2, delivering_since = NULL WHERE run_id = ?1 AND acked_at IS NULL")?.execute(params![n.id.as_str(), ms(now)])?;
            tx.prepare_cached("UPDATE runs SET unread = 0 WHERE id = ?1")?
                .execute(params![n.id.as_str()])?;
            // The process as it stands, when its run is still the process's latest.
            let process = info_of_run(&tx, &n.id).ok().filter(|p| p.run_id == n.id);
            events.push(append_event(
                &tx,
                EventData::NotificationAcked {
                    id: n.id.clone(),
                    owner: owner.to_string(),
                    process,
                },
                Some(&n.result.process_id),
                Some(&n.id),
                Some(owner),
                now,
            )?);
        }
        tx.commit()?;
        let acked = chosen
            .into_iter()
            .map(|mut n| {
                n.acked_at = Some(now);
                n
            })
            .collect();
        Ok((acked, events))
    }

    /// Deletes terminal runs that ended before `cutoff` and whose notification is read (or
    /// absent), then processes left without runs. Returns the deleted run ids, so their
    /// directories can be removed.
    pub fn prune(&mut self, cutoff: Timestamp) -> Result<Vec<String>> {
        let tx = self.conn.transaction()?;
        let ids: Vec<String> = {
            let mut stmt = tx.prepare(
                "SELECT r.id FROM runs r WHERE r.ended_at IS NOT NULL AND r.ended_at < ?1
                 AND r.status NOT IN ('queued', 'starting', 'running', 'ready')
                 AND r.unread = 0 AND r.latest = 0
                 UNION
                 SELECT r.id FROM runs r JOIN processes p ON p.id = r.process_id
                 WHERE NOT EXISTS (SELECT 1 FROM runs x WHERE x.process_id = p.id
                     AND (x.ended_at IS NULL OR x.ended_at >= ?1
                          OR EXISTS (SELECT 1 FROM inbox i WHERE i.run_id = x.id AND i.acked_at IS NULL)))",
            )?;
            stmt.query_map(params![ms(cutoff)], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?
        };
        delete_runs(&tx, &ids)?;
        tx.prepare_cached("DELETE FROM events WHERE ts < ?1")?
            .execute(params![ms(cutoff)])?;
        tx.prepare_cached("DELETE FROM idempotency WHERE created_at < ?1")?
            .execute(params![ms(cutoff)])?;
        // Environments no spec refers to any more.
        tx.prepare_cached(
            "DELETE FROM envs WHERE NOT EXISTS (SELECT 1 FROM specs s WHERE s.env_hash = envs.hash)",
        )?
        .execute([])?;
        tx.commit()?;
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process of the human's, in the default project, running `spec`.
    fn new_process(id: &str, name: &str, spec: &Spec) -> NewProcess {
        NewProcess {
            id: id.into(),
            name: name.into(),
            owner: "human".into(),
            team: None,
            description: None,
            project: None,
            spec: spec.clone(),
            idempotency_key: None,
        }
    }

    /// SQLite's plan of `sql`, one step per line (`SEARCH p USING INDEX …`, `SCAN r`, …).
    fn plan(store: &Store, sql: &str) -> String {
        let mut stmt = store
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap();
        // The plan does not depend on the values (no STAT4): NULL for each parameter.
        let nulls = vec![rusqlite::types::Null; stmt.parameter_count()];
        let rows = stmt
            .query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
            .unwrap();
        rows.map(|r| r.unwrap()).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn the_statements_of_a_runs_start_are_compiled_once_whatever_they_are_given() {
        // SQLite recompiles a statement for each new value of a parameter that it could match
        // against a partial index (the planner's "stability guarantee" off): a run's start then
        // parsed its queries again every time.
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("aside.db")).unwrap();
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "cmd": "sleep 60", "cwd": "/", "env": {"PATH": "/bin"}, "log_cap_bytes": 1024,
            "grace_ms": 1000
        }))
        .unwrap();
        let now = Timestamp::now();
        for i in 0..5 {
            let p = new_process(&format!("p{i}"), &format!("n{i}"), &spec);
            assert!(!store.live_name_taken(None, &p.name).unwrap());
            store.insert_process(&p, &format!("r{i}"), now).unwrap();
            store.set_running(&format!("r{i}"), 100 + i, now).unwrap();
            assert!(store.find(&format!("p{i}")).unwrap().is_some());
            assert!(store.process_record(&format!("r{i}")).unwrap().is_some());
        }
        let sqls = [
            find_sql(PROCESS_COLUMNS, PROCESS_FROM_ONE, FindBy::Id),
            LIVE_NAME_TAKEN_SQL.to_string(),
            format!("SELECT {INFO_COLUMNS} FROM {INFO_FROM} WHERE r.id = ?1"),
        ];
        for sql in sqls {
            let stmt = store.conn.prepare_cached(&sql).unwrap();
            let reprepared = stmt.get_status(rusqlite::StatementStatus::RePrepare);
            assert_eq!(reprepared, 0, "{sql}");
        }
    }

    #[test]
    fn an_environment_is_kept_once_and_every_spec_reads_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("aside.db")).unwrap();
        let spec = |env: serde_json::Value| -> Spec {
            serde_json::from_value(serde_json::json!({
                "cmd": "sleep 60", "cwd": "/", "env": env, "log_cap_bytes": 1024, "grace_ms": 1000
            }))
            .unwrap()
        };
        let client =
            serde_json::json!({"PATH": "/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8"});
        let new = |id: &str, spec: Spec| new_process(id, id, &spec);
        let now = Timestamp::now();
        let envs = |store: &Store| -> i64 {
            store
                .conn
                .query_row("SELECT count(*) FROM envs", [], |r| r.get(0))
                .unwrap()
        };
        store
            .insert_process(&new("p1", spec(client.clone())), "r1", now)
            .unwrap();
        store
            .insert_process(&new("p2", spec(client.clone())), "r2", now)
            .unwrap();
        store
            .insert_process(
                &new("p3", spec(serde_json::json!({"PATH": "/bin"}))),
                "r3",
                now,
            )
            .unwrap();
        assert_eq!(
            envs(&store),
            2,
            "two processes of one client share its environment"
        );
        let env_of = |store: &Store, id: &str| store.find(id).unwrap().unwrap().spec.env;
        assert_eq!(env_of(&store, "p1"), spec(client.clone()).env);
        assert_eq!(env_of(&store, "p2"), spec(client.clone()).env);
        assert_eq!(
            env_of(&store, "p3").get("PATH").map(String::as_str),
            Some("/bin")
        );
        // A spec replaced with another environment reads the new one.
        store
            .replace_spec(
                "p2",
                &spec(serde_json::json!({"PATH": "/opt/bin"})),
                "human",
                None,
            )
            .unwrap();
        assert_eq!(
            env_of(&store, "p2").get("PATH").map(String::as_str),
            Some("/opt/bin")
        );
        assert_eq!(env_of(&store, "p1"), spec(client.clone()).env);
        // A spec written before environments were kept apart holds its own, and reads it.
        store
            .conn
            .execute(
                "UPDATE specs SET spec = ?1, env_hash = NULL WHERE process_id = 'p3'",
                [serde_json::to_string(&spec(serde_json::json!({"PATH": "/old"}))).unwrap()],
            )
            .unwrap();
        assert_eq!(
            env_of(&store, "p3").get("PATH").map(String::as_str),
            Some("/old")
        );
        // Pruning drops the environments no spec refers to any more (p3's first one).
        store
            .prune(now - jiff::SignedDuration::from_hours(1))
            .unwrap();
        assert_eq!(envs(&store), 2, "the client's and p2's new one");
    }

    #[test]
    fn a_listing_from_memory_is_the_one_the_database_would_give() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("aside.db")).unwrap();
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "cmd": "sleep 60", "cwd": "/", "env": {}, "log_cap_bytes": 1024, "grace_ms": 1000
        }))
        .unwrap();
        let new = |id: &str, name: &str| new_process(id, name, &spec);
        let live = ListFilter::default();
        let started = Timestamp::now() - jiff::SignedDuration::from_secs(5);
        store
            .insert_process(&new("p1", "one"), "r1", started)
            .unwrap();
        let first = store.list(&live).unwrap();
        assert_eq!(first.len(), 1);
        // Nothing changed: the same listing, only later.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let again = store.list(&live).unwrap();
        assert_eq!(again[0].status, Status::Starting);
        assert!(
            again[0].duration_ms >= first[0].duration_ms + 20,
            "{again:?}"
        );
        // Each kind of change shows at once: a new process, a run's start, another filter.
        store
            .insert_process(&new("p2", "two"), "r2", started)
            .unwrap();
        assert_eq!(store.list(&live).unwrap().len(), 2);
        store.set_running("r1", 4242, started).unwrap();
        let running = store.list(&live).unwrap();
        assert_eq!(running[0].status, Status::Running);
        assert_eq!(running[0].pid, Some(4242));
        let other = ListFilter {
            owner: Some("someone".into()),
            ..Default::default()
        };
        assert!(store.list(&other).unwrap().is_empty());
        assert_eq!(store.list(&live).unwrap().len(), 2);
    }

    #[test]
    fn a_lookup_of_one_process_searches_indexes_and_scans_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("aside.db")).unwrap();
        let mut lookups = vec![
            LIVE_NAME_TAKEN_SQL.to_string(),
            LIVE_NAMES_LIKE_SQL.to_string(),
            unlist_same_name_sql(),
        ];
        for by in [FindBy::ProjectName, FindBy::Id, FindBy::Name] {
            lookups.push(find_sql(PROCESS_COLUMNS, PROCESS_FROM_ONE, by));
            lookups.push(find_sql(INFO_COLUMNS, INFO_FROM_ONE, by));
        }
        for sql in lookups {
            let plan = plan(&store, &sql);
            // Every latest run (`runs_latest`) or every process (`SCAN`) for one process is
            // work that grows with the number of processes.
            let grows = plan
                .lines()
                .filter(|step| *step != "SCAN CONSTANT ROW")
                .any(|step| step.starts_with("SCAN") || step.contains("runs_latest"));
            assert!(!grows, "{sql}\nis planned as\n{plan}");
        }
    }

    #[test]
    fn an_exit_record_ends_a_run_with_one_status() {
        use crate::rundir::{ExitRecord, StopControl};
        let exit = |code: Option<i32>, bytes: u64| ExitRecord {
            exit_code: code,
            signal: None,
            ended_at: Timestamp::UNIX_EPOCH,
            timed_out: false,
            stop: None,
            error: None,
            stdout_bytes: bytes,
            stderr_bytes: 0,
        };
        let status = |e: &ExitRecord| RunEnd::from_exit(e).status;
        assert_eq!(status(&exit(Some(0), 3)), Status::Completed);
        assert_eq!(status(&exit(Some(0), 0)), Status::CompletedEmpty);
        assert_eq!(status(&exit(Some(2), 3)), Status::Failed);
        assert_eq!(status(&exit(None, 3)), Status::Failed);
        // A stop outranks the timeout that fired during it; a spawn error outranks both.
        let mut stopped = exit(None, 0);
        stopped.timed_out = true;
        stopped.stop = Some(StopControl {
            signal: libc::SIGTERM,
            grace_ms: 5000,
            requested_by: "agent-a".into(),
        });
        let end = RunEnd::from_exit(&stopped);
        assert_eq!(
            (end.status, end.stopped_by.as_deref()),
            (Status::Stopped, Some("agent-a"))
        );
        stopped.error = Some("no such file".into());
        assert_eq!(status(&stopped), Status::Failed);
        let mut timed_out = exit(None, 0);
        timed_out.timed_out = true;
        assert_eq!(status(&timed_out), Status::TimedOut);
    }

    #[test]
    fn a_version_1_database_is_migrated_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aside.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.pragma_update(None, "application_id", APPLICATION_ID)
                .unwrap();
            conn.execute(
                "INSERT INTO processes (id, name, owner, command, cwd, created_at) VALUES ('p1', 'old', 'human', 'true', '/', 0)",
                [],
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let version: i64 = store
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let (name, description): (String, Option<String>) = store
            .conn
            .query_row(
                "SELECT name, description FROM processes WHERE id = 'p1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((name.as_str(), description), ("old", None));
    }
}
