//! The permission policy: what agents may start, where, and within which limits. Fail closed.
//!
//! The file is JSON, compatible with Golden Goose's process-permissions format, plus an `aside`
//! section of limits:
//!
//! ```json
//! {
//!   "allow": ["cargo test *", "npm run *"],
//!   "cwd": { "allow": ["./", "/packages/*", "~/code/*", "//tmp/x-*"] },
//!   "limits": { "max_processes_per_owner": 8, "max_processes_per_team": 32,
//!               "max_timeout": "1h", "max_log_cap": "64MiB", "team_may_stop": false }
//! }
//! ```
//!
//! - `allow`: command patterns where `*` matches anything (a trailing ` *` also matches the bare
//!   command). A shell command is split on `&&`, `||`, `;`, `|`, `&` and newlines (outside
//!   quotes) and *every* segment must match a pattern. Syntax the matcher cannot judge —
//!   backticks, `$(…)`, subshells `( … )`, unterminated quotes — is refused unless a pattern
//!   equals the whole command verbatim. No `allow` key: nothing is allowed (`["*"]` allows all).
//! - `cwd.allow`: roots a working directory must lie in (the root itself or below). `./` and
//!   `/x/*` are relative to the workspace (the policy file's directory, Golden Goose's
//!   convention), `~/` to the home directory, `//abs/*` is the absolute `/abs/*`. In paths `*`
//!   matches within one component. No `cwd` key: any directory.
//! - `env.allow`: variable names (a trailing `*` matches any suffix) agents may set although
//!   they are on the deny list of [`judge`] (`LD_*`, `BASH_ENV`, `PATH` outside the roots, …).
//! - Unknown keys are errors.
//!
//! Beyond the command text, [`Policy::judge`] judges what else a request makes the machine do:
//! redirections, the environment, readiness probes and where probes and webhooks connect (see
//! [`judge`]).
//!
//! No file: [`Policy::builtin`] (everything allowed, with limits). A valid file: only what it
//! allows. An invalid file — or a path that exists but cannot be read as one (a dangling
//! symlink, a directory, no permission) — : every agent request is refused with the file, line
//! and reason,
//! while humans and reads are served; a corrected file is picked up without a restart
//! ([`PolicyStore`]).

use std::fmt;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use aside_proto::Command;
use serde::Deserialize;

use crate::units::{parse_bytes, parse_duration_ms};

pub mod judge;
pub use judge::{DENIED_ENV, Trusted};

/// Built-in cap on live processes per owner.
pub const BUILTIN_MAX_PER_OWNER: usize = 32;
/// Built-in cap on live processes per team.
pub const BUILTIN_MAX_PER_TEAM: usize = 128;
/// Built-in cap on a run's log cap: 64 MiB.
pub const BUILTIN_MAX_LOG_CAP: u64 = 64 * 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    allow: Option<Vec<String>>,
    cwd: Option<CwdSection>,
    env: Option<EnvSection>,
    limits: Option<LimitsFile>,
    slurm: Option<SlurmFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlurmFile {
    partitions: Vec<String>,
    max_cpus: Option<u32>,
    max_mem: Option<serde_json::Value>,
    max_gpus: Option<u32>,
    max_nodes: Option<u32>,
}

/// What agents may ask of the Slurm cluster (the policy's `slurm` section); without one,
/// agents may not use it at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmAllowance {
    /// Partitions agents may submit to; `"*"` is any (the cluster's default included).
    pub partitions: Vec<String>,
    /// Most CPUs per task.
    pub max_cpus: Option<u32>,
    /// Most memory per node, in MiB.
    pub max_mem_mib: Option<u64>,
    /// Most GPUs.
    pub max_gpus: Option<u32>,
    /// Most nodes.
    pub max_nodes: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvSection {
    allow: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CwdSection {
    allow: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    max_processes_per_owner: Option<usize>,
    max_processes_per_team: Option<usize>,
    max_timeout: Option<String>,
    max_log_cap: Option<serde_json::Value>,
    team_may_stop: Option<bool>,
}

/// The limits in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Live processes one owner may have.
    pub max_processes_per_owner: usize,
    /// Live processes one team may have.
    pub max_processes_per_team: usize,
    /// Longest timeout in ms; runs without one get this one.
    pub max_timeout_ms: Option<u64>,
    /// Largest log cap in bytes.
    pub max_log_cap: u64,
    /// Whether members of a team may stop each other's processes.
    pub team_may_stop: bool,
}

/// An invalid policy file: where, and why. Every agent request is refused with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid policy {}", self.path.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for PolicyError {}

/// A cwd root, resolved to an absolute path pattern.
#[derive(Debug, Clone)]
struct CwdRoot {
    entry: String,
    pattern: PathBuf,
}

/// A parsed policy.
#[derive(Debug, Clone)]
pub struct Policy {
    source: Option<PathBuf>,
    /// `None`: every command (built-in policy).
    allow: Option<Vec<String>>,
    /// `None`: every directory.
    cwd: Option<Vec<CwdRoot>>,
    /// Variable names agents may set although they are denied by default.
    env_allow: Vec<String>,
    /// Limits in force.
    pub limits: Limits,
    /// What agents may run on Slurm (`None`: nothing).
    pub slurm: Option<SlurmAllowance>,
}

/// Why a command or directory is allowed, or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed; each `(segment, rule)` says which rule allowed which part.
    Allowed(Vec<(String, String)>),
    /// Refused, with the reason (which segment, what syntax, which directory).
    Refused(String),
}

impl Verdict {
    /// True for [`Verdict::Allowed`].
    pub fn is_allowed(&self) -> bool {
        matches!(self, Verdict::Allowed(_))
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

impl Policy {
    /// The policy without a file: every command and directory, with the built-in limits.
    pub fn builtin() -> Policy {
        Policy {
            source: None,
            allow: None,
            cwd: None,
            env_allow: Vec::new(),
            limits: Limits {
                max_processes_per_owner: BUILTIN_MAX_PER_OWNER,
                max_processes_per_team: BUILTIN_MAX_PER_TEAM,
                max_timeout_ms: None,
                max_log_cap: BUILTIN_MAX_LOG_CAP,
                team_may_stop: false,
            },
            slurm: None,
        }
    }

    /// The file this policy came from (`None` for the built-in one).
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// Loads the policy at `path`: `Ok(None)` when there is no file. Errors name the file,
    /// line, column and reason.
    pub fn load(path: &Path) -> Result<Option<Policy>, PolicyError> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            // Nothing there at all: the built-in policy. A link to nothing fails closed.
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && fs::symlink_metadata(path).is_err() =>
            {
                return Ok(None);
            }
            Err(e) => {
                return Err(PolicyError {
                    path: path.to_path_buf(),
                    line: None,
                    column: None,
                    reason: format!("cannot read it: {e}"),
                });
            }
        };
        Policy::parse(path, &text).map(Some)
    }

    /// Parses policy `text` as if read from `path` (which sets the workspace for relative cwd
    /// roots).
    pub fn parse(path: &Path, text: &str) -> Result<Policy, PolicyError> {
        let err = |line, column, reason: String| PolicyError {
            path: path.to_path_buf(),
            line,
            column,
            reason,
        };
        let file: PolicyFile = serde_json::from_str(text).map_err(|e| {
            // serde_json appends " at line L column C"; we say it in front instead.
            let msg = e.to_string();
            let reason = msg
                .rsplit_once(" at line ")
                .map_or(msg.as_str(), |(r, _)| r)
                .to_string();
            // serde_json points after an unknown key; point at the key itself.
            let mut column = e.column();
            if let Some(key) = reason
                .strip_prefix("unknown field `")
                .and_then(|r| r.split('`').next())
                && let Some(line) = text.lines().nth(e.line().saturating_sub(1))
                && let Some(at) = line.find(&format!("\"{key}\""))
            {
                column = line[..at].chars().count() + 1;
            }
            err(Some(e.line()), Some(column), reason)
        })?;
        // Semantic errors point at the key's first occurrence.
        let at = |key: &str| {
            text.find(&format!("\"{key}\""))
                .map(|off| line_col(text, off))
                .map_or((None, None), |(l, c)| (Some(l), Some(c)))
        };
        let mut limits = Policy::builtin().limits;
        if let Some(l) = file.limits {
            if let Some(n) = l.max_processes_per_owner {
                limits.max_processes_per_owner = n;
            }
            if let Some(n) = l.max_processes_per_team {
                limits.max_processes_per_team = n;
            }
            if let Some(t) = l.max_timeout {
                let ms = parse_duration_ms(&t).map_err(|r| {
                    let (line, col) = at("max_timeout");
                    err(line, col, format!("limits.max_timeout: {r}"))
                })?;
                limits.max_timeout_ms = Some(ms);
            }
            if let Some(v) = l.max_log_cap {
                let bytes = match &v {
                    serde_json::Value::Number(n) => {
                        n.as_u64().ok_or("not a whole number".to_string())
                    }
                    serde_json::Value::String(s) => parse_bytes(s),
                    _ => Err("use a number of bytes or a string like \"64MiB\"".to_string()),
                };
                limits.max_log_cap = bytes.map_err(|r| {
                    let (line, col) = at("max_log_cap");
                    err(line, col, format!("limits.max_log_cap: {r}"))
                })?;
            }
            if let Some(b) = l.team_may_stop {
                limits.team_may_stop = b;
            }
        }
        let slurm = match file.slurm {
            None => None,
            Some(f) => {
                let max_mem_mib = match f.max_mem {
                    None => None,
                    Some(v) => {
                        let bytes = match &v {
                            serde_json::Value::String(s) => parse_bytes(s),
                            _ => Err("use a string like \"16GiB\"".to_string()),
                        };
                        Some(
                            bytes.map_err(|r| {
                                let (line, col) = at("max_mem");
                                err(line, col, format!("slurm.max_mem: {r}"))
                            })? / (1024 * 1024),
                        )
                    }
                };
                Some(SlurmAllowance {
                    partitions: f.partitions,
                    max_cpus: f.max_cpus,
                    max_mem_mib,
                    max_gpus: f.max_gpus,
                    max_nodes: f.max_nodes,
                })
            }
        };
        let workspace = path
            .parent()
            .map(|p| fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()))
            .unwrap_or_default();
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let cwd = match file.cwd {
            None => None,
            Some(section) => {
                let mut roots = Vec::new();
                for entry in section.allow {
                    let pattern = if let Some(abs) = entry.strip_prefix("//") {
                        PathBuf::from("/").join(abs)
                    } else if let Some(rest) =
                        entry
                            .strip_prefix("~/")
                            .or(if entry == "~" { Some("") } else { None })
                    {
                        match &home {
                            Some(h) => h.join(rest),
                            None => {
                                let (line, col) = at("cwd");
                                return Err(err(
                                    line,
                                    col,
                                    format!(
                                        "cwd.allow entry {entry:?} needs $HOME, which is not set"
                                    ),
                                ));
                            }
                        }
                    } else {
                        let rel = entry.trim_start_matches('/');
                        workspace.join(rel)
                    };
                    roots.push(CwdRoot {
                        entry,
                        pattern: normalize(&pattern),
                    });
                }
                Some(roots)
            }
        };
        Ok(Policy {
            source: Some(path.to_path_buf()),
            allow: Some(file.allow.unwrap_or_default()),
            cwd,
            env_allow: file.env.map(|e| e.allow).unwrap_or_default(),
            limits,
            slurm,
        })
    }

    /// One paragraph saying what this policy allows and its limits.
    pub fn describe(&self) -> String {
        let rules = match &self.allow {
            None => "every command".to_string(),
            Some(r) if r.is_empty() => {
                "no command (there is no \"allow\" rule; [\"*\"] allows all)".to_string()
            }
            Some(r) => format!(
                "{} command rule{}",
                r.len(),
                if r.len() == 1 { "" } else { "s" }
            ),
        };
        let cwd = match &self.cwd {
            None => "any directory".to_string(),
            Some(r) => format!(
                "directories under {}",
                r.iter()
                    .map(|c| c.entry.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let l = &self.limits;
        format!(
            "allows {rules} in {cwd}; at most {} running processes per owner and {} per team, timeout {}, log cap {} bytes, team members {} stop each other's processes",
            l.max_processes_per_owner,
            l.max_processes_per_team,
            l.max_timeout_ms
                .map_or("unlimited".to_string(), |ms| format!("at most {ms} ms")),
            l.max_log_cap,
            if l.team_may_stop { "may" } else { "may not" }
        )
    }

    /// Judges a command with no directory to resolve relative redirections in: every segment
    /// must match an `allow` pattern (see [`Policy::check_command_in`]).
    pub fn check_command(&self, cmd: &Command) -> Verdict {
        self.check_command_in(cmd, None)
    }

    /// Judges a working directory: it must lie in a `cwd.allow` root.
    pub fn check_cwd(&self, cwd: &Path) -> Verdict {
        let Some(roots) = &self.cwd else {
            return Verdict::Allowed(vec![(cwd.display().to_string(), "any directory".into())]);
        };
        let real = fs::canonicalize(cwd).unwrap_or_else(|_| normalize(cwd));
        if let Some(entry) = self.root_of(&real) {
            return Verdict::Allowed(vec![(real.display().to_string(), entry.to_string())]);
        }
        Verdict::Refused(format!(
            "{} is not under any cwd.allow root ({})",
            real.display(),
            roots
                .iter()
                .map(|r| r.entry.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

impl Policy {
    /// The `cwd.allow` entry whose root holds the (resolved) path `real`, if any.
    fn root_of(&self, real: &Path) -> Option<&str> {
        let roots = self.cwd.as_ref()?;
        roots
            .iter()
            .find(|root| real.ancestors().any(|a| path_matches(&root.pattern, a)))
            .map(|root| root.entry.as_str())
    }
}

/// Lexically resolves `.` and `..` (no filesystem access).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// `*` matches any run of characters (spaces included); a trailing ` *` also matches nothing,
/// so `cargo test *` allows `cargo test`.
pub fn command_matches(rule: &str, cmd: &str) -> bool {
    glob(rule.as_bytes(), cmd.as_bytes(), None)
        || rule
            .strip_suffix(" *")
            .is_some_and(|bare| glob(bare.as_bytes(), cmd.as_bytes(), None))
}

fn path_matches(pattern: &Path, path: &Path) -> bool {
    let (p, s) = (
        pattern.as_os_str().as_encoded_bytes(),
        path.as_os_str().as_encoded_bytes(),
    );
    glob(
        p.strip_suffix(b"/").unwrap_or(p),
        s.strip_suffix(b"/").unwrap_or(s),
        Some(b'/'),
    )
}

/// Wildcard match where `*` matches any bytes except `stop`.
fn glob(pat: &[u8], s: &[u8], stop: Option<u8>) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() && pat[p] == b'*' {
            star = Some((p, i));
            p += 1;
        } else if p < pat.len() && pat[p] == s[i] {
            p += 1;
            i += 1;
        } else if let Some((sp, si)) = star
            && Some(s[si]) != stop
        {
            p = sp + 1;
            i = si + 1;
            star = Some((sp, si + 1));
        } else {
            return false;
        }
    }
    while p < pat.len() && pat[p] == b'*' {
        p += 1;
    }
    p == pat.len()
}

/// Splits a shell command into its simple-command segments on `&&`, `||`, `;`, `|`, `&` and
/// newlines outside quotes. Errors name the syntax it cannot judge.
pub fn split_segments(cmd: &str) -> Result<Vec<String>, String> {
    let mut segs = Vec::new();
    let mut cur = String::new();
    let mut chars = cmd.chars().peekable();
    let (mut single, mut double) = (false, false);
    while let Some(c) = chars.next() {
        if single {
            cur.push(c);
            if c == '\'' {
                single = false;
            }
            continue;
        }
        match c {
            '\\' => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '`' => return Err("backticks".into()),
            '$' if chars.peek() == Some(&'(') => return Err("command substitution $(…)".into()),
            '"' => {
                double = !double;
                cur.push(c);
            }
            _ if double => cur.push(c),
            '\'' => {
                single = true;
                cur.push(c);
            }
            '(' | ')' => return Err("a subshell ( … )".into()),
            ';' | '\n' => segs.push(std::mem::take(&mut cur)),
            // `2>&1`, `<&3`, `&>file`: part of a redirection, not a separator.
            '&' if cur.ends_with(['>', '<']) || chars.peek() == Some(&'>') => cur.push(c),
            '&' | '|' => {
                if chars.peek() == Some(&c) {
                    chars.next();
                }
                segs.push(std::mem::take(&mut cur));
            }
            _ => cur.push(c),
        }
    }
    if single || double {
        return Err("an unterminated quote".into());
    }
    segs.push(cur);
    Ok(segs
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    // A dangling symlink has no target to stat: its own metadata still tells it changed.
    let m = fs::metadata(path)
        .or_else(|_| fs::symlink_metadata(path))
        .ok()?;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
    })
}

/// A loaded policy, or why the file is invalid.
type Loaded = Result<Arc<Policy>, PolicyError>;

/// The policy in force for a daemon: re-reads its file whenever it changed (size or mtime), so
/// a corrected file applies without a restart.
pub struct PolicyStore {
    path: PathBuf,
    cached: Mutex<(Option<Stamp>, Loaded)>,
}

impl PolicyStore {
    /// A store for the file at `path` (which need not exist).
    pub fn new(path: PathBuf) -> PolicyStore {
        let s = stamp(&path);
        let loaded = load_arc(&path);
        PolicyStore {
            path,
            cached: Mutex::new((s, loaded)),
        }
    }

    /// The policy file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The policy in force now, or the error that makes every agent request fail.
    pub fn current(&self) -> Loaded {
        let now = stamp(&self.path);
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if cached.0 != now {
            *cached = (now, load_arc(&self.path));
            match &cached.1 {
                Ok(p) => tracing::info!(
                    "policy: {}",
                    p.source()
                        .map_or("built-in (no file)".into(), |s| s.display().to_string())
                ),
                Err(e) => tracing::warn!("{e}: agent requests are refused until it is fixed"),
            }
        }
        cached.1.clone()
    }
}

fn load_arc(path: &Path) -> Loaded {
    Ok(Arc::new(
        Policy::load(path)?.unwrap_or_else(Policy::builtin),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: &str) -> Policy {
        Policy::parse(Path::new("/ws/policy.json"), json).unwrap()
    }

    fn shell(s: &str) -> Command {
        Command::Shell(s.into())
    }

    #[test]
    fn every_segment_must_match() {
        let p = policy(r#"{"allow": ["cargo test *", "echo *"]}"#);
        assert!(p.check_command(&shell("cargo test")).is_allowed());
        assert!(
            p.check_command(&shell("cargo test --all && echo ok"))
                .is_allowed()
        );
        assert_eq!(
            p.check_command(&shell("cargo test; rm -rf /")),
            Verdict::Refused("no allow rule matches \"rm -rf /\"".into())
        );
        assert!(!p.check_command(&shell("echo hi | sh")).is_allowed());
        assert!(!p.check_command(&shell("sleep 1 & rm x")).is_allowed());
        assert!(!p.check_command(&shell("cargo build")).is_allowed());
        // Separators inside quotes do not split; `&` in a redirection is not a separator.
        assert!(p.check_command(&shell("echo 'a && rm -rf /'")).is_allowed());
        assert_eq!(
            split_segments("make 2>&1 &>/dev/null").unwrap(),
            ["make 2>&1 &>/dev/null"]
        );
        assert_eq!(split_segments("a & b").unwrap(), ["a", "b"]);
    }

    #[test]
    fn syntax_it_cannot_judge_is_refused_unless_allowed_verbatim() {
        let p = policy(r#"{"allow": ["echo *", "echo $(date)"]}"#);
        for cmd in ["echo `id`", "echo $(id)", "(echo a)", "echo 'open"] {
            let v = p.check_command(&shell(cmd));
            assert!(
                matches!(v, Verdict::Refused(ref r) if r.contains("cannot judge")),
                "{cmd}: {v:?}"
            );
        }
        assert!(p.check_command(&shell("echo $(date)")).is_allowed());
    }

    #[test]
    fn no_allow_key_allows_nothing_and_builtin_allows_everything() {
        let p = policy(r#"{"limits": {"max_processes_per_owner": 2}}"#);
        assert!(!p.check_command(&shell("true")).is_allowed());
        assert_eq!(p.limits.max_processes_per_owner, 2);
        assert!(
            Policy::builtin()
                .check_command(&shell("rm -rf /tmp/x"))
                .is_allowed()
        );
    }

    #[test]
    fn cwd_roots_follow_golden_goose_conventions() {
        let home = std::env::var("HOME").unwrap_or_default();
        let p = policy(
            r#"{"allow": ["*"], "cwd": {"allow": ["./", "/packages/*", "~/code/*", "//tmp/x-*"]}}"#,
        );
        let ok = |d: &str| p.check_cwd(Path::new(d)).is_allowed();
        assert!(ok("/ws"));
        assert!(ok("/ws/anything/below"));
        assert!(ok("/tmp/x-1/src"));
        assert!(!ok("/tmp/y"));
        assert!(!ok("/tmp/x-1/../../etc"));
        assert!(ok(&format!("{home}/code/proj")));
        let q = policy(r#"{"allow": ["*"], "cwd": {"allow": ["/packages/*"]}}"#);
        assert!(q.check_cwd(Path::new("/ws/packages/a/src")).is_allowed());
        assert!(!q.check_cwd(Path::new("/ws")).is_allowed());
        assert!(!q.check_cwd(Path::new("/ws/other")).is_allowed());
    }

    #[test]
    fn errors_name_line_column_and_reason() {
        let e = Policy::parse(
            Path::new("/p.json"),
            "{\n  \"allow\": [\"a\"],\n  \"bogus\": 1\n}",
        )
        .unwrap_err();
        assert_eq!((e.line, e.column), (Some(3), Some(3)));
        assert!(e.reason.contains("unknown field `bogus`"), "{e}");
        assert!(
            e.to_string()
                .starts_with("invalid policy /p.json:3:3: unknown field `bogus`"),
            "{e}"
        );
        let e = Policy::parse(Path::new("/p.json"), "{\"allow\": [\"a\",]}").unwrap_err();
        assert_eq!(e.line, Some(1));
        let e = Policy::parse(
            Path::new("/p.json"),
            "{\n \"limits\": {\n  \"max_timeout\": \"soon\"\n }\n}",
        )
        .unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.reason.contains("limits.max_timeout"), "{e}");
    }

    #[test]
    fn a_policy_path_that_exists_but_cannot_be_read_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("policy.json");
        std::os::unix::fs::symlink(dir.path().join("gone.json"), &link).unwrap();
        let e = Policy::load(&link).unwrap_err();
        assert!(e.reason.contains("cannot read"), "{e}");
        let store = PolicyStore::new(link.clone());
        assert!(
            store.current().is_err(),
            "a dangling link refuses every agent"
        );
        let as_dir = dir.path().join("dir.json");
        fs::create_dir(&as_dir).unwrap();
        assert!(Policy::load(&as_dir).is_err(), "a directory");
        assert!(
            Policy::load(&dir.path().join("none.json"))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn store_reloads_a_changed_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.json");
        let store = PolicyStore::new(path.clone());
        assert!(
            store.current().unwrap().source().is_none(),
            "no file: built-in"
        );
        fs::write(&path, "{not json").unwrap();
        assert!(store.current().is_err());
        fs::write(&path, r#"{"allow": ["echo *"]}"#).unwrap();
        let p = store.current().unwrap();
        assert!(p.check_command(&shell("echo hi")).is_allowed());
        assert!(!p.check_command(&shell("ls")).is_allowed());
    }
}
