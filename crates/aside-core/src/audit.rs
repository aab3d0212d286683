//! `AuditLog`: an append-only record of who stopped, restarted or was refused what, and when.
//!
//! One JSON object per line in `audit.log` in the state directory (0600):
//! `{"ts": "…", "who": "agent-1", "via": "token:3f9a1c2e", "action": "run", "target": "…", "outcome": "refused", "reason": "…"}`.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Mutex;

use jiff::Timestamp;
use serde::Serialize;

/// One audit record.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry<'a> {
    /// When.
    pub ts: Timestamp,
    /// Who asked (an owner).
    pub who: &'a str,
    /// How the request came: `socket` (default), `web` (the dashboard), `token:ID` (a member).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<&'a str>,
    /// `run`, `stop`, `restart`, `stop-all`.
    pub action: &'a str,
    /// The process (name or id) or command concerned.
    pub target: &'a str,
    /// `done` or `refused`.
    pub outcome: &'a str,
    /// Why it was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
}

/// The audit log of one state directory.
pub struct AuditLog {
    path: PathBuf,
    lock: Mutex<()>,
}

impl AuditLog {
    /// The log at `path` (created on first write).
    pub fn new(path: PathBuf) -> AuditLog {
        AuditLog {
            path,
            lock: Mutex::new(()),
        }
    }

    /// Appends `entry`; a failure is logged, never returned: auditing must not block the
    /// operation it records.
    pub fn append(&self, entry: &AuditEntry<'_>) {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut line = serde_json::to_vec(entry).unwrap_or_default();
        line.push(b'\n');
        let written = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)
            .and_then(|mut f| f.write_all(&line));
        if let Err(e) = written {
            tracing::error!("cannot write the audit log {}: {e}", self.path.display());
        }
    }
}
