//! Many at once: concurrent `run` calls from a cold start, all tracked.

mod common;

use common::*;

#[test]
fn two_hundred_concurrent_runs_from_a_cold_start_are_all_tracked() {
    let env = Env::new();
    // No daemon yet: every CLI races to start it; exactly one must win and serve all.
    let children: Vec<_> = (0..200)
        .map(|i| {
            env.command()
                .args(["run", "--json", "--name", &format!("p{i}"), "sleep 120"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn aside")
        })
        .collect();
    let mut pids = Vec::new();
    for c in children {
        let out: Out = c.wait_with_output().unwrap().into();
        let p = out.ok().json();
        pids.push(p["pid"].as_i64().expect("pid") as i32);
    }
    let procs = env.aside(&["status", "--json"]).ok().json();
    let procs = procs.as_array().unwrap();
    assert_eq!(procs.len(), 200);
    assert!(procs.iter().all(|p| p["status"] == "running"));
    let mut names: Vec<&str> = procs.iter().map(|p| p["name"].as_str().unwrap()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 200);
    assert!(pids.iter().all(|p| alive(*p)));
    let daemons = pids_with_cmdline(&format!("{BIN} daemon run"));
    let ours: Vec<_> = daemons
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|e| String::from_utf8_lossy(&e).contains(env.home.to_str().unwrap()))
        })
        .collect();
    assert_eq!(
        ours.len(),
        1,
        "exactly one daemon serves the state directory"
    );

    let stopped = env.aside(&["stop-all", "--json"]).ok().json();
    assert_eq!(stopped["stopped"].as_array().unwrap().len(), 200);
    assert!(pids.iter().all(|p| !alive(*p)));
}
