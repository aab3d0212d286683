//! `GET /v1/events`: Server-Sent Events from a durable log, replayed after `Last-Event-ID`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn events(env: &Env, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["events", "--json"];
    a.extend_from_slice(args);
    env.json_lines(&a)
}

#[test]
fn a_run_is_logged_started_exited_and_notified_in_order() {
    let env = Env::new();
    let p = env.run(&["--name", "ev", "echo hi"]);
    env.wait_exit("ev");
    let got = events(&env, &["--since", "0", "--count", "3"]);
    let kinds: Vec<&str> = got.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["run_started", "run_exited", "notification_created"]);
    assert!(
        got.iter()
            .all(|e| e["process_id"] == p["id"] && e["owner"] == "human")
    );
    let seqs: Vec<u64> = got.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3]);
    // A run event carries the process as it stands after the change, and the result.
    assert_eq!(got[1]["data"]["result"]["status"], "completed");
    assert_eq!(got[1]["data"]["result"]["exit_code"], 0);
    assert_eq!(got[1]["data"]["process"]["status"], "completed");
    assert_eq!(got[1]["data"]["process"]["id"], p["id"]);
    assert_eq!(got[0]["data"]["process"]["status"], "running");

    // Acknowledging is an event too; replay from a sequence number gives only what follows.
    env.aside(&["inbox", "--drain"]).ok();
    let after = events(&env, &["--since", "3", "--count", "1"]);
    assert_eq!(after[0]["kind"], "notification_acked");
    assert_eq!(after[0]["seq"], 4);
    assert_eq!(
        after[0]["data"]["process"]["id"], p["id"],
        "the process after the read"
    );
}

#[test]
fn live_events_arrive_while_streaming_filtered_by_owner_and_kind() {
    let env = Env::new();
    env.aside(&["daemon", "start"]).ok();
    // From sequence 0: whatever happens before the stream is up is replayed, so no race.
    let child = env
        .command()
        .args([
            "events",
            "--json",
            "--since",
            "0",
            "--owner",
            "agent-x",
            "--kind",
            "run_exited",
            "--count",
            "2",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    env.run(&["--name", "other", "echo not mine"]);
    env.run(&["--name", "x1", "--owner", "agent-x", "echo one"]);
    env.run(&["--name", "x2", "--owner", "agent-x", "echo two"]);
    let out: Out = child.wait_with_output().unwrap().into();
    let got: Vec<Value> = out
        .ok()
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = got
        .iter()
        .map(|e| e["data"]["process"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"x1") && names.contains(&"x2"), "{names:?}");
    assert!(
        got.iter()
            .all(|e| e["kind"] == "run_exited" && e["owner"] == "agent-x")
    );
}

/// Reads SSE over a raw HTTP/1.0 connection (close-delimited) until one event arrives.
fn first_sse_event(env: &Env, last_event_id: u64) -> (u64, String) {
    let mut conn =
        std::os::unix::net::UnixStream::connect(env.home.join("run/aside.sock")).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        conn,
        "GET /v1/events HTTP/1.0\r\nhost: aside\r\nlast-event-id: {last_event_id}\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(conn);
    let (mut id, mut kind) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut line = String::new();
    while Instant::now() < deadline {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(v) = line.strip_prefix("id:") {
            id = v.trim().parse().ok();
        }
        if let Some(v) = line.strip_prefix("event:") {
            kind = Some(v.trim().to_string());
        }
        if line.trim().is_empty() && id.is_some() {
            break;
        }
    }
    (id.expect("an event id"), kind.expect("an event kind"))
}

#[test]
fn last_event_id_replays_exactly_what_follows_even_after_kill_9() {
    let env = Env::new();
    env.run(&["--name", "a", "true"]);
    env.wait_exit("a");
    env.kill_daemon();
    // The log is durable: a new daemon replays it.
    env.run(&["--name", "b", "true"]);
    env.wait_exit("b");
    let all = events(&env, &["--since", "0", "--count", "6"]);
    let names: Vec<&str> = all
        .iter()
        .filter(|e| e["kind"] == "run_exited")
        .map(|e| e["data"]["process"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    // A client reconnecting with Last-Event-ID: 3 gets event 4 next.
    let (id, kind) = first_sse_event(&env, 3);
    assert_eq!(id, 4);
    assert_eq!(kind, all[3]["kind"].as_str().unwrap());
}

#[test]
fn streams_end_when_the_daemon_stops() {
    let env = Env::new();
    env.run(&["--name", "e", "true"]);
    let mut child = env
        .command()
        .args(["events", "--since", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The stream is open once it has printed a replayed event; stopping must not hang on it.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.contains("run_started"), "{first}");
    let started = Instant::now();
    env.aside(&["daemon", "stop"]).ok();
    eventually(Duration::from_secs(10), "the event stream to end", || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    assert!(started.elapsed() < Duration::from_secs(10));
    let mut rest = String::new();
    let _ = stdout.read_to_string(&mut rest);
}

#[test]
fn the_daemon_stays_up_while_anyone_watches_and_leaves_after() {
    let env = Env::new();
    env.aside(&["daemon", "start", "--idle-timeout", "2s"]).ok();
    let pid = env.daemon_pid().expect("a daemon");
    let mut watcher = env
        .command()
        .args(["events", "--json"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("aside events");
    // Twice the idle timeout passes with nothing running but a stream open: still up.
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < until {
        assert!(alive(pid), "the daemon left while a client watched");
        std::thread::sleep(Duration::from_millis(100));
    }
    watcher.kill().unwrap();
    watcher.wait().unwrap();
    eventually(
        Duration::from_secs(15),
        "the daemon to leave once nobody watches",
        || !alive(pid),
    );
}
