//! Waking idle owners: when a result arrives for an owner that registered a wake action and
//! has been idle (no API request for `idle_after_ms`, or marked idle), run its command with the
//! pending results as JSON on stdin, or POST them to its webhook. Debounced and batched (one
//! worker per owner), retried with exponential backoff until the results are acknowledged or
//! the owner is active again; results of runs the owner stopped itself never wake it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aside_proto::{Command, EventKind, Notification, WakeAction, WakePayload};
use jiff::Timestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use super::{Error, Requester, Result, Supervisor, lock};
use crate::policy::Verdict;

/// Default idle time after which an owner may be woken: 60 s.
pub const DEFAULT_IDLE_AFTER_MS: u64 = 60_000;
/// Longest wait between two wake attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// Longest a wake command or webhook may take.
const FIRE_TIMEOUT: Duration = Duration::from_secs(60);

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
}

fn validate(action: &WakeAction) -> Result<()> {
    match (&action.command, &action.webhook) {
        (Some(argv), None) if argv.first().is_some_and(|p| !p.is_empty()) => Ok(()),
        (Some(_), None) => Err(Error::Invalid(
            "the wake command is empty: give a program and its arguments".into(),
        )),
        (None, Some(url)) => parse_http_url(url).map(|_| ()),
        _ => Err(Error::Invalid(
            "a wake action is either a command (argv) or a webhook (URL), exactly one of them"
                .into(),
        )),
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
        validate(&action)?;
        if !who.is_human() {
            let target = format!("wake for {owner}");
            if who.owner != owner {
                return self.refuse(
                    who,
                    "wake",
                    &target,
                    format!("{} may not set the wake action of {owner}", who.owner),
                );
            }
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
        if !who.is_human() && who.owner != owner {
            return self.refuse(
                who,
                "wake",
                owner,
                format!("{} may not clear the wake action of {owner}", who.owner),
            );
        }
        Ok(self.store().clear_wake(owner)?)
    }

    /// Starts waking: one task follows the event log for new results, and owners with results
    /// pending from before a restart get a worker now.
    pub fn start_waker(&self) {
        let me = self.clone();
        let mut rx = self.subscribe_events();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(e) if e.kind == EventKind::NotificationCreated => {
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

    /// Results that may wake `owner`: unacknowledged, and not of runs it stopped itself.
    fn wakeable(&self, owner: &str) -> Vec<Notification> {
        self.store()
            .inbox(owner)
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
            let idle_after =
                Duration::from_millis(action.idle_after_ms.unwrap_or(DEFAULT_IDLE_AFTER_MS));
            let pending = self.wakeable(owner);
            if pending.is_empty() {
                return;
            }
            if !self.is_idle(owner, idle_after) {
                // Active owners get their results piggybacked; look again once it may be idle.
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
            let who = Requester::new(owner, None);
            let target = format!("wake of {owner} ({} results)", payload.notifications.len());
            match fire(&action, &payload).await {
                Ok(()) => self.audit(&who, "wake", &target, None),
                Err(why) => {
                    tracing::warn!("wake of {owner} failed: {why}");
                    self.audit(&who, "wake", &target, Some(&format!("failed: {why}")));
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
}

/// Runs a wake action once. The payload goes on stdin (command) or as the body (webhook):
/// never into an argument or a shell string.
async fn fire(action: &WakeAction, payload: &WakePayload) -> std::result::Result<(), String> {
    let body = serde_json::to_vec(payload).map_err(|e| e.to_string())?;
    let run = async {
        if let Some(argv) = &action.command {
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
                // A command that does not read its stdin is fine.
                let _ = stdin.write_all(&body).await;
            }
            let status = child.wait().await.map_err(|e| e.to_string())?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("{:?} exited with {status}", argv[0]))
            }
        } else if let Some(url) = &action.webhook {
            post(url, &body).await
        } else {
            Err("no command or webhook".into())
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
