//! Controlling running processes: stop (SIGTERM to the process group, SIGKILL after the
//! grace), stop everything an owner may stop, write to stdin, and restart.

use std::fs;

use aside_proto::{ProcessInfo, RestartState, Spec, StopAllResponse, StopRequest};
use jiff::Timestamp;

use crate::proc;
use crate::rundir::{CONTROL_FILE, StopControl};
use crate::store::{ListFilter, ProcessRow};

use super::{Error, Requester, Result, Supervisor, io_err, lock};

impl Supervisor {
    /// Stops a process: `req.signal` (default SIGTERM) to every process of its tree, then
    /// SIGKILL after the grace; answers with the final state. Idempotent: a terminal process
    /// is returned as it is. Errors: unknown process, bad signal, requester not its owner nor
    /// a human.
    pub async fn stop(
        &self,
        reference: &str,
        req: &StopRequest,
        who: &Requester,
    ) -> Result<ProcessInfo> {
        let row = self.find(reference)?;
        self.may_control(who, &row.info, "stop")?;
        // Parsed before anything changes: a bad signal leaves the process as it is.
        let signal = match &req.signal {
            Some(s) => proc::parse_signal(s).map_err(Error::Invalid)?,
            None => libc::SIGTERM,
        };
        // A manual stop disables restarts (agent-procs), and file watching until a restart.
        if let Some(a) = &row.info.autorestart {
            self.store()
                .set_restart_state(&row.info.id, a.attempts, RestartState::Disabled)?;
        }
        self.unwatch_files(&row.info.id);
        self.stop_run(row, signal, req.grace_ms, who).await
    }

    /// Stops the latest run of `row` with `signal`, SIGKILL after `grace_ms` (default: its
    /// spec's), without touching its restart policy: for restarts, which start it again.
    pub(super) async fn stop_run(
        &self,
        row: ProcessRow,
        signal: i32,
        grace_ms: Option<u64>,
        who: &Requester,
    ) -> Result<ProcessInfo> {
        if row.info.status.is_terminal() {
            return Ok(row.info);
        }
        let run_id = row.info.run_id.clone();
        let grace_ms = grace_ms.unwrap_or(row.spec.grace_ms);
        if !row.spec.executor.is_local() {
            return self.stop_job(row, signal, grace_ms, who).await;
        }
        let Some((mut shim_rx, mut done)) = lock(&self.inner.live)
            .get(run_id.as_str())
            .map(|l| (l.shim.subscribe(), l.done.subscribe()))
        else {
            // Ended meanwhile.
            return Ok(self.find(&row.info.id)?.info);
        };
        // A run still starting has no shim to signal yet: wait for its report (or its end).
        let shim = tokio::select! {
            shim = shim_rx.wait_for(|s| s.is_some()) => shim.ok().and_then(|s| s.clone()),
            _ = done.wait_for(|d| *d) => None,
        };
        let Some(shim) = shim else {
            return Ok(self.find(&row.info.id)?.info);
        };
        self.write_stop_request(&self.run_dir(&run_id), signal, grace_ms, who)?;
        if let Err(e) = shim.request_stop() {
            // Gone already: its run's end, being recorded, is what the stop waits for.
            tracing::debug!("{}: cannot signal its shim: {e}", row.info.reference());
        }
        self.audit(who, "stop", &row.info.reference(), None);
        // Done, or its sender gone with the live entry: either way the run has been finished.
        if done.wait_for(|d| *d).await.is_err() {
            tracing::debug!("{}: finished while stopping", row.info.reference());
        }
        Ok(self.find(&row.info.id)?.info)
    }

    /// Puts a stop request into run directory `rd` (`control.json`), which its shim (here or on
    /// a cluster's node) acts on when signalled. Errors: the directory refuses the write.
    pub(super) fn write_stop_request(
        &self,
        rd: &crate::rundir::RunDir,
        signal: i32,
        grace_ms: u64,
        who: &Requester,
    ) -> Result<()> {
        rd.write(
            CONTROL_FILE,
            &StopControl {
                signal,
                grace_ms,
                requested_by: who.owner.clone(),
            },
        )
        .map_err(io_err("cannot write the stop request in", rd.path()))
    }

    /// Writes `chars` to the stdin of an interactive process (started with `interactive`).
    /// Errors: unknown process, requester not its owner nor a human, not interactive, ended, or
    /// its stdin is full because it does not read.
    pub fn write_stdin(
        &self,
        reference: &str,
        chars: &str,
        who: &Requester,
    ) -> Result<ProcessInfo> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let row = self.find(reference)?;
        let name = row.info.name.clone();
        self.may_control(who, &row.info, "write to")?;
        if !row.spec.interactive {
            return Err(Error::Invalid(format!(
                "{name} was not started interactive, so its stdin is /dev/null: start it with interactive: true (`aside run --interactive`)"
            )));
        }
        if row.info.status.is_terminal() {
            return Err(Error::Conflict(format!(
                "{name} has ended ({}): nothing reads its stdin",
                row.info.status
            )));
        }
        let fifo = self
            .run_dir(&row.info.run_id)
            .path()
            .join(crate::rundir::STDIN_FIFO);
        let written = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .and_then(|mut f| f.write_all(chars.as_bytes()));
        match written {
            Ok(()) => Ok(row.info),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err(Error::Conflict(format!(
                "the stdin of {name} is full: it is not reading what was written before"
            ))),
            Err(e) => Err(Error::Io(format!(
                "cannot write to the stdin of {name}: {e}"
            ))),
        }
    }

    /// Stops every live process (of `owner`, if given) the requester may stop, concurrently.
    /// Processes waiting out a restart delay count as running: their restart is cancelled.
    pub async fn stop_all(&self, owner: Option<&str>, who: &Requester) -> Result<StopAllResponse> {
        self.authorize(who, crate::authz::Action::StopAll { owner })?;
        let known = self.store().list(&ListFilter {
            all: true,
            owner: owner.map(str::to_string),
            ..Default::default()
        })?;
        let mut resp = StopAllResponse::default();
        let mut tasks = Vec::new();
        for row in known {
            let pending_restart = row
                .autorestart
                .as_ref()
                .is_some_and(|a| a.state == RestartState::Active);
            // What the requester may not see is not there for them, not even as refused.
            if (row.status.is_terminal() && !pending_restart) || !who.access.sees(&row) {
                continue;
            }
            if self.may_control(who, &row, "stop").is_err() {
                if !row.status.is_terminal() {
                    resp.refused.push(row.name);
                }
                continue;
            }
            if row.status.is_terminal() {
                let attempts = row.autorestart.as_ref().map_or(0, |a| a.attempts);
                self.store()
                    .set_restart_state(&row.id, attempts, RestartState::Disabled)?;
                continue;
            }
            let me = self.clone();
            let who = who.clone();
            tasks.push(tokio::spawn(async move {
                me.stop(&row.id, &StopRequest::default(), &who).await
            }));
        }
        for t in tasks {
            if let Ok(Ok(info)) = t.await {
                resp.stopped.push(info);
            }
        }
        Ok(resp)
    }

    /// Stops the process if it runs, then starts a new run of the same spec (restarts + 1).
    /// Re-enables its restart policy with the count reset, and its file watching.
    pub async fn restart(&self, reference: &str, who: &Requester) -> Result<ProcessInfo> {
        let row = self.find(reference)?;
        self.may_control(who, &row.info, "restart")?;
        // Judge the new run before stopping the old one: a refusal leaves it running.
        let mut spec = row.spec.clone();
        let live = !row.info.status.is_terminal();
        if !who.is_human() {
            // The policy judges the restart as the owner's own run.
            let as_owner = Requester::new(row.info.owner.clone(), who.team.clone());
            self.admit(
                &as_owner,
                &row.info.owner,
                row.info.team.as_deref(),
                &mut spec,
                true,
                live,
            )?;
        }
        if row.info.autorestart.is_some() {
            self.store()
                .set_restart_state(&row.info.id, 0, RestartState::Active)?;
        }
        let watch = row.spec.watch.clone();
        let info = self.relaunch(row, spec, who, Vec::new(), None).await?;
        if let Some(w) = &watch {
            self.watch_files(&info.id, w);
        }
        Ok(info)
    }

    /// Stops `row`'s run if it is live and starts a new run of `spec` (restarts + 1), with
    /// `notes` at the head of its log. `replace`: the process's new spec, owner and team (an
    /// `up` whose configuration changed).
    pub(super) async fn relaunch(
        &self,
        row: ProcessRow,
        spec: Spec,
        who: &Requester,
        notes: Vec<String>,
        replace: Option<(&str, Option<&str>)>,
    ) -> Result<ProcessInfo> {
        if !row.info.status.is_terminal() {
            self.stop_run(row.clone(), libc::SIGTERM, None, who).await?;
        }
        let (run_id, prestarted) = self.claim_run_id().await;
        {
            let _guard = self.inner.start_lock.lock().await;
            let row = self.find(&row.info.id)?;
            if !row.info.status.is_terminal() {
                return Err(Error::Conflict(format!(
                    "{:?} was started again meanwhile; nothing restarted",
                    row.info.name
                )));
            }
            let newest = self.find(&row.info.reference())?;
            if newest.info.id != row.info.id && !newest.info.status.is_terminal() {
                return Err(Error::Conflict(format!(
                    "the name {:?} is now used by another running process ({}): stop it first",
                    row.info.name, newest.info.id
                )));
            }
            let mut store = self.store();
            if let Some((owner, team)) = replace {
                store.replace_spec(&row.info.id, &spec, owner, team)?;
            }
            store.insert_run(&row.info.id, &run_id, row.seq + 1, Timestamp::now())?;
            drop(store);
            self.register_live(&run_id, &row.info.id);
        }
        self.launch(&run_id, prestarted, &spec, &notes).await;
        self.audit(who, "restart", &row.info.reference(), None);
        Ok(self.find(&row.info.id)?.info)
    }
}
