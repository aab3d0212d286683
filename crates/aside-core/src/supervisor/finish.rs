//! Ending runs: a shim's exit record (or its absence) turned into exactly one result, one
//! inbox notification and their events, in one transaction; what a run left behind killed;
//! a finish the database refused (a full disk) retried until it lands.

use std::fs;
use std::path::Path;
use std::time::Duration;

use aside_proto::{RunResult, Status};

use crate::logs::{self, LogReader};
use crate::proc;
use crate::rundir::{ExitRecord, RunDir};
use crate::store::{ProcessRow, RunEnd};

use super::{RESULT_HEAD_BYTES, RESULT_TAIL_BYTES, Supervisor, lock};

impl Supervisor {
    /// What `process.json` says of run `run_id`: its process, from the store (`None`, logged,
    /// when it cannot be read: the run goes on without the file).
    pub(super) fn process_record(&self, run_id: &str) -> Option<crate::rundir::ProcessRecord> {
        match self.store().process_record(run_id) {
            Ok(record) => record,
            Err(e) => {
                tracing::warn!("run {run_id}: cannot read its process for process.json: {e}");
                None
            }
        }
    }

    pub(super) fn finish_without_shim(
        &self,
        run_id: &str,
        status: Status,
        error: String,
    ) -> Option<(ProcessRow, RunResult)> {
        tracing::warn!("run {run_id}: {error}");
        self.record_finish(run_id, RunEnd::without_shim(status, error), None)
    }

    /// Called once the run's shim is gone: turns its exit record (or its absence) into the
    /// result and notification, then applies the restart policy. Idempotent.
    pub(super) fn finalize(&self, run_id: &str) {
        let rd = self.run_dir(run_id);
        match rd.exit() {
            Ok(Some(exit)) => self.end_and_restart(run_id, RunEnd::from_exit(&exit), Some(&exit)),
            other => {
                let mut why = match other {
                    Err(e) => format!("its exit record is unreadable ({e})"),
                    _ => "its shim ended without recording an exit status".to_string(),
                };
                if let Some(last) = last_line(&rd.path().join(crate::rundir::SHIM_LOG)) {
                    why.push_str(&format!(" (the shim said: {last})"));
                }
                let killed = self.kill_leftovers(&rd);
                let mut msg = format!("result unknown: {why}");
                if killed > 0 {
                    msg.push_str(&format!("; SIGKILL to {killed} leftover processes"));
                }
                tracing::warn!("run {run_id}: {msg}");
                self.end_and_restart(run_id, RunEnd::without_shim(Status::Abandoned, msg), None);
            }
        }
    }

    /// Records a run's end (see [`Supervisor::record_finish`]) and, when this call recorded it
    /// (exactly once per run), applies its process's restart policy.
    pub(super) fn end_and_restart(&self, run_id: &str, end: RunEnd, exit: Option<&ExitRecord>) {
        if let Some((row, result)) = self.record_finish(run_id, end, exit)
            && row.spec.restart.is_some()
        {
            self.consider_restart(row, &result);
        }
    }

    /// Kills what is left of a run whose shim is gone: the members of its session that started
    /// no earlier than it did.
    pub(super) fn kill_leftovers(&self, rd: &RunDir) -> usize {
        let (sid, since) = match rd.shim() {
            Ok(Some(shim)) => (shim.pid, shim.starttime),
            // A damaged shim.json: the command may still be found by its shim's argv.
            _ => match proc::find_shim(rd.path()) {
                Some((_, Some(command))) => (command.pid, command.starttime),
                _ => return 0,
            },
        };
        let members = proc::session_members(sid, since);
        proc::signal_all(members.iter().map(|p| p.pid), libc::SIGKILL)
    }

    /// Writes a run's result and notification; returns its process (as loaded before) and the
    /// result when this call wrote them, `None` when the run was already terminal or the
    /// write failed.
    pub(super) fn record_finish(
        &self,
        run_id: &str,
        finish: RunEnd,
        exit: Option<&ExitRecord>,
    ) -> Option<(ProcessRow, RunResult)> {
        let rd = self.run_dir(run_id);
        let row = {
            let store = self.store();
            lock(&self.inner.live)
                .get(run_id)
                .map(|l| l.process_id.clone())
                .map_or_else(|| store.find_by_run(run_id), |pid| store.find(&pid))
        };
        let row = match row {
            Ok(Some(r)) => r,
            Ok(None) => {
                tracing::error!("run {run_id} finished but its process is not in the database");
                self.end_live(run_id, &rd);
                return None;
            }
            Err(e) => {
                tracing::error!("run {run_id}: cannot load its process: {e}");
                return None;
            }
        };
        let mut output = logs::summarize(
            &LogReader::new(&rd.log_dir()),
            RESULT_HEAD_BYTES,
            RESULT_TAIL_BYTES,
        )
        .unwrap_or_default();
        if let Some(exit) = exit {
            output.stdout_bytes = exit.stdout_bytes;
            output.stderr_bytes = exit.stderr_bytes;
        }
        let started_at = row.info.started_at;
        let result = RunResult {
            run_id: run_id.into(),
            process_id: row.info.id.clone(),
            name: row.info.name.clone(),
            owner: row.info.owner.clone(),
            team: row.info.team.clone(),
            command: row.info.command.clone(),
            cwd: row.info.cwd.clone(),
            status: finish.status,
            exit_code: finish.exit_code,
            signal: finish.signal.map(proc::signal_name),
            started_at,
            ended_at: finish.ended_at,
            duration_ms: finish
                .ended_at
                .duration_since(started_at)
                .as_millis()
                .max(0) as u64,
            stopped_by: finish.stopped_by.clone(),
            error: finish.error.clone(),
            output,
            log_dir: rd.log_dir().display().to_string(),
        };
        // A report the throttle held back is announced before the end, in order.
        self.flush_progress(run_id);
        lock(&self.inner.progress).remove(run_id);
        let written = {
            let mut store = self.store();
            let written = store.finish_run(run_id, &finish, &result, &row.info.owner);
            if let Ok(Some(events)) = &written {
                self.publish(events);
            }
            written
        };
        let recorded = match written {
            Ok(Some(_)) => {
                tracing::info!("run {run_id} ({}) {}", row.info.name, finish.status);
                true
            }
            Ok(None) => false,
            Err(e) => {
                // The run stays live, and its waiters wait: the result is on disk (exit.json)
                // and is recorded as soon as the database takes it (a disk with space again);
                // a daemon restarted meanwhile reconciles it from there.
                let why = format!("its result could not be recorded yet ({e}); retrying");
                tracing::error!("run {run_id}: {why}");
                let attempt = {
                    let mut u = lock(&self.inner.unrecorded);
                    let first = !u.contains_key(run_id);
                    u.insert(run_id.to_string(), why);
                    first
                };
                self.retry_finalize(run_id, attempt);
                return None;
            }
        };
        lock(&self.inner.unrecorded).remove(run_id);
        self.end_live(run_id, &rd);
        recorded.then_some((row, result))
    }

    /// Tries to record run `run_id`'s result again later, every second at first and every 30 s
    /// at most, until it is recorded (one retry loop per run: `first` starts it).
    pub(super) fn retry_finalize(&self, run_id: &str, first: bool) {
        if !first {
            return;
        }
        let me = self.clone();
        let run = run_id.to_string();
        tokio::spawn(async move {
            let mut wait = Duration::from_secs(1);
            // A failed attempt marks the run unrecorded again; a recorded one unmarks it.
            while lock(&me.inner.unrecorded).contains_key(&run) {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
                me.finalize(&run);
            }
        });
    }

    pub(super) fn end_live(&self, run_id: &str, rd: &RunDir) {
        if let Some(live) = lock(&self.inner.live).remove(run_id) {
            live.done.send_replace(true);
        }
        self.unwatch_logs(run_id, &rd.log_dir());
    }
}

/// The last non-empty line of a small text file (the shim's own log), if any.
pub(super) fn last_line(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.chars().take(500).collect())
}
