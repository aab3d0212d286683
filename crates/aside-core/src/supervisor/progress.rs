//! Progress from inside a run (`aside progress`): checked against the run's token, kept as
//! the run's latest report and its history, and announced as `run_progress` events at most
//! every [`PROGRESS_EVERY`] per run, the latest report winning.

use std::time::Duration;

use jiff::Timestamp;

use super::{Error, RUN_TOKEN_VAR, Result, Supervisor, lock};

impl Supervisor {
    /// Records what run `run_id` says it is doing (from `aside progress` inside it, which
    /// proves itself with the run's `$ASIDE_RUN_TOKEN`), and announces it as a `run_progress`
    /// event — at most every 250 ms per run, the latest report winning. Errors: unknown or
    /// ended run, wrong token, text over 1000 characters or data over 4 KiB.
    pub fn report_progress(
        &self,
        run_id: &str,
        token: &str,
        text: &str,
        data: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<()> {
        let rd = self.run_dir(run_id);
        let own = rd
            .spec()
            .ok()
            .flatten()
            .and_then(|s| s.env.get(RUN_TOKEN_VAR).cloned());
        if own.as_deref() != Some(token) || token.is_empty() {
            return Err(Error::Forbidden(format!(
                "this progress report does not come from run {run_id} (its token does not match)"
            )));
        }
        if text.chars().count() > 1000 || text.contains('\0') {
            return Err(Error::Invalid(
                "progress text: one line of at most 1000 characters, no NUL".into(),
            ));
        }
        if data
            .as_ref()
            .is_some_and(|d| serde_json::Value::Object(d.clone()).to_string().len() > 4096)
        {
            return Err(Error::Invalid(
                "progress data: at most 4 KiB of JSON".into(),
            ));
        }
        let report = aside_proto::Progress {
            text: text.lines().next().unwrap_or("").to_string(),
            data,
            at: Timestamp::now(),
        };
        let now = std::time::Instant::now();
        let announce_now = {
            let mut last = lock(&self.inner.progress);
            match last.get(run_id) {
                Some(t) if now.duration_since(*t) < PROGRESS_EVERY => false,
                _ => {
                    last.insert(run_id.to_string(), now);
                    true
                }
            }
        };
        let (live, event) = self.store().set_progress(run_id, &report, announce_now)?;
        if !live {
            return Err(Error::NotFound(format!(
                "run {run_id} is not running: progress is for a run that is"
            )));
        }
        match event {
            Some(e) => self.publish(&[e]),
            None => self.announce_progress_later(run_id),
        }
        Ok(())
    }

    /// The report the throttle held back, announced once the interval is over (one pending
    /// announcement per run).
    pub(super) fn announce_progress_later(&self, run_id: &str) {
        if !lock(&self.inner.progress_pending).insert(run_id.to_string()) {
            return;
        }
        let me = self.clone();
        let run = run_id.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(PROGRESS_EVERY).await;
            lock(&me.inner.progress).insert(run.clone(), std::time::Instant::now());
            me.flush_progress(&run);
        });
    }

    /// Announces run `run_id`'s held-back progress report, if it has one (once).
    pub(super) fn flush_progress(&self, run_id: &str) {
        if !lock(&self.inner.progress_pending).remove(run_id) {
            return;
        }
        match self.store().announce_progress(run_id) {
            Ok(Some(e)) => self.publish(&[e]),
            // It ended meanwhile: its result is what is announced now.
            Ok(None) => {}
            Err(err) => tracing::warn!("run {run_id}: progress not announced: {err}"),
        }
    }

    /// Run `run_id`'s progress reports, newest first.
    pub fn progress_history(
        &self,
        run_id: &str,
        limit: usize,
    ) -> Result<Vec<aside_proto::Progress>> {
        Ok(self.store().progress_history(run_id, limit)?)
    }
}

/// At most one `run_progress` event per run in this interval.
pub(super) const PROGRESS_EVERY: Duration = Duration::from_millis(250);
