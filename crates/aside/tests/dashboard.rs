//! The web dashboard in a real headless Chromium: the token hand-over, a process started from
//! the CLI appearing live, its log tail, stopping it with the button; a screenshot of the main
//! view is saved to `target/test-artifacts/dashboard.png`.

mod common;

#[path = "common/browser.rs"]
mod browser;

use std::time::Duration;

use browser::{Browser, artifacts};
use common::Env;
use fantoccini::Locator;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_processes_live_follows_logs_and_stops_with_the_button() {
    let env = Env::new();
    let web = env.aside(&["web", "--json"]).ok().json();
    let url = web["url"].as_str().expect("url").to_string();
    let b = Browser::start().await;
    let c = &b.client;

    c.goto(&url).await.expect("open the dashboard");
    // The token went into a cookie and out of the address bar.
    let here = c.current_url().await.expect("url");
    assert!(!here.as_str().contains("token="), "{here}");
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#conn[data-state='live']"))
        .await
        .expect("the event stream connects");
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
    let row = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(&format!("tr[data-id='{id}']")))
        .await
        .expect("the new process appears live");
    let status = format!("//tr[@data-id='{id}']/td[contains(@class,'status')]");
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::XPath(&format!("{status}[text()='running']")))
        .await
        .expect("it shows as running");

    // Its log tail, followed live (stderr included).
    row.click().await.expect("select it");
    for text in ["hello-from-demo", "warned", "tick 5"] {
        c.wait()
            .at_most(WAIT)
            .for_element(Locator::XPath(&format!(
                "//div[@id='log']/div[contains(., '{text}')]"
            )))
            .await
            .unwrap_or_else(|e| panic!("{text:?} in the log pane: {e}"));
    }
    // CPU and memory of its tree arrive from the stats stream.
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::XPath(&format!(
            "//tr[@data-id='{id}']/td[contains(., 'KiB') or contains(., 'MiB')]"
        )))
        .await
        .expect("memory is shown");
    let shot = c.screenshot().await.expect("screenshot");
    std::fs::write(artifacts().join("dashboard.png"), shot).expect("save the screenshot");

    // Stop with the button (and its confirmation): the status changes in place.
    c.find(Locator::Id("b-stop"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.find(Locator::Id("b-stop-yes"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::XPath(&format!("{status}[text()='stopped']")))
        .await
        .expect("the row shows it stopped");
    assert_eq!(env.status("demo")["status"], "stopped");
    assert_eq!(env.status("demo")["stopped_by"], "human");

    // Its result and run history are in the pane.
    c.find(Locator::Css("button[data-tab='result']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::XPath(
            "//div[@id='t-result']//dd[text()='stopped']",
        ))
        .await
        .expect("the structured result");
    b.close().await;
}
