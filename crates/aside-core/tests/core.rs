//! The core in-process: a `Supervisor` opened on a temporary state directory, with no daemon,
//! socket or CLI between the test and it. Its shims are this very test binary, re-run as
//! `core-<hash> __shim RUN_DIR` (hence `harness = false` and the small runner in `main`).
//!
//! What is checked here is what the daemon relies on the core for: one result per run however
//! often it is finished or reconciled, restarts by policy until they run out, a new supervisor
//! that takes over what an old one started (the `kill -9` case, in-process), and who may stop
//! whose process.

use std::path::Path;
use std::time::Duration;

use aside_core::paths::StateDir;
use aside_core::supervisor::{Error, Requester, Settings, Supervisor};
use aside_proto::{
    Autorestart, Command, EventData, EventKind, RestartPolicy, RestartState, RunRequest, Status,
    StopRequest, WaitQuery,
};

const DEADLINE: Duration = Duration::from_secs(20);

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "__shim") {
        std::process::exit(aside_core::shim::shim_main(
            args.iter().skip(2).cloned(),
            None,
        ));
    }
    let filter = args
        .get(1)
        .and_then(|a| a.to_str())
        .filter(|a| !a.starts_with('-'));
    let tests: [(&str, fn()); 4] = [
        (
            "a_run_ends_in_exactly_one_result",
            a_run_ends_in_exactly_one_result,
        ),
        (
            "restarts_follow_the_policy_until_exhausted",
            restarts_follow_the_policy_until_exhausted,
        ),
        (
            "a_new_supervisor_takes_over_what_the_old_one_started",
            a_new_supervisor_takes_over_what_the_old_one_started,
        ),
        (
            "only_its_owner_or_a_human_may_stop_a_process",
            only_its_owner_or_a_human_may_stop_a_process,
        ),
    ];
    let mut failed = 0;
    for (name, test) in tests {
        if filter.is_some_and(|f| !name.contains(f)) {
            continue;
        }
        match std::panic::catch_unwind(test) {
            Ok(()) => println!("test {name} ... ok"),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        println!("{failed} core tests failed");
        std::process::exit(1);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn open(home: &Path) -> Supervisor {
    let exe = std::env::current_exe().expect("the test binary");
    let settings = Settings {
        shim_command: vec![exe.into_os_string(), "__shim".into()],
        shim_zygote: false,
        default_log_cap: 8 << 20,
        prune_after: Duration::from_secs(86_400),
        policy_path: home.join("no-policy.yaml"),
        wake_debounce: Duration::from_millis(50),
        wake_backoff: Duration::from_secs(1),
        recover: false,
    };
    let sup = Supervisor::open(StateDir::at(home), settings).expect("Supervisor::open");
    sup.reconcile().expect("reconcile");
    sup
}

/// A request as the local human (`owner` absent); set `owner` for an agent's.
fn request(name: &str, cmd: &str) -> RunRequest {
    RunRequest {
        cmd: Some(Command::Shell(cmd.into())),
        name: Some(name.into()),
        cwd: Some(std::env::temp_dir().display().to_string()),
        ..RunRequest::default()
    }
}

async fn ended(sup: &Supervisor, reference: &str) -> aside_proto::ProcessInfo {
    let q = WaitQuery {
        timeout_ms: Some(DEADLINE.as_millis() as u64),
        ..WaitQuery::default()
    };
    let w = sup.wait(reference, &q).await.expect("wait");
    assert!(
        w.process.status.is_terminal(),
        "{reference} still {:?}",
        w.process.status
    );
    w.process
}

/// How many `kind` events the log holds for run `run_id`.
fn events_of(sup: &Supervisor, kind: EventKind, run_id: &str) -> usize {
    sup.events_since(0, None, 100_000)
        .expect("events")
        .iter()
        .filter(|e| e.kind() == kind && e.run_id.as_deref() == Some(run_id))
        .count()
}

fn a_run_ends_in_exactly_one_result() {
    let home = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let sup = open(home.path());
        let agent = Requester::new("agent-a", None);
        let mut req = request("three", "echo hi; exit 3");
        req.owner = Some("agent-a".into());
        let p = sup.run(req, &agent).await.unwrap();
        let end = ended(&sup, &p.id).await;
        assert_eq!((end.status, end.exit_code), (Status::Failed, Some(3)));
        // Finishing again (a reconcile after a restart finds the same exit record) adds nothing.
        sup.reconcile().unwrap();
        sup.reconcile().unwrap();
        let inbox = sup.inbox("agent-a", false).unwrap().notifications;
        assert_eq!(inbox.len(), 1, "{inbox:?}");
        assert_eq!(inbox[0].id, p.run_id);
        assert_eq!(events_of(&sup, EventKind::RunExited, &p.run_id), 1);
        assert_eq!(
            events_of(&sup, EventKind::NotificationCreated, &p.run_id),
            1
        );
        let result = sup.result(&p.id).unwrap().expect("a result");
        assert_eq!(result.exit_code, Some(3));
    });
}

fn restarts_follow_the_policy_until_exhausted() {
    let home = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let sup = open(home.path());
        let mut events = sup.subscribe_events();
        let mut req = request("flaky", "exit 1");
        req.restart = Some(RestartPolicy {
            autorestart: Autorestart::OnFailure,
            max_restarts: Some(2),
            delay_ms: 50,
            backoff_max_ms: None,
            reset_after_ms: 60_000,
        });
        let p = sup.run(req, &Requester::human()).await.unwrap();
        let exhausted = tokio::time::timeout(DEADLINE, async {
            loop {
                let e = events.recv().await.expect("the event stream");
                if let EventData::RestartsExhausted { process } = e.data {
                    return process;
                }
            }
        })
        .await
        .expect("the policy to give up");
        assert_eq!(exhausted.id, p.id);
        assert_eq!(exhausted.restarts, 2);
        assert_eq!(exhausted.status, Status::Failed);
        let state = exhausted.autorestart.expect("its policy").state;
        assert_eq!(state, RestartState::Exhausted);
        // Three runs, each ended once.
        let runs: Vec<aside_proto::RunId> = sup
            .history(&p.id, 10)
            .unwrap()
            .into_iter()
            .map(|r| r.run_id)
            .collect();
        assert_eq!(runs.len(), 3, "{runs:?}");
        for run in &runs {
            assert_eq!(events_of(&sup, EventKind::RunExited, run), 1, "run {run}");
        }
    });
}

fn a_new_supervisor_takes_over_what_the_old_one_started() {
    let home = tempfile::tempdir().unwrap();
    // The first supervisor starts two runs and goes away with its runtime, as a killed daemon
    // does: nothing of it finishes them. Their shims live on.
    let first = runtime();
    let (long, brief) = first.block_on(async {
        let sup = open(home.path());
        let long = sup
            .run(request("long", "sleep 300"), &Requester::human())
            .await
            .unwrap();
        let brief = sup
            .run(
                request("brief", "sleep 0.3; echo done"),
                &Requester::human(),
            )
            .await
            .unwrap();
        (long, brief)
    });
    first.shutdown_background();
    // The brief one ends while no supervisor watches: its shim leaves the exit record.
    let exit_record = home
        .path()
        .join("runs")
        .join(brief.run_id.as_str())
        .join("exit.json");
    let deadline = std::time::Instant::now() + DEADLINE;
    while !exit_record.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no exit record from brief"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    runtime().block_on(async {
        let sup = open(home.path());
        let brief_now = sup.find(&brief.id).unwrap().info;
        assert_eq!(brief_now.status, Status::Completed);
        assert_eq!(sup.find(&long.id).unwrap().info.status, Status::Running);
        assert_eq!(sup.live_count(), 1);
        // The re-attached one is controlled as any other.
        let stopped = sup
            .stop(&long.id, &StopRequest::default(), &Requester::human())
            .await
            .unwrap();
        assert_eq!(stopped.status, Status::Stopped);
        sup.reconcile().unwrap();
        for run in [&long.run_id, &brief.run_id] {
            assert_eq!(events_of(&sup, EventKind::RunExited, run), 1, "run {run}");
        }
        assert_eq!(sup.inbox("human", false).unwrap().notifications.len(), 2);
    });
}

fn only_its_owner_or_a_human_may_stop_a_process() {
    let home = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let sup = open(home.path());
        let a = Requester::new("agent-a", None);
        let b = Requester::new("agent-b", None);
        let as_a = |name: &str| RunRequest {
            owner: Some("agent-a".into()),
            ..request(name, "sleep 300")
        };
        let p = sup.run(as_a("mine"), &a).await.unwrap();
        let refused = sup.stop(&p.id, &StopRequest::default(), &b).await;
        assert!(matches!(refused, Err(Error::Forbidden(_))), "{refused:?}");
        // Refused means untouched.
        assert_eq!(sup.find(&p.id).unwrap().info.status, Status::Running);
        let stopped = sup.stop(&p.id, &StopRequest::default(), &a).await.unwrap();
        assert_eq!(stopped.status, Status::Stopped);
        let q = sup.run(as_a("theirs"), &a).await.unwrap();
        let by_human = sup
            .stop(&q.id, &StopRequest::default(), &Requester::human())
            .await
            .unwrap();
        assert_eq!(by_human.status, Status::Stopped);
    });
}
