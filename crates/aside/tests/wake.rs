//! Waking idle owners: a command (results as JSON on stdin) or a webhook (results as the body).

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// A daemon that debounces and backs off quickly, so waits stay short.
fn fast_daemon(env: &Env) {
    env.aside(&[
        "daemon",
        "start",
        "--wake-debounce",
        "50ms",
        "--wake-backoff",
        "200ms",
    ])
    .ok();
}

fn as_owner(env: &Env, owner: &str, args: &[&str]) -> Out {
    env.command()
        .env("ASIDE_OWNER", owner)
        .args(args)
        .output()
        .unwrap()
        .into()
}

/// Every JSON payload a `tee -a FILE` wake command has received so far.
fn payloads(file: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .filter_map(|v| v.ok())
        .collect()
}

fn names(payload: &Value) -> Vec<String> {
    payload["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["result"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn an_idle_owner_is_woken_with_its_results_and_an_acknowledged_one_never_again() {
    let env = Env::new();
    fast_daemon(&env);
    let out = env.work.join("woken.json");
    as_owner(
        &env,
        "agent-w",
        &[
            "wake",
            "set",
            "--idle-after",
            "0s",
            "--",
            "tee",
            "-a",
            out.to_str().unwrap(),
        ],
    )
    .ok();
    as_owner(&env, "agent-w", &["run", "--name", "w1", "echo first"]).ok();
    eventually(Duration::from_secs(10), "the first wake", || {
        !payloads(&out).is_empty()
    });
    let first = &payloads(&out)[0];
    assert_eq!(first["owner"], "agent-w");
    assert_eq!(names(first), ["w1"]);
    assert_eq!(first["notifications"][0]["result"]["status"], "completed");
    // Acknowledged: it is never sent again; the next wake carries only the next result.
    as_owner(&env, "agent-w", &["inbox", "--drain"]).ok();
    let seen = payloads(&out).len();
    as_owner(&env, "agent-w", &["run", "--name", "w2", "echo second"]).ok();
    eventually(Duration::from_secs(10), "the second wake", || {
        payloads(&out).len() > seen
    });
    let next = &payloads(&out)[seen];
    assert_eq!(names(next), ["w2"]);
    let audit = std::fs::read_to_string(env.home.join("audit.log")).unwrap();
    assert!(audit.contains(r#""action":"wake""#), "{audit}");
}

#[test]
fn a_new_result_wakes_after_the_debounce_not_after_an_earlier_backoff() {
    let env = Env::new();
    // A long backoff: a later result must not wait for it.
    env.aside(&[
        "daemon",
        "start",
        "--wake-debounce",
        "50ms",
        "--wake-backoff",
        "10m",
    ])
    .ok();
    let out = env.work.join("woken.json");
    as_owner(
        &env,
        "agent-b",
        &[
            "wake",
            "set",
            "--idle-after",
            "0s",
            "--",
            "tee",
            "-a",
            out.to_str().unwrap(),
        ],
    )
    .ok();
    as_owner(&env, "agent-b", &["run", "--name", "one", "echo 1"]).ok();
    eventually(Duration::from_secs(10), "the first wake", || {
        !payloads(&out).is_empty()
    });
    as_owner(&env, "agent-b", &["inbox", "--drain"]).ok();
    as_owner(&env, "agent-b", &["run", "--name", "two", "echo 2"]).ok();
    eventually(
        Duration::from_secs(10),
        "the second wake, well before the 10m backoff",
        || payloads(&out).len() >= 2,
    );
    assert_eq!(names(&payloads(&out)[1]), ["two"]);
}

#[test]
fn a_run_the_owner_stopped_itself_does_not_wake_it() {
    let env = Env::new();
    fast_daemon(&env);
    let out = env.work.join("woken.json");
    as_owner(
        &env,
        "agent-s",
        &[
            "wake",
            "set",
            "--idle-after",
            "0s",
            "--",
            "tee",
            "-a",
            out.to_str().unwrap(),
        ],
    )
    .ok();
    as_owner(&env, "agent-s", &["run", "--name", "mine", "sleep 30"]).ok();
    as_owner(&env, "agent-s", &["stop", "mine"]).ok();
    as_owner(&env, "agent-s", &["run", "--name", "done", "echo done"]).ok();
    eventually(Duration::from_secs(10), "a wake", || {
        !payloads(&out).is_empty()
    });
    for p in payloads(&out) {
        assert_eq!(names(&p), ["done"], "only the run it did not stop itself");
    }
}

#[test]
fn a_failing_wake_is_tried_again() {
    let env = Env::new();
    fast_daemon(&env);
    let mark = env.work.join("tried-once");
    let out = env.work.join("woken.json");
    // Fails the first time (leaving a mark), succeeds after; paths are arguments, not script.
    let script = r#"if [ -e "$1" ]; then cat >> "$2"; else : > "$1"; exit 1; fi"#;
    as_owner(
        &env,
        "agent-f",
        &[
            "wake",
            "set",
            "--idle-after",
            "0s",
            "--",
            "sh",
            "-c",
            script,
            "sh",
            mark.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    )
    .ok();
    as_owner(&env, "agent-f", &["run", "--name", "r", "echo retried"]).ok();
    eventually(Duration::from_secs(10), "the retried wake", || {
        !payloads(&out).is_empty()
    });
    assert!(mark.exists());
    let audit = std::fs::read_to_string(env.home.join("audit.log")).unwrap();
    assert!(
        audit.contains(r#""outcome":"refused","reason":"failed: "#),
        "{audit}"
    );
}

#[test]
fn an_active_owner_is_not_woken_until_marked_idle() {
    let env = Env::new();
    fast_daemon(&env);
    let out = env.work.join("woken.json");
    as_owner(
        &env,
        "agent-a",
        &[
            "wake",
            "set",
            "--idle-after",
            "10m",
            "--",
            "tee",
            "-a",
            out.to_str().unwrap(),
        ],
    )
    .ok();
    as_owner(&env, "agent-a", &["run", "--name", "r", "echo hi"]).ok();
    env.wait_exit("r");
    // The run request made the owner active: its result waits for its next call (piggyback).
    assert!(payloads(&out).is_empty());
    as_owner(&env, "agent-a", &["idle"]).ok();
    eventually(
        Duration::from_secs(10),
        "the wake after `aside idle`",
        || !payloads(&out).is_empty(),
    );
    assert_eq!(names(&payloads(&out)[0]), ["r"]);
}

#[test]
fn agents_set_only_their_own_wake_and_the_policy_applies() {
    let env = Env::new();
    std::fs::create_dir_all(&env.home).unwrap();
    std::fs::write(env.home.join("policy.json"), r#"{"allow": ["echo *"]}"#).unwrap();
    env.aside(&["daemon", "start"]).ok();
    // An agent asking for another owner's wake action is refused.
    let body = r#"{"command": ["echo", "x"]}"#;
    let mut conn =
        std::os::unix::net::UnixStream::connect(env.home.join("run/aside.sock")).unwrap();
    let request = format!(
        "PUT /v1/owners/someone/wake HTTP/1.1\r\nhost: aside\r\naside-protocol: 1\r\naside-owner: agent-p\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    // The refusal may come (and the connection close) before the body is read.
    if let Err(e) = conn.write_all(request.as_bytes()) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    let mut resp = String::new();
    conn.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    assert!(
        resp.contains("agent-p may not change the inbox, wake action or session of someone"),
        "{resp}"
    );
    let o = as_owner(&env, "agent-p", &["wake", "set", "--", "tee", "/tmp/x"]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("the policy refuses the wake command"),
        "{}",
        o.stderr
    );
    let o = env.aside(&[
        "wake",
        "set",
        "--owner",
        "agent-p",
        "--webhook",
        "https://example.test/hook",
    ]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("only http:// URLs"), "{}", o.stderr);
    let o = env.aside(&["wake", "set", "--owner", "agent-p"]);
    assert_eq!(o.code, 1, "neither a command nor a webhook");
}

#[test]
fn a_webhook_receives_the_results_as_its_body() {
    let env = Env::new();
    fast_daemon(&env);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = conn.read(&mut buf).unwrap();
            req.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&req);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if body.len() >= len {
                    conn.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                        .unwrap();
                    return (head.to_string(), body.to_string());
                }
            }
            if n == 0 {
                panic!("connection closed early");
            }
        }
    });
    env.aside(&[
        "wake",
        "set",
        "--owner",
        "agent-h",
        "--idle-after",
        "0s",
        "--webhook",
        &url,
    ])
    .ok();
    env.run(&["--owner", "agent-h", "--name", "hooked", "echo via webhook"]);
    let (head, body) = server.join().unwrap();
    assert!(head.starts_with("POST /hook HTTP/1.1"), "{head}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["owner"], "agent-h");
    assert_eq!(names(&v), ["hooked"]);
}
