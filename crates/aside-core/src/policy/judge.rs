//! The one judge of what an agent's request would make the machine do: beyond the command text,
//! its redirections, its environment, its readiness probe, and where its probes and webhooks
//! connect. The daemon calls [`Policy::judge`] for every agent `run` (MCP, tokens, `up`) and
//! [`Policy::check_url`] for webhooks, before anything is written.
//!
//! - **Redirections** (`>`, `>>`, `>|`, `&>`, `<`, `<>`, with or without a file descriptor) are
//!   cut out of each segment before it is matched against `allow`, and each target must lie
//!   under a `cwd.allow` root (after `~` and the run's cwd are applied and symlinks resolved), or
//!   be `/dev/null`, `/dev/stdout`, `/dev/stderr` or `/dev/zero`. A rule that itself contains a
//!   redirection allows the segment verbatim. A target with `$`, a glob or a brace expansion
//!   cannot be judged and is refused. Descriptor duplications (`2>&1`) and here-documents
//!   (`<<`, `<<<`) name no file.
//! - **Environment**: variables the request sets beyond the daemon's own environment (whatever
//!   equals it is the user's own and passes) may not be any of [`DENIED_ENV`] — the dynamic
//!   loader's, shell start-up and hook variables, interpreter injection — and a changed `PATH`
//!   may only hold the daemon's own `PATH` entries, the system directories and directories under
//!   a `cwd.allow` root. `env.allow` in the policy file lists names (with `*`) that may be set
//!   anyway.
//! - **Network**: probes and webhooks of agents reach loopback hosts only (`127.0.0.0/8`,
//!   `::1`, `localhost`), and never the daemon's own API port.
//!
//! The built-in policy (no file) allows all of it, as it allows every command.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aside_proto::{Command, ReadyCheck, Spec};

use super::{Policy, Verdict, command_matches, normalize, split_segments};

/// Variables an agent may not set (beyond the daemon's own environment) unless `env.allow`
/// names them; `*` at the end matches any suffix. What they have in common: the process runs
/// something its command text does not show.
pub const DENIED_ENV: &[&str] = &[
    // The dynamic loader: LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT, …
    "LD_*",
    "GCONV_PATH",
    // Shell start-up files and hooks, exported functions, word splitting, xtrace prompts.
    "BASH_ENV",
    "ENV",
    "PROMPT_COMMAND",
    "BASH_FUNC_*",
    "SHELLOPTS",
    "BASHOPTS",
    "PS4",
    "IFS",
    // Interpreters that run code named in a variable.
    "NODE_OPTIONS",
    "PYTHONSTARTUP",
    "PERL5OPT",
    "RUBYOPT",
    "GIT_SSH_COMMAND",
];

/// Directories a changed `PATH` may always hold.
const SYSTEM_PATH: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// Files a redirection may always name.
const SPECIAL_FILES: &[&str] = &["/dev/null", "/dev/stdout", "/dev/stderr", "/dev/zero"];

/// What the daemon already trusts when it judges an agent: its own environment (the user's),
/// and the ports of its own API, which no agent's probe or webhook may reach.
#[derive(Debug, Clone, Default)]
pub struct Trusted {
    /// The daemon's environment.
    pub env: BTreeMap<String, String>,
    /// Ports the daemon's API listens on (its TCP listener).
    pub api_ports: Vec<u16>,
}

impl Trusted {
    /// The current process's environment, no API port yet.
    pub fn from_process() -> Trusted {
        Trusted {
            env: std::env::vars().collect(),
            api_ports: Vec::new(),
        }
    }
}

fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// One redirection of a segment: its operator and the file it names.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Redirect {
    op: String,
    target: String,
}

/// Cuts the redirections out of one segment: the command words left, and the redirections
/// that name a file. Errors name a target that cannot be judged.
fn split_redirections(seg: &str) -> Result<(String, Vec<Redirect>), String> {
    let chars: Vec<char> = seg.chars().collect();
    let mut words = String::new();
    let mut redirects = Vec::new();
    let (mut single, mut double) = (false, false);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if single {
            words.push(c);
            single = c != '\'';
            i += 1;
            continue;
        }
        if c == '\\' {
            words.push(c);
            if let Some(n) = chars.get(i + 1) {
                words.push(*n);
            }
            i += 2;
            continue;
        }
        if c == '"' {
            double = !double;
        } else if !double && c == '\'' {
            single = true;
        }
        if double || (c != '<' && c != '>') || c == '\'' || c == '"' {
            words.push(c);
            i += 1;
            continue;
        }
        // An operator: take a file descriptor (digits right before, after a space) or `&`.
        let mut op = String::new();
        let fd: String = words
            .chars()
            .rev()
            .take_while(|d| d.is_ascii_digit())
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let before_fd = words.len() - fd.len();
        if !fd.is_empty() && (before_fd == 0 || words[..before_fd].ends_with(' ')) {
            words.truncate(before_fd);
            op.push_str(&fd);
        } else if c == '>' && words.ends_with('&') {
            words.pop();
            op.push('&');
        }
        op.push(c);
        i += 1;
        while let Some(n) = chars.get(i).filter(|n| matches!(n, '>' | '<' | '&' | '|')) {
            op.push(*n);
            i += 1;
        }
        while chars.get(i).is_some_and(|s| *s == ' ' || *s == '\t') {
            i += 1;
        }
        // The target word, quotes removed.
        let mut target = String::new();
        let (mut sq, mut dq) = (false, false);
        while let Some(&t) = chars.get(i) {
            if !sq && !dq && (t == ' ' || t == '\t' || t == '<' || t == '>') {
                break;
            }
            match t {
                '\'' if !dq => sq = !sq,
                '"' if !sq => dq = !dq,
                _ => target.push(t),
            }
            i += 1;
        }
        words.push(' ');
        let here_doc = op.ends_with("<<") || op.ends_with("<<<") || op.ends_with("<<-");
        let dup = (op.ends_with(">&") || op.ends_with("<&"))
            && (target == "-" || target.chars().all(|d| d.is_ascii_digit()));
        if here_doc || dup {
            continue;
        }
        if target.is_empty() {
            return Err(format!("a redirection {op} without a file"));
        }
        if target.contains(['$', '*', '?', '[', '{', '`']) {
            return Err(format!(
                "a redirection to {target:?}, whose expansion it cannot know"
            ));
        }
        redirects.push(Redirect { op, target });
    }
    let words = words.split_whitespace().collect::<Vec<_>>().join(" ");
    Ok((words, redirects))
}

impl Policy {
    /// Judges everything an agent's `spec` would make the machine do: the command (each
    /// segment, its redirections relative to the cwd), the cwd, the environment beyond
    /// `trusted.env`, and the readiness probe. `Allowed` lists which rule allowed each part.
    pub fn judge(&self, spec: &Spec, trusted: &Trusted) -> Verdict {
        let cwd = Path::new(&spec.cwd);
        let mut parts = Vec::new();
        let mut checks = vec![
            ("command", self.check_command_in(&spec.cmd, Some(cwd))),
            ("directory", self.check_cwd(cwd)),
            ("environment", self.check_env(&spec.env, trusted)),
            ("executor", self.check_executor(&spec.executor)),
        ];
        if let Some(probe) = &spec.ready {
            let v = match &probe.check {
                ReadyCheck::Log { .. } => Verdict::Allowed(Vec::new()),
                ReadyCheck::Exec { cmd } => {
                    self.check_command_in(&Command::Shell(cmd.clone()), Some(cwd))
                }
                ReadyCheck::Http { url } => self.check_url(url, trusted),
                ReadyCheck::Tcp { port } => self.check_host_port("127.0.0.1", *port, trusted),
            };
            checks.push(("readiness probe", v));
        }
        for (what, v) in checks {
            match v {
                Verdict::Allowed(p) => parts.extend(p),
                Verdict::Refused(why) => return Verdict::Refused(format!("{what}: {why}")),
            }
        }
        Verdict::Allowed(parts)
    }

    /// Judges where a run executes: this machine always; Slurm only with a `slurm` section,
    /// on a partition it lists and within its caps (an absent request of a capped resource
    /// is the cluster's default, which the cap does not see).
    pub fn check_executor(&self, executor: &aside_proto::Executor) -> Verdict {
        let aside_proto::Executor::Slurm(r) = executor else {
            return Verdict::Allowed(Vec::new());
        };
        let Some(allow) = &self.slurm else {
            return Verdict::Refused(
                "agents may not submit to Slurm: the policy has no \"slurm\" section (e.g. \"slurm\": {\"partitions\": [\"debug\"]})".into(),
            );
        };
        let any = allow.partitions.iter().any(|p| p == "*");
        let partition = r.partition.as_deref();
        if !any && !partition.is_some_and(|p| allow.partitions.iter().any(|a| a == p)) {
            return Verdict::Refused(format!(
                "partition {} is not one the policy allows (slurm.partitions: {})",
                partition.unwrap_or("(the cluster's default)"),
                allow.partitions.join(", ")
            ));
        }
        let over = |what: &str, asked: Option<u64>, max: Option<u64>| match (asked, max) {
            (Some(a), Some(m)) if a > m => Some(format!(
                "{a} {what} is more than the policy allows (slurm.max_{what}: {m})"
            )),
            _ => None,
        };
        let why = over("cpus", r.cpus.map(u64::from), allow.max_cpus.map(u64::from))
            .or_else(|| over("mem", r.mem_mib, allow.max_mem_mib))
            .or_else(|| over("gpus", r.gpus.map(u64::from), allow.max_gpus.map(u64::from)))
            .or_else(|| {
                over(
                    "nodes",
                    r.nodes.map(u64::from),
                    allow.max_nodes.map(u64::from),
                )
            });
        match why {
            Some(w) => Verdict::Refused(w),
            None => Verdict::Allowed(vec![(executor.on(), "policy: slurm".into())]),
        }
    }

    /// Judges a command run in `cwd`: every segment must match an `allow` rule once its
    /// redirections are cut out, and every redirection must name a file under a `cwd.allow`
    /// root (relative ones against `cwd`; without a `cwd`, a relative target is refused).
    pub fn check_command_in(&self, cmd: &Command, cwd: Option<&Path>) -> Verdict {
        let Some(allow) = &self.allow else {
            return Verdict::Allowed(vec![(cmd.display(), "built-in policy: everything".into())]);
        };
        let whole = cmd.display();
        if let Some(rule) = allow.iter().find(|r| **r == whole) {
            return Verdict::Allowed(vec![(whole, rule.clone())]);
        }
        let segments = match cmd {
            Command::Argv(_) => vec![whole.clone()],
            Command::Shell(s) => match split_segments(s) {
                Ok(segs) => segs,
                Err(why) => {
                    return Verdict::Refused(format!(
                        "the command uses {why}, which the policy cannot judge; only a rule equal to the whole command allows it"
                    ));
                }
            },
        };
        if segments.is_empty() {
            return Verdict::Refused("the command is empty".into());
        }
        let mut allowed = Vec::new();
        for seg in segments {
            // A rule that spells out a redirection allows the segment as written.
            if let Some(rule) = allow
                .iter()
                .find(|r| r.contains(['<', '>']) && command_matches(r, &seg))
            {
                allowed.push((seg, rule.clone()));
                continue;
            }
            let (words, redirects) = match cmd {
                Command::Argv(_) => (seg.clone(), Vec::new()),
                Command::Shell(_) => match split_redirections(&seg) {
                    Ok(r) => r,
                    Err(why) => {
                        return Verdict::Refused(format!(
                            "{seg:?} has {why}; only a rule that spells out the redirection allows it"
                        ));
                    }
                },
            };
            match allow.iter().find(|rule| command_matches(rule, &words)) {
                Some(rule) => allowed.push((words, rule.clone())),
                None => return Verdict::Refused(format!("no allow rule matches {words:?}")),
            }
            for r in redirects {
                match self.check_redirect(&r, cwd) {
                    Ok(why) => allowed.push((format!("{}{}", r.op, r.target), why)),
                    Err(why) => return Verdict::Refused(why),
                }
            }
        }
        Verdict::Allowed(allowed)
    }

    fn check_redirect(&self, r: &Redirect, cwd: Option<&Path>) -> Result<String, String> {
        if SPECIAL_FILES.contains(&r.target.as_str()) {
            return Ok("a special file".into());
        }
        let Some(roots) = &self.cwd else {
            return Ok("any directory (no cwd.allow)".into());
        };
        let path = if let Some(rest) = r.target.strip_prefix("~/") {
            match std::env::var_os("HOME") {
                Some(h) => PathBuf::from(h).join(rest),
                None => return Err(format!("{}{} needs $HOME", r.op, r.target)),
            }
        } else if Path::new(&r.target).is_absolute() {
            PathBuf::from(&r.target)
        } else {
            match cwd {
                Some(c) => c.join(&r.target),
                None => {
                    return Err(format!(
                        "the redirection {}{} is relative, and there is no directory to resolve it in",
                        r.op, r.target
                    ));
                }
            }
        };
        let real = resolve(&path);
        match self.root_of(&real) {
            Some(root) => Ok(format!("under {root}")),
            None => Err(format!(
                "the redirection {}{} names {}, which is not under any cwd.allow root ({})",
                r.op,
                r.target,
                real.display(),
                roots
                    .iter()
                    .map(|r| r.entry.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    /// Judges the environment an agent asks for: every variable that differs from
    /// `trusted.env` must not be one of [`DENIED_ENV`] (unless `env.allow` names it), and a
    /// changed `PATH` may hold only the daemon's own entries, system directories and
    /// directories under a `cwd.allow` root.
    pub fn check_env(&self, env: &BTreeMap<String, String>, trusted: &Trusted) -> Verdict {
        if self.allow.is_none() {
            return Verdict::Allowed(Vec::new());
        }
        let mut parts = Vec::new();
        for (k, v) in env {
            if trusted.env.get(k) == Some(v) {
                continue;
            }
            if let Some(rule) = self.env_allow.iter().find(|p| name_matches(p, k)) {
                parts.push((k.clone(), format!("env.allow {rule:?}")));
                continue;
            }
            if let Some(rule) = DENIED_ENV.iter().find(|p| name_matches(p, k)) {
                return Verdict::Refused(format!(
                    "{k} ({rule}) makes the process run what its command does not show; list it in env.allow to let agents set it"
                ));
            }
            if k == "PATH" {
                let own: Vec<&str> = trusted
                    .env
                    .get("PATH")
                    .map(|p| p.split(':').collect())
                    .unwrap_or_default();
                for dir in v.split(':') {
                    if own.contains(&dir) || SYSTEM_PATH.contains(&dir) {
                        continue;
                    }
                    let under_root = Path::new(dir).is_absolute()
                        && self.cwd.is_some()
                        && self.root_of(&resolve(Path::new(dir))).is_some();
                    if !under_root {
                        return Verdict::Refused(format!(
                            "PATH holds {dir:?}, which is neither in the daemon's own PATH, a system directory nor under a cwd.allow root: a command there could pass for an allowed one"
                        ));
                    }
                }
                parts.push(("PATH".into(), "its directories".into()));
            }
        }
        Verdict::Allowed(parts)
    }

    /// Judges a URL an agent's probe or webhook connects to: `http://` on a loopback host, and
    /// not the daemon's own API port.
    pub fn check_url(&self, url: &str, trusted: &Trusted) -> Verdict {
        if self.allow.is_none() {
            return Verdict::Allowed(vec![(url.into(), "built-in policy: everything".into())]);
        }
        let Some(rest) = url.strip_prefix("http://") else {
            return Verdict::Refused(format!("{url:?} is not an http:// URL"));
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => match v6.split_once(']') {
                Some((h, p)) => (h, p.strip_prefix(':').unwrap_or("")),
                None => return Verdict::Refused(format!("{url:?} has a broken host")),
            },
            None => authority.rsplit_once(':').unwrap_or((authority, "")),
        };
        let port = if port.is_empty() {
            80
        } else {
            match port.parse() {
                Ok(p) => p,
                Err(_) => return Verdict::Refused(format!("{url:?} has a broken port")),
            }
        };
        self.check_host_port(host, port, trusted)
    }

    fn check_host_port(&self, host: &str, port: u16, trusted: &Trusted) -> Verdict {
        if self.allow.is_none() {
            return Verdict::Allowed(Vec::new());
        }
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Verdict::Refused(format!(
                "{host} is not a loopback address: agents' probes and webhooks reach this machine only"
            ));
        }
        if trusted.api_ports.contains(&port) {
            return Verdict::Refused(format!(
                "port {port} is the aside daemon's own API, which agents' probes and webhooks may not call"
            ));
        }
        Verdict::Allowed(vec![(format!("{host}:{port}"), "loopback".into())])
    }
}

/// `path` with symlinks resolved as far as it exists (a file about to be created resolves
/// through its directory), `.` and `..` applied.
fn resolve(path: &Path) -> PathBuf {
    if let Ok(real) = std::fs::canonicalize(path) {
        return real;
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) if parent != path => resolve(parent).join(name),
        _ => normalize(path),
    }
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
    fn redirections_are_cut_out_and_judged_by_their_target() {
        let (w, r) = split_redirections("echo hi > /etc/x 2>&1").unwrap();
        assert_eq!(w, "echo hi");
        assert_eq!(
            r,
            vec![Redirect {
                op: ">".into(),
                target: "/etc/x".into()
            }]
        );
        let (w, r) = split_redirections("make 2>>'build log' <in.txt &>/dev/null").unwrap();
        assert_eq!(w, "make");
        let targets: Vec<&str> = r.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(targets, ["build log", "in.txt", "/dev/null"]);
        assert_eq!(
            split_redirections("echo 'a > b' \"c<d\"").unwrap().1,
            vec![]
        );
        assert_eq!(split_redirections("cat <<EOF").unwrap().1, vec![]);
        assert!(split_redirections("echo hi > $HOME/x").is_err());
        assert!(split_redirections("echo hi >").is_err());

        let p = policy(
            r#"{"allow": ["echo *", "make > build.log"], "cwd": {"allow": ["//tmp/ok/*"]}}"#,
        );
        let at = Some(Path::new("/tmp/ok/a"));
        assert!(
            !p.check_command_in(&shell("echo hi > /etc/x"), at)
                .is_allowed()
        );
        assert!(
            p.check_command_in(&shell("echo hi > out.txt"), at)
                .is_allowed()
        );
        assert!(
            p.check_command_in(&shell("echo hi > /tmp/ok/b/x 2>/dev/null"), at)
                .is_allowed()
        );
        assert!(
            !p.check_command_in(&shell("echo hi > ../../../etc/x"), at)
                .is_allowed()
        );
        assert!(
            !p.check_command_in(&shell("echo hi < /etc/shadow"), at)
                .is_allowed()
        );
        assert!(
            p.check_command_in(&shell("make > build.log"), Some(Path::new("/elsewhere")))
                .is_allowed(),
            "verbatim"
        );
        assert!(
            !p.check_command_in(&shell("echo hi > out.txt"), None)
                .is_allowed(),
            "no cwd"
        );
        let any_dir = policy(r#"{"allow": ["echo *"]}"#);
        assert!(
            any_dir
                .check_command_in(&shell("echo hi > /anywhere"), at)
                .is_allowed()
        );
    }

    #[test]
    fn the_environment_beyond_the_daemons_own_is_judged() {
        let p = policy(
            r#"{"allow": ["*"], "cwd": {"allow": ["//tmp/ok/*"]}, "env": {"allow": ["NODE_OPTIONS"]}}"#,
        );
        let trusted = Trusted {
            env: BTreeMap::from([
                ("PATH".into(), "/home/u/.cargo/bin:/usr/bin".into()),
                ("LD_LIBRARY_PATH".into(), "/opt/cuda/lib".into()),
            ]),
            api_ports: vec![7979],
        };
        let env = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let ok = |e: &[(&str, &str)]| p.check_env(&env(e), &trusted).is_allowed();
        assert!(
            ok(&[
                ("PATH", "/home/u/.cargo/bin:/usr/bin"),
                ("LD_LIBRARY_PATH", "/opt/cuda/lib")
            ]),
            "the user's own"
        );
        assert!(!ok(&[("PATH", "/tmp/evil:/usr/bin")]));
        assert!(
            ok(&[("PATH", "/tmp/ok/x/bin:/usr/bin:/bin")]),
            "under a root"
        );
        assert!(!ok(&[("PATH", ":/usr/bin")]), "an empty entry is the cwd");
        for k in [
            "LD_PRELOAD",
            "BASH_ENV",
            "ENV",
            "PROMPT_COMMAND",
            "BASH_FUNC_x%%",
        ] {
            assert!(!ok(&[(k, "/tmp/evil.so")]), "{k}");
        }
        assert!(
            !ok(&[("LD_LIBRARY_PATH", "/tmp/evil")]),
            "changed from the daemon's"
        );
        assert!(ok(&[("NODE_OPTIONS", "--require x")]), "env.allow");
        assert!(ok(&[("RUST_LOG", "debug")]));
        assert!(
            Policy::builtin()
                .check_env(&env(&[("LD_PRELOAD", "x")]), &trusted)
                .is_allowed()
        );
    }

    #[test]
    fn probes_and_webhooks_reach_loopback_only_and_never_the_daemon() {
        let p = policy(r#"{"allow": ["*"]}"#);
        let trusted = Trusted {
            env: BTreeMap::new(),
            api_ports: vec![7979],
        };
        let ok = |u: &str| p.check_url(u, &trusted).is_allowed();
        assert!(ok("http://127.0.0.1:8080/health"));
        assert!(ok("http://localhost:3000"));
        assert!(ok("http://[::1]:9000/x"));
        assert!(!ok("http://127.0.0.1:7979/v1/daemon/stop"));
        assert!(!ok("http://example.com/hook"));
        assert!(!ok("http://10.0.0.1:80/"));
        assert!(!ok("http://evil@192.168.1.1/"));
        assert!(!ok("https://127.0.0.1/"));
    }
}
