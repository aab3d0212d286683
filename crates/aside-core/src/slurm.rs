//! Slurm through its own commands: `sbatch --parsable` to submit, `squeue --json` for the jobs
//! the controller knows, `sacct -c` (the job completion log, which survives restarts) for jobs
//! it has forgotten, `scancel` to cancel or signal. Every command is argv; the batch script is
//! a fixed file (`job.sh`: `exec "$@"`) and everything about the run reaches `sbatch` as
//! separate arguments, never as a shell string. The commands use the daemon's environment
//! (`SLURM_CONF` included).
//!
//! Facts this follows (Slurm 22.05): `squeue --json` ignores `-j` and reports every job the
//! controller still holds (ended ones for `MinJobAge`), `exit_code` as a raw wait status;
//! `sacct --json` does not exist there; `scancel --batch --signal=SIG` reaches the batch
//! step's processes only (here: the shim, which `exec`s from `job.sh`).

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::Path;

use aside_proto::{Job, SlurmResources};

/// The batch script every job runs: its arguments are the shim's command line.
pub const JOB_SCRIPT: &str = "job.sh";
/// What [`JOB_SCRIPT`] holds (no data of any run: the shim and run directory are arguments).
pub const JOB_SCRIPT_TEXT: &str =
    "#!/bin/sh\n# aside: runs the shim given as arguments inside the job.\nexec \"$@\"\n";
/// The file in a run directory that names the run's job.
pub const JOB_FILE: &str = "job.json";

/// What `job.json` holds: the job a run was submitted as.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JobRecord {
    /// Slurm's job id.
    pub job_id: String,
}

/// A Slurm command that failed: which, and what it said.
#[derive(Debug, thiserror::Error)]
#[error("{command}: {message}")]
pub struct SlurmError {
    /// The command (`sbatch`, `squeue`, …).
    pub command: &'static str,
    /// Its stderr, or why it could not run.
    pub message: String,
}

/// The job name a run is submitted under (`aside-RUN_ID`): a job whose `job.json` was never
/// written (the daemon died right after `sbatch`) is found again by it.
pub fn job_name(run_id: &str) -> String {
    format!("aside-{run_id}")
}

/// A job's state as the scheduler reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for resources (`PENDING`, also `CONFIGURING`, `REQUEUED`, `SUSPENDED`…), and why.
    Waiting {
        /// Slurm's state name.
        state: String,
        /// Slurm's reason (`Resources`, `Priority`, …).
        reason: String,
    },
    /// `RUNNING` (or `COMPLETING`) on these nodes.
    Running {
        /// Slurm's state name.
        state: String,
        /// The node list.
        nodes: String,
    },
    /// Ended: Slurm's terminal state (`COMPLETED`, `FAILED`, `CANCELLED`, `TIMEOUT`,
    /// `NODE_FAIL`, `PREEMPTED`, `OUT_OF_MEMORY`, `BOOT_FAIL`, `DEADLINE`).
    Ended {
        /// Slurm's state name.
        state: String,
        /// Slurm's reason, or the exit code `sacct` gave.
        reason: String,
        /// The node list, when known.
        nodes: String,
    },
}

impl JobState {
    /// What `status` shows of job `id` in this state (a reason of `None` is no reason).
    pub fn job(&self, id: &str) -> Job {
        let (state, reason, node) = match self {
            JobState::Waiting { state, reason } => (state, reason.as_str(), ""),
            JobState::Running { state, nodes } => (state, "", nodes.as_str()),
            JobState::Ended {
                state,
                reason,
                nodes,
            } => (state, reason.as_str(), nodes.as_str()),
        };
        Job {
            executor: "slurm".into(),
            id: id.to_string(),
            state: Some(state.clone()),
            reason: (!reason.is_empty() && reason != "None").then(|| reason.to_string()),
            node: (!node.is_empty()).then(|| node.to_string()),
        }
    }

    fn from_parts(state: &str, reason: &str, nodes: &str) -> JobState {
        let state = state.to_string();
        let (reason, nodes) = (reason.to_string(), nodes.to_string());
        match state.as_str() {
            "RUNNING" | "COMPLETING" | "STAGE_OUT" | "SIGNALING" => {
                JobState::Running { state, nodes }
            }
            "COMPLETED" | "FAILED" | "CANCELLED" | "TIMEOUT" | "NODE_FAIL" | "PREEMPTED"
            | "OUT_OF_MEMORY" | "BOOT_FAIL" | "DEADLINE" | "REVOKED" | "SPECIAL_EXIT" => {
                JobState::Ended {
                    state,
                    reason,
                    nodes,
                }
            }
            _ => JobState::Waiting { state, reason },
        }
    }
}

/// How Slurm ended `job`, when it has (its state is one of [`JobState::Ended`]'s): `None`
/// while it waits or runs.
pub fn verdict(job: &Job) -> Option<Verdict> {
    let state = job.state.as_deref()?;
    if !matches!(JobState::from_parts(state, "", ""), JobState::Ended { .. }) {
        return None;
    }
    let said = match &job.reason {
        Some(r) => format!("Slurm ended job {} as {state} ({r})", job.id),
        None => format!("Slurm ended job {} as {state}", job.id),
    };
    Some(match state {
        "COMPLETED" | "FAILED" => Verdict::Own,
        "CANCELLED" | "PREEMPTED" => Verdict::Stopped {
            by: match &job.reason {
                Some(r) if r.starts_with("by ") => format!("Slurm ({state} {r})"),
                _ => format!("Slurm ({state})"),
            },
        },
        "TIMEOUT" | "DEADLINE" => Verdict::TimedOut { why: said },
        _ => Verdict::Failed { why: said },
    })
}

/// What Slurm's end of a job means for its run, whoever asked: `scancel` by anyone but aside
/// and preemption are stops (Slurm's `CANCELLED`, `PREEMPTED`), the time limit or deadline a
/// timeout (`TIMEOUT`, `DEADLINE`), `COMPLETED` and `FAILED` the batch step's own end (the
/// shim exits with its command's status), anything else a failure (`NODE_FAIL`, `BOOT_FAIL`,
/// `OUT_OF_MEMORY`, …). Each carries what to say of it: a stop its `stopped_by` ("Slurm
/// (CANCELLED by uid 0)", "Slurm (PREEMPTED)"), the others the run's error ("Slurm ended job
/// 12 as NODE_FAIL").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `COMPLETED` or `FAILED`: the batch step (the shim) ended by itself; the command's own
    /// end stands.
    Own,
    /// Stopped by Slurm (or through it): `by` is the run's `stopped_by`.
    Stopped {
        /// What Slurm did.
        by: String,
    },
    /// Ended at its time limit.
    TimedOut {
        /// What Slurm did.
        why: String,
    },
    /// Ended by something else than the command: its node failed, it ran out of memory, ….
    Failed {
        /// What Slurm did.
        why: String,
    },
}

async fn output(command: &'static str, args: &[OsString]) -> Result<String, SlurmError> {
    let out = tokio::process::Command::new(command)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| SlurmError {
            command,
            message: format!("cannot run it ({e}): is Slurm's client (slurm-client) installed?"),
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(SlurmError {
            command,
            message: if err.is_empty() {
                format!("exited with {}", out.status)
            } else {
                err
            },
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What one job is submitted with.
pub struct Submission<'a> {
    /// The run's id (the job's name is [`job_name`] of it).
    pub run_id: &'a str,
    /// The run directory: holds `job.sh`, gets the batch output as `shim.log`.
    pub run_dir: &'a Path,
    /// The shim's command line (program and arguments, the run directory last).
    pub shim: Vec<OsString>,
    /// The command's working directory (`--chdir`).
    pub cwd: &'a str,
    /// What the job asks for.
    pub resources: &'a SlurmResources,
    /// `--time`, in whole minutes.
    pub time_limit_min: Option<u64>,
}

/// Writes `job.sh` and submits it (`sbatch --parsable`); returns the job id.
pub async fn submit(s: &Submission<'_>) -> Result<String, SlurmError> {
    use std::os::unix::fs::OpenOptionsExt;
    let script = s.run_dir.join(JOB_SCRIPT);
    let written = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o700)
        .open(&script)
        .and_then(|mut f| std::io::Write::write_all(&mut f, JOB_SCRIPT_TEXT.as_bytes()));
    written.map_err(|e| SlurmError {
        command: "sbatch",
        message: format!("cannot write {}: {e}", script.display()),
    })?;
    let mut args: Vec<OsString> = vec![
        "--parsable".into(),
        format!("--job-name={}", job_name(s.run_id)).into(),
        format!("--chdir={}", s.cwd).into(),
        "--open-mode=append".into(),
        // A requeued job would run the shim again in a run directory that has ended: restarts
        // are the restart policy's, after the run's result.
        "--no-requeue".into(),
    ];
    // `%` in a path is one of sbatch's filename patterns: such a state directory gets no batch
    // output (the shim's own notes), rather than output somewhere else.
    let log = s.run_dir.join(crate::rundir::SHIM_LOG);
    let mut output_arg = OsString::from("--output=");
    if log.as_os_str().as_encoded_bytes().contains(&b'%') {
        output_arg.push("/dev/null");
    } else {
        output_arg.push(&log);
    }
    args.push(output_arg);
    let r = s.resources;
    if let Some(p) = &r.partition {
        args.push(format!("--partition={p}").into());
    }
    if let Some(n) = r.cpus {
        args.push(format!("--cpus-per-task={n}").into());
    }
    if let Some(m) = r.mem_mib {
        args.push(format!("--mem={m}M").into());
    }
    if let Some(g) = r.gpus {
        args.push(format!("--gpus={g}").into());
    }
    if let Some(n) = r.nodes {
        args.push(format!("--nodes={n}").into());
    }
    if let Some(t) = s.time_limit_min {
        args.push(format!("--time={t}").into());
    }
    args.push(script.into_os_string());
    args.extend(s.shim.iter().cloned());
    let out = output("sbatch", &args).await?;
    // `ID` or `ID;CLUSTER`.
    let id = out.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SlurmError {
            command: "sbatch",
            message: format!("answered {:?} where a job id was expected", out.trim()),
        });
    }
    Ok(id)
}

/// Every job the controller holds (`squeue --json`), by job id; with their names, for
/// [`job_name`] lookups.
pub async fn jobs() -> Result<HashMap<String, (String, JobState)>, SlurmError> {
    let out = output("squeue", &["--json".into()]).await?;
    parse_squeue(&out).map_err(|message| SlurmError {
        command: "squeue",
        message,
    })
}

fn parse_squeue(json: &str) -> Result<HashMap<String, (String, JobState)>, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("--json answered no JSON: {e}"))?;
    let text = |j: &serde_json::Value, k: &str| -> String {
        match j.get(k) {
            Some(serde_json::Value::String(s)) => s.clone(),
            // Newer Slurm lists states as an array.
            Some(serde_json::Value::Array(a)) => {
                a.first().and_then(|x| x.as_str()).unwrap_or("").to_string()
            }
            _ => String::new(),
        }
    };
    let mut out = HashMap::new();
    for j in v
        .get("jobs")
        .and_then(|j| j.as_array())
        .into_iter()
        .flatten()
    {
        let Some(id) = j.get("job_id").and_then(|i| i.as_u64()) else {
            continue;
        };
        let state = JobState::from_parts(
            &text(j, "job_state"),
            &text(j, "state_reason"),
            &text(j, "nodes"),
        );
        out.insert(id.to_string(), (text(j, "name"), state));
    }
    Ok(out)
}

/// A job the controller no longer holds, from the job completion log (`sacct -c`); `None` when
/// it is not there either.
pub async fn accounting(job_id: &str) -> Result<Option<JobState>, SlurmError> {
    let out = output(
        "sacct",
        &[
            "-c".into(),
            "-j".into(),
            job_id.into(),
            "-n".into(),
            "-P".into(),
            "-o".into(),
            "JobID,State,ExitCode,NodeList".into(),
        ],
    )
    .await?;
    Ok(parse_sacct(&out, job_id))
}

fn parse_sacct(out: &str, job_id: &str) -> Option<JobState> {
    out.lines().find_map(|line| {
        let mut f = line.split('|');
        let (id, state, exit, nodes) = (f.next()?, f.next()?, f.next()?, f.next().unwrap_or(""));
        if id != job_id {
            return None;
        }
        // `CANCELLED by 0`: the state is the first word, then who.
        let mut words = state.split_whitespace();
        let state = words.next().unwrap_or("");
        let reason = match (words.next(), words.next()) {
            (Some("by"), Some(uid)) => format!("by uid {uid}"),
            // The batch step's own exit code and signal: nothing said when both are 0.
            _ if exit == "0:0" => String::new(),
            _ => format!("exit {exit}"),
        };
        Some(JobState::from_parts(state, &reason, nodes))
    })
}

/// `scancel ID`: a waiting job leaves the queue; a running one gets SIGTERM, then SIGKILL
/// after the cluster's `KillWait`.
pub async fn cancel(job_id: &str) -> Result<(), SlurmError> {
    output("scancel", &[job_id.into()]).await.map(drop)
}

/// `scancel --batch --signal=SIG ID`: the signal to the batch step only (the shim).
pub async fn signal_batch(job_id: &str, signal: &str) -> Result<(), SlurmError> {
    output(
        "scancel",
        &[
            "--batch".into(),
            format!("--signal={signal}").into(),
            job_id.into(),
        ],
    )
    .await
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_json_of_slurm_22_05_is_read() {
        let json = r#"{"jobs":[
            {"job_id":1,"name":"aside-a","job_state":"RUNNING","state_reason":"None","nodes":"vm","exit_code":0},
            {"job_id":2,"name":"aside-b","job_state":"PENDING","state_reason":"Resources","nodes":"","exit_code":0},
            {"job_id":3,"name":"x","job_state":["TIMEOUT"],"state_reason":"TimeLimit","nodes":"vm"}]}"#;
        let jobs = parse_squeue(json).unwrap();
        assert_eq!(
            jobs["1"].1,
            JobState::Running {
                state: "RUNNING".into(),
                nodes: "vm".into()
            }
        );
        assert_eq!(jobs["2"].0, "aside-b");
        assert!(matches!(&jobs["2"].1, JobState::Waiting { reason, .. } if reason == "Resources"));
        assert!(matches!(&jobs["3"].1, JobState::Ended { state, .. } if state == "TIMEOUT"));
        assert!(parse_squeue("not json").is_err());
    }

    #[test]
    fn sacct_lines_are_read_for_their_job_only() {
        let out = "12|CANCELLED by 0|0:15|vm\n13|FAILED|3:0|vm\n";
        assert!(
            matches!(parse_sacct(out, "12"), Some(JobState::Ended { state, .. }) if state == "CANCELLED")
        );
        assert!(
            matches!(parse_sacct(out, "13"), Some(JobState::Ended { reason, .. }) if reason == "exit 3:0")
        );
        assert_eq!(parse_sacct(out, "14"), None);
        let cancelled = parse_sacct(out, "12").unwrap();
        assert_eq!(
            verdict(&cancelled.job("12")),
            Some(Verdict::Stopped {
                by: "Slurm (CANCELLED by uid 0)".into()
            })
        );
    }

    #[test]
    fn slurm_states_are_verdicts_once_ended() {
        let ended = |state: &str| verdict(&JobState::from_parts(state, "None", "vm").job("7"));
        assert_eq!(ended("COMPLETED"), Some(Verdict::Own));
        assert_eq!(ended("FAILED"), Some(Verdict::Own));
        assert!(
            matches!(ended("PREEMPTED"), Some(Verdict::Stopped { by }) if by == "Slurm (PREEMPTED)")
        );
        assert!(matches!(ended("TIMEOUT"), Some(Verdict::TimedOut { .. })));
        assert!(matches!(ended("DEADLINE"), Some(Verdict::TimedOut { .. })));
        assert!(matches!(ended("NODE_FAIL"), Some(Verdict::Failed { .. })));
        assert!(matches!(
            ended("OUT_OF_MEMORY"),
            Some(Verdict::Failed { .. })
        ));
        assert_eq!(ended("RUNNING"), None);
        assert_eq!(ended("PENDING"), None);
    }
}
