//! `aside up`, `down`, `session` and `config`: projects from config files (agent-procs'
//! commands, same flags).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use aside_core::paths::StateDir;
use aside_proto::{ErrorCode, ProcessInfo, UpMessage, UpState};
use clap::{Args, Subcommand};

use crate::client::{Client, ClientError, Result, owner_or_human};
use crate::config;
use crate::render::{self, print_json, read_ndjson};

/// `aside up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Start only these processes (comma-separated) and what they depend on.
    #[arg(long, value_delimiter = ',', value_name = "A,B")]
    only: Vec<String>,
    /// The config file (default: aside.yaml, agent-procs.yaml or Procfile here or in a parent).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Run the reverse proxy (http://NAME.localhost:PORT) even if the file does not ask for it.
    #[arg(long)]
    proxy: bool,
    /// Owner of the processes whose entry sets none.
    #[arg(long, env = "ASIDE_OWNER")]
    owner: Option<String>,
    /// Team of the processes whose entry sets none.
    #[arg(long, env = "ASIDE_TEAM")]
    team: Option<String>,
    /// Print the progress as JSON lines (schema: `aside schema up-message`).
    #[arg(long)]
    json: bool,
}

/// `aside down`.
#[derive(Debug, Args)]
pub struct DownArgs {
    /// The config file naming the project (default: found as for `up`).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `aside session …` (agent-procs' name for projects).
#[derive(Debug, Subcommand)]
pub enum SessionCmd {
    /// List projects with their running and known processes.
    List {
        /// Print JSON (schema: `aside schema projects`).
        #[arg(long)]
        json: bool,
    },
    /// Forget projects with nothing running (results not yet read are kept).
    Clean,
}

/// `aside config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Check a config file: every error with its line and column; nothing is started.
    Check {
        /// The file (default: found as for `up`).
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Print the JSON Schema of config files.
    Schema,
}

fn invalid(msg: impl Into<String>) -> ClientError {
    ClientError::new(ErrorCode::InvalidRequest, msg)
}

/// The config file: `explicit` (relative to `base`), or found from `base` up.
fn locate(explicit: Option<PathBuf>, base: &Path) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(base.join(p));
    }
    config::find(base).ok_or_else(|| {
        invalid(format!(
            "no aside.yaml, agent-procs.yaml or Procfile in {} or its parents: write one, or pass --config PATH",
            base.display()
        ))
    })
}

fn load(explicit: Option<PathBuf>) -> Result<config::Project> {
    let here = std::env::current_dir()
        .map_err(|e| invalid(format!("the current directory is unusable: {e}")))?;
    load_from(explicit, &here)
}

/// Loads the project config `explicit` (relative to `base`), or the one found from `base` up.
/// Errors name the file, line and column.
pub fn load_from(explicit: Option<PathBuf>, base: &Path) -> Result<config::Project> {
    let path = locate(explicit, base)?;
    config::load(&path).map_err(|e| invalid(e.to_string()))
}

/// `aside config check|schema`.
pub fn config(cmd: &ConfigCmd) -> i32 {
    match cmd {
        ConfigCmd::Schema => {
            print_json(&config::schema());
            0
        }
        ConfigCmd::Check { config } => match load(config.clone()) {
            Ok(p) => {
                let names: Vec<&str> = p
                    .processes
                    .iter()
                    .filter_map(|r| r.name.as_deref())
                    .collect();
                println!(
                    "ok: {}: project {}, {} process{} ({})",
                    p.path.display(),
                    p.name,
                    names.len(),
                    if names.len() == 1 { "" } else { "es" },
                    names.join(", ")
                );
                0
            }
            Err(e) => {
                eprintln!("aside: {e}");
                1
            }
        },
    }
}

/// Where each process of an `up` stands, drawn as one line per process (in the order they
/// were first reported).
struct Progress {
    order: Vec<String>,
    states: BTreeMap<String, (UpState, String)>,
    tty: bool,
    drawn: usize,
    /// Processes whose start was said (agent-procs' `started NAME (id: …, pid: …)`).
    started: std::collections::BTreeSet<String>,
}

impl Progress {
    fn line(&self, name: &str) -> String {
        let (state, detail) = self
            .states
            .get(name)
            .cloned()
            .unwrap_or((UpState::Waiting, String::new()));
        let word = state.as_str().replace('_', " ");
        let color = match state {
            UpState::Unchanged | UpState::Running | UpState::Ready | UpState::Completed => "32",
            UpState::Waiting | UpState::Starting => "33",
            UpState::Failed | UpState::NotReady | UpState::Skipped => "31",
        };
        let detail = if detail.is_empty() {
            String::new()
        } else {
            format!(" {detail}")
        };
        if self.tty {
            format!("  {name:<16} \x1b[{color}m{word}\x1b[0m{detail}")
        } else {
            format!("{name}: {word}{detail}")
        }
    }

    /// Without a terminal, a line per change: agent-procs' `started NAME (id: …, pid: …)` and
    /// `NAME is ready` where it has one, aside's `NAME: STATE` otherwise.
    fn plain(&mut self, name: &str, state: UpState, process: Option<&ProcessInfo>) -> String {
        match (state, process) {
            (UpState::Starting | UpState::Running, Some(p))
                if p.pid.is_some() && self.started.insert(name.to_string()) =>
            {
                format!("started {}", render::id_line(p))
            }
            (UpState::Starting | UpState::Running, Some(p)) if p.pid.is_some() => self.line(name),
            (UpState::Ready, _) => format!("{name} is ready"),
            _ => self.line(name),
        }
    }

    fn update(
        &mut self,
        name: &str,
        state: UpState,
        detail: String,
        process: Option<&ProcessInfo>,
    ) {
        if self
            .states
            .insert(name.to_string(), (state, detail))
            .is_none()
        {
            self.order.push(name.to_string());
        }
        let mut out = std::io::stdout().lock();
        let written = if self.tty {
            let mut text = String::new();
            if self.drawn > 0 {
                text.push_str(&format!("\x1b[{}A", self.drawn));
            }
            for n in &self.order {
                text.push_str(&format!("\x1b[2K{}\n", self.line(n)));
            }
            self.drawn = self.order.len();
            out.write_all(text.as_bytes())
        } else {
            let line = self.plain(name, state, process);
            writeln!(out, "{line}")
        };
        // A closed stdout (`| head`): `up` goes on in the daemon; there is nobody to show.
        if let Err(e) = written.and_then(|()| out.flush()) {
            tracing::debug!("stdout: {e}");
        }
    }
}

/// `aside up`: sends the project to the daemon and shows its progress until every selected
/// process is up, failed, or not ready in time. Exit 1 naming those that did not come up.
pub async fn up(a: UpArgs, project: Option<String>, state: StateDir) -> Result<i32> {
    let loaded = load(a.config)?;
    let name = project.unwrap_or_else(|| loaded.name.clone());
    let owner = owner_or_human(a.owner);
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let req = loaded.request(&env, &owner, a.team.as_deref(), a.only, a.proxy);
    let client = Client::new(state, owner, true).with_team(a.team);
    let resp = client.up(&name, &req).await?;
    if !a.json {
        println!("{}: project {name}", loaded.path.display());
    }
    let mut progress = Progress {
        order: Vec::new(),
        states: BTreeMap::new(),
        tty: std::io::stdout().is_terminal() && !a.json,
        drawn: 0,
        started: Default::default(),
    };
    let mut failed: Option<Vec<String>> = None;
    let mut details: BTreeMap<String, String> = BTreeMap::new();
    let mut urls: BTreeMap<String, String> = BTreeMap::new();
    let mut proxy_port = None;
    read_ndjson(resp, |m: &UpMessage| {
        if a.json {
            if let Ok(line) = serde_json::to_string(m) {
                println!("{line}");
            }
        }
        match m {
            UpMessage::Proxy { port } => proxy_port = Some(*port),
            UpMessage::Process {
                name,
                state,
                detail,
                process,
            } => {
                let detail = detail.clone().unwrap_or_default();
                if let Some(u) = process.as_ref().and_then(|p| p.url.clone()) {
                    urls.insert(name.clone(), u);
                }
                if state.is_settled() && !state.is_ok() {
                    details.insert(name.clone(), detail.clone());
                }
                if !a.json {
                    progress.update(name, *state, detail, process.as_deref());
                }
            }
            UpMessage::Done { failed: f } => failed = Some(f.clone()),
        }
    })
    .await?;
    let Some(failed) = failed else {
        return Err(ClientError::new(
            ErrorCode::Internal,
            "the daemon ended the up before every process settled: see `aside status` and the daemon log",
        ));
    };
    if !a.json {
        if let Some(port) = proxy_port {
            // agent-procs' line, where its users look for the port.
            eprintln!("Proxy listening on http://localhost:{port}");
            println!("proxy: 127.0.0.1:{port}");
            for (n, u) in &urls {
                println!("  {n:<16} {u}");
            }
        }
        if failed.is_empty() {
            // agent-procs' line, then aside's.
            println!("all processes started");
            println!("project {name} is up");
        }
    }
    if failed.is_empty() {
        return Ok(0);
    }
    let list: Vec<String> = failed
        .iter()
        .map(|n| match details.get(n) {
            Some(d) if !d.is_empty() => format!("{n} ({d})"),
            _ => n.clone(),
        })
        .collect();
    eprintln!(
        "aside: project {name}: {} did not come up: {}; see `aside logs PROCESS --streams both --project {name}`",
        failed.len(),
        list.join(", ")
    );
    Ok(1)
}

/// `aside down`: stops the project (named by `--project`, or by its config file).
pub async fn down(a: DownArgs, project: Option<String>, state: StateDir) -> Result<i32> {
    let name = match project {
        Some(p) => p,
        None => load(a.config)?.name,
    };
    let client = Client::new(state, owner_or_human(None), true);
    let resp = client.down(&name).await?;
    if a.json {
        print_json(&resp);
    } else if resp.stopped.is_empty() {
        println!("all processes stopped");
        eprintln!("aside: nothing was running in project {name}");
    } else {
        // agent-procs' line, then which ones.
        let names: Vec<&str> = resp.stopped.iter().map(|p| p.name.as_str()).collect();
        println!("all processes stopped");
        println!("project {name}: stopped {}", names.join(", "));
    }
    if !resp.refused.is_empty() {
        eprintln!(
            "aside: not stopped (you may not stop them): {}",
            resp.refused.join(", ")
        );
        return Ok(1);
    }
    Ok(0)
}

/// `aside session list|clean`.
pub async fn session(cmd: SessionCmd, state: StateDir) -> Result<i32> {
    let client = Client::new(state, owner_or_human(None), true);
    match cmd {
        SessionCmd::List { json } => {
            let projects = client.projects().await?;
            if json {
                print_json(&projects);
                return Ok(0);
            }
            if projects.is_empty() {
                println!("no projects");
                return Ok(0);
            }
            println!(
                "{:<20} {:>5} {:>9}  {:<6} CONFIG",
                "PROJECT", "LIVE", "PROCESSES", "PROXY"
            );
            for p in projects {
                let name = if p.name.is_empty() {
                    "(default)".to_string()
                } else {
                    p.name
                };
                println!(
                    "{name:<20} {:>5} {:>9}  {:<6} {}",
                    p.live,
                    p.processes,
                    p.proxy_port.map_or("-".into(), |p| p.to_string()),
                    p.config.unwrap_or_else(|| "-".into())
                );
            }
            Ok(0)
        }
        SessionCmd::Clean => {
            let cleaned = client.clean_projects().await?;
            if cleaned.is_empty() {
                eprintln!("aside: nothing to clean: every project has something running");
            }
            // agent-procs' line, one per project forgotten.
            for name in cleaned {
                let name = if name.is_empty() {
                    "(default)".to_string()
                } else {
                    name
                };
                println!("cleaned stale session: {name}");
            }
            Ok(0)
        }
    }
}
