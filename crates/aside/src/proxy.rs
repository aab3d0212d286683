//! The name-based reverse proxy (agent-procs' `proxy`): one listener per project on 127.0.0.1,
//! routing `http://NAME.localhost:PORT` to the port of the project's live process NAME.
//!
//! Requests and responses stream through frame by frame (server-sent events, chunked
//! downloads); an `Upgrade` (WebSocket) is passed to the process and, once it answers 101, the
//! two connections are spliced. An unknown or stopped name gets a 502 in agent-procs' plain-text
//! words, listing the routes; the proxy's own address (`http://localhost:PORT`) lists them.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use aside_core::store::ListFilter;
use aside_core::supervisor::{PROXY_PORTS, Supervisor};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::header::{HOST, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

type ProxyBody = BoxBody<Bytes, hyper::Error>;

struct Running {
    port: u16,
    stop: watch::Sender<bool>,
}

/// The proxies of the daemon, one per project (`""` is the default project's, for
/// `aside run --proxy`).
#[derive(Clone)]
pub struct Proxies {
    sup: Supervisor,
    running: Arc<Mutex<HashMap<String, Running>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Proxies {
    /// No proxy running yet.
    pub fn new(sup: Supervisor) -> Proxies {
        Proxies {
            sup,
            running: Arc::default(),
        }
    }

    /// The port of `project`'s proxy, if it runs.
    pub fn port(&self, project: &str) -> Option<u16> {
        lock(&self.running).get(project).map(|r| r.port)
    }

    /// Starts `project`'s proxy on `pinned`, else keeps the one running, else takes the first
    /// free port of 9090–9190; records the port. Errors: the port is taken (what to do next
    /// included).
    pub async fn ensure(&self, project: &str, pinned: Option<u16>) -> Result<u16, String> {
        if let Some(port) = self.port(project) {
            if pinned.is_none_or(|p| p == port) {
                return Ok(port);
            }
            self.stop(project);
        }
        let taken: Vec<u16> = lock(&self.running).values().map(|r| r.port).collect();
        let listener = match pinned {
            Some(p) => TcpListener::bind((Ipv4Addr::LOCALHOST, p)).await.map_err(|e| {
                format!("the proxy cannot listen on 127.0.0.1:{p}: {e}; free it or change proxy_port")
            })?,
            None => {
                let mut found = None;
                for p in PROXY_PORTS {
                    if taken.contains(&p) {
                        continue;
                    }
                    if let Ok(l) = TcpListener::bind((Ipv4Addr::LOCALHOST, p)).await {
                        found = Some(l);
                        break;
                    }
                }
                found.ok_or_else(|| {
                    format!(
                        "no free proxy port in {}–{}: pin one with proxy_port",
                        PROXY_PORTS.start(),
                        PROXY_PORTS.end()
                    )
                })?
            }
        };
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let (stop, stop_rx) = watch::channel(false);
        lock(&self.running).insert(project.to_string(), Running { port, stop });
        if let Err(e) = self.sup.set_proxy_port(project, Some(port)) {
            tracing::error!("cannot record the proxy port of {project:?}: {e}");
        }
        tokio::spawn(serve(
            listener,
            self.sup.clone(),
            project.to_string(),
            port,
            stop_rx,
        ));
        tracing::info!("proxy of project {project:?} on 127.0.0.1:{port}");
        Ok(port)
    }

    /// Stops `project`'s proxy (open connections are closed) and forgets its port.
    pub fn stop(&self, project: &str) {
        if let Some(r) = lock(&self.running).remove(project) {
            r.stop.send_replace(true);
            tracing::info!(
                "proxy of project {project:?} on 127.0.0.1:{} stopped",
                r.port
            );
        }
        if let Err(e) = self.sup.set_proxy_port(project, None) {
            tracing::error!("cannot clear the proxy port of {project:?}: {e}");
        }
    }
}

async fn serve(
    listener: TcpListener,
    sup: Supervisor,
    project: String,
    port: u16,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("proxy {port}: accept failed: {e}");
                    continue;
                }
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        let sup = sup.clone();
        let project = project.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let sup = sup.clone();
                let project = project.clone();
                async move { Ok::<_, Infallible>(handle(req, &sup, &project, port).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::select! {
                _ = conn => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        });
    }
}

fn full(status: StatusCode, content_type: &str, text: String) -> Response<ProxyBody> {
    let mut resp = Response::new(
        Full::new(Bytes::from(text))
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

/// The proxy's routes as plain text, as agent-procs lists them: a header line, then
/// `  http://NAME.localhost:PORT -> 127.0.0.1:UPSTREAM [status]` per process with a port.
fn routes_text(sup: &Supervisor, project: &str, port: u16) -> String {
    let procs = sup
        .list(&ListFilter {
            all: true,
            project: (!project.is_empty()).then(|| project.to_string()),
            ..Default::default()
        })
        .unwrap_or_default();
    let mut text = if project.is_empty() {
        format!("aside proxy on port {port}\n\nRoutes:\n")
    } else {
        format!("aside proxy of project {project} on port {port}\n\nRoutes:\n")
    };
    let mut any = false;
    for p in procs.iter().filter(|p| p.port.is_some()) {
        if project.is_empty() && p.project.is_some() {
            continue;
        }
        any = true;
        text.push_str(&format!(
            "  http://{}.localhost:{port} -> 127.0.0.1:{} [{}]\n",
            p.name,
            p.port.unwrap_or_default(),
            p.status
        ));
    }
    if !any {
        text.push_str("  (no process of this project has a port)\n");
    }
    text
}

/// The 502 answer, plain text as agent-procs': `502 Bad Gateway: WHY. Visit
/// http://localhost:PORT to see available routes.`, then the routes.
fn bad_gateway(sup: &Supervisor, project: &str, port: u16, why: &str) -> Response<ProxyBody> {
    let body = format!(
        "502 Bad Gateway: {why}. Visit http://localhost:{port} to see available routes.\n\n{}",
        routes_text(sup, project, port)
    );
    full(StatusCode::BAD_GATEWAY, "text/plain; charset=utf-8", body)
}

/// `api.localhost:9090` → `api`; anything that is not `NAME.localhost` → `None`.
fn route_name(host: &str) -> Option<&str> {
    let host = match host.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let name = host.strip_suffix(".localhost")?;
    (!name.is_empty()).then_some(name)
}

async fn handle(
    mut req: Request<Incoming>,
    sup: &Supervisor,
    project: &str,
    port: u16,
) -> Response<ProxyBody> {
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let Some(name) = route_name(&host) else {
        // The proxy itself (`http://localhost:PORT`): its routes.
        return full(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            routes_text(sup, project, port),
        );
    };
    let Some(upstream) = sup.route(project, name) else {
        return bad_gateway(
            sup,
            project,
            port,
            &format!("no running process named '{name}' with a port"),
        );
    };
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, upstream));
    let stream = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => {
            return bad_gateway(
                sup,
                project,
                port,
                &format!("{name} does not accept connections on {addr} ({e})"),
            );
        }
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(x) => x,
        Err(e) => {
            return bad_gateway(sup, project, port, &format!("{name}: {e}"));
        }
    };
    let upstream = name.to_string();
    tokio::spawn(async move {
        // The request's own future reports a broken upstream to the client (a 502).
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!("proxy {upstream}: upstream connection: {e}");
        }
    });
    let wants_upgrade = req.headers().contains_key(hyper::header::UPGRADE);
    let client_upgrade = wants_upgrade.then(|| hyper::upgrade::on(&mut req));
    let mut resp = match sender.send_request(req).await {
        Ok(r) => r,
        Err(e) => {
            return bad_gateway(sup, project, port, &format!("{name}: {e}"));
        }
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let (Ok(client), Ok(upstream)) = (client_upgrade.await, upstream_upgrade.await) else {
                return;
            };
            let mut client = TokioIo::new(client);
            let mut upstream = TokioIo::new(upstream);
            // Either side hanging up ends the tunnel; nobody to tell but the log.
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                tracing::debug!("proxy: upgraded connection: {e}");
            }
        });
    }
    resp.map(|b| b.boxed())
}

#[cfg(test)]
mod tests {
    use super::route_name;

    #[test]
    fn names_come_from_the_host() {
        assert_eq!(route_name("api.localhost:9090"), Some("api"));
        assert_eq!(route_name("api.localhost"), Some("api"));
        assert_eq!(route_name("localhost:9090"), None);
        assert_eq!(route_name("example.com"), None);
        assert_eq!(route_name(".localhost"), None);
    }
}
