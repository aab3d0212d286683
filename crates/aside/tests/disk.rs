//! A full disk never kills a command or loses its exit status: the state directory is a small
//! tmpfs the test fills up (mounting needs root; elsewhere the test says why it cannot run).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

/// A tmpfs mounted at a directory for the test's life (lazily unmounted at the end).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).expect("mount point");
        let ok = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the filesystem of `dir` until a write fails; returns the filler file.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("filler");
    let chunk = vec![b'x'; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let small = [b'x'; 512];
    while f.write_all(&small).is_ok() {}
    let _ = f.sync_all();
    path
}

fn progress(file: &Path) -> u64 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_full_disk_neither_kills_a_command_nor_loses_its_exit_status() {
    let env = Env::new();
    let Some(_fs) = Tmpfs::mount(&env.home, "16m") else {
        eprintln!(
            "SKIPPED: cannot mount a tmpfs here (needs root): the full-disk test did not run"
        );
        return;
    };
    let gate = env.work.join("gate");
    let count = env.work.join("count");
    // 8 KiB of output per step, with its step count outside the full disk: the count only
    // goes on while the shim keeps draining its pipe (1 MiB) and the command lives.
    let cmd = format!(
        "i=0; while [ ! -e {gate} ]; do head -c 8192 /dev/zero | tr '\\0' x; echo; i=$((i+1)); echo $i > {count}; sleep 0.002; done; echo last; exit 7",
        gate = gate.display(),
        count = count.display(),
    );
    env.run(&["--name", "chatty", &cmd]);
    eventually(Duration::from_secs(20), "the command to run", || {
        progress(&count) > 5
    });

    // The disk fills up while it writes: it keeps running and its output keeps draining.
    let filler = fill(&env.home);
    let at = progress(&count);
    eventually(
        Duration::from_secs(60),
        "the command to go on with the disk full",
        || progress(&count) > at + 400,
    );
    // Space comes back: the log says what is missing.
    std::fs::remove_file(&filler).expect("free the disk");
    let at = progress(&count);
    eventually(
        Duration::from_secs(30),
        "more output once there is space",
        || progress(&count) > at + 20,
    );
    eventually(
        Duration::from_secs(30),
        "the log to say bytes are missing",
        || {
            env.aside(&[
                "logs",
                "chatty",
                "--streams",
                "both",
                "--grep",
                "could not be written",
            ])
            .stdout
            .contains("bytes of output could not be written to the log")
        },
    );

    // The disk fills up again and the command ends: its exit status is not lost.
    let filler = fill(&env.home);
    std::fs::write(&gate, "").expect("gate");
    eventually(Duration::from_secs(30), "the end to be noticed", || {
        let st = env.aside(&["status", "chatty", "--json"]);
        st.code == 0 && {
            let v = st.json();
            v["status"] == "failed" || v["unrecorded"].is_string()
        }
    });
    std::fs::remove_file(&filler).expect("free the disk");
    eventually(Duration::from_secs(60), "the result to be recorded", || {
        let v = env.status("chatty");
        v["status"] == "failed" && v["exit_code"] == 7 && v["unrecorded"].is_null()
    });
    let inbox = env.aside(&["inbox", "--json"]).ok().json();
    let mine: Vec<_> = inbox["notifications"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["result"]["name"] == "chatty")
        .collect();
    assert_eq!(mine.len(), 1, "exactly one result: {inbox}");
    assert_eq!(mine[0]["result"]["exit_code"], 7);
}
