//! Linux process facts from `/proc`, process-tree signalling and signal names.
//!
//! Pids are reused, so a pid alone never identifies a process across time: every record that
//! outlives a process keeps its `starttime` (field 22 of `/proc/<pid>/stat`, in clock ticks
//! since boot) and [`is_alive`] checks both.

use std::fs;

/// The fields of `/proc/<pid>/stat` that `aside` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Process id.
    pub pid: i32,
    /// Parent pid.
    pub ppid: i32,
    /// Process group id.
    pub pgrp: i32,
    /// Session id.
    pub session: i32,
    /// State letter (`R`, `S`, `Z` for zombie, …).
    pub state: char,
    /// Start time in clock ticks since boot.
    pub starttime: u64,
    /// CPU time used in user and kernel mode, in clock ticks (fields 14 + 15).
    pub cpu_ticks: u64,
    /// Resident set size in pages (field 24).
    pub rss_pages: u64,
}

impl ProcStat {
    /// A zombie has exited and only waits to be reaped; it cannot be signalled.
    pub fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// Parses `/proc/<pid>/stat`; `None` when the process does not exist (or is unreadable).
pub fn stat(pid: i32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<ProcStat> {
    // The command name is in parentheses and may itself contain spaces and parentheses.
    let close = text.rfind(')')?;
    let pid: i32 = text[..text.find('(')?].trim().parse().ok()?;
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // fields[0] is field 3 (state); starttime is field 22.
    Some(ProcStat {
        pid,
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        session: fields.get(3)?.parse().ok()?,
        starttime: fields.get(19)?.parse().ok()?,
        cpu_ticks: fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?,
        rss_pages: fields.get(21)?.parse().ok()?,
    })
}

/// Every process visible in `/proc`.
pub fn all() -> Vec<ProcStat> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
        .collect()
}

/// CPU time and memory of a process tree (the root and all its descendants).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeUsage {
    /// CPU time in clock ticks ([`clock_ticks_per_second`]).
    pub cpu_ticks: u64,
    /// Resident memory in bytes.
    pub rss_bytes: u64,
    /// Processes in the tree.
    pub tasks: u32,
}

/// Clock ticks per second (`_SC_CLK_TCK`, 100 on Linux).
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if n > 0 { n as u64 } else { 100 }
}

/// The usage of each tree rooted at `roots`, from one scan of `/proc` (cheap enough for a
/// thousand roots: every process is read once). Roots that do not exist are left out.
pub fn tree_usage(roots: &[i32]) -> std::collections::HashMap<i32, TreeUsage> {
    use std::collections::HashMap;
    // SAFETY: sysconf has no preconditions.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as u64,
        _ => 4096,
    };
    let procs = all();
    let mut children: HashMap<i32, Vec<usize>> = HashMap::new();
    let mut by_pid: HashMap<i32, usize> = HashMap::new();
    for (i, p) in procs.iter().enumerate() {
        children.entry(p.ppid).or_default().push(i);
        by_pid.insert(p.pid, i);
    }
    let mut out = HashMap::new();
    for &root in roots {
        let Some(&first) = by_pid.get(&root) else {
            continue;
        };
        let mut usage = TreeUsage::default();
        let mut stack = vec![first];
        while let Some(i) = stack.pop() {
            let p = &procs[i];
            usage.cpu_ticks += p.cpu_ticks;
            usage.rss_bytes += p.rss_pages * page;
            usage.tasks += 1;
            if let Some(c) = children.get(&p.pid) {
                stack.extend(c);
            }
        }
        out.insert(root, usage);
    }
    out
}

/// Every descendant of `root` (children, their children, …), zombies included, `root` not.
///
/// Walks `/proc/<pid>/task/<tid>/children` (cheap: only the tree is read); falls back to a scan
/// of all of `/proc` on kernels without it.
pub fn descendants(root: i32) -> Vec<ProcStat> {
    if let Some(tree) = descendants_by_children_files(root) {
        return tree;
    }
    let procs = all();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for p in procs.iter().filter(|p| p.ppid == parent) {
            out.push(*p);
            frontier.push(p.pid);
        }
    }
    out
}

fn children(pid: i32) -> Option<Vec<i32>> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut out = Vec::new();
    for task in tasks.flatten() {
        match fs::read_to_string(task.path().join("children")) {
            Ok(text) => out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            ),
            // Without CONFIG_PROC_CHILDREN the file does not exist at all.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(_) => {}
        }
    }
    Some(out)
}

fn descendants_by_children_files(root: i32) -> Option<Vec<ProcStat>> {
    let mut out = Vec::new();
    let mut frontier = children(root)?;
    while let Some(pid) = frontier.pop() {
        if let Some(st) = stat(pid) {
            out.push(st);
            frontier.extend(children(pid).unwrap_or_default());
        }
    }
    Some(out)
}

/// Live (non-zombie) members of session `sid` that started at or after `min_starttime`.
pub fn session_members(sid: i32, min_starttime: u64) -> Vec<ProcStat> {
    all()
        .into_iter()
        .filter(|p| p.session == sid && !p.is_zombie() && p.starttime >= min_starttime)
        .collect()
}

/// True when `pid` exists, is not a zombie and, if given, started at `starttime`.
pub fn is_alive(pid: i32, starttime: Option<u64>) -> bool {
    match stat(pid) {
        Some(s) => !s.is_zombie() && starttime.is_none_or(|t| t == s.starttime),
        None => false,
    }
}

/// The shim of run directory `run_dir`, found by its command line (`aside-shim RUN_DIR`, or
/// `aside __shim RUN_DIR`), for when its `shim.json` is missing or damaged: the shim's pid and
/// start time, and its command's (the child that leads its own session), if it has one.
pub fn find_shim(run_dir: &std::path::Path) -> Option<(ProcStat, Option<ProcStat>)> {
    let want = run_dir.as_os_str().as_encoded_bytes();
    let procs = all();
    let shim = procs.iter().find(|p| {
        !p.is_zombie()
            && fs::read(format!("/proc/{}/cmdline", p.pid))
                .is_ok_and(|c| c.split(|b| *b == 0).skip(1).any(|a| a == want))
    })?;
    let command = procs
        .iter()
        .find(|c| c.ppid == shim.pid && c.session == c.pid)
        .copied();
    Some((*shim, command))
}

/// Sends `sig` to each pid; returns how many were signalled.
pub fn signal_all(pids: impl IntoIterator<Item = i32>, sig: i32) -> usize {
    pids.into_iter()
        // SAFETY: kill(2) has no memory-safety preconditions.
        .filter(|&pid| pid > 0 && unsafe { libc::kill(pid, sig) } == 0)
        .count()
}

const SIGNALS: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ABRT", libc::SIGABRT),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("WINCH", libc::SIGWINCH),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
];

/// Parses a signal as `SIGTERM`, `TERM`, `term` or `15`. Errors name the accepted forms.
pub fn parse_signal(s: &str) -> Result<i32, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
        return Err(format!("signal number {n} is out of range 1-64"));
    }
    let upper = t.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    SIGNALS
        .iter()
        .find(|(name, _)| *name == bare)
        .map(|(_, n)| *n)
        .ok_or_else(|| {
            format!(
                "unknown signal {s:?}: use a name like SIGTERM, TERM or INT, or a number like 15"
            )
        })
}

/// `SIGTERM` for 15; `SIG<n>` for numbers without a name.
pub fn signal_name(sig: i32) -> String {
    SIGNALS
        .iter()
        .find(|(_, n)| *n == sig)
        .map(|(name, _)| format!("SIG{name}"))
        .unwrap_or_else(|| format!("SIG{sig}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_and_parens_in_name() {
        let line = "4242 (a b) c) S 1 4242 4242 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 987654 0 0";
        let s = parse_stat(line).unwrap();
        assert_eq!(
            (s.pid, s.ppid, s.pgrp, s.session, s.state),
            (4242, 1, 4242, 4242, 'S')
        );
        assert_eq!(s.starttime, 987654);
    }

    #[test]
    fn own_process_is_alive_with_its_starttime() {
        let me = std::process::id() as i32;
        let st = stat(me).unwrap();
        assert!(is_alive(me, Some(st.starttime)));
        assert!(!is_alive(me, Some(st.starttime + 1)));
    }

    #[test]
    fn descendants_include_grandchildren() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & sleep 31; :"])
            .spawn()
            .unwrap();
        let me = std::process::id() as i32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut found = Vec::new();
        while std::time::Instant::now() < deadline {
            found = descendants(me);
            if found.iter().filter(|p| p.ppid == child.id() as i32).count() == 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(found.iter().any(|p| p.pid == child.id() as i32));
        assert_eq!(
            found.iter().filter(|p| p.ppid == child.id() as i32).count(),
            2
        );
        signal_all(found.iter().map(|p| p.pid), libc::SIGKILL);
        let _ = child.wait();
    }

    #[test]
    fn signal_names_round_trip() {
        assert_eq!(parse_signal("SIGTERM"), Ok(libc::SIGTERM));
        assert_eq!(parse_signal("int"), Ok(libc::SIGINT));
        assert_eq!(parse_signal("9"), Ok(9));
        assert!(parse_signal("SIGFOO").is_err());
        assert!(parse_signal("99").is_err());
        assert_eq!(signal_name(libc::SIGKILL), "SIGKILL");
    }
}
