//! Runs on a cluster (the Slurm executor): submitted as a batch job that runs the same shim on a
//! compute node, writing the same run directory (which must be on a filesystem the nodes
//! share), so that logs, follows, caps, timeouts, stop requests and the exit record work as for
//! a local run. What differs is watched here: one poller asks Slurm (`squeue --json`, then
//! `sacct -c` for jobs the controller forgot) about every live job every [`POLL`], shows
//! `queued` with Slurm's reason while the job waits, `running` once the shim wrote `shim.json`,
//! and finishes a run from its exit record — or, when the job ended without one (cancelled
//! before it ran, preempted, out of time, a failed node), from Slurm's account of it. The job
//! id is in the run directory (`job.json`) and the job named after its run, so a daemon that
//! was down picks every job up again.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use aside_proto::{Job, SlurmResources, Spec, Status};

use crate::rundir::{CONTROL_FILE, ExitRecord, RunDir, StopControl};
use crate::slurm::{self, JOB_FILE, JobRecord, JobState, Verdict};
use crate::store::RunEnd;

use super::{Error, Requester, Result, Supervisor, lock};

/// How often live jobs are looked at.
const POLL: Duration = Duration::from_millis(500);
/// How long a job Slurm says ended may go without an exit record before it is finished from
/// Slurm's account (the shim writes its record last; a shared filesystem may show it late).
const EXIT_RECORD_WAIT: Duration = Duration::from_secs(3);
/// How long a job may be unknown to both `squeue` and `sacct` before its run is `abandoned`.
const UNKNOWN_LIMIT: Duration = Duration::from_secs(60);

/// A live run's job, as the poller follows it.
#[derive(Debug, Default)]
pub(super) struct WatchedJob {
    /// Slurm's job id; `None` until found by the job's name (its `job.json` was never written).
    job_id: Option<String>,
    /// Since when Slurm says it ended (waiting for the exit record).
    ended_since: Option<Instant>,
    /// Since when neither `squeue` nor `sacct` knows it.
    unknown_since: Option<Instant>,
    /// Whether its shim was seen running (its readiness probe starts then: `ready` follows
    /// `running`).
    seen_running: bool,
}

/// `--time` for a run's timeout: the timeout and the grace, rounded up to whole minutes, plus
/// one, so that aside's own timeout (in the shim) acts first and Slurm's limit only catches a
/// shim that could not.
fn time_limit_min(spec: &Spec) -> Option<u64> {
    let ms = spec.timeout_ms?.saturating_add(spec.grace_ms);
    Some(ms.div_ceil(60_000) + 1)
}

/// A run's end with Slurm's verdict on its job over it (the exit code and signal stay the
/// shim's): `stopped` by Slurm, `timed_out` or `failed` with what Slurm said.
fn judged(end: RunEnd, verdict: Option<Verdict>) -> RunEnd {
    match verdict {
        None | Some(Verdict::Own) => end,
        Some(Verdict::Stopped { by }) => RunEnd {
            status: Status::Stopped,
            stopped_by: Some(by),
            ..end
        },
        Some(Verdict::TimedOut { why }) => RunEnd {
            status: Status::TimedOut,
            stopped_by: None,
            error: Some(why),
            ..end
        },
        Some(Verdict::Failed { why }) => RunEnd {
            status: Status::Failed,
            stopped_by: None,
            error: Some(why),
            ..end
        },
    }
}

impl Supervisor {
    /// Submits run `run_id` (its directory prepared) as a Slurm job and follows it; a refused
    /// submission is the run's result (`failed`, with what `sbatch` said).
    pub(super) async fn submit_job(
        &self,
        run_id: &str,
        rd: &RunDir,
        spec: &Spec,
        r: &SlurmResources,
    ) {
        let mut shim = self.inner.settings.shim_command.clone();
        shim.push(rd.path().as_os_str().to_owned());
        let submitted = slurm::submit(&slurm::Submission {
            run_id,
            run_dir: rd.path(),
            shim,
            cwd: &spec.cwd,
            resources: r,
            time_limit_min: time_limit_min(spec),
        })
        .await;
        let job_id = match submitted {
            Ok(id) => id,
            Err(e) => {
                self.finish_without_shim(
                    run_id,
                    Status::Failed,
                    format!("could not submit the job to Slurm: {e}"),
                );
                return;
            }
        };
        if let Err(e) = rd.write(
            JOB_FILE,
            &JobRecord {
                job_id: job_id.clone(),
            },
        ) {
            // Found again by its name after a restart.
            tracing::error!("run {run_id}: cannot write {JOB_FILE} for job {job_id}: {e}");
        }
        let job = Job {
            executor: "slurm".into(),
            id: job_id.clone(),
            state: Some("PENDING".into()),
            reason: None,
            node: None,
        };
        self.record_job(run_id, &job, true);
        self.follow_job(run_id, Some(job_id));
    }

    /// Adds a run's job to the poller (started if it is not running), and watches its run
    /// directory for the exit record (a shared filesystem may not tell: then the poll does).
    pub(super) fn follow_job(&self, run_id: &str, job_id: Option<String>) {
        if let Some(w) = lock(&self.inner.watcher).as_mut() {
            use notify::Watcher;
            let dir = self.run_dir(run_id);
            if let Err(e) = w.watch(dir.path(), notify::RecursiveMode::NonRecursive) {
                tracing::debug!("cannot watch {}: {e}", dir.path().display());
            }
        }
        lock(&self.inner.jobs).insert(
            run_id.to_string(),
            WatchedJob {
                job_id,
                ..WatchedJob::default()
            },
        );
        if self.inner.jobs_polling.swap(true, Ordering::SeqCst) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move { me.poll_jobs().await });
    }

    /// Takes a run's job off the poller and its run directory off the watcher.
    fn unfollow_job(&self, run_id: &str) {
        lock(&self.inner.jobs).remove(run_id);
        if let Some(w) = lock(&self.inner.watcher).as_mut() {
            use notify::Watcher;
            let dir = self.run_dir(run_id);
            if let Err(e) = w.unwatch(dir.path()) {
                tracing::debug!("unwatch {}: {e}", dir.path().display());
            }
        }
    }

    /// After a restart: an unfinished run on Slurm is followed again (its job from `job.json`,
    /// or by its name).
    pub(super) fn reattach_job(&self, run_id: &str, process_id: &str) {
        let rd = self.run_dir(run_id);
        self.register_live(run_id, process_id);
        self.watch_logs(run_id, &rd.log_dir());
        let job_id = rd
            .read::<JobRecord>(JOB_FILE)
            .ok()
            .flatten()
            .map(|j| j.job_id);
        self.follow_job(run_id, job_id);
    }

    async fn poll_jobs(&self) {
        let mut last_error: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = self.inner.jobs_wake.notified() => {}
            }
            let runs: Vec<(String, Option<String>)> = lock(&self.inner.jobs)
                .iter()
                .map(|(r, j)| (r.clone(), j.job_id.clone()))
                .collect();
            if runs.is_empty() {
                self.inner.jobs_polling.store(false, Ordering::SeqCst);
                // A job added between the listing and the flag has a poller again.
                if lock(&self.inner.jobs).is_empty()
                    || self.inner.jobs_polling.swap(true, Ordering::SeqCst)
                {
                    return;
                }
                continue;
            }
            let listing = match slurm::jobs().await {
                Ok(l) => l,
                Err(e) => {
                    if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                        tracing::warn!("cannot ask Slurm about its jobs ({e}); trying again");
                        last_error = Some(Instant::now());
                    }
                    // Exit records still finish runs while Slurm does not answer.
                    for (run_id, _) in &runs {
                        self.finish_job_if_recorded(run_id, None, None);
                    }
                    continue;
                }
            };
            for (run_id, job_id) in runs {
                self.check_job(&run_id, job_id, &listing).await;
            }
        }
    }

    /// Finishes a run whose shim wrote its exit record (with the job's last state, when
    /// known, and Slurm's verdict when Slurm ended it); true when it did. A run that ended
    /// between two polls is marked running first, so its pid and start are the shim's.
    fn finish_job_if_recorded(
        &self,
        run_id: &str,
        last: Option<&Job>,
        verdict: Option<Verdict>,
    ) -> bool {
        match self.run_dir(run_id).exit() {
            Ok(Some(exit)) => {
                self.finish_job_recorded(run_id, &exit, last, verdict);
                true
            }
            _ => false,
        }
    }

    /// [`Supervisor::finish_job_if_recorded`] with the exit record read.
    fn finish_job_recorded(
        &self,
        run_id: &str,
        exit: &ExitRecord,
        last: Option<&Job>,
        verdict: Option<Verdict>,
    ) {
        let rd = self.run_dir(run_id);
        self.unfollow_job(run_id);
        if let Ok(Some(shim)) = rd.shim()
            && let Err(e) = self.set_running(run_id, shim.pid, shim.started_at)
        {
            tracing::error!("run {run_id}: cannot record pid {}: {e}", shim.pid);
        }
        if let Some(job) = last
            && let Err(e) = self.store().set_final_job(run_id, job)
        {
            tracing::warn!("run {run_id}: cannot record its job's last state: {e}");
        }
        let end = judged(RunEnd::from_exit(exit), verdict);
        self.end_and_restart(run_id, end, Some(exit));
    }

    /// Whether a run whose shim recorded its exit may have been ended by Slurm rather than
    /// by itself or aside: a stop that aside did not ask for (Slurm's SIGTERM to the shim on
    /// `scancel`, preemption or the time limit) or a signal to the command.
    fn ended_from_outside(&self, run_id: &str, exit: &ExitRecord) -> bool {
        let asked = matches!(
            self.run_dir(run_id).read::<StopControl>(CONTROL_FILE),
            Ok(Some(_))
        );
        !asked && (exit.stop.is_some() || exit.signal.is_some())
    }

    /// Finishes a run with an exit record, with Slurm's word on the job when Slurm may have
    /// ended it (`sacct -c` has a job as soon as it ended; waited for up to
    /// [`EXIT_RECORD_WAIT`]). False when it has no exit record yet.
    async fn finish_recorded_job(&self, run_id: &str, job_id: &str, last: Option<Job>) -> bool {
        let Ok(Some(exit)) = self.run_dir(run_id).exit() else {
            return false;
        };
        if !self.ended_from_outside(run_id, &exit) {
            let settled = last.as_ref().is_some_and(|j| slurm::verdict(j).is_some());
            self.finish_job_recorded(run_id, &exit, last.as_ref(), None);
            if !settled {
                self.settle_final_job(run_id, job_id);
            }
            return true;
        }
        // `sacct` first: it says who cancelled a job.
        let accounted = match slurm::accounting(job_id).await {
            Ok(state) => state.map(|s| s.job(job_id)),
            Err(e) => {
                tracing::debug!("run {run_id}: sacct: {e}");
                None
            }
        };
        let ended = [accounted, last.clone()]
            .into_iter()
            .flatten()
            .find_map(|job| slurm::verdict(&job).map(|v| (Some(job), v)));
        match ended {
            Some((job, v)) => self.finish_job_recorded(run_id, &exit, job.as_ref(), Some(v)),
            None if self.waited_for_slurm(run_id) => {
                self.finish_job_recorded(run_id, &exit, last.as_ref(), None)
            }
            // Slurm's word comes on a later poll.
            None => {}
        }
        true
    }

    /// After a run's end from its exit record while Slurm still had its job `RUNNING` or
    /// `COMPLETING` (the shim writes its record, then the batch step ends): records the
    /// job's final state once `sacct` has it (looked for every 200 ms, for up to 10 s), so that
    /// the run does not show its job `COMPLETING` for ever.
    fn settle_final_job(&self, run_id: &str, job_id: &str) {
        let (me, run_id, job_id) = (self.clone(), run_id.to_string(), job_id.to_string());
        tokio::spawn(async move {
            for _ in 0..50 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                match slurm::accounting(&job_id).await {
                    Ok(Some(state)) if matches!(state, JobState::Ended { .. }) => {
                        if let Err(e) = me.store().set_final_job(&run_id, &state.job(&job_id)) {
                            tracing::warn!("run {run_id}: cannot record job {job_id}'s end: {e}");
                        }
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!("run {run_id}: sacct: {e}"),
                }
            }
            tracing::debug!("run {run_id}: sacct had no end of job {job_id} within 10 s");
        });
    }

    /// Whether a run has waited [`EXIT_RECORD_WAIT`] for Slurm to say how its job ended
    /// (or its exit record, the other way round); starts the wait.
    fn waited_for_slurm(&self, run_id: &str) -> bool {
        let mut jobs = lock(&self.inner.jobs);
        jobs.get_mut(run_id).is_none_or(|w| {
            w.ended_since.get_or_insert_with(Instant::now).elapsed() >= EXIT_RECORD_WAIT
        })
    }

    async fn check_job(
        &self,
        run_id: &str,
        job_id: Option<String>,
        listing: &HashMap<String, (String, JobState)>,
    ) {
        let job_id = match job_id {
            Some(id) => id,
            None => {
                let name = slurm::job_name(run_id);
                match listing.iter().find(|(_, (n, _))| *n == name) {
                    Some((id, _)) => {
                        let rd = self.run_dir(run_id);
                        if let Err(e) = rd.write(JOB_FILE, &JobRecord { job_id: id.clone() }) {
                            tracing::warn!("run {run_id}: cannot write {JOB_FILE}: {e}");
                        }
                        if let Some(w) = lock(&self.inner.jobs).get_mut(run_id) {
                            w.job_id = Some(id.clone());
                        }
                        id.clone()
                    }
                    None => {
                        self.job_unknown(
                            run_id,
                            "its job id was never recorded and no job is named after it",
                        );
                        return;
                    }
                }
            }
        };
        let listed = listing.get(&job_id).map(|(_, s)| s.clone());
        let last = listed.as_ref().map(|s| s.job(&job_id));
        if self.finish_recorded_job(run_id, &job_id, last).await {
            return;
        }
        let state = match listed {
            Some(s) => Some(s),
            None => match slurm::accounting(&job_id).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!("run {run_id}: sacct: {e}");
                    None
                }
            },
        };
        let Some(state) = state else {
            self.job_unknown(
                run_id,
                &format!("Slurm knows no job {job_id} (neither squeue nor sacct)"),
            );
            return;
        };
        let job = state.job(&job_id);
        match state {
            JobState::Waiting { .. } => self.record_job(run_id, &job, true),
            JobState::Running { .. } => {
                self.record_job(run_id, &job, false);
                if let Ok(Some(shim)) = self.run_dir(run_id).shim() {
                    if let Err(e) = self.set_running(run_id, shim.pid, shim.started_at) {
                        tracing::error!("run {run_id}: cannot record pid {}: {e}", shim.pid);
                    }
                    self.probe_once_running(run_id);
                }
            }
            JobState::Ended { .. } => {
                if self.waited_for_slurm(run_id) {
                    self.finish_job_from_slurm(run_id, &job);
                }
            }
        }
    }

    /// Starts a run's readiness probe the first time its shim is seen running (not for a run
    /// that was ready before a restart).
    fn probe_once_running(&self, run_id: &str) {
        let first = lock(&self.inner.jobs)
            .get_mut(run_id)
            .is_some_and(|w| !std::mem::replace(&mut w.seen_running, true));
        if !first {
            return;
        }
        match self.store().find_by_run(run_id) {
            Ok(Some(row)) if row.info.status != Status::Ready => {
                if let Some(probe) = &row.spec.ready {
                    self.probe_readiness(run_id, &row.spec, probe.clone());
                }
            }
            Ok(_) => {}
            Err(e) => tracing::error!("run {run_id}: cannot load its process: {e}"),
        }
    }

    fn job_unknown(&self, run_id: &str, why: &str) {
        let since = {
            let mut jobs = lock(&self.inner.jobs);
            let Some(w) = jobs.get_mut(run_id) else {
                return;
            };
            *w.unknown_since.get_or_insert_with(Instant::now)
        };
        if since.elapsed() < UNKNOWN_LIMIT {
            return;
        }
        self.unfollow_job(run_id);
        let msg = format!("result unknown: {why}");
        tracing::warn!("run {run_id}: {msg}");
        self.end_and_restart(run_id, RunEnd::without_shim(Status::Abandoned, msg), None);
    }

    /// A job that ended without an exit record: its run's end from Slurm's state — `stopped`
    /// when aside asked for the stop (Slurm may say `CANCELLED`, `FAILED 143:0` or `0:15`
    /// then), else Slurm's [`Verdict`]; `abandoned` when Slurm says `COMPLETED` or `FAILED`
    /// (the shim ended by itself without its record: what it said last, in the batch output
    /// `shim.log`, is quoted).
    fn finish_job_from_slurm(&self, run_id: &str, job: &Job) {
        self.unfollow_job(run_id);
        if let Err(e) = self.store().set_final_job(run_id, job) {
            tracing::warn!("run {run_id}: cannot record its job's last state: {e}");
        }
        let rd = self.run_dir(run_id);
        let state = job.state.as_deref().unwrap_or("UNKNOWN");
        let said = format!("Slurm ended job {} as {state}", job.id);
        let end = match (
            rd.read::<StopControl>(CONTROL_FILE).ok().flatten(),
            slurm::verdict(job),
        ) {
            (Some(stop), _) => RunEnd {
                stopped_by: Some(stop.requested_by),
                ..RunEnd::without_shim(Status::Stopped, said)
            },
            (None, Some(Verdict::Own)) => {
                let mut why =
                    format!("result unknown: {said}, but its shim recorded no exit status");
                if let Some(last) =
                    super::finish::last_line(&rd.path().join(crate::rundir::SHIM_LOG))
                {
                    why.push_str(&format!(" (the shim said: {last})"));
                }
                RunEnd::without_shim(Status::Abandoned, why)
            }
            (None, v) => judged(RunEnd::without_shim(Status::Failed, said), v),
        };
        tracing::warn!(
            "run {run_id}: {}",
            end.error
                .as_deref()
                .or(end.stopped_by.as_deref())
                .unwrap_or(state)
        );
        self.end_and_restart(run_id, end, None);
    }

    /// Records a job's state on its run (and says so when a queued run's changed).
    fn record_job(&self, run_id: &str, job: &Job, queued: bool) {
        let event = self.store().set_job(run_id, job, queued);
        match event {
            Ok(Some(e)) => self.publish(std::slice::from_ref(&e)),
            Ok(None) => {}
            Err(e) => tracing::error!("run {run_id}: cannot record job {}: {e}", job.id),
        }
    }

    /// Stops a run on Slurm: the stop request goes into its run directory as for a local run;
    /// a job whose shim runs gets SIGUSR1 (`scancel --batch`, the batch step is the shim) and
    /// stops its tree with the grace; one still queued is cancelled. Waits for its end.
    pub(super) async fn stop_job(
        &self,
        row: crate::store::ProcessRow,
        signal: i32,
        grace_ms: u64,
        who: &Requester,
    ) -> Result<aside_proto::ProcessInfo> {
        let run_id = row.info.run_id.to_string();
        let Some(mut done) = lock(&self.inner.live)
            .get(run_id.as_str())
            .map(|l| l.done.subscribe())
        else {
            return Ok(self.find(&row.info.id)?.info);
        };
        let rd = self.run_dir(&run_id);
        let job_id = lock(&self.inner.jobs)
            .get(&run_id)
            .and_then(|w| w.job_id.clone())
            .or_else(|| {
                rd.read::<JobRecord>(JOB_FILE)
                    .ok()
                    .flatten()
                    .map(|j| j.job_id)
            });
        let Some(job_id) = job_id else {
            return Err(Error::Conflict(format!(
                "{} has no Slurm job id yet (it is being submitted): try again in a moment",
                row.info.reference()
            )));
        };
        self.write_stop_request(&rd, signal, grace_ms, who)?;
        let sent = if matches!(rd.shim(), Ok(Some(_))) {
            slurm::signal_batch(&job_id, "USR1").await
        } else {
            slurm::cancel(&job_id).await
        };
        sent.map_err(|e| Error::Io(format!("cannot stop Slurm job {job_id}: {e}")))?;
        self.audit(who, "stop", &row.info.reference(), None);
        if done.wait_for(|d| *d).await.is_err() {
            tracing::debug!("{}: finished while stopping", row.info.reference());
        }
        Ok(self.find(&row.info.id)?.info)
    }
}
