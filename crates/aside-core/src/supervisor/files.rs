//! File watching: restart a process when files matching its `watch` globs change.
//!
//! One inotify watcher serves the whole daemon (it also follows logs; see
//! [`Supervisor::open`]). Directories are watched one by one, never recursively by the kernel,
//! so `.git`, `node_modules`, `target`, `__pycache__`, the `watch_ignore` globs and the state
//! directory are never entered (recursive watches there exhaust `max_user_watches`), and a
//! file saved by rename is still seen. New directories are watched as they appear. Changes are
//! debounced: a restart happens 500 ms after the last matching change (agent-procs' debounce).

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aside_proto::{DEFAULT_WATCH_IGNORE, RestartState, WatchSpec};
use globset::{Glob, GlobSet, GlobSetBuilder};
use tokio::sync::{Notify, mpsc};

use super::{Error, Requester, Result, Supervisor, lock};

/// Quiet time after the last change before the restart.
const DEBOUNCE: Duration = Duration::from_millis(500);
/// Most directories one process's watch may cover.
const MAX_DIRS: usize = 20_000;

/// A filesystem change the watcher saw outside the run directories.
#[derive(Debug)]
pub(super) struct FileEvent {
    pub(super) path: PathBuf,
    pub(super) created: bool,
}

struct Entry {
    root: PathBuf,
    patterns: GlobSet,
    ignore: GlobSet,
    dirs: Vec<PathBuf>,
    kick: Arc<Notify>,
    /// The last path that matched, for the restart annotation.
    last: Arc<std::sync::Mutex<Option<PathBuf>>>,
}

/// Watched processes and the directories watched for them.
#[derive(Default)]
pub(super) struct WatchState {
    entries: HashMap<String, Entry>,
    dirs: HashMap<PathBuf, usize>,
    /// Changes from the watcher callback, until the router task takes them.
    pub(super) rx: Option<mpsc::UnboundedReceiver<FileEvent>>,
}

impl WatchState {
    /// Empty, taking the watcher callback's changes from `rx`.
    pub(super) fn new(rx: mpsc::UnboundedReceiver<FileEvent>) -> WatchState {
        WatchState {
            rx: Some(rx),
            ..Default::default()
        }
    }
}

fn glob_set(globs: &[String], what: &str) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for g in globs {
        b.add(Glob::new(g).map_err(|e| Error::Invalid(format!("invalid {what} glob {g:?}: {e}")))?);
    }
    b.build()
        .map_err(|e| Error::Invalid(format!("invalid {what} globs: {e}")))
}

/// Compiles a watch spec's globs. Errors: an invalid glob.
pub(super) fn compile(w: &WatchSpec) -> Result<(GlobSet, GlobSet)> {
    Ok((
        glob_set(&w.patterns, "watch")?,
        glob_set(&w.ignore, "watch_ignore")?,
    ))
}

fn ignored(rel: &Path, ignore: &GlobSet) -> bool {
    rel.components().any(|c| match c {
        Component::Normal(n) => DEFAULT_WATCH_IGNORE.iter().any(|i| n == *i),
        _ => false,
    }) || ignore.is_match(rel)
}

impl Supervisor {
    /// Directories under `root` to watch: `start` and its subdirectories, skipping ignored
    /// ones, symlinks and the state directory.
    fn dirs_to_watch(&self, root: &Path, start: &Path, ignore: &GlobSet) -> Vec<PathBuf> {
        let state = self.inner.state.root().to_path_buf();
        let mut out = Vec::new();
        let mut stack = vec![start.to_path_buf()];
        while let Some(d) = stack.pop() {
            if d.starts_with(&state) || out.len() >= MAX_DIRS {
                continue;
            }
            if let Ok(rel) = d.strip_prefix(root)
                && !rel.as_os_str().is_empty()
                && ignored(rel, ignore)
            {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            out.push(d);
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
        out
    }

    fn add_dirs(&self, dirs: &[PathBuf]) {
        use notify::Watcher;
        let mut state = lock(&self.inner.watches);
        let mut watcher = lock(&self.inner.watcher);
        for d in dirs {
            let n = state.dirs.entry(d.clone()).or_insert(0);
            *n += 1;
            if *n == 1
                && let Some(w) = watcher.as_mut()
                && let Err(e) = w.watch(d, notify::RecursiveMode::NonRecursive)
            {
                tracing::warn!("cannot watch {}: {e}", d.display());
            }
        }
    }

    /// Starts (or replaces) the file watch of a process.
    pub(super) fn watch_files(&self, process_id: &str, w: &WatchSpec) {
        self.unwatch_files(process_id);
        let Ok((patterns, ignore)) = compile(w) else {
            return;
        };
        self.start_file_router();
        let root = PathBuf::from(&w.root);
        let dirs = self.dirs_to_watch(&root, &root, &ignore);
        self.add_dirs(&dirs);
        let kick = Arc::new(Notify::new());
        let last = Arc::new(std::sync::Mutex::new(None));
        lock(&self.inner.watches).entries.insert(
            process_id.to_string(),
            Entry {
                root,
                patterns,
                ignore,
                dirs,
                kick: Arc::clone(&kick),
                last: Arc::clone(&last),
            },
        );
        let me = self.clone();
        let id = process_id.to_string();
        tokio::spawn(async move {
            loop {
                kick.notified().await;
                // Debounce: wait until changes stop for DEBOUNCE.
                while tokio::time::timeout(DEBOUNCE, kick.notified())
                    .await
                    .is_ok()
                {}
                let still = lock(&me.inner.watches)
                    .entries
                    .get(&id)
                    .is_some_and(|e| Arc::ptr_eq(&e.kick, &kick));
                if !still {
                    return;
                }
                let changed = lock(&last).take();
                me.watch_restart(&id, changed).await;
            }
        });
    }

    /// True when some process is watched.
    pub(super) fn watching(&self) -> bool {
        !lock(&self.inner.watches).entries.is_empty()
    }

    /// Whether process `process_id`'s files are watched (a change may start it again).
    pub(super) fn watches(&self, process_id: &str) -> bool {
        lock(&self.inner.watches).entries.contains_key(process_id)
    }

    /// Stops the file watch of a process, if it has one.
    pub(super) fn unwatch_files(&self, process_id: &str) {
        use notify::Watcher;
        let mut state = lock(&self.inner.watches);
        let Some(entry) = state.entries.remove(process_id) else {
            return;
        };
        entry.kick.notify_one(); // lets its task see it is gone
        let mut watcher = lock(&self.inner.watcher);
        for d in entry.dirs {
            if let Some(n) = state.dirs.get_mut(&d) {
                *n -= 1;
                if *n == 0 {
                    state.dirs.remove(&d);
                    if let Some(w) = watcher.as_mut() {
                        // Gone with the directory already, if it was removed.
                        if let Err(e) = w.unwatch(&d) {
                            tracing::debug!("unwatch {}: {e}", d.display());
                        }
                    }
                }
            }
        }
    }

    /// Starts the task that matches file changes against the watches, once.
    fn start_file_router(&self) {
        let Some(mut rx) = lock(&self.inner.watches).rx.take() else {
            return;
        };
        let me = self.clone();
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                me.route_file_event(&ev);
            }
        });
    }

    fn route_file_event(&self, ev: &FileEvent) {
        if ev.path.starts_with(self.inner.state.root()) {
            return;
        }
        let is_dir = ev.path.is_dir();
        // Watches whose tree gained this directory: (process id, root, ignore globs).
        let mut grown = Vec::new();
        for (id, entry) in lock(&self.inner.watches).entries.iter() {
            let Ok(rel) = ev.path.strip_prefix(&entry.root) else {
                continue;
            };
            if ignored(rel, &entry.ignore) {
                continue;
            }
            if is_dir {
                // A new directory is watched too; directories themselves restart nothing.
                if ev.created {
                    grown.push((id.clone(), entry.root.clone(), entry.ignore.clone()));
                }
            } else if entry.patterns.is_match(rel) {
                *lock(&entry.last) = Some(rel.to_path_buf());
                entry.kick.notify_one();
            }
        }
        // Walk the new directory without holding the watch table.
        for (id, root, ignore) in grown {
            let dirs = self.dirs_to_watch(&root, &ev.path, &ignore);
            match lock(&self.inner.watches).entries.get_mut(&id) {
                Some(entry) => entry.dirs.extend(dirs.iter().cloned()),
                None => continue,
            }
            self.add_dirs(&dirs);
        }
    }

    /// Restarts a watched process after a change: the restart count is reset and a `failed`
    /// process is revived (agent-procs: watch restarts are intentional, not crashes).
    async fn watch_restart(&self, process_id: &str, changed: Option<PathBuf>) {
        let Ok(row) = self.find(process_id) else {
            self.unwatch_files(process_id);
            return;
        };
        if row.info.autorestart.is_some()
            && let Err(e) = self
                .store()
                .set_restart_state(process_id, 0, RestartState::Active)
        {
            tracing::error!("{}: {e}", row.info.reference());
        }
        let what = changed.map_or_else(|| "files".to_string(), |p| p.display().to_string());
        let note = format!("restarted: {what} changed");
        let spec = row.spec.clone();
        let who = Requester::new("watch", None);
        if let Err(e) = self.relaunch(row, spec, &who, vec![note], None).await {
            tracing::warn!("watch restart of {process_id} failed: {e}");
        }
    }
}
