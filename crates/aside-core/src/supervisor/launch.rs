//! Starting runs: a request checked and turned into a spec ([`Supervisor::run`]), the name
//! and limit checks serialized with the insert, the shim spawned and its report awaited, and
//! the run watched until its shim exits.

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use aside_proto::{Command, HUMAN_OWNER, ProcessInfo, RunRequest, Spec, Status};
use jiff::Timestamp;
use tokio::io::AsyncBufReadExt;
use tokio::sync::watch;

use crate::logs::{self};
use crate::rundir::{NOTES_FILE, SHIM_LOG};
use crate::store::NewProcess;

use super::zygote::{self, Zygote, ZygoteState};
use super::{
    DEFAULT_GRACE_MS, Error, Live, ORIGINAL_NOFILE, RUN_ID_VAR, RUN_TOKEN_VAR, Requester, Result,
    SHIM_REPORT_TIMEOUT, ShimRef, Supervisor, Validated, check_owner, files, lock, no_nul, project,
    strip_trailing_ampersand, valid_name,
};

impl Supervisor {
    pub(super) fn validate(&self, req: RunRequest) -> Result<Validated> {
        let cmd = match req.cmd {
            Some(Command::Shell(s)) => {
                let s = strip_trailing_ampersand(&s);
                if s.trim().is_empty() {
                    return Err(Error::Invalid(
                        "the command is empty: give the command to run, e.g. `aside run 'make test'`".into(),
                    ));
                }
                Command::Shell(s.to_string())
            }
            Some(Command::Argv(a)) if a.first().is_some_and(|p| !p.is_empty()) => Command::Argv(a),
            _ => {
                return Err(Error::Invalid(
                    "the command is empty: give the command to run, e.g. `aside run 'make test'`"
                        .into(),
                ));
            }
        };
        let cwd = req
            .cwd
            .ok_or_else(|| Error::Invalid("cwd is required: an absolute directory".into()))?;
        let cwd_path = Path::new(&cwd);
        if !cwd_path.is_absolute() {
            return Err(Error::Invalid(format!(
                "cwd {cwd:?} is not absolute: pass an absolute directory"
            )));
        }
        match fs::metadata(cwd_path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::Invalid(format!(
                    "cwd {cwd} is not a directory: pass a directory with --cwd"
                )));
            }
            Err(e) => {
                return Err(Error::Invalid(format!(
                    "cwd {cwd} cannot be used: {e}; pass an existing directory with --cwd"
                )));
            }
        }
        if rustix::fs::access(
            cwd_path,
            rustix::fs::Access::EXEC_OK | rustix::fs::Access::READ_OK,
        )
        .is_err()
        {
            return Err(Error::Invalid(format!(
                "cwd {cwd} is not readable and searchable by this user: pass another directory with --cwd"
            )));
        }
        if req.timeout_ms == Some(0) {
            return Err(Error::Invalid(
                "timeout must be longer than 0: e.g. --timeout 30s".into(),
            ));
        }
        let log_cap_bytes = req
            .log_cap_bytes
            .unwrap_or(self.inner.settings.default_log_cap);
        if log_cap_bytes < logs::MIN_LOG_CAP {
            return Err(Error::Invalid(format!(
                "log cap {log_cap_bytes} bytes is below the minimum of {} bytes",
                logs::MIN_LOG_CAP
            )));
        }
        if let Some(name) = &req.name
            && !valid_name(name)
        {
            return Err(Error::Invalid(format!(
                "invalid name {name:?}: use 1-64 letters, digits and - _ . : @ (not . or .., not starting with -, not shaped like a process id)"
            )));
        }
        let project = req.project.filter(|p| !p.is_empty());
        if let Some(p) = &project
            && !valid_name(p)
        {
            return Err(Error::Invalid(format!(
                "invalid project name {p:?}: use 1-64 letters, digits and - _ . : @"
            )));
        }
        project::validate_probe(req.ready.as_ref())?;
        if let Some(r) = &req.restart
            && r.backoff_max_ms.is_some_and(|cap| cap < r.delay_ms)
        {
            return Err(Error::Invalid(format!(
                "the restart backoff cap ({} ms) is shorter than the restart delay ({} ms): raise the cap",
                r.backoff_max_ms.unwrap_or_default(),
                r.delay_ms
            )));
        }
        let watch = match req.watch {
            Some(w) if w.patterns.is_empty() => None,
            Some(w) => {
                files::compile(&w)?;
                if !Path::new(&w.root).is_absolute() {
                    return Err(Error::Invalid(format!(
                        "the watch root {:?} is not absolute",
                        w.root
                    )));
                }
                Some(w)
            }
            None => None,
        };
        let mut env = if req.env.is_empty() {
            std::env::vars().collect()
        } else {
            req.env
        };
        if let Some(port) = req.port {
            if port == 0 {
                return Err(Error::Invalid(
                    "port 0 is not a port: give the port the process listens on".into(),
                ));
            }
            env.entry("PORT".into()).or_insert_with(|| port.to_string());
            env.entry("HOST".into())
                .or_insert_with(|| "127.0.0.1".into());
        }
        let owner = req
            .owner
            .filter(|o| !o.is_empty())
            .unwrap_or_else(|| HUMAN_OWNER.to_string());
        check_owner("owner", &owner)?;
        if let Some(t) = &req.team {
            check_owner("team", t)?;
        }
        match &cmd {
            Command::Shell(s) => no_nul("the command", s)?,
            Command::Argv(a) => a.iter().try_for_each(|x| no_nul("an argument", x))?,
        }
        no_nul("cwd", &cwd)?;
        for (k, v) in &env {
            if k.is_empty() || k.contains('=') {
                return Err(Error::Invalid(format!(
                    "invalid environment variable name {k:?}: it must be non-empty and hold no '='"
                )));
            }
            no_nul("an environment variable's name", k)?;
            no_nul(&format!("environment variable {k}"), v)?;
        }
        if let Some(d) = &req.description {
            no_nul("the description", d)?;
        }
        let executor = req.executor.unwrap_or_default();
        if let aside_proto::Executor::Slurm(r) = &executor {
            if let Some(p) = &r.partition
                && (p.is_empty()
                    || !p
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
            {
                return Err(Error::Invalid(format!(
                    "invalid Slurm partition {p:?}: letters, digits and - _ . only"
                )));
            }
            let zero = [("cpus", r.cpus), ("gpus", r.gpus), ("nodes", r.nodes)]
                .into_iter()
                .find(|(_, n)| *n == Some(0));
            if let Some((what, _)) = zero {
                return Err(Error::Invalid(format!(
                    "--{what} 0 asks for nothing: give at least 1, or leave it out for the cluster's default"
                )));
            }
            if r.mem_mib == Some(0) {
                return Err(Error::Invalid(
                    "--mem 0 asks for nothing (Slurm reads it as all of a node's memory): give a size such as 4GiB".into(),
                ));
            }
            if req.interactive {
                return Err(Error::Invalid(
                    "interactive runs on Slurm are not yet supported: their stdin is a FIFO on this machine; run it locally or without --interactive".into(),
                ));
            }
        }
        if let Some(k) = &req.idempotency_key
            && (k.is_empty() || k.len() > 128 || k.chars().any(char::is_control))
        {
            return Err(Error::Invalid(
                "invalid idempotency_key: 1-128 bytes, no control characters".into(),
            ));
        }
        Ok(Validated {
            name: req.name,
            idempotency_key: req.idempotency_key,
            owner,
            team: req.team.filter(|t| !t.is_empty()),
            project,
            description: req.description.filter(|d| !d.trim().is_empty()),
            spec: Spec {
                cmd,
                cwd,
                env,
                timeout_ms: req.timeout_ms,
                grace_ms: req.grace_ms.unwrap_or(DEFAULT_GRACE_MS),
                log_cap_bytes,
                interactive: req.interactive,
                restart: req
                    .restart
                    .filter(|r| r.autorestart != aside_proto::Autorestart::Never),
                ready: req.ready,
                port: req.port,
                proxy: req.proxy,
                watch,
                depends_on: req.depends_on,
                digest: req.digest,
                executor,
            },
        })
    }

    /// Starts a command in the background and answers once it runs (with its pid) or failed
    /// to start. Errors: invalid request (empty command, bad cwd, bad name), a name in use by a
    /// live process, or the state directory refusing writes.
    pub async fn run(&self, req: RunRequest, who: &Requester) -> Result<ProcessInfo> {
        let explicit_log_cap = req.log_cap_bytes.is_some();
        let v = self.validate(req)?;
        self.start_validated(v, explicit_log_cap, who, Vec::new())
            .await
    }

    /// Starts a validated process (see [`Supervisor::run`]); `notes` are written to the head of
    /// its log as `[aside]` annotations.
    pub(super) async fn start_validated(
        &self,
        v: Validated,
        explicit_log_cap: bool,
        who: &Requester,
        notes: Vec<String>,
    ) -> Result<ProcessInfo> {
        let Validated {
            name,
            idempotency_key,
            owner,
            team,
            project,
            description,
            mut spec,
        } = v;
        let process_id = uuid::Uuid::now_v7().to_string();
        // A prestarted shim is for this machine: a run elsewhere leaves it to the next one.
        let (run_id, prestarted) = if !spec.executor.is_local() {
            (uuid::Uuid::now_v7().to_string(), None)
        } else {
            self.claim_run_id().await
        };
        {
            let _guard = self.inner.start_lock.lock().await;
            if let Some(key) = &idempotency_key {
                let earlier = self.store().process_for_key(&owner, key)?;
                if let Some(pid) = earlier {
                    // A retry of a request that was carried out: its process, not a second.
                    return Ok(self.find(&pid)?.info);
                }
            }
            self.admit(
                who,
                &owner,
                team.as_deref(),
                &mut spec,
                explicit_log_cap,
                false,
            )?;
            if spec.proxy && spec.port.is_none() {
                project::assign_port(&mut spec, self.free_port(project::AUTO_PORTS)?);
            }
            let name = {
                let store = self.store();
                let pj = project.as_deref();
                match name {
                    Some(n) => {
                        if store.live_name_taken(pj, &n)? {
                            let r = pj.map_or(n.clone(), |p| format!("{p}/{n}"));
                            return Err(Error::Conflict(format!(
                                "the name {n:?} is already used by a running process: choose another --name, or stop it first (`aside stop {r}`)"
                            )));
                        }
                        n
                    }
                    None => {
                        let base = base_name(&spec.cmd);
                        let taken = store.live_names_like(pj, &base)?;
                        let mut candidate = base.clone();
                        let mut i = 2;
                        while taken.contains(&candidate) {
                            candidate = format!("{base}-{i}");
                            i += 1;
                        }
                        candidate
                    }
                }
            };
            let p = NewProcess {
                id: process_id.clone(),
                name,
                owner,
                team,
                description,
                project,
                spec: spec.clone(),
                idempotency_key,
            };
            self.store().insert_process(&p, &run_id, Timestamp::now())?;
            self.register_live(&run_id, &process_id);
        }
        if let Some(w) = &spec.watch {
            self.watch_files(&process_id, w);
        }
        self.launch(&run_id, prestarted, &spec, &notes).await;
        Ok(self.find(&process_id)?.info)
    }

    /// A run id for a new run, with the shim prestarted for it if there is one (the next
    /// run that claims one starts another). One still being made (the previous run's answer
    /// has just gone out: a fork of the zygote, 1–2 ms) is waited for, up to [`SPARE_WAIT`]:
    /// a shim started for the run instead takes longer (measured: 30% of back-to-back `run`s
    /// took that way, 2–4 ms more each).
    pub(super) async fn claim_run_id(&self) -> (String, Option<Prestarted>) {
        use std::sync::atomic::Ordering;
        let take = || {
            lock(&self.inner.prestarted)
                .take()
                .map(|p| (p.run_id.clone(), p))
        };
        if let Some((run_id, p)) = take() {
            return (run_id, Some(p));
        }
        if self.inner.prestarting.load(Ordering::SeqCst) {
            let made = self.inner.spare_made.notified();
            tokio::pin!(made);
            // Listening before looking again: a spare made in between is not missed.
            made.as_mut().enable();
            if self.inner.prestarting.load(Ordering::SeqCst)
                && tokio::time::timeout(SPARE_WAIT, made).await.is_err()
            {
                tracing::debug!("the next prestarted shim is late; this run starts its own");
            }
            if let Some((run_id, p)) = take() {
                return (run_id, Some(p));
            }
        }
        (uuid::Uuid::now_v7().to_string(), None)
    }

    /// Starts making the next prestarted shim (see [`Supervisor::prestart_shim`]), saying so
    /// at once for [`Supervisor::claim_run_id`].
    fn spawn_prestart(&self) {
        use std::sync::atomic::Ordering;
        if self.inner.prestarting.swap(true, Ordering::SeqCst) {
            return; // one is being made
        }
        /// Says the prestart is over however it ends (a panic included): waiting runs go on.
        struct Done(Supervisor);
        impl Drop for Done {
            fn drop(&mut self) {
                self.0.inner.prestarting.store(false, Ordering::SeqCst);
                self.0.inner.spare_made.notify_waiters();
            }
        }
        let done = Done(self.clone());
        tokio::spawn(async move { done.0.prestart_shim() });
    }

    /// Starts a prestarted shim for the next run, unless one waits already: forked by the
    /// zygote where there is one, else started as a program. Failing to is only slower: the
    /// next run starts its shim itself.
    fn prestart_shim(&self) {
        if lock(&self.inner.prestarted).is_some() {
            return;
        }
        if self.inner.settings.shim_command.is_empty() {
            return;
        }
        let run_id = uuid::Uuid::now_v7().to_string();
        let rd = self.run_dir(&run_id);
        // Its run's directory too, while nobody waits (the shim removes it if it is not used).
        if let Err(e) = rd.prepare() {
            tracing::debug!("cannot prepare {}: {e}", rd.path().display());
            return;
        }
        let shim = match self.fork_spare(&rd) {
            Some(forked) => Spare::Forked(forked),
            None => {
                let Some(mut cmd) = self.shim_process(&rd, true) else {
                    return;
                };
                cmd.stdin(Stdio::piped()).stderr(Stdio::null());
                match cmd.spawn() {
                    Ok(child) => Spare::Child(child),
                    Err(e) => {
                        tracing::debug!("cannot start a prestarted shim: {e}");
                        if let Err(e) = fs::remove_dir_all(rd.path()) {
                            tracing::debug!("cannot remove {}: {e}", rd.path().display());
                        }
                        return;
                    }
                }
            }
        };
        let old = lock(&self.inner.prestarted).replace(Prestarted { run_id, shim });
        if old.is_some() {
            // Another run prepared one meanwhile: this one ends on its stdin's EOF.
            tracing::debug!("a second prestarted shim was started; the first is dropped");
        }
    }

    /// A prestarted shim for `rd` from the zygote (started first if none runs); `None` when
    /// there is no zygote or it failed (said in the log; the next call starts a new one).
    /// Blocks the calling thread for the zygote's answer (a fork; 2 s at most).
    fn fork_spare(&self, rd: &crate::rundir::RunDir) -> Option<zygote::Forked> {
        if !self.inner.settings.shim_zygote {
            return None;
        }
        let mut state = lock(&self.inner.zygote);
        if matches!(*state, ZygoteState::NotStarted) {
            let runs = rd.path().parent().unwrap_or(rd.path());
            let started = self
                .shim_base_command()
                .ok_or_else(|| std::io::Error::other("no shim command is configured"))
                .and_then(|cmd| Zygote::start(cmd, runs));
            *state = match started {
                Ok(z) => ZygoteState::Running(z),
                Err(e) => {
                    tracing::warn!(
                        "cannot start the shim zygote ({e}); each shim is started as a program"
                    );
                    ZygoteState::Unavailable
                }
            };
        }
        let ZygoteState::Running(z) = &*state else {
            return None;
        };
        match z.fork(rd) {
            Ok(forked) => Some(forked),
            Err(e) => {
                tracing::warn!("the shim zygote failed ({e}); another is started for the next run");
                *state = ZygoteState::NotStarted;
                None
            }
        }
    }

    /// The command that starts a shim for `rd` (`--prestarted`: one that waits for `go` first), its
    /// stdout piped for the report; `None` when no shim command is configured.
    fn shim_process(
        &self,
        rd: &crate::rundir::RunDir,
        prestarted: bool,
    ) -> Option<tokio::process::Command> {
        let mut cmd = self.shim_base_command()?;
        if prestarted {
            cmd.arg(crate::shim::PRESTARTED_FLAG);
        }
        cmd.arg(rd.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(false);
        Some(cmd)
    }

    /// The shim command without its arguments for a run, in the environment every shim gets
    /// and with its file limit the daemon's original one; `None` when none is configured.
    fn shim_base_command(&self) -> Option<tokio::process::Command> {
        let shim = &self.inner.settings.shim_command;
        let program = shim.first()?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(&shim[1..]);
        // The shim gives its command the run's own environment, never its own: it is started
        // with only what it reads itself (PATH for a program named without a directory in a
        // run whose environment has none), so the daemon's environment is not copied onto the
        // stack of every running shim.
        cmd.env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        let tunables = match std::env::var_os("GLIBC_TUNABLES") {
            Some(mine) if !mine.is_empty() => {
                let mut all = mine;
                all.push(":");
                all.push(crate::shim::SHIM_TUNABLES);
                all
            }
            _ => crate::shim::SHIM_TUNABLES.into(),
        };
        cmd.env("GLIBC_TUNABLES", tunables);
        // The shim lowers its own limit: a `pre_exec` here would make the spawn a `fork` of the
        // whole daemon (its page tables copied under its memory lock, stalling every other
        // request meanwhile) instead of a `posix_spawn`.
        if let Some(soft) = ORIGINAL_NOFILE.get().and_then(|l| l.current) {
            cmd.env(crate::shim::NOFILE_VAR, soft.to_string());
        }
        Some(cmd)
    }

    /// The prestarted shim for this run, told to go; `None` when it cannot be (it died, its stdin
    /// is gone), so that the run starts a shim of its own.
    async fn start_prestarted(&self, prestarted: Prestarted) -> Option<Started> {
        use tokio::io::AsyncWriteExt;
        let Prestarted { run_id, shim } = prestarted;
        match shim {
            Spare::Child(mut child) => {
                if !matches!(child.try_wait(), Ok(None)) {
                    tracing::warn!("run {run_id}: its prestarted shim is gone; starting one");
                    return None;
                }
                let mut stdin = child.stdin.take()?;
                match stdin.write_all(crate::shim::GO).await {
                    Ok(()) => Some(Started::Child(child)),
                    Err(e) => {
                        tracing::warn!(
                            "run {run_id}: cannot tell its prestarted shim to go ({e}); starting one"
                        );
                        None
                    }
                }
            }
            Spare::Forked(mut forked) => {
                use std::io::Write;
                if !forked.is_alive() {
                    tracing::warn!("run {run_id}: its prestarted shim is gone; starting one");
                    return None;
                }
                // Three bytes into an empty pipe: never blocks.
                match forked.go.write_all(crate::shim::GO) {
                    Ok(()) => Some(Started::Forked {
                        pid: forked.pid,
                        pidfd: forked.pidfd,
                        report: forked.report,
                    }),
                    Err(e) => {
                        tracing::warn!(
                            "run {run_id}: cannot tell its prestarted shim to go ({e}); starting one"
                        );
                        None
                    }
                }
            }
        }
    }

    pub(super) fn register_live(&self, run_id: &str, process_id: &str) {
        lock(&self.inner.live).insert(
            run_id.to_string(),
            Live {
                process_id: process_id.to_string(),
                shim: watch::channel(None).0,
                done: watch::channel(false).0,
            },
        );
    }

    /// Writes the run directory, starts the shim and waits for its report. Failures become the
    /// run's result (status `failed`) rather than errors: the run exists either way.
    pub(super) async fn launch(
        &self,
        run_id: &str,
        prestarted: Option<Prestarted>,
        spec: &Spec,
        notes: &[String],
    ) {
        let rd = self.run_dir(run_id);
        let record = self.process_record(run_id);
        // This run's copy of the spec tells the command who it is, so that `aside progress`
        // from inside it can report (the token proves the report comes from the run).
        let mut spec = spec.clone();
        spec.env.insert(RUN_ID_VAR.into(), run_id.to_string());
        spec.env.insert(RUN_TOKEN_VAR.into(), random_token());
        let spec = &spec;
        let prepared = rd
            .create(spec)
            .and_then(|()| match &record {
                Some(r) => rd.write(crate::rundir::PROCESS_FILE, r),
                None => Ok(()),
            })
            .and_then(|()| {
                if notes.is_empty() {
                    Ok(())
                } else {
                    rd.write(NOTES_FILE, &notes)
                }
            })
            .and_then(|()| {
                use std::os::unix::fs::DirBuilderExt;
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(rd.log_dir())
            })
            .and_then(|()| {
                use std::os::unix::fs::OpenOptionsExt;
                fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(rd.path().join(SHIM_LOG))
            });
        let shim_log = match prepared {
            Ok(f) => f,
            Err(e) => {
                let msg = format!("could not prepare {}: {e}", rd.path().display());
                self.finish_without_shim(run_id, Status::Failed, msg);
                return;
            }
        };
        self.open_log_events(run_id);
        if let aside_proto::Executor::Slurm(resources) = &spec.executor {
            self.watch_log_dir(run_id, &rd.log_dir());
            // The job's batch output is the shim's log (sbatch opens it on the node).
            drop(shim_log);
            self.submit_job(run_id, &rd, spec, resources).await;
            return;
        }
        // A prestarted shim opens the log made here itself (`go` tells it the run directory is ready).
        let warm = match prestarted {
            Some(prestarted) => self.start_prestarted(prestarted).await,
            None => None,
        };
        let started = match warm {
            Some(started) => started,
            None => {
                let (Some(mut cmd), Some(program)) = (
                    self.shim_process(&rd, false),
                    self.inner.settings.shim_command.first(),
                ) else {
                    self.finish_without_shim(
                        run_id,
                        Status::Failed,
                        "no shim command is configured".into(),
                    );
                    return;
                };
                match cmd.stderr(Stdio::from(shim_log)).spawn() {
                    Ok(c) => Started::Child(c),
                    Err(e) => {
                        let msg = format!(
                            "could not start the shim {}: {e}",
                            program.to_string_lossy()
                        );
                        self.finish_without_shim(run_id, Status::Failed, msg);
                        return;
                    }
                }
            }
        };
        // While the shim starts the command: an inotify watch is a round trip to the
        // watcher's thread (30–140 µs measured), and what the command writes before it is in
        // place is read all the same (see `watch_log_dir`).
        self.watch_log_dir(run_id, &rd.log_dir());
        let (shim, out, exited) = match started.watch() {
            Ok(parts) => parts,
            Err(e) => {
                // Not watchable (no pidfd): the run is left to the next daemon start's
                // reconcile, which finds its shim by its `shim.json` or command line.
                tracing::error!("run {run_id}: cannot watch its shim: {e}");
                return;
            }
        };
        let mut report = String::new();
        if let Some(out) = out {
            let mut out = tokio::io::BufReader::new(out);
            let read = tokio::time::timeout(SHIM_REPORT_TIMEOUT, out.read_line(&mut report)).await;
            // No report is survivable: the run is watched through its shim all the same, and
            // its exit record says how it went.
            match read {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!("run {run_id}: cannot read the shim's report: {e}"),
                Err(_) => tracing::warn!(
                    "run {run_id}: no report from its shim within {SHIM_REPORT_TIMEOUT:?}"
                ),
            }
        }
        let report: serde_json::Value = serde_json::from_str(&report).unwrap_or_default();
        if let Some(pid) = report.get("pid").and_then(|p| p.as_i64()) {
            if let Err(e) = self.set_running(run_id, pid as i32, Timestamp::now()) {
                tracing::error!("run {run_id}: cannot record pid {pid}: {e}");
            }
        }
        // The next run's shim, started while this answer goes out.
        self.spawn_prestart();
        // Whatever the report said (or if none came), stop requests may signal the shim from
        // now on: our unreaped child by its pid, or a forked one through its pidfd.
        if let Some(live) = lock(&self.inner.live).get(run_id) {
            live.shim.send_replace(shim);
        }
        let me = self.clone();
        let run = run_id.to_string();
        let mut done = self.done_rx(run_id);
        tokio::spawn(async move {
            exited.await;
            me.finalize(&run);
        });
        if let Some(probe) = &spec.ready {
            self.probe_readiness(run_id, spec, probe.clone());
        }
        if report.get("error").is_some()
            && let Some(done) = done.as_mut()
        {
            // The shim wrote its exit record already: answer with the failure.
            let finished = tokio::time::timeout(SHIM_REPORT_TIMEOUT, done.wait_for(|d| *d)).await;
            if !matches!(finished, Ok(Ok(_))) {
                tracing::warn!("run {run_id}: its failure is not recorded yet; answering anyway");
            }
        }
    }
}

/// Longest a run waits for the prestarted shim being made for it (see
/// [`Supervisor::claim_run_id`]).
const SPARE_WAIT: Duration = Duration::from_millis(50);

/// A shim started ahead of its run, waiting for `go` on its stdin (`aside-shim --prestarted
/// RUN_DIR`), and the run id its directory is named after.
pub(super) struct Prestarted {
    run_id: String,
    shim: Spare,
}

/// A prestarted shim: the daemon's child, or one the zygote forked.
enum Spare {
    Child(tokio::process::Child),
    Forked(zygote::Forked),
}

/// A run's shim, started: the daemon's child, or one the zygote forked (watched by its pidfd).
enum Started {
    Child(tokio::process::Child),
    Forked {
        pid: i32,
        pidfd: std::os::fd::OwnedFd,
        report: std::os::fd::OwnedFd,
    },
}

/// What the shim's stdout is read through.
type Report = Box<dyn tokio::io::AsyncRead + Unpin + Send>;

impl Started {
    /// The shim (for stop requests), its report (stdout) and a future that resolves when it
    /// has exited.
    #[allow(clippy::type_complexity)]
    fn watch(
        self,
    ) -> Result<(
        Option<ShimRef>,
        Option<Report>,
        std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    )> {
        match self {
            Started::Child(mut child) => {
                let pid = child.id().map(|p| p as i32);
                let out = child.stdout.take().map(|o| Box::new(o) as Report);
                let exited = Box::pin(async move {
                    if let Err(e) = child.wait().await {
                        // The exit record, not the wait status, says how the run ended.
                        tracing::warn!("waiting for shim {pid:?} failed: {e}");
                    }
                });
                Ok((pid.map(ShimRef::child), out, exited))
            }
            Started::Forked { pid, pidfd, report } => {
                let out = match tokio::net::unix::pipe::Receiver::from_owned_fd(report) {
                    Ok(r) => Some(Box::new(r) as Report),
                    Err(e) => {
                        tracing::warn!("cannot read the report of shim {pid}: {e}");
                        None
                    }
                };
                let shim = ShimRef::with_pidfd(pid, &pidfd)?;
                let exited = super::pidfd_exit(pid, pidfd)?;
                Ok((Some(shim), out, Box::pin(exited)))
            }
        }
    }
}

pub(super) fn base_name(cmd: &Command) -> String {
    let first = match cmd {
        Command::Shell(s) => s.split_whitespace().next().unwrap_or("proc").to_string(),
        Command::Argv(a) => a.first().cloned().unwrap_or_else(|| "proc".into()),
    };
    let base = first.rsplit('/').next().unwrap_or(&first);
    let clean: String = base
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(32)
        .collect();
    if clean.is_empty() {
        "proc".into()
    } else {
        clean
    }
}

/// 128 random bits as hex.
pub(super) fn random_token() -> String {
    let mut bytes = [0u8; 16];
    if let Err(e) = rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()) {
        tracing::warn!("getrandom: {e}; the run's token is weaker");
        bytes.copy_from_slice(&uuid::Uuid::now_v7().into_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_derived_from_the_program() {
        assert_eq!(
            base_name(&Command::Shell("/usr/bin/python3 -m http.server".into())),
            "python3"
        );
        assert_eq!(base_name(&Command::Shell("  ".into())), "proc");
    }
}
