//! Test harness: each test gets its own `ASIDE_HOME` (so its own daemon, socket and
//! database), drives the real `aside` binary, and cleans up every process it started.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod hosts;
pub mod tmux;

pub const BIN: &str = env!("CARGO_BIN_EXE_aside");

pub struct Env {
    pub dir: tempfile::TempDir,
    pub home: PathBuf,
    pub work: PathBuf,
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }

    #[track_caller]
    pub fn ok(self) -> Out {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

impl From<Output> for Out {
    fn from(o: Output) -> Out {
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Env {
    /// `aside ARGS` whose stdout is one JSON value per line (`--json` of logs and events).
    pub fn json_lines(&self, args: &[&str]) -> Vec<Value> {
        self.aside(args)
            .ok()
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn new() -> Env {
        // Short paths: the socket path must stay under 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("as")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let home = dir.path().join("h");
        let work = dir.path().join("w");
        std::fs::create_dir_all(&work).expect("work dir");
        Env { dir, home, work }
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env("ASIDE_HOME", &self.home)
            .env("ASIDE_IDLE_TIMEOUT", "60s")
            .env_remove("ASIDE_OWNER")
            .env_remove("ASIDE_TEAM")
            .env_remove("ASIDE_LOG_CAP")
            .env_remove("ASIDE_PRUNE_AFTER")
            .env_remove("ASIDE_REMOTE")
            .env_remove("ASIDE_TOKEN")
            .env_remove("ASIDE_LISTEN")
            .env_remove("ASIDE_WEB_PORT")
            // Hooks fed by a test would register wakes resuming the test binary.
            .env("ASIDE_WAKE", "off")
            .current_dir(&self.work)
            .stdin(Stdio::null());
        c
    }

    /// Runs `aside ARGS` to completion.
    pub fn aside(&self, args: &[&str]) -> Out {
        self.command()
            .args(args)
            .output()
            .expect("run aside")
            .into()
    }

    /// `aside run --json ARGS…` and returns the process record.
    pub fn run(&self, args: &[&str]) -> Value {
        let mut a = vec!["run", "--json"];
        a.extend_from_slice(args);
        self.aside(&a).ok().json()
    }

    pub fn status(&self, reference: &str) -> Value {
        self.aside(&["status", reference, "--json"]).ok().json()
    }

    pub fn status_all(&self) -> Vec<Value> {
        match self.aside(&["status", "--all", "--json"]).ok().json() {
            Value::Array(v) => v,
            other => panic!("status is not a list: {other}"),
        }
    }

    pub fn wait_exit(&self, reference: &str) -> Value {
        self.aside(&["wait", reference, "--exit", "--timeout", "60s", "--json"])
            .ok()
            .json()
    }

    pub fn run_dir(&self, run_id: &str) -> PathBuf {
        self.home.join("runs").join(run_id)
    }

    pub fn daemon_pid(&self) -> Option<i32> {
        let o = self.aside(&["daemon", "status", "--json"]);
        o.json()["pid"].as_i64().map(|p| p as i32)
    }

    /// SIGKILLs the daemon and waits until it is really gone: not just a zombie main thread,
    /// but no longer accepting on its socket.
    pub fn kill_daemon(&self) -> i32 {
        let pid = self.daemon_pid().expect("a running daemon");
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let sock = self.home.join("run/aside.sock");
        eventually(Duration::from_secs(5), "the daemon to die", || {
            !alive(pid) && std::os::unix::net::UnixStream::connect(&sock).is_err()
        });
        pid
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.work.join(name);
        std::fs::write(&p, text).expect("write file");
        p
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Keep the state of a failed test for the post-mortem (daemon.log, run dirs).
            let kept = self.dir.path().with_extension("failed");
            let _ = std::fs::create_dir_all(&kept);
            let _ = std::process::Command::new("cp")
                .arg("-a")
                .arg(&self.home)
                .arg(&kept)
                .status();
            eprintln!("test state kept in {}", kept.display());
        }
        // Leave nothing behind: every process of every run, then the daemon.
        if let Ok(o) = Command::new(BIN)
            .env("ASIDE_HOME", &self.home)
            .args(["daemon", "status", "--json"])
            .output()
            && o.status.success()
        {
            let _ = Command::new(BIN)
                .env("ASIDE_HOME", &self.home)
                .env_remove("ASIDE_OWNER")
                .args(["stop-all"])
                .output();
            let _ = Command::new(BIN)
                .env("ASIDE_HOME", &self.home)
                .args(["daemon", "stop"])
                .output();
        }
        kill_sessions_under(&self.home);
    }
}

/// Kills every process whose session leader was started by a run under `home` (belt and
/// braces for tests that kill shims or daemons on purpose).
fn kill_sessions_under(home: &Path) {
    let Ok(runs) = std::fs::read_dir(home.join("runs")) else {
        return;
    };
    for run in runs.flatten() {
        let Ok(text) = std::fs::read_to_string(run.path().join("shim.json")) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        for key in ["pid", "shim_pid"] {
            if let Some(pid) = v[key].as_i64() {
                for p in session_members(pid as i32) {
                    unsafe { libc::kill(p, libc::SIGKILL) };
                }
            }
        }
    }
}

/// Every pid in /proc.
pub fn all_pids() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
}

/// Live (non-zombie) processes of session `sid`.
pub fn session_members(sid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for pid in all_pids() {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if f.first().is_some_and(|s| *s == "Z") {
            continue;
        }
        if f.get(3).and_then(|s| s.parse::<i32>().ok()) == Some(sid) {
            out.push(pid);
        }
    }
    out
}

/// True when `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let close = stat.rfind(')').unwrap_or(0);
            !stat[close + 1..].trim_start().starts_with('Z')
        }
        Err(_) => false,
    }
}

/// Polls `cond` until it holds or `limit` passes; panics with `what` on timeout. For facts
/// that have no event to wait on (a pid vanishing from /proc).
#[track_caller]
pub fn eventually(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every pid whose command line contains `needle`.
pub fn pids_with_cmdline(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for pid in all_pids() {
        if let Ok(c) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            if c.contains(needle) && alive(pid) {
                out.push(pid);
            }
        }
    }
    out
}

/// A marker unique to this test, for finding its processes in /proc.
pub fn marker(tag: &str) -> String {
    format!("{tag}{}{}", std::process::id(), rand_suffix())
}

fn rand_suffix() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    t % 100_000
}

/// One HTTP/1.1 exchange with 127.0.0.1:`port`: `head` is the request line and headers
/// (without the final blank line; `Connection: close` is added). Returns the status code and
/// the whole answer as text.
pub fn http(port: u16, head: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "{head}\r\naside-protocol: 1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {out:?}"));
    (code, out)
}

/// The official MCP Python SDK (a real client nobody here wrote), pinned: its API moved
/// between majors.
pub const MCP_SDK: &str = "mcp==2.3.0";

/// The Python of a virtualenv with [`MCP_SDK`], made under the target directory on first use.
pub fn venv_python() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mcp-venv");
    let python = venv.join("bin/python");
    // Tests (threads, or processes under nextest) provision one venv, one at a time.
    let lock = std::fs::File::create(venv.with_extension("lock")).expect("venv lock file");
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).expect("venv lock");
    let ready = python.exists()
        && Command::new(&python)
            .args(["-c", "import mcp, anyio"])
            .output()
            .is_ok_and(|o| o.status.success());
    if !ready {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 must be installed for the MCP tests");
        assert!(made.success(), "python3 -m venv failed");
        let pip = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                MCP_SDK,
            ])
            .status()
            .expect("pip");
        assert!(pip.success(), "pip install {MCP_SDK} failed");
    }
    python
}

/// Runs `tests/mcp/SCRIPT` with the SDK's Python against `env` (`ASIDE_BIN`, `ASIDE_HOME`,
/// `ASIDE_WORK` set, plus `extra`); panics with its output unless it succeeds and prints `done`.
pub fn run_mcp_script(env: &Env, script: &str, done: &str, extra: &[(&str, &str)]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/mcp")
        .join(script);
    let out = Command::new(venv_python())
        .arg(script)
        .env("ASIDE_BIN", BIN)
        .env("ASIDE_HOME", &env.home)
        .env("ASIDE_WORK", &env.work)
        .env("ASIDE_IDLE_TIMEOUT", "60s")
        .env_remove("ASIDE_OWNER")
        .env_remove("ASIDE_TEAM")
        .envs(extra.iter().copied())
        .output()
        .expect("run the MCP client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "MCP client checks failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains(done), "{stdout}");
}
