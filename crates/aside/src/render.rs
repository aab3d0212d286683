//! Human-readable renderings of API records for the terminal, and the helpers every front end
//! prints with.

use std::io::Write;

use aside_proto::{LogEntry, LogStream, Notification, ProcessInfo, RunResult};
use jiff::Timestamp;
use jiff::tz::TimeZone;

pub use aside_core::present::{duration, outcome, result_outcome};

/// Local wall-clock time, `2026-11-21 15:04:05`.
pub fn time(t: Timestamp) -> String {
    t.to_zoned(TimeZone::system())
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// [`outcome`] of a process's latest run.
pub fn process_outcome(p: &ProcessInfo) -> String {
    outcome(
        p.status,
        p.exit_code,
        p.signal.as_deref(),
        p.stopped_by.as_deref(),
    )
}

/// The `status` table.
pub fn table(procs: &[ProcessInfo]) -> String {
    let header = [
        "ID", "NAME", "OWNER", "STATUS", "PID", "EXIT", "STARTED", "ENDED", "DURATION", "COMMAND",
    ];
    let rows: Vec<[String; 10]> = procs
        .iter()
        .map(|p| {
            [
                p.id.to_string(),
                p.reference(),
                match &p.team {
                    Some(t) => format!("{}@{t}", p.owner),
                    None => p.owner.clone(),
                },
                match &p.unrecorded {
                    // Ended, but the result is not in the database yet (a full disk).
                    Some(_) => format!("{} (ended, unrecorded)", p.status),
                    None => match (&p.job, p.status) {
                        (Some(j), aside_proto::Status::Queued) => match &j.reason {
                            Some(r) => format!("queued ({r})"),
                            None => "queued".into(),
                        },
                        _ => p.status.to_string(),
                    },
                },
                p.pid.map_or("-".into(), |v| v.to_string()),
                match (p.exit_code, &p.signal) {
                    (Some(c), _) => c.to_string(),
                    (None, Some(s)) => s.clone(),
                    _ => "-".into(),
                },
                time(p.started_at),
                p.ended_at.map_or("-".into(), time),
                duration(p.duration_ms),
                command_cell(p),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate().take(9) {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        for (i, c) in cells.iter().enumerate() {
            if i == 9 {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for r in &rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// A process's restart count, with why restarts stopped when its policy no longer applies
/// (`2 (exhausted)`, `1 (disabled)`), as the dashboard shows it.
pub fn restarts(p: &ProcessInfo) -> String {
    match &p.autorestart {
        Some(a) if a.state != aside_proto::RestartState::Active => {
            format!("{} ({})", p.restarts, a.state.as_str())
        }
        _ => p.restarts.to_string(),
    }
}

/// The last `status` column: the command, its URL, and what the run last said it is doing.
fn command_cell(p: &ProcessInfo) -> String {
    let mut cell = p.command.replace('\n', " ");
    if let Some(u) = &p.url {
        cell.push_str(&format!("  [{u}]"));
    }
    if let Some(progress) = &p.progress {
        cell.push_str(&format!("  — {}", progress.text));
    }
    if let Some(j) = &p.job {
        cell.push_str(&format!("  [{} job {}", j.executor, j.id));
        if let Some(n) = &j.node {
            cell.push_str(&format!(" on {n}"));
        }
        if let Some(st) = &j.state {
            cell.push_str(&format!(", {st}"));
        }
        cell.push(']');
    }
    cell
}

/// agent-procs' one-line answer of `run`, `restart` and `up`: `NAME (id: ID, pid: PID[, URL])`
/// (the bare name, as agent-procs within its session; `status` shows `project/name`).
pub fn id_line(p: &ProcessInfo) -> String {
    let pid = p.pid.map_or("-".into(), |v| v.to_string());
    if let Some(j) = &p.job {
        return format!(
            "{} (id: {}, pid: {pid}, {} job {})",
            p.name, p.id, j.executor, j.id
        );
    }
    match &p.url {
        Some(url) => format!("{} (id: {}, pid: {pid}, {url})", p.name, p.id),
        None => format!("{} (id: {}, pid: {pid})", p.name, p.id),
    }
}

/// One log entry as a terminal line (without the newline).
pub fn entry(e: &LogEntry, with_stream: bool) -> String {
    match e {
        LogEntry::Line { stream, text, .. } => {
            if with_stream && *stream == LogStream::Stderr {
                format!("[stderr] {text}")
            } else {
                text.clone()
            }
        }
        LogEntry::Elided { bytes, .. } => {
            format!("[aside] … {bytes} bytes elided by the log cap …")
        }
    }
}

/// A result as a compact block: headline, command, output tail.
pub fn result(r: &RunResult) -> String {
    let mut out = format!(
        "{} {} in {} — run {}\n  $ {}\n",
        r.name,
        outcome(
            r.status,
            r.exit_code,
            r.signal.as_deref(),
            r.stopped_by.as_deref()
        ),
        duration(r.duration_ms),
        r.run_id,
        r.command
    );
    if let Some(e) = &r.error {
        out.push_str(&format!("  error: {e}\n"));
    }
    let text = if r.output.tail.is_empty() {
        &r.output.head
    } else {
        &r.output.tail
    };
    let lines: Vec<&str> = text.lines().collect();
    let shown = &lines[lines.len().saturating_sub(10)..];
    if r.output.elided_bytes > 0 || lines.len() > shown.len() {
        out.push_str(&format!(
            "  … ({} bytes of output; `aside logs {} --streams both` shows more)\n",
            r.output.stdout_bytes + r.output.stderr_bytes,
            r.name
        ));
    }
    for l in shown {
        out.push_str(&format!("  │ {l}\n"));
    }
    out
}

/// An inbox notification.
pub fn notification(n: &Notification) -> String {
    format!("● [{}] {}", n.id, result(&n.result))
}

/// Bytes for people: `512 B`, `3.1 MiB` (binary units, one decimal).
pub fn bytes(n: u64) -> String {
    let mut v = n as f64;
    let mut unit = "B";
    for u in ["KiB", "MiB", "GiB"] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    if unit == "B" {
        format!("{n} B")
    } else {
        format!("{v:.1} {unit}")
    }
}

/// Prints `v` as pretty JSON and a newline on stdout. A closed stdout (`| head`) is not an
/// error worth reporting: the reader has gone.
pub fn print_json(v: &impl serde::Serialize) {
    let mut buf = serde_json::to_vec_pretty(v).unwrap_or_default();
    buf.push(b'\n');
    if let Err(e) = std::io::stdout().lock().write_all(&buf) {
        tracing::debug!("stdout: {e}");
    }
}

/// Prints an answer's body as it came, and a newline (a closed stdout: as [`print_json`]).
pub fn print_raw(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| writeln!(out)) {
        tracing::debug!("stdout: {e}");
    }
}

/// Reads an NDJSON answer batch by batch, handing each item to `each` and flushing stdout
/// after each batch (so a person sees lines as they come). Errors: the stream broke or an item
/// does not parse as `T`.
pub async fn read_ndjson<T: serde::de::DeserializeOwned>(
    resp: hyper::Response<hyper::body::Incoming>,
    mut each: impl FnMut(&T),
) -> crate::client::Result<()> {
    let mut reader = crate::client::NdjsonReader::new(resp);
    let mut out = std::io::stdout();
    while let Some(batch) = reader.next_batch::<T>().await? {
        batch.iter().for_each(&mut each);
        if let Err(e) = out.flush() {
            tracing::debug!("stdout: {e}");
        }
    }
    Ok(())
}
