//! Waking idle owners: when a result arrives for an owner that registered a wake action and
//! has been idle (no API request for `idle_after_ms`, or marked idle), run its command with the
//! pending results as JSON on stdin, or POST them to its webhook. Debounced and batched (one
//! worker per owner), retried with exponential backoff until the results are acknowledged or
//! the owner is active again; results of runs the owner stopped itself never wake it.
//!
//! A *host* wake action resumes the owner's recorded agent-host session instead (see
//! [`crate::hosts`]): once that session's host process has ended, the daemon runs the host's
//! own resume command in the session's directory with the results as the prompt on stdin. The
//! results it carries are held for that delivery (hooks and MCP answers skip them), and
//! acknowledged only when the resumed turn ends well; a failed turn makes them pending again
//! and is retried with the backoff. One worker per owner and the session's own host process
//! mean one session is resumed at most once at a time. Held deliveries outlive the daemon: the
//! next one waits for a resumed host still running, so a `kill -9` between does not resume a
//! session twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aside_proto::{
    AgentHost, Command, EventKind, HostSession, Notification, WakeAction, WakePayload,
};
use jiff::Timestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use super::{Error, Requester, Result, Supervisor, lock, process_exit};
use crate::hosts;
use crate::policy::Verdict;

/// Default idle time after which an owner may be woken: 60 s.
pub const DEFAULT_IDLE_AFTER_MS: u64 = 60_000;
/// Longest wait between two wake attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// Longest a wake command or webhook may take.
const FIRE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a resumed agent-host turn may take before it is stopped (and retried later).
const TURN_TIMEOUT: Duration = Duration::from_secs(3600);

/// When an owner last talked to the daemon.
#[derive(Debug, Clone, Copy)]
pub(super) struct Activity {
    last: Instant,
    marked_idle: bool,
}

/// Per-owner activity, and the wake worker of each owner that has one running (its signal
/// interrupts the worker's wait when a new result arrives).
#[derive(Debug, Default)]
pub(super) struct WakeState {
    activity: HashMap<String, Activity>,
    workers: HashMap<String, Arc<Notify>>,
    /// The host process watched for each owner's recorded session (pid, start time).
    hosts_watched: HashMap<String, (u32, u64)>,
}

/// What a wake action does: exactly one of its targets.
enum Target {
    Command(Vec<String>),
    Webhook(String),
    Resume(AgentHost),
}

impl Target {
    fn of(action: &WakeAction) -> Result<Target> {
        match (&action.command, &action.webhook, action.host) {
            (Some(argv), None, None) if argv.first().is_some_and(|p| !p.is_empty()) => {
                Ok(Target::Command(argv.clone()))
            }
            (Some(_), None, None) => Err(Error::Invalid(
                "the wake command is empty: give a program and its arguments".into(),
            )),
            (None, Some(url), None) => {
                parse_http_url(url)?;
                Ok(Target::Webhook(url.clone()))
            }
            (None, None, Some(host)) => Ok(Target::Resume(host)),
            _ => Err(Error::Invalid(
                "a wake action is exactly one of a command (argv), a webhook (URL) or a host to resume"
                    .into(),
            )),
        }
    }
}

/// `http://host[:port]/path` → (host, port, path). `https` is not supported yet.
pub(super) fn parse_http_url(url: &str) -> Result<(String, u16, String)> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(Error::Invalid(format!(
            "webhook {url:?}: only http:// URLs are supported yet (for https, point a local relay or a wake command at it)"
        )));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| Error::Invalid(format!("webhook {url:?}: invalid port {p:?}")))?,
        ),
        None => (authority, 80),
    };
    if host.is_empty() {
        return Err(Error::Invalid(format!("webhook {url:?}: no host")));
    }
    Ok((host.to_string(), port, path.to_string()))
}

impl Supervisor {
    /// Records API activity of `owner` (it is not idle now).
    pub fn touch(&self, owner: &str) {
        lock(&self.inner.wake).activity.insert(
            owner.to_string(),
            Activity {
                last: Instant::now(),
                marked_idle: false,
            },
        );
    }

    /// Marks `owner` idle now: a result that arrives may wake it at once.
    pub fn mark_idle(&self, owner: &str) {
        lock(&self.inner.wake).activity.insert(
            owner.to_string(),
            Activity {
                last: Instant::now(),
                marked_idle: true,
            },
        );
        self.ensure_waker(owner);
    }

    /// Whether a wake worker has results to deliver (the daemon then stays up for it).
    pub(super) fn waking(&self) -> bool {
        !lock(&self.inner.wake).workers.is_empty()
    }

    fn is_idle(&self, owner: &str, idle_after: Duration) -> bool {
        match lock(&self.inner.wake).activity.get(owner) {
            None => true,
            Some(a) => a.marked_idle || a.last.elapsed() >= idle_after,
        }
    }

    /// Registers (replaces) the wake action of `owner`. Agents may only set their own, and a
    /// wake command must pass the policy like any command they run. Errors: invalid action,
    /// forbidden.
    pub fn set_wake(
        &self,
        who: &Requester,
        owner: &str,
        mut action: WakeAction,
    ) -> Result<WakeAction> {
        action.owner = owner.to_string();
        Target::of(&action)?;
        self.authorize(
            who,
            crate::authz::Action::OwnerData {
                owner,
                change: true,
            },
        )?;
        if !who.is_human() {
            let target = format!("wake for {owner}");
            let policy = self.agent_policy(who, "wake", &target)?;
            if let Some(argv) = &action.command
                && let Verdict::Refused(why) = policy.check_command(&Command::Argv(argv.clone()))
            {
                return self.refuse(
                    who,
                    "wake",
                    &target,
                    format!("the policy refuses the wake command: {why}"),
                );
            }
            if let Some(url) = &action.webhook
                && let Verdict::Refused(why) = policy.check_url(url, &self.trusted())
            {
                return self.refuse(
                    who,
                    "wake",
                    &target,
                    format!("the policy refuses the webhook: {why}"),
                );
            }
        }
        self.store().set_wake(&action, Timestamp::now())?;
        self.audit(who, "wake-set", owner, None);
        self.ensure_waker(owner);
        Ok(action)
    }

    /// The wake action of `owner`.
    pub fn wake_action(&self, owner: &str) -> Result<Option<WakeAction>> {
        Ok(self.store().wake(owner)?)
    }

    /// Removes the wake action of `owner` (agents: only their own). Returns whether there was one.
    pub fn clear_wake(&self, who: &Requester, owner: &str) -> Result<bool> {
        self.authorize(
            who,
            crate::authz::Action::OwnerData {
                owner,
                change: true,
            },
        )?;
        Ok(self.store().clear_wake(owner)?)
    }

    /// Starts waking: one task follows the event log for new results, and owners with results
    /// pending from before a restart get a worker now.
    pub fn start_waker(&self) {
        self.recover_deliveries();
        let me = self.clone();
        let mut rx = self.subscribe_events();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(e) if e.kind() == EventKind::NotificationCreated => {
                        if let Some(owner) = e.owner {
                            me.ensure_waker(&owner);
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        for owner in me.store().owners_to_wake().unwrap_or_default() {
                            me.ensure_waker(&owner);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        for owner in self.store().owners_to_wake().unwrap_or_default() {
            self.ensure_waker(&owner);
        }
    }

    /// Starts the owner's worker, or tells the running one that something new happened (a
    /// new result, or the owner marked idle): it then fires after the debounce, not after its
    /// backoff.
    fn ensure_waker(&self, owner: &str) {
        let signal = {
            let mut state = lock(&self.inner.wake);
            if let Some(signal) = state.workers.get(owner) {
                signal.notify_one();
                return; // one worker per owner batches everything
            }
            let signal = Arc::new(Notify::new());
            state.workers.insert(owner.to_string(), Arc::clone(&signal));
            signal
        };
        let me = self.clone();
        let owner = owner.to_string();
        tokio::spawn(async move {
            me.wake_worker(&owner, &signal).await;
            lock(&me.inner.wake).workers.remove(&owner);
        });
    }

    /// Results that may wake `owner`: unacknowledged, not held by a delivery, and not of runs
    /// it stopped itself.
    fn wakeable(&self, owner: &str) -> Vec<Notification> {
        self.store()
            .deliverable(owner)
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n.result.stopped_by.as_deref() != Some(owner))
            .collect()
    }

    async fn wake_worker(&self, owner: &str, signal: &Notify) {
        let debounce = self.inner.settings.wake_debounce;
        // Debounce: results that arrive together are delivered together.
        tokio::time::sleep(debounce).await;
        let mut backoff = self.inner.settings.wake_backoff;
        loop {
            let Ok(Some(action)) = self.store().wake(owner) else {
                return;
            };
            let Ok(target) = Target::of(&action) else {
                return;
            };
            let pending = self.wakeable(owner);
            if pending.is_empty() {
                return;
            }
            let who = Requester::new(owner, None);
            let target_text = format!("wake of {owner} ({} results)", pending.len());
            let fired = match target {
                Target::Resume(host) => match self.host_session(owner) {
                    Ok(Some(session)) if session.host == host && hosts::session_open(&session) => {
                        // The session is open: its own hooks and tool answers deliver the
                        // results; resume it only once its host process has ended.
                        let exited = async {
                            match session.pid.and_then(|pid| process_exit(pid as i32).ok()) {
                                Some(exit) => exit.await,
                                // A pid that cannot be watched is looked at again now and then.
                                None => tokio::time::sleep(MAX_BACKOFF).await,
                            }
                        };
                        tokio::select! {
                            _ = exited => tokio::time::sleep(debounce).await,
                            _ = signal.notified() => tokio::time::sleep(debounce).await,
                        }
                        continue;
                    }
                    Ok(Some(session)) if session.host == host => {
                        self.resume_session(owner, &session, pending).await
                    }
                    Ok(Some(session)) => Err(format!(
                        "the wake resumes a {host} session, but {owner} speaks for a {} session",
                        session.host
                    )),
                    Ok(None) => Err(format!(
                        "no {host} session is recorded for {owner} (`aside mcp` and `aside hook` record it)"
                    )),
                    Err(e) => Err(e.to_string()),
                },
                Target::Command(_) | Target::Webhook(_) => {
                    let idle_after = Duration::from_millis(
                        action.idle_after_ms.unwrap_or(DEFAULT_IDLE_AFTER_MS),
                    );
                    if !self.is_idle(owner, idle_after) {
                        // Active owners get their results piggybacked; look again once it may
                        // be idle.
                        let wait = lock(&self.inner.wake)
                            .activity
                            .get(owner)
                            .map_or(Duration::ZERO, |a| {
                                idle_after.saturating_sub(a.last.elapsed())
                            });
                        tokio::select! {
                            _ = tokio::time::sleep(wait.max(Duration::from_millis(50))) => {}
                            _ = signal.notified() => tokio::time::sleep(debounce).await,
                        }
                        continue;
                    }
                    let payload = WakePayload {
                        owner: owner.to_string(),
                        notifications: pending,
                    };
                    fire(&target, &payload).await
                }
            };
            match fired {
                Ok(()) => self.audit(&who, "wake", &target_text, None),
                Err(why) => {
                    tracing::warn!("wake of {owner} failed: {why}");
                    self.audit(&who, "wake", &target_text, Some(&format!("failed: {why}")));
                }
            }
            // Until the owner acknowledges, try again later, waiting longer each time; a new
            // result starts over (after the debounce, with the first backoff).
            tokio::select! {
                _ = tokio::time::sleep(backoff) => backoff = (backoff * 2).min(MAX_BACKOFF),
                _ = signal.notified() => {
                    tokio::time::sleep(debounce).await;
                    backoff = self.inner.settings.wake_backoff;
                }
            }
        }
    }

    /// Resumes `session` with `pending` as the prompt and waits for the turn to end: the
    /// results are held while it runs, acknowledged when it ends well, pending again when not.
    async fn resume_session(
        &self,
        owner: &str,
        session: &HostSession,
        pending: Vec<Notification>,
    ) -> std::result::Result<(), String> {
        let ids: Vec<String> = pending.iter().map(|n| n.id.to_string()).collect();
        let held = {
            let held = self
                .store()
                .hold_for_delivery(owner, &ids, Timestamp::now());
            held.map_err(|e| e.to_string())?
        };
        let carried: Vec<Notification> = pending
            .into_iter()
            .filter(|n| held.contains(&n.id.0))
            .collect();
        if carried.is_empty() {
            return Ok(());
        }
        let resume = hosts::resume(session, &crate::present::results_prompt(&carried));
        let outcome = self.run_resume(owner, &resume, &held).await;
        match &outcome {
            Ok(()) => {
                if let Err(e) = self.ack(owner, &held, false) {
                    tracing::error!(
                        "cannot acknowledge what the resumed session of {owner} got: {e}"
                    );
                }
            }
            Err(_) => {
                let released = self.store().release_delivery(&held);
                if let Err(e) = released {
                    tracing::error!("cannot make the results of {owner} pending again: {e}");
                }
            }
        }
        outcome
    }

    async fn run_resume(
        &self,
        owner: &str,
        resume: &hosts::Resume,
        held: &[String],
    ) -> std::result::Result<(), String> {
        if owner != aside_proto::HUMAN_OWNER {
            // What a wake runs for an agent is judged like anything the agent runs.
            let who = Requester::new(owner, None);
            let policy = self
                .agent_policy(&who, "wake", owner)
                .map_err(|e| e.to_string())?;
            if let Verdict::Refused(why) = policy.check_command(&Command::Argv(resume.argv.clone()))
            {
                return Err(format!("the policy refuses the resume command: {why}"));
            }
        }
        let log_path = self.inner.state.wake_log(owner);
        let log = open_wake_log(&log_path)
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        let mut command = tokio::process::Command::new(&resume.argv[0]);
        for marker in hosts::SESSION_MARKERS {
            command.env_remove(marker);
        }
        let mut child = command
            .args(&resume.argv[1..])
            .current_dir(&resume.cwd)
            .envs(&resume.env)
            .stdin(std::process::Stdio::piped())
            .stdout(log)
            .stderr(log_err)
            // Its own process group, so a turn that overruns is stopped with all it started.
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start {:?} in {}: {e}",
                    resume.argv[0],
                    resume.cwd.display()
                )
            })?;
        let pid = child.id();
        if let Some(pid) = pid {
            let start = crate::proc::stat(pid as i32).map_or(0, |s| s.starttime);
            let recorded = self.store().set_delivery_process(held, pid, start);
            if let Err(e) = recorded {
                tracing::error!("cannot record the resumed host of {owner}: {e}");
            }
        }
        let stdin = child.stdin.take();
        let turn = async {
            if let Some(mut stdin) = stdin {
                // A host that exits before reading its prompt fails below with its own status.
                if let Err(e) = stdin.write_all(resume.stdin.as_bytes()).await {
                    tracing::warn!("cannot write the prompt of {owner}'s resumed session: {e}");
                }
            }
            child.wait().await
        };
        let outcome = tokio::time::timeout(TURN_TIMEOUT, turn).await;
        match outcome {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(format!(
                "{:?} exited with {status} (its output: {})",
                resume.argv[0],
                log_path.display()
            )),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => {
                // The turn overran: its whole process group gets SIGTERM, then SIGKILL.
                let group = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32));
                let signal = |sig| {
                    if let Some(g) = group
                        && let Err(e) = rustix::process::kill_process_group(g, sig)
                    {
                        tracing::debug!("resumed host group of {owner}: {e}");
                    }
                };
                signal(rustix::process::Signal::TERM);
                if tokio::time::timeout(Duration::from_secs(5), child.wait())
                    .await
                    .is_err()
                {
                    signal(rustix::process::Signal::KILL);
                }
                Err(format!(
                    "the resumed turn took longer than {} s and was stopped",
                    TURN_TIMEOUT.as_secs()
                ))
            }
        }
    }

    /// Watches the host process of `owner`'s recorded session: when it ends and results are
    /// pending, the owner's wake worker looks again (a host wake resumes the session then).
    fn watch_host(&self, owner: &str, session: &HostSession) {
        let (Some(pid), Some(start)) = (session.pid, session.pid_start) else {
            return;
        };
        {
            let mut state = lock(&self.inner.wake);
            if state.hosts_watched.get(owner) == Some(&(pid, start)) {
                return;
            }
            state.hosts_watched.insert(owner.to_string(), (pid, start));
        }
        let Ok(exited) = process_exit(pid as i32) else {
            lock(&self.inner.wake).hosts_watched.remove(owner);
            return;
        };
        let me = self.clone();
        let owner = owner.to_string();
        tokio::spawn(async move {
            exited.await;
            {
                let mut state = lock(&me.inner.wake);
                if state.hosts_watched.get(&owner) == Some(&(pid, start)) {
                    state.hosts_watched.remove(&owner);
                }
            }
            if !me.wakeable(&owner).is_empty() {
                me.ensure_waker(&owner);
            }
        });
    }

    /// Records the host session `owner` speaks for. Agents may only record their own; the
    /// environment is cut down to the host's own settings. Errors: forbidden, invalid.
    pub fn set_host_session(
        &self,
        who: &Requester,
        owner: &str,
        mut session: HostSession,
    ) -> Result<HostSession> {
        self.authorize(
            who,
            crate::authz::Action::OwnerData {
                owner,
                change: true,
            },
        )?;
        if session.session_id.trim().is_empty() {
            return Err(Error::Invalid("session_id is empty".into()));
        }
        if !std::path::Path::new(&session.cwd).is_absolute() {
            return Err(Error::Invalid(format!(
                "cwd {:?} is not an absolute path",
                session.cwd
            )));
        }
        if let Some(p) = session.program.first()
            && !std::path::Path::new(p).is_absolute()
        {
            return Err(Error::Invalid(format!(
                "program {p:?} is not an absolute path (leave it empty to use the host's name on PATH)"
            )));
        }
        session.owner = owner.to_string();
        session.env = hosts::session_env(session.host, std::mem::take(&mut session.env));
        session.updated_at = Some(Timestamp::now());
        self.store().set_host_session(&session, Timestamp::now())?;
        self.watch_host(owner, &session);
        Ok(session)
    }

    /// The host session `owner` speaks for, if recorded.
    pub fn host_session(&self, owner: &str) -> Result<Option<HostSession>> {
        Ok(self.store().host_session(owner)?)
    }

    /// The host session recorded for host process `pid` (started at `start`): how an MCP
    /// server whose host names no session (Gemini CLI) finds the owner its host's hooks use.
    pub fn host_session_of_process(&self, pid: u32, start: u64) -> Result<Option<HostSession>> {
        Ok(self.store().host_session_of_process(pid, start)?)
    }

    /// After a restart: deliveries that were in flight when the last daemon stopped. A resumed
    /// host still running is waited for and then counts as delivered; one that ended meanwhile
    /// counts as delivered too (it had its prompt; its exit status is lost), so a session is
    /// never given the same results twice; one that never started is made pending again.
    fn recover_deliveries(&self) {
        let deliveries = match self.store().deliveries() {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("cannot read the wake deliveries in flight: {e}");
                return;
            }
        };
        for d in deliveries {
            let who = Requester::new(&d.owner, None);
            let target = format!("wake of {} ({} results)", d.owner, d.ids.len());
            match (d.pid, d.start) {
                (Some(pid), start) if crate::proc::is_alive(pid as i32, start) => {
                    let Ok(exited) = process_exit(pid as i32) else {
                        continue;
                    };
                    let me = self.clone();
                    tokio::spawn(async move {
                        exited.await;
                        if let Err(e) = me.ack(&d.owner, &d.ids, false) {
                            tracing::error!("cannot acknowledge a recovered delivery: {e}");
                        }
                        me.audit(&who, "wake", &target, None);
                    });
                }
                (Some(_), _) => {
                    if let Err(e) = self.ack(&d.owner, &d.ids, false) {
                        tracing::error!("cannot acknowledge a recovered delivery: {e}");
                    }
                    self.audit(
                        &who,
                        "wake",
                        &target,
                        Some("delivered while no daemon watched; the resumed turn's exit status is unknown"),
                    );
                }
                (None, _) => {
                    if let Err(e) = self.store().release_delivery(&d.ids) {
                        tracing::error!("cannot release a delivery that never started: {e}");
                    }
                }
            }
        }
    }
}

/// Opens (truncates) the wake log of one resume, 0600 in a 0700 directory.
fn open_wake_log(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// Runs a wake action once. The payload goes on stdin (command) or as the body (webhook):
/// never into an argument or a shell string.
async fn fire(target: &Target, payload: &WakePayload) -> std::result::Result<(), String> {
    let body = serde_json::to_vec(payload).map_err(|e| e.to_string())?;
    let run = async {
        if let Target::Command(argv) = target {
            let mut child = tokio::process::Command::new(&argv[0])
                .args(&argv[1..])
                .env("ASIDE_OWNER", &payload.owner)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot start {:?}: {e}", argv[0]))?;
            if let Some(mut stdin) = child.stdin.take() {
                // A command that does not read its stdin (a broken pipe) is fine.
                if let Err(e) = stdin.write_all(&body).await {
                    tracing::debug!("wake command {:?} did not take its stdin: {e}", argv[0]);
                }
            }
            let status = child.wait().await.map_err(|e| e.to_string())?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("{:?} exited with {status}", argv[0]))
            }
        } else if let Target::Webhook(url) = target {
            post(url, &body).await
        } else {
            Err("a host wake resumes a session; it is not fired as a command".into())
        }
    };
    tokio::time::timeout(FIRE_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", FIRE_TIMEOUT.as_secs())))
}

/// A minimal HTTP/1.1 POST of JSON; success is a 2xx status.
async fn post(url: &str, body: &[u8]) -> std::result::Result<(), String> {
    match request("POST", url, body).await? {
        code if (200..300).contains(&code) => Ok(()),
        code => Err(format!("webhook answered {code}")),
    }
}

/// A minimal HTTP/1.1 request (a JSON body when not empty) to an `http://` URL; returns the
/// answer's status code.
pub(super) async fn request(
    method: &str,
    url: &str,
    body: &[u8],
) -> std::result::Result<u16, String> {
    let (host, port, path) = parse_http_url(url).map_err(|e| e.to_string())?;
    let mut conn = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    conn.write_all(body).await.map_err(|e| e.to_string())?;
    let mut status = [0u8; 12];
    conn.read_exact(&mut status)
        .await
        .map_err(|e| format!("no HTTP answer: {e}"))?;
    let line = String::from_utf8_lossy(&status);
    line.get(9..12)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("not an HTTP answer: {line:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhooks_are_plain_http_urls() {
        assert_eq!(
            parse_http_url("http://127.0.0.1:8080/hook").unwrap(),
            ("127.0.0.1".into(), 8080, "/hook".into())
        );
        assert_eq!(
            parse_http_url("http://localhost").unwrap(),
            ("localhost".into(), 80, "/".into())
        );
        assert!(parse_http_url("https://example.test/x").is_err());
        assert!(parse_http_url("http://:80/").is_err());
    }
}
