//! Output is bytes, not lines: caps, binary, newline-free floods.

mod common;

use common::*;
use serde_json::Value;

fn entries(env: &Env, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["logs"];
    a.extend_from_slice(args);
    a.push("--json");
    env.json_lines(&a)
}

#[test]
fn log_cap_keeps_the_exact_head_and_tail_and_reports_the_elided_bytes() {
    let env = Env::new();
    // 100 000 numbered lines of 7 bytes = 700 000 bytes, capped at 64 KiB.
    env.run(&["--name", "big", "--log-cap", "64KiB", "seq 100000 199999"]);
    env.wait_exit("big");
    let expected: Vec<String> = (100_000..200_000).map(|n| n.to_string()).collect();
    let got = entries(&env, &["big", "--streams", "both"]);
    let gap_at = got
        .iter()
        .position(|e| e["type"] == "elided")
        .expect("an elision marker");
    let head: Vec<&str> = got[..gap_at]
        .iter()
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    let tail: Vec<&str> = got[gap_at + 1..]
        .iter()
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    // The head is exactly the first 32 KiB: whole lines, then the start of one cut at the boundary.
    let head_bytes: usize = head.iter().map(|l| l.len() + 1).sum::<usize>() - 1;
    assert_eq!(head_bytes, 32 * 1024, "head holds exactly half the cap");
    for (i, l) in head[..head.len() - 1].iter().enumerate() {
        assert_eq!(*l, expected[i]);
    }
    assert!(expected[head.len() - 1].starts_with(head[head.len() - 1]));
    // The tail is exactly the last lines, the first of them possibly cut.
    let n = tail.len();
    for (i, l) in tail[1..].iter().enumerate() {
        assert_eq!(*l, expected[expected.len() - n + 1 + i]);
    }
    assert!(expected[expected.len() - n].ends_with(tail[0]));
    let tail_bytes: usize = tail.iter().map(|l| l.len() + 1).sum();
    assert!(
        (16 * 1024..=32 * 1024).contains(&tail_bytes),
        "tail {tail_bytes} bytes"
    );
    let elided = got[gap_at]["bytes"].as_u64().unwrap() as usize;
    assert_eq!(
        head_bytes + elided + tail_bytes,
        700_000,
        "nothing lost silently"
    );
    // The human rendering says so in place of the gap.
    let text = env.aside(&["logs", "big", "--tail", "all"]).ok().stdout;
    assert!(text.contains(&format!("[aside] … {elided} bytes elided by the log cap …")));
    // The result counts every byte written.
    let r = env.aside(&["result", "big", "--json"]).ok().json();
    assert_eq!(r["output"]["stdout_bytes"], 700_000);
}

#[test]
fn invalid_utf8_binary_and_carriage_returns_are_captured() {
    let env = Env::new();
    env.run(&[
        "--name",
        "bin",
        r"printf 'ok \377\376 bytes\n'; printf 'progress 10%%\rprogress 99%%\r\n'; printf '\000\001\002 end'",
    ]);
    env.wait_exit("bin");
    let out = env.aside(&["logs", "bin"]).ok().stdout;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "ok \u{FFFD}\u{FFFD} bytes");
    assert_eq!(lines[1], "progress 10%\rprogress 99%");
    assert_eq!(lines[2], "\u{0}\u{1}\u{2} end");
    let r = env.aside(&["result", "bin", "--json"]).ok().json();
    assert_eq!(r["status"], "completed");
    assert_eq!(r["output"]["stdout_bytes"], 13 + 26 + 7);
}

#[test]
fn a_300_mb_line_without_newline_is_captured_without_stalling() {
    let env = Env::new();
    env.run(&[
        "--name",
        "wide",
        "head -c 300000000 /dev/zero | tr '\\0' x; echo; echo after",
    ]);
    let w = env.wait_exit("wide");
    assert_eq!(w["process"]["status"], "completed");
    let r = env.aside(&["result", "wide", "--json"]).ok().json();
    assert_eq!(r["output"]["stdout_bytes"], 300_000_000u64 + 7);
    // Lines are cut for readers, never buffered whole.
    let got = entries(&env, &["wide"]);
    assert_eq!(got.last().unwrap()["text"], "after");
    for e in &got {
        if let Some(t) = e["text"].as_str() {
            assert!(
                t.len() <= 70_000,
                "a line of {} bytes was returned",
                t.len()
            );
        }
    }
    // Disk use stays within the cap (8 MiB by default) plus framing.
    let dir = env
        .run_dir(w["process"]["run_id"].as_str().unwrap())
        .join("log");
    let on_disk: u64 = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(on_disk < 9 * 1024 * 1024, "{on_disk} bytes on disk");
}

#[test]
fn a_follow_that_cannot_read_the_log_says_so_and_fails() {
    let env = Env::new();
    let p = env.run(&["--name", "f", "echo first; sleep 300"]);
    let log_dir = env.run_dir(p["run_id"].as_str().unwrap()).join("log");
    let mut follow = env
        .command()
        .args(["logs", "f", "--follow"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("logs --follow");
    let mut out = std::io::BufReader::new(follow.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "first");
    // The log becomes unreadable under the follow (a file where its directory was).
    std::fs::rename(&log_dir, log_dir.with_extension("moved")).unwrap();
    std::fs::write(&log_dir, "not a directory").unwrap();
    eventually(
        std::time::Duration::from_secs(15),
        "the follow to end",
        || matches!(follow.try_wait(), Ok(Some(_))),
    );
    let got: Out = follow.wait_with_output().unwrap().into();
    assert_ne!(
        got.code, 0,
        "it ended as if the process had: {}",
        got.stderr
    );
    assert!(
        got.stderr.contains("cannot read the log of run"),
        "{}",
        got.stderr
    );
}
