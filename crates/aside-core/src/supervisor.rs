//! `Supervisor`: starts shims, watches them, stops and restarts runs, reconciles after a crash
//! and turns every terminal run into one result and one inbox notification.
//!
//! The supervisor is not the parent of the commands (their shims are, see [`crate::shim`]); it
//! learns that a run ended when its shim exits — by waiting on the shim it spawned, or, after a
//! daemon restart, on a pidfd of the shim it re-attached to — and then reads the shim's exit
//! record. Because the record is on disk, [`Supervisor::reconcile`] can account for every run
//! after `kill -9` of the daemon: shim alive → re-attach; exit record present → result;
//! neither → `abandoned`, with what is left of the run's session killed.
//!
//! Nothing here holds a lock across a wait: a stop that waits out a grace period blocks only
//! its own caller.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aside_proto::{
    AckResponse, Command, ErrorCode, Event, HUMAN_OWNER, InboxResponse, LogEntry, LogQuery,
    LogsResponse, Notification, ProcessInfo, RestartState, RunRequest, RunResult, Spec, Status,
    StopAllResponse, StopRequest, TakeResponse, WaitOutcome, WaitQuery, WaitResponse,
};
use jiff::Timestamp;
use regex::Regex;
use tokio::io::AsyncBufReadExt;
use tokio::sync::{broadcast, mpsc, watch};

use crate::audit::{AuditEntry, AuditLog};
use crate::logs::{self, LineSplitter, LogReader};
use crate::paths::StateDir;
use crate::policy::{Policy, PolicyStore, Verdict};
use crate::proc;
use crate::rundir::{CONTROL_FILE, ExitRecord, NOTES_FILE, RunDir, SHIM_LOG, StopControl};
use crate::store::{Finish, ListFilter, NewProcess, ProcessRow, Store, StoreError};

/// Default grace between SIGTERM and SIGKILL: 5 s.
pub const DEFAULT_GRACE_MS: u64 = 5_000;
/// Bytes of output kept at the start of a result.
pub const RESULT_HEAD_BYTES: usize = 2048;
/// Bytes of output kept at the end of a result.
pub const RESULT_TAIL_BYTES: usize = 4096;
/// Longest line a log read returns, in bytes; longer ones are cut with a note.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Longest the daemon waits for a new shim to report its pid.
const SHIM_REPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// A follower or waiter re-reads at least this often even without a file event.
const SAFETY_RECHECK: Duration = Duration::from_secs(1);

mod access;
pub use access::random_hex;
mod files;
mod project;
mod recover;
mod wake;

pub use project::{AUTO_PORTS, PROXY_PORTS, find_cycle};

/// A run request checked and turned into a spec, ready to start.
#[derive(Debug, Clone)]
struct Validated {
    name: Option<String>,
    idempotency_key: Option<String>,
    owner: String,
    team: Option<String>,
    project: Option<String>,
    description: Option<String>,
    spec: Spec,
}

pub use wake::DEFAULT_IDLE_AFTER_MS;

/// The open-files limit the daemon started with, restored for every shim (and so every
/// command) by [`raise_fd_limit`]'s counterpart in the shim spawn.
static ORIGINAL_NOFILE: std::sync::OnceLock<rustix::process::Rlimit> = std::sync::OnceLock::new();

/// Raises this process's soft open-files limit to the hard one: a daemon holds a few
/// descriptors per running process (the shim's pidfd, an inotify watch) and 1024 is a common
/// soft default. Shims started afterwards get the original limit back, so commands see the
/// limit they would have had without `aside`.
pub fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        let _ = ORIGINAL_NOFILE.set(lim);
        let raised = rustix::process::Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!("cannot raise the open-files limit: {e}");
        }
    }
}

/// Errors of supervisor operations; each maps to one [`ErrorCode`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such process or run.
    #[error("{0}")]
    NotFound(String),
    /// A bad request.
    #[error("{0}")]
    Invalid(String),
    /// Clashes with the current state.
    #[error("{0}")]
    Conflict(String),
    /// The requester may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The state database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file or process operation failed.
    #[error("{0}")]
    Io(String),
}

impl Error {
    /// The wire error kind.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::Invalid(_) => ErrorCode::InvalidRequest,
            Error::Conflict(_) => ErrorCode::Conflict,
            Error::Forbidden(_) => ErrorCode::Forbidden,
            Error::Store(_) | Error::Io(_) => ErrorCode::Internal,
        }
    }
}

type Result<T> = std::result::Result<T, Error>;

fn io_err(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let msg = format!("{what} {}", path.display());
    move |e| Error::Io(format!("{msg}: {e}"))
}

/// Tunables of a supervisor.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How to start a shim: the program and its leading arguments, to which the run directory
    /// is appended, e.g. `["/usr/bin/aside-shim"]` or `["/usr/bin/aside", "__shim"]`.
    pub shim_command: Vec<std::ffi::OsString>,
    /// Default log cap in bytes.
    pub default_log_cap: u64,
    /// Terminal runs older than this are pruned (their notifications read).
    pub prune_after: Duration,
    /// The permission policy file (it need not exist: then the built-in policy applies).
    pub policy_path: std::path::PathBuf,
    /// Wake actions wait this long after a result arrives, to batch results that come together.
    pub wake_debounce: Duration,
    /// First wait before a wake is tried again (it doubles, up to 10 minutes).
    pub wake_backoff: Duration,
    /// Rebuild the database from the run directories (the old one is moved aside).
    pub recover: bool,
}

struct Live {
    process_id: String,
    /// The shim's pid, set once the shim reported (its signal handlers are installed by then).
    shim_pid: watch::Sender<Option<i32>>,
    done: watch::Sender<bool>,
}

struct Inner {
    state: StateDir,
    settings: Settings,
    store: Mutex<Store>,
    live: Mutex<HashMap<String, Live>>,
    log_events: Arc<Mutex<HashMap<String, watch::Sender<u64>>>>,
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
    /// Serializes name checks and limit counts with inserts so two `run`s cannot both win.
    start_lock: tokio::sync::Mutex<()>,
    policy: PolicyStore,
    audit: AuditLog,
    events: broadcast::Sender<Event>,
    wake: Mutex<wake::WakeState>,
    /// Runs that ended but whose result the database did not take yet, with why.
    unrecorded: Mutex<HashMap<String, String>>,
    /// When each run's progress was last announced (the throttle), and runs with a held-back
    /// report to announce.
    progress: Mutex<HashMap<String, std::time::Instant>>,
    progress_pending: Mutex<std::collections::HashSet<String>>,
    /// Runs that had ended before a `--recover`: their results are recorded read.
    recovered: Mutex<Vec<String>>,
    /// The daemon's own environment and API ports, for judging agents.
    trusted: Mutex<crate::policy::Trusted>,
    /// File watches of processes (`watch`).
    watches: Mutex<files::WatchState>,
    /// Per project: bumped by `down` to cancel the starts its `up` still has pending.
    projects: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// Restarts waiting out their delay.
    pending_restarts: std::sync::atomic::AtomicUsize,
    /// The previous CPU sample of each live run, for CPU percentages.
    cpu_samples: Mutex<access::CpuSamples>,
}

/// The runtime. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Strips a trailing `&` (the command is in the background already), but not `&&`.
pub fn strip_trailing_ampersand(cmd: &str) -> &str {
    let t = cmd.trim_end();
    match t.strip_suffix('&') {
        Some(rest) if !rest.ends_with('&') => rest.trim_end(),
        _ => t,
    }
}

/// Who is asking: the owner named on the request (`aside-owner`), and its team.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    /// The asking owner; `human` for a person.
    pub owner: String,
    /// The asking owner's team, if any.
    pub team: Option<String>,
    /// How the request came (`socket`, `web`, `token:ID`), for the audit log.
    pub via: Option<String>,
    /// Which listener took it, and with what token ([`crate::authz::authorize`] decides).
    pub access: crate::authz::Access,
}

impl Requester {
    /// A person at the local socket: may do everything, and the policy does not apply.
    pub fn human() -> Requester {
        Requester {
            owner: HUMAN_OWNER.into(),
            team: None,
            via: None,
            access: crate::authz::Access::Local,
        }
    }

    /// An owner with an optional team.
    pub fn new(owner: impl Into<String>, team: Option<String>) -> Requester {
        Requester {
            owner: owner.into(),
            team: team.filter(|t| !t.is_empty()),
            via: None,
            access: crate::authz::Access::Local,
        }
    }

    /// The same requester, recorded in the audit log as having come `via` (`web`, `token:ID`).
    pub fn via(mut self, via: Option<String>) -> Requester {
        self.via = via;
        self
    }

    /// The same requester, as taken by a listener with `access` (its `via` follows).
    pub fn with_access(mut self, access: crate::authz::Access) -> Requester {
        self.via = Some(access.via());
        self.access = access;
        self
    }

    /// True for a human: the policy's rules and limits apply to everyone else.
    pub fn is_human(&self) -> bool {
        self.owner == HUMAN_OWNER
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@'))
        // Not a path component, not an option, not something that reads as a process id.
        && name != "."
        && name != ".."
        && !name.starts_with('-')
        && uuid::Uuid::parse_str(name).is_err()
}

/// Longest owner or team, in bytes.
pub const MAX_OWNER_LEN: usize = 128;

/// Checks an owner or team name: 1-128 bytes, no control characters (NUL included).
pub fn check_owner(what: &str, owner: &str) -> Result<()> {
    if owner.len() > MAX_OWNER_LEN || owner.chars().any(char::is_control) {
        return Err(Error::Invalid(format!(
            "invalid {what} {:?}: at most {MAX_OWNER_LEN} bytes, no control characters",
            owner.chars().take(40).collect::<String>()
        )));
    }
    Ok(())
}

/// Refuses a NUL byte in `text` (`what` names the field): the kernel would cut the string
/// there, so what runs would differ from what was judged and recorded.
fn no_nul(what: &str, text: &str) -> Result<()> {
    if text.contains('\0') {
        return Err(Error::Invalid(format!(
            "{what} contains a NUL byte, which no program can be given"
        )));
    }
    Ok(())
}

fn base_name(cmd: &Command) -> String {
    let first = match cmd {
        Command::Shell(s) => s.split_whitespace().next().unwrap_or("proc").to_string(),
        Command::Argv(a) => a.first().cloned().unwrap_or_else(|| "proc".into()),
    };
    let base = first.rsplit('/').next().unwrap_or(&first);
    let clean: String = base
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(32)
        .collect();
    if clean.is_empty() {
        "proc".into()
    } else {
        clean
    }
}

fn classify(exit: &ExitRecord) -> (Status, Option<String>) {
    if exit.error.is_some() {
        return (Status::Failed, None);
    }
    if let Some(stop) = &exit.stop {
        return (Status::Stopped, Some(stop.requested_by.clone()));
    }
    if exit.timed_out {
        return (Status::TimedOut, None);
    }
    match exit.exit_code {
        Some(0) if exit.stdout_bytes + exit.stderr_bytes == 0 => (Status::CompletedEmpty, None),
        Some(0) => (Status::Completed, None),
        _ => (Status::Failed, None),
    }
}

impl Supervisor {
    /// Opens the store in `state` (which must exist, see [`StateDir::ensure`]) and starts the
    /// log watcher. Call [`Supervisor::reconcile`] next. Errors: the database is foreign or
    /// unreadable.
    pub fn open(state: StateDir, settings: Settings) -> Result<Supervisor> {
        let recovered = if settings.recover {
            recover::rebuild(&state)?
        } else {
            recover::check_not_lost(&state)?;
            Vec::new()
        };
        let store = Store::open(&state.db())?;
        let log_events: Arc<Mutex<HashMap<String, watch::Sender<u64>>>> = Default::default();
        let events = Arc::clone(&log_events);
        let runs_dir = state.runs();
        let (file_tx, file_rx) = mpsc::unbounded_channel();
        // One watcher for the daemon: run logs (followers, waiters) and watched project files.
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(ev) = res else { return };
            if ev.kind.is_access() {
                return;
            }
            let map = lock(&events);
            for path in &ev.paths {
                if path.starts_with(&runs_dir) {
                    // runs/<run_id>/log/<segment>
                    let run = path
                        .parent()
                        .and_then(Path::parent)
                        .and_then(Path::file_name)
                        .and_then(|n| n.to_str());
                    if let Some(tx) = run.and_then(|r| map.get(r)) {
                        tx.send_modify(|n| *n += 1);
                    }
                } else {
                    let _ = file_tx.send(files::FileEvent {
                        path: path.clone(),
                        created: ev.kind.is_create(),
                    });
                }
            }
        })
        .map_err(|e| {
            tracing::warn!("file watching unavailable, log follows re-read every second: {e}")
        })
        .ok();
        Ok(Supervisor {
            inner: Arc::new(Inner {
                policy: PolicyStore::new(settings.policy_path.clone()),
                audit: AuditLog::new(state.audit_log()),
                state,
                settings,
                store: Mutex::new(store),
                live: Mutex::new(HashMap::new()),
                log_events,
                watcher: Mutex::new(watcher),
                start_lock: tokio::sync::Mutex::new(()),
                events: broadcast::channel(1024).0,
                wake: Mutex::new(wake::WakeState::default()),
                trusted: Mutex::new(crate::policy::Trusted::from_process()),
                unrecorded: Mutex::new(HashMap::new()),
                progress: Mutex::new(HashMap::new()),
                progress_pending: Mutex::new(Default::default()),
                recovered: Mutex::new(recovered),
                watches: Mutex::new(files::WatchState::new(file_rx)),
                projects: Mutex::new(HashMap::new()),
                pending_restarts: std::sync::atomic::AtomicUsize::new(0),
                cpu_samples: Mutex::new(access::CpuSamples::default()),
            }),
        })
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.inner.store)
    }

    fn run_dir(&self, run_id: &str) -> RunDir {
        RunDir::new(self.inner.state.run_dir(run_id))
    }

    /// Sends committed events to live subscribers. Called with the store lock held, so they
    /// go out in the order of their sequence numbers.
    fn publish(&self, events: &[Event]) {
        for e in events {
            // No subscriber is fine: the event log keeps it for replay.
            let _ = self.inner.events.send(e.clone());
        }
    }

    fn set_running(&self, run_id: &str, pid: i32, started_at: Timestamp) -> Result<()> {
        let mut store = self.store();
        if let Some(e) = store.set_running(run_id, pid, started_at)? {
            self.publish(std::slice::from_ref(&e));
        }
        Ok(())
    }

    /// Live events from now on. Subscribe before reading [`Supervisor::events_since`] and
    /// skip sequence numbers already seen: then nothing falls between replay and live. A
    /// receiver that lags behind gets `Lagged` and should replay from the log.
    pub fn subscribe_events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Logged events after `since` (oldest first, at most `limit`), of `owner` when given.
    pub fn events_since(
        &self,
        since: u64,
        owner: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Event>> {
        Ok(self.store().events_since(since, owner, limit)?)
    }

    /// The newest event's sequence number (0 when none).
    pub fn last_event_seq(&self) -> Result<u64> {
        Ok(self.store().last_event_seq()?)
    }

    /// Every event after `since`, in sequence order, then the new ones as they happen, each
    /// once — the invariant *events in order, none lost*: it subscribes before it reads the log
    /// (so nothing falls between), skips the sequence numbers the replay sent, and replays from
    /// the log again when it falls behind the live channel. `owner` filters in the store; the
    /// stream ends when the daemon's events close.
    pub fn event_stream(
        &self,
        since: u64,
        owner: Option<String>,
    ) -> impl futures_util::Stream<Item = Event> + Send + use<> {
        struct St {
            sup: Supervisor,
            rx: broadcast::Receiver<Event>,
            backlog: std::collections::VecDeque<Event>,
            last: u64,
            replaying: bool,
            owner: Option<String>,
        }
        // Subscribe first, then read the log.
        let st = St {
            sup: self.clone(),
            rx: self.subscribe_events(),
            backlog: Default::default(),
            last: since,
            replaying: true,
            owner,
        };
        futures_util::stream::unfold(st, |mut st| async move {
            loop {
                if let Some(e) = st.backlog.pop_front() {
                    st.last = e.seq;
                    return Some((e, st));
                }
                if st.replaying {
                    match st
                        .sup
                        .events_since(st.last, st.owner.as_deref(), REPLAY_BATCH)
                    {
                        Ok(batch) if !batch.is_empty() => {
                            st.backlog.extend(batch);
                            continue;
                        }
                        Ok(_) => st.replaying = false,
                        Err(e) => {
                            tracing::error!("event replay failed: {e}");
                            return None;
                        }
                    }
                }
                match st.rx.recv().await {
                    Ok(e)
                        if e.seq > st.last
                            && st
                                .owner
                                .as_ref()
                                .is_none_or(|o| e.owner.as_ref() == Some(o)) =>
                    {
                        st.backlog.push_back(e)
                    }
                    Ok(_) => {}
                    // Fell behind the live channel: the log has everything.
                    Err(broadcast::error::RecvError::Lagged(_)) => st.replaying = true,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }

    /// Number of live runs.
    pub fn live_count(&self) -> usize {
        lock(&self.inner.live).len()
    }

    /// True while the daemon has work even with nothing running: a restart waiting out its
    /// delay, a file watch that may revive an ended process, or results waiting to wake their
    /// owner. The daemon does not idle-exit while this holds.
    pub fn has_duties(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.inner.pending_restarts.load(Ordering::SeqCst) > 0 || self.watching() || self.waking()
    }

    fn watch_logs(&self, run_id: &str, dir: &Path) {
        lock(&self.inner.log_events)
            .entry(run_id.to_string())
            .or_insert_with(|| watch::channel(0).0);
        if let Some(w) = lock(&self.inner.watcher).as_mut() {
            use notify::Watcher;
            if let Err(e) = w.watch(dir, notify::RecursiveMode::NonRecursive) {
                tracing::warn!("cannot watch {}: {e}", dir.display());
            }
        }
    }

    fn unwatch_logs(&self, run_id: &str, dir: &Path) {
        if let Some(tx) = lock(&self.inner.log_events).remove(run_id) {
            tx.send_modify(|n| *n += 1);
        }
        if let Some(w) = lock(&self.inner.watcher).as_mut() {
            use notify::Watcher;
            let _ = w.unwatch(dir);
        }
    }

    fn log_rx(&self, run_id: &str) -> Option<watch::Receiver<u64>> {
        lock(&self.inner.log_events)
            .get(run_id)
            .map(|t| t.subscribe())
    }

    /// `None` when the run is not live (terminal, or unknown).
    fn done_rx(&self, run_id: &str) -> Option<watch::Receiver<bool>> {
        lock(&self.inner.live)
            .get(run_id)
            .map(|l| l.done.subscribe())
    }

    /// The process with this id, `PROJECT/NAME` or name (the newest, for a reused name; a
    /// live one before an ended one). Errors: none matches; the name is live in several
    /// projects and none of them is the default one (then it must be given as `PROJECT/NAME`).
    pub fn find(&self, reference: &str) -> Result<ProcessRow> {
        let store = self.store();
        // A process id, `project/name`, a name, or the id of one of its runs.
        let found = match store.find(reference)? {
            Some(r) => Some(r),
            None => store.find_by_run(reference)?,
        };
        let mut row = found.ok_or_else(|| {
            Error::NotFound(format!(
                "no process named or with id {reference:?} (nor a run with that id): `aside status --all` lists them"
            ))
        })?;
        row.info.unrecorded = lock(&self.inner.unrecorded).get(&row.info.run_id).cloned();
        if row.info.id != reference
            && !reference.contains('/')
            && row.info.project.is_some()
            && !row.info.status.is_terminal()
        {
            let projects = store.live_projects_named(reference)?;
            if projects.len() > 1 {
                let refs: Vec<String> = projects
                    .iter()
                    .map(|p| format!("{p}/{reference}"))
                    .collect();
                return Err(Error::Conflict(format!(
                    "{reference:?} names a running process in {} projects: say which, as {}",
                    projects.len(),
                    refs.join(" or ")
                )));
            }
        }
        Ok(row)
    }

    /// Processes with their latest run (see [`Store::list`]).
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<ProcessInfo>> {
        let mut list = self.store().list(filter)?;
        let unrecorded = lock(&self.inner.unrecorded);
        if !unrecorded.is_empty() {
            for p in &mut list {
                p.unrecorded = unrecorded.get(&p.run_id).cloned();
            }
        }
        Ok(list)
    }

    fn validate(&self, req: RunRequest) -> Result<Validated> {
        let cmd = match req.cmd {
            Some(Command::Shell(s)) => {
                let s = strip_trailing_ampersand(&s);
                if s.trim().is_empty() {
                    return Err(Error::Invalid(
                        "the command is empty: give the command to run, e.g. `aside run 'make test'`".into(),
                    ));
                }
                Command::Shell(s.to_string())
            }
            Some(Command::Argv(a)) if a.first().is_some_and(|p| !p.is_empty()) => Command::Argv(a),
            _ => {
                return Err(Error::Invalid(
                    "the command is empty: give the command to run, e.g. `aside run 'make test'`"
                        .into(),
                ));
            }
        };
        let cwd = req
            .cwd
            .ok_or_else(|| Error::Invalid("cwd is required: an absolute directory".into()))?;
        let cwd_path = Path::new(&cwd);
        if !cwd_path.is_absolute() {
            return Err(Error::Invalid(format!(
                "cwd {cwd:?} is not absolute: pass an absolute directory"
            )));
        }
        match fs::metadata(cwd_path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::Invalid(format!(
                    "cwd {cwd} is not a directory: pass a directory with --cwd"
                )));
            }
            Err(e) => {
                return Err(Error::Invalid(format!(
                    "cwd {cwd} cannot be used: {e}; pass an existing directory with --cwd"
                )));
            }
        }
        if rustix::fs::access(
            cwd_path,
            rustix::fs::Access::EXEC_OK | rustix::fs::Access::READ_OK,
        )
        .is_err()
        {
            return Err(Error::Invalid(format!(
                "cwd {cwd} is not readable and searchable by this user: pass another directory with --cwd"
            )));
        }
        if req.timeout_ms == Some(0) {
            return Err(Error::Invalid(
                "timeout must be longer than 0: e.g. --timeout 30s".into(),
            ));
        }
        let log_cap_bytes = req
            .log_cap_bytes
            .unwrap_or(self.inner.settings.default_log_cap);
        if log_cap_bytes < logs::MIN_LOG_CAP {
            return Err(Error::Invalid(format!(
                "log cap {log_cap_bytes} bytes is below the minimum of {} bytes",
                logs::MIN_LOG_CAP
            )));
        }
        if let Some(name) = &req.name
            && !valid_name(name)
        {
            return Err(Error::Invalid(format!(
                "invalid name {name:?}: use 1-64 letters, digits and - _ . : @ (not . or .., not starting with -, not shaped like a process id)"
            )));
        }
        let project = req.project.filter(|p| !p.is_empty());
        if let Some(p) = &project
            && !valid_name(p)
        {
            return Err(Error::Invalid(format!(
                "invalid project name {p:?}: use 1-64 letters, digits and - _ . : @"
            )));
        }
        project::validate_probe(req.ready.as_ref())?;
        if let Some(r) = &req.restart
            && r.backoff_max_ms.is_some_and(|cap| cap < r.delay_ms)
        {
            return Err(Error::Invalid(format!(
                "the restart backoff cap ({} ms) is shorter than the restart delay ({} ms): raise the cap",
                r.backoff_max_ms.unwrap_or_default(),
                r.delay_ms
            )));
        }
        let watch = match req.watch {
            Some(w) if w.patterns.is_empty() => None,
            Some(w) => {
                files::compile(&w)?;
                if !Path::new(&w.root).is_absolute() {
                    return Err(Error::Invalid(format!(
                        "the watch root {:?} is not absolute",
                        w.root
                    )));
                }
                Some(w)
            }
            None => None,
        };
        let mut env = if req.env.is_empty() {
            std::env::vars().collect()
        } else {
            req.env
        };
        if let Some(port) = req.port {
            if port == 0 {
                return Err(Error::Invalid(
                    "port 0 is not a port: give the port the process listens on".into(),
                ));
            }
            env.entry("PORT".into()).or_insert_with(|| port.to_string());
            env.entry("HOST".into())
                .or_insert_with(|| "127.0.0.1".into());
        }
        let owner = req
            .owner
            .filter(|o| !o.is_empty())
            .unwrap_or_else(|| HUMAN_OWNER.to_string());
        check_owner("owner", &owner)?;
        if let Some(t) = &req.team {
            check_owner("team", t)?;
        }
        match &cmd {
            Command::Shell(s) => no_nul("the command", s)?,
            Command::Argv(a) => a.iter().try_for_each(|x| no_nul("an argument", x))?,
        }
        no_nul("cwd", &cwd)?;
        for (k, v) in &env {
            if k.is_empty() || k.contains('=') {
                return Err(Error::Invalid(format!(
                    "invalid environment variable name {k:?}: it must be non-empty and hold no '='"
                )));
            }
            no_nul("an environment variable's name", k)?;
            no_nul(&format!("environment variable {k}"), v)?;
        }
        if let Some(d) = &req.description {
            no_nul("the description", d)?;
        }
        if let Some(k) = &req.idempotency_key
            && (k.is_empty() || k.len() > 128 || k.chars().any(char::is_control))
        {
            return Err(Error::Invalid(
                "invalid idempotency_key: 1-128 bytes, no control characters".into(),
            ));
        }
        Ok(Validated {
            name: req.name,
            idempotency_key: req.idempotency_key,
            owner,
            team: req.team.filter(|t| !t.is_empty()),
            project,
            description: req.description.filter(|d| !d.trim().is_empty()),
            spec: Spec {
                cmd,
                cwd,
                env,
                timeout_ms: req.timeout_ms,
                grace_ms: req.grace_ms.unwrap_or(DEFAULT_GRACE_MS),
                log_cap_bytes,
                interactive: req.interactive,
                restart: req
                    .restart
                    .filter(|r| r.autorestart != aside_proto::Autorestart::Never),
                ready: req.ready,
                port: req.port,
                proxy: req.proxy,
                watch,
                depends_on: req.depends_on,
                digest: req.digest,
            },
        })
    }

    /// Starts a command in the background and answers once it runs (with its pid) or failed
    /// to start. Errors: invalid request (empty command, bad cwd, bad name), a name in use by a
    /// live process, or the state directory refusing writes.
    pub async fn run(&self, req: RunRequest, who: &Requester) -> Result<ProcessInfo> {
        let explicit_log_cap = req.log_cap_bytes.is_some();
        let v = self.validate(req)?;
        self.start_validated(v, explicit_log_cap, who, Vec::new())
            .await
    }

    /// Starts a validated process (see [`Supervisor::run`]); `notes` are written to the head of
    /// its log as `[aside]` annotations.
    async fn start_validated(
        &self,
        v: Validated,
        explicit_log_cap: bool,
        who: &Requester,
        notes: Vec<String>,
    ) -> Result<ProcessInfo> {
        let Validated {
            name,
            idempotency_key,
            owner,
            team,
            project,
            description,
            mut spec,
        } = v;
        let process_id = uuid::Uuid::now_v7().to_string();
        let run_id = uuid::Uuid::now_v7().to_string();
        {
            let _guard = self.inner.start_lock.lock().await;
            if let Some(key) = &idempotency_key {
                let earlier = self.store().process_for_key(&owner, key)?;
                if let Some(pid) = earlier {
                    // A retry of a request that was carried out: its process, not a second.
                    return Ok(self.find(&pid)?.info);
                }
            }
            self.admit(
                who,
                &owner,
                team.as_deref(),
                &mut spec,
                explicit_log_cap,
                false,
            )?;
            if spec.proxy && spec.port.is_none() {
                project::assign_port(&mut spec, self.free_port(project::AUTO_PORTS)?);
            }
            let name = {
                let store = self.store();
                let pj = project.as_deref();
                match name {
                    Some(n) => {
                        if store.live_name_taken(pj, &n)? {
                            let r = pj.map_or(n.clone(), |p| format!("{p}/{n}"));
                            return Err(Error::Conflict(format!(
                                "the name {n:?} is already used by a running process: choose another --name, or stop it first (`aside stop {r}`)"
                            )));
                        }
                        n
                    }
                    None => {
                        let base = base_name(&spec.cmd);
                        let taken = store.live_names_like(pj, &base)?;
                        let mut candidate = base.clone();
                        let mut i = 2;
                        while taken.contains(&candidate) {
                            candidate = format!("{base}-{i}");
                            i += 1;
                        }
                        candidate
                    }
                }
            };
            let p = NewProcess {
                id: process_id.clone(),
                name,
                owner,
                team,
                description,
                project,
                spec: spec.clone(),
                idempotency_key,
            };
            self.store().insert_process(&p, &run_id, Timestamp::now())?;
            self.register_live(&run_id, &process_id);
        }
        if let Some(w) = &spec.watch {
            self.watch_files(&process_id, w);
        }
        self.launch(&run_id, &spec, &notes).await;
        Ok(self.find(&process_id)?.info)
    }

    fn register_live(&self, run_id: &str, process_id: &str) {
        lock(&self.inner.live).insert(
            run_id.to_string(),
            Live {
                process_id: process_id.to_string(),
                shim_pid: watch::channel(None).0,
                done: watch::channel(false).0,
            },
        );
    }

    /// Writes the run directory, starts the shim and waits for its report. Failures become the
    /// run's result (status `failed`) rather than errors: the run exists either way.
    async fn launch(&self, run_id: &str, spec: &Spec, notes: &[String]) {
        let rd = self.run_dir(run_id);
        let record = self.process_record(run_id);
        // This run's copy of the spec tells the command who it is, so that `aside progress`
        // from inside it can report (the token proves the report comes from the run).
        let mut spec = spec.clone();
        spec.env.insert(RUN_ID_VAR.into(), run_id.to_string());
        spec.env.insert(RUN_TOKEN_VAR.into(), random_token());
        let spec = &spec;
        let prepared = rd
            .create(spec)
            .and_then(|()| match &record {
                Some(r) => rd.write(crate::rundir::PROCESS_FILE, r),
                None => Ok(()),
            })
            .and_then(|()| {
                if notes.is_empty() {
                    Ok(())
                } else {
                    rd.write(NOTES_FILE, &notes)
                }
            })
            .and_then(|()| {
                use std::os::unix::fs::DirBuilderExt;
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(rd.log_dir())
            })
            .and_then(|()| {
                use std::os::unix::fs::OpenOptionsExt;
                fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(rd.path().join(SHIM_LOG))
            });
        let shim_log = match prepared {
            Ok(f) => f,
            Err(e) => {
                let msg = format!("could not prepare {}: {e}", rd.path().display());
                self.finish_without_shim(run_id, Status::Failed, msg);
                return;
            }
        };
        self.watch_logs(run_id, &rd.log_dir());
        let shim = &self.inner.settings.shim_command;
        let Some(program) = shim.first() else {
            self.finish_without_shim(
                run_id,
                Status::Failed,
                "no shim command is configured".into(),
            );
            return;
        };
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(&shim[1..])
            .arg(rd.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(shim_log))
            .kill_on_drop(false);
        if let Some(lim) = ORIGINAL_NOFILE.get().copied() {
            // SAFETY: setrlimit is async-signal-safe; `lim` is moved in, nothing is allocated.
            unsafe {
                cmd.pre_exec(move || {
                    rustix::process::setrlimit(rustix::process::Resource::Nofile, lim)
                        .map_err(std::io::Error::from)
                });
            }
        }
        let spawned = cmd.spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let msg = format!(
                    "could not start the shim {}: {e}",
                    program.to_string_lossy()
                );
                self.finish_without_shim(run_id, Status::Failed, msg);
                return;
            }
        };
        let shim_pid = child.id().map(|p| p as i32);
        let mut report = String::new();
        if let Some(out) = child.stdout.take() {
            let mut out = tokio::io::BufReader::new(out);
            let _ = tokio::time::timeout(SHIM_REPORT_TIMEOUT, out.read_line(&mut report)).await;
        }
        let report: serde_json::Value = serde_json::from_str(&report).unwrap_or_default();
        if let Some(pid) = report.get("pid").and_then(|p| p.as_i64()) {
            if let Err(e) = self.set_running(run_id, pid as i32, Timestamp::now()) {
                tracing::error!("run {run_id}: cannot record pid {pid}: {e}");
            }
        }
        // Whatever the report said (or if none came), stop requests may signal the shim from
        // now on: it is still our unreaped child, so its pid cannot have been reused.
        if let Some(live) = lock(&self.inner.live).get(run_id) {
            live.shim_pid.send_replace(shim_pid);
        }
        let me = self.clone();
        let run = run_id.to_string();
        let mut done = self.done_rx(run_id);
        tokio::spawn(async move {
            let _ = child.wait().await;
            me.finalize(&run);
        });
        if let Some(probe) = &spec.ready {
            self.probe_readiness(run_id, spec, probe.clone());
        }
        if report.get("error").is_some()
            && let Some(done) = done.as_mut()
        {
            // The shim wrote its exit record already: answer with the failure.
            let _ = tokio::time::timeout(SHIM_REPORT_TIMEOUT, done.wait_for(|d| *d)).await;
        }
    }

    /// Records what run `run_id` says it is doing (from `aside progress` inside it, which
    /// proves itself with the run's `$ASIDE_RUN_TOKEN`), and announces it as a `run_progress`
    /// event — at most every 250 ms per run, the latest report winning. Errors: unknown or
    /// ended run, wrong token, text over 1000 characters or data over 4 KiB.
    pub fn report_progress(
        &self,
        run_id: &str,
        token: &str,
        text: &str,
        data: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<()> {
        let rd = self.run_dir(run_id);
        let own = rd
            .spec()
            .ok()
            .flatten()
            .and_then(|s| s.env.get(RUN_TOKEN_VAR).cloned());
        if own.as_deref() != Some(token) || token.is_empty() {
            return Err(Error::Forbidden(format!(
                "this progress report does not come from run {run_id} (its token does not match)"
            )));
        }
        if text.chars().count() > 1000 || text.contains('\0') {
            return Err(Error::Invalid(
                "progress text: one line of at most 1000 characters, no NUL".into(),
            ));
        }
        if data
            .as_ref()
            .is_some_and(|d| serde_json::Value::Object(d.clone()).to_string().len() > 4096)
        {
            return Err(Error::Invalid(
                "progress data: at most 4 KiB of JSON".into(),
            ));
        }
        let report = aside_proto::Progress {
            text: text.lines().next().unwrap_or("").to_string(),
            data,
            at: Timestamp::now(),
        };
        let now = std::time::Instant::now();
        let announce_now = {
            let mut last = lock(&self.inner.progress);
            match last.get(run_id) {
                Some(t) if now.duration_since(*t) < PROGRESS_EVERY => false,
                _ => {
                    last.insert(run_id.to_string(), now);
                    true
                }
            }
        };
        let (live, event) = self.store().set_progress(run_id, &report, announce_now)?;
        if !live {
            return Err(Error::NotFound(format!(
                "run {run_id} is not running: progress is for a run that is"
            )));
        }
        match event {
            Some(e) => self.publish(&[e]),
            None => self.announce_progress_later(run_id),
        }
        Ok(())
    }

    /// The report the throttle held back, announced once the interval is over (one pending
    /// announcement per run).
    fn announce_progress_later(&self, run_id: &str) {
        if !lock(&self.inner.progress_pending).insert(run_id.to_string()) {
            return;
        }
        let me = self.clone();
        let run = run_id.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(PROGRESS_EVERY).await;
            lock(&me.inner.progress).insert(run.clone(), std::time::Instant::now());
            me.flush_progress(&run);
        });
    }

    /// Announces run `run_id`'s held-back progress report, if it has one (once).
    fn flush_progress(&self, run_id: &str) {
        if !lock(&self.inner.progress_pending).remove(run_id) {
            return;
        }
        match self.store().announce_progress(run_id) {
            Ok(Some(e)) => self.publish(&[e]),
            // It ended meanwhile: its result is what is announced now.
            Ok(None) => {}
            Err(err) => tracing::warn!("run {run_id}: progress not announced: {err}"),
        }
    }

    /// Run `run_id`'s progress reports, newest first.
    pub fn progress_history(
        &self,
        run_id: &str,
        limit: usize,
    ) -> Result<Vec<aside_proto::Progress>> {
        Ok(self.store().progress_history(run_id, limit)?)
    }

    /// What `process.json` says of run `run_id`: its process, from the live map and the store.
    fn process_record(&self, run_id: &str) -> Option<crate::rundir::ProcessRecord> {
        let process_id = lock(&self.inner.live).get(run_id)?.process_id.clone();
        let row = self.store().find(&process_id).ok().flatten()?;
        Some(crate::rundir::ProcessRecord {
            process_id,
            name: row.info.name,
            owner: row.info.owner,
            team: row.info.team,
            project: row.info.project,
            description: row.info.description,
            seq: row.seq,
        })
    }

    fn finish_without_shim(
        &self,
        run_id: &str,
        status: Status,
        error: String,
    ) -> Option<(ProcessRow, RunResult)> {
        tracing::warn!("run {run_id}: {error}");
        self.record_finish(
            run_id,
            Finish {
                status,
                exit_code: None,
                signal: None,
                ended_at: Timestamp::now(),
                stopped_by: None,
                error: Some(error),
            },
            None,
        )
    }

    /// Called once the run's shim is gone: turns its exit record (or its absence) into the
    /// result and notification, then applies the restart policy. Idempotent.
    fn finalize(&self, run_id: &str) {
        let rd = self.run_dir(run_id);
        let recorded = match rd.exit() {
            Ok(Some(exit)) => {
                let (status, stopped_by) = classify(&exit);
                self.record_finish(
                    run_id,
                    Finish {
                        status,
                        exit_code: exit.exit_code,
                        signal: exit.signal,
                        ended_at: exit.ended_at,
                        stopped_by,
                        error: exit.error.clone(),
                    },
                    Some(&exit),
                )
            }
            other => {
                let mut why = match other {
                    Err(e) => format!("its exit record is unreadable ({e})"),
                    _ => "its shim ended without recording an exit status".to_string(),
                };
                if let Some(last) = last_line(&rd.path().join(crate::rundir::SHIM_LOG)) {
                    why.push_str(&format!(" (the shim said: {last})"));
                }
                let killed = self.kill_leftovers(&rd);
                let mut msg = format!("result unknown: {why}");
                if killed > 0 {
                    msg.push_str(&format!("; SIGKILL to {killed} leftover processes"));
                }
                self.finish_without_shim(run_id, Status::Abandoned, msg)
            }
        };
        // Only the call that recorded the result decides (exactly once per run).
        if let Some((row, result)) = recorded
            && row.spec.restart.is_some()
        {
            self.consider_restart(row, &result);
        }
    }

    /// Kills what is left of a run whose shim is gone: the members of its session that started
    /// no earlier than it did.
    fn kill_leftovers(&self, rd: &RunDir) -> usize {
        let (sid, since) = match rd.shim() {
            Ok(Some(shim)) => (shim.pid, shim.starttime),
            // A damaged shim.json: the command may still be found by its shim's argv.
            _ => match proc::find_shim(rd.path()) {
                Some((_, Some(command))) => (command.pid, command.starttime),
                _ => return 0,
            },
        };
        let members = proc::session_members(sid, since);
        proc::signal_all(members.iter().map(|p| p.pid), libc::SIGKILL)
    }

    /// Writes a run's result and notification; returns its process (as loaded before) and the
    /// result when this call wrote them, `None` when the run was already terminal or the
    /// write failed.
    fn record_finish(
        &self,
        run_id: &str,
        finish: Finish,
        exit: Option<&ExitRecord>,
    ) -> Option<(ProcessRow, RunResult)> {
        let rd = self.run_dir(run_id);
        let row = {
            let store = self.store();
            lock(&self.inner.live)
                .get(run_id)
                .map(|l| l.process_id.clone())
                .map_or_else(|| store.find_by_run(run_id), |pid| store.find(&pid))
        };
        let row = match row {
            Ok(Some(r)) => r,
            Ok(None) => {
                tracing::error!("run {run_id} finished but its process is not in the database");
                self.end_live(run_id, &rd);
                return None;
            }
            Err(e) => {
                tracing::error!("run {run_id}: cannot load its process: {e}");
                return None;
            }
        };
        let mut output = logs::summarize(
            &LogReader::new(&rd.log_dir()),
            RESULT_HEAD_BYTES,
            RESULT_TAIL_BYTES,
        )
        .unwrap_or_default();
        if let Some(exit) = exit {
            output.stdout_bytes = exit.stdout_bytes;
            output.stderr_bytes = exit.stderr_bytes;
        }
        let started_at = row.info.started_at;
        let result = RunResult {
            run_id: run_id.to_string(),
            process_id: row.info.id.clone(),
            name: row.info.name.clone(),
            owner: row.info.owner.clone(),
            team: row.info.team.clone(),
            command: row.info.command.clone(),
            cwd: row.info.cwd.clone(),
            status: finish.status,
            exit_code: finish.exit_code,
            signal: finish.signal.map(proc::signal_name),
            started_at,
            ended_at: finish.ended_at,
            duration_ms: finish
                .ended_at
                .duration_since(started_at)
                .as_millis()
                .max(0) as u64,
            stopped_by: finish.stopped_by.clone(),
            error: finish.error.clone(),
            output,
            log_dir: rd.log_dir().display().to_string(),
        };
        // A report the throttle held back is announced before the end, in order.
        self.flush_progress(run_id);
        lock(&self.inner.progress).remove(run_id);
        let written = {
            let mut store = self.store();
            let written = store.finish_run(run_id, &finish, &result, &row.info.owner);
            if let Ok(Some(events)) = &written {
                self.publish(events);
            }
            written
        };
        let recorded = match written {
            Ok(Some(_)) => {
                tracing::info!("run {run_id} ({}) {}", row.info.name, finish.status);
                true
            }
            Ok(None) => false,
            Err(e) => {
                // The run stays live, and its waiters wait: the result is on disk (exit.json)
                // and is recorded as soon as the database takes it (a disk with space again);
                // a daemon restarted meanwhile reconciles it from there.
                let why = format!("its result could not be recorded yet ({e}); retrying");
                tracing::error!("run {run_id}: {why}");
                let attempt = {
                    let mut u = lock(&self.inner.unrecorded);
                    let first = !u.contains_key(run_id);
                    u.insert(run_id.to_string(), why);
                    first
                };
                self.retry_finalize(run_id, attempt);
                return None;
            }
        };
        lock(&self.inner.unrecorded).remove(run_id);
        self.end_live(run_id, &rd);
        recorded.then_some((row, result))
    }

    /// Tries to record run `run_id`'s result again later, every second at first and every 30 s
    /// at most, until it is recorded (one retry loop per run: `first` starts it).
    fn retry_finalize(&self, run_id: &str, first: bool) {
        if !first {
            return;
        }
        let me = self.clone();
        let run = run_id.to_string();
        tokio::spawn(async move {
            let mut wait = Duration::from_secs(1);
            // A failed attempt marks the run unrecorded again; a recorded one unmarks it.
            while lock(&me.inner.unrecorded).contains_key(&run) {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
                me.finalize(&run);
            }
        });
    }

    fn end_live(&self, run_id: &str, rd: &RunDir) {
        if let Some(live) = lock(&self.inner.live).remove(run_id) {
            live.done.send_replace(true);
        }
        self.unwatch_logs(run_id, &rd.log_dir());
    }

    fn audit(&self, who: &Requester, action: &str, target: &str, refused: Option<&str>) {
        self.inner.audit.append(&AuditEntry {
            ts: Timestamp::now(),
            who: &who.owner,
            via: who.via.as_deref(),
            action,
            target,
            outcome: if refused.is_some() { "refused" } else { "done" },
            reason: refused,
        });
    }

    /// Refuses with `reason`, writing it to the audit log first.
    fn refuse<T>(&self, who: &Requester, action: &str, target: &str, reason: String) -> Result<T> {
        self.audit(who, action, target, Some(&reason));
        Err(Error::Forbidden(reason))
    }

    /// What the daemon trusts when it judges an agent: its own environment and API ports.
    pub(crate) fn trusted(&self) -> crate::policy::Trusted {
        lock(&self.inner.trusted).clone()
    }

    /// Records that the daemon's API also listens on TCP `port`: no agent's probe or webhook
    /// may reach it.
    pub fn add_api_port(&self, port: u16) {
        let mut t = lock(&self.inner.trusted);
        if !t.api_ports.contains(&port) {
            t.api_ports.push(port);
        }
    }

    /// The policy for an agent's request; an invalid policy file refuses every agent request.
    fn agent_policy(&self, who: &Requester, action: &str, target: &str) -> Result<Arc<Policy>> {
        self.inner.policy.current().or_else(|e| {
            self.refuse(
                who,
                action,
                target,
                format!(
                    "{e}; agent requests are refused until it is fixed (humans are not affected)"
                ),
            )
        })
    }

    /// Judges `action` for `who` by the one table ([`crate::authz`]); a refusal is audited.
    /// The policy's `team_may_stop` applies to agents (and an invalid policy refuses them).
    pub fn authorize(&self, who: &Requester, action: crate::authz::Action<'_>) -> Result<()> {
        use crate::authz::{Action, Denied, Who};
        let (verb, target) = match action {
            Action::Look => ("look", String::new()),
            Action::Read(p) => ("read", p.name.clone()),
            Action::Start { owner } => ("run", format!("as {owner}")),
            Action::Control { process, verb } => (verb, process.name.clone()),
            Action::StopAll { owner } => ("stop-all", owner.unwrap_or("everything").to_string()),
            Action::OwnerData { owner, .. } => ("owner", owner.to_string()),
            Action::CleanProjects => ("clean", "projects".into()),
            Action::Admin => ("admin", String::new()),
            Action::StopDaemon => ("daemon-stop", String::new()),
        };
        let team_may_stop = if who.is_human() || !matches!(action, Action::Control { .. }) {
            false
        } else {
            self.agent_policy(who, verb, &target)?.limits.team_may_stop
        };
        let asking = Who {
            access: &who.access,
            owner: &who.owner,
            team: who.team.as_deref(),
        };
        match crate::authz::authorize(asking, action, team_may_stop) {
            Ok(()) => Ok(()),
            Err(Denied::NotFound(why)) => Err(Error::NotFound(why)),
            Err(Denied::Forbidden(why)) => self.refuse(who, verb, &target, why),
        }
    }

    /// [`Supervisor::authorize`] of `verb`ing (`stop`, `restart`, `write to`) process `p`.
    fn may_control(&self, who: &Requester, p: &ProcessInfo, verb: &'static str) -> Result<()> {
        self.authorize(who, crate::authz::Action::Control { process: p, verb })
    }

    /// Applies the policy to an agent starting `spec` for `owner`: command, cwd and limits.
    /// Fills in the policy's longest timeout and clamps a default log cap. `already_live`:
    /// the process itself is live and counted (a restart).
    fn admit(
        &self,
        who: &Requester,
        owner: &str,
        team: Option<&str>,
        spec: &mut Spec,
        explicit_log_cap: bool,
        already_live: bool,
    ) -> Result<()> {
        if who.is_human() {
            return Ok(());
        }
        let cmd = spec.cmd.display();
        self.authorize(who, crate::authz::Action::Start { owner })?;
        let policy = self.agent_policy(who, "run", &cmd)?;
        let source = policy
            .source()
            .map_or("the built-in policy".to_string(), |p| {
                format!("policy {}", p.display())
            });
        let verdict = policy.judge(spec, &self.trusted());
        if let Verdict::Refused(why) = verdict {
            return self.refuse(who, "run", &cmd, format!("{source} refuses {cmd:?}: {why}"));
        }
        let limits = &policy.limits;
        let (by_owner, by_team) = self.store().live_counts(owner, team)?;
        let discount = usize::from(already_live);
        if by_owner.saturating_sub(discount) >= limits.max_processes_per_owner {
            return self.refuse(
                who,
                "run",
                &cmd,
                format!(
                    "{owner} already has {by_owner} running processes, the limit of {source} (max_processes_per_owner): stop one first"
                ),
            );
        }
        if let Some(t) = team
            && by_team.saturating_sub(discount) >= limits.max_processes_per_team
        {
            return self.refuse(
                who,
                "run",
                &cmd,
                format!(
                    "team {t} already has {by_team} running processes, the limit of {source} (max_processes_per_team)"
                ),
            );
        }
        if let Some(max) = limits.max_timeout_ms {
            match spec.timeout_ms {
                Some(t) if t > max => {
                    return self.refuse(
                        who,
                        "run",
                        &cmd,
                        format!("a timeout of {t} ms is longer than the {max} ms {source} allows (max_timeout)"),
                    );
                }
                Some(_) => {}
                None => spec.timeout_ms = Some(max),
            }
        }
        if spec.log_cap_bytes > limits.max_log_cap {
            if explicit_log_cap {
                return self.refuse(
                    who,
                    "run",
                    &cmd,
                    format!(
                        "a log cap of {} bytes is more than the {} bytes {source} allows (max_log_cap)",
                        spec.log_cap_bytes, limits.max_log_cap
                    ),
                );
            }
            spec.log_cap_bytes = limits.max_log_cap;
        }
        Ok(())
    }

    /// Stops a process: `req.signal` (default SIGTERM) to every process of its tree, then
    /// SIGKILL after the grace; answers with the final state. Idempotent: a terminal process
    /// is returned as it is. Errors: unknown process, bad signal, requester not its owner nor
    /// a human.
    pub async fn stop(
        &self,
        reference: &str,
        req: &StopRequest,
        who: &Requester,
    ) -> Result<ProcessInfo> {
        let row = self.find(reference)?;
        self.may_control(who, &row.info, "stop")?;
        // Parsed before anything changes: a bad signal leaves the process as it is.
        let signal = match &req.signal {
            Some(s) => proc::parse_signal(s).map_err(Error::Invalid)?,
            None => libc::SIGTERM,
        };
        // A manual stop disables restarts (agent-procs), and file watching until a restart.
        if let Some(a) = &row.info.autorestart {
            self.store()
                .set_restart_state(&row.info.id, a.attempts, RestartState::Disabled)?;
        }
        self.unwatch_files(&row.info.id);
        self.stop_run(row, signal, req.grace_ms, who).await
    }

    /// Stops the latest run of `row` with `signal`, SIGKILL after `grace_ms` (default: its
    /// spec's), without touching its restart policy: for restarts, which start it again.
    async fn stop_run(
        &self,
        row: ProcessRow,
        signal: i32,
        grace_ms: Option<u64>,
        who: &Requester,
    ) -> Result<ProcessInfo> {
        if row.info.status.is_terminal() {
            return Ok(row.info);
        }
        let run_id = row.info.run_id.clone();
        let grace_ms = grace_ms.unwrap_or(row.spec.grace_ms);
        let Some((mut shim_rx, mut done)) = lock(&self.inner.live)
            .get(&run_id)
            .map(|l| (l.shim_pid.subscribe(), l.done.subscribe()))
        else {
            // Ended meanwhile.
            return Ok(self.find(&row.info.id)?.info);
        };
        // A run still starting has no shim to signal yet: wait for its report (or its end).
        let shim_pid = tokio::select! {
            pid = shim_rx.wait_for(|p| p.is_some()) => pid.ok().and_then(|p| *p),
            _ = done.wait_for(|d| *d) => None,
        };
        let Some(shim_pid) = shim_pid else {
            return Ok(self.find(&row.info.id)?.info);
        };
        let rd = self.run_dir(&run_id);
        rd.write(
            CONTROL_FILE,
            &StopControl {
                signal,
                grace_ms,
                requested_by: who.owner.clone(),
            },
        )
        .map_err(io_err("cannot write the stop request in", rd.path()))?;
        // SAFETY: kill(2) to the run's shim, which is live (its monitor has not finished it).
        unsafe { libc::kill(shim_pid, libc::SIGUSR1) };
        self.audit(who, "stop", &row.info.reference(), None);
        let _ = done.wait_for(|d| *d).await;
        Ok(self.find(&row.info.id)?.info)
    }

    /// Writes `chars` to the stdin of an interactive process (started with `interactive`).
    /// Errors: unknown process, requester not its owner nor a human, not interactive, ended, or
    /// its stdin is full because it does not read.
    pub fn write_stdin(
        &self,
        reference: &str,
        chars: &str,
        who: &Requester,
    ) -> Result<ProcessInfo> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let row = self.find(reference)?;
        let name = row.info.name.clone();
        self.may_control(who, &row.info, "write to")?;
        if !row.spec.interactive {
            return Err(Error::Invalid(format!(
                "{name} was not started interactive, so its stdin is /dev/null: start it with interactive: true (`aside run --interactive`)"
            )));
        }
        if row.info.status.is_terminal() {
            return Err(Error::Conflict(format!(
                "{name} has ended ({}): nothing reads its stdin",
                row.info.status
            )));
        }
        let fifo = self
            .run_dir(&row.info.run_id)
            .path()
            .join(crate::rundir::STDIN_FIFO);
        let written = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .and_then(|mut f| f.write_all(chars.as_bytes()));
        match written {
            Ok(()) => Ok(row.info),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err(Error::Conflict(format!(
                "the stdin of {name} is full: it is not reading what was written before"
            ))),
            Err(e) => Err(Error::Io(format!(
                "cannot write to the stdin of {name}: {e}"
            ))),
        }
    }

    /// Stops every live process (of `owner`, if given) the requester may stop, concurrently.
    /// Processes waiting out a restart delay count as running: their restart is cancelled.
    pub async fn stop_all(&self, owner: Option<&str>, who: &Requester) -> Result<StopAllResponse> {
        self.authorize(who, crate::authz::Action::StopAll { owner })?;
        let known = self.store().list(&ListFilter {
            all: true,
            owner: owner.map(str::to_string),
            ..Default::default()
        })?;
        let mut resp = StopAllResponse::default();
        let mut tasks = Vec::new();
        for row in known {
            let pending_restart = row
                .autorestart
                .as_ref()
                .is_some_and(|a| a.state == RestartState::Active);
            // What the requester may not see is not there for them, not even as refused.
            if (row.status.is_terminal() && !pending_restart) || !who.access.sees(&row) {
                continue;
            }
            if self.may_control(who, &row, "stop").is_err() {
                if !row.status.is_terminal() {
                    resp.refused.push(row.name);
                }
                continue;
            }
            if row.status.is_terminal() {
                let attempts = row.autorestart.as_ref().map_or(0, |a| a.attempts);
                self.store()
                    .set_restart_state(&row.id, attempts, RestartState::Disabled)?;
                continue;
            }
            let me = self.clone();
            let who = who.clone();
            tasks.push(tokio::spawn(async move {
                me.stop(&row.id, &StopRequest::default(), &who).await
            }));
        }
        for t in tasks {
            if let Ok(Ok(info)) = t.await {
                resp.stopped.push(info);
            }
        }
        Ok(resp)
    }

    /// Stops the process if it runs, then starts a new run of the same spec (restarts + 1).
    /// Re-enables its restart policy with the count reset, and its file watching.
    pub async fn restart(&self, reference: &str, who: &Requester) -> Result<ProcessInfo> {
        let row = self.find(reference)?;
        self.may_control(who, &row.info, "restart")?;
        // Judge the new run before stopping the old one: a refusal leaves it running.
        let mut spec = row.spec.clone();
        let live = !row.info.status.is_terminal();
        if !who.is_human() {
            // The policy judges the restart as the owner's own run.
            let as_owner = Requester::new(row.info.owner.clone(), who.team.clone());
            self.admit(
                &as_owner,
                &row.info.owner,
                row.info.team.as_deref(),
                &mut spec,
                true,
                live,
            )?;
        }
        if row.info.autorestart.is_some() {
            self.store()
                .set_restart_state(&row.info.id, 0, RestartState::Active)?;
        }
        let watch = row.spec.watch.clone();
        let info = self.relaunch(row, spec, who, Vec::new(), None).await?;
        if let Some(w) = &watch {
            self.watch_files(&info.id, w);
        }
        Ok(info)
    }

    /// Stops `row`'s run if it is live and starts a new run of `spec` (restarts + 1), with
    /// `notes` at the head of its log. `replace`: the process's new spec, owner and team (an
    /// `up` whose configuration changed).
    async fn relaunch(
        &self,
        row: ProcessRow,
        spec: Spec,
        who: &Requester,
        notes: Vec<String>,
        replace: Option<(&str, Option<&str>)>,
    ) -> Result<ProcessInfo> {
        if !row.info.status.is_terminal() {
            self.stop_run(row.clone(), libc::SIGTERM, None, who).await?;
        }
        let run_id = uuid::Uuid::now_v7().to_string();
        {
            let _guard = self.inner.start_lock.lock().await;
            let row = self.find(&row.info.id)?;
            if !row.info.status.is_terminal() {
                return Err(Error::Conflict(format!(
                    "{:?} was started again meanwhile; nothing restarted",
                    row.info.name
                )));
            }
            let newest = self.find(&row.info.reference())?;
            if newest.info.id != row.info.id && !newest.info.status.is_terminal() {
                return Err(Error::Conflict(format!(
                    "the name {:?} is now used by another running process ({}): stop it first",
                    row.info.name, newest.info.id
                )));
            }
            let mut store = self.store();
            if let Some((owner, team)) = replace {
                store.replace_spec(&row.info.id, &spec, owner, team)?;
            }
            store.insert_run(&row.info.id, &run_id, row.seq + 1, Timestamp::now())?;
            drop(store);
            self.register_live(&run_id, &row.info.id);
        }
        self.launch(&run_id, &spec, &notes).await;
        self.audit(who, "restart", &row.info.reference(), None);
        Ok(self.find(&row.info.id)?.info)
    }

    /// The runs a log read spans, oldest first, as `(seq, run id)`: one run (`run` is a run id
    /// or `latest`), else every run of the process still kept.
    fn log_runs(&self, row: &ProcessRow, run: Option<&str>) -> Result<Vec<(u32, String)>> {
        let all = self.store().runs_of(&row.info.id)?;
        match run {
            None => Ok(all),
            Some("latest") => Ok(vec![(row.seq, row.info.run_id.clone())]),
            Some(r) => all
                .into_iter()
                .find(|(_, id)| id == r)
                .map(|x| vec![x])
                .ok_or_else(|| {
                    Error::NotFound(format!("run {r} is not a run of {:?}", row.info.name))
                }),
        }
    }

    /// Whether `reference` is the id of one of `row`'s runs (rather than the process's).
    fn is_run_of(&self, row: &ProcessRow, reference: &str) -> bool {
        reference != row.info.id
            && self
                .store()
                .runs_of(&row.info.id)
                .is_ok_and(|runs| runs.iter().any(|(_, id)| id == reference))
    }

    /// Whether process `process_id` may start another run by itself: a restart by its policy
    /// is due, or its files are watched.
    fn may_run_again(&self, process_id: &str) -> bool {
        let restart_due = self
            .store()
            .find(process_id)
            .ok()
            .flatten()
            .and_then(|r| r.info.autorestart)
            .is_some_and(|a| a.state == RestartState::Active);
        restart_due || self.watches(process_id)
    }

    /// Reads a process's log once, across its runs in order (each run's log opens with what
    /// `aside` said of it, e.g. `[aside] restarted (exit 7, …)`), or one run's with `run` (see
    /// [`LogQuery`]; `follow` is ignored here, see [`Supervisor::follow`]). Cursors name the
    /// run and the position in it ([`log_cursor`]). Errors: unknown process or run, invalid
    /// grep regex.
    pub fn logs(&self, reference: &str, q: &LogQuery) -> Result<LogsResponse> {
        let row = self.find(reference)?;
        // A run id as the reference names that run.
        let named_run = self.is_run_of(&row, reference);
        let run = q.run.as_deref().or(named_run.then_some(reference));
        let runs = self.log_runs(&row, run)?;
        let grep = compile_grep(q.grep.as_deref())?;
        let (since_seq, since_pos) = split_cursor(q.since.unwrap_or(0));
        let mut entries = Vec::new();
        let mut cursor = q.since.unwrap_or(0);
        let mut last_run = row.info.run_id.clone();
        for (seq, run_id) in runs.iter().filter(|(seq, _)| *seq >= since_seq) {
            let rd = self.run_dir(run_id);
            let from = if *seq == since_seq { since_pos } else { 0 };
            let (pieces, end) = match LogReader::new(&rd.log_dir()).read_from(from) {
                Ok(r) => r,
                // A run pruned or never started leaves no log: the next run goes on.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("cannot read the log in", &rd.log_dir())(e)),
            };
            let mut part = logs::pieces_to_entries(&pieces, q.stream, MAX_LINE_BYTES);
            for e in &mut part {
                relabel(e, *seq);
            }
            entries.extend(part);
            cursor = log_cursor(*seq, end);
            last_run = run_id.clone();
        }
        filter_entries(&mut entries, grep.as_ref(), q.head, q.tail);
        let last_done = self.done_rx(&last_run).is_none();
        let complete = if q.run.is_some() || run.is_some() {
            last_done
        } else {
            last_done && last_run == row.info.run_id && !self.may_run_again(&row.info.id)
        };
        Ok(LogsResponse {
            run_id: last_run,
            entries,
            cursor,
            complete,
        })
    }

    /// Streams a process's log into `tx` as it grows, across runs: when a run ends its log is
    /// drained, then the next run's follows (a restart by policy or by a file watch), until
    /// the process has ended for good, or the receiver goes away. With `run`, that run only.
    /// `tail` applies to what exists when it starts.
    pub async fn follow(
        &self,
        reference: &str,
        q: LogQuery,
        tx: mpsc::Sender<LogEntry>,
    ) -> Result<()> {
        let row = self.find(reference)?;
        let only = q.run.clone().or_else(|| {
            self.is_run_of(&row, reference)
                .then(|| reference.to_string())
        });
        let runs = self.log_runs(&row, only.as_deref())?;
        let grep = compile_grep(q.grep.as_deref())?;
        let (since_seq, since_pos) = split_cursor(q.since.unwrap_or(0));
        // With no cursor, the latest run is where a follow starts (`tail` reads back in it).
        let start = match q.since {
            Some(_) => runs.iter().find(|(s, _)| *s >= since_seq).cloned(),
            None => runs.last().cloned(),
        };
        let Some((mut seq, mut run_id)) = start else {
            return Ok(());
        };
        let mut pos = if seq == since_seq { since_pos } else { 0 };
        let process_id = row.info.id.clone();
        let me = self.clone();
        let mut events = self.subscribe_events();
        tokio::spawn(async move {
            let mut first = true;
            loop {
                let reader = LogReader::new(&me.run_dir(&run_id).log_dir());
                let mut log_rx = me.log_rx(&run_id);
                let mut done_rx = me.done_rx(&run_id);
                let mut splitter = LineSplitter::new(q.stream, MAX_LINE_BYTES);
                loop {
                    let ended = done_rx.as_ref().is_none_or(|d| *d.borrow());
                    let (pieces, end) = match reader.read_from(pos) {
                        Ok(r) => r,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Vec::new(), pos),
                        Err(e) => {
                            tracing::warn!("follow of run {run_id}: cannot read its log: {e}");
                            return;
                        }
                    };
                    pos = end;
                    let mut entries = splitter.feed(&pieces);
                    if ended {
                        entries.extend(splitter.flush());
                    }
                    filter_entries(
                        &mut entries,
                        grep.as_ref(),
                        None,
                        if first { q.tail } else { None },
                    );
                    first = false;
                    for mut e in entries {
                        relabel(&mut e, seq);
                        if tx.send(e).await.is_err() {
                            return;
                        }
                    }
                    if ended {
                        break;
                    }
                    tokio::select! {
                        _ = changed(&mut log_rx) => {}
                        _ = changed_bool(&mut done_rx) => {}
                        _ = tx.closed() => return,
                        _ = tokio::time::sleep(SAFETY_RECHECK) => {}
                    }
                }
                if only.is_some() {
                    return;
                }
                // The next run of the process, now or once one starts; none to come: done.
                loop {
                    let next = me
                        .store()
                        .runs_of(&process_id)
                        .ok()
                        .and_then(|runs| runs.into_iter().find(|(s, _)| *s > seq));
                    if let Some((s, r)) = next {
                        (seq, run_id, pos) = (s, r, 0);
                        break;
                    }
                    if !me.may_run_again(&process_id) {
                        return;
                    }
                    tokio::select! {
                        _ = events.recv() => {}
                        _ = tx.closed() => return,
                        _ = tokio::time::sleep(SAFETY_RECHECK) => {}
                    }
                }
            }
        });
        Ok(())
    }

    /// Waits for a run to end (no `until`) or for a pattern in its output, seen in what was
    /// written before the call as well as after, on either stream. Errors: unknown process,
    /// invalid regex.
    pub async fn wait(&self, reference: &str, q: &WaitQuery) -> Result<WaitResponse> {
        let row = self.find(reference)?;
        let run_id = row.info.run_id.clone();
        let matcher = match &q.until {
            None => None,
            Some(p) if q.regex => {
                Some(Matcher::Regex(Regex::new(p).map_err(|e| {
                    Error::Invalid(format!("invalid regex {p:?}: {e}"))
                })?))
            }
            Some(p) => Some(Matcher::Plain(p.clone())),
        };
        let deadline = q
            .timeout_ms
            .map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms));
        let reader = LogReader::new(&self.run_dir(&run_id).log_dir());
        let mut log_rx = self.log_rx(&run_id);
        let mut done_rx = self.done_rx(&run_id);
        let mut splitter = LineSplitter::new(aside_proto::StreamFilter::All, MAX_LINE_BYTES);
        let mut cursor = 0;
        loop {
            let ended = done_rx.as_ref().is_none_or(|d| *d.borrow());
            if let Some(m) = &matcher {
                let (pieces, end) = reader
                    .read_from(cursor)
                    .map_err(|e| Error::Io(format!("cannot read the log of run {run_id}: {e}")))?;
                cursor = end;
                let found = splitter
                    .feed(&pieces)
                    .into_iter()
                    .filter_map(|e| match e {
                        LogEntry::Line { text, stream, .. }
                            if stream != aside_proto::LogStream::Aside =>
                        {
                            Some(text)
                        }
                        _ => None,
                    })
                    .chain(
                        splitter
                            .pending()
                            .filter(|(s, _)| *s != aside_proto::LogStream::Aside)
                            .map(|(_, t)| t),
                    )
                    .find(|t| m.is_match(t));
                if let Some(line) = found {
                    return self.wait_answer(&row.info.id, WaitOutcome::Matched, Some(line));
                }
            }
            if ended {
                let outcome = if matcher.is_some() {
                    WaitOutcome::ExitedWithoutMatch
                } else {
                    WaitOutcome::Exited
                };
                return self.wait_answer(&row.info.id, outcome, None);
            }
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let watch_logs = matcher.is_some();
            tokio::select! {
                _ = sleep => return self.wait_answer(&row.info.id, WaitOutcome::TimedOut, None),
                _ = changed(&mut log_rx), if watch_logs => {}
                _ = changed_bool(&mut done_rx) => {}
                _ = tokio::time::sleep(SAFETY_RECHECK), if watch_logs => {}
            }
        }
    }

    fn wait_answer(
        &self,
        id: &str,
        outcome: WaitOutcome,
        line: Option<String>,
    ) -> Result<WaitResponse> {
        let process = self.find(id)?.info;
        let result = if process.status.is_terminal() {
            self.store().result(&process.run_id)?
        } else {
            None
        };
        Ok(WaitResponse {
            outcome,
            process,
            line,
            result,
        })
    }

    /// The result of a process's latest run, once it has ended.
    pub fn result(&self, reference: &str) -> Result<Option<RunResult>> {
        let row = self.find(reference)?;
        Ok(self.store().result(&row.info.run_id)?)
    }

    /// Unacknowledged notifications of `owner`, oldest first; with `deliverable`, only those no
    /// resumed host session is being given right now (what a hook or tool answer may show).
    pub fn inbox(&self, owner: &str, deliverable: bool) -> Result<InboxResponse> {
        let store = self.store();
        Ok(InboxResponse {
            notifications: if deliverable {
                store.deliverable(owner)?
            } else {
                store.inbox(owner)?
            },
        })
    }

    /// Takes `owner`'s deliverable results for showing to a model: oldest first within
    /// `max_bytes` of rendered blocks ([`crate::present::notification_block`]; at least one),
    /// acknowledged together with `also_ack` under one store lock, so concurrent callers never
    /// take the same result. Returns them and how many deliverable ones are left.
    pub fn take(
        &self,
        owner: &str,
        max_bytes: Option<usize>,
        also_ack: &[String],
    ) -> Result<TakeResponse> {
        let mut store = self.store();
        let offered: Vec<Notification> = store
            .deliverable(owner)?
            .into_iter()
            .filter(|n| !also_ack.contains(&n.id))
            .collect();
        let offered_count = offered.len();
        let mut used = 0usize;
        let mut taken = Vec::new();
        for n in offered {
            let size = crate::present::notification_block(&n).len();
            if max_bytes.is_some_and(|m| !taken.is_empty() && used + size > m) {
                break;
            }
            used += size;
            taken.push(n);
        }
        let more = offered_count - taken.len();
        let mut ids: Vec<String> = taken.iter().map(|n| n.id.clone()).collect();
        ids.extend(also_ack.iter().cloned());
        let (acked, events) = store.ack(owner, &ids, false, Timestamp::now())?;
        drop(store);
        self.publish(&events);
        let notifications = acked
            .into_iter()
            .filter(|n| !also_ack.contains(&n.id))
            .collect();
        Ok(TakeResponse {
            notifications,
            more,
        })
    }

    /// Acknowledges notifications of `owner` (`all`: every pending one).
    pub fn ack(&self, owner: &str, ids: &[String], all: bool) -> Result<AckResponse> {
        let mut store = self.store();
        let (acked, events) = store.ack(owner, ids, all, Timestamp::now())?;
        self.publish(&events);
        Ok(AckResponse { acked })
    }

    /// Accounts for every run not yet terminal after a (re)start: shim alive → re-attach;
    /// exit record → result; neither → `abandoned` with its leftovers killed. Returns how many
    /// runs were re-attached.
    pub fn reconcile(&self) -> Result<usize> {
        let runs = self.store().unfinished_runs()?;
        let mut reattached = 0;
        for (run_id, row) in runs {
            let rd = self.run_dir(&run_id);
            if matches!(rd.exit(), Ok(Some(_))) {
                self.register_live(&run_id, &row.info.id);
                self.finalize(&run_id);
                continue;
            }
            let shim = rd.shim().ok().flatten();
            let alive = shim
                .as_ref()
                .filter(|s| proc::is_alive(s.shim_pid, Some(s.shim_starttime)))
                .map(|s| (s.shim_pid, s.pid, s.started_at))
                // shim.json missing or damaged: a live shim is still found by its argv, so
                // its command is never left running untracked.
                .or_else(|| {
                    let (shim, command) = proc::find_shim(rd.path())?;
                    tracing::warn!(
                        "run {run_id}: shim.json is unreadable; found its shim {} by its command line",
                        shim.pid
                    );
                    Some((
                        shim.pid,
                        command.map_or(shim.pid, |c| c.pid),
                        row.info.started_at,
                    ))
                });
            match alive {
                Some((shim_pid, pid, started_at)) => {
                    if row.info.status == Status::Starting
                        && let Err(e) = self.set_running(&run_id, pid, started_at)
                    {
                        tracing::error!("run {run_id}: {e}");
                    }
                    match self.reattach(&run_id, &row.info.id, shim_pid, &rd) {
                        Ok(()) => {
                            reattached += 1;
                            if let Some(w) = &row.spec.watch {
                                self.watch_files(&row.info.id, w);
                            }
                            if let Some(probe) = &row.spec.ready
                                && row.info.status != Status::Ready
                            {
                                self.probe_readiness(&run_id, &row.spec, probe.clone());
                            }
                        }
                        Err(e) => {
                            tracing::error!(
                                "run {run_id}: cannot re-attach to shim {shim_pid}: {e}"
                            );
                            self.register_live(&run_id, &row.info.id);
                            self.finalize(&run_id);
                        }
                    }
                }
                None => {
                    self.register_live(&run_id, &row.info.id);
                    self.finalize(&run_id);
                }
            }
        }
        let recovered = std::mem::take(&mut *lock(&self.inner.recovered));
        for run_id in recovered {
            let owner = self.store().result(&run_id).ok().flatten().map(|r| r.owner);
            if let Some(owner) = owner
                && let Err(e) = self.ack(&owner, std::slice::from_ref(&run_id), false)
            {
                tracing::error!("recover: cannot mark the result of {run_id} read: {e}");
            }
        }
        Ok(reattached)
    }

    fn reattach(&self, run_id: &str, process_id: &str, shim_pid: i32, rd: &RunDir) -> Result<()> {
        let exited = process_exit(shim_pid)?;
        self.register_live(run_id, process_id);
        if let Some(live) = lock(&self.inner.live).get(run_id) {
            live.shim_pid.send_replace(Some(shim_pid));
        }
        self.watch_logs(run_id, &rd.log_dir());
        let me = self.clone();
        let run = run_id.to_string();
        tokio::spawn(async move {
            exited.await;
            me.finalize(&run);
        });
        Ok(())
    }

    /// Deletes terminal runs older than the prune age whose notifications were read, and
    /// their directories. Returns how many runs were removed.
    pub fn prune(&self) -> Result<usize> {
        let age = jiff::SignedDuration::try_from(self.inner.settings.prune_after)
            .unwrap_or(jiff::SignedDuration::from_hours(24));
        let cutoff = Timestamp::now()
            .checked_sub(age)
            .unwrap_or(Timestamp::UNIX_EPOCH);
        let ids = self.store().prune(cutoff)?;
        for id in &ids {
            let _ = fs::remove_dir_all(self.inner.state.run_dir(id));
        }
        Ok(ids.len())
    }
}

/// The last non-empty line of a small text file (the shim's own log), if any.
fn last_line(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.chars().take(500).collect())
}

/// A future that resolves when process `pid` exits, for a process that is not our child (a
/// re-attached shim, an agent host): a pidfd becomes readable when its process exits. Errors
/// when the pid is gone already or cannot be watched.
pub(crate) fn process_exit(pid: i32) -> Result<impl std::future::Future<Output = ()> + use<>> {
    let raw = rustix::process::Pid::from_raw(pid)
        .ok_or_else(|| Error::Io(format!("invalid pid {pid}")))?;
    let pidfd = rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty())
        .map_err(|e| Error::Io(format!("pidfd_open({pid}): {e}")))?;
    // SAFETY: the AsyncFd owns the OwnedFd, so the fd stays open and the same for its life.
    let afd = unsafe { tokio::io::unix::AsyncFd::register(pidfd) }
        .map_err(|e| Error::Io(format!("cannot poll pidfd of {pid}: {e}")))?;
    Ok(async move {
        // Readable (or an error, which means the same here) once the process has exited.
        if let Err(e) = afd.readable().await {
            tracing::debug!("pidfd of {pid}: {e}");
        }
    })
}

async fn changed(rx: &mut Option<watch::Receiver<u64>>) {
    match rx {
        Some(r) => {
            if r.changed().await.is_err() {
                // The run ended and its sender is gone: stop listening to it.
                *rx = None;
            }
        }
        None => std::future::pending().await,
    }
}

async fn changed_bool(rx: &mut Option<watch::Receiver<bool>>) {
    match rx {
        Some(r) => {
            if r.changed().await.is_err() {
                *rx = None;
                // Sender dropped after sending `true`: the run ended.
            }
        }
        None => std::future::pending().await,
    }
}

enum Matcher {
    Plain(String),
    Regex(Regex),
}

impl Matcher {
    fn is_match(&self, line: &str) -> bool {
        match self {
            Matcher::Plain(p) => line.contains(p.as_str()),
            Matcher::Regex(r) => r.is_match(line),
        }
    }
}

fn compile_grep(grep: Option<&str>) -> Result<Option<Regex>> {
    grep.map(|g| {
        Regex::new(g).map_err(|e| Error::Invalid(format!("invalid --grep regex {g:?}: {e}")))
    })
    .transpose()
}

/// The run's id, in its command's environment.
pub const RUN_ID_VAR: &str = "ASIDE_RUN_ID";
/// A secret of the run's, in its command's environment: what `aside progress` proves itself with.
pub const RUN_TOKEN_VAR: &str = "ASIDE_RUN_TOKEN";
/// At most one `run_progress` event per run in this interval.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// 128 random bits as hex.
fn random_token() -> String {
    let mut bytes = [0u8; 16];
    if let Err(e) = rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()) {
        tracing::warn!("getrandom: {e}; the run's token is weaker");
        bytes.copy_from_slice(&uuid::Uuid::now_v7().into_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Events read from the log per replay step.
const REPLAY_BATCH: usize = 500;

/// Bits of a log cursor that hold the position within a run (1 TiB of framed log); the bits
/// above hold the run's number. Run 0's cursors are plain positions.
const RUN_SHIFT: u32 = 40;

/// The cursor of position `pos` in run number `seq` of a process.
pub fn log_cursor(seq: u32, pos: u64) -> u64 {
    (u64::from(seq) << RUN_SHIFT) | (pos & ((1 << RUN_SHIFT) - 1))
}

/// Inverse of [`log_cursor`]: `(run number, position)`.
pub fn split_cursor(cursor: u64) -> (u32, u64) {
    (
        (cursor >> RUN_SHIFT) as u32,
        cursor & ((1 << RUN_SHIFT) - 1),
    )
}

/// Makes an entry's run-local cursor name its run.
fn relabel(e: &mut LogEntry, seq: u32) {
    match e {
        LogEntry::Line { cursor, .. } | LogEntry::Elided { cursor, .. } => {
            *cursor = log_cursor(seq, *cursor);
        }
    }
}

fn filter_entries(
    entries: &mut Vec<LogEntry>,
    grep: Option<&Regex>,
    head: Option<usize>,
    tail: Option<usize>,
) {
    if let Some(re) = grep {
        entries.retain(|e| matches!(e, LogEntry::Line { text, .. } if re.is_match(text)));
    }
    if let Some(n) = head {
        entries.truncate(n);
    }
    if let Some(n) = tail {
        let skip = entries.len().saturating_sub(n);
        entries.drain(..skip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_ampersand_is_stripped_but_not_and_and() {
        assert_eq!(strip_trailing_ampersand("sleep 5 &"), "sleep 5");
        assert_eq!(strip_trailing_ampersand("sleep 5&  "), "sleep 5");
        assert_eq!(strip_trailing_ampersand("a &&"), "a &&");
        assert_eq!(strip_trailing_ampersand("echo hi"), "echo hi");
    }

    #[test]
    fn names_are_derived_from_the_program() {
        assert_eq!(
            base_name(&Command::Shell("/usr/bin/python3 -m http.server".into())),
            "python3"
        );
        assert_eq!(base_name(&Command::Shell("  ".into())), "proc");
        assert!(valid_name("api-1.dev"));
        assert!(!valid_name("bad name"));
    }
}
