//! The real agent hosts (Claude Code, Codex CLI, Gemini CLI from npm) driven through whole turns
//! against a scripted stand-in for their model APIs (`tests/hosts/standin.py`), which records
//! every request a host sends to its model.
//!
//! The hosts are installed with npm, pinned, into `$ASIDE_TEST_HOSTS` (which `.ci/run` points at
//! a cache directory) or else under the target directory, once, under a file lock.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{BIN, Env, Out, eventually};

/// The host CLIs and MCP clients, pinned (`tests/hosts/packages.txt`, which `.ci/run` reads
/// too): `DIR PACKAGE@VERSION` lines.
pub const PACKAGES: &str = include_str!("../hosts/packages.txt");

/// Where the hosts are installed.
pub struct Hosts {
    root: PathBuf,
}

impl Hosts {
    /// Installs the hosts if needed and returns them.
    pub fn get() -> Hosts {
        let root = std::env::var_os("ASIDE_TEST_HOSTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("hosts"));
        std::fs::create_dir_all(&root).expect("hosts directory");
        let lock = std::fs::File::create(root.join(".lock")).expect("hosts lock file");
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).expect("hosts lock");
        let stamp = root.join(".installed");
        if std::fs::read_to_string(&stamp).ok().as_deref() != Some(PACKAGES) {
            let mut by_dir: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
            for line in PACKAGES.lines().filter(|l| !l.starts_with('#')) {
                if let Some((dir, pkg)) = line.split_once(' ') {
                    by_dir.entry(dir).or_default().push(pkg);
                }
            }
            for (dir, pkgs) in by_dir {
                npm_install(&root.join(dir), &pkgs);
            }
            std::fs::write(&stamp, PACKAGES).expect("hosts stamp");
        }
        Hosts { root }
    }

    /// A host's executable (`claude`, `codex`, `gemini`).
    pub fn bin(&self, name: &str) -> PathBuf {
        let p = self.root.join("node_modules/.bin").join(name);
        assert!(p.exists(), "{} is not installed", p.display());
        p
    }

    /// The MCP Inspector's executable.
    pub fn inspector(&self) -> PathBuf {
        self.root.join("inspector/node_modules/.bin/mcp-inspector")
    }

    /// `node_modules`, for Node scripts that use the TypeScript SDK.
    pub fn node_modules(&self) -> PathBuf {
        self.root.join("node_modules")
    }
}

fn npm_install(prefix: &Path, packages: &[&str]) {
    std::fs::create_dir_all(prefix).expect("npm prefix");
    let out = Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            "--prefix",
        ])
        .arg(prefix)
        .args(packages)
        .stdin(Stdio::null())
        .output()
        .expect("npm must be installed for the host tests (Node.js 20 and npm)");
    assert!(
        out.status.success(),
        "npm install {packages:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The scripted model API: follows `plan` (see `tests/hosts/standin.py`) and records requests.
pub struct StandIn {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    log: PathBuf,
}

impl StandIn {
    /// Starts a stand-in with `plan` in `dir`.
    pub fn start(dir: &Path, plan: Value) -> StandIn {
        std::fs::create_dir_all(dir).expect("stand-in dir");
        let plan_path = dir.join("plan.json");
        std::fs::write(&plan_path, plan.to_string()).expect("plan");
        let log = dir.join("requests.jsonl");
        let port_file = dir.join("port");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hosts/standin.py");
        let child = Command::new("python3")
            .arg(script)
            .arg("--plan")
            .arg(&plan_path)
            .arg("--log")
            .arg(&log)
            .arg("--port-file")
            .arg(&port_file)
            .stdin(Stdio::null())
            .spawn()
            .expect("python3 runs the model stand-in");
        eventually(Duration::from_secs(10), "the stand-in to listen", || {
            port_file.exists()
        });
        let port = std::fs::read_to_string(&port_file)
            .expect("port file")
            .trim()
            .parse()
            .expect("a port");
        StandIn { child, port, log }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request recorded so far, in order.
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Agent-loop requests (those that offered tools), in order.
    pub fn turns(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r["turn"] == true)
            .collect()
    }

    /// The first turn whose request shows `needle` to the model.
    pub fn first_turn_with(&self, needle: &str) -> Option<Value> {
        self.turns()
            .into_iter()
            .find(|t| body_text(t).contains(needle))
    }

    /// How many times `needle` was put in front of the model: hosts resend the whole
    /// conversation with each request, so each request's count beyond the one before it is a
    /// new showing.
    pub fn deliveries(&self, needle: &str) -> usize {
        let mut before = 0;
        let mut total = 0;
        for t in self.turns() {
            let n = body_text(&t).matches(needle).count();
            total += n.saturating_sub(before);
            before = n;
        }
        total
    }

    /// Every turn's request body, for failure messages.
    pub fn dump(&self) -> String {
        self.turns()
            .iter()
            .map(body_text)
            .collect::<Vec<_>>()
            .join("\n---\n")
    }

    /// Waits until a turn's request shows `needle`.
    #[track_caller]
    pub fn wait_for(&self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.first_turn_with(needle).is_none() {
            assert!(
                Instant::now() < deadline,
                "no request to the model showed {needle:?} within {limit:?}; requests:\n{}",
                self.dump()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// What a request shows the model: its messages (Anthropic `messages`, OpenAI `input`, Gemini
/// `contents`), as JSON text.
pub fn body_text(req: &Value) -> String {
    let body = &req["body"];
    let shown = match req["api"].as_str() {
        Some("anthropic") => &body["messages"],
        Some("openai") => &body["input"],
        Some("gemini") => &body["contents"],
        _ => body,
    };
    shown.to_string()
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd` until it exits, killing it after `limit`.
#[track_caller]
pub fn run_for(mut cmd: Command, limit: Duration) -> Out {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the host");
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("host output").into(),
        Err(_) => {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("the host did not finish within {limit:?}")
        }
    }
}

/// The aside MCP server as a host starts it: the test's state directory, no owner set.
pub fn aside_mcp_env(env: &Env) -> Value {
    json!({
        "ASIDE_HOME": env.home.display().to_string(),
        "ASIDE_IDLE_TIMEOUT": "60s",
        // A daemon the MCP server starts retries a failed wake soon (the default is 2 s).
        "ASIDE_WAKE_BACKOFF": "300ms",
    })
}

/// Claude Code, isolated in `env`: its config directory (the work directory trusted), the
/// stand-in as its API, `aside mcp` as its one MCP server (with `mcp_args`).
pub struct Claude {
    bin: PathBuf,
    config: PathBuf,
    mcp: PathBuf,
    api: String,
}

impl Claude {
    /// Sets Claude Code up for `env`, talking to `api`.
    pub fn new(hosts: &Hosts, env: &Env, api: &StandIn, mcp_args: &[&str]) -> Claude {
        let config = env.dir.path().join("claude");
        std::fs::create_dir_all(&config).expect("claude config dir");
        let state = json!({
            "hasCompletedOnboarding": true,
            "projects": { env.work.display().to_string(): { "hasTrustDialogAccepted": true } },
        });
        std::fs::write(config.join(".claude.json"), state.to_string()).expect("claude state");
        let mut args = vec!["mcp"];
        args.extend_from_slice(mcp_args);
        let mcp = env.dir.path().join("claude-mcp.json");
        let servers = json!({"mcpServers": {"aside": {
            "command": BIN, "args": args, "env": aside_mcp_env(env),
        }}});
        std::fs::write(&mcp, servers.to_string()).expect("mcp config");
        Claude {
            bin: hosts.bin("claude"),
            config,
            mcp,
            api: api.url(),
        }
    }

    /// Writes the project's `.claude/settings.json` (permissions for aside's tools, and
    /// `hooks` when given).
    pub fn settings(&self, env: &Env, hooks: Option<Value>) {
        let dir = env.work.join(".claude");
        std::fs::create_dir_all(&dir).expect(".claude");
        let mut s = json!({"permissions": {"allow": [
            "mcp__aside__run", "mcp__aside__wait", "mcp__aside__list",
            "mcp__aside__output", "mcp__aside__stop", "mcp__aside__up", "mcp__aside__down",
        ]}});
        if let Some(h) = hooks {
            s["hooks"] = h;
        }
        std::fs::write(dir.join("settings.json"), s.to_string()).expect("settings.json");
    }

    /// `claude -p PROMPT` in the work directory, as a user would run it.
    pub fn prompt(&self, env: &Env, prompt: &str) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(["-p", prompt, "--output-format", "json", "--mcp-config"])
            .arg(&self.mcp)
            .arg("--strict-mcp-config")
            .current_dir(&env.work)
            .env("CLAUDE_CONFIG_DIR", &self.config)
            .env("ANTHROPIC_BASE_URL", &self.api)
            .env("ANTHROPIC_API_KEY", "sk-standin")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env("DISABLE_AUTOUPDATER", "1")
            .env("ASIDE_HOME", &env.home)
            .env_remove("ASIDE_OWNER")
            .env_remove("ASIDE_TEAM")
            .env_remove("ASIDE_WAKE");
        c
    }
}

/// Codex CLI, isolated in `env`: `CODEX_HOME` with the stand-in as its model provider and
/// `aside mcp` (with `mcp_args`) as an MCP server whose tools are approved.
pub struct Codex {
    bin: PathBuf,
    home: PathBuf,
}

impl Codex {
    /// Sets Codex up for `env`, talking to `api`.
    pub fn new(hosts: &Hosts, env: &Env, api: &StandIn, mcp_args: &[&str]) -> Codex {
        let home = env.dir.path().join("codex");
        std::fs::create_dir_all(&home).expect("CODEX_HOME");
        let mut args = vec!["\"mcp\"".to_string()];
        args.extend(mcp_args.iter().map(|a| format!("{a:?}")));
        let config = format!(
            r#"model = "gpt-5"
model_provider = "standin"

[model_providers.standin]
name = "standin"
base_url = "{api}/v1"
wire_api = "responses"
env_key = "OPENAI_API_KEY"

[mcp_servers.aside]
command = {bin:?}
args = [{args}]
default_tools_approval_mode = "approve"
env = {{ ASIDE_HOME = {home:?}, ASIDE_IDLE_TIMEOUT = "60s" }}
"#,
            api = api.url(),
            bin = BIN,
            args = args.join(", "),
            home = env.home.display().to_string(),
        );
        std::fs::write(home.join("config.toml"), config).expect("codex config");
        Codex {
            bin: hosts.bin("codex"),
            home,
        }
    }

    /// `codex exec PROMPT` in the work directory.
    pub fn exec(&self, env: &Env, prompt: &str) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(["exec", "--skip-git-repo-check", "--json", prompt])
            .current_dir(&env.work)
            .env("CODEX_HOME", &self.home)
            .env("OPENAI_API_KEY", "sk-standin")
            .env_remove("ASIDE_OWNER")
            .env_remove("ASIDE_TEAM");
        c
    }
}

/// Gemini CLI, isolated in `env`: `GEMINI_CLI_HOME` with `aside mcp` as a trusted MCP server,
/// the stand-in as its API.
pub struct Gemini {
    bin: PathBuf,
    home: PathBuf,
    api: String,
}

impl Gemini {
    /// Sets Gemini CLI up for `env`, talking to `api`.
    pub fn new(hosts: &Hosts, env: &Env, api: &StandIn) -> Gemini {
        Gemini::with_hooks(hosts, env, api, None)
    }

    /// The same, with `hooks` in its settings.
    pub fn with_hooks(hosts: &Hosts, env: &Env, api: &StandIn, hooks: Option<Value>) -> Gemini {
        let home = env.dir.path().join("gemini");
        std::fs::create_dir_all(home.join(".gemini")).expect("GEMINI_CLI_HOME");
        let mut settings = json!({
            "security": {"auth": {"selectedType": "gemini-api-key"}, "folderTrust": {"enabled": false}},
            "mcpServers": {"aside": {"command": BIN, "args": ["mcp"], "env": aside_mcp_env(env), "trust": true}},
            "general": {"disableAutoUpdate": true, "disableUpdateNag": true},
            "privacy": {"usageStatisticsEnabled": false},
            "telemetry": {"enabled": false},
        });
        if let Some(h) = hooks {
            settings["hooks"] = h;
        }
        std::fs::write(home.join(".gemini/settings.json"), settings.to_string())
            .expect("gemini settings");
        Gemini {
            bin: hosts.bin("gemini"),
            home,
            api: api.url(),
        }
    }

    /// `gemini -p PROMPT` in the work directory.
    pub fn prompt(&self, env: &Env, prompt: &str) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(["-p", prompt, "-o", "json"])
            .current_dir(&env.work)
            .env("GEMINI_CLI_HOME", &self.home)
            .env("GEMINI_API_KEY", "standin")
            .env("GOOGLE_GEMINI_BASE_URL", &self.api)
            .env("ASIDE_HOME", &env.home)
            .env_remove("ASIDE_WAKE")
            .env_remove("ASIDE_OWNER")
            .env_remove("ASIDE_TEAM");
        c
    }
}
