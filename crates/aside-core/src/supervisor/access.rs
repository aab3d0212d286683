//! Who may reach the daemon from outside its socket, and what the monitors show besides the
//! records: member tokens for the TCP listener (only a SHA-256 of each secret is stored),
//! the dashboard token, run history, and CPU and memory of process trees.

use std::collections::HashMap;
use std::time::Instant;

use aside_proto::{
    HUMAN_OWNER, ProcessInfo, ProcessStats, RunResult, TokenCreated, TokenInfo, TokenRequest,
};
use jiff::Timestamp;
use sha2::{Digest, Sha256};

use super::{Error, Result, Supervisor, lock, valid_name};
use crate::proc;
use crate::store::ListFilter;

/// Prefix of member tokens, so a leaked one is recognisable (as GitHub's `ghp_`).
const TOKEN_PREFIX: &str = "aside_";

/// `n` random bytes from the kernel (`getrandom(2)`), as `2 n` lowercase hex digits.
/// Errors: the kernel call failed.
pub fn random_hex(n: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        let got =
            rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty())?;
        filled += got;
    }
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// SHA-256 of `secret` as lowercase hex.
fn hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The previous CPU sample of each run: (run id → cpu ticks of its tree, when).
#[derive(Default)]
pub(super) struct CpuSamples(HashMap<String, (u64, Instant)>);

impl Supervisor {
    /// Makes a member token for `req.owner` and answers with its secret, which is not kept.
    /// Errors: an invalid owner or team name, or `human` (the local user needs no token; a
    /// remote person gets a name of their own).
    pub fn create_token(&self, req: &TokenRequest) -> Result<TokenCreated> {
        if !valid_name(&req.owner) {
            return Err(Error::Invalid(format!(
                "invalid owner {:?}: use letters, digits and - _ . : @ (at most 64)",
                req.owner
            )));
        }
        if req.owner == HUMAN_OWNER {
            return Err(Error::Invalid(
                "a token cannot act as `human` (who may do everything): give the member a name of their own, e.g. --owner alice".into(),
            ));
        }
        if let Some(t) = &req.team
            && !valid_name(t)
        {
            return Err(Error::Invalid(format!(
                "invalid team {t:?}: use letters, digits and - _ . : @ (at most 64)"
            )));
        }
        let rand =
            |n| random_hex(n).map_err(|e| Error::Io(format!("cannot read random bytes: {e}")));
        let id = rand(4)?;
        let token = format!("{TOKEN_PREFIX}{id}_{}", rand(24)?);
        let info = self
            .store()
            .insert_token(&id, &hash(&token), req, Timestamp::now())?;
        Ok(TokenCreated { token, info })
    }

    /// Every member token, revoked ones included.
    pub fn tokens(&self) -> Result<Vec<TokenInfo>> {
        Ok(self.store().tokens()?)
    }

    /// Revokes token `id` at once: requests carrying it are refused from now on.
    /// Errors: no such token.
    pub fn revoke_token(&self, id: &str) -> Result<TokenInfo> {
        self.store()
            .revoke_token(id, Timestamp::now())?
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "no token with id {id:?}: `aside token list` shows them"
                ))
            })
    }

    /// The member a bearer `secret` stands for, if it is a token that was not revoked.
    pub fn authenticate(&self, secret: &str) -> Result<Option<TokenInfo>> {
        if !secret.starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        Ok(self.store().use_token(&hash(secret), Timestamp::now())?)
    }

    /// Results of the ended runs of a process, newest first, at most `limit`.
    /// Errors: no such process.
    pub fn history(&self, reference: &str, limit: usize) -> Result<Vec<RunResult>> {
        let row = self.find(reference)?;
        Ok(self.store().history(&row.info.id, limit)?)
    }

    /// CPU and memory of the tree of every live process that `keep` accepts. CPU is the share
    /// of one core since the previous call (the run's average over its life on the first), as
    /// `top` shows it.
    pub fn stats(&self, keep: impl Fn(&ProcessInfo) -> bool) -> Result<Vec<ProcessStats>> {
        let live: Vec<_> = self
            .list(&ListFilter::default())?
            .into_iter()
            .filter(|p| !p.status.is_terminal() && keep(p))
            .filter_map(|p| Some((p.pid? as i32, p)))
            .collect();
        let roots: Vec<i32> = live.iter().map(|(pid, _)| *pid).collect();
        let usage = proc::tree_usage(&roots);
        let hz = proc::clock_ticks_per_second() as f64;
        let now = Instant::now();
        let mut samples = lock(&self.inner.cpu_samples);
        let mut next = HashMap::with_capacity(live.len());
        let mut out = Vec::with_capacity(live.len());
        for (pid, p) in live {
            let Some(u) = usage.get(&pid) else { continue };
            let cpu_seconds = match samples.0.get(p.run_id.as_str()) {
                Some(&(ticks, at)) => {
                    let elapsed = now.duration_since(at).as_secs_f64();
                    (elapsed > 0.0)
                        .then(|| (u.cpu_ticks.saturating_sub(ticks) as f64 / hz, elapsed))
                }
                None => {
                    let age = Timestamp::now().duration_since(p.started_at).as_secs_f64();
                    (age > 0.0).then(|| (u.cpu_ticks as f64 / hz, age))
                }
            };
            let cpu_percent =
                cpu_seconds.map_or(0.0, |(cpu, wall)| (cpu / wall * 1000.0).round() / 10.0);
            next.insert(p.run_id.to_string(), (u.cpu_ticks, now));
            out.push(ProcessStats {
                id: p.id.0,
                cpu_percent,
                memory_bytes: u.rss_bytes,
                tasks: u.tasks,
            });
        }
        samples.0 = next;
        Ok(out)
    }
}
