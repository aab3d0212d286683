//! The web dashboard in a real headless Chromium: the token hand-over, a process started from
//! the CLI appearing live, its log tail, stopping it with the button; a screenshot of the main
//! view is saved to `target/test-artifacts/dashboard.png`.

mod common;

#[path = "common/browser.rs"]
mod browser;

use std::time::Duration;

use browser::{Browser, artifacts};
use common::{BIN, Env};
use fantoccini::Locator;

const WAIT: Duration = Duration::from_secs(30);

/// Waits (at most [`WAIT`]) for an element; panics naming `what`.
async fn until(
    c: &fantoccini::Client,
    at: Locator<'_>,
    what: &str,
) -> fantoccini::elements::Element {
    c.wait()
        .at_most(WAIT)
        .for_element(at)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

async fn click(c: &fantoccini::Client, at: Locator<'_>) {
    c.find(at)
        .await
        .expect("the element")
        .click()
        .await
        .expect("click");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_processes_live_follows_logs_and_stops_with_the_button() {
    let env = Env::new();
    let web = env.aside(&["web", "--json"]).ok().json();
    let url = web["url"].as_str().expect("url").to_string();
    let b = Browser::start().await;
    let c = &b.client;

    // Without the token the page says how to get in, and shows nothing else.
    let base = format!("http://127.0.0.1:{}/", web["port"]);
    c.goto(&base).await.expect("open without a token");
    let refused = c
        .find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        refused.contains("needs a token") && refused.contains("aside web"),
        "{refused}"
    );
    assert!(c.find(Locator::Id("rows")).await.is_err());

    c.goto(&url).await.expect("open the dashboard");
    // The token went into a cookie and out of the address bar.
    let here = c.current_url().await.expect("url");
    assert!(!here.as_str().contains("token="), "{here}");
    until(
        c,
        Locator::Css("#conn[data-state='live']"),
        "the event stream connects",
    )
    .await;
    let empty = c.find(Locator::Id("empty")).await.expect("#empty");
    assert!(
        empty.text().await.unwrap().contains("Nothing is running"),
        "the empty state explains what to do"
    );

    // Started from the CLI: it appears without a reload.
    let p = env.run(&[
        "--name",
        "demo",
        "sh -c 'echo hello-from-demo; echo warned >&2; i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.2; done'",
    ]);
    let id = p["id"].as_str().unwrap().to_string();
    let row = until(
        c,
        Locator::Css(&format!("tr[data-id='{id}']")),
        "the new process appears live",
    )
    .await;
    let status = format!("//tr[@data-id='{id}']/td[contains(@class,'status')]");
    let running = format!("{status}[text()='running']");
    until(c, Locator::XPath(&running), "it shows as running").await;

    // Its log tail, followed live (stderr included).
    row.click().await.expect("select it");
    for text in ["hello-from-demo", "warned", "tick 5"] {
        let line = format!("//div[@id='log']/div[contains(., '{text}')]");
        until(
            c,
            Locator::XPath(&line),
            &format!("{text:?} in the log pane"),
        )
        .await;
    }
    // CPU and memory of its tree arrive from the stats stream.
    let memory = format!("//tr[@data-id='{id}']/td[contains(., 'KiB') or contains(., 'MiB')]");
    until(c, Locator::XPath(&memory), "memory is shown").await;
    let shot = c.screenshot().await.expect("screenshot");
    std::fs::write(artifacts().join("dashboard.png"), shot).expect("save the screenshot");

    // Stop with the button (and its confirmation): the status changes in place.
    click(c, Locator::Id("b-stop")).await;
    click(c, Locator::Id("b-stop-yes")).await;
    let stopped = format!("{status}[text()='stopped']");
    until(c, Locator::XPath(&stopped), "the row shows it stopped").await;
    assert_eq!(env.status("demo")["status"], "stopped");
    assert_eq!(env.status("demo")["stopped_by"], "human");

    // A process that ends by itself (nobody clicks anything) and one that fails: each row
    // follows, and the count of running ones is right.
    let a = env.run(&["--name", "short", "sleep 1; echo done"]);
    let f = env.run(&["--name", "bad", "sleep 1; exit 3"]);
    for (p, word) in [(&a, "completed"), (&f, "failed")] {
        let id = p["id"].as_str().unwrap();
        let ended = format!("//tr[@data-id='{id}']/td[contains(@class,'status')][text()='{word}']");
        until(
            c,
            Locator::XPath(&ended),
            &format!("the row shows {word} by itself"),
        )
        .await;
    }
    until(
        c,
        Locator::XPath("//span[@id='counts'][contains(., '0 running')]"),
        "the running count follows",
    )
    .await;

    // Its structured result is in the pane.
    click(c, Locator::Css("button[data-tab='result']")).await;
    until(
        c,
        Locator::XPath("//div[@id='t-result']//dd[text()='stopped']"),
        "the structured result",
    )
    .await;

    // Restarted by its policy until it gives up, and restarted by a file watch: the row's
    // restart count follows each, and its status the new run.
    let restarts = |id: &str, text: &str| format!("//tr[@data-id='{id}']/td[11][text()='{text}']");
    let flaky = env.run(&[
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
    let flaky = flaky["id"].as_str().unwrap();
    until(
        c,
        Locator::XPath(&restarts(flaky, "2 (exhausted)")),
        "the policy's restarts",
    )
    .await;
    let ended = format!("//tr[@data-id='{flaky}']/td[contains(@class,'status')][text()='failed']");
    until(c, Locator::XPath(&ended), "the last run failed").await;
    std::fs::create_dir_all(env.work.join("src")).unwrap();
    let watched = env.run(&["--name", "watched", "--watch", "src/*.txt", "sleep 300"]);
    let watched = watched["id"].as_str().unwrap();
    until(
        c,
        Locator::XPath(&restarts(watched, "0")),
        "the watched one",
    )
    .await;
    std::fs::write(env.work.join("src/change.txt"), "x").unwrap();
    until(
        c,
        Locator::XPath(&restarts(watched, "1")),
        "the watch's restart",
    )
    .await;
    let running =
        format!("//tr[@data-id='{watched}']/td[contains(@class,'status')][text()='running']");
    until(c, Locator::XPath(&running), "running again").await;

    // What a run says it is doing, from inside it, shows in its row as it says it.
    let p = env.run(&[
        "--name",
        "stepper",
        &format!("{BIN} progress 'step 2 of 3' && sleep 30"),
    ]);
    let cell = format!(
        "//tr[@data-id='{}']/td[contains(., '— step 2 of 3')]",
        p["id"].as_str().unwrap()
    );
    until(c, Locator::XPath(&cell), "the row shows the run's progress").await;

    // The daemon stopping says why on the page; the next `aside web` comes back on the same
    // port and the page reconnects by itself, showing what happened meanwhile.
    env.aside(&["daemon", "stop"]).ok();
    until(
        c,
        Locator::XPath("//div[@id='banner'][contains(., 'asked to')]"),
        "the banner says why the daemon stopped",
    )
    .await;
    let again = env.aside(&["web", "--json"]).ok().json();
    assert_eq!(again["port"], web["port"], "the dashboard's port is kept");
    let later = env.run(&["--name", "later", "sleep 30"]);
    until(
        c,
        Locator::Css("#conn[data-state='live']"),
        "the page reconnects",
    )
    .await;
    let row = format!("//tr[@data-id='{}']", later["id"].as_str().unwrap());
    until(c, Locator::XPath(&row), "the next daemon's news").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_stays_up_while_the_dashboard_is_open_and_leaves_after() {
    let env = Env::new();
    // The browser first: a daemon idle for 2 s leaves, and Chromium may take longer to start
    // on a busy machine than that.
    let b = Browser::start().await;
    let c = &b.client;
    env.aside(&["daemon", "start", "--idle-timeout", "2s"]).ok();
    let pid = env.daemon_pid().expect("a daemon");
    let web = env.aside(&["web", "--json"]).ok().json();
    c.goto(web["url"].as_str().unwrap()).await.expect("open");
    until(
        c,
        Locator::Css("#conn[data-state='live']"),
        "the page is live",
    )
    .await;
    // Twice the idle timeout with nothing running and the page open: still up.
    let until_t = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < until_t {
        assert!(
            common::alive(pid),
            "the daemon left while the dashboard was open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The page goes away (its streams close): the daemon leaves once idle.
    c.goto("about:blank").await.expect("leave the page");
    let gone = std::time::Instant::now() + Duration::from_secs(15);
    while common::alive(pid) {
        assert!(
            std::time::Instant::now() < gone,
            "the daemon stayed after the page closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.close().await;
}

// ---------- benchmarks (run by bench/run: `--ignored`), printing `BENCH key=value` ----------

fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Loads the page `n` times; the median time from navigation to the first frame showing the
/// listing with `rows` rows.
async fn first_paint(c: &fantoccini::Client, url: &str, rows: usize, n: usize) -> f64 {
    let mut times = Vec::new();
    for _ in 0..n {
        c.goto(url).await.expect("open");
        c.wait()
            .at_most(Duration::from_secs(60))
            .for_element(Locator::Css("#conn[data-state='live']"))
            .await
            .expect("live");
        let shown = c
            .execute(
                "return document.querySelectorAll('#rows tr').length",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(shown.as_u64(), Some(rows as u64));
        let t = loop {
            let v = c
                .execute(
                    "const m = performance.getEntriesByName('aside:first-paint'); return m.length ? m[0].startTime : null",
                    vec![],
                )
                .await
                .unwrap();
            if let Some(t) = v.as_f64() {
                break t;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        times.push(t);
    }
    median(times)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by bench/run"]
async fn bench_dashboard_first_paint_and_event_to_screen() {
    let env = Env::new();
    let web = env.aside(&["web", "--json"]).ok().json();
    let url = web["url"].as_str().unwrap().to_string();
    let base = format!("http://127.0.0.1:{}/", web["port"]);
    let b = Browser::start().await;
    let c = &b.client;
    c.goto(&url).await.unwrap();
    let empty = first_paint(c, &base, 0, 5).await;
    for i in 0..1000 {
        env.aside(&["run", "--name", &format!("p{i}"), "sleep 3600"])
            .ok();
    }
    let full = first_paint(c, &base, 1000, 5).await;
    println!("BENCH first_paint_empty_ms={empty:.0}");
    println!("BENCH first_paint_1000_ms={full:.0}");

    // A process printing ~10 000 lines a second, then one printing as fast as it can; each
    // line stamped with the time it was written.
    flood(c, &env, "flood10k", 10000).await;
    flood(c, &env, "flood", 0).await;
    b.close().await;
}

/// Selects a process printing `rate` lines a second (0: as fast as it can) and measures how
/// long its lines take to reach the screen, and how long rows of processes started meanwhile
/// take to appear. Prints `BENCH {name}_…` lines.
async fn flood(c: &fantoccini::Client, env: &Env, name: &str, rate: u32) {
    let pause = if rate == 0 { 0.0 } else { 100.0 / rate as f64 };
    let script = format!(
        "import sys,time\nw=sys.stdout.write\nwhile True:\n    t='%.1f' % (time.time()*1000)\n    for _ in range(100): w('T '+t+' '+'x'*60+'\\n')\n    sys.stdout.flush()\n    if {pause}: time.sleep({pause})"
    );
    let flood = env.run(&["--name", name, "--", "python3", "-c", &script]);
    let id = flood["id"].as_str().unwrap().to_string();
    let row = c
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css(&format!("tr[data-id='{id}']")))
        .await
        .unwrap();
    // Record, for every log line put on screen, how long ago it was written; and when new
    // table rows appear.
    c.execute(
        r#"
        window.benchLog = []; window.benchRows = {};
        if (window.benchObservers) window.benchObservers.forEach((o) => o.disconnect());
        const log = new MutationObserver((ms) => {
          const now = Date.now();
          for (const m of ms) for (const n of m.addedNodes) {
            const t = parseFloat((n.textContent || '').split(' ')[1]);
            if (!isNaN(t)) window.benchLog.push(now - t);
          }
        });
        log.observe(document.getElementById('log'), { childList: true });
        const rows = new MutationObserver((ms) => {
          const now = Date.now();
          for (const m of ms) for (const n of m.addedNodes) if (n.dataset) window.benchRows[n.dataset.id] = now;
        });
        rows.observe(document.getElementById('rows'), { childList: true });
        window.benchObservers = [log, rows];
        "#,
        vec![],
    )
    .await
    .unwrap();
    row.click().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.execute(
        "window.benchLog = []; window.benchFrom = Date.now()",
        vec![],
    )
    .await
    .unwrap();
    // Meanwhile, processes started from the CLI: from `run` returning to the row on screen.
    let mut row_delays = Vec::new();
    for i in 0..10 {
        let p = env.run(&["--name", &format!("{name}-late{i}"), "sleep 3600"]);
        let started = now_ms();
        let pid = p["id"].as_str().unwrap().to_string();
        let seen = loop {
            let v = c
                .execute(&format!("return window.benchRows['{pid}'] || null"), vec![])
                .await
                .unwrap();
            if let Some(t) = v.as_f64() {
                break t;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        row_delays.push(seen - started);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = c
        .execute(
            "return { delays: window.benchLog, ms: Date.now() - window.benchFrom }",
            vec![],
        )
        .await
        .unwrap();
    let delays: Vec<f64> = serde_json::from_value(seen["delays"].clone()).unwrap();
    let window_s = seen["ms"].as_f64().unwrap() / 1000.0;
    println!(
        "BENCH {name}_lines_on_screen_per_s={:.0}",
        delays.len() as f64 / window_s
    );
    println!(
        "BENCH {name}_log_delay_p50_ms={:.0}",
        percentile(delays.clone(), 0.5)
    );
    println!(
        "BENCH {name}_log_delay_p95_ms={:.0}",
        percentile(delays, 0.95)
    );
    println!(
        "BENCH {name}_row_delay_median_ms={:.0}",
        median(row_delays.clone())
    );
    println!(
        "BENCH {name}_row_delay_max_ms={:.0}",
        row_delays.iter().cloned().fold(0.0, f64::max)
    );
    env.aside(&["stop", name]).ok();
}
