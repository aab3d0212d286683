//! Projects from config files: agent-procs' documented example unchanged, `up` in dependency
//! order and idempotent, `down` in reverse order, `--only`, restart policies, file watching,
//! the reverse proxy with a WebSocket echo, and config errors with their line and column.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Env, eventually};
use serde_json::Value;

/// A port nobody listens on now (the kernel's choice).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ts(v: &Value) -> jiff::Timestamp {
    v.as_str().unwrap().parse().unwrap()
}

fn by_name<'a>(procs: &'a [Value], name: &str) -> &'a Value {
    procs
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no process {name} in {procs:?}"))
}

fn project_status(env: &Env, project: &str) -> Vec<Value> {
    match env
        .aside(&["status", "--all", "--json", "--project", project])
        .ok()
        .json()
    {
        Value::Array(v) => v,
        other => panic!("not a list: {other}"),
    }
}

/// The agent-procs README's multi-process file, with commands that run here: `depends_on`,
/// `ready`, `port`, `env`, `cwd`.
#[test]
fn the_agent_procs_example_starts_in_order_is_idempotent_and_comes_down_in_reverse() {
    let env = Env::new();
    let port = free_port();
    std::fs::create_dir_all(env.work.join("backend")).unwrap();
    std::fs::write(env.work.join("backend/index.html"), "hello from api\n").unwrap();
    env.write(
        "agent-procs.yaml",
        &format!(
            r#"session: myproject
processes:
  db:
    cmd: sh -c 'sleep 0.3; echo "ready to accept connections"; exec sleep 300'
    ready: "ready to accept connections"
    autorestart: always
    max_restarts: 3
  api:
    cmd: sh -c 'echo "$DATABASE_URL $HOST:$PORT" > seen.txt; exec python3 -u -m http.server $PORT --bind $HOST'
    cwd: ./backend
    env:
      DATABASE_URL: postgres://localhost:5432/mydb
    ready: "Serving HTTP"
    port: {port}
    depends_on:
      - db
    autorestart: on-failure
"#
        ),
    );
    let o = env.aside(&["up"]).ok();
    assert!(o.stdout.contains("project myproject is up"), "{}", o.stdout);
    let procs = project_status(&env, "myproject");
    let (db, api) = (by_name(&procs, "db"), by_name(&procs, "api"));
    assert_eq!(db["status"], "ready");
    assert_eq!(api["status"], "ready");
    assert_eq!(api["port"], port);
    // api started only once db was ready: after db's ready line was written.
    let ready_at = env.json_lines(&["logs", "myproject/db", "--json"]);
    let db_ready = ready_at
        .iter()
        .find(|e| e["text"] == "ready to accept connections")
        .unwrap();
    assert!(ts(&api["started_at"]) >= ts(&db_ready["ts"]));
    // env, PORT/HOST and cwd reached the command.
    let seen = std::fs::read_to_string(env.work.join("backend/seen.txt")).unwrap();
    assert_eq!(
        seen.trim(),
        format!("postgres://localhost:5432/mydb 127.0.0.1:{port}")
    );
    let mut body = String::new();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").unwrap();
    s.read_to_string(&mut body).unwrap();
    assert!(body.contains("hello from api"), "{body}");

    // `up` again: nothing changes.
    let again = env.aside(&["up", "--json"]).ok();
    let states: Vec<Value> = again
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for name in ["db", "api"] {
        assert!(
            states
                .iter()
                .any(|m| m["name"] == name && m["state"] == "unchanged"),
            "{states:?}"
        );
    }
    let after = project_status(&env, "myproject");
    assert_eq!(by_name(&after, "api")["pid"], api["pid"]);
    assert_eq!(by_name(&after, "db")["run_id"], db["run_id"]);

    // A changed entry is restarted; the others are left alone.
    let cfg = std::fs::read_to_string(env.work.join("agent-procs.yaml")).unwrap();
    env.write("agent-procs.yaml", &cfg.replace("mydb\n", "otherdb\n"));
    env.aside(&["up"]).ok();
    let changed = project_status(&env, "myproject");
    assert_ne!(by_name(&changed, "api")["run_id"], api["run_id"]);
    assert_eq!(by_name(&changed, "api")["restarts"], 1);
    assert_eq!(by_name(&changed, "db")["run_id"], db["run_id"]);

    // `down`: dependents first, only this project, restarts disabled.
    let other = env.run(&["--name", "api", "sleep 300"]);
    let down = env.aside(&["down", "--json"]).ok().json();
    assert_eq!(down["stopped"].as_array().unwrap().len(), 2);
    let gone = project_status(&env, "myproject");
    let (db, api) = (by_name(&gone, "db"), by_name(&gone, "api"));
    assert_eq!(db["status"], "stopped");
    assert_eq!(api["status"], "stopped");
    assert!(
        ts(&api["ended_at"]) <= ts(&db["ended_at"]),
        "api stops before db"
    );
    assert_eq!(db["autorestart"]["state"], "disabled");
    assert_eq!(
        env.status(other["id"].as_str().unwrap())["status"],
        "running"
    );
    let sessions = env.aside(&["session", "list", "--json"]).ok().json();
    let mine = sessions
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "myproject")
        .unwrap();
    assert_eq!(mine["live"], 0);
    // `session clean` forgets it once its results were read; the default project's live
    // process is kept.
    env.aside(&["inbox", "--drain"]).ok();
    let cleaned = env.aside(&["session", "clean"]).ok();
    assert!(cleaned.stdout.contains("myproject"), "{}", cleaned.stdout);
    let sessions = env.aside(&["session", "list", "--json"]).ok().json();
    let names: Vec<&str> = sessions
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [""], "only the default project is left: {sessions}");
    assert_eq!(
        env.status(other["id"].as_str().unwrap())["status"],
        "running"
    );
}

#[test]
fn only_starts_the_named_processes_and_their_dependencies() {
    let env = Env::new();
    env.write(
        "aside.yaml",
        r#"session: only
processes:
  db:
    cmd: sleep 300
  api:
    cmd: sleep 300
    depends_on: [db]
  web:
    cmd: sleep 300
    depends_on: [api]
  docs:
    cmd: sleep 300
"#,
    );
    env.aside(&["up", "--only", "api"]).ok();
    let names: Vec<String> = project_status(&env, "only")
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"db".into()) && names.contains(&"api".into()));
}

#[test]
fn a_dependency_that_fails_skips_its_dependents_and_up_says_which() {
    let env = Env::new();
    env.write(
        "aside.yaml",
        r#"session: broken
processes:
  db:
    cmd: sh -c 'echo no disk; exit 3'
    ready: never printed
  api:
    cmd: sleep 300
    depends_on: [db]
"#,
    );
    let o = env.aside(&["up"]);
    assert_eq!(o.code, 1, "{}", o.stdout);
    assert!(o.stderr.contains("db (failed (exit 3))"), "{}", o.stderr);
    assert!(
        o.stderr.contains("api (its dependency db failed)"),
        "{}",
        o.stderr
    );
    let procs = project_status(&env, "broken");
    assert_eq!(procs.len(), 1, "api was never started: {procs:?}");
}

#[test]
fn two_projects_can_both_have_an_api() {
    let env = Env::new();
    for p in ["one", "two"] {
        std::fs::create_dir_all(env.work.join(p)).unwrap();
        std::fs::write(
            env.work.join(p).join("aside.yaml"),
            format!("session: {p}\nprocesses:\n  api:\n    cmd: sleep 300\n"),
        )
        .unwrap();
        let cfg = env.work.join(p).join("aside.yaml");
        env.aside(&["up", "--config", cfg.to_str().unwrap()]).ok();
    }
    let o = env.aside(&["stop", "api"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("one/api or two/api"), "{}", o.stderr);
    env.aside(&["stop", "api", "--project", "two"]).ok();
    assert_eq!(env.status("one/api")["status"], "running");
    assert_eq!(env.status("two/api")["status"], "stopped");
}

#[test]
fn restart_on_failure_stops_at_the_limit_and_annotates_each_run() {
    let env = Env::new();
    let p = env.run(&[
        "--autorestart",
        "on-failure",
        "--max-restarts",
        "2",
        "--restart-delay",
        "50",
        "--name",
        "flaky",
        "echo boom; exit 7",
    ]);
    let id = p["id"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(20), "restarts to be exhausted", || {
        let s = env.status(&id);
        s["autorestart"]["state"] == "exhausted"
    });
    let s = env.status(&id);
    assert_eq!(s["restarts"], 2);
    assert_eq!(s["status"], "failed");
    assert_eq!(s["exit_code"], 7);
    let log = env
        .aside(&["logs", "flaky", "--streams", "both"])
        .ok()
        .stdout;
    assert!(
        log.contains("[aside] restarted (exit 7, attempt 2/2)"),
        "{log}"
    );
    // Each restart is a run with its own result in the inbox.
    let inbox = env.aside(&["inbox", "--json"]).ok().json();
    let runs = inbox["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["result"]["process_id"] == id.as_str())
        .count();
    assert_eq!(runs, 3);
}

#[test]
fn a_manual_stop_disables_restarts_and_restart_enables_them_again() {
    let env = Env::new();
    let p = env.run(&[
        "--autorestart",
        "always",
        "--restart-delay",
        "50",
        "--name",
        "server",
        "sleep 300",
    ]);
    let id = p["id"].as_str().unwrap();
    env.aside(&["stop", id]).ok();
    let s = env.status(id);
    assert_eq!(s["status"], "stopped");
    assert_eq!(s["autorestart"]["state"], "disabled");
    // Still stopped once its restart delay would long have passed: wait on another run's
    // exit, which takes longer than the 50 ms delay.
    env.aside(&["run", "--wait", "sleep 0.5"]).ok();
    assert_eq!(env.status(id)["run_id"], s["run_id"]);
    env.aside(&["restart", id]).ok();
    let s = env.status(id);
    assert_eq!(s["status"], "running");
    assert_eq!(s["autorestart"]["state"], "active");
    assert_eq!(s["autorestart"]["attempts"], 0);
}

fn watch_test(with_cwd: bool) {
    let env = Env::new();
    let root = if with_cwd {
        env.work.join("app")
    } else {
        env.work.clone()
    };
    std::fs::create_dir_all(root.join("src/deep")).unwrap();
    std::fs::create_dir_all(root.join("node_modules/pkg")).unwrap();
    let cwd = if with_cwd { "    cwd: app\n" } else { "" };
    env.write(
        "aside.yaml",
        &format!(
            "session: w\nprocesses:\n  dev:\n    cmd: sleep 300\n{cwd}    watch: [\"src/**\"]\n    watch_ignore: [\"*.tmp\"]\n"
        ),
    );
    env.aside(&["up"]).ok();
    let first = env.status("w/dev");
    // Ignored: a default-ignored directory and an ignored glob. Then a real change, deep in a
    // directory created after the watch started.
    std::fs::write(root.join("node_modules/pkg/x.js"), "x").unwrap();
    std::fs::write(root.join("src/scratch.tmp"), "x").unwrap();
    std::fs::create_dir_all(root.join("src/deep/new")).unwrap();
    // The watcher adds the new directory as it sees it appear: write into it until a change
    // there lands, leaving each write the 500 ms debounce (a write resets it).
    let mut last_write: Option<std::time::Instant> = None;
    eventually(Duration::from_secs(20), "a watch restart", || {
        if last_write.is_none_or(|t| t.elapsed() > Duration::from_secs(2)) {
            std::fs::write(root.join("src/deep/new/main.rs"), "fn main() {}").unwrap();
            last_write = Some(std::time::Instant::now());
        }
        env.status("w/dev")["restarts"] == 1
    });
    let now = env.status("w/dev");
    assert_ne!(now["run_id"], first["run_id"]);
    let log = env
        .aside(&["logs", "w/dev", "--streams", "both"])
        .ok()
        .stdout;
    assert!(
        log.contains("[aside] restarted: src/deep/new/main.rs changed"),
        "{log}"
    );
}

#[test]
fn watch_restarts_relative_to_the_config_directory() {
    watch_test(false);
}

#[test]
fn watch_restarts_relative_to_cwd() {
    watch_test(true);
}

#[test]
fn watch_revives_a_failed_process() {
    let env = Env::new();
    std::fs::create_dir_all(env.work.join("src")).unwrap();
    let p = env.run(&[
        "--watch",
        "src/*.py",
        "--name",
        "script",
        "test -f src/ok.py && sleep 300",
    ]);
    let id = p["id"].as_str().unwrap();
    env.wait_exit(id);
    assert_eq!(env.status(id)["status"], "failed");
    std::fs::write(env.work.join("src/ok.py"), "print('fixed')").unwrap();
    eventually(Duration::from_secs(20), "the watch to revive it", || {
        env.status(id)["status"] == "running"
    });
}

/// A minimal WebSocket echo server (stdlib only): answers the handshake, then echoes one
/// text frame.
const WS_ECHO: &str = r#"
import base64, hashlib, os, socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(os.environ["PORT"]))); s.listen(8)
print("echo listening", flush=True)
while True:
    c, _ = s.accept()
    req = b""
    while b"\r\n\r\n" not in req:
        req += c.recv(4096)
    key = [l.split(b":", 1)[1].strip() for l in req.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key")][0]
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    head = c.recv(2); n = head[1] & 0x7f; mask = c.recv(4); data = b""
    while len(data) < n:
        data += c.recv(n - len(data))
    text = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    c.sendall(bytes([0x81, len(text)]) + text)
    c.close()
"#;

#[test]
fn the_proxy_serves_two_processes_by_name_including_a_websocket() {
    let env = Env::new();
    env.write("echo.py", WS_ECHO);
    std::fs::write(env.work.join("index.html"), "the web page\n").unwrap();
    env.write(
        "aside.yaml",
        r#"session: px
proxy: true
processes:
  web:
    cmd: python3 -u -m http.server $PORT --bind 127.0.0.1
    ready: Serving HTTP
  echo:
    cmd: python3 -u echo.py
    ready: echo listening
"#,
    );
    let o = env.aside(&["up"]).ok();
    let procs = project_status(&env, "px");
    let url = by_name(&procs, "web")["url"].as_str().unwrap().to_string();
    assert!(o.stdout.contains(&url), "{}", o.stdout);
    let proxy_port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let get = |host: &str, path: &str| {
        let mut s = TcpStream::connect(("127.0.0.1", proxy_port)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    };
    let page = get(&format!("web.localhost:{proxy_port}"), "/index.html");
    assert!(
        page.starts_with("HTTP/1.") && page[8..].starts_with(" 200"),
        "{page}"
    );
    assert!(page.contains("the web page"), "{page}");
    let missing = get(&format!("nope.localhost:{proxy_port}"), "/");
    assert!(missing.starts_with("HTTP/1.1 502"), "{missing}");
    assert!(
        missing.contains("http://web.localhost"),
        "lists the routes: {missing}"
    );
    assert!(missing.contains("http://echo.localhost"), "{missing}");

    // WebSocket through the proxy.
    let mut s = TcpStream::connect(("127.0.0.1", proxy_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /chat HTTP/1.1\r\nHost: echo.localhost:{proxy_port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    let text = b"hello through aside";
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | text.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(text.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).unwrap();
    let mut reply = vec![0u8; 2 + text.len()];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(&reply[2..], text);

    // `down` takes the proxy away with the project.
    env.aside(&["down"]).ok();
    assert!(TcpStream::connect(("127.0.0.1", proxy_port)).is_err());
}

#[test]
fn config_errors_name_file_line_and_column_and_start_nothing() {
    let env = Env::new();
    let cases = [
        (
            "processes:\n  a:\n    cmd: x\n    cmdd: y\n",
            "aside.yaml:4:5: unknown field `cmdd`",
        ),
        (
            "processes:\n  a:\n    cmd: x\n    autorestart: sometimes\n",
            "aside.yaml:4:18: unknown variant `sometimes`",
        ),
        (
            "processes:\n  a:\n    cmd: x\n    depends_on: [b]\n",
            "aside.yaml:4:18: process \"a\" depends on \"b\", which is not defined",
        ),
        (
            "processes:\n  a:\n    cmd: x\n    depends_on: [b]\n  b:\n    cmd: y\n    depends_on: [a]\n",
            "aside.yaml:3:5: dependency cycle: a → b → a",
        ),
        (
            "processes:\n  a:\n    cmd: x\n    port: 3000\n  b:\n    cmd: y\n    port: 3000\n",
            "aside.yaml:7:11: port 3000 is used by both",
        ),
    ];
    for (yaml, expected) in cases {
        env.write("aside.yaml", yaml);
        for cmd in [&["up"][..], &["config", "check"][..]] {
            let o = env.aside(cmd);
            assert_eq!(o.code, 1, "{cmd:?} {yaml}");
            assert!(o.stderr.contains(expected), "{cmd:?}: {}", o.stderr);
        }
    }
    assert!(!env.home.join("aside.db").exists(), "nothing was started");
    env.write("aside.yaml", "processes:\n  a:\n    cmd: sleep 1\n");
    let ok = env.aside(&["config", "check"]).ok();
    assert!(ok.stdout.contains("1 process (a)"), "{}", ok.stdout);
    let schema = env.aside(&["config", "schema"]).ok().json();
    assert!(schema["properties"]["processes"].is_object(), "{schema}");
}

#[test]
fn http_and_exec_probes_and_env_file() {
    let env = Env::new();
    let port = free_port();
    env.write(
        ".env",
        "# settings\nexport GREETING=\"hello there\"\nPORT=1\n",
    );
    env.write(
        "aside.yaml",
        &format!(
            r#"session: probes
processes:
  web:
    cmd: sh -c 'sleep 0.3; exec python3 -u -m http.server {port} --bind 127.0.0.1'
    ready: {{http: "http://127.0.0.1:{port}/", interval: 100ms, timeout: 20s}}
  marker:
    cmd: sh -c 'echo "$GREETING" > greeting.txt; sleep 0.3; touch done.flag; exec sleep 300'
    env_file: .env
    ready: {{exec: "test -f done.flag", interval: 50}}
    depends_on: [web]
  never:
    cmd: sleep 300
    ready: {{tcp: {closed}, timeout: 500ms}}
"#,
            closed = free_port()
        ),
    );
    let o = env.aside(&["up", "--json"]);
    assert_eq!(o.code, 1, "never does not get ready: {}", o.stdout);
    assert!(
        o.stderr
            .contains("never (not ready within 0.5 s; left running)"),
        "{}",
        o.stderr
    );
    let procs = project_status(&env, "probes");
    assert_eq!(by_name(&procs, "web")["status"], "ready");
    assert_eq!(by_name(&procs, "marker")["status"], "ready");
    assert_eq!(by_name(&procs, "never")["status"], "running");
    let greeting = std::fs::read_to_string(env.work.join("greeting.txt")).unwrap();
    assert_eq!(greeting.trim(), "hello there");
    // The run_ready events were logged.
    let events = env.json_lines(&[
        "events",
        "--since",
        "0",
        "--kind",
        "run_ready",
        "--count",
        "2",
        "--json",
    ]);
    assert_eq!(events.len(), 2);
}

#[test]
fn stop_all_cancels_a_pending_restart() {
    let env = Env::new();
    let p = env.run(&[
        "--autorestart",
        "always",
        "--restart-delay",
        "2s",
        "--name",
        "bouncy",
        "true",
    ]);
    let id = p["id"].as_str().unwrap();
    env.wait_exit(id);
    env.aside(&["stop-all"]).ok();
    let s = env.status(id);
    assert_eq!(s["autorestart"]["state"], "disabled");
    // Past the 2 s delay, still the same run.
    env.aside(&["run", "--wait", "sleep 2.5"]).ok();
    assert_eq!(env.status(id)["run_id"], s["run_id"]);
}

/// A server that sends one chunk, then waits for a file before the last one.
const SLOW_CHUNKS: &str = r#"
import os, socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(os.environ["PORT"]))); s.listen(8)
print("slow listening", flush=True)
while True:
    c, _ = s.accept()
    req = b""
    while b"\r\n\r\n" not in req:
        req += c.recv(4096)
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
    c.sendall(b"6\r\nfirst\n\r\n")
    while not os.path.exists("gate"):
        import time; time.sleep(0.02)
    c.sendall(b"5\r\nlast\n\r\n0\r\n\r\n")
    c.close()
"#;

#[test]
fn the_proxy_streams_a_response_as_it_is_written() {
    let env = Env::new();
    env.write("slow.py", SLOW_CHUNKS);
    let p = env.run(&[
        "--proxy",
        "--name",
        "slow",
        "--ready",
        "slow listening",
        "python3 -u slow.py",
    ]);
    env.aside(&[
        "wait",
        "slow",
        "--until",
        "slow listening",
        "--timeout",
        "20s",
    ])
    .ok();
    let url = env.status(p["id"].as_str().unwrap())["url"]
        .as_str()
        .unwrap()
        .to_string();
    let proxy_port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let mut s = TcpStream::connect(("127.0.0.1", proxy_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: slow.localhost:{proxy_port}\r\n\r\n"
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("first") {
        let n = s.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "closed before the first chunk: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    assert!(!String::from_utf8_lossy(&got).contains("last"));
    std::fs::write(env.work.join("gate"), "").unwrap();
    while !String::from_utf8_lossy(&got).contains("last") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the last chunk");
        got.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn the_daemon_does_not_idle_out_while_a_restart_is_pending() {
    let env = Env::new();
    let o: common::Out = env
        .command()
        .env("ASIDE_IDLE_TIMEOUT", "1s")
        .args([
            "run",
            "--autorestart",
            "always",
            "--max-restarts",
            "1",
            "--restart-delay",
            "2500",
            "echo run >> runs.txt",
        ])
        .output()
        .unwrap()
        .into();
    assert_eq!(o.code, 0, "{}", o.stderr);
    // No API requests while waiting (they would keep the daemon awake): watch the file.
    eventually(Duration::from_secs(20), "the restarted run", || {
        std::fs::read_to_string(env.work.join("runs.txt")).is_ok_and(|t| t.lines().count() == 2)
    });
}
