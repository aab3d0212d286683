//! What every tool answer carries to the model besides its own fields: the owner's finished
//! background runs (the *piggyback*) and guidance.
//!
//! Claude Code (2.1.x) and Codex CLI (0.17x) show a model only an answer's `structuredContent`
//! when it has one (Claude Code sends `JSON.stringify(structuredContent)`, Codex
//! `Output:\n{…}`); Gemini CLI shows the `content` text. So results and guidance go into both:
//! [`Delivered`] is flattened into every structured answer (and its output schema), and the
//! same blocks are appended to the text.

use aside_proto::{Notification, Status};
use schemars::JsonSchema;
use serde::Serialize;

/// Longest total of `<task-notification>` text put into one answer, in bytes; results beyond
/// it stay pending for the next answer (the daemon picks them: `POST …/inbox/take`).
pub const RESULTS_BUDGET: usize = 32 * 1024;

/// A finished background run, as an answer shows it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct BackgroundResult {
    /// Process id (for `output`).
    pub id: String,
    /// Run id (the notification's id).
    pub run_id: String,
    /// Process name.
    pub name: String,
    /// How it ended.
    pub status: Status,
    /// Exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Signal name, when a signal ended it.
    pub signal: Option<String>,
    /// How long it ran, in ms.
    pub duration_ms: u64,
    /// The command, on one line.
    pub command: String,
    /// The result as a `<task-notification>` block: outcome, command and the output's tail
    /// (bounded, fenced).
    pub notification: String,
}

impl BackgroundResult {
    /// The record of notification `n`.
    pub fn of(n: &Notification) -> BackgroundResult {
        let r = &n.result;
        BackgroundResult {
            id: r.process_id.to_string(),
            run_id: r.run_id.to_string(),
            name: r.name.clone(),
            status: r.status,
            exit_code: r.exit_code,
            signal: r.signal.clone(),
            duration_ms: r.duration_ms,
            command: r.command.clone(),
            notification: aside_core::present::notification_block(n),
        }
    }
}

/// Flattened into every structured answer: results that finished since the last call, each
/// exactly once, and what to do next.
#[derive(Debug, Default, Serialize, JsonSchema)]
pub struct Delivered {
    /// Your background commands that finished since your last call, oldest first; each result
    /// is shown once.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub background_results: Vec<BackgroundResult>,
    /// How many more finished; they come with your next call.
    #[serde(skip_serializing_if = "is_zero")]
    pub more_background_results: usize,
    /// What to do next, e.g. not to poll for a command that runs in the background.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guidance: Option<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A tool's structured answer: its own fields and [`Delivered`]. Used for the output schemas;
/// answers are built as JSON objects and [`Delivered`] merged in.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Answer<T> {
    /// The tool's own fields.
    #[serde(flatten)]
    pub body: T,
    /// Results and guidance.
    #[serde(flatten)]
    pub delivered: Delivered,
}
