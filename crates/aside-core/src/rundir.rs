//! The files in a run's directory: the contract between the daemon and the shim.
//!
//! ```text
//! runs/<run_id>/
//!   spec.json      written by the daemon before it starts the shim (0600: holds the env)
//!   process.json   written with it: which process this is a run of (id, name, owner, …),
//!                  so `aside daemon start --recover` can rebuild a lost database
//!   shim.json      written by the shim once the command is started (pids, start times)
//!   control.json   written by the daemon for a stop request, then SIGUSR1 to the shim
//!   log/*.seg      the capped output (see `logs`)
//!   exit.json      written by the shim, last, once the whole tree is gone and output drained
//!   shim.log       the shim's own stderr, for diagnosing the shim itself
//!   exit.reserve   64 KiB the shim sets aside when it starts and frees just before it writes
//!                  `shim.json` or `exit.json` on a full disk, so its records still land
//!   stdin          interactive runs only: a FIFO that is the command's stdin
//! ```
//!
//! Every JSON file is written atomically (temp file, then rename), so a reader sees the old
//! state or the new one, never half of one, whatever process crashes. There is no fsync: the
//! page cache outlives any process crash, and a power loss ends the commands too — a run whose
//! records were lost with it is reconciled as `abandoned`, which is then the truth.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use aside_proto::Spec;
use jiff::Timestamp;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// What the daemon asks the shim to run.
pub const SPEC_FILE: &str = "spec.json";
/// What the shim started.
pub const SHIM_FILE: &str = "shim.json";
/// How it ended.
pub const EXIT_FILE: &str = "exit.json";
/// A pending stop request.
pub const CONTROL_FILE: &str = "control.json";
/// The log segments.
pub const LOG_DIR: &str = "log";
/// The shim's own diagnostics.
pub const SHIM_LOG: &str = "shim.log";
/// The FIFO that is an interactive run's stdin.
pub const STDIN_FIFO: &str = "stdin";
/// Lines the shim writes first into the log as `[aside]` annotations (a JSON list of strings,
/// written by the daemon before the shim starts), e.g. why the run was restarted.
pub const NOTES_FILE: &str = "notes.json";
/// Which process a run belongs to ([`ProcessRecord`]).
pub const PROCESS_FILE: &str = "process.json";
/// Space the shim holds for its own records on a full disk.
pub const RESERVE_FILE: &str = "exit.reserve";
/// Size of [`RESERVE_FILE`]: far more than `shim.json` and `exit.json` need.
pub const RESERVE_BYTES: usize = 64 * 1024;

/// Written by the shim once the command is started: enough to find it again after a daemon
/// restart and to tell it from a later process that reused a pid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimRecord {
    /// The shim's pid.
    pub shim_pid: i32,
    /// The shim's start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub shim_starttime: u64,
    /// Pid of the main process; also its process group and session id.
    pub pid: i32,
    /// The main process's start time in clock ticks since boot.
    pub starttime: u64,
    /// When the command was started.
    pub started_at: Timestamp,
}

/// Which process a run is of, written by the daemon beside the spec: enough to rebuild the
/// process's record when the database is lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// Process id.
    pub process_id: String,
    /// Its name.
    pub name: String,
    /// Its owner.
    pub owner: String,
    /// Its team.
    pub team: Option<String>,
    /// Its project.
    pub project: Option<String>,
    /// What it is for.
    pub description: Option<String>,
    /// This run's number among the process's runs (0 first).
    pub seq: u32,
}

/// A stop request from the daemon to the shim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopControl {
    /// The first signal to send to every process of the tree.
    pub signal: i32,
    /// Time after it before SIGKILL, in ms.
    pub grace_ms: u64,
    /// Owner that asked.
    pub requested_by: String,
}

/// Written by the shim, last: how the run ended. Its presence means the run is over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Exit code, when the main process exited normally.
    pub exit_code: Option<i32>,
    /// Signal number, when a signal ended it.
    pub signal: Option<i32>,
    /// When the tree was gone and output drained.
    pub ended_at: Timestamp,
    /// The timeout fired.
    pub timed_out: bool,
    /// The stop request that ended it, if any.
    pub stop: Option<StopControl>,
    /// Why the command could not be started.
    pub error: Option<String>,
    /// Output bytes on stdout.
    pub stdout_bytes: u64,
    /// Output bytes on stderr.
    pub stderr_bytes: u64,
}

/// A run's directory and typed access to its files.
#[derive(Debug, Clone)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// The run directory at `path` (not created).
    pub fn new(path: impl Into<PathBuf>) -> RunDir {
        RunDir { path: path.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The log segment directory.
    pub fn log_dir(&self) -> PathBuf {
        self.path.join(LOG_DIR)
    }

    /// Creates the directory (0700) and writes the spec. Errors: the disk refused.
    pub fn create(&self, spec: &Spec) -> io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.path)?;
        self.write(SPEC_FILE, spec)
    }

    /// Reads and parses `name`; `Ok(None)` when the file does not exist.
    pub fn read<T: DeserializeOwned>(&self, name: &str) -> io::Result<Option<T>> {
        match fs::read(self.path.join(name)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{name}: {e}"))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes `name` atomically (temp file, then rename).
    pub fn write<T: Serialize>(&self, name: &str, value: &T) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
        let tmp = self.path.join(format!(".{name}.tmp"));
        {
            // Not O_TRUNC: on ext4, truncating a file to empty makes its close start writing it
            // to disk (auto_da_alloc), which in a prepared run directory (whose temp files are
            // there, empty) put a disk write into every run's start. What a longer leftover
            // held past the new content is cut instead.
            let mut f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            if f.metadata()?.len() > bytes.len() as u64 {
                f.set_len(bytes.len() as u64)?;
            }
        }
        fs::rename(&tmp, self.path.join(name))
    }

    /// Makes the directory of a run that has not come yet (for a prestarted shim), with what
    /// every run writes already there as empty files (`log/`, `shim.log`, the temp files of
    /// `spec.json`, `process.json`, `shim.json` and `exit.json`): creating files is most of
    /// what preparing a run costs on some filesystems (measured: 40 µs per new file on ext4
    /// without a journal, 2 µs to open one that is there), and here it happens before the run
    /// is asked for, not between its `run` and the answer, or between its end and its result.
    /// [`RunDir::create`] and [`RunDir::write`] then fill them in. A prepared directory holds
    /// no `spec.json`: it is no run to `recover`, and its shim removes it when it is not used.
    pub fn prepare(&self) -> io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(self.log_dir())?;
        for name in [
            SHIM_LOG.to_string(),
            format!(".{SPEC_FILE}.tmp"),
            format!(".{PROCESS_FILE}.tmp"),
            format!(".{SHIM_FILE}.tmp"),
            format!(".{EXIT_FILE}.tmp"),
        ] {
            OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(self.path.join(name))?;
        }
        Ok(())
    }

    /// Sets [`RESERVE_BYTES`] aside in [`RESERVE_FILE`] (real blocks, not a sparse file);
    /// a reserve already whole (set aside by a prestarted shim) is kept. Errors: the disk is
    /// full already.
    pub fn reserve(&self) -> io::Result<()> {
        let path = self.path.join(RESERVE_FILE);
        if fs::metadata(&path).is_ok_and(|m| m.len() == RESERVE_BYTES as u64) {
            return Ok(());
        }
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(&[0u8; RESERVE_BYTES])?;
        Ok(())
    }

    /// Frees the reserve (it may be gone already).
    pub fn release_reserve(&self) {
        if let Err(e) = fs::remove_file(self.path.join(RESERVE_FILE))
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::debug!("cannot remove {RESERVE_FILE}: {e}");
        }
    }

    /// Writes `name` like [`RunDir::write`], but on a full disk frees the reserve and tries
    /// again, and then again every `retry` until it lands (space freed by someone else): for
    /// the records a run's result depends on. Returns the last error when `attempts` ran out
    /// (`None`: never), or at once when the run directory itself is gone (removed with the
    /// state directory: nothing will ever land, and a shim must not wait for ever).
    pub fn write_durably<T: Serialize>(
        &self,
        name: &str,
        value: &T,
        retry: std::time::Duration,
        attempts: Option<usize>,
    ) -> io::Result<()> {
        let mut tries = 0usize;
        loop {
            match self.write(name, value) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    // The half-written temp file, if it was made; the next try replaces it.
                    let tmp = self.path.join(format!(".{name}.tmp"));
                    if let Err(e) = fs::remove_file(&tmp)
                        && e.kind() != io::ErrorKind::NotFound
                    {
                        tracing::debug!("cannot remove {}: {e}", tmp.display());
                    }
                    if !self.path.is_dir() {
                        return Err(e);
                    }
                    if tries == 0 {
                        // The first failure uses the space held back for this.
                        self.release_reserve();
                    } else if attempts.is_some_and(|n| tries >= n) {
                        return Err(e);
                    } else {
                        std::thread::sleep(retry);
                    }
                    tries += 1;
                }
            }
        }
    }

    /// The spec, if written.
    pub fn spec(&self) -> io::Result<Option<Spec>> {
        self.read(SPEC_FILE)
    }

    /// The shim record, if written.
    pub fn shim(&self) -> io::Result<Option<ShimRecord>> {
        self.read(SHIM_FILE)
    }

    /// The exit record, if written.
    pub fn exit(&self) -> io::Result<Option<ExitRecord>> {
        self.read(EXIT_FILE)
    }
}

#[cfg(test)]
mod tests {
    use super::RunDir;

    #[test]
    fn a_durable_write_into_a_removed_run_directory_gives_up_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let rd = RunDir::new(dir.path().join("run"));
        std::fs::create_dir(rd.path()).unwrap();
        rd.write_durably("x.json", &1, std::time::Duration::from_secs(1), None)
            .unwrap();
        std::fs::remove_dir_all(rd.path()).unwrap();
        let started = std::time::Instant::now();
        let err = rd
            .write_durably("x.json", &2, std::time::Duration::from_secs(1), None)
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
        assert!(started.elapsed() < std::time::Duration::from_millis(500));
    }

    #[test]
    fn a_write_over_a_longer_leftover_temp_file_keeps_only_the_new_content() {
        let dir = tempfile::tempdir().unwrap();
        let rd = RunDir::new(dir.path().join("run"));
        rd.prepare().unwrap();
        // A temp file left longer by an earlier write that failed before its rename.
        std::fs::write(rd.path().join(".spec.json.tmp"), vec![b'x'; 10_000]).unwrap();
        rd.write("spec.json", &vec![1, 2, 3]).unwrap();
        assert_eq!(
            rd.read::<Vec<i32>>("spec.json").unwrap(),
            Some(vec![1, 2, 3])
        );
        // And into the empty temp file a prepared directory holds.
        rd.write("process.json", &"p").unwrap();
        assert_eq!(
            rd.read::<String>("process.json").unwrap().as_deref(),
            Some("p")
        );
    }
}
