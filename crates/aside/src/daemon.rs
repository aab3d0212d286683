//! The daemon: one HTTP/JSON API (`/v1/…`) on a Unix socket in front of the
//! [`Supervisor`]. Handlers are thin — parse, call core, map the error.
//!
//! Life cycle: started by the first CLI command that needs it (or `aside daemon start`); one
//! per state directory, guarded by an exclusive `flock` on `daemon.lock`; in its own session so
//! killing the caller's process group does not kill it. It reports `ready` on stdout once it
//! listens (no poll sleeps in the CLI), reconciles every unfinished run, and exits after an
//! idle time with nothing running, on `POST /v1/daemon/stop`, or on SIGTERM/SIGINT — leaving
//! the processes running under their shims and removing its socket.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use aside_core::paths::StateDir;
use aside_core::store::ListFilter;
use aside_core::supervisor::{Error, Requester, Settings, Supervisor};
use aside_proto::{
    AckRequest, ApiError, DaemonStatus, DaemonStopping, ErrorBody, ErrorCode, HUMAN_OWNER,
    LogQuery, OWNER_HEADER, PROTOCOL_HEADER, PROTOCOL_VERSION, RunRequest, StopAllRequest,
    StopRequest, TEAM_HEADER, WaitQuery,
};
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use jiff::Timestamp;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};

mod web;
pub use web::Access;

/// How long in-flight requests (follows, waits) get to finish once the daemon stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How often finished runs are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Daemon tunables, from `aside daemon start|run` flags or the environment.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Exit after this long with nothing running and no requests; zero: never.
    pub idle_timeout: Duration,
    /// Terminal runs older than this are pruned (unread notifications never).
    pub prune_after: Duration,
    /// Default per-run log cap in bytes.
    pub log_cap: u64,
    /// The permission policy file; `None`: `policy.json` in the state directory.
    pub policy: Option<std::path::PathBuf>,
    /// Wake actions wait this long to batch results that arrive together.
    pub wake_debounce: Duration,
    /// First wait before a wake is tried again.
    pub wake_backoff: Duration,
    /// Also serve the dashboard and API on this loopback TCP address (with tokens); the
    /// daemon then does not exit when idle.
    pub listen: Option<std::net::SocketAddr>,
    /// Rebuild the state database from the run directories (the old one is moved aside).
    pub recover: bool,
}

/// The daemon's state as every handler and layer sees it: one `Arc`, because axum clones its
/// state for each layer of every request (cloning the fields themselves was ~7% of the
/// daemon's time per request).
#[derive(Clone)]
struct App(Arc<AppState>);

impl std::ops::Deref for App {
    type Target = AppState;
    fn deref(&self) -> &AppState {
        &self.0
    }
}

struct AppState {
    sup: Supervisor,
    state: StateDir,
    started_at: Timestamp,
    opts: DaemonOptions,
    last_activity_ms: Arc<AtomicI64>,
    in_flight: Arc<AtomicUsize>,
    /// Set once, with why, when the daemon starts to stop.
    stopping: watch::Sender<Option<DaemonStopping>>,
    proxies: crate::proxy::Proxies,
    /// The port of the TCP listener, once it listens.
    web_port: Arc<tokio::sync::Mutex<Option<u16>>>,
}

/// Returns once the daemon starts to stop. (The sender lives as long as the daemon: an error
/// would mean it is gone, which is a stop too.)
pub(crate) async fn until_stopping(rx: &mut watch::Receiver<Option<DaemonStopping>>) {
    if rx.wait_for(Option::is_some).await.is_err() {
        tracing::debug!("the stop signal's sender is gone");
    }
}

/// Removes the daemon's socket file; it may not be there.
fn remove_socket(socket: &std::path::Path) {
    if let Err(e) = std::fs::remove_file(socket)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("cannot remove {}: {e}", socket.display());
    }
}

/// Writes one line to the CLI that started us (on stdout), then detaches stdout.
fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        // The CLI that started us went away; it finds the daemon on the socket or its log.
        tracing::warn!("cannot report {line:?} to the starting CLI: {e}");
    }
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        // SAFETY: dup2 onto our own stdout.
        unsafe { libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO) };
    }
}

/// `aside daemon run`: the daemon in the foreground. Returns the process exit code.
pub fn run(opts: DaemonOptions) -> i32 {
    crate::log_to_stderr("info");
    let state = match StateDir::from_env().and_then(|s| s.ensure().map(|()| s)) {
        Ok(s) => s,
        Err(e) => {
            report(&format!("error: {e}"));
            return 1;
        }
    };
    // SAFETY: setsid has no preconditions; failure (already a leader) is harmless.
    unsafe { libc::setsid() };
    let lock = match File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(state.lock())
    {
        Ok(f) => f,
        Err(e) => {
            report(&format!(
                "error: cannot open {}: {e}",
                state.lock().display()
            ));
            return 1;
        }
    };
    if let Err(e) = lock_state_dir(&lock, &state) {
        // Another daemon owns this state directory; the caller connects to it.
        tracing::info!(
            "{} is locked ({e}) by pid {}: another daemon serves this state directory",
            state.lock().display(),
            lock_holder(&lock).map_or("?".into(), |p| p.to_string())
        );
        report("running");
        return 0;
    }
    aside_core::supervisor::raise_fd_limit();
    let rt = match crate::server_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            report(&format!("error: cannot start the async runtime: {e}"));
            return 1;
        }
    };
    let code = rt.block_on(serve(state, opts));
    drop(lock);
    code
}

/// Takes the state directory's lock. A daemon that was just killed keeps it for a moment after
/// its socket closed (its files are closed one by one as it exits): while nobody answers on the
/// socket, the lock is tried again for up to 2 s rather than reporting a daemon that is gone.
fn lock_state_dir(lock: &File, state: &StateDir) -> rustix::io::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        match rustix::fs::flock(lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(()),
            Err(e) => {
                let answers = std::os::unix::net::UnixStream::connect(state.socket()).is_ok();
                if answers || std::time::Instant::now() >= deadline {
                    return Err(e);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// The pid holding a lock on `file`, from `/proc/locks` (`… FLOCK ADVISORY WRITE <pid> <maj>:<min>:<inode> …`).
fn lock_holder(file: &File) -> Option<i32> {
    use std::os::unix::fs::MetadataExt;
    let inode = file.metadata().ok()?.ino();
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let ino = f.get(5)?.rsplit(':').next()?.parse::<u64>().ok()?;
        (ino == inode).then(|| f.get(4)?.parse().ok()).flatten()
    })
}

async fn serve(state: StateDir, opts: DaemonOptions) -> i32 {
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            report(&format!("error: cannot find the aside executable: {e}"));
            return 1;
        }
    };
    // The small shim binary beside us keeps each process's memory low; `aside __shim` works
    // too (e.g. when only `aside` was copied somewhere).
    let small = exe.with_file_name("aside-shim");
    let shim_zygote = small.is_file();
    let shim_command = if shim_zygote {
        vec![small.into_os_string()]
    } else {
        tracing::info!(
            "{} is missing: shims run as `aside __shim`",
            small.display()
        );
        vec![exe.into_os_string(), "__shim".into()]
    };
    let settings = Settings {
        shim_command,
        shim_zygote,
        default_log_cap: opts.log_cap,
        prune_after: opts.prune_after,
        policy_path: opts
            .policy
            .clone()
            .unwrap_or_else(|| state.default_policy()),
        wake_debounce: opts.wake_debounce,
        wake_backoff: opts.wake_backoff,
        recover: opts.recover,
    };
    let sup = match Supervisor::open(state.clone(), settings) {
        Ok(s) => s,
        Err(e) => {
            report(&format!("error: {e}"));
            return 1;
        }
    };
    let socket = state.socket();
    // A dead daemon's socket (we hold the lock, so nobody listens on it); binding says the rest.
    remove_socket(&socket);
    let listener = match tokio::net::UnixListener::bind(&socket) {
        Ok(l) => l,
        Err(e) => {
            report(&format!(
                "error: cannot listen on {}: {e}",
                socket.display()
            ));
            return 1;
        }
    };
    if let Err(e) = std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)) {
        report(&format!("error: cannot restrict {}: {e}", socket.display()));
        return 1;
    }
    match sup.reconcile() {
        Ok(n) if n > 0 => tracing::info!("re-attached to {n} running processes"),
        Ok(_) => {}
        Err(e) => tracing::error!("reconcile failed: {e}"),
    }
    if let Err(e) = sup.prune() {
        tracing::error!("prune failed: {e}");
    }
    sup.start_waker();
    let (stopping, _) = watch::channel(None);
    let app = App(Arc::new(AppState {
        sup: sup.clone(),
        state: state.clone(),
        started_at: Timestamp::now(),
        opts,
        last_activity_ms: Arc::new(AtomicI64::new(Timestamp::now().as_millisecond())),
        in_flight: Arc::new(AtomicUsize::new(0)),
        stopping,
        proxies: crate::proxy::Proxies::new(sup.clone()),
        web_port: Arc::new(tokio::sync::Mutex::new(None)),
    }));
    if let Some(addr) = app.opts.listen {
        match web::listen(&app, addr).await {
            Ok(port) => *app.web_port.lock().await = Some(port),
            Err(e) => {
                report(&format!("error: {e}"));
                return 1;
            }
        }
    }
    restore_proxies(&app).await;
    tokio::spawn(watch_signals(app.stopping.clone()));
    tokio::spawn(idle_and_prune(app.clone()));
    tracing::info!(
        "aside daemon {} (protocol {PROTOCOL_VERSION}) listening on {}",
        env!("CARGO_PKG_VERSION"),
        socket.display()
    );
    report("ready");

    let mut stop_rx = app.stopping.subscribe();
    let mut force_rx = app.stopping.subscribe();
    let server = axum::serve(listener, router(app.clone())).with_graceful_shutdown(async move {
        until_stopping(&mut stop_rx).await;
    });
    tokio::select! {
        r = server => if let Err(e) = r { tracing::error!("server error: {e}") },
        _ = async {
            until_stopping(&mut force_rx).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {}
    }
    remove_socket(&socket);
    tracing::info!(
        "aside daemon stopped; {} processes keep running under their shims",
        app.sup.live_count()
    );
    0
}

/// Restarts the proxies of projects that still have live processes, on their old ports.
async fn restore_proxies(app: &App) {
    let Ok(projects) = app.sup.projects() else {
        return;
    };
    for p in projects {
        let Some(port) = p.proxy_port else { continue };
        if p.live == 0 {
            if let Err(e) = app.sup.set_proxy_port(&p.name, None) {
                tracing::warn!("project {:?}: cannot forget its proxy port: {e}", p.name);
            }
            continue;
        }
        if let Err(e) = app.proxies.ensure(&p.name, Some(port)).await {
            tracing::error!("cannot restore the proxy of project {:?}: {e}", p.name);
        }
    }
}

async fn watch_signals(stopping: watch::Sender<Option<DaemonStopping>>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    let signal = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!("{signal}: stopping");
    stopping.send_replace(Some(DaemonStopping::Signal {
        signal: signal.into(),
    }));
}

async fn idle_and_prune(app: App) {
    let mut last_prune = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = tokio::time::Instant::now();
            if let Err(e) = app.sup.prune() {
                tracing::error!("prune failed: {e}");
            }
        }
        let idle = app.opts.idle_timeout;
        // Members on the TCP listener do not start a daemon: it stays for them.
        if idle.is_zero() || app.opts.listen.is_some() {
            continue;
        }
        let quiet_ms =
            Timestamp::now().as_millisecond() - app.last_activity_ms.load(Ordering::SeqCst);
        if app.sup.live_count() == 0
            && !app.sup.has_duties()
            && app.in_flight.load(Ordering::SeqCst) == 0
            && quiet_ms >= idle.as_millis() as i64
        {
            tracing::info!("idle for {quiet_ms} ms with nothing running: exiting");
            app.stopping.send_replace(Some(DaemonStopping::Idle {
                idle_timeout_ms: idle.as_millis() as u64,
            }));
            return;
        }
    }
}

/// The socket's router: the API, every request from the local user.
fn router(app: App) -> Router {
    api_routes(app).layer(middleware::from_fn(
        |mut req: Request, next: Next| async move {
            req.extensions_mut().insert(Access::Local);
            next.run(req).await
        },
    ))
}

/// The `/v1` API, shared by the socket and the TCP listener (which adds its guard). Every
/// request must carry an [`Access`] extension.
fn api_routes(app: App) -> Router {
    Router::new()
        .route("/v1/version", get(version))
        .route("/v1/whoami", get(web::whoami))
        .route("/v1/web", post(web_start))
        .route("/v1/tokens", get(tokens).post(token_create))
        .route("/v1/tokens/{id}", axum::routing::delete(token_revoke))
        .route("/v1/stats", get(stats))
        .route("/v1/processes/{reference}/history", get(history))
        .route("/v1/daemon", get(daemon_status))
        .route("/v1/daemon/stop", post(daemon_stop))
        .route("/v1/processes", get(list).post(create))
        .route("/v1/processes/{reference}", get(show))
        .route("/v1/processes/{reference}/stop", post(stop))
        .route("/v1/processes/{reference}/restart", post(restart))
        .route("/v1/processes/{reference}/logs", get(logs))
        .route("/v1/processes/{reference}/wait", get(wait))
        .route("/v1/processes/{reference}/result", get(result))
        .route("/v1/processes/{reference}/stdin", post(stdin))
        .route("/v1/stop-all", post(stop_all))
        .route("/v1/projects", get(projects))
        .route("/v1/projects/clean", post(projects_clean))
        .route("/v1/projects/{project}/up", post(project_up))
        .route("/v1/projects/{project}/down", post(project_down))
        .route("/v1/events", get(events))
        .route("/v1/owners/{owner}/inbox", get(inbox))
        .route("/v1/owners/{owner}/inbox/ack", post(ack))
        .route("/v1/owners/{owner}/inbox/take", post(take))
        .route(
            "/v1/owners/{owner}/wake",
            get(wake_show).put(wake_set).delete(wake_clear),
        )
        .route("/v1/owners/{owner}/idle", post(idle))
        .route(
            "/v1/owners/{owner}/session",
            get(session_show).put(session_set),
        )
        .route("/v1/sessions", get(session_of_process))
        .route(
            "/v1/runs/{run_id}/progress",
            get(progress_history).post(progress_report),
        )
        .fallback(|| async {
            api_error(
                ErrorCode::NotFound,
                "no such endpoint: the API lives under /v1/ (see ARCHITECTURE.md)".into(),
            )
        })
        .route_layer(middleware::from_fn_with_state(app.clone(), authorize_layer))
        .layer(middleware::from_fn_with_state(app.clone(), protocol_layer))
        .with_state(app)
}

/// Says who a request is from ([`Requester`] with the listener's [`Access`], put in its
/// extensions for the handler) and has the one table in `aside_core::authz` judge what its
/// route asks; what depends on the body (whose processes, as whom) is judged by the
/// supervisor, by the same table.
async fn authorize_layer(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let access = req
        .extensions()
        .get::<Access>()
        .cloned()
        .unwrap_or_default();
    let who = requester(req.headers()).with_access(access);
    if let Err(e) = judge_route(&app, &req, &who) {
        return ApiErr::from(e).into_response();
    }
    req.extensions_mut().insert(who);
    next.run(req).await
}

/// The row of the table a request's route asks for (see [`authorize_layer`]).
fn judge_route(app: &App, req: &Request, who: &Requester) -> Result<(), Error> {
    use aside_core::authz::Action;
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let changes = !matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    let segment = |i: usize| {
        req.uri()
            .path()
            .split('/')
            .nth(i)
            .map(|s| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .unwrap_or_default()
    };
    let process = route
        .starts_with("/v1/processes/{reference}")
        .then(|| app.sup.find(&segment(3)).ok())
        .flatten();
    let owner = route.starts_with("/v1/owners/{owner}").then(|| segment(3));
    let action = match (route.as_str(), &process, &owner) {
        (_, Some(row), _) => Action::Read(&row.info),
        (_, _, Some(o)) => Action::OwnerData {
            owner: o,
            change: changes,
        },
        ("/v1/processes" | "/v1/projects/{project}/up", _, _) if changes => {
            Action::Start { owner: &who.owner }
        }
        ("/v1/stop-all" | "/v1/projects/{project}/down", _, _) => Action::StopAll { owner: None },
        ("/v1/projects/clean", _, _) => Action::CleanProjects,
        ("/v1/tokens" | "/v1/tokens/{id}" | "/v1/web" | "/v1/sessions", _, _) => Action::Admin,
        ("/v1/daemon/stop", _, _) => Action::StopDaemon,
        _ => Action::Look,
    };
    app.sup.authorize(who, action)
}

/// Checks the client's protocol version, stamps ours on every answer, tracks activity.
async fn protocol_layer(State(app): State<App>, req: Request, next: Next) -> Response {
    app.last_activity_ms
        .store(Timestamp::now().as_millisecond(), Ordering::SeqCst);
    let theirs = req
        .headers()
        .get(PROTOCOL_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let changes = !matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    let owner_header = req
        .headers()
        .get(OWNER_HEADER)
        .map(|v| v.to_str().map(str::to_string));
    let bad_owner = match &owner_header {
        Some(Ok(o)) => aside_core::supervisor::check_owner("owner", o).err(),
        Some(Err(_)) => Some(Error::Invalid(format!(
            "the {OWNER_HEADER} header is not text"
        ))),
        None => None,
    };
    let mut resp = match theirs {
        _ if let Some(e) = bad_owner => api_error(ErrorCode::InvalidRequest, e.to_string()),
        // A change must say which protocol it speaks (reads stay open to curl and EventSource).
        None if changes => api_error(
            ErrorCode::InvalidRequest,
            format!(
                "a {} request must carry the {PROTOCOL_HEADER}: {PROTOCOL_VERSION} header (the CLI, the MCP server and the dashboard send it; with curl add -H '{PROTOCOL_HEADER}: {PROTOCOL_VERSION}')",
                req.method()
            ),
        ),
        Some(v) if v != PROTOCOL_VERSION.to_string() => api_error(
            ErrorCode::ProtocolMismatch,
            format!(
                "this client speaks protocol version {v}, the daemon speaks {PROTOCOL_VERSION}: use an aside of the same version, or stop the daemon with `aside daemon stop` and let the newer one start"
            ),
        ),
        _ => {
            if let Some(owner) = req
                .headers()
                .get(OWNER_HEADER)
                .and_then(|v| v.to_str().ok())
                .filter(|o| !o.is_empty())
            {
                app.sup.touch(owner);
            }
            app.in_flight.fetch_add(1, Ordering::SeqCst);
            let r = next.run(req).await;
            app.in_flight.fetch_sub(1, Ordering::SeqCst);
            app.last_activity_ms
                .store(Timestamp::now().as_millisecond(), Ordering::SeqCst);
            r
        }
    };
    resp.headers_mut()
        .insert(PROTOCOL_HEADER, HeaderValue::from(PROTOCOL_VERSION));
    resp
}

/// Counts a streaming answer (events, stats, a followed log, `up` progress) as a request in
/// flight for as long as it streams: the daemon does not idle-exit while anyone watches.
fn watched<S: futures_util::Stream>(
    app: &App,
    stream: S,
) -> impl futures_util::Stream<Item = S::Item> + use<S> {
    use futures_util::StreamExt;
    struct Watching(Arc<AtomicUsize>);
    impl Drop for Watching {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    app.in_flight.fetch_add(1, Ordering::SeqCst);
    let guard = Watching(Arc::clone(&app.in_flight));
    stream.map(move |item| {
        let _held = &guard;
        item
    })
}

fn api_error(code: ErrorCode, message: String) -> Response {
    let status = match code {
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::InvalidRequest | ErrorCode::ProtocolMismatch => StatusCode::BAD_REQUEST,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotSupported => StatusCode::NOT_IMPLEMENTED,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (
        status,
        Json(ErrorBody {
            error: ApiError { code, message },
        }),
    )
        .into_response()
}

/// A handler error: rendered as [`ErrorBody`] with the status of its code.
struct ApiErr {
    code: ErrorCode,
    message: String,
}

impl ApiErr {
    fn new(code: ErrorCode, message: String) -> ApiErr {
        ApiErr { code, message }
    }
}

impl From<Error> for ApiErr {
    fn from(e: Error) -> ApiErr {
        ApiErr::new(e.code(), e.to_string())
    }
}

impl IntoResponse for ApiErr {
    fn into_response(self) -> Response {
        api_error(self.code, self.message)
    }
}

type ApiResult<T> = Result<T, ApiErr>;

fn requester(headers: &HeaderMap) -> Requester {
    let via = headers
        .get(aside_proto::VIA_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    Requester::new(
        header(OWNER_HEADER).unwrap_or_else(|| HUMAN_OWNER.to_string()),
        header(TEAM_HEADER),
    )
    .via(via)
}

fn body<T: DeserializeOwned + Default>(bytes: &Bytes) -> ApiResult<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    required_body(bytes)
}

/// A JSON body that must be there.
fn required_body<T: DeserializeOwned>(bytes: &Bytes) -> ApiResult<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiErr::new(ErrorCode::InvalidRequest, format!("invalid JSON body: {e}")))
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    q.map(|Query(v)| v).map_err(|e| {
        ApiErr::new(
            ErrorCode::InvalidRequest,
            format!("invalid query: {}", e.body_text()),
        )
    })
}

async fn version() -> Json<aside_proto::VersionInfo> {
    Json(aside_proto::VersionInfo {
        protocol: PROTOCOL_VERSION,
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

async fn daemon_status(State(app): State<App>) -> Json<DaemonStatus> {
    Json(DaemonStatus {
        pid: std::process::id(),
        protocol: PROTOCOL_VERSION,
        version: env!("CARGO_PKG_VERSION").into(),
        state_dir: app.state.root().display().to_string(),
        socket: app.state.socket().display().to_string(),
        started_at: app.started_at,
        live_processes: app.sup.live_count(),
        idle_timeout_ms: app.opts.idle_timeout.as_millis() as u64,
    })
}

async fn daemon_stop(State(app): State<App>) -> Json<aside_proto::DaemonStopAnswer> {
    app.stopping.send_replace(Some(DaemonStopping::Requested));
    Json(aside_proto::DaemonStopAnswer {
        stopping: true,
        pid: std::process::id(),
    })
}

/// A member's requests start processes as the member, whatever the body says.
fn as_member(access: &Access, req: &mut RunRequest) {
    if let Some(m) = access.member() {
        req.owner = Some(m.owner.clone());
        req.team = m.team.clone();
    }
}

async fn create(
    State(app): State<App>,
    Extension(access): Extension<Access>,
    Extension(who): Extension<Requester>,
    bytes: Bytes,
) -> ApiResult<Response> {
    let mut req: RunRequest = body(&bytes)?;
    as_member(&access, &mut req);
    if req.proxy {
        let project = req.project.clone().unwrap_or_default();
        app.proxies
            .ensure(&project, None)
            .await
            .map_err(|e| ApiErr::new(ErrorCode::Conflict, e))?;
    }
    let info = app.sup.run(req, &who).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

async fn projects(State(app): State<App>) -> ApiResult<Response> {
    Ok(Json(app.sup.projects()?).into_response())
}

async fn projects_clean(
    State(app): State<App>,
    Extension(_who): Extension<Requester>,
) -> ApiResult<Response> {
    Ok(Json(app.sup.clean_projects()?).into_response())
}

/// Starts a project; answers with its progress as NDJSON [`aside_proto::UpMessage`]s.
async fn project_up(
    State(app): State<App>,
    Extension(access): Extension<Access>,
    Path(project): Path<String>,
    Extension(who): Extension<Requester>,
    bytes: Bytes,
) -> ApiResult<Response> {
    let mut req: aside_proto::UpRequest = body(&bytes)?;
    for p in &mut req.processes {
        as_member(&access, p);
    }
    let proxy = if req.proxy {
        let had = app.proxies.port(&project).is_some();
        let port = app
            .proxies
            .ensure(&project, req.proxy_port)
            .await
            .map_err(|e| ApiErr::new(ErrorCode::Conflict, e))?;
        Some((port, had))
    } else {
        None
    };
    let rx = match app.sup.up(&project, req, &who).await {
        Ok(rx) => rx,
        Err(e) => {
            if let Some((_, false)) = proxy {
                app.proxies.stop(&project);
            }
            return Err(e.into());
        }
    };
    let first = proxy.map(|(port, _)| aside_proto::UpMessage::Proxy { port });
    let stream = futures_util::stream::unfold((first, rx), |(first, mut rx)| async move {
        let msg = match first {
            Some(m) => m,
            None => rx.recv().await?,
        };
        let mut line = serde_json::to_vec(&msg).unwrap_or_default();
        line.push(b'\n');
        Some((
            Ok::<_, std::convert::Infallible>(Bytes::from(line)),
            (None, rx),
        ))
    });
    Ok((
        [("content-type", "application/x-ndjson")],
        Body::from_stream(watched(&app, stream)),
    )
        .into_response())
}

/// Stops a project (dependents first) and its proxy.
async fn project_down(
    State(app): State<App>,
    Path(project): Path<String>,
    Extension(who): Extension<Requester>,
) -> ApiResult<Response> {
    let resp = app.sup.down(&project, &who).await?;
    if resp.refused.is_empty() {
        app.proxies.stop(&project);
    }
    Ok(Json(resp).into_response())
}

async fn list(
    State(app): State<App>,
    Extension(access): Extension<Access>,
    q: Result<Query<aside_proto::ListQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let q = query(q)?;
    let filter = ListFilter {
        all: q.all,
        owner: q.owner,
        team: q.team,
        project: q.project,
    };
    // Read before the list: events after it may already be in the list, none is missed
    // by a client that streams `/v1/events?since=` this number.
    let seq = app.sup.last_event_seq()?;
    let mut list = app.sup.list(&filter)?;
    list.retain(|p| access.sees(p));
    // Into a buffer of about the right size at once (a process is ~550 bytes of JSON): grown
    // by doubling from axum's 128 bytes it was copied ten times at 1000 processes.
    let mut json = Vec::with_capacity(64 + list.len() * 640);
    serde_json::to_writer(&mut json, &list)
        .map_err(|e| ApiErr::new(ErrorCode::Internal, format!("cannot encode the list: {e}")))?;
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/json".to_string(),
            ),
            (
                axum::http::HeaderName::from_static(LAST_EVENT_HEADER),
                seq.to_string(),
            ),
        ],
        json,
    )
        .into_response())
}

/// Answer header of `GET /v1/processes`: the event sequence number the list is at least as
/// new as (stream `/v1/events?since=` it to miss nothing).
const LAST_EVENT_HEADER: &str = "aside-last-event";

async fn show(State(app): State<App>, Path(reference): Path<String>) -> ApiResult<Response> {
    Ok(Json(app.sup.find(&reference)?.info).into_response())
}

async fn stop(
    State(app): State<App>,
    Path(reference): Path<String>,
    Extension(who): Extension<Requester>,
    bytes: Bytes,
) -> ApiResult<Response> {
    let req: StopRequest = body(&bytes)?;
    let info = app.sup.stop(&reference, &req, &who).await?;
    Ok(Json(info).into_response())
}

async fn restart(
    State(app): State<App>,
    Path(reference): Path<String>,
    Extension(who): Extension<Requester>,
) -> ApiResult<Response> {
    let info = app.sup.restart(&reference, &who).await?;
    Ok(Json(info).into_response())
}

async fn stop_all(
    State(app): State<App>,
    Extension(who): Extension<Requester>,
    bytes: Bytes,
) -> ApiResult<Response> {
    let req: StopAllRequest = body(&bytes)?;
    let resp = app.sup.stop_all(req.owner.as_deref(), &who).await?;
    Ok(Json(resp).into_response())
}

async fn logs(
    State(app): State<App>,
    Path(reference): Path<String>,
    q: Result<Query<LogQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let q = query(q)?;
    if !q.follow || q.head.is_some() {
        return Ok(Json(app.sup.logs(&reference, &q)?).into_response());
    }
    let (tx, rx) = mpsc::channel(256);
    app.sup.follow(&reference, q, tx).await?;
    // Entries, one per line; a failure is the last line, an error body (`{"error": …}`).
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let mut line = match rx.recv().await? {
            Ok(entry) => serde_json::to_vec(&entry).unwrap_or_default(),
            Err(e) => serde_json::to_vec(&ErrorBody {
                error: ApiError {
                    code: e.code(),
                    message: e.to_string(),
                },
            })
            .unwrap_or_default(),
        };
        line.push(b'\n');
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(line)), rx))
    });
    Ok((
        [("content-type", "application/x-ndjson")],
        Body::from_stream(watched(&app, stream)),
    )
        .into_response())
}

async fn stdin(
    State(app): State<App>,
    Path(reference): Path<String>,
    Extension(who): Extension<Requester>,
    bytes: Bytes,
) -> ApiResult<Response> {
    let req: aside_proto::StdinRequest = body(&bytes)?;
    let info = app.sup.write_stdin(&reference, &req.chars, &who)?;
    Ok(Json(info).into_response())
}

async fn wait(
    State(app): State<App>,
    Path(reference): Path<String>,
    q: Result<Query<WaitQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let q = query(q)?;
    Ok(Json(app.sup.wait(&reference, &q).await?).into_response())
}

async fn result(State(app): State<App>, Path(reference): Path<String>) -> ApiResult<Response> {
    match app.sup.result(&reference)? {
        Some(r) => Ok(Json(r).into_response()),
        None => Err(ApiErr::new(
            ErrorCode::Conflict,
            format!(
                "{reference:?} is still running: it has no result yet (`aside wait {reference} --exit`)"
            ),
        )),
    }
}

/// `GET /v1/events`: Server-Sent Events from the event log — replay after `Last-Event-ID` (or
/// `since`), then live (`Supervisor::event_stream`) — until the client goes or the daemon
/// stops.
async fn events(
    State(app): State<App>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    q: Result<Query<aside_proto::EventsQuery>, QueryRejection>,
) -> ApiResult<Response> {
    use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
    use futures_util::StreamExt;
    let q = query(q)?;
    let kinds: Option<Vec<aside_proto::EventKind>> = match &q.kind {
        None => None,
        Some(list) => Some(
            list.split(',')
                .map(|k| {
                    aside_proto::EventKind::parse(k.trim()).ok_or_else(|| {
                        ApiErr::new(
                            ErrorCode::InvalidRequest,
                            format!("unknown event kind {k:?}: use run_started, run_exited, notification_created or notification_acked"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let since = match last_event_id.or(q.since) {
        Some(s) => s,
        None => app.sup.last_event_seq()?,
    };
    let events = app.sup.event_stream(since, q.owner);
    let mut stopping = app.stopping.subscribe();
    let why = app.stopping.subscribe();
    let ended = Box::pin(async move {
        until_stopping(&mut stopping).await;
    });
    // Ends with the daemon (an open stream would hold a graceful shutdown forever), saying why
    // as its last event.
    let last = futures_util::stream::once(async move { why.borrow().clone() }).filter_map(|why| {
        std::future::ready(why.map(|why| {
            Ok::<_, std::convert::Infallible>(
                SseEvent::default()
                    .event(DaemonStopping::EVENT)
                    .json_data(&why)
                    .unwrap_or_default(),
            )
        }))
    });
    let stream = futures_util::StreamExt::take_until(events, ended).filter_map(move |e| {
        let wanted = kinds.as_ref().is_none_or(|k| k.contains(&e.kind())) && access.sees_event(&e);
        let sse = wanted.then(|| {
            Ok::<_, std::convert::Infallible>(
                SseEvent::default()
                    .id(e.seq.to_string())
                    .event(e.kind().as_str())
                    .json_data(&e)
                    .unwrap_or_default(),
            )
        });
        std::future::ready(sse)
    });
    let stream = futures_util::StreamExt::chain(stream, last);
    Ok(Sse::new(watched(&app, stream))
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn wake_set(
    State(app): State<App>,
    Path(owner): Path<String>,
    Extension(who): Extension<Requester>,
    bytes: Bytes,
) -> ApiResult<Response> {
    let action: aside_proto::WakeAction = body(&bytes)?;
    Ok(Json(app.sup.set_wake(&who, &owner, action)?).into_response())
}

async fn wake_show(State(app): State<App>, Path(owner): Path<String>) -> ApiResult<Response> {
    match app.sup.wake_action(&owner)? {
        Some(a) => Ok(Json(a).into_response()),
        None => Err(ApiErr::new(
            ErrorCode::NotFound,
            format!("{owner} has no wake action: set one with `aside wake set`"),
        )),
    }
}

async fn wake_clear(
    State(app): State<App>,
    Path(owner): Path<String>,
    Extension(who): Extension<Requester>,
) -> ApiResult<Response> {
    let had = app.sup.clear_wake(&who, &owner)?;
    Ok(Json(aside_proto::WakeCleared {
        owner,
        cleared: had,
    })
    .into_response())
}

async fn idle(State(app): State<App>, Path(owner): Path<String>) -> Json<aside_proto::IdleMarked> {
    app.sup.mark_idle(&owner);
    Json(aside_proto::IdleMarked { owner, idle: true })
}

#[derive(Deserialize, Default)]
struct InboxQuery {
    /// Only results no resumed host session is being given now.
    #[serde(default)]
    deliverable: bool,
}

async fn inbox(
    State(app): State<App>,
    Path(owner): Path<String>,
    q: Result<Query<InboxQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let q = query(q)?;
    Ok(Json(app.sup.inbox(&owner, q.deliverable)?).into_response())
}

async fn take(
    State(app): State<App>,
    Path(owner): Path<String>,
    bytes: Bytes,
) -> ApiResult<Response> {
    let req: aside_proto::TakeRequest = body(&bytes)?;
    Ok(Json(app.sup.take(&owner, req.max_bytes, &req.ack)?).into_response())
}

async fn session_set(
    State(app): State<App>,
    Path(owner): Path<String>,
    Extension(who): Extension<Requester>,
    bytes: Bytes,
) -> ApiResult<Response> {
    let session: aside_proto::HostSession = required_body(&bytes)?;
    Ok(Json(app.sup.set_host_session(&who, &owner, session)?).into_response())
}

/// `POST /v1/runs/{run_id}/progress`: a report from inside the run (its token proves it).
async fn progress_report(
    State(app): State<App>,
    Path(run_id): Path<String>,
    bytes: Bytes,
) -> ApiResult<Response> {
    let req: aside_proto::ProgressRequest = required_body(&bytes)?;
    app.sup
        .report_progress(&run_id, &req.token, &req.text, req.data)?;
    Ok(Json(aside_proto::ProgressRecorded {
        run_id: run_id.into(),
        recorded: true,
    })
    .into_response())
}

/// `GET /v1/runs/{run_id}/progress`: the run's reports, newest first (at most 100).
async fn progress_history(
    State(app): State<App>,
    Extension(who): Extension<Requester>,
    Path(run_id): Path<String>,
) -> ApiResult<Response> {
    let row = app.sup.find(&run_id)?;
    app.sup
        .authorize(&who, aside_core::authz::Action::Read(&row.info))?;
    Ok(Json(app.sup.progress_history(&run_id, 100)?).into_response())
}

#[derive(Deserialize)]
struct SessionQuery {
    pid: u32,
    start: u64,
}

/// `GET /v1/sessions?pid=&start=` (socket only): the session recorded for a host process.
async fn session_of_process(
    State(app): State<App>,
    q: Result<Query<SessionQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let q = query(q)?;
    match app.sup.host_session_of_process(q.pid, q.start)? {
        Some(s) => Ok(Json(s).into_response()),
        None => Err(ApiErr::new(
            ErrorCode::NotFound,
            format!("no host session is recorded for process {}", q.pid),
        )),
    }
}

async fn session_show(State(app): State<App>, Path(owner): Path<String>) -> ApiResult<Response> {
    match app.sup.host_session(&owner)? {
        Some(s) => Ok(Json(s).into_response()),
        None => Err(ApiErr::new(
            ErrorCode::NotFound,
            format!(
                "no agent-host session is recorded for {owner}: `aside mcp` and `aside hook claude` record one"
            ),
        )),
    }
}

async fn ack(
    State(app): State<App>,
    Path(owner): Path<String>,
    bytes: Bytes,
) -> ApiResult<Response> {
    let req: AckRequest = body(&bytes)?;
    Ok(Json(app.sup.ack(&owner, &req.ids, req.all)?).into_response())
}

/// `POST /v1/web` (socket only): starts the TCP listener if it does not listen yet and answers
/// with the dashboard's address, token included.
async fn web_start(State(app): State<App>, bytes: Bytes) -> ApiResult<Response> {
    let req: aside_proto::WebRequest = body(&bytes)?;
    let mut port = app.web_port.lock().await;
    let bound = match (*port, req.port) {
        (Some(p), Some(want)) if p != want => {
            return Err(ApiErr::new(
                ErrorCode::Conflict,
                format!(
                    "the dashboard already listens on port {p}: open that one, or restart the daemon (`aside daemon stop`) to move it to {want}"
                ),
            ));
        }
        (Some(p), _) => p,
        (None, want) => {
            let addr = |p: u16| std::net::SocketAddr::from(([127, 0, 0, 1], p));
            let bound = match want {
                Some(p) => web::listen(&app, addr(p)).await,
                // The last dashboard's port (an open page reconnects to it), else the default,
                // else (taken by another daemon's dashboard?) any free one.
                None => {
                    let mut bound = Err(String::new());
                    let tries = [web::last_port(&app), Some(web::DEFAULT_PORT), Some(0)];
                    for p in tries.into_iter().flatten() {
                        bound = web::listen(&app, addr(p)).await;
                        if bound.is_ok() {
                            break;
                        }
                    }
                    bound
                }
            };
            bound.map_err(|e| ApiErr::new(ErrorCode::Conflict, e))?
        }
    };
    if let Err(e) = web::remember_port(&app, bound) {
        tracing::warn!(
            "cannot remember the dashboard's port in {}: {e}; the next `aside web` may pick another",
            app.state.web_port().display()
        );
    }
    *port = Some(bound);
    let token = web::web_token(&app).map_err(|e| {
        ApiErr::new(
            ErrorCode::Internal,
            format!("cannot read the dashboard token: {e}"),
        )
    })?;
    Ok(Json(aside_proto::WebInfo {
        url: format!("http://127.0.0.1:{bound}/?token={token}"),
        port: bound,
    })
    .into_response())
}

async fn tokens(State(app): State<App>) -> ApiResult<Response> {
    Ok(Json(app.sup.tokens()?).into_response())
}

async fn token_create(State(app): State<App>, bytes: Bytes) -> ApiResult<Response> {
    let req: aside_proto::TokenRequest = body(&bytes)?;
    let made = app.sup.create_token(&req)?;
    Ok((StatusCode::CREATED, Json(made)).into_response())
}

async fn token_revoke(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(Json(app.sup.revoke_token(&id)?).into_response())
}

#[derive(Debug, Default, Deserialize)]
struct StatsQuery {
    /// Stream a `stats` Server-Sent Event this often (ms, at least 500) instead of answering once.
    every_ms: Option<u64>,
}

/// `GET /v1/stats`: CPU and memory of the trees of the live processes the requester sees;
/// with `every_ms`, the same as a stream of `stats` Server-Sent Events.
async fn stats(
    State(app): State<App>,
    Extension(access): Extension<Access>,
    q: Result<Query<StatsQuery>, QueryRejection>,
) -> ApiResult<Response> {
    use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
    let q = query(q)?;
    let Some(every) = q.every_ms else {
        return Ok(Json(visible_stats(&app, &access)?).into_response());
    };
    let every = Duration::from_millis(every.max(500));
    let stopping = app.stopping.subscribe();
    let counted = app.clone();
    let stream = futures_util::stream::unfold(
        (app, access, stopping, true),
        move |(app, access, mut stopping, first)| async move {
            if !first {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stopping.wait_for(Option::is_some) => return None,
                }
            }
            let stats = match visible_stats(&app, &access) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("stats failed: {}", e.message);
                    Vec::new()
                }
            };
            let sse = SseEvent::default()
                .event("stats")
                .json_data(&stats)
                .unwrap_or_default();
            Some((
                Ok::<_, std::convert::Infallible>(sse),
                (app, access, stopping, false),
            ))
        },
    );
    Ok(Sse::new(watched(&counted, stream))
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn visible_stats(app: &App, access: &Access) -> ApiResult<Vec<aside_proto::ProcessStats>> {
    Ok(app.sup.stats(|p| access.sees(p))?)
}

#[derive(Debug, Default, Deserialize)]
struct HistoryQuery {
    limit: Option<usize>,
}

/// `GET /v1/processes/{ref}/history`: results of its ended runs, newest first (default 20).
async fn history(
    State(app): State<App>,
    Path(reference): Path<String>,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let q = query(q)?;
    let limit = q.limit.unwrap_or(20).min(1000);
    Ok(Json(app.sup.history(&reference, limit)?).into_response())
}
