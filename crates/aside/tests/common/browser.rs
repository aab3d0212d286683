//! A real headless Chromium driven over WebDriver: `chromedriver` (Debian `chromium-driver`)
//! started on a free port for one test and killed with it.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;

pub struct Browser {
    pub client: Client,
    driver: Child,
}

fn find(candidates: &[&str]) -> Option<String> {
    candidates
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(|p| p.to_string())
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session. Panics with what to install when
    /// they are missing (CI installs them: see `.ci/run`).
    pub async fn start() -> Browser {
        let chromium = find(&["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"])
            .expect("no Chromium: install Debian's `chromium` and `chromium-driver` (apt-get install chromium chromium-driver)");
        let driver_bin = find(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"])
            .expect("no chromedriver: install Debian's `chromium-driver`");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        crate::common::eventually(Duration::from_secs(20), "chromedriver to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1700,950", "--no-first-run", "--disable-extensions"],
            }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session");
        Browser { client, driver }
    }

    /// Ends the session (then the driver is killed on drop).
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Where tests leave files for people to look at (screenshots): `target/test-artifacts/`.
pub fn artifacts() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}
