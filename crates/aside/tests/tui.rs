//! `aside ui` in a real terminal (tmux): it lists processes, shows one started later without a
//! keypress (event-driven), follows the selected log, stops the selected process with `x`,
//! restarts with `r`, follows restarts by policy and by watch, a run's progress and its daemon's
//! stop and restart, and quits with `q`.

mod common;

use std::time::Duration;

use common::tmux::Tmux;
use common::{BIN, Env, eventually};

#[test]
fn the_tui_lists_follows_stops_restarts_and_quits() {
    let env = Env::new();
    env.run(&["--name", "early", "sleep 300"]);
    let tui = Tmux::start(&env);
    tui.shows("early");
    tui.shows("1 running");

    // Started after the UI: it appears by itself, newest first, and gets selected with `k`.
    env.run(&[
        "--name",
        "chatty",
        "sh -c 'i=0; while :; do i=$((i+1)); echo line-$i; echo oops-$i >&2; sleep 0.1; done'",
    ]);
    tui.shows("2 running");
    tui.keys("k");
    tui.shows("log · chatty");
    tui.shows("line-5");
    // `e` switches to stdout only.
    tui.keys("e");
    tui.shows("· stdout ·");

    // `x` stops the selected one.
    tui.keys("x");
    eventually(Duration::from_secs(15), "chatty to stop", || {
        env.status("chatty")["status"] == "stopped"
    });
    tui.shows("1 running");
    tui.shows("chatty: stopped");
    assert_eq!(env.status("early")["status"], "running");

    // `r` runs it again.
    tui.keys("r");
    eventually(Duration::from_secs(15), "chatty to run again", || {
        env.status("chatty")["status"] == "running"
    });
    tui.shows("2 running");

    // One that ends by itself: its row and the count follow, nobody pressing a key.
    env.run(&["--name", "brief", "sleep 1; exit 4"]);
    tui.shows("3 running");
    tui.shows("failed");
    tui.shows("2 running");

    // Restarted by its policy until it gives up, and by a file watch: the restarts cell follows.
    env.run(&[
        "--name",
        "flaky",
        "--autorestart",
        "on-failure",
        "--max-restarts",
        "2",
        "--restart-delay",
        "100",
        "sleep 0.3; exit 1",
    ]);
    tui.row_shows("flaky", "2 (exhausted)");
    tui.row_shows("flaky", "failed");
    std::fs::create_dir_all(env.work.join("src")).unwrap();
    env.run(&["--name", "watched", "--watch", "src/*.txt", "sleep 300"]);
    tui.shows("3 running");
    std::fs::write(env.work.join("src/change.txt"), "x").unwrap();
    eventually(Duration::from_secs(15), "the watch's restart", || {
        env.status("watched")["restarts"] == 1
    });
    tui.row_shows("watched", " 1 ");
    tui.row_shows("watched", "running");
    // What a run says it is doing shows in its row.
    let says = format!("{BIN} progress 'step 1 of 3' && sleep 300");
    env.run(&["--name", "stepper", &says]);
    tui.row_shows("stepper", "step 1 of 3 · ");

    // Its daemon stopping is said in the footer; the next daemon's news arrive by themselves.
    env.aside(&["daemon", "stop"]).ok();
    tui.shows("asked to stop");
    env.run(&["--name", "later", "sleep 300"]);
    tui.shows("connected to the daemon again");
    tui.row_shows("later", "running");

    tui.keys("q");
    eventually(Duration::from_secs(10), "the UI to quit", || !tui.alive());
}
