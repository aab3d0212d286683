//! The TCP listener: the dashboard and the same `/v1` API on 127.0.0.1, behind a token.
//!
//! Started by `aside daemon run --listen 127.0.0.1:PORT` or on the first `aside web`. Every
//! request passes [`guard`]:
//! - its `Host` must be a loopback name (a DNS-rebinding page has its own host name);
//! - a request that changes something (anything but GET/HEAD) with an `Origin` must come from
//!   this very origin, and one authenticated by the cookie must carry an `Origin` (CSRF);
//! - it must carry a token: `Authorization: Bearer …`, or the cookie that a `?token=…` in a
//!   page URL is exchanged for (HttpOnly, SameSite=Strict, then redirected away so the token
//!   leaves the address bar). The dashboard token (`web-token` in the state directory, 0600)
//!   stands for the local human; member tokens (`aside token create`) for their owner;
//! - a member sees their own processes and their team's live ones, reads only their own inbox,
//!   and with a read-only token changes nothing. Token management and `aside web` itself are
//!   for the local socket only.
//!
//! The guard then rewrites the identity headers (`aside-owner`, `aside-team`, `aside-via`), so
//! the handlers and the audit log see who the token stands for, whatever the client claimed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aside_proto::{
    ErrorCode, HUMAN_OWNER, OWNER_HEADER, PROTOCOL_HEADER, PROTOCOL_VERSION, TEAM_HEADER,
    VIA_HEADER,
};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::{App, api_error};

/// The dashboard's port when none is configured; a free one is taken if it is busy.
pub const DEFAULT_PORT: u16 = 7979;

/// Who a request comes from, put in its extensions by the listener that took it (the one
/// table of what each may do is `aside_core::authz`).
pub use aside_core::authz::Access;

/// The dashboard token, made (random, 0600) on first use.
pub fn web_token(app: &App) -> std::io::Result<String> {
    let path = app.state.web_token();
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim();
        if t.len() >= 32 {
            return Ok(t.to_string());
        }
    }
    let token = aside_core::supervisor::random_hex(32)?;
    write_private(&path, token.as_bytes())?;
    Ok(token)
}

/// The port the last dashboard listened on (`web-port` in the state directory), tried first by
/// the next `aside web` so an open page finds its daemon again after a restart.
pub fn last_port(app: &App) -> Option<u16> {
    let text = std::fs::read_to_string(app.state.web_port()).ok()?;
    text.trim().parse().ok()
}

/// Remembers `port` for [`last_port`]. Errors: the state directory cannot be written.
pub fn remember_port(app: &App, port: u16) -> std::io::Result<()> {
    write_private(&app.state.web_port(), port.to_string().as_bytes())
}

/// Writes `path` atomically (temp file, then rename), 0600 whatever the umask.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    std::fs::rename(&tmp, path)
}

#[derive(Clone)]
struct Gate {
    app: App,
    port: u16,
    web_token: Arc<String>,
}

impl Gate {
    fn cookie_name(&self) -> String {
        // Cookies are per host, not per port: two daemons on one machine must not collide.
        format!("aside_{}", self.port)
    }

    /// What a presented secret stands for; `None` for an unknown or revoked token.
    fn resolve(&self, secret: &str) -> Option<Access> {
        if same(secret.as_bytes(), self.web_token.as_bytes()) {
            return Some(Access::Web);
        }
        match self.app.sup.authenticate(secret) {
            Ok(m) => m.map(Access::Member),
            Err(e) => {
                tracing::error!("cannot check a token: {e}");
                None
            }
        }
    }
}

/// Compares two secrets in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Binds `addr` (which must be loopback) and serves the dashboard and API on it until the
/// daemon stops. Returns the bound port. Errors: not loopback, or the bind failed.
pub async fn listen(app: &App, addr: SocketAddr) -> Result<u16, String> {
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{addr} is not a loopback address: aside listens on 127.0.0.1 only; reach it from other machines through an SSH tunnel"
        ));
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let port = listener
        .local_addr()
        .map_err(|e| format!("cannot read the address of {addr}: {e}"))?
        .port();
    // Agents' probes and webhooks may not call the daemon's own API.
    app.sup.add_api_port(port);
    let web_token = web_token(app).map_err(|e| {
        format!(
            "cannot write the dashboard token {}: {e}",
            app.state.web_token().display()
        )
    })?;
    let gate = Gate {
        app: app.clone(),
        port,
        web_token: Arc::new(web_token),
    };
    let router = Router::new()
        .route("/", get(index))
        .route("/app.js", get(script))
        .route("/app.css", get(style))
        .merge(super::api_routes(app.clone()))
        .layer(middleware::from_fn_with_state(gate, guard));
    tokio::spawn(serve_capped(listener, router, app.stopping.subscribe()));
    tracing::info!("dashboard and API on http://127.0.0.1:{port}/");
    Ok(port)
}

/// Connections the TCP listener holds at once; more are closed as they arrive, so another
/// local user opening thousands of them starves nobody (the Unix socket is served apart).
pub const MAX_CONNECTIONS: usize = 256;
/// A connection must send a request's headers within this long, idle keep-alive included.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` connection by connection (hyper), with [`MAX_CONNECTIONS`]
/// and [`HEADER_TIMEOUT`], until the daemon stops.
async fn serve_capped(
    listener: tokio::net::TcpListener,
    router: Router,
    mut stopping: tokio::sync::watch::Receiver<Option<aside_proto::DaemonStopping>>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopping.wait_for(Option::is_some) => return,
        };
        let (stream, _) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors, say: wait a moment rather than spin.
                tracing::warn!("TCP accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!("TCP listener full ({MAX_CONNECTIONS} connections): one refused");
            drop(stream);
            continue;
        };
        let router = router.clone();
        let mut stop = stopping.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let router = router.clone();
                    async move {
                        use tower::ServiceExt;
                        router.oneshot(req.map(axum::body::Body::new)).await
                    }
                });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            let stopped = async move { super::until_stopping(&mut stop).await };
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r {
                    tracing::debug!("TCP connection: {e}");
                },
                () = stopped => {
                    // Finish what is in flight (an event stream's last word: why), not more.
                    conn.as_mut().graceful_shutdown();
                    match tokio::time::timeout(Duration::from_secs(2), conn.as_mut()).await {
                        Ok(Err(e)) => tracing::debug!("TCP connection: {e}"),
                        Err(_) => tracing::debug!("TCP connection cut short by the stop"),
                        Ok(Ok(())) => {}
                    }
                }
            }
        });
    }
}

/// Whether `host` (a `Host` header: name and optional port) names this machine's loopback.
fn loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(n, _)| n)
    };
    matches!(name, "127.0.0.1" | "localhost" | "::1")
}

fn refuse(status: StatusCode, message: String) -> Response {
    let mut resp = api_error(ErrorCode::Forbidden, message);
    *resp.status_mut() = status;
    resp
}

/// The page shown to a browser that has no valid token.
fn token_page(status: StatusCode, why: &str) -> Response {
    let body = format!(
        "<!doctype html><meta charset=utf-8><title>aside: token needed</title>\
         <style>body{{font:16px system-ui;margin:4em auto;max-width:40em;color:#222}}code{{background:#eee;padding:2px 4px}}</style>\
         <h1>aside needs a token</h1><p>{why}</p>\
         <p>On the machine the daemon runs on, run <code>aside web</code> and open the address it prints \
         (it carries the token once; this browser then keeps it in a cookie).</p>"
    );
    (status, Html(body)).into_response()
}

fn query_token(req: &Request) -> Option<String> {
    let q = req.uri().query()?;
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

async fn guard(State(gate): State<Gate>, req: Request, next: Next) -> Response {
    let mut resp = checked(&gate, req, next).await;
    let h = resp.headers_mut();
    // Refusals too: a client checks the protocol before it reads the error.
    h.insert(PROTOCOL_HEADER, HeaderValue::from(PROTOCOL_VERSION));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

async fn checked(gate: &Gate, mut req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !loopback_host(&host) {
        return refuse(
            StatusCode::FORBIDDEN,
            format!(
                "refused: Host {host:?} is not this machine's loopback (DNS rebinding?); open the dashboard at http://127.0.0.1:{}/",
                gate.port
            ),
        );
    }
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD);
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if changes
        && let Some(o) = &origin
        && *o != format!("http://{host}")
    {
        return refuse(
            StatusCode::FORBIDDEN,
            format!(
                "refused: a {} from origin {o:?}, not this dashboard's (cross-site request?)",
                req.method()
            ),
        );
    }
    if *req.method() == Method::GET
        && let Some(t) = query_token(&req)
    {
        // The hand-over: the token becomes a cookie and leaves the address bar.
        if gate.resolve(&t).is_none() {
            return token_page(
                StatusCode::UNAUTHORIZED,
                "The token in this address is not valid (revoked, or from another state directory).",
            );
        }
        let cookie = format!(
            "{}={t}; HttpOnly; SameSite=Strict; Path=/",
            gate.cookie_name()
        );
        let location = req.uri().path().to_string();
        let mut resp = (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response();
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
        return resp;
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|v| v.trim().to_string());
    let by_cookie = bearer.is_none();
    let secret = bearer.or_else(|| cookie(req.headers(), &gate.cookie_name()));
    let path = req.uri().path().to_string();
    let Some(access) = secret.as_deref().and_then(|s| gate.resolve(s)) else {
        let why = if secret.is_some() {
            "refused: the token is not valid (revoked, or from another state directory)"
        } else {
            "refused: no token; send `Authorization: Bearer TOKEN` (a member token from `aside token create`), or open the address `aside web` prints"
        };
        return if path.starts_with("/v1/") {
            refuse(StatusCode::UNAUTHORIZED, why.into())
        } else {
            token_page(StatusCode::UNAUTHORIZED, why)
        };
    };
    if by_cookie && changes && origin.is_none() {
        return refuse(
            StatusCode::FORBIDDEN,
            "refused: a change authenticated by the dashboard cookie must carry an Origin header"
                .into(),
        );
    }
    let headers = req.headers_mut();
    headers.remove(OWNER_HEADER);
    headers.remove(TEAM_HEADER);
    let (owner, team) = match &access {
        Access::Member(m) => (m.owner.as_str(), m.team.as_deref()),
        _ => (HUMAN_OWNER, None),
    };
    if let Ok(v) = HeaderValue::from_str(owner) {
        headers.insert(OWNER_HEADER, v);
    }
    if let Some(v) = team.and_then(|t| HeaderValue::from_str(t).ok()) {
        headers.insert(TEAM_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&access.via()) {
        headers.insert(VIA_HEADER, v);
    }
    req.extensions_mut().insert(access);
    next.run(req).await
}

const INDEX_HTML: &str = include_str!("../../assets/index.html");
const APP_JS: &str = include_str!("../../assets/app.js");
const APP_CSS: &str = include_str!("../../assets/app.css");

/// The page's headers: nothing from elsewhere, no inline script.
fn page_headers(content_type: &'static str) -> [(header::HeaderName, &'static str); 2] {
    [
        (header::CONTENT_TYPE, content_type),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    ]
}

async fn index() -> Response {
    (page_headers("text/html; charset=utf-8"), INDEX_HTML).into_response()
}

async fn script() -> Response {
    (page_headers("text/javascript; charset=utf-8"), APP_JS).into_response()
}

async fn style() -> Response {
    (page_headers("text/css; charset=utf-8"), APP_CSS).into_response()
}

/// `GET /v1/whoami`: who the daemon takes the requester for.
pub async fn whoami(
    axum::Extension(access): axum::Extension<Access>,
    headers: HeaderMap,
) -> Response {
    let who = super::requester(&headers);
    Json(aside_proto::Whoami {
        owner: who.owner,
        team: who.team,
        read_only: access.member().is_some_and(|m| m.read_only),
        via: access.via(),
        member: access.member().is_some(),
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "127.0.0.1",
            "127.0.0.1:7979",
            "localhost:80",
            "[::1]:7979",
            "localhost",
        ] {
            assert!(loopback_host(h), "{h}");
        }
        for h in [
            "evil.example:7979",
            "127.0.0.1.evil.example",
            "",
            "[::2]:1",
            "localhost.evil:1",
        ] {
            assert!(!loopback_host(h), "{h}");
        }
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }
}
