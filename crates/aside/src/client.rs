//! `Client`: the API client every front end uses — HTTP/1.1 over the daemon's Unix socket, or
//! over TCP to a daemon's listener with a bearer token (`--remote URL`, `ASIDE_TOKEN`).
//!
//! It starts the daemon when nobody answers on the socket (see [`Client::connect`]), sends
//! [`PROTOCOL_HEADER`] and the requester's owner on every request, and refuses to go on when the
//! daemon speaks another protocol version.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use aside_core::paths::StateDir;
use aside_proto::{
    DaemonStopping, ErrorBody, ErrorCode, HUMAN_OWNER, OWNER_HEADER, PROTOCOL_HEADER,
    PROTOCOL_VERSION, TEAM_HEADER,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::{TcpStream, UnixStream};

/// A connection to the daemon: its socket, or its TCP listener.
pub trait Connection: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Connection for T {}

/// A daemon reached over TCP: `--remote http://127.0.0.1:PORT` with `ASIDE_TOKEN`.
#[derive(Debug, Clone)]
pub struct Remote {
    /// `host:port`.
    pub authority: String,
    /// The bearer token.
    pub token: Option<String>,
}

impl Remote {
    /// Parses `http://HOST:PORT[/]`. Errors: another scheme (use an SSH tunnel for other
    /// machines: the listener speaks plain HTTP on loopback only), a path, no port.
    pub fn parse(url: &str, token: Option<String>) -> Result<Remote> {
        let bad = |why: &str| {
            ClientError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "invalid --remote {url:?}: {why}; expected http://127.0.0.1:PORT (through an SSH tunnel for another machine)"
                ),
            )
        };
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("only http:// is spoken"))?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains('/') {
            return Err(bad("it must not have a path"));
        }
        if authority
            .rsplit_once(':')
            .is_none_or(|(_, p)| p.parse::<u16>().is_err())
        {
            return Err(bad("it needs a port"));
        }
        Ok(Remote {
            authority: authority.to_string(),
            token: token.filter(|t| !t.is_empty()),
        })
    }
}

static REMOTE: std::sync::OnceLock<Remote> = std::sync::OnceLock::new();

/// Sends every client of this process to `remote` instead of the local socket.
pub fn set_remote(remote: Remote) {
    // Set once, from the command line, before any client exists.
    if REMOTE.set(remote).is_err() {
        tracing::debug!("--remote given twice; the first stands");
    }
}

/// The remote daemon this process talks to, if `--remote` was given.
pub fn remote() -> Option<&'static Remote> {
    REMOTE.get()
}

/// `daemon.log` is rotated to `daemon.log.1` past this size when a daemon starts: 10 MiB.
const DAEMON_LOG_MAX: u64 = 10 * 1024 * 1024;
/// `audit.log` is rotated to `audit.log.1` past this size when a daemon starts: 64 MiB.
const AUDIT_LOG_MAX: u64 = 64 * 1024 * 1024;

/// How long a CLI waits for a daemon it started to report ready.
const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(10);

/// A failed API call: what went wrong and the exit code it maps to (agent-procs' convention:
/// 2 for "no such process", 1 for everything else).
#[derive(Debug)]
pub struct ClientError {
    /// Error kind, from the daemon or local.
    pub code: ErrorCode,
    /// One line saying what is wrong and what to do.
    pub message: String,
}

impl ClientError {
    /// A local error of kind `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ClientError {
        ClientError {
            code,
            message: message.into(),
        }
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self.code {
            ErrorCode::NotFound => 2,
            _ => 1,
        }
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ClientError {}

/// Result of client calls.
pub type Result<T> = std::result::Result<T, ClientError>;

fn internal(e: impl std::fmt::Display) -> ClientError {
    ClientError::new(ErrorCode::Internal, e.to_string())
}

/// A connection factory for one daemon (one state directory).
#[derive(Debug, Clone)]
pub struct Client {
    state: StateDir,
    owner: String,
    team: Option<String>,
    autostart: bool,
}

impl Client {
    /// A client for the daemon of `state`, asking as `owner`. With `autostart`, a request that
    /// finds no daemon starts one first.
    pub fn new(state: StateDir, owner: String, autostart: bool) -> Client {
        Client {
            state,
            owner,
            team: std::env::var("ASIDE_TEAM").ok().filter(|t| !t.is_empty()),
            autostart,
        }
    }

    /// The same client, but one that never starts a daemon: for watchers that retry on their
    /// own, which must not undo an `aside daemon stop`.
    pub fn never_starting(&self) -> Client {
        Client {
            autostart: false,
            ..self.clone()
        }
    }

    /// Asks as a member of `team` (default: `$ASIDE_TEAM`).
    pub fn with_team(mut self, team: Option<String>) -> Client {
        if team.is_some() {
            self.team = team;
        }
        self
    }

    /// Connects to the socket; starts the daemon when none answers (and `autostart`). With
    /// `--remote`, connects to that listener instead and never starts anything.
    /// Errors: no daemon and autostart off (`NotFound`-free `Internal`), or it failed to start.
    pub async fn connect(&self) -> Result<Box<dyn Connection>> {
        if let Some(r) = remote() {
            return match TcpStream::connect(&r.authority).await {
                Ok(s) => Ok(Box::new(s)),
                Err(e) => Err(ClientError::new(
                    ErrorCode::Internal,
                    format!(
                        "no aside daemon answers at http://{} ({e}): is the tunnel up, and does the daemon run with --listen?",
                        r.authority
                    ),
                )),
            };
        }
        let socket = self.state.socket();
        match UnixStream::connect(&socket).await {
            Ok(s) => return Ok(Box::new(s)),
            Err(e) if !self.autostart => {
                return Err(ClientError::new(
                    ErrorCode::Internal,
                    format!(
                        "no aside daemon answers at {} ({e}): start one with `aside daemon start`",
                        socket.display()
                    ),
                ));
            }
            Err(_) => {}
        }
        let deadline = Instant::now() + DAEMON_START_TIMEOUT;
        loop {
            let started = start_daemon(&self.state, &[])?;
            match UnixStream::connect(&socket).await {
                Ok(s) => return Ok(Box::new(s)),
                Err(e) if Instant::now() >= deadline => {
                    return Err(ClientError::new(
                        ErrorCode::Internal,
                        format!(
                            "the aside daemon did not come up at {}: {e}; see {}",
                            socket.display(),
                            self.state.daemon_log().display()
                        ),
                    ));
                }
                // Another daemon holds the lock: it is either still binding (two CLIs raced)
                // or dying (its threads still hold the lock for a moment after a crash).
                // Either way, try again shortly.
                Err(_) if started == Started::OtherHolds => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                Err(_) => {}
            }
        }
    }

    /// Sends one request and returns the response once its headers arrived, after checking
    /// the protocol version and turning error bodies into [`ClientError`]s.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response<Incoming>> {
        // A daemon that is dying can still accept a connection and then drop it. A GET is
        // safe to send again (to the next daemon); anything else might have been applied.
        let retry = method == Method::GET;
        self.send_with(method, path, body, retry).await
    }

    /// `POST` of a request that carries an idempotency key: safe to send again when the
    /// connection is cut (the daemon answers a repeat with what the first one did).
    pub async fn post_idempotent<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T> {
        let body = serde_json::to_vec(body).map_err(internal)?;
        let bytes = body_bytes(self.send_with(Method::POST, path, Some(body), true).await?).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| internal(format!("unexpected answer from the daemon: {e}")))
    }

    async fn send_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        retry: bool,
    ) -> Result<Response<Incoming>> {
        let attempts = if retry { 2 } else { 1 };
        let body = Bytes::from(body.unwrap_or_default());
        let mut last_err = None;
        let mut resp = None;
        for _ in 0..attempts {
            match self.send_once(method.clone(), path, body.clone()).await {
                Ok(r) => {
                    resp = Some(r);
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        let Some(resp) = resp else {
            return Err(last_err.unwrap_or_else(|| internal("no attempt was made")));
        };
        let theirs = resp
            .headers()
            .get(PROTOCOL_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok());
        if theirs != Some(PROTOCOL_VERSION) {
            let theirs = theirs.map_or("no".to_string(), |v| v.to_string());
            return Err(ClientError::new(
                ErrorCode::ProtocolMismatch,
                format!(
                    "the daemon at {} speaks protocol version {theirs}, this aside speaks {PROTOCOL_VERSION}: stop it with `aside daemon stop` (running processes keep running) and retry",
                    self.state.socket().display()
                ),
            ));
        }
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let bytes = body_bytes(resp).await?;
        Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(b) => ClientError::new(b.error.code, b.error.message),
            Err(_) => ClientError::new(
                if status == StatusCode::NOT_FOUND {
                    ErrorCode::NotFound
                } else {
                    ErrorCode::Internal
                },
                format!(
                    "daemon answered {status}: {}",
                    String::from_utf8_lossy(&bytes)
                ),
            ),
        })
    }

    async fn send_once(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Response<Incoming>> {
        let stream = self.connect().await?;
        let closed = |e: hyper::Error| {
            ClientError::new(
                ErrorCode::Internal,
                format!("the aside daemon closed the connection: {e}"),
            )
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(closed)?;
        tokio::spawn(async move {
            // The request's own future reports a broken connection to its caller.
            if let Err(e) = conn.await {
                tracing::debug!("connection to the daemon: {e}");
            }
        });
        let host = remote().map_or("aside", |r| r.authority.as_str());
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{host}{path}"))
            .header("host", host)
            .header(PROTOCOL_HEADER, PROTOCOL_VERSION.to_string())
            .header(OWNER_HEADER, &self.owner)
            .header("content-type", "application/json");
        if let Some(team) = &self.team {
            req = req.header(TEAM_HEADER, team);
        }
        if let Some(token) = remote().and_then(|r| r.token.as_ref()) {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let req = req.body(Full::new(body)).map_err(internal)?;
        sender.send_request(req).await.map_err(closed)
    }

    /// A JSON request with a JSON answer.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T> {
        let body = body
            .map(|b| serde_json::to_vec(b))
            .transpose()
            .map_err(internal)?;
        let bytes = body_bytes(self.send(method, path, body).await?).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| internal(format!("unexpected answer from the daemon: {e}")))
    }

    /// `GET`, returning the answer's bytes as the daemon sent them (for `--json` output that
    /// needs no parsing).
    pub async fn get_raw(&self, path: &str) -> Result<Bytes> {
        body_bytes(self.send(Method::GET, path, None).await?).await
    }

    /// `GET` with a JSON answer.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::GET, path, None::<&()>).await
    }

    /// `POST` of `body` with a JSON answer.
    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T> {
        self.call(Method::POST, path, Some(body)).await
    }
}

/// Reads an NDJSON answer (log follows, `up` progress) a network read at a time.
pub struct NdjsonReader {
    body: Incoming,
    buf: Vec<u8>,
    /// The daemon's last line said the stream failed: returned after the records before it.
    failed: Option<ClientError>,
}

impl NdjsonReader {
    /// A reader of `resp`'s body.
    pub fn new(resp: Response<Incoming>) -> NdjsonReader {
        NdjsonReader {
            body: resp.into_body(),
            buf: Vec::new(),
            failed: None,
        }
    }

    /// The records that arrived with the next read (lines that are not a `T` are skipped);
    /// `None` once the daemon ended the answer. Errors: the stream broke, or its last line is
    /// an error body (`{"error": …}`: the daemon could not go on).
    pub async fn next_batch<T: DeserializeOwned>(&mut self) -> Result<Option<Vec<T>>> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        loop {
            let Some(frame) = self.body.frame().await else {
                return Ok(None);
            };
            let frame = frame.map_err(|e| {
                ClientError::new(ErrorCode::Internal, format!("stream broken: {e}"))
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            self.buf.extend_from_slice(&data);
            let mut batch = Vec::new();
            while let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=nl).collect();
                if let Ok(record) = serde_json::from_slice::<T>(&line) {
                    batch.push(record);
                } else if let Ok(e) = serde_json::from_slice::<ErrorBody>(&line) {
                    self.failed = Some(ClientError::new(e.error.code, e.error.message));
                    break;
                }
            }
            if batch.is_empty()
                && let Some(e) = self.failed.take()
            {
                return Err(e);
            }
            return Ok(Some(batch));
        }
    }
}

/// Reads a Server-Sent Events answer, calling `each(event, data)` per event (the `data:` lines
/// joined) until it returns false or the stream ends. Errors: the stream broke.
pub async fn read_sse(
    resp: Response<Incoming>,
    mut each: impl FnMut(&str, &str) -> bool,
) -> Result<()> {
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ClientError::new(ErrorCode::Internal, format!("event stream broken: {e}"))
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        // An event ends with a blank line.
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = buf.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&block);
            let mut event = "message";
            let mut data = String::new();
            for line in text.lines() {
                if let Some(e) = line.strip_prefix("event:") {
                    event = e.trim();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.strip_prefix(' ').unwrap_or(d));
                }
            }
            if !data.is_empty() && !each(event, &data) {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// A change in a followed event stream's connection (see [`follow_events`]).
#[derive(Debug)]
pub enum Connectivity {
    /// Connected (again): events flow.
    Connected,
    /// The daemon said it is stopping, and why. The follower waits for another daemon without
    /// starting one (a stop was asked for; a watcher must not undo it).
    Stopped(DaemonStopping),
    /// The stream broke or no daemon answered (it died, say `kill -9`); the follower connects
    /// again, starting a daemon as any command would.
    Lost(String),
}

/// How long a follower waits between attempts to reach a daemon again.
const RECONNECT_EVERY: Duration = Duration::from_millis(500);

/// Follows `GET /v1/events` from event `q.since` (absent: only new events) across daemon stops
/// and restarts, resuming after the last event seen so none is missed or repeated. Each
/// event's kind and JSON go to `each` (false ends the follow); `connectivity` hears each change
/// of the connection. Errors: only the first connection's (e.g. a refused `owner`); later
/// failures are reported to `connectivity` and retried.
pub async fn follow_events(
    client: &Client,
    mut q: aside_proto::EventsQuery,
    mut each: impl FnMut(&str, &str) -> bool,
    mut connectivity: impl FnMut(Connectivity),
) -> Result<()> {
    #[derive(serde::Deserialize)]
    struct Seq {
        seq: u64,
    }
    let waiting = client.never_starting();
    let mut last = q.since;
    // Stopped: waiting for another daemon; down: the loss was already reported.
    let mut stopped = false;
    let mut down = false;
    let mut first = true;
    loop {
        q.since = last;
        let via = if stopped { &waiting } else { client };
        let resp = match via.events(&q).await {
            Ok(r) => r,
            Err(e) if first => return Err(e),
            Err(e) => {
                if !down {
                    connectivity(Connectivity::Lost(e.message));
                    down = true;
                }
                tokio::time::sleep(RECONNECT_EVERY).await;
                continue;
            }
        };
        if !first {
            connectivity(Connectivity::Connected);
        }
        first = false;
        stopped = false;
        let mut ended = false;
        let mut why = None;
        let read = read_sse(resp, |event, data| {
            if event == DaemonStopping::EVENT {
                why = serde_json::from_str::<DaemonStopping>(data).ok();
                return true;
            }
            if let Ok(s) = serde_json::from_str::<Seq>(data) {
                last = Some(s.seq);
            }
            ended = !each(event, data);
            !ended
        })
        .await;
        if ended {
            return Ok(());
        }
        down = true;
        match (why, read) {
            (Some(why), _) => {
                stopped = true;
                connectivity(Connectivity::Stopped(why));
            }
            (None, Err(e)) => connectivity(Connectivity::Lost(e.message)),
            (None, Ok(())) => connectivity(Connectivity::Lost("the event stream ended".into())),
        }
        tokio::time::sleep(RECONNECT_EVERY).await;
    }
}

/// The whole body of an answer. Errors: the connection broke.
pub async fn body_bytes(resp: Response<Incoming>) -> Result<Bytes> {
    Ok(resp
        .into_body()
        .collect()
        .await
        .map_err(internal)?
        .to_bytes())
}

/// What [`start_daemon`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// The new daemon listens.
    Listening,
    /// Another daemon holds the state directory's lock.
    OtherHolds,
}

/// Starts `aside daemon run` for `state`, detached, and waits until it reports that it is
/// listening (or that another daemon holds the lock). Errors carry the daemon's own message.
pub fn start_daemon(state: &StateDir, extra_args: &[String]) -> Result<Started> {
    state.ensure().map_err(internal)?;
    let exe = std::env::current_exe().map_err(internal)?;
    StateDir::rotate_if_larger(&state.daemon_log(), DAEMON_LOG_MAX);
    StateDir::rotate_if_larger(&state.audit_log(), AUDIT_LOG_MAX);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(state.daemon_log())
        .map_err(|e| internal(format!("cannot open {}: {e}", state.daemon_log().display())))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("daemon")
        .arg("run")
        .args(extra_args)
        .env("ASIDE_HOME", state.root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    // Its own session from birth: a Ctrl-C or kill of the caller's process group, or the
    // caller's terminal closing, never reaches it.
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| internal(format!("cannot start the aside daemon: {e}")))?;
    let Some(out) = child.stdout.take() else {
        return Err(internal("the aside daemon has no stdout"));
    };
    // Reaped by a thread so the CLI leaves no zombie if it lives on (e.g. `logs -f`).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // An unreadable report reads as an empty one, which the caller reports with the log.
        let mut line = String::new();
        if let Err(e) = BufReader::new(out).read_line(&mut line) {
            tracing::debug!("the daemon's report: {e}");
        }
        // The caller gave up after its timeout: nobody to tell.
        if tx.send(line).is_err() {
            tracing::debug!("the daemon reported after the caller stopped waiting");
        }
        if let Err(e) = child.wait() {
            tracing::debug!("reaping the daemon's starter: {e}");
        }
    });
    let line = rx
        .recv_timeout(DAEMON_START_TIMEOUT)
        .map_err(|_| internal("the aside daemon did not report ready in 10s"))?;
    let line = line.trim();
    if line == "ready" {
        Ok(Started::Listening)
    } else if line == "running" {
        Ok(Started::OtherHolds)
    } else if let Some(msg) = line.strip_prefix("error: ") {
        Err(internal(msg))
    } else {
        Err(internal(format!(
            "the aside daemon failed to start; see {}",
            state.daemon_log().display()
        )))
    }
}

/// Percent-encodes a path segment or query value.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The owner a request names: `o` when given and not empty, else the local human.
pub fn owner_or_human(o: Option<String>) -> String {
    o.filter(|s| !s.is_empty())
        .unwrap_or_else(|| HUMAN_OWNER.to_string())
}

/// The owner from `ASIDE_OWNER`, else the local human.
pub fn env_owner() -> String {
    owner_or_human(std::env::var("ASIDE_OWNER").ok())
}
