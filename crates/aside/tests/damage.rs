//! A damaged or lost state is refused, never reset or written to, and `--recover` rebuilds it
//! from the run directories; damaged run files never orphan a live command; state files are
//! 0600 whatever the umask.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;

fn run_dir_of(env: &Env, name: &str) -> std::path::PathBuf {
    let st = env.status(name);
    env.run_dir(st["run_id"].as_str().expect("run id"))
}

#[test]
fn a_lost_database_is_refused_and_recover_rebuilds_it_from_the_run_directories() {
    let env = Env::new();
    let keeper = env.run(&["--name", "keeper", "--owner", "agent-k", "sleep 300"]);
    let pid = keeper["pid"].as_i64().expect("pid") as i32;
    env.run(&["--name", "done", "--owner", "agent-d", "echo finished"]);
    env.wait_exit("done");
    env.kill_daemon();
    for (what, damage) in [("missing", false), ("empty", true)] {
        let db = env.home.join("aside.db");
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(env.home.join(format!("aside.db{suffix}")));
        }
        if damage {
            std::fs::write(&db, b"").unwrap();
        } else {
            let _ = std::fs::remove_file(&db);
        }
        let o = env.aside(&["status"]);
        assert_ne!(o.code, 0, "{what}: refused");
        assert!(
            o.stderr.contains(&format!("is {what}")) && o.stderr.contains("--recover"),
            "{what}: {}",
            o.stderr
        );
        assert!(alive(pid), "the command still runs, untouched");
    }
    env.aside(&["daemon", "start", "--recover"]).ok();
    // The live command is tracked again, with its name and owner, and can be stopped.
    let st = env.status("keeper");
    assert_eq!(st["status"], "running", "{st}");
    assert_eq!(st["owner"], "agent-k");
    assert_eq!(st["pid"].as_i64(), Some(pid as i64));
    // The ended one is back with its result, kept as read (not delivered a second time).
    let done = env.status_all();
    let done = done
        .iter()
        .find(|p| p["name"] == "done")
        .expect("done is kept");
    assert_eq!(done["status"], "completed");
    let inbox = env
        .aside(&["inbox", "--owner", "agent-d", "--json"])
        .ok()
        .json();
    assert_eq!(inbox["notifications"], serde_json::json!([]));
    env.aside(&["stop", "keeper", "--grace", "1s"]).ok();
    eventually(Duration::from_secs(10), "the command to be stopped", || {
        !alive(pid)
    });
    assert!(
        std::fs::read_dir(&env.home).unwrap().flatten().any(|e| e
            .file_name()
            .to_string_lossy()
            .starts_with("aside.db.damaged-")),
        "the old database is kept aside"
    );
}

#[test]
fn a_database_damaged_in_the_middle_is_refused_untouched() {
    let env = Env::new();
    for i in 0..30 {
        env.run(&[
            "--name",
            &format!("j{i}"),
            "--description",
            &"x".repeat(500),
            "true",
        ]);
    }
    env.aside(&["daemon", "stop"]).ok();
    let db = env.home.join("aside.db");
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 16 * 4096, "a database with pages to damage");
    for b in &mut bytes[3 * 4096..9 * 4096] {
        *b = 0xA5;
    }
    std::fs::write(&db, &bytes).unwrap();
    let o = env.aside(&["status"]);
    assert_ne!(o.code, 0);
    assert!(
        o.stderr.contains("is damaged") && o.stderr.contains("--recover"),
        "{}",
        o.stderr
    );
    assert_eq!(std::fs::read(&db).unwrap(), bytes, "not written to");
}

#[test]
fn a_damaged_shim_record_of_a_live_run_never_orphans_its_command() {
    let env = Env::new();
    let p = env.run(&["--name", "live", "sleep 300"]);
    let pid = p["pid"].as_i64().expect("pid") as i32;
    let rd = run_dir_of(&env, "live");
    env.kill_daemon();
    std::fs::write(rd.join("shim.json"), b"{garbage").unwrap();
    // The next daemon finds the shim by its command line and re-attaches to it.
    let st = env.status("live");
    assert_eq!(st["status"], "running", "{st}");
    env.aside(&["stop", "live", "--grace", "1s"]).ok();
    eventually(Duration::from_secs(10), "the command to be stopped", || {
        !alive(pid)
    });
    assert_eq!(env.status("live")["status"], "stopped");
}

#[test]
fn state_files_are_private_whatever_the_umask() {
    let env = Env::new();
    // `aside` through a shell whose umask is 022: the daemon it starts inherits it.
    let sh = |args: &str| -> Out {
        let mut c = std::process::Command::new("sh");
        c.arg("-c")
            .arg(format!("umask 022; exec {BIN} {args}"))
            .env("ASIDE_HOME", &env.home)
            .env("ASIDE_IDLE_TIMEOUT", "60s")
            .env_remove("ASIDE_OWNER")
            .current_dir(&env.work);
        c.output().expect("sh").into()
    };
    sh("run --name secret --env TOKEN=hunter2 'echo out; echo err >&2'").ok();
    sh("wait secret --exit").ok();
    let rd = run_dir_of(&env, "secret");
    let mut files = vec![
        env.home.join("aside.db"),
        env.home.join("aside.db-wal"),
        env.home.join("daemon.log"),
        rd.join("spec.json"),
        rd.join("process.json"),
        rd.join("shim.log"),
        rd.join("exit.json"),
    ];
    for seg in std::fs::read_dir(rd.join("log")).unwrap().flatten() {
        files.push(seg.path());
    }
    for f in files {
        if !f.exists() {
            continue;
        }
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is {mode:o}", f.display());
    }
    for d in [
        env.home.clone(),
        env.home.join("runs"),
        rd.clone(),
        rd.join("log"),
    ] {
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} is {mode:o}", d.display());
    }
}
