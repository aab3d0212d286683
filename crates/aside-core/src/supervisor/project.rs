//! Projects and supervision: readiness probes, restart policies, `up` in dependency order,
//! `down` in reverse dependency order, and port assignment.
//!
//! `up` (agent-procs' `up`, process-compose's dependency conditions) validates the whole project
//! before it starts anything, then runs one task per process: each waits only for its own
//! dependencies to settle, starts (or leaves alone an unchanged running process, or restarts a
//! changed one), and waits for its readiness probe. Progress goes out as [`UpMessage`]s. The
//! orchestration is detached from the request: a client that goes away does not stop it; a
//! `down` of the project does.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, TcpListener};
use std::ops::RangeInclusive;
use std::time::Duration;

use aside_proto::{
    Autorestart, EventKind, ProcessInfo, ProjectInfo, ReadyCheck, ReadyProbe, RestartState,
    RunResult, Spec, Status, StopAllResponse, StopRequest, UpMessage, UpRequest, UpState,
    WaitOutcome, WaitQuery,
};
use jiff::Timestamp;
use tokio::sync::{broadcast, mpsc, watch};

use super::{
    Error, Requester, Result, Supervisor, Validated, lock, remove_run_dir, valid_name, wake,
};
use crate::store::ProcessRow;

/// Ports given to proxied processes that have none (agent-procs: 4000–4999).
pub const AUTO_PORTS: RangeInclusive<u16> = 4000..=4999;
/// Ports a project's proxy takes when none is pinned (agent-procs: 9090–9190).
pub const PROXY_PORTS: RangeInclusive<u16> = 9090..=9190;

/// Gives `spec` an assigned `port`: `PORT` set to it, `HOST` to 127.0.0.1 unless set.
pub(super) fn assign_port(spec: &mut Spec, port: u16) {
    spec.port = Some(port);
    spec.env.insert("PORT".into(), port.to_string());
    spec.env
        .entry("HOST".into())
        .or_insert_with(|| "127.0.0.1".into());
}

/// Checks a readiness probe's shape. Errors: an empty pattern, an invalid regex, port 0, a URL
/// that is not `http://`, an empty command, an interval of 0.
pub(super) fn validate_probe(probe: Option<&ReadyProbe>) -> Result<()> {
    let Some(probe) = probe else { return Ok(()) };
    if probe.interval_ms == 0 {
        return Err(Error::Invalid(
            "the readiness interval must be longer than 0 ms".into(),
        ));
    }
    match &probe.check {
        ReadyCheck::Log { pattern, .. } if pattern.is_empty() => Err(Error::Invalid(
            "the ready pattern is empty: give text the process prints once it is ready".into(),
        )),
        ReadyCheck::Log {
            pattern,
            regex: true,
        } => regex::Regex::new(pattern)
            .map(|_| ())
            .map_err(|e| Error::Invalid(format!("invalid ready regex {pattern:?}: {e}"))),
        ReadyCheck::Tcp { port: 0 } => Err(Error::Invalid(
            "the ready tcp port is 0: give the port the process listens on".into(),
        )),
        ReadyCheck::Http { url } => wake::parse_http_url(url).map(|_| ()).map_err(|_| {
            Error::Invalid(format!(
                "ready http URL {url:?}: give an http:// URL such as http://127.0.0.1:8080/health"
            ))
        }),
        ReadyCheck::Exec { cmd } if cmd.trim().is_empty() => {
            Err(Error::Invalid("the ready exec command is empty".into()))
        }
        _ => Ok(()),
    }
}

/// What the restart policy decides after a run ended.
#[derive(Debug, PartialEq, Eq)]
enum RestartDecision {
    /// Not restarted (no policy, a stop request, a clean exit under `on-failure`, disabled).
    No,
    /// Restart as attempt `attempt` after `delay_ms`.
    After { attempt: u32, delay_ms: u64 },
    /// `max_restarts` is reached: the process stays ended.
    Exhausted { max: u32 },
}

fn decide_restart(spec: &Spec, info: &ProcessInfo) -> RestartDecision {
    let (Some(policy), Some(state)) = (&spec.restart, &info.autorestart) else {
        return RestartDecision::No;
    };
    if state.state != RestartState::Active {
        return RestartDecision::No;
    }
    let wanted = match info.status {
        Status::Stopped => false,
        Status::Completed | Status::CompletedEmpty => policy.autorestart == Autorestart::Always,
        Status::Failed | Status::TimedOut | Status::Abandoned => {
            policy.autorestart != Autorestart::Never
        }
        Status::Queued | Status::Starting | Status::Running | Status::Ready => false,
    };
    if !wanted {
        return RestartDecision::No;
    }
    let stable = info.duration_ms >= policy.reset_after_ms;
    let attempt = if stable { 1 } else { state.attempts + 1 };
    match policy.max_restarts {
        Some(max) if attempt > max => RestartDecision::Exhausted { max },
        _ => RestartDecision::After {
            attempt,
            delay_ms: policy.delay_for(attempt),
        },
    }
}

/// Un-counts a pending restart when dropped.
struct PendingRestart(Supervisor);

impl Drop for PendingRestart {
    fn drop(&mut self) {
        self.0
            .inner
            .pending_restarts
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// How a run ended, for the `restarted (…)` annotation.
fn exit_phrase(info: &ProcessInfo) -> String {
    match (&info.exit_code, &info.signal) {
        (_, Some(sig)) => format!("{}, {sig}", info.status),
        (Some(code), None) => format!("exit {code}"),
        (None, None) => info.status.to_string(),
    }
}

impl Supervisor {
    /// A port in `range` that no live process has and that is free on 127.0.0.1 now.
    /// Errors: every port of the range is taken.
    pub(super) fn free_port(&self, range: RangeInclusive<u16>) -> Result<u16> {
        let used: BTreeSet<u16> = self.store().live_ports()?.into_iter().collect();
        // Start at a varying place: the process binds its port only later, so two daemons (or
        // two quick starts) scanning from the same first port would pick the same one.
        let len = u32::from(range.end() - range.start()) + 1;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let offset = (nanos ^ std::process::id()) % len;
        for i in 0..len {
            let port = range.start() + ((offset + i) % len) as u16;
            if !used.contains(&port) && TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return Ok(port);
            }
        }
        Err(Error::Conflict(format!(
            "no free port in {}–{}: stop something listening there, or give the process a port",
            range.start(),
            range.end()
        )))
    }

    /// Marks a run `ready` (once) and sends the `run_ready` event.
    fn set_ready(&self, run_id: &str) {
        let mut store = self.store();
        match store.set_ready(run_id) {
            Ok(Some(e)) => self.publish(std::slice::from_ref(&e)),
            Ok(None) => {}
            Err(e) => tracing::error!("run {run_id}: cannot record readiness: {e}"),
        }
    }

    /// Runs `probe` for `run_id` in the background until it passes (→ `ready`), the run ends,
    /// or the probe's timeout passes.
    pub(super) fn probe_readiness(&self, run_id: &str, spec: &Spec, probe: ReadyProbe) {
        let me = self.clone();
        let run = run_id.to_string();
        let spec = spec.clone();
        tokio::spawn(async move {
            let Some(mut done) = me.done_rx(&run) else {
                return;
            };
            let timeout = Duration::from_millis(probe.timeout_ms);
            let interval = Duration::from_millis(probe.interval_ms);
            let deadline = tokio::time::Instant::now() + timeout;
            let passed = match &probe.check {
                ReadyCheck::Log { pattern, regex } => {
                    let Ok(process_id) = me.store().find_by_run(&run).map(|r| r.map(|r| r.info.id))
                    else {
                        return;
                    };
                    let Some(process_id) = process_id else { return };
                    let q = WaitQuery {
                        until: Some(pattern.clone()),
                        regex: *regex,
                        timeout_ms: Some(probe.timeout_ms),
                    };
                    matches!(
                        me.wait(&process_id, &q).await.map(|w| w.outcome),
                        Ok(WaitOutcome::Matched)
                    )
                }
                check => loop {
                    if check_once(check, &spec, interval).await {
                        break true;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => break false,
                        _ = done.wait_for(|d| *d) => break false,
                        _ = tokio::time::sleep(interval) => {}
                    }
                },
            };
            if passed {
                me.set_ready(&run);
            }
        });
    }

    /// After a run ended with `result`: applies its process's restart policy (see
    /// [`aside_proto::RestartPolicy`]): schedules the next run after the delay, or records that
    /// the restarts are exhausted. `row` is the process as loaded before the result was written.
    pub(super) fn consider_restart(&self, mut row: ProcessRow, result: &RunResult) {
        if row.info.run_id != result.run_id {
            return; // not its latest run
        }
        row.info.status = result.status;
        row.info.exit_code = result.exit_code;
        row.info.signal = result.signal.clone();
        row.info.duration_ms = result.duration_ms;
        let run_id = result.run_id.as_str();
        let attempts = row.info.autorestart.as_ref().map_or(0, |a| a.attempts);
        match decide_restart(&row.spec, &row.info) {
            RestartDecision::No => {}
            RestartDecision::Exhausted { max } => {
                tracing::info!(
                    "{}: not restarted, max_restarts ({max}) reached",
                    row.info.reference()
                );
                let exhausted = self
                    .store()
                    .exhaust_restarts(&row.info.id, run_id, attempts);
                match exhausted {
                    Ok(e) => self.publish(&[e]),
                    Err(e) => tracing::error!("{}: {e}", row.info.reference()),
                }
            }
            RestartDecision::After { attempt, delay_ms } => {
                if let Err(e) =
                    self.store()
                        .set_restart_state(&row.info.id, attempt, RestartState::Active)
                {
                    tracing::error!("{}: {e}", row.info.reference());
                    return;
                }
                let of = row
                    .spec
                    .restart
                    .as_ref()
                    .and_then(|r| r.max_restarts)
                    .map_or_else(|| attempt.to_string(), |m| format!("{attempt}/{m}"));
                let note = format!(
                    "restarted ({}, attempt {of}) after {delay_ms} ms",
                    exit_phrase(&row.info)
                );
                let me = self.clone();
                let run = run_id.to_string();
                let pending = &self.inner.pending_restarts;
                pending.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    // Counted until the new run is live (or the restart is dropped).
                    let _pending = PendingRestart(me.clone());
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                    // Still the latest run, and restarts still wanted (no stop, restart or
                    // `up` meanwhile)?
                    let Ok(row) = me.find(&row.info.id) else {
                        return;
                    };
                    let active = row
                        .info
                        .autorestart
                        .as_ref()
                        .is_some_and(|a| a.state == RestartState::Active);
                    if row.info.run_id != run || !active {
                        return;
                    }
                    let spec = row.spec.clone();
                    let who = Requester::new("aside", None);
                    if let Err(e) = me.relaunch(row, spec, &who, vec![note], None).await {
                        tracing::warn!("restart after exit failed: {e}");
                    }
                });
            }
        }
    }

    /// Validates a whole project and starts it in dependency order in the background; the
    /// receiver gets its progress and ends with [`UpMessage::Done`]. Errors (nothing is started
    /// then): an invalid project or process name, a duplicate name, a `depends_on` naming an
    /// undefined process, a dependency cycle, a duplicate port, an `only` naming an undefined
    /// process, an invalid process (see [`Supervisor::run`]).
    pub async fn up(
        &self,
        project: &str,
        req: UpRequest,
        who: &Requester,
    ) -> Result<mpsc::UnboundedReceiver<UpMessage>> {
        if !valid_name(project) {
            return Err(Error::Invalid(format!(
                "invalid project name {project:?}: use 1-64 letters, digits and - _ . : @"
            )));
        }
        let mut procs: BTreeMap<String, Validated> = BTreeMap::new();
        let mut ports: HashMap<u16, String> = HashMap::new();
        for mut r in req.processes {
            let Some(name) = r.name.clone() else {
                return Err(Error::Invalid(
                    "every process of a project needs a name".into(),
                ));
            };
            r.project = Some(project.to_string());
            r.proxy |= req.proxy;
            let v = self
                .validate(r)
                .map_err(|e| Error::Invalid(format!("process {name:?}: {e}")))?;
            if let Some(p) = v.spec.port
                && let Some(other) = ports.insert(p, name.clone())
            {
                return Err(Error::Invalid(format!(
                    "processes {other:?} and {name:?} both use port {p}: give each its own"
                )));
            }
            if procs.insert(name.clone(), v).is_some() {
                return Err(Error::Invalid(format!("process {name:?} is defined twice")));
            }
        }
        let deps: BTreeMap<String, Vec<String>> = procs
            .iter()
            .map(|(n, v)| (n.clone(), v.spec.depends_on.clone()))
            .collect();
        check_graph(&deps)?;
        for n in &req.only {
            if !procs.contains_key(n) {
                return Err(Error::Invalid(format!(
                    "--only names {n:?}, which the project does not define (it has: {})",
                    procs.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
        }
        if !who.is_human() {
            // Judge every process before starting any: a refusal starts nothing.
            for v in procs.values() {
                let mut spec = v.spec.clone();
                self.admit(who, &v.owner, v.team.as_deref(), &mut spec, false, false)?;
            }
        }
        let selected = select(&deps, &req.only);
        self.store()
            .upsert_project(project, req.config.as_deref(), Timestamp::now())?;
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = self.project_cancel(project);
        let outcomes: HashMap<String, watch::Sender<Option<UpState>>> = selected
            .iter()
            .map(|n| (n.clone(), watch::channel(None).0))
            .collect();
        let outcomes = std::sync::Arc::new(outcomes);
        let mut tasks = Vec::new();
        for name in &selected {
            let Some(v) = procs.remove(name) else {
                continue;
            };
            let me = self.clone();
            let who = who.clone();
            let tx = tx.clone();
            let outcomes = std::sync::Arc::clone(&outcomes);
            let project = project.to_string();
            let name = name.clone();
            let cancel = cancel.clone();
            tasks.push(tokio::spawn(async move {
                let state = me
                    .up_one(&project, &name, v, &who, &tx, &outcomes, cancel)
                    .await;
                if let Some(o) = outcomes.get(&name) {
                    o.send_replace(Some(state));
                }
                (name, state)
            }));
        }
        tokio::spawn(async move {
            let mut failed = Vec::new();
            for t in tasks {
                if let Ok((name, state)) = t.await
                    && !state.is_ok()
                {
                    failed.push(name);
                }
            }
            failed.sort();
            // The client may have gone: `up` is detached from it and simply ends.
            if tx.send(UpMessage::Done { failed }).is_err() {
                tracing::debug!("up: done, nobody listening");
            }
        });
        Ok(rx)
    }

    /// A receiver that changes when `down` cancels the project's pending starts.
    fn project_cancel(&self, project: &str) -> watch::Receiver<u64> {
        lock(&self.inner.projects)
            .entry(project.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Brings one process of an `up` to a settled state; sends its progress.
    #[allow(clippy::too_many_arguments)]
    async fn up_one(
        &self,
        project: &str,
        name: &str,
        v: Validated,
        who: &Requester,
        tx: &mpsc::UnboundedSender<UpMessage>,
        outcomes: &HashMap<String, watch::Sender<Option<UpState>>>,
        mut cancel: watch::Receiver<u64>,
    ) -> UpState {
        let send = |state: UpState, detail: Option<String>, process: Option<ProcessInfo>| {
            let message = UpMessage::Process {
                name: name.to_string(),
                state,
                detail,
                process: process.map(Box::new),
            };
            // As for `Done`: a client that left does not stop the orchestration.
            if tx.send(message).is_err() {
                tracing::debug!("up: {name} is {state:?}, nobody listening");
            }
            state
        };
        let deps = v.spec.depends_on.clone();
        if !deps.is_empty() {
            send(
                UpState::Waiting,
                Some(format!("on {}", deps.join(", "))),
                None,
            );
        }
        for d in &deps {
            let Some(o) = outcomes.get(d) else { continue };
            let mut rx = o.subscribe();
            let state = tokio::select! {
                s = rx.wait_for(|s| s.is_some()) => s.ok().and_then(|s| *s),
                _ = cancel.changed() => {
                    return send(UpState::Skipped, Some("the project was brought down".into()), None);
                }
            };
            if !state.is_some_and(UpState::is_ok) {
                let why = match state {
                    Some(UpState::NotReady) => "did not get ready",
                    Some(UpState::Skipped) => "was not started",
                    _ => "failed",
                };
                return send(
                    UpState::Skipped,
                    Some(format!("its dependency {d} {why}")),
                    None,
                );
            }
        }
        let reference = format!("{project}/{name}");
        let existing = self.store().find(&reference);
        let mut events = self.subscribe_events();
        let started = match existing {
            Ok(Some(row))
                if !row.info.status.is_terminal()
                    && row.spec.digest.is_some()
                    && row.spec.digest == v.spec.digest =>
            {
                return send(UpState::Unchanged, None, Some(row.info));
            }
            Ok(Some(row)) => {
                let mut spec = v.spec.clone();
                if spec.proxy
                    && spec.port.is_none()
                    && let Some(p) = row.spec.port
                {
                    assign_port(&mut spec, p); // the port it had
                }
                let note = "restarted by `up`: its configuration changed or it had ended";
                let team = v.team.as_deref();
                let relaunched = self
                    .relaunch(row, spec, who, vec![note.into()], Some((&v.owner, team)))
                    .await;
                if let (Ok(info), Some(w)) = (&relaunched, &v.spec.watch) {
                    self.watch_files(&info.id, w);
                }
                relaunched
            }
            Ok(None) => {
                self.start_validated(v.clone(), false, who, Vec::new())
                    .await
            }
            Err(e) => Err(e.into()),
        };
        let info = match started {
            Ok(info) => info,
            Err(e) => return send(UpState::Failed, Some(e.to_string()), None),
        };
        send(UpState::Starting, None, Some(info.clone()));
        let probe = v.spec.ready.clone();
        let timeout = probe.as_ref().map_or(Duration::from_secs(10), |p| {
            Duration::from_millis(p.timeout_ms)
        });
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let Ok(row) = self.find(&info.id) else {
                return send(UpState::Failed, Some("it disappeared".into()), None);
            };
            let restarting = row
                .info
                .autorestart
                .as_ref()
                .is_some_and(|a| a.state == RestartState::Active);
            match row.info.status {
                Status::Ready => return send(UpState::Ready, None, Some(row.info)),
                Status::Running if probe.is_none() => {
                    return send(UpState::Running, None, Some(row.info));
                }
                Status::Completed | Status::CompletedEmpty if probe.is_none() && !restarting => {
                    return send(UpState::Completed, None, Some(row.info));
                }
                st if st.is_terminal() && !restarting => {
                    let detail = match (&row.info.error, row.info.exit_code) {
                        (Some(e), _) => format!("{st}: {e}"),
                        (None, Some(c)) => format!("{st} (exit {c})"),
                        (None, None) => st.to_string(),
                    };
                    return send(UpState::Failed, Some(detail), Some(row.info));
                }
                _ => {}
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    let secs = timeout.as_secs_f64();
                    return send(
                        UpState::NotReady,
                        Some(format!("not ready within {secs} s; left running")),
                        Some(row.info),
                    );
                }
                e = events.recv() => match e {
                    Ok(e) if e.process_id.as_deref() != Some(info.id.as_str()) => {}
                    Ok(e) if !matches!(e.kind(), EventKind::RunStarted | EventKind::RunReady | EventKind::RunExited) => {}
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        return send(UpState::Failed, Some("the daemon is stopping".into()), None);
                    }
                },
                // A restart policy may bring it back while this waits: look again now and then.
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// Stops a project's processes in reverse dependency order (dependents first), disables
    /// their restarts and file watching, and cancels its pending `up` starts. Answers with the
    /// processes stopped and those the requester may not stop.
    pub async fn down(&self, project: &str, who: &Requester) -> Result<StopAllResponse> {
        if let Some(c) = lock(&self.inner.projects).get(project) {
            c.send_modify(|n| *n += 1);
        }
        let all = self.store().list(&crate::store::ListFilter {
            all: true,
            project: Some(project.to_string()),
            ..Default::default()
        })?;
        let mut remaining: BTreeMap<String, (ProcessInfo, Vec<String>)> = BTreeMap::new();
        for info in all {
            let deps = self
                .find(&info.id)
                .map(|r| r.spec.depends_on)
                .unwrap_or_default();
            remaining.insert(info.name.clone(), (info, deps));
        }
        let mut resp = StopAllResponse::default();
        while !remaining.is_empty() {
            // Those no remaining process depends on go first.
            let needed: BTreeSet<&String> = remaining.values().flat_map(|(_, d)| d).collect();
            let mut wave: Vec<String> = remaining
                .keys()
                .filter(|n| !needed.contains(n))
                .cloned()
                .collect();
            if wave.is_empty() {
                wave = remaining.keys().cloned().collect();
            }
            let mut tasks = Vec::new();
            for n in wave {
                let Some((info, _)) = remaining.remove(&n) else {
                    continue;
                };
                let me = self.clone();
                let who = who.clone();
                tasks.push(tokio::spawn(async move {
                    let live = !info.status.is_terminal();
                    let r = me.stop(&info.id, &StopRequest::default(), &who).await;
                    (info.name, live, r)
                }));
            }
            for t in tasks {
                match t.await {
                    Ok((_, true, Ok(info))) => resp.stopped.push(info),
                    Ok((name, true, Err(Error::Forbidden(_)))) => resp.refused.push(name),
                    Ok((name, _, Err(e))) if !matches!(e, Error::NotFound(_)) => {
                        tracing::warn!("down {project}: {name}: {e}");
                    }
                    _ => {}
                }
            }
        }
        Ok(resp)
    }

    /// Every project with its counts (`""` is the default project).
    pub fn projects(&self) -> Result<Vec<ProjectInfo>> {
        Ok(self.store().projects()?)
    }

    /// Forgets projects with nothing running (agent-procs' `session clean`): their records and
    /// logs whose results were read; unread results are kept. Returns the projects forgotten.
    pub fn clean_projects(&self) -> Result<Vec<String>> {
        let mut cleaned = Vec::new();
        for p in self.projects()? {
            if p.live > 0 || p.proxy_port.is_some() {
                continue;
            }
            let ids = self.store().forget_project(&p.name)?;
            for id in &ids {
                remove_run_dir(&self.inner.state.run_dir(id));
            }
            lock(&self.inner.projects).remove(&p.name);
            cleaned.push(p.name);
        }
        Ok(cleaned)
    }

    /// Records the port of a project's proxy (`None` once it stopped); `""` is the default
    /// project.
    pub fn set_proxy_port(&self, project: &str, port: Option<u16>) -> Result<()> {
        Ok(self
            .store()
            .set_proxy_port(project, port, Timestamp::now())?)
    }

    /// Where the proxy of `project` sends `name`: the port of the live process of that name.
    /// `None` when there is no such live, proxied process.
    pub fn route(&self, project: &str, name: &str) -> Option<u16> {
        let reference = if project.is_empty() {
            name.to_string()
        } else {
            format!("{project}/{name}")
        };
        let info = self.store().find_info(&reference).ok()??;
        let same_project = info.project.as_deref().unwrap_or("") == project;
        (same_project && !info.status.is_terminal())
            .then_some(info.port)
            .flatten()
    }
}

/// One try of a non-log readiness check; a try takes at most `4 × interval` (at least 1 s).
async fn check_once(check: &ReadyCheck, spec: &Spec, interval: Duration) -> bool {
    let limit = (interval * 4).max(Duration::from_secs(1));
    let attempt = async {
        match check {
            ReadyCheck::Log { .. } => false,
            ReadyCheck::Tcp { port } => {
                tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, *port))
                    .await
                    .is_ok()
            }
            ReadyCheck::Http { url } => {
                matches!(wake::request("GET", url, b"").await, Ok(code) if (200..400).contains(&code))
            }
            ReadyCheck::Exec { cmd } => tokio::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(cmd)
                .current_dir(&spec.cwd)
                .env_clear()
                .envs(&spec.env)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .status()
                .await
                .is_ok_and(|s| s.success()),
        }
    };
    tokio::time::timeout(limit, attempt).await.unwrap_or(false)
}

/// Checks that every dependency is defined and that there is no cycle (the error shows it,
/// e.g. `a → b → a`).
fn check_graph(deps: &BTreeMap<String, Vec<String>>) -> Result<()> {
    for (n, ds) in deps {
        for d in ds {
            if !deps.contains_key(d) {
                return Err(Error::Invalid(format!(
                    "process {n:?} depends on {d:?}, which the project does not define"
                )));
            }
            if d == n {
                return Err(Error::Invalid(format!("process {n:?} depends on itself")));
            }
        }
    }
    if let Some(cycle) = find_cycle(deps) {
        return Err(Error::Invalid(format!(
            "dependency cycle: {}",
            cycle.join(" → ")
        )));
    }
    Ok(())
}

/// A dependency cycle as a path that starts and ends with the same name, if there is one.
pub fn find_cycle(deps: &BTreeMap<String, Vec<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit(
        n: &str,
        deps: &BTreeMap<String, Vec<String>>,
        marks: &mut HashMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(n) {
            Some(Mark::Done) => return None,
            Some(Mark::Visiting) => {
                let start = path.iter().position(|p| p == n).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(n.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(n.to_string(), Mark::Visiting);
        path.push(n.to_string());
        for d in deps.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, deps, marks, path) {
                return Some(c);
            }
        }
        path.pop();
        marks.insert(n.to_string(), Mark::Done);
        None
    }
    let mut marks = HashMap::new();
    for n in deps.keys() {
        if let Some(c) = visit(n, deps, &mut marks, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

/// `only` and everything it depends on (all of them when `only` is empty).
fn select(deps: &BTreeMap<String, Vec<String>>, only: &[String]) -> Vec<String> {
    if only.is_empty() {
        return deps.keys().cloned().collect();
    }
    let mut chosen = BTreeSet::new();
    let mut stack: Vec<String> = only.to_vec();
    while let Some(n) = stack.pop() {
        if chosen.insert(n.clone()) {
            stack.extend(deps.get(&n).into_iter().flatten().cloned());
        }
    }
    chosen.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aside_proto::{AutorestartState, Command, RestartPolicy};

    fn graph(edges: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        edges
            .iter()
            .map(|(n, d)| (n.to_string(), d.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn a_cycle_is_reported_as_its_path() {
        let g = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"]), ("d", &[])]);
        assert_eq!(find_cycle(&g).unwrap(), ["a", "b", "c", "a"]);
        let ok = graph(&[("a", &["b", "c"]), ("b", &["c"]), ("c", &[])]);
        assert_eq!(find_cycle(&ok), None);
        assert!(check_graph(&graph(&[("a", &["zz"])])).is_err());
    }

    #[test]
    fn only_pulls_in_its_dependencies() {
        let g = graph(&[("web", &["api"]), ("api", &["db"]), ("db", &[]), ("x", &[])]);
        assert_eq!(select(&g, &["web".into()]), ["api", "db", "web"]);
        assert_eq!(select(&g, &[]).len(), 4);
    }

    fn info(status: Status, attempts: u32, duration_ms: u64) -> ProcessInfo {
        ProcessInfo {
            id: "p".into(),
            name: "n".into(),
            owner: "human".into(),
            team: None,
            command: "x".into(),
            cwd: "/".into(),
            run_id: "r".into(),
            restarts: 0,
            status,
            pid: None,
            exit_code: Some(1),
            signal: None,
            started_at: Timestamp::UNIX_EPOCH,
            ended_at: None,
            duration_ms,
            stopped_by: None,
            error: None,
            description: None,
            project: None,
            port: None,
            url: None,
            autorestart: Some(AutorestartState {
                mode: Autorestart::OnFailure,
                attempts,
                max_restarts: Some(3),
                state: RestartState::Active,
            }),
            unrecorded: None,
            progress: None,
            state: aside_proto::ProcessState::Exited,
            uptime_secs: None,
            restart_count: Some(attempts),
            max_restarts: Some(3),
            restart_policy: Some("on-failure".into()),
            watched: None,
            job: None,
        }
    }

    fn spec(mode: Autorestart) -> Spec {
        Spec {
            cmd: Command::Shell("x".into()),
            cwd: "/".into(),
            env: Default::default(),
            timeout_ms: None,
            grace_ms: 1,
            log_cap_bytes: 1 << 20,
            interactive: false,
            restart: Some(RestartPolicy {
                max_restarts: Some(3),
                backoff_max_ms: Some(5_000),
                ..RestartPolicy::new(mode)
            }),
            ready: None,
            port: None,
            proxy: false,
            watch: None,
            depends_on: vec![],
            digest: None,
            executor: aside_proto::Executor::Local,
        }
    }

    #[test]
    fn restarts_follow_the_policy_with_backoff_and_a_limit() {
        let s = spec(Autorestart::OnFailure);
        assert_eq!(
            decide_restart(&s, &info(Status::Failed, 0, 10)),
            RestartDecision::After {
                attempt: 1,
                delay_ms: 1000
            }
        );
        assert_eq!(
            decide_restart(&s, &info(Status::Failed, 2, 10)),
            RestartDecision::After {
                attempt: 3,
                delay_ms: 4000
            }
        );
        assert_eq!(
            decide_restart(&s, &info(Status::Failed, 3, 10)),
            RestartDecision::Exhausted { max: 3 }
        );
        // A stable run resets the count.
        assert_eq!(
            decide_restart(&s, &info(Status::Failed, 3, 60_000)),
            RestartDecision::After {
                attempt: 1,
                delay_ms: 1000
            }
        );
        assert_eq!(
            decide_restart(&s, &info(Status::Completed, 0, 10)),
            RestartDecision::No
        );
        assert_eq!(
            decide_restart(&s, &info(Status::Stopped, 0, 10)),
            RestartDecision::No
        );
        let always = spec(Autorestart::Always);
        assert!(matches!(
            decide_restart(&always, &info(Status::Completed, 0, 10)),
            RestartDecision::After { .. }
        ));
        let mut disabled = info(Status::Failed, 0, 10);
        if let Some(a) = disabled.autorestart.as_mut() {
            a.state = RestartState::Disabled;
        }
        assert_eq!(decide_restart(&s, &disabled), RestartDecision::No);
    }
}
