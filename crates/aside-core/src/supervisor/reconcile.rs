//! After a daemon restart (`kill -9` included): every run the database thinks live is
//! re-attached (its shim alive), finished (its exit record on disk) or `abandoned` (neither, with
//! what is left of its session killed); old ended runs pruned.

use aside_proto::Status;
use jiff::Timestamp;

use crate::proc;
use crate::rundir::RunDir;

use super::{Result, ShimRef, Supervisor, lock, open_pidfd, pidfd_exit, remove_run_dir};

impl Supervisor {
    /// Accounts for every run not yet terminal after a (re)start: shim alive → re-attach;
    /// exit record → result; neither → `abandoned` with its leftovers killed. Returns how many
    /// runs were re-attached.
    pub fn reconcile(&self) -> Result<usize> {
        let runs = self.store().unfinished_runs()?;
        let mut reattached = 0;
        for (run_id, row) in runs {
            let rd = self.run_dir(&run_id);
            if matches!(rd.exit(), Ok(Some(_))) {
                self.register_live(&run_id, &row.info.id);
                self.finalize(&run_id);
                continue;
            }
            if !row.spec.executor.is_local() {
                self.reattach_job(&run_id, &row.info.id);
                reattached += 1;
                continue;
            }
            let shim = rd.shim().ok().flatten();
            let alive = shim
                .as_ref()
                .filter(|s| proc::is_alive(s.shim_pid, Some(s.shim_starttime)))
                .map(|s| (s.shim_pid, s.pid, s.started_at))
                // shim.json missing or damaged: a live shim is still found by its argv, so
                // its command is never left running untracked.
                .or_else(|| {
                    let (shim, command) = proc::find_shim(rd.path())?;
                    tracing::warn!(
                        "run {run_id}: shim.json is unreadable; found its shim {} by its command line",
                        shim.pid
                    );
                    Some((
                        shim.pid,
                        command.map_or(shim.pid, |c| c.pid),
                        row.info.started_at,
                    ))
                });
            match alive {
                Some((shim_pid, pid, started_at)) => {
                    if row.info.status == Status::Starting
                        && let Err(e) = self.set_running(&run_id, pid, started_at)
                    {
                        tracing::error!("run {run_id}: {e}");
                    }
                    match self.reattach(&run_id, &row.info.id, shim_pid, &rd) {
                        Ok(()) => {
                            reattached += 1;
                            if let Some(w) = &row.spec.watch {
                                self.watch_files(&row.info.id, w);
                            }
                            if let Some(probe) = &row.spec.ready
                                && row.info.status != Status::Ready
                            {
                                self.probe_readiness(&run_id, &row.spec, probe.clone());
                            }
                        }
                        Err(e) => {
                            tracing::error!(
                                "run {run_id}: cannot re-attach to shim {shim_pid}: {e}"
                            );
                            self.register_live(&run_id, &row.info.id);
                            self.finalize(&run_id);
                        }
                    }
                }
                None => {
                    self.register_live(&run_id, &row.info.id);
                    self.finalize(&run_id);
                }
            }
        }
        self.sweep_prepared_dirs();
        let recovered = std::mem::take(&mut *lock(&self.inner.recovered));
        for run_id in recovered {
            let owner = self.store().result(&run_id).ok().flatten().map(|r| r.owner);
            if let Some(owner) = owner
                && let Err(e) = self.ack(&owner, std::slice::from_ref(&run_id), false)
            {
                tracing::error!("recover: cannot mark the result of {run_id} read: {e}");
            }
        }
        Ok(reattached)
    }

    /// Removes the directories prepared for prestarted shims that a crash left behind (the
    /// daemon and its waiting shim both gone, as in a reboot): no `spec.json` and no run of
    /// that id in the database. A run recorded whose spec was never written keeps its
    /// directory (it is that run's, `abandoned` above).
    fn sweep_prepared_dirs(&self) {
        let Ok(entries) = std::fs::read_dir(self.inner.state.runs()) else {
            return;
        };
        for entry in entries.flatten() {
            let dir = entry.path();
            let Some(run_id) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if !dir.is_dir() || dir.join(crate::rundir::SPEC_FILE).exists() {
                continue;
            }
            match self.store().find_by_run(&run_id) {
                Ok(None) => {
                    tracing::info!(
                        "removing {}: prepared for a run that never came",
                        dir.display()
                    );
                    remove_run_dir(&dir);
                }
                Ok(Some(_)) => {}
                Err(e) => tracing::warn!("run {run_id}: {e}"),
            }
        }
    }

    pub(super) fn reattach(
        &self,
        run_id: &str,
        process_id: &str,
        shim_pid: i32,
        rd: &RunDir,
    ) -> Result<()> {
        let pidfd = open_pidfd(shim_pid)?;
        let shim = ShimRef::with_pidfd(shim_pid, &pidfd)?;
        let exited = pidfd_exit(shim_pid, pidfd)?;
        self.register_live(run_id, process_id);
        if let Some(live) = lock(&self.inner.live).get(run_id) {
            live.shim.send_replace(Some(shim));
        }
        self.watch_logs(run_id, &rd.log_dir());
        let me = self.clone();
        let run = run_id.to_string();
        tokio::spawn(async move {
            exited.await;
            me.finalize(&run);
        });
        Ok(())
    }

    /// Deletes terminal runs older than the prune age whose notifications were read, and
    /// their directories. Returns how many runs were removed.
    pub fn prune(&self) -> Result<usize> {
        let age = jiff::SignedDuration::try_from(self.inner.settings.prune_after)
            .unwrap_or(jiff::SignedDuration::from_hours(24));
        let cutoff = Timestamp::now()
            .checked_sub(age)
            .unwrap_or(Timestamp::UNIX_EPOCH);
        let ids = self.store().prune(cutoff)?;
        for id in &ids {
            remove_run_dir(&self.inner.state.run_dir(id));
        }
        Ok(ids.len())
    }
}
