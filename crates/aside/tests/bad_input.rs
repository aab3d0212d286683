//! Bad input gets one clear line, exit 1 or 2, and changes nothing.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;

use common::*;

#[track_caller]
fn refused(o: Out, code: i32, needle: &str) {
    assert_eq!(o.code, code, "stdout: {}\nstderr: {}", o.stdout, o.stderr);
    assert!(
        o.stderr.contains(needle),
        "expected {needle:?} in: {}",
        o.stderr
    );
    assert!(o.stdout.is_empty(), "nothing on stdout: {}", o.stdout);
}

#[test]
fn each_bad_request_is_refused_clearly_and_leaves_everything_running() {
    let env = Env::new();
    let p = env.run(&["--name", "keep", "sleep 60"]);

    refused(
        env.aside(&["status", "nope"]),
        2,
        "no process named or with id \"nope\"",
    );
    refused(env.aside(&["stop", "nope"]), 2, "no process named");
    refused(env.aside(&["logs", "nope"]), 2, "no process named");
    refused(
        env.aside(&["wait", "nope", "--exit"]),
        2,
        "no process named",
    );
    refused(env.aside(&["restart", "nope"]), 2, "no process named");
    refused(
        env.aside(&["run", "--name", "keep", "sleep 1"]),
        1,
        "the name \"keep\" is already used by a running process",
    );
    refused(env.aside(&["run", ""]), 1, "the command is empty");
    refused(env.aside(&["run", "   &"]), 1, "the command is empty");
    refused(
        env.aside(&["run", "--cwd", "/definitely/not/here", "true"]),
        1,
        "cwd /definitely/not/here cannot be used",
    );
    let file = env.write("plain-file", "x");
    refused(
        env.aside(&["run", "--cwd", file.to_str().unwrap(), "true"]),
        1,
        "is not a directory",
    );
    refused(
        env.aside(&["run", "--timeout", "soon", "true"]),
        2,
        "invalid duration \"soon\"",
    );
    refused(
        env.aside(&["run", "--grace=-3s", "true"]),
        2,
        "must not be negative",
    );
    refused(
        env.aside(&["run", "--name", "has space", "true"]),
        1,
        "invalid name",
    );
    refused(
        env.aside(&["logs", "keep", "--grep", "("]),
        1,
        "invalid --grep regex",
    );
    refused(
        env.aside(&["wait", "keep", "--until", "(", "--regex", "--timeout", "1s"]),
        1,
        "invalid regex",
    );
    refused(
        env.aside(&["stop", "keep", "--signal", "SIGFOO"]),
        1,
        "unknown signal \"SIGFOO\"",
    );
    refused(
        env.aside(&["stop", "keep", "--owner", "intruder"]),
        1,
        "intruder may not stop \"keep\"",
    );
    refused(
        env.aside(&["inbox", "--ack", "no-such-id"]),
        2,
        "no pending notification",
    );

    // Nothing changed: the process runs, with its run, and no new process was recorded.
    let st = env.status("keep");
    assert_eq!(st["status"], "running");
    assert_eq!(st["run_id"], p["run_id"]);
    assert_eq!(env.status_all().len(), 1);
}

/// A fake daemon of another protocol version answers on the socket.
#[test]
fn a_daemon_of_another_protocol_version_is_refused_clearly() {
    let env = Env::new();
    let sock_dir = env.home.join("run");
    std::fs::create_dir_all(&sock_dir).unwrap();
    let listener = UnixListener::bind(sock_dir.join("aside.sock")).unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = conn.read(&mut buf);
        let body = r#"{"error":{"code":"internal","message":"old"}}"#;
        let _ = write!(
            conn,
            "HTTP/1.1 200 OK\r\naside-protocol: 99\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
    });
    refused(
        env.aside(&["status"]),
        1,
        "speaks protocol version 99, this aside speaks 1",
    );
    server.join().unwrap();
}

#[test]
fn the_daemon_refuses_a_client_of_another_protocol_version() {
    let env = Env::new();
    env.aside(&["daemon", "start"]).ok();
    let mut conn =
        std::os::unix::net::UnixStream::connect(env.home.join("run/aside.sock")).unwrap();
    write!(
        conn,
        "GET /v1/processes HTTP/1.1\r\nhost: aside\r\naside-protocol: 7\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    conn.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("\"code\":\"protocol_mismatch\""), "{resp}");
    assert!(resp.contains("aside-protocol: 1"), "{resp}");
}

#[test]
fn an_unusable_state_directory_is_refused() {
    let env = Env::new();
    let blocker = env.write("not-a-dir", "");
    let o: Out = env
        .command()
        .env("ASIDE_HOME", blocker.join("state"))
        .args(["run", "true"])
        .output()
        .unwrap()
        .into();
    refused(o, 1, "cannot create state directory");
}

#[test]
fn a_corrupt_database_is_refused_and_left_untouched() {
    let env = Env::new();
    std::fs::create_dir_all(&env.home).unwrap();
    let db = env.home.join("aside.db");
    let garbage = b"this is not a database, but somebody's precious file\n".repeat(100);
    std::fs::write(&db, &garbage).unwrap();
    refused(env.aside(&["run", "true"]), 1, "is not an aside database");
    assert_eq!(std::fs::read(&db).unwrap(), garbage);
}

#[test]
fn a_foreign_sqlite_database_is_refused_and_left_untouched() {
    let env = Env::new();
    std::fs::create_dir_all(&env.home).unwrap();
    let db = env.home.join("aside.db");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("CREATE TABLE accounts (id INTEGER); INSERT INTO accounts VALUES (1);")
            .unwrap();
    }
    let before = std::fs::read(&db).unwrap();
    refused(env.aside(&["status"]), 1, "is not an aside database");
    assert_eq!(std::fs::read(&db).unwrap(), before);
}

#[test]
fn ui_without_a_terminal_says_so_and_web_open_hands_the_address_to_the_browser() {
    let env = Env::new();
    let o = env.aside(&["ui"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("needs a terminal"), "{}", o.stderr);

    // $BROWSER gets the address as its one argument (no shell in between).
    let got = env.work.join("opened");
    let browser = env.write(
        "browser.sh",
        &format!("#!/bin/sh\nprintf %s \"$1\" > {}\n", got.display()),
    );
    std::fs::set_permissions(
        &browser,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let out = env
        .command()
        .env("BROWSER", &browser)
        .args(["web", "--open"])
        .output()
        .expect("aside web");
    let out = common::Out::from(out).ok();
    let url = out.stdout.trim().to_string();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.contains("/?token="),
        "{url}"
    );
    common::eventually(
        std::time::Duration::from_secs(10),
        "the browser to be started",
        || std::fs::read_to_string(&got).is_ok_and(|u| u == url),
    );
}

/// One HTTP/1.1 exchange on the daemon's Unix socket: `head` is the request line and headers.
fn over_socket(env: &Env, head: &str, body: &str) -> (u16, String) {
    let mut s = std::os::unix::net::UnixStream::connect(env.home.join("run/aside.sock"))
        .expect("the daemon's socket");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let req = format!(
        "{head}\r\nHost: aside\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, out)
}

#[test]
fn strict_requests_are_refused_before_anything_is_written_and_retries_start_nothing_twice() {
    let env = Env::new();
    env.aside(&["daemon", "start"]).ok();
    let work = env.work.display().to_string();
    let post = |extra_headers: &str, body: &str| {
        over_socket(
            &env,
            &format!("POST /v1/processes HTTP/1.1\r\naside-protocol: 1{extra_headers}"),
            body,
        )
    };
    let run = |fields: &str| format!(r#"{{"cmd": "true", "cwd": "{work}"{fields}}}"#);
    let cases: Vec<(String, (u16, String), &str)> = vec![
        (
            "an unknown field".into(),
            post("", &run(r#", "nmae": "typo""#)),
            "unknown field",
        ),
        (
            "no protocol header".into(),
            over_socket(&env, "POST /v1/processes HTTP/1.1", &run("")),
            "aside-protocol",
        ),
        (
            "name ..".into(),
            post("", &run(r#", "name": "..""#)),
            "invalid name",
        ),
        (
            "an id-shaped name".into(),
            post(
                "",
                &run(r#", "name": "01a23456-7890-7abc-8def-0123456789ab""#),
            ),
            "invalid name",
        ),
        (
            "a NUL in the command".into(),
            post(
                "",
                &format!(r#"{{"cmd": "echo a\u0000b", "cwd": "{work}"}}"#),
            ),
            "NUL",
        ),
        (
            "a 10 KB owner".into(),
            post("", &run(&format!(r#", "owner": "{}""#, "o".repeat(10_000)))),
            "invalid owner",
        ),
        (
            "a 10 KB owner header".into(),
            post(
                &format!("\r\naside-owner: {}", "o".repeat(10_000)),
                &run(""),
            ),
            "invalid owner",
        ),
        (
            "an env key with =".into(),
            post("", &run(r#", "env": {"A=B": "c"}"#)),
            "environment variable name",
        ),
    ];
    for (what, (code, answer), needle) in cases {
        assert_eq!(code, 400, "{what}: {answer}");
        assert!(answer.contains(needle), "{what}: {needle:?} in {answer}");
    }
    assert!(env.status_all().is_empty(), "nothing was written");

    // The same idempotency key twice: one process.
    let keyed = run(r#", "name": "once", "idempotency_key": "k-1""#);
    let (c1, a1) = post("", &keyed);
    let (c2, a2) = post("", &keyed);
    assert!(
        (200..300).contains(&c1) && (200..300).contains(&c2),
        "{a1}\n{a2}"
    );
    let id = |a: &str| {
        let body = &a[a.find("\r\n\r\n").map_or(0, |i| i + 4)..];
        serde_json::from_str::<serde_json::Value>(body).expect("JSON")["id"].clone()
    };
    assert_eq!(id(&a1), id(&a2), "a retry answers with the first process");
    assert_eq!(env.status_all().len(), 1);
}
