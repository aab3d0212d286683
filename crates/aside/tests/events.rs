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

/// Lines of a child's pipe as they come, read on a thread.
fn lines_of(pipe: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits (20 s at most) for a line that contains `text`, keeping every line read in `seen`.
fn line_with(rx: &std::sync::mpsc::Receiver<String>, seen: &mut Vec<String>, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                let found = line.contains(text);
                seen.push(line);
                if found {
                    return;
                }
            }
            Err(_) => break,
        }
    }
    panic!("no line with {text:?}; got {seen:#?}");
}

#[test]
fn a_watcher_outlives_its_daemon_says_why_and_misses_nothing() {
    let env = Env::new();
    env.run(&["--name", "e", "true"]);
    let first_daemon = env.daemon_pid().expect("a daemon");
    let mut child = env
        .command()
        .args(["events", "--since", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines_of(child.stdout.take().unwrap());
    let err = lines_of(child.stderr.take().unwrap());
    let (mut printed, mut said) = (Vec::new(), Vec::new());
    line_with(&out, &mut printed, "run_started");

    // A stop does not wait on the open stream; the watcher says why and starts no daemon.
    let started = Instant::now();
    env.aside(&["daemon", "stop"]).ok();
    eventually(Duration::from_secs(10), "the daemon to stop", || {
        !alive(first_daemon)
    });
    assert!(started.elapsed() < Duration::from_secs(10));
    line_with(&err, &mut said, "asked to stop");
    let quiet_until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < quiet_until {
        assert_eq!(
            env.daemon_pid(),
            None,
            "the watcher undid the stop: {said:?}"
        );
        assert!(matches!(child.try_wait(), Ok(None)), "the watcher quit");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The next daemon (started by any command): the stream picks up after the last event seen.
    env.run(&["--name", "f", "true"]);
    line_with(&err, &mut said, "connected to the daemon again");
    line_with(&out, &mut printed, " f ");

    // A daemon that dies (`kill -9`) says nothing: the watcher notices and starts the next.
    let second = env.kill_daemon();
    line_with(&err, &mut said, "lost the daemon");
    eventually(
        Duration::from_secs(20),
        "the watcher to start a daemon",
        || env.daemon_pid().is_some_and(|p| p != second),
    );
    env.run(&["--name", "g", "sleep 0.2"]);
    line_with(&out, &mut printed, "run_exited           human g");

    // Every event exactly once, in order, across three daemons.
    let seqs: Vec<u64> = printed
        .iter()
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "{printed:#?}");
    child.kill().unwrap();
    child.wait().unwrap();
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
