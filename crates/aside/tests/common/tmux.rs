//! `aside ui` in a real terminal: a tmux server of its own per test process.

use std::process::Command;
use std::time::Duration;

use super::{BIN, Env};

/// A tmux server of its own (`-L`), killed on drop.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// `aside ui` in a 200×45 tmux session of its own, on `env`'s state directory.
    pub fn start(env: &Env) -> Tmux {
        let socket = format!("aside-test-{}", std::process::id());
        let ok = Command::new("tmux")
            .args([
                "-L",
                &socket,
                "new-session",
                "-d",
                "-s",
                "ui",
                "-x",
                "200",
                "-y",
                "45",
            ])
            .arg("-e")
            .arg(format!("ASIDE_HOME={}", env.home.display()))
            .args(["-e", "ASIDE_IDLE_TIMEOUT=60s", "--", BIN, "ui"])
            .status()
            .expect("tmux: install it (apt-get install tmux)");
        assert!(ok.success());
        Tmux { socket }
    }

    /// What the pane shows now.
    pub fn screen(&self) -> String {
        let o = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p", "-t", "ui"])
            .output()
            .expect("capture-pane");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Types `keys` (tmux key names).
    pub fn keys(&self, keys: &str) {
        Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", "-t", "ui", keys])
            .status()
            .expect("send-keys");
    }

    /// Waits until the screen shows `text`.
    pub fn shows(&self, text: &str) {
        self.shows_where(text, |screen| screen.contains(text));
    }

    /// Waits until the table row of process `name` shows `text` (e.g. its restarts cell).
    pub fn row_shows(&self, name: &str, text: &str) {
        let what = format!("{text:?} in the row of {name}");
        self.shows_where(&what, |screen| {
            screen.lines().any(|l| {
                l.trim_start_matches([' ', '│'])
                    .starts_with(&format!("{name} "))
                    && l.contains(text)
            })
        });
    }

    /// Waits (15 s at most) until `seen` holds for the screen.
    pub fn shows_where(&self, what: &str, seen: impl Fn(&str) -> bool) {
        let mut last = String::new();
        let found = (0..300).any(|_| {
            last = self.screen();
            if seen(&last) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
            false
        });
        assert!(found, "the screen never showed {what}:\n{last}");
    }

    /// Whether the session (the UI) is still there.
    pub fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["-L", &self.socket, "has-session", "-t", "ui"])
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}
