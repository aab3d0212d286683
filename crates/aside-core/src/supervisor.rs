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
//!
//! One concern per module: `launch` starts runs, `finish` ends them, `control` stops and
//! restarts, `output` reads and follows logs and waits, `progress` takes progress reports,
//! `inbox` hands out results, `events` streams events, `judge` decides who may do what,
//! `reconcile` accounts for runs after a restart; `project`, `files`, `wake`,
//! `access` and `recover` keep projects, file watches, wakes, tokens and stats, and
//! recovery.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aside_proto::{ErrorCode, Event, HUMAN_OWNER, ProcessInfo, Spec};
use jiff::Timestamp;
use tokio::sync::{broadcast, mpsc, watch};

use crate::audit::AuditLog;
use crate::paths::StateDir;
use crate::policy::PolicyStore;
use crate::rundir::RunDir;
use crate::store::{ListFilter, ProcessRow, Store, StoreError};

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
mod control;
mod events;
mod files;
mod finish;
mod inbox;
mod jobs;
mod judge;
mod launch;
mod output;
pub use output::{log_cursor, split_cursor};
mod progress;
mod project;
mod reconcile;
mod recover;
mod wake;
mod zygote;

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
/// command): its soft limit goes to the shim in `shim::NOFILE_VAR`, and the shim sets it.
static ORIGINAL_NOFILE: std::sync::OnceLock<rustix::process::Rlimit> = std::sync::OnceLock::new();

/// Raises this process's soft open-files limit to the hard one: a daemon holds a few
/// descriptors per running process (the shim's pidfd, an inotify watch) and 1024 is a common
/// soft default. Shims started afterwards get the original limit back, so commands see the
/// limit they would have had without `aside`.
pub fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        // Set once per process; a second call keeps the first (the original) limit.
        if ORIGINAL_NOFILE.set(lim).is_err() {
            return;
        }
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
    /// The shim command can run as a zygote (`--zygote`: the `aside-shim` binary can, `aside
    /// __shim` cannot) that forks the prestarted shims.
    pub shim_zygote: bool,
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
    /// The shim, set once it reported (its signal handlers are installed by then).
    shim: watch::Sender<Option<ShimRef>>,
    done: watch::Sender<bool>,
}

/// A run's shim as stop requests reach it: its pid, and a pidfd for a shim that is not the
/// daemon's own unreaped child (forked by the zygote, or re-attached), so that a signal can only
/// reach that process, even once it has exited and its pid is reused.
#[derive(Clone, Debug)]
pub(crate) struct ShimRef {
    pid: i32,
    pidfd: Option<Arc<std::os::fd::OwnedFd>>,
}

impl ShimRef {
    /// The daemon's own child, not reaped before its run is finished.
    pub(crate) fn child(pid: i32) -> ShimRef {
        ShimRef { pid, pidfd: None }
    }

    /// Any other process, through a pidfd open for it (`pidfd`, which is duplicated).
    pub(crate) fn with_pidfd(pid: i32, pidfd: &std::os::fd::OwnedFd) -> Result<ShimRef> {
        let pidfd = pidfd
            .try_clone()
            .map_err(|e| Error::Io(format!("cannot duplicate the pidfd of {pid}: {e}")))?;
        Ok(ShimRef {
            pid,
            pidfd: Some(Arc::new(pidfd)),
        })
    }

    /// Sends SIGUSR1 (a stop request is waiting in `control.json`); an error when the shim is
    /// gone (which its run's end then says).
    pub(crate) fn request_stop(&self) -> std::io::Result<()> {
        match &self.pidfd {
            Some(fd) => Ok(rustix::process::pidfd_send_signal(
                fd,
                rustix::process::Signal::USR1,
            )?),
            None => {
                let pid = rustix::process::Pid::from_raw(self.pid)
                    .ok_or_else(|| std::io::Error::other(format!("invalid pid {}", self.pid)))?;
                Ok(rustix::process::kill_process(
                    pid,
                    rustix::process::Signal::USR1,
                )?)
            }
        }
    }
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
    /// A shim started ahead of the next run (see `launch.rs`), taken by the run that claims its
    /// run id.
    prestarted: Mutex<Option<launch::Prestarted>>,
    /// Whether the next prestarted shim is being made (from the answer of the run that took
    /// the last one until it waits), and the signal that it is done.
    prestarting: std::sync::atomic::AtomicBool,
    spare_made: tokio::sync::Notify,
    /// The zygote that forks prestarted shims (see `zygote.rs`).
    zygote: Mutex<zygote::ZygoteState>,
    /// Live runs on Slurm, by run id, and whether their poller runs (see `jobs.rs`).
    jobs: Mutex<HashMap<String, jobs::WatchedJob>>,
    jobs_polling: std::sync::atomic::AtomicBool,
    /// Woken when a Slurm run's `exit.json` appears (where the filesystem tells).
    jobs_wake: Arc<tokio::sync::Notify>,
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

/// Removes a forgotten or pruned run's directory; one that cannot be removed stays on disk
/// (said in the daemon log), its record gone already.
fn remove_run_dir(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("cannot remove {}: {e}", dir.display()),
    }
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
        let jobs_wake = Arc::new(tokio::sync::Notify::new());
        let exit_seen = Arc::clone(&jobs_wake);
        // One watcher for the daemon: run logs (followers, waiters) and watched project files.
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(ev) = res else { return };
            if ev.kind.is_access() {
                return;
            }
            let map = lock(&events);
            for path in &ev.paths {
                if path.starts_with(&runs_dir)
                    && path
                        .file_name()
                        .is_some_and(|n| n == crate::rundir::EXIT_FILE)
                {
                    // runs/<run_id>/exit.json of a Slurm run (only those directories are
                    // watched): its poller looks now rather than at its next tick.
                    exit_seen.notify_one();
                } else if path.starts_with(&runs_dir) {
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
                    let sent = file_tx.send(files::FileEvent {
                        path: path.clone(),
                        created: ev.kind.is_create(),
                    });
                    if sent.is_err() {
                        tracing::debug!("file watch ended: {} not looked at", path.display());
                    }
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
                prestarted: Mutex::new(None),
                prestarting: std::sync::atomic::AtomicBool::new(false),
                spare_made: tokio::sync::Notify::new(),
                zygote: Mutex::new(zygote::ZygoteState::NotStarted),
                jobs: Mutex::new(HashMap::new()),
                jobs_polling: std::sync::atomic::AtomicBool::new(false),
                jobs_wake,
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
            if self.inner.events.send(e.clone()).is_err() {
                tracing::trace!("event {} logged; nobody listening live", e.seq);
            }
        }
    }

    fn set_running(&self, run_id: &str, pid: i32, started_at: Timestamp) -> Result<()> {
        let mut store = self.store();
        if let Some(e) = store.set_running(run_id, pid, started_at)? {
            self.publish(std::slice::from_ref(&e));
        }
        Ok(())
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

    /// Makes run `run_id`'s log events (the counter its followers wait on) and watches its
    /// log directory `dir` for them.
    fn watch_logs(&self, run_id: &str, dir: &Path) {
        self.open_log_events(run_id);
        self.watch_log_dir(run_id, dir);
    }

    /// Makes run `run_id`'s log events, for followers to wait on (see [`Supervisor::watch_logs`]).
    fn open_log_events(&self, run_id: &str) {
        lock(&self.inner.log_events)
            .entry(run_id.to_string())
            .or_insert_with(|| watch::channel(0).0);
    }

    /// Watches run `run_id`'s log directory `dir`, then counts one log event: whatever was
    /// written before the watch was in place (a run whose shim was told to go first, as `run`
    /// does so that the watch is added while the command starts) is read by its followers then.
    fn watch_log_dir(&self, run_id: &str, dir: &Path) {
        if let Some(w) = lock(&self.inner.watcher).as_mut() {
            use notify::Watcher;
            if let Err(e) = w.watch(dir, notify::RecursiveMode::NonRecursive) {
                tracing::warn!("cannot watch {}: {e}", dir.display());
            }
        }
        if let Some(tx) = lock(&self.inner.log_events).get(run_id) {
            tx.send_modify(|n| *n += 1);
        }
    }

    fn unwatch_logs(&self, run_id: &str, dir: &Path) {
        if let Some(tx) = lock(&self.inner.log_events).remove(run_id) {
            tx.send_modify(|n| *n += 1);
        }
        if let Some(w) = lock(&self.inner.watcher).as_mut() {
            use notify::Watcher;
            // A directory removed with its run is unwatched by the kernel already.
            if let Err(e) = w.unwatch(dir) {
                tracing::debug!("unwatch {}: {e}", dir.display());
            }
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
        row.info.unrecorded = lock(&self.inner.unrecorded)
            .get(row.info.run_id.as_str())
            .cloned();
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
                p.unrecorded = unrecorded.get(p.run_id.as_str()).cloned();
            }
        }
        Ok(list)
    }
}

/// A future that resolves when process `pid` exits, for a process that is not our child (a
/// re-attached shim, an agent host): a pidfd becomes readable when its process exits. Errors
/// when the pid is gone already or cannot be watched.
pub(crate) fn process_exit(pid: i32) -> Result<impl std::future::Future<Output = ()> + use<>> {
    pidfd_exit(pid, open_pidfd(pid)?)
}

/// A pidfd for process `pid`; errors when it is gone.
pub(crate) fn open_pidfd(pid: i32) -> Result<std::os::fd::OwnedFd> {
    let raw = rustix::process::Pid::from_raw(pid)
        .ok_or_else(|| Error::Io(format!("invalid pid {pid}")))?;
    rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty())
        .map_err(|e| Error::Io(format!("pidfd_open({pid}): {e}")))
}

/// The same from a pidfd already open for process `pid` (which names it in messages).
pub(crate) fn pidfd_exit(
    pid: i32,
    pidfd: std::os::fd::OwnedFd,
) -> Result<impl std::future::Future<Output = ()> + use<>> {
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

/// The run's id, in its command's environment.
pub const RUN_ID_VAR: &str = "ASIDE_RUN_ID";
/// A secret of the run's, in its command's environment: what `aside progress` proves itself with.
pub const RUN_TOKEN_VAR: &str = "ASIDE_RUN_TOKEN";

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
    fn names_are_checked() {
        assert!(valid_name("api-1.dev"));
        assert!(!valid_name("bad name"));
    }
}
