//! The daemon's API as typed calls: one [`Client`] method per endpoint, so a front end names
//! what it asks (`client.stop(reference, &req)`) and gets the answer's type, and no path or
//! query string is built by hand outside this file. README's API table lists the same
//! endpoints; the daemon's router (`daemon.rs`) serves them.
//!
//! Streams (`follow` logs, up, events, stats) answer with the open response for the caller to
//! read (see [`crate::client::read_sse`], [`crate::render::read_ndjson`]). Errors: those of
//! [`Client::send`] — no daemon, a refusal with its code and message, a broken connection.

use aside_proto::{
    AckRequest, AckResponse, DaemonStatus, DaemonStopAnswer, EventsQuery, HostSession, IdleMarked,
    InboxResponse, ListQuery, LogQuery, LogsResponse, ProcessInfo, Progress, ProgressRecorded,
    ProgressRequest, ProjectInfo, RunRequest, RunResult, StdinRequest, StopAllRequest,
    StopAllResponse, StopRequest, TakeRequest, TakeResponse, TokenCreated, TokenInfo, TokenRequest,
    UpRequest, WaitQuery, WaitResponse, WakeAction, WakeCleared, WebInfo, WebRequest, Whoami,
};
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Method, Response};

use crate::client::{Client, ClientError, Result, enc};

/// `?` and the query of `q`, or nothing when it has no fields set.
fn query(q: &impl serde::Serialize) -> Result<String> {
    let text = serde_urlencoded::to_string(q).map_err(|e| {
        ClientError::new(
            aside_proto::ErrorCode::Internal,
            format!("cannot encode a query: {e}"),
        )
    })?;
    Ok(if text.is_empty() {
        text
    } else {
        format!("?{text}")
    })
}

fn process(reference: &str) -> String {
    format!("/v1/processes/{}", enc(reference))
}

fn owner(owner: &str) -> String {
    format!("/v1/owners/{}", enc(owner))
}

/// The empty JSON object, for `POST`s that take no fields.
#[derive(serde::Serialize)]
struct Empty {}

impl Client {
    /// `POST /v1/processes` (sent again safely when cut: it carries an idempotency key).
    pub async fn run(&self, req: &RunRequest) -> Result<ProcessInfo> {
        self.post_idempotent("/v1/processes", req).await
    }

    /// `GET /v1/processes`.
    pub async fn processes(&self, q: &ListQuery) -> Result<Vec<ProcessInfo>> {
        self.get(&format!("/v1/processes{}", query(q)?)).await
    }

    /// `GET /v1/processes` as the daemon sent it (for `--json`).
    pub async fn processes_raw(&self, q: &ListQuery) -> Result<Bytes> {
        self.get_raw(&format!("/v1/processes{}", query(q)?)).await
    }

    /// `GET /v1/processes`, the open answer (its `aside-last-event` header says which event
    /// the listing is at least as new as).
    pub async fn processes_response(&self, q: &ListQuery) -> Result<Response<Incoming>> {
        let path = format!("/v1/processes{}", query(q)?);
        self.send(Method::GET, &path, None).await
    }

    /// `GET /v1/processes/{ref}`: a process by process id, run id, name or `project/name`.
    pub async fn process(&self, reference: &str) -> Result<ProcessInfo> {
        self.get(&process(reference)).await
    }

    /// `GET /v1/processes/{ref}` as the daemon sent it.
    pub async fn process_raw(&self, reference: &str) -> Result<Bytes> {
        self.get_raw(&process(reference)).await
    }

    /// `GET /v1/processes/{ref}/logs` (not following).
    pub async fn logs(&self, reference: &str, q: &LogQuery) -> Result<LogsResponse> {
        let q = LogQuery {
            follow: false,
            ..q.clone()
        };
        self.get(&format!("{}/logs{}", process(reference), query(&q)?))
            .await
    }

    /// `GET /v1/processes/{ref}/logs?follow=true`: NDJSON entries as they come.
    pub async fn follow_logs(&self, reference: &str, q: &LogQuery) -> Result<Response<Incoming>> {
        let q = LogQuery {
            follow: true,
            ..q.clone()
        };
        let path = format!("{}/logs{}", process(reference), query(&q)?);
        self.send(Method::GET, &path, None).await
    }

    /// `GET /v1/processes/{ref}/wait`.
    pub async fn wait(&self, reference: &str, q: &WaitQuery) -> Result<WaitResponse> {
        self.get(&format!("{}/wait{}", process(reference), query(q)?))
            .await
    }

    /// `GET /v1/processes/{ref}/result` (a `Conflict` while it runs).
    pub async fn result(&self, reference: &str) -> Result<RunResult> {
        self.get(&format!("{}/result", process(reference))).await
    }

    /// `POST /v1/processes/{ref}/stop`.
    pub async fn stop(&self, reference: &str, req: &StopRequest) -> Result<ProcessInfo> {
        self.post(&format!("{}/stop", process(reference)), req)
            .await
    }

    /// `POST /v1/processes/{ref}/restart`.
    pub async fn restart(&self, reference: &str) -> Result<ProcessInfo> {
        self.post(&format!("{}/restart", process(reference)), &Empty {})
            .await
    }

    /// `POST /v1/processes/{ref}/stdin`.
    pub async fn stdin(&self, reference: &str, req: &StdinRequest) -> Result<ProcessInfo> {
        self.post(&format!("{}/stdin", process(reference)), req)
            .await
    }

    /// `POST /v1/stop-all`.
    pub async fn stop_all(&self, req: &StopAllRequest) -> Result<StopAllResponse> {
        self.post("/v1/stop-all", req).await
    }

    /// `GET /v1/runs/{run_id}/progress`: the run's reports, newest first.
    pub async fn progress(&self, run_id: &str) -> Result<Vec<Progress>> {
        self.get(&format!("/v1/runs/{}/progress", enc(run_id)))
            .await
    }

    /// `POST /v1/runs/{run_id}/progress`: a report from inside the run.
    pub async fn report_progress(
        &self,
        run_id: &str,
        req: &ProgressRequest,
    ) -> Result<ProgressRecorded> {
        self.post(&format!("/v1/runs/{}/progress", enc(run_id)), req)
            .await
    }

    /// `GET /v1/owners/{owner}/inbox`.
    pub async fn inbox(&self, of: &str) -> Result<InboxResponse> {
        self.get(&format!("{}/inbox", owner(of))).await
    }

    /// `POST /v1/owners/{owner}/inbox/take`: results to show now, acknowledged as they go.
    pub async fn take(&self, of: &str, req: &TakeRequest) -> Result<TakeResponse> {
        self.post(&format!("{}/inbox/take", owner(of)), req).await
    }

    /// `POST /v1/owners/{owner}/inbox/ack`.
    pub async fn ack(&self, of: &str, req: &AckRequest) -> Result<AckResponse> {
        self.post(&format!("{}/inbox/ack", owner(of)), req).await
    }

    /// `POST /v1/owners/{owner}/idle`.
    pub async fn mark_idle(&self, of: &str) -> Result<IdleMarked> {
        self.post(&format!("{}/idle", owner(of)), &Empty {}).await
    }

    /// `PUT /v1/owners/{owner}/wake`.
    pub async fn set_wake(&self, of: &str, action: &WakeAction) -> Result<WakeAction> {
        self.call(Method::PUT, &format!("{}/wake", owner(of)), Some(action))
            .await
    }

    /// `GET /v1/owners/{owner}/wake` (`NotFound` when it has none).
    pub async fn wake(&self, of: &str) -> Result<WakeAction> {
        self.get(&format!("{}/wake", owner(of))).await
    }

    /// `DELETE /v1/owners/{owner}/wake`.
    pub async fn clear_wake(&self, of: &str) -> Result<WakeCleared> {
        self.call(Method::DELETE, &format!("{}/wake", owner(of)), None::<&()>)
            .await
    }

    /// `PUT /v1/owners/{owner}/session`: the host session an owner stands for.
    pub async fn set_session(&self, of: &str, session: &HostSession) -> Result<HostSession> {
        self.call(
            Method::PUT,
            &format!("{}/session", owner(of)),
            Some(session),
        )
        .await
    }

    /// `GET /v1/sessions?pid&start` (socket only): the session recorded for a host process.
    pub async fn session_of_process(&self, pid: u32, start: u64) -> Result<HostSession> {
        self.get(&format!("/v1/sessions?pid={pid}&start={start}"))
            .await
    }

    /// `GET /v1/whoami`.
    pub async fn whoami(&self) -> Result<Whoami> {
        self.get("/v1/whoami").await
    }

    /// `GET /v1/daemon`.
    pub async fn daemon_status(&self) -> Result<DaemonStatus> {
        self.get("/v1/daemon").await
    }

    /// `POST /v1/daemon/stop`.
    pub async fn stop_daemon(&self) -> Result<DaemonStopAnswer> {
        self.post("/v1/daemon/stop", &Empty {}).await
    }

    /// `GET /v1/projects`.
    pub async fn projects(&self) -> Result<Vec<ProjectInfo>> {
        self.get("/v1/projects").await
    }

    /// `POST /v1/projects/clean`: forgets idle projects.
    pub async fn clean_projects(&self) -> Result<Vec<String>> {
        self.post("/v1/projects/clean", &Empty {}).await
    }

    /// `POST /v1/projects/{project}/up`: `UpMessage`s as NDJSON.
    pub async fn up(&self, project: &str, req: &UpRequest) -> Result<Response<Incoming>> {
        let body = serde_json::to_vec(req).map_err(|e| {
            ClientError::new(
                aside_proto::ErrorCode::Internal,
                format!("cannot encode the project: {e}"),
            )
        })?;
        let path = format!("/v1/projects/{}/up", enc(project));
        self.send(Method::POST, &path, Some(body)).await
    }

    /// `POST /v1/projects/{project}/down`.
    pub async fn down(&self, project: &str) -> Result<StopAllResponse> {
        self.post(&format!("/v1/projects/{}/down", enc(project)), &Empty {})
            .await
    }

    /// `GET /v1/events`: Server-Sent Events (see [`crate::client::follow_events`], which
    /// follows them across daemons).
    pub async fn events(&self, q: &EventsQuery) -> Result<Response<Incoming>> {
        let path = format!("/v1/events{}", query(q)?);
        self.send(Method::GET, &path, None).await
    }

    /// `GET /v1/stats?every_ms`: `stats` Server-Sent Events.
    pub async fn stats_stream(&self, every_ms: u64) -> Result<Response<Incoming>> {
        let path = format!("/v1/stats?every_ms={every_ms}");
        self.send(Method::GET, &path, None).await
    }

    /// `POST /v1/web` (socket only): the dashboard's address, its listener started if needed.
    pub async fn web(&self, req: &WebRequest) -> Result<WebInfo> {
        self.post("/v1/web", req).await
    }

    /// `POST /v1/tokens`: a member token (its secret shown once).
    pub async fn create_token(&self, req: &TokenRequest) -> Result<TokenCreated> {
        self.post("/v1/tokens", req).await
    }

    /// `GET /v1/tokens`.
    pub async fn tokens(&self) -> Result<Vec<TokenInfo>> {
        self.get("/v1/tokens").await
    }

    /// `DELETE /v1/tokens/{id}`.
    pub async fn revoke_token(&self, id: &str) -> Result<TokenInfo> {
        self.call(
            Method::DELETE,
            &format!("/v1/tokens/{}", enc(id)),
            None::<&()>,
        )
        .await
    }
}
