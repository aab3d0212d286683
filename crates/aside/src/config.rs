//! Project config files: `aside.yaml`, agent-procs' `agent-procs.yaml` (the same schema: aside's
//! is a superset), or a plain `Procfile`.
//!
//! Parsed with serde-saphyr; every error names the file, line and column and what was expected,
//! and is found before anything is started. [`schema`] publishes the file's JSON Schema.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use aside_core::units::parse_duration_ms;
use aside_proto::{
    Autorestart, Command, ReadyCheck, ReadyProbe, RestartPolicy, RunRequest, UpRequest, WatchSpec,
};
use schemars::JsonSchema;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

/// Names looked for, in order, in the current directory and then each parent.
pub const FILE_NAMES: [&str; 5] = [
    "aside.yaml",
    "aside.yml",
    "agent-procs.yaml",
    "agent-procs.yml",
    "Procfile",
];

/// A config error: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line and column, when known.
    pub at: Option<(u64, u64)>,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some((l, c)) => write!(f, "{}:{l}:{c}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

/// A duration: a number of milliseconds (agent-procs' `restart_delay: 1000`) or text such as
/// `2s`, `500ms`, `5m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DurationMs(pub u64);

/// Schema of [`DurationMs`].
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum DurationSchema {
    Millis(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for DurationMs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DurationMs;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration: milliseconds as a number, or text such as 2s, 500ms, 5m")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<DurationMs, E> {
                Ok(DurationMs(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<DurationMs, E> {
                u64::try_from(v)
                    .map(DurationMs)
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationMs, E> {
                if let Ok(ms) = v.trim().parse::<u64>() {
                    return Ok(DurationMs(ms));
                }
                parse_duration_ms(v).map(DurationMs).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// An environment value: YAML scalars (`PORT: 8080`, `DEBUG: true`) become their text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvValue(pub String);

/// Schema of [`EnvValue`].
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum EnvSchema {
    Text(String),
    Number(f64),
    Bool(bool),
}

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = EnvValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EnvValue, E> {
                Ok(EnvValue(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<EnvValue, E> {
                Ok(EnvValue(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<EnvValue, E> {
                Ok(EnvValue(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<EnvValue, E> {
                Ok(EnvValue(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<EnvValue, E> {
                Ok(EnvValue(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `cmd`: a shell string (run by `sh -c`) or an argv list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CmdConfig(pub Command);

/// Schema of [`CmdConfig`].
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum CmdSchema {
    Shell(String),
    Argv(Vec<String>),
}

impl<'de> Deserialize<'de> for CmdConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CmdConfig;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a shell command (text) or a list of program and arguments")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CmdConfig, E> {
                if v.trim().is_empty() {
                    return Err(E::custom("the command is empty"));
                }
                Ok(CmdConfig(Command::Shell(v.to_string())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CmdConfig, A::Error> {
                let mut argv = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    argv.push(s);
                }
                if argv.first().is_none_or(|p| p.is_empty()) {
                    return Err(de::Error::custom("the command list is empty"));
                }
                Ok(CmdConfig(Command::Argv(argv)))
            }
        }
        d.deserialize_any(V)
    }
}

/// `ready` as a map: exactly one of `log`, `tcp`, `http`, `exec`, with `interval` and `timeout`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadyMap {
    /// A regex a line of output matches once the process is ready.
    pub log: Option<String>,
    /// A port on 127.0.0.1 that accepts connections once it is ready.
    pub tcp: Option<u16>,
    /// An http:// URL that answers 2xx or 3xx once it is ready.
    pub http: Option<String>,
    /// A command that exits 0 once it is ready (run by `sh -c` in the process's cwd).
    pub exec: Option<String>,
    /// Between checks (default 250ms).
    #[schemars(with = "Option<DurationSchema>")]
    pub interval: Option<DurationMs>,
    /// Give up after this long (default 60s): dependents are not started.
    #[schemars(with = "Option<DurationSchema>")]
    pub timeout: Option<DurationMs>,
}

/// `ready`: text its output contains once ready (agent-procs), or a [`ReadyMap`] probe.
#[derive(Debug, Clone)]
pub enum ReadyConfig {
    /// A substring of a line of output.
    Pattern(String),
    /// A probe.
    Probe(ReadyMap),
}

/// Schema of [`ReadyConfig`].
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum ReadySchema {
    Pattern(String),
    Probe(ReadyMap),
}

impl<'de> Deserialize<'de> for ReadyConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ReadyConfig;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "text the output shows once ready, or a map with one of log, tcp, http, exec",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ReadyConfig, E> {
                Ok(ReadyConfig::Pattern(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ReadyConfig, A::Error> {
                ReadyMap::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(ReadyConfig::Probe)
            }
        }
        d.deserialize_any(V)
    }
}

/// One process of a config file: agent-procs' fields plus aside's.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessConfig {
    /// Shell command (run by `sh -c`), or a list of program and arguments.
    #[schemars(with = "CmdSchema")]
    pub cmd: CmdConfig,
    /// Working directory, relative to the config file's directory (default: that directory).
    pub cwd: Option<String>,
    /// Environment variables (they win over PORT/HOST and the caller's environment).
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, EnvSchema>")]
    pub env: BTreeMap<String, EnvValue>,
    /// A file of KEY=VALUE lines, relative to the config file's directory (`env` wins).
    #[schemars(with = "Option<String>")]
    pub env_file: Option<Spanned<String>>,
    /// When it is ready: output text, or a probe (`{log: REGEX}`, `{tcp: PORT}`, `{http: URL}`,
    /// `{exec: CMD}`, with `interval` and `timeout`).
    #[schemars(with = "Option<ReadySchema>")]
    pub ready: Option<ReadyConfig>,
    /// Processes that must be ready before it starts.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub depends_on: Vec<Spanned<String>>,
    /// Port it listens on: injected as PORT and HOST=127.0.0.1.
    #[schemars(with = "Option<u16>")]
    pub port: Option<Spanned<u16>>,
    /// Restart policy: always, on-failure or never (default).
    pub autorestart: Option<Autorestart>,
    /// Most restarts in a row (default: unlimited).
    pub max_restarts: Option<u32>,
    /// Wait before a restart (ms, or text such as 2s; default 1000 ms).
    #[schemars(with = "Option<DurationSchema>")]
    pub restart_delay: Option<DurationMs>,
    /// Exponential backoff: the delay doubles per attempt up to this cap.
    #[schemars(with = "Option<DurationSchema>")]
    pub restart_backoff: Option<DurationMs>,
    /// Globs of files whose change restarts it, relative to its cwd.
    #[serde(default)]
    pub watch: Vec<String>,
    /// Globs to ignore (.git, node_modules, target and __pycache__ always are).
    #[serde(default)]
    pub watch_ignore: Vec<String>,
    /// Kill its tree after this long.
    #[schemars(with = "Option<DurationSchema>")]
    pub timeout: Option<DurationMs>,
    /// Between SIGTERM and SIGKILL when stopping (default 5s).
    #[schemars(with = "Option<DurationSchema>")]
    pub grace: Option<DurationMs>,
    /// Owner of the process (default: the one running `up`).
    pub owner: Option<String>,
    /// Team of the process.
    pub team: Option<String>,
    /// What it is for, in a few words.
    pub description: Option<String>,
    /// Where it runs: local, slurm or slurm:PARTITION (default: the file's `executor`).
    pub executor: Option<String>,
    /// Slurm: CPUs for the job.
    pub cpus: Option<u32>,
    /// Slurm: memory per node, e.g. 4GiB.
    pub mem: Option<String>,
    /// Slurm: GPUs for the job.
    pub gpus: Option<u32>,
    /// Slurm: nodes for the job.
    pub nodes: Option<u32>,
}

/// A config file (`aside.yaml` / `agent-procs.yaml`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Project name (agent-procs: session); default: the directory's name. `--project` wins.
    pub session: Option<String>,
    /// Run the reverse proxy: `http://NAME.localhost:PORT` reaches each process.
    #[serde(default)]
    pub proxy: bool,
    /// Pin the proxy's port (default: the first free one in 9090–9190).
    pub proxy_port: Option<u16>,
    /// Where its processes run unless they say: local (default), slurm or slurm:PARTITION.
    pub executor: Option<String>,
    /// The processes, by name.
    #[schemars(with = "BTreeMap<String, ProcessConfig>")]
    pub processes: BTreeMap<String, Spanned<ProcessConfig>>,
}

/// A loaded and checked project.
#[derive(Debug, Clone)]
pub struct Project {
    /// The config file.
    pub path: PathBuf,
    /// Project name.
    pub name: String,
    /// Run the proxy.
    pub proxy: bool,
    /// Pinned proxy port.
    pub proxy_port: Option<u16>,
    /// The processes, ready to send (their `env` holds only the file's variables; see
    /// [`Project::request`]).
    pub processes: Vec<RunRequest>,
}

/// The JSON Schema of config files (`aside config schema`).
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(ConfigFile)).unwrap_or_default()
}

/// The config file for `start` (a directory): the first of [`FILE_NAMES`] there or in a parent.
pub fn find(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find_map(|dir| FILE_NAMES.iter().map(|n| dir.join(n)).find(|p| p.is_file()))
}

/// A name usable as a project: the directory's name with other characters replaced by `-`.
fn project_from_dir(dir: &Path) -> String {
    let base = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let clean: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if clean.is_empty() {
        "default".into()
    } else {
        clean
    }
}

/// FNV-1a, 64 bits: a digest that stays the same across builds (unlike `DefaultHasher`).
fn digest(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Reads and checks a config file. Errors: unreadable, a YAML or schema error, an unknown
/// dependency, a dependency cycle, a duplicate port, a missing `cwd` or `env_file`.
pub fn load(path: &Path) -> Result<Project, ConfigError> {
    let err = |at: Option<(u64, u64)>, message: String| ConfigError {
        path: path.to_path_buf(),
        at,
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(None, format!("cannot read: {e}")))?;
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let is_procfile = path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("Procfile"));
    if is_procfile {
        return procfile(path, &dir, &text);
    }
    // YAML 1.2 booleans (as agent-procs' parser): `y`, `on`, `no` stay text.
    let options = serde_saphyr::options! { strict_booleans: true };
    let file: ConfigFile = serde_saphyr::from_str_with_options(&text, options).map_err(|e| {
        let at = e.location().map(|l| (l.line(), l.column()));
        let rendered = e.render_with_options(serde_saphyr::render_options! {
            snippets: serde_saphyr::SnippetMode::Off,
        });
        let message = match rendered.rfind(" at line ") {
            Some(i) if at.is_some() => rendered[..i].to_string(),
            _ => rendered,
        };
        err(at, message)
    })?;
    let at = |l: &serde_saphyr::Location| Some((l.line(), l.column()));
    if file.processes.is_empty() {
        return Err(err(
            None,
            "`processes` is empty: define at least one process".into(),
        ));
    }
    let name = match &file.session {
        Some(s) => s.clone(),
        None => project_from_dir(&dir.canonicalize().unwrap_or(dir.clone())),
    };
    let mut ports: BTreeMap<u16, String> = BTreeMap::new();
    let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut processes = Vec::new();
    for (pname, spanned) in &file.processes {
        let p = &spanned.value;
        let here = at(&spanned.referenced);
        for d in &p.depends_on {
            if !file.processes.contains_key(&d.value) {
                return Err(err(
                    at(&d.referenced),
                    format!(
                        "process {pname:?} depends on {:?}, which is not defined (defined: {})",
                        d.value,
                        file.processes
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        if let Some(port) = &p.port {
            if port.value == 0 {
                return Err(err(at(&port.referenced), "port 0 is not a port".into()));
            }
            if let Some(other) = ports.insert(port.value, pname.clone()) {
                return Err(err(
                    at(&port.referenced),
                    format!(
                        "port {} is used by both {other:?} and {pname:?}: give each process its own",
                        port.value
                    ),
                ));
            }
        }
        deps.insert(
            pname.clone(),
            p.depends_on.iter().map(|d| d.value.clone()).collect(),
        );
        let cwd = match &p.cwd {
            Some(c) => dir.join(c),
            None => dir.clone(),
        };
        let cwd = cwd.canonicalize().map_err(|e| {
            err(
                here,
                format!(
                    "process {pname:?}: cwd {} cannot be used: {e}",
                    cwd.display()
                ),
            )
        })?;
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        if let Some(f) = &p.env_file {
            let file_path = dir.join(&f.value);
            let content = std::fs::read_to_string(&file_path).map_err(|e| {
                err(
                    at(&f.referenced),
                    format!("env_file {} cannot be read: {e}", file_path.display()),
                )
            })?;
            env.extend(parse_env_file(&content));
        }
        env.extend(p.env.iter().map(|(k, v)| (k.clone(), v.0.clone())));
        let ready = p.ready.as_ref().map(|r| match r {
            ReadyConfig::Pattern(s) => Ok(ReadyProbe::new(ReadyCheck::Log {
                pattern: s.clone(),
                regex: false,
            })),
            ReadyConfig::Probe(m) => {
                let checks = [
                    m.log.clone().map(|pattern| ReadyCheck::Log {
                        pattern,
                        regex: true,
                    }),
                    m.tcp.map(|port| ReadyCheck::Tcp { port }),
                    m.http.clone().map(|url| ReadyCheck::Http { url }),
                    m.exec.clone().map(|cmd| ReadyCheck::Exec { cmd }),
                ];
                let mut set = checks.into_iter().flatten();
                match (set.next(), set.next()) {
                    (Some(check), None) => {
                        let mut probe = ReadyProbe::new(check);
                        if let Some(i) = m.interval {
                            probe.interval_ms = i.0;
                        }
                        if let Some(t) = m.timeout {
                            probe.timeout_ms = t.0;
                        }
                        Ok(probe)
                    }
                    _ => Err(err(
                        here,
                        format!(
                            "process {pname:?}: `ready` needs exactly one of log, tcp, http, exec"
                        ),
                    )),
                }
            }
        });
        let ready = ready.transpose()?;
        let restart = p.autorestart.filter(|a| *a != Autorestart::Never).map(|a| {
            let mut r = RestartPolicy::new(a);
            r.max_restarts = p.max_restarts;
            if let Some(d) = p.restart_delay {
                r.delay_ms = d.0;
            }
            r.backoff_max_ms = p.restart_backoff.map(|b| b.0.max(r.delay_ms));
            r
        });
        let watch = (!p.watch.is_empty()).then(|| WatchSpec {
            root: cwd.display().to_string(),
            patterns: p.watch.clone(),
            ignore: p.watch_ignore.clone(),
        });
        for g in p.watch.iter().chain(&p.watch_ignore) {
            if let Err(e) = globset::Glob::new(g) {
                return Err(err(
                    here,
                    format!("process {pname:?}: invalid glob {g:?}: {e}"),
                ));
            }
        }
        let mem_mib = p
            .mem
            .as_deref()
            .map(|m| aside_core::units::parse_bytes(m).map(|b| b.div_ceil(1024 * 1024)))
            .transpose()
            .map_err(|e| err(here, format!("process {pname:?}: mem: {e}")))?;
        let on = p
            .executor
            .as_deref()
            .or(file.executor.as_deref())
            .unwrap_or("local");
        let resources = aside_proto::SlurmResources {
            partition: None,
            cpus: p.cpus,
            mem_mib,
            gpus: p.gpus,
            nodes: p.nodes,
        };
        let executor = aside_proto::Executor::from_on(on, resources)
            .map_err(|e| err(here, format!("process {pname:?}: executor: {e}")))?;
        let mut req = RunRequest {
            executor: (!executor.is_local()).then_some(executor),
            cmd: Some(p.cmd.0.clone()),
            name: Some(pname.clone()),
            owner: p.owner.clone(),
            team: p.team.clone(),
            description: p.description.clone(),
            cwd: Some(cwd.display().to_string()),
            env,
            timeout_ms: p.timeout.map(|t| t.0),
            grace_ms: p.grace.map(|g| g.0),
            project: Some(name.clone()),
            restart,
            ready,
            port: p.port.as_ref().map(|p| p.value),
            proxy: file.proxy,
            watch,
            depends_on: p.depends_on.iter().map(|d| d.value.clone()).collect(),
            ..Default::default()
        };
        req.digest = Some(digest(&serde_json::to_vec(&req).unwrap_or_default()));
        processes.push(req);
    }
    if let Some(cycle) = aside_core::supervisor::find_cycle(&deps) {
        let l = cycle
            .first()
            .and_then(|first| file.processes.get(first))
            .and_then(|s| at(&s.referenced));
        return Err(err(l, format!("dependency cycle: {}", cycle.join(" → "))));
    }
    Ok(Project {
        path: path.to_path_buf(),
        name,
        proxy: file.proxy,
        proxy_port: file.proxy_port,
        processes,
    })
}

/// KEY=VALUE lines; `#` comments, blank lines, `export ` prefixes and surrounding quotes are
/// handled as dotenv files do.
fn parse_env_file(content: &str) -> Vec<(String, String)> {
    content
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let l = l.strip_prefix("export ").unwrap_or(l);
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

/// A Procfile: `name: command` per line.
fn procfile(path: &Path, dir: &Path, text: &str) -> Result<Project, ConfigError> {
    let cwd = dir.canonicalize().unwrap_or(dir.to_path_buf());
    let name = project_from_dir(&cwd);
    let mut processes = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let col = (line.len() - line.trim_start().len() + 1) as u64;
        let at = Some((i as u64 + 1, col));
        let Some((pname, cmd)) = t.split_once(':') else {
            return Err(ConfigError {
                path: path.to_path_buf(),
                at,
                message: "expected `name: command`".into(),
            });
        };
        let pname = pname.trim();
        if pname.is_empty() || cmd.trim().is_empty() || !seen.insert(pname.to_string()) {
            return Err(ConfigError {
                path: path.to_path_buf(),
                at,
                message: format!("expected `name: command` with a new name, got {t:?}"),
            });
        }
        let mut req = RunRequest {
            cmd: Some(Command::Shell(cmd.trim().to_string())),
            name: Some(pname.to_string()),
            cwd: Some(cwd.display().to_string()),
            project: Some(name.clone()),
            ..Default::default()
        };
        req.digest = Some(digest(&serde_json::to_vec(&req).unwrap_or_default()));
        processes.push(req);
    }
    if processes.is_empty() {
        return Err(ConfigError {
            path: path.to_path_buf(),
            at: None,
            message: "no processes: add `name: command` lines".into(),
        });
    }
    Ok(Project {
        path: path.to_path_buf(),
        name,
        proxy: false,
        proxy_port: None,
        processes,
    })
}

impl Project {
    /// The `up` request: each process gets `base_env` (the caller's environment, without
    /// PORT and HOST for processes with a port) under its own variables, and `owner`/`team`
    /// unless the file sets them.
    pub fn request(
        &self,
        base_env: &BTreeMap<String, String>,
        owner: &str,
        team: Option<&str>,
        only: Vec<String>,
        proxy: bool,
    ) -> UpRequest {
        let processes = self
            .processes
            .iter()
            .map(|p| {
                let mut r = p.clone();
                let mut env = base_env.clone();
                if r.port.is_some() || proxy || self.proxy {
                    env.remove("PORT");
                    env.remove("HOST");
                }
                env.extend(r.env);
                r.env = env;
                r.proxy |= proxy;
                r.owner = r.owner.or_else(|| Some(owner.to_string()));
                r.team = r.team.or_else(|| team.map(str::to_string));
                r
            })
            .collect();
        UpRequest {
            config: Some(self.path.display().to_string()),
            processes,
            only,
            proxy: proxy || self.proxy,
            proxy_port: self.proxy_port,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(name: &str, yaml: &str) -> Result<Project, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, yaml).unwrap();
        std::fs::create_dir_all(dir.path().join("backend")).unwrap();
        let r = load(&path);
        drop(dir);
        r
    }

    #[test]
    fn errors_name_the_line_and_column() {
        let cases = [
            (
                "processes:\n  a:\n    cmd: x\n    cmdd: y\n",
                (4, 5),
                "unknown field `cmdd`",
            ),
            (
                "processes:\n  a:\n    cmd: x\n    autorestart: sometimes\n",
                (4, 18),
                "unknown variant `sometimes`",
            ),
            (
                "processes:\n  a:\n    cmd: x\n    depends_on: [b]\n",
                (4, 18),
                "depends on \"b\", which is not defined",
            ),
            (
                "processes:\n  a:\n    cmd: x\n    port: 80\n  b:\n    cmd: y\n    port: 80\n",
                (7, 11),
                "port 80 is used by both",
            ),
            (
                "processes:\n  a:\n    cmd: x\n    depends_on: [b]\n  b:\n    cmd: y\n    depends_on: [a]\n",
                (3, 5),
                "dependency cycle: a → b → a",
            ),
            (
                "processes:\n  a:\n    cmd: x\n    ready: {tcpp: 80}\n",
                (4, 13),
                "unknown field `tcpp`",
            ),
        ];
        for (yaml, at, msg) in cases {
            let e = load_str("aside.yaml", yaml).unwrap_err();
            assert_eq!(e.at, Some(at), "{e}");
            assert!(e.message.contains(msg), "{e}");
        }
    }

    #[test]
    fn the_agent_procs_example_loads() {
        let yaml = r#"
session: myproject
proxy: true
proxy_port: 9095
processes:
  db:
    cmd: docker compose up postgres
    ready: "ready to accept connections"
    autorestart: always
    max_restarts: 3
  api:
    cmd: ./start-api-server
    cwd: ./backend
    env:
      DATABASE_URL: postgres://localhost:5432/mydb
    ready: "Listening on :8080"
    port: 8080
    depends_on: [db]
    autorestart: on-failure
    watch:
      - "src/**"
      - "config/*"
    watch_ignore:
      - "*.generated.ts"
"#;
        let p = load_str("agent-procs.yaml", yaml).unwrap();
        assert_eq!(p.name, "myproject");
        assert_eq!(p.proxy_port, Some(9095));
        let api = p
            .processes
            .iter()
            .find(|r| r.name.as_deref() == Some("api"))
            .unwrap();
        assert!(api.cwd.as_deref().unwrap().ends_with("/backend"));
        assert_eq!(api.port, Some(8080));
        assert_eq!(api.depends_on, ["db"]);
        assert_eq!(api.watch.as_ref().unwrap().patterns, ["src/**", "config/*"]);
        assert!(api.watch.as_ref().unwrap().root.ends_with("/backend"));
        let db = p
            .processes
            .iter()
            .find(|r| r.name.as_deref() == Some("db"))
            .unwrap();
        assert_eq!(db.restart.as_ref().unwrap().max_restarts, Some(3));
    }

    #[test]
    fn a_procfile_loads_and_its_errors_have_lines() {
        let p = load_str(
            "Procfile",
            "# comment\nweb: python3 -m http.server\nworker:  sleep 5\n",
        )
        .unwrap();
        assert_eq!(p.processes.len(), 2);
        let e = load_str("Procfile", "web: x\nnot a process\n").unwrap_err();
        assert_eq!(e.at, Some((2, 1)));
    }

    #[test]
    fn durations_take_milliseconds_or_text() {
        let p = load_str(
            "aside.yaml",
            "processes:\n  a:\n    cmd: x\n    autorestart: on-failure\n    restart_delay: 250\n    restart_backoff: 10s\n    timeout: 1m\n",
        )
        .unwrap();
        let r = p.processes[0].restart.clone().unwrap();
        assert_eq!((r.delay_ms, r.backoff_max_ms), (250, Some(10_000)));
        assert_eq!(p.processes[0].timeout_ms, Some(60_000));
    }
}
