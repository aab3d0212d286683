//! Runs on a real single-node Slurm cluster (`.ci/slurm-up`, started by `.ci/run`, which sets
//! `ASIDE_TEST_SLURM_CONF`): queued behind a job that holds both CPUs, then run; output, exit
//! codes, timeouts and stops as for local runs; jobs that Slurm itself cancels, preempts, ends
//! at their time limit or loses to a failed node; a daemon `kill -9`ed while jobs queue, run
//! and end; the dashboard in Chromium and `aside ui` in tmux. The cluster has 2 CPUs, so the
//! tests take turns. Without a cluster they say so and
//! pass: the daemons could not start on this machine.

mod common;

#[path = "common/browser.rs"]
mod browser;

use std::sync::Mutex;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// One test at a time on the 2-CPU cluster.
static CLUSTER: Mutex<()> = Mutex::new(());

/// The cluster's slurm.conf, or `None` (said on stderr) when there is no cluster to test on.
fn cluster() -> Option<String> {
    let conf = std::env::var("ASIDE_TEST_SLURM_CONF")
        .or_else(|_| std::env::var("SLURM_CONF"))
        .ok();
    let Some(conf) = conf else {
        eprintln!(
            "SKIPPED: no Slurm cluster (ASIDE_TEST_SLURM_CONF unset; .ci/slurm-up starts one)"
        );
        return None;
    };
    let idle = std::process::Command::new("sinfo")
        .env("SLURM_CONF", &conf)
        .args(["-h", "-N", "-o", "%T"])
        .output()
        .map(|o| {
            let state = String::from_utf8_lossy(&o.stdout);
            ["idle", "mix", "alloc", "completing"]
                .iter()
                .any(|s| state.contains(s))
        });
    match idle {
        Ok(true) => Some(conf),
        _ => {
            eprintln!("SKIPPED: the Slurm cluster of {conf} has no node up (sinfo)");
            None
        }
    }
}

/// Cancels every job of an environment's runs when dropped (before the environment: declare
/// it after), so that a failed test leaves the cluster free for the next.
struct CancelJobs(std::path::PathBuf, String);

impl Drop for CancelJobs {
    fn drop(&mut self) {
        let Ok(runs) = std::fs::read_dir(self.0.join("runs")) else {
            return;
        };
        for run in runs.flatten() {
            let text = std::fs::read_to_string(run.path().join("job.json")).unwrap_or_default();
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if let Some(id) = v["job_id"].as_str()
                && let Err(e) = std::process::Command::new("scancel")
                    .env("SLURM_CONF", &self.1)
                    .arg(id)
                    .output()
            {
                eprintln!("cannot cancel job {id}: {e}");
            }
        }
    }
}

/// An environment whose daemon talks to the cluster (its `SLURM_CONF`), and the guard that
/// cancels its jobs.
fn slurm_env(conf: &str) -> (Env, CancelJobs) {
    let env = Env::new();
    let o = env
        .command()
        .env("SLURM_CONF", conf)
        .args(["daemon", "start"])
        .output()
        .expect("aside daemon start");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let jobs = CancelJobs(env.home.clone(), conf.to_string());
    (env, jobs)
}

/// The cluster's turn (held until dropped, last), its slurm.conf, an environment whose
/// daemon talks to it and the guard that cancels its jobs; `None` without a cluster.
fn slurm_turn() -> Option<(std::sync::MutexGuard<'static, ()>, String, Env, CancelJobs)> {
    let conf = cluster()?;
    let turn = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let (env, jobs) = slurm_env(&conf);
    Some((turn, conf, env, jobs))
}

/// Polls `status REF` until `pred` holds (60 s).
#[track_caller]
fn await_status(env: &Env, reference: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    eventually(Duration::from_secs(60), what, || {
        last = env.status(reference);
        pred(&last)
    });
    last
}

/// The process once its run ended by itself (`wait --exit`).
fn ended(env: &Env, reference: &str) -> Value {
    env.wait_exit(reference)["process"].clone()
}

fn notifications(env: &Env) -> Vec<Value> {
    env.aside(&["inbox", "--json"]).ok().json()["notifications"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_job_behind_one_holding_both_cpus_is_queued_then_runs_and_fails_with_its_exit_code() {
    let Some((_turn, _, env, _jobs)) = slurm_turn() else {
        return;
    };
    let gate = env.work.join("gate");
    let hold = format!(
        "echo holding; while [ ! -e {} ]; do sleep 0.1; done; echo released",
        gate.display()
    );
    let big = env.run(&["--on", "slurm", "--cpus", "2", "--name", "big", &hold]);
    assert_eq!(big["job"]["executor"], "slurm");
    assert!(big["job"]["id"].as_str().is_some_and(|id| !id.is_empty()));
    await_status(&env, "big", "big to run", |s| s["status"] == "running");
    let small = env.run(&[
        "--on",
        "slurm:debug",
        "--name",
        "small",
        "echo out-$SLURM_JOB_ID; echo err >&2; exit 3",
    ]);
    let queued = await_status(&env, "small", "small to wait for resources", |s| {
        s["status"] == "queued" && s["job"]["reason"] == "Resources"
    });
    assert_eq!(queued["job"]["state"], "PENDING");
    assert!(queued["pid"].is_null(), "a queued run has no pid: {queued}");
    let text = env.aside(&["status"]).ok().stdout;
    assert!(text.contains("queued (Resources)"), "{text}");

    // big ends by itself once released; small then runs and fails by itself.
    std::fs::write(&gate, "").unwrap();
    let big_end = ended(&env, "big");
    assert_eq!(big_end["status"], "completed", "{big_end}");
    let end = ended(&env, "small");
    assert_eq!(end["status"], "failed", "{end}");
    assert_eq!(end["exit_code"], 3);
    let job_id = small["job"]["id"].as_str().unwrap().to_string();
    let logs = env.aside(&["logs", "small", "--tail", "all"]).ok().stdout;
    assert!(
        logs.contains(&format!("out-{job_id}")),
        "the job's own id: {logs}"
    );
    let stderr = env.aside(&["logs", "small", "--stderr"]).ok().stdout;
    assert!(stderr.contains("err"), "{stderr}");
    let follow = env
        .aside(&["logs", "big", "--follow", "--timeout", "5s"])
        .ok()
        .stdout;
    assert!(
        follow.contains("holding") && follow.contains("released"),
        "{follow}"
    );
    let status = env.status("small");
    assert_eq!(
        status["job"]["node"].as_str().map(str::is_empty),
        Some(false),
        "{status}"
    );
    // Slurm's own last word on the job follows the result (not `COMPLETING` for ever).
    await_status(&env, "small", "small's job to be FAILED", |s| {
        s["job"]["state"] == "FAILED"
    });
    await_status(&env, "big", "big's job to be COMPLETED", |s| {
        s["job"]["state"] == "COMPLETED"
    });
    // One result each, once.
    let ids: Vec<String> = notifications(&env)
        .iter()
        .map(|n| n["result"]["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
}

#[test]
fn stop_reaches_a_sigterm_ignoring_tree_on_slurm_and_cancels_a_queued_job() {
    let Some((_turn, _, env, _jobs)) = slurm_turn() else {
        return;
    };
    let mark = marker("stubborn");
    let stubborn = format!("trap '' TERM; echo ready; sh -c 'trap \"\" TERM; sleep 300; : {mark}'");
    env.run(&[
        "--on", "slurm", "--cpus", "2", "--grace", "1s", "--name", "stubborn", &stubborn,
    ]);
    await_status(&env, "stubborn", "stubborn to run", |s| {
        s["status"] == "running"
    });
    env.aside(&["wait", "stubborn", "--until", "ready", "--timeout", "30s"])
        .ok();
    env.run(&["--on", "slurm", "--name", "waiting", "echo never"]);
    await_status(&env, "waiting", "waiting to queue", |s| {
        s["status"] == "queued"
    });

    let stopped = env.aside(&["stop", "waiting", "--json"]).ok().json();
    assert_eq!(stopped["status"], "stopped", "{stopped}");
    assert_eq!(stopped["stopped_by"], "human");
    let stopped = env.aside(&["stop", "stubborn", "--json"]).ok().json();
    assert_eq!(stopped["status"], "stopped", "{stopped}");
    assert_eq!(stopped["signal"], "SIGKILL", "the grace ran out: {stopped}");
    eventually(
        Duration::from_secs(10),
        "the stubborn tree to be gone",
        || pids_with_cmdline(&mark).is_empty(),
    );
    let logs = env.aside(&["logs", "waiting", "--tail", "all"]).ok().stdout;
    assert!(!logs.contains("never"), "a cancelled job never ran: {logs}");
}

#[test]
fn a_timeout_on_slurm_ends_the_run_timed_out() {
    let Some((_turn, _, env, _jobs)) = slurm_turn() else {
        return;
    };
    env.run(&[
        "--on",
        "slurm",
        "--timeout",
        "2s",
        "--name",
        "slow",
        "sleep 120",
    ]);
    let end = ended(&env, "slow");
    assert_eq!(end["status"], "timed_out", "{end}");
}

/// A Slurm command against the cluster (its output; asserted to succeed).
fn slurm(conf: &str, program: &str, args: &[&str]) -> String {
    let o = std::process::Command::new(program)
        .env("SLURM_CONF", conf)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        o.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs `command` on Slurm as `name` and waits until its shim runs; its job id.
fn running_job(env: &Env, name: &str, extra: &[&str], command: &str) -> String {
    let mut args = vec!["--on", "slurm", "--name", name];
    args.extend_from_slice(extra);
    args.push(command);
    let run = env.run(&args);
    await_status(env, name, &format!("{name} to run"), |s| {
        s["status"] == "running"
    });
    run["job"]["id"].as_str().expect("a job id").to_string()
}

#[test]
fn a_job_that_slurm_cancels_or_preempts_is_stopped_by_slurm() {
    let Some((_turn, conf, env, _jobs)) = slurm_turn() else {
        return;
    };

    // Someone else's `scancel` (an admin, the user at a terminal): not aside's stop.
    let id = running_job(&env, "cancelled", &[], "sleep 300");
    slurm(&conf, "scancel", &[&id]);
    let end = ended(&env, "cancelled");
    assert_eq!(end["status"], "stopped", "{end}");
    assert!(
        end["stopped_by"]
            .as_str()
            .is_some_and(|s| s.starts_with("Slurm (CANCELLED")),
        "{end}"
    );
    assert_eq!(end["job"]["state"], "CANCELLED", "{end}");

    // Partition `urgent` preempts (cancels) jobs of `debug`: a 2-CPU job there takes the node.
    running_job(&env, "preempted", &["--cpus", "2"], "sleep 300");
    let urgent = slurm(
        &conf,
        "sbatch",
        &[
            "--parsable",
            "--partition=urgent",
            "--cpus-per-task=2",
            "--output=/dev/null",
            "--wrap=sleep 1",
        ],
    );
    let end = ended(&env, "preempted");
    slurm(&conf, "scancel", &[urgent.trim()]);
    assert_eq!(end["status"], "stopped", "{end}");
    assert_eq!(end["stopped_by"], "Slurm (PREEMPTED)", "{end}");
    assert_eq!(end["job"]["state"], "PREEMPTED", "{end}");
    let results = notifications(&env);
    assert_eq!(results.len(), 2, "one result each: {results:?}");
}

#[test]
fn a_job_lost_to_a_failed_node_fails_with_slurms_reason() {
    let Some((_turn, conf, env, _jobs)) = slurm_turn() else {
        return;
    };
    let id = running_job(&env, "lost", &[], "sleep 300");
    // One line per partition the node is in.
    let nodes = slurm(&conf, "sinfo", &["-h", "-N", "-o", "%N"]);
    let host = nodes.lines().next().expect("a node");
    slurm(
        &conf,
        "scontrol",
        &[
            "update",
            &format!("nodename={host}"),
            "state=down",
            "reason=aside-test",
        ],
    );
    let end = ended(&env, "lost");
    // The node comes back by itself (`ReturnToService=2`: its slurmd answers).
    eventually(Duration::from_secs(60), "the node to be idle again", || {
        slurm(&conf, "sinfo", &["-h", "-N", "-o", "%T"])
            .lines()
            .all(|state| state == "idle")
    });
    assert_eq!(end["status"], "failed", "{end}");
    assert!(
        end["error"]
            .as_str()
            .is_some_and(|e| e.contains("as NODE_FAIL")),
        "{end}"
    );
    assert_eq!(end["job"]["state"], "NODE_FAIL", "{end}");
    // Slurm requeues a batch job lost to a node unless told not to; its shim would run again
    // in a run directory that has ended.
    let again = slurm(&conf, "squeue", &["-h", "-j", &id, "-o", "%T"]);
    assert_eq!(again.trim(), "", "job {id} was requeued");
}

#[test]
fn slurms_own_time_limit_ends_the_run_timed_out() {
    let Some((_turn, conf, env, _jobs)) = slurm_turn() else {
        return;
    };
    // aside's own timeout acts first normally; Slurm's limit is its timeout and grace in whole
    // minutes, plus one.
    let id = running_job(
        &env,
        "limited",
        &["--timeout", "10m", "--grace", "5s"],
        "sleep 900",
    );
    let shown = slurm(&conf, "scontrol", &["show", "job", &id]);
    assert!(shown.contains("TimeLimit=00:12:00"), "{shown}");
    // The limit reached now (an admin's `scontrol update`): Slurm ends the job at its next
    // look at limits (every 30 s).
    let now = jiff::Zoned::now().strftime("%Y-%m-%dT%H:%M:%S").to_string();
    slurm(
        &conf,
        "scontrol",
        &["update", &format!("jobid={id}"), &format!("endtime={now}")],
    );
    let end = ended(&env, "limited");
    assert_eq!(end["status"], "timed_out", "{end}");
    assert!(
        end["error"]
            .as_str()
            .is_some_and(|e| e.contains("as TIMEOUT")),
        "{end}"
    );
    assert_eq!(end["job"]["state"], "TIMEOUT", "{end}");
}

#[test]
fn agents_use_slurm_only_as_the_policy_allows() {
    let Some((_turn, _, env, _jobs)) = slurm_turn() else {
        return;
    };
    let refused = env.aside(&["run", "--owner", "agent-1", "--on", "slurm", "true"]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("no \"slurm\" section"),
        "{}",
        refused.stderr
    );
    std::fs::write(
        env.home.join("policy.json"),
        r#"{"allow": ["*"], "slurm": {"partitions": ["debug"], "max_cpus": 1}}"#,
    )
    .unwrap();
    let over = env.aside(&[
        "run",
        "--owner",
        "agent-1",
        "--on",
        "slurm:debug",
        "--cpus",
        "2",
        "true",
    ]);
    assert!(over.stderr.contains("slurm.max_cpus: 1"), "{}", over.stderr);
    let other = env.aside(&["run", "--owner", "agent-1", "--on", "slurm:gpu", "true"]);
    assert!(other.stderr.contains("partition gpu"), "{}", other.stderr);
    let ok = env
        .aside(&[
            "run",
            "--json",
            "--owner",
            "agent-1",
            "--on",
            "slurm:debug",
            "--name",
            "fine",
            "echo fine",
        ])
        .ok()
        .json();
    assert_eq!(ok["job"]["executor"], "slurm");
    let end = ended(&env, "fine");
    assert_eq!(end["status"], "completed", "{end}");
    assert!(
        env.status_all().iter().all(|p| p["name"] == "fine"),
        "refusals started nothing"
    );
}

#[test]
fn kill_9_of_the_daemon_while_jobs_queue_run_and_end_loses_no_result() {
    let Some((_turn, conf, env, _jobs)) = slurm_turn() else {
        return;
    };
    let gate = |n: &str| env.work.join(n);
    let wait = |n: &str| format!("while [ ! -e {} ]; do sleep 0.1; done", gate(n).display());
    // a ends while the daemon is down; b runs across the restart; c waits for both CPUs.
    env.run(&[
        "--on",
        "slurm",
        "--name",
        "a",
        &format!("echo a-up; {}; echo a-done; exit 4", wait("ga")),
    ]);
    env.run(&[
        "--on",
        "slurm",
        "--name",
        "b",
        &format!("echo b-up; {}; echo b-done", wait("gb")),
    ]);
    await_status(&env, "a", "a to run", |s| s["status"] == "running");
    await_status(&env, "b", "b to run", |s| s["status"] == "running");
    env.run(&["--on", "slurm", "--cpus", "2", "--name", "c", "echo c-done"]);
    await_status(&env, "c", "c to queue", |s| s["status"] == "queued");

    env.kill_daemon();
    std::fs::write(gate("ga"), "").unwrap();
    let a_dir = env.home.join("runs").join(env.status_all_offline("a"));
    eventually(
        Duration::from_secs(30),
        "a to end while the daemon is down",
        || a_dir.join("exit.json").exists(),
    );

    let o = env
        .command()
        .env("SLURM_CONF", &conf)
        .args(["daemon", "start"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let a = ended(&env, "a");
    assert_eq!(a["status"], "failed", "{a}");
    assert_eq!(a["exit_code"], 4);
    assert_eq!(env.status("b")["status"], "running");
    assert_eq!(env.status("c")["status"], "queued");
    std::fs::write(gate("gb"), "").unwrap();
    assert_eq!(ended(&env, "b")["status"], "completed");
    assert_eq!(ended(&env, "c")["status"], "completed");
    let logs = env.aside(&["logs", "--all", "--tail", "all"]).ok().stdout;
    for line in ["a-done", "b-done", "c-done"] {
        assert!(logs.contains(line), "{line} in {logs}");
    }
    let mut names: Vec<String> = notifications(&env)
        .iter()
        .map(|n| n["result"]["name"].as_str().unwrap_or_default().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b", "c"], "each result exactly once");
}

trait Offline {
    /// The latest run id of `name`, read from the run directories (the daemon is down).
    fn status_all_offline(&self, name: &str) -> String;
}

impl Offline for Env {
    fn status_all_offline(&self, name: &str) -> String {
        let mut found = None;
        for run in std::fs::read_dir(self.home.join("runs")).unwrap().flatten() {
            let text = std::fs::read_to_string(run.path().join("process.json")).unwrap_or_default();
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if v["name"] == name {
                found = Some(run.file_name().to_string_lossy().into_owned());
            }
        }
        found.unwrap_or_else(|| panic!("no run directory of {name}"))
    }
}

#[test]
fn mcp_run_on_slurm_is_queued_and_its_result_comes_back_by_piggyback() {
    let Some((_turn, conf, env, _jobs)) = slurm_turn() else {
        return;
    };
    run_mcp_script(
        &env,
        "slurm_test.py",
        "all slurm mcp checks passed",
        &[("SLURM_CONF", &conf)],
    );
}

#[test]
fn a_project_with_a_local_and_a_slurm_process_depending_on_each_other_comes_up() {
    let Some((_turn, _, env, _jobs)) = slurm_turn() else {
        return;
    };
    env.write(
        "aside.yaml",
        "session: mixed\nexecutor: slurm:debug\nprocesses:\n  \
         db:\n    cmd: \"echo db ready; sleep 60\"\n    ready: \"db ready\"\n    executor: local\n  \
         train:\n    cmd: \"echo training on $SLURM_JOB_ID; sleep 60\"\n    ready: \"training on\"\n    cpus: 1\n    depends_on: [db]\n",
    );
    env.aside(&["up"]).ok();
    let db = env.status("mixed/db");
    assert_eq!(db["status"], "ready", "{db}");
    assert!(db["job"].is_null(), "db runs here: {db}");
    let train = env.status("mixed/train");
    assert_eq!(train["status"], "ready", "{train}");
    assert_eq!(train["job"]["executor"], "slurm", "{train}");
    env.aside(&["down"]).ok();
    for name in ["mixed/db", "mixed/train"] {
        let s = env.status(name);
        assert_eq!(s["status"], "stopped", "{s}");
    }
    let bad = env.write(
        "bad.yaml",
        "processes:\n  x:\n    cmd: \"true\"\n    executor: mars\n",
    );
    let o = env.aside(&["up", "--config", bad.to_str().unwrap()]);
    assert_ne!(o.code, 0);
    assert!(
        o.stderr.contains("unknown executor \"mars\""),
        "{}",
        o.stderr
    );
}

/// Inside the real hosts (Claude Code, Codex, Gemini CLI) against a stand-in model API: the
/// model's `run` with `on: slurm` answers `queued` with the job (in `structuredContent`, which
/// Claude Code and Codex show; in the text, which Gemini CLI shows), and the job's result
/// reaches the model once, in the next answer (`wait`).
#[test]
fn the_real_hosts_show_the_model_a_queued_slurm_run_and_its_result() {
    use common::hosts::*;
    let Some(conf) = cluster() else { return };
    let _turn = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let hosts = Hosts::get();
    for host in ["claude", "codex", "gemini"] {
        let (env, _jobs) = slurm_env(&conf);
        let marker = format!("42slurm{host}");
        let command = format!("echo $((40+2))slurm{host}");
        // The policy allows `$((…))` only as a whole command, and Codex puts a directory of its
        // own on PATH; agents need its slurm section.
        let policy = serde_json::json!({"allow": [command], "env": {"allow": ["PATH"]},
                                        "slurm": {"partitions": ["*"]}});
        std::fs::write(env.home.join("policy.json"), policy.to_string()).unwrap();
        let plan = serde_json::json!({"steps": [
            {"tool": "run", "args": {"command": command, "on": "slurm",
                                     "run_in_background": true, "name": "job"}},
            {"tool": "wait", "args": {"ids": ["job"], "timeout_ms": 30000}},
            {"text": "done"},
        ]});
        let api = StandIn::start(&env.dir.path().join("api"), plan);
        let turn = Duration::from_secs(120);
        match host {
            "claude" => {
                let claude = Claude::new(&hosts, &env, &api, &[]);
                claude.settings(&env, None);
                run_for(claude.prompt(&env, "train it on the cluster"), turn).ok();
            }
            "codex" => {
                run_for(
                    Codex::new(&hosts, &env, &api, &[]).exec(&env, "train it on the cluster"),
                    turn,
                )
                .ok();
            }
            _ => {
                run_for(
                    Gemini::new(&hosts, &env, &api).prompt(&env, "train it on the cluster"),
                    turn,
                )
                .ok();
            }
        }
        // What the model saw of `run`: the command and prompt never say "queued".
        let needle = if host == "gemini" {
            "slurm job"
        } else {
            "executor"
        };
        let shown = body_text(&api.first_turn_with(needle).unwrap_or_else(|| {
            panic!(
                "{host}: the run answer's job never reached the model:\n{}",
                api.dump()
            )
        }));
        assert!(
            shown.contains("queued") && shown.contains("slurm"),
            "{host}: {shown}"
        );
        assert_eq!(
            api.deliveries(&marker),
            1,
            "{host}: the result once:\n{}",
            api.dump()
        );
        let job = env.status("job");
        assert_eq!(job["job"]["executor"], "slurm", "{host}: {job}");
        assert_eq!(job["status"], "completed", "{host}: {job}");
    }
}

#[test]
fn output_on_slurm_is_capped_as_locally_keeping_its_head_and_tail() {
    let Some((_turn, _, env, _jobs)) = slurm_turn() else {
        return;
    };
    // 100 000 numbered lines of 7 bytes = 700 000 bytes, capped at 64 KiB.
    env.run(&[
        "--on",
        "slurm",
        "--name",
        "big",
        "--log-cap",
        "64KiB",
        "seq 100000 199999",
    ]);
    let end = ended(&env, "big");
    assert_eq!(end["status"], "completed", "{end}");
    let got = env.json_lines(&["logs", "big", "--json", "--streams", "both"]);
    let gap = got
        .iter()
        .position(|e| e["type"] == "elided")
        .unwrap_or_else(|| panic!("an elision marker in {} entries", got.len()));
    assert_eq!(
        got[0]["text"], "100000",
        "the head starts at the first line"
    );
    assert_eq!(
        got[got.len() - 1]["text"],
        "199999",
        "the tail ends at the last line"
    );
    let shown: usize = got
        .iter()
        .filter_map(|e| e["text"].as_str())
        .map(|t| t.len() + 1)
        .sum();
    let elided = got[gap]["bytes"].as_u64().unwrap() as usize;
    // A line cut at an edge of the gap has no newline of its own, but is counted with one.
    assert!(
        (700_000..=700_002).contains(&(shown + elided)),
        "nothing lost silently: {shown} shown + {elided} elided"
    );
    assert!(shown <= 64 * 1024 + 16, "within the cap: {shown}");
}

#[test]
fn aside_ui_shows_a_slurm_runs_job_and_its_queued_status() {
    let Some((_turn, _, env, _jobs)) = slurm_turn() else {
        return;
    };
    let big = env.run(&["--on", "slurm", "--cpus", "2", "--name", "big", "sleep 300"]);
    await_status(&env, "big", "big to run", |s| s["status"] == "running");
    env.run(&["--on", "slurm", "--name", "small", "sleep 300"]);
    await_status(&env, "small", "small to queue", |s| s["status"] == "queued");
    let tui = common::tmux::Tmux::start(&env);
    let job = big["job"]["id"].as_str().unwrap().to_string();
    tui.row_shows("big", &format!("slurm job {job} on "));
    tui.row_shows("small", "queued");
}

#[test]
fn the_dashboard_shows_a_slurm_runs_job_queued_then_running_and_stops_a_queued_one() {
    let Some(conf) = cluster() else { return };
    let _turn = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(dashboard_on_slurm(&conf));
}

/// The dashboard in Chromium beside runs on the cluster (the turn on it taken).
async fn dashboard_on_slurm(conf: &str) {
    use fantoccini::Locator;
    let (env, _jobs) = slurm_env(conf);
    let web = env.aside(&["web", "--json"]).ok().json();
    let b = browser::Browser::start().await;
    let c = &b.client;
    c.goto(web["url"].as_str().expect("url"))
        .await
        .expect("open the dashboard");
    let until = |xpath: String, what: &'static str| async move {
        c.wait()
            .at_most(Duration::from_secs(60))
            .for_element(Locator::XPath(&xpath))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    };
    let cell = |id: &str, text: &str| format!("//tr[@data-id='{id}']/td[contains(., '{text}')]");
    let status = |id: &str, word: &str| {
        format!("//tr[@data-id='{id}']/td[contains(@class,'status')][text()='{word}']")
    };

    let gate = env.work.join("gate");
    let hold = format!("while [ ! -e {} ]; do sleep 0.1; done", gate.display());
    let big = env.run(&["--on", "slurm", "--cpus", "2", "--name", "big", &hold]);
    let (big_id, big_job) = (
        big["id"].as_str().unwrap().to_string(),
        big["job"]["id"].as_str().unwrap().to_string(),
    );
    until(status(&big_id, "running"), "big runs").await;
    until(
        cell(&big_id, &format!("slurm job {big_job} on ")),
        "big's job and node beside its command",
    )
    .await;
    let small = env.run(&[
        "--on",
        "slurm",
        "--name",
        "small",
        "echo from-the-node; exit 3",
    ]);
    let small_id = small["id"].as_str().unwrap().to_string();
    until(status(&small_id, "queued"), "small shows queued").await;
    until(
        cell(&small_id, "PENDING (Resources)"),
        "small's Slurm state and reason",
    )
    .await;
    let waiting = env.run(&["--on", "slurm", "--name", "waiting", "echo never"]);
    let waiting_id = waiting["id"].as_str().unwrap().to_string();
    until(status(&waiting_id, "queued"), "waiting shows queued").await;
    until(
        "//span[@id='counts'][contains(., '1 running · 2 queued')]".into(),
        "queued runs are counted apart from running ones",
    )
    .await;

    // Its detail pane says the job; the stop button cancels it while it waits.
    c.find(Locator::Css(&format!("tr[data-id='{waiting_id}']")))
        .await
        .expect("waiting's row")
        .click()
        .await
        .expect("select it");
    let job = format!(
        "//div[@id='d-meta']//dd[contains(., 'slurm job {}')]",
        waiting["job"]["id"].as_str().unwrap()
    );
    until(job, "the job in the detail pane").await;
    let shot = c.screenshot().await.expect("screenshot");
    std::fs::write(browser::artifacts().join("dashboard-slurm.png"), shot)
        .expect("save the screenshot");
    for button in ["b-stop", "b-stop-yes"] {
        c.find(Locator::Id(button))
            .await
            .expect("the stop button")
            .click()
            .await
            .expect("click");
    }
    until(status(&waiting_id, "stopped"), "waiting shows stopped").await;
    assert_eq!(env.status("waiting")["stopped_by"], "human");

    // Released, big ends by itself; small then runs on the node and fails by itself.
    std::fs::write(&gate, "").unwrap();
    until(status(&big_id, "completed_empty"), "big's end, by itself").await;
    until(status(&small_id, "failed"), "small's failure, by itself").await;
    assert_eq!(env.status("small")["exit_code"], 3);
    b.close().await;
}
