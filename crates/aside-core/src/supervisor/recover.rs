//! Losing the database never loses track of running commands: a missing or empty `aside.db`
//! next to run directories is refused ([`check_not_lost`]), and `aside daemon start
//! --recover` rebuilds the state from the run directories ([`rebuild`]), which hold each run's
//! spec, its process (`process.json`), its shim's pids and its exit record.
//!
//! After a rebuild the ordinary reconcile takes over: a live shim is re-attached (found by its
//! `shim.json`, or by its command line), an exit record becomes a result, anything else is
//! abandoned with its leftovers killed. Results of runs that had ended before the rebuild are
//! recorded already read: whether their owner saw them is lost with the database, and a result
//! delivered twice is worse than one kept in `history`.

use std::fs;
use std::path::Path;

use jiff::Timestamp;

use super::{Error, Result};
use crate::paths::StateDir;
use crate::rundir::{PROCESS_FILE, ProcessRecord, RunDir};
use crate::store::{NewProcess, Store, StoreError};

/// The run directories under `runs` (names only), oldest first (run ids are UUIDv7).
fn run_ids(runs: &Path) -> Vec<String> {
    let mut ids: Vec<String> = fs::read_dir(runs)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join(crate::rundir::SPEC_FILE).exists())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

/// Refuses a database that is missing or empty while run directories exist.
pub(super) fn check_not_lost(state: &StateDir) -> Result<()> {
    let db = state.db();
    let what = match fs::metadata(&db) {
        Err(_) => "missing",
        Ok(m) if m.len() == 0 => "empty",
        Ok(_) => return Ok(()),
    };
    let runs = run_ids(&state.runs()).len();
    if runs == 0 {
        return Ok(());
    }
    Err(Error::Store(StoreError::Lost {
        path: db.display().to_string(),
        what,
        runs,
        runs_dir: state.runs().display().to_string(),
    }))
}

/// Moves the old database (and its WAL and shm) aside as `aside.db.damaged-<unix seconds>`,
/// then writes a fresh one holding every process and run the run directories describe, each
/// run not yet terminal. Returns the ids of runs that had ended (an exit record), whose results
/// are to be recorded as read.
pub(super) fn rebuild(state: &StateDir) -> Result<Vec<String>> {
    let db = state.db();
    let stamp = Timestamp::now().as_second();
    for suffix in ["", "-wal", "-shm"] {
        let mut from = db.as_os_str().to_owned();
        from.push(suffix);
        let mut to = db.as_os_str().to_owned();
        to.push(format!(".damaged-{stamp}{suffix}"));
        match fs::rename(&from, &to) {
            Ok(()) => tracing::warn!("moved {} aside", Path::new(&from).display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::Io(format!(
                    "cannot move {} aside: {e}",
                    Path::new(&from).display()
                )));
            }
        }
    }
    let mut store = Store::open(&db)?;
    let mut ended = Vec::new();
    let mut known: std::collections::HashMap<String, u32> = Default::default();
    for run_id in run_ids(&state.runs()) {
        let rd = RunDir::new(state.run_dir(&run_id));
        let Ok(Some(spec)) = rd.spec() else {
            continue;
        };
        let record: ProcessRecord = match rd.read(PROCESS_FILE) {
            Ok(Some(r)) => r,
            // A run from before process.json existed: a process of its own, the human's.
            _ => ProcessRecord {
                process_id: uuid::Uuid::now_v7().to_string(),
                name: format!("recovered-{}", &run_id[run_id.len().saturating_sub(8)..]),
                owner: aside_proto::HUMAN_OWNER.into(),
                team: None,
                project: None,
                description: Some(format!("recovered from {}", rd.path().display())),
                seq: 0,
            },
        };
        let started = rd
            .shim()
            .ok()
            .flatten()
            .map_or_else(Timestamp::now, |s| s.started_at);
        let inserted = match known.get(&record.process_id) {
            None => store.insert_process(
                &NewProcess {
                    id: record.process_id.clone(),
                    name: record.name.clone(),
                    owner: record.owner.clone(),
                    team: record.team.clone(),
                    description: record.description.clone(),
                    project: record.project.clone(),
                    spec,
                    idempotency_key: None,
                },
                &run_id,
                started,
            ),
            Some(_) => store.insert_run(&record.process_id, &run_id, record.seq, started),
        };
        if let Err(e) = inserted {
            tracing::error!("recover: run {run_id} left out: {e}");
            continue;
        }
        known.insert(record.process_id.clone(), record.seq);
        if matches!(rd.exit(), Ok(Some(_))) {
            ended.push(run_id.clone());
        }
        tracing::info!(
            "recover: run {run_id} of {} ({})",
            record.name,
            record.owner
        );
    }
    Ok(ended)
}
