//! `StateDir`: where `aside` keeps its state, and where its socket lives.
//!
//! The state directory is `$ASIDE_HOME` when set, else `$XDG_STATE_HOME/aside`, else
//! `~/.local/state/aside`. The socket is `aside.sock` in a 0700 directory: `$ASIDE_HOME/run`
//! when `ASIDE_HOME` is set (so every test's state is self-contained), else
//! `$XDG_RUNTIME_DIR/aside` when that is set, else `<state>/run`.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Longest Unix socket path Linux accepts (`sun_path` is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The resolved locations of one `aside` instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    root: PathBuf,
    socket_dir: PathBuf,
}

impl StateDir {
    /// Resolves the locations from the environment (see the module docs). Errors: no
    /// `ASIDE_HOME`, `XDG_STATE_HOME` or `HOME` to start from.
    pub fn from_env() -> io::Result<StateDir> {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        if let Some(home) = var("ASIDE_HOME") {
            return Ok(StateDir::at(&home));
        }
        let root = if let Some(x) = var("XDG_STATE_HOME") {
            x.join("aside")
        } else if let Some(h) = var("HOME") {
            h.join(".local/state/aside")
        } else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "cannot find a state directory: set ASIDE_HOME (or HOME)",
            ));
        };
        let socket_dir = match var("XDG_RUNTIME_DIR") {
            Some(r) => r.join("aside"),
            None => root.join("run"),
        };
        Ok(StateDir { root, socket_dir })
    }

    /// A self-contained instance rooted at `root` (socket in `root/run`).
    pub fn at(root: &Path) -> StateDir {
        let root = if root.is_absolute() {
            root.to_path_buf()
        } else {
            std::env::current_dir().unwrap_or_default().join(root)
        };
        StateDir {
            socket_dir: root.join("run"),
            root,
        }
    }

    /// The state directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The SQLite database.
    pub fn db(&self) -> PathBuf {
        self.root.join("aside.db")
    }

    /// Directory of the per-run directories.
    pub fn runs(&self) -> PathBuf {
        self.root.join("runs")
    }

    /// One run's directory.
    pub fn run_dir(&self, run_id: &str) -> PathBuf {
        self.runs().join(run_id)
    }

    /// The daemon's single-instance lock file.
    pub fn lock(&self) -> PathBuf {
        self.root.join("daemon.lock")
    }

    /// The audit log (who stopped, restarted or was refused what).
    pub fn audit_log(&self) -> PathBuf {
        self.root.join("audit.log")
    }

    /// The dashboard token (0600): the secret `aside web` hands to the browser once.
    pub fn web_token(&self) -> PathBuf {
        self.root.join("web-token")
    }

    /// The port the last dashboard listened on (0600), tried first by the next `aside web`.
    pub fn web_port(&self) -> PathBuf {
        self.root.join("web-port")
    }

    /// The default permission policy file.
    pub fn default_policy(&self) -> PathBuf {
        self.root.join("policy.json")
    }

    /// Moves `file` to `file.1` (replacing an older one) when it is larger than `max_bytes`, so
    /// logs that only ever grow keep at most about twice that. Errors are ignored: a log that
    /// cannot be rotated keeps growing rather than stop anything.
    pub fn rotate_if_larger(file: &Path, max_bytes: u64) {
        if fs::metadata(file).is_ok_and(|m| m.len() > max_bytes) {
            let mut old = file.as_os_str().to_owned();
            old.push(".1");
            if let Err(e) = fs::rename(file, old) {
                tracing::warn!("cannot rotate {}: {e}; it keeps growing", file.display());
            }
        }
    }

    /// Output of the latest host session a wake resumed for an owner (0600), for post-mortems
    /// of a resume that failed: `wake/<owner, path-safe>.log`.
    pub fn wake_log(&self, owner: &str) -> PathBuf {
        let safe: String = owner
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.root.join("wake").join(format!("{safe}.log"))
    }

    /// The daemon's own log.
    pub fn daemon_log(&self) -> PathBuf {
        self.root.join("daemon.log")
    }

    /// The directory holding the socket (0700).
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The API socket.
    pub fn socket(&self) -> PathBuf {
        self.socket_dir.join("aside.sock")
    }

    /// Creates the state, runs and socket directories with mode 0700 and checks that they are
    /// writable. Errors say which directory failed and why.
    pub fn ensure(&self) -> io::Result<()> {
        for dir in [self.root.clone(), self.runs(), self.socket_dir.clone()] {
            let made = fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir);
            if let Err(e) = made {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot create state directory {}: {e}", dir.display()),
                ));
            }
        }
        // State and socket directories must be private even if they existed before: the
        // database and run directories hold commands' environments.
        for dir in [&self.root, &self.socket_dir] {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot make {} private: {e}", dir.display()),
                )
            })?;
        }
        let probe = self.root.join(".write-probe");
        fs::write(&probe, b"").map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "state directory {} is not writable: {e}; fix its permissions or set ASIDE_HOME",
                    self.root.display()
                ),
            )
        })?;
        if let Err(e) = fs::remove_file(&probe) {
            // Harmless: an empty file left in the state directory.
            tracing::debug!("cannot remove {}: {e}", probe.display());
        }
        let len = self.socket().as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "socket path {} is {len} bytes, over the {MAX_SOCKET_PATH}-byte limit of Unix sockets: use a shorter ASIDE_HOME",
                    self.socket().display()
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_past_its_size_moves_aside_once() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("daemon.log");
        fs::write(&log, vec![b'x'; 100]).unwrap();
        StateDir::rotate_if_larger(&log, 1000);
        assert!(log.exists(), "small logs stay");
        StateDir::rotate_if_larger(&log, 10);
        assert!(!log.exists());
        assert_eq!(
            fs::read(dir.path().join("daemon.log.1")).unwrap().len(),
            100
        );
    }
}
