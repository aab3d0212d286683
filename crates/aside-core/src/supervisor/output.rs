//! What runs printed: logs across a process's runs (with one cursor that names the run and the
//! byte offset), `follow` through restarts, and `wait` for an end or a matching line.

use std::time::Duration;

use aside_proto::{
    LogEntry, LogQuery, LogsResponse, RestartState, WaitOutcome, WaitQuery, WaitResponse,
};
use regex::Regex;
use tokio::sync::{mpsc, watch};

use crate::logs::{self, LineSplitter, LogReader};
use crate::store::ProcessRow;

use super::{Error, MAX_LINE_BYTES, Result, SAFETY_RECHECK, Supervisor, io_err};

impl Supervisor {
    /// The runs a log read spans, oldest first, as `(seq, run id)`: one run (`run` is a run id
    /// or `latest`), else every run of the process still kept.
    pub(super) fn log_runs(
        &self,
        row: &ProcessRow,
        run: Option<&str>,
    ) -> Result<Vec<(u32, String)>> {
        let all = self.store().runs_of(&row.info.id)?;
        match run {
            None => Ok(all),
            Some("latest") => Ok(vec![(row.seq, row.info.run_id.to_string())]),
            Some(r) => all
                .into_iter()
                .find(|(_, id)| id == r)
                .map(|x| vec![x])
                .ok_or_else(|| {
                    Error::NotFound(format!("run {r} is not a run of {:?}", row.info.name))
                }),
        }
    }

    /// Whether `reference` is the id of one of `row`'s runs (rather than the process's).
    pub(super) fn is_run_of(&self, row: &ProcessRow, reference: &str) -> bool {
        row.info.id != *reference
            && self
                .store()
                .runs_of(&row.info.id)
                .is_ok_and(|runs| runs.iter().any(|(_, id)| id == reference))
    }

    /// Whether process `process_id` may start another run by itself: a restart by its policy
    /// is due, or its files are watched.
    pub(super) fn may_run_again(&self, process_id: &str) -> bool {
        let restart_due = self
            .store()
            .find(process_id)
            .ok()
            .flatten()
            .and_then(|r| r.info.autorestart)
            .is_some_and(|a| a.state == RestartState::Active);
        restart_due || self.watches(process_id)
    }

    /// Reads a process's log once, across its runs in order (each run's log opens with what
    /// `aside` said of it, e.g. `[aside] restarted (exit 7, …)`), or one run's with `run` (see
    /// [`LogQuery`]; `follow` is ignored here, see [`Supervisor::follow`]). Cursors name the
    /// run and the position in it ([`log_cursor`]). Errors: unknown process or run, invalid
    /// grep regex.
    pub fn logs(&self, reference: &str, q: &LogQuery) -> Result<LogsResponse> {
        let row = self.find(reference)?;
        // A run id as the reference names that run.
        let named_run = self.is_run_of(&row, reference);
        let run = q.run.as_deref().or(named_run.then_some(reference));
        let runs = self.log_runs(&row, run)?;
        let grep = compile_grep(q.grep.as_deref())?;
        let (since_seq, since_pos) = split_cursor(q.since.unwrap_or(0));
        let mut entries = Vec::new();
        let mut cursor = q.since.unwrap_or(0);
        let mut last_run = row.info.run_id.to_string();
        for (seq, run_id) in runs.iter().filter(|(seq, _)| *seq >= since_seq) {
            let rd = self.run_dir(run_id);
            let from = if *seq == since_seq { since_pos } else { 0 };
            let (pieces, end) = match LogReader::new(&rd.log_dir()).read_from(from) {
                Ok(r) => r,
                // A run pruned or never started leaves no log: the next run goes on.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("cannot read the log in", &rd.log_dir())(e)),
            };
            let mut part = logs::pieces_to_entries(&pieces, q.stream, MAX_LINE_BYTES);
            for e in &mut part {
                relabel(e, *seq);
            }
            entries.extend(part);
            cursor = log_cursor(*seq, end);
            last_run = run_id.clone();
        }
        filter_entries(&mut entries, grep.as_ref(), q.head, q.tail);
        let last_done = self.done_rx(&last_run).is_none();
        let complete = if q.run.is_some() || run.is_some() {
            last_done
        } else {
            last_done && row.info.run_id == last_run && !self.may_run_again(&row.info.id)
        };
        Ok(LogsResponse {
            run_id: last_run.into(),
            entries,
            cursor,
            complete,
        })
    }

    /// Streams a process's log into `tx` as it grows, across runs: when a run ends its log is
    /// drained, then the next run's follows (a restart by policy or by a file watch), until
    /// the process has ended for good, or the receiver goes away. With `run`, that run only.
    /// `tail` applies to what exists when it starts. A failure along the way (the log cannot be
    /// read, the database fails) is sent as the last item, so the follow does not end as if the
    /// process had.
    pub async fn follow(
        &self,
        reference: &str,
        q: LogQuery,
        tx: mpsc::Sender<Result<LogEntry>>,
    ) -> Result<()> {
        let row = self.find(reference)?;
        let only = q.run.clone().or_else(|| {
            self.is_run_of(&row, reference)
                .then(|| reference.to_string())
        });
        let runs = self.log_runs(&row, only.as_deref())?;
        let grep = compile_grep(q.grep.as_deref())?;
        let (since_seq, since_pos) = split_cursor(q.since.unwrap_or(0));
        // With no cursor, the latest run is where a follow starts (`tail` reads back in it).
        let start = match q.since {
            Some(_) => runs.iter().find(|(s, _)| *s >= since_seq).cloned(),
            None => runs.last().cloned(),
        };
        let Some((mut seq, mut run_id)) = start else {
            return Ok(());
        };
        let mut pos = if seq == since_seq { since_pos } else { 0 };
        let process_id = row.info.id.clone();
        let me = self.clone();
        let mut events = self.subscribe_events();
        tokio::spawn(async move {
            let mut first = true;
            loop {
                let reader = LogReader::new(&me.run_dir(&run_id).log_dir());
                let mut log_rx = me.log_rx(&run_id);
                let mut done_rx = me.done_rx(&run_id);
                let mut splitter = LineSplitter::new(q.stream, MAX_LINE_BYTES);
                loop {
                    let ended = done_rx.as_ref().is_none_or(|d| *d.borrow());
                    let (pieces, end) = match reader.read_from(pos) {
                        Ok(r) => r,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Vec::new(), pos),
                        Err(e) => {
                            let e = format!("cannot read the log of run {run_id}: {e}");
                            tracing::warn!("follow: {e}");
                            if tx.send(Err(Error::Io(e))).await.is_err() {
                                tracing::debug!("follow: the reader left as well");
                            }
                            return;
                        }
                    };
                    pos = end;
                    let mut entries = splitter.feed(&pieces);
                    if ended {
                        entries.extend(splitter.flush());
                    }
                    filter_entries(
                        &mut entries,
                        grep.as_ref(),
                        None,
                        if first { q.tail } else { None },
                    );
                    first = false;
                    for mut e in entries {
                        relabel(&mut e, seq);
                        if tx.send(Ok(e)).await.is_err() {
                            return;
                        }
                    }
                    if ended {
                        break;
                    }
                    tokio::select! {
                        _ = changed(&mut log_rx) => {}
                        _ = changed_bool(&mut done_rx) => {}
                        _ = tx.closed() => return,
                        _ = tokio::time::sleep(SAFETY_RECHECK) => {}
                    }
                }
                if only.is_some() {
                    return;
                }
                // The next run of the process, now or once one starts; none to come: done.
                loop {
                    let runs = me.store().runs_of(&process_id);
                    let next = match runs {
                        Ok(runs) => runs.into_iter().find(|(s, _)| *s > seq),
                        Err(e) => {
                            tracing::warn!("follow of {process_id}: {e}");
                            if tx.send(Err(e.into())).await.is_err() {
                                tracing::debug!("follow: the reader left as well");
                            }
                            return;
                        }
                    };
                    if let Some((s, r)) = next {
                        (seq, run_id, pos) = (s, r, 0);
                        break;
                    }
                    if !me.may_run_again(&process_id) {
                        return;
                    }
                    tokio::select! {
                        _ = events.recv() => {}
                        _ = tx.closed() => return,
                        _ = tokio::time::sleep(SAFETY_RECHECK) => {}
                    }
                }
            }
        });
        Ok(())
    }

    /// Waits for a run to end (no `until`) or for a pattern in its output, seen in what was
    /// written before the call as well as after, on either stream. Errors: unknown process,
    /// invalid regex.
    pub async fn wait(&self, reference: &str, q: &WaitQuery) -> Result<WaitResponse> {
        let row = self.find(reference)?;
        let run_id = row.info.run_id.clone();
        let matcher = match &q.until {
            None => None,
            Some(p) if q.regex => {
                Some(Matcher::Regex(Regex::new(p).map_err(|e| {
                    Error::Invalid(format!("invalid regex {p:?}: {e}"))
                })?))
            }
            Some(p) => Some(Matcher::Plain(p.clone())),
        };
        let deadline = q
            .timeout_ms
            .map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms));
        let reader = LogReader::new(&self.run_dir(&run_id).log_dir());
        let mut log_rx = self.log_rx(&run_id);
        let mut done_rx = self.done_rx(&run_id);
        let mut splitter = LineSplitter::new(aside_proto::StreamFilter::All, MAX_LINE_BYTES);
        let mut cursor = 0;
        loop {
            let ended = done_rx.as_ref().is_none_or(|d| *d.borrow());
            if let Some(m) = &matcher {
                let (pieces, end) = reader
                    .read_from(cursor)
                    .map_err(|e| Error::Io(format!("cannot read the log of run {run_id}: {e}")))?;
                cursor = end;
                let found = splitter
                    .feed(&pieces)
                    .into_iter()
                    .filter_map(|e| match e {
                        LogEntry::Line { text, stream, .. }
                            if stream != aside_proto::LogStream::Aside =>
                        {
                            Some(text)
                        }
                        _ => None,
                    })
                    .chain(
                        splitter
                            .pending()
                            .filter(|(s, _)| *s != aside_proto::LogStream::Aside)
                            .map(|(_, t)| t),
                    )
                    .find(|t| m.is_match(t));
                if let Some(line) = found {
                    return self.wait_answer(&row.info.id, WaitOutcome::Matched, Some(line));
                }
            }
            if ended {
                let outcome = if matcher.is_some() {
                    WaitOutcome::ExitedWithoutMatch
                } else {
                    WaitOutcome::Exited
                };
                return self.wait_answer(&row.info.id, outcome, None);
            }
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let watch_logs = matcher.is_some();
            tokio::select! {
                _ = sleep => return self.wait_answer(&row.info.id, WaitOutcome::TimedOut, None),
                _ = changed(&mut log_rx), if watch_logs => {}
                _ = changed_bool(&mut done_rx) => {}
                _ = tokio::time::sleep(SAFETY_RECHECK), if watch_logs => {}
            }
        }
    }

    pub(super) fn wait_answer(
        &self,
        id: &str,
        outcome: WaitOutcome,
        line: Option<String>,
    ) -> Result<WaitResponse> {
        let process = self.find(id)?.info;
        let result = if process.status.is_terminal() {
            self.store().result(&process.run_id)?
        } else {
            None
        };
        Ok(WaitResponse {
            outcome,
            process,
            line,
            result,
        })
    }
}

pub(super) async fn changed(rx: &mut Option<watch::Receiver<u64>>) {
    match rx {
        Some(r) => {
            if r.changed().await.is_err() {
                // The run ended and its sender is gone: stop listening to it.
                *rx = None;
            }
        }
        None => std::future::pending().await,
    }
}

pub(super) async fn changed_bool(rx: &mut Option<watch::Receiver<bool>>) {
    match rx {
        Some(r) => {
            if r.changed().await.is_err() {
                *rx = None;
                // Sender dropped after sending `true`: the run ended.
            }
        }
        None => std::future::pending().await,
    }
}

pub(super) enum Matcher {
    Plain(String),
    Regex(Regex),
}

impl Matcher {
    fn is_match(&self, line: &str) -> bool {
        match self {
            Matcher::Plain(p) => line.contains(p.as_str()),
            Matcher::Regex(r) => r.is_match(line),
        }
    }
}

pub(super) fn compile_grep(grep: Option<&str>) -> Result<Option<Regex>> {
    grep.map(|g| {
        Regex::new(g).map_err(|e| Error::Invalid(format!("invalid --grep regex {g:?}: {e}")))
    })
    .transpose()
}

/// Bits of a log cursor that hold the position within a run (1 TiB of framed log); the bits
/// above hold the run's number. Run 0's cursors are plain positions.
pub(super) const RUN_SHIFT: u32 = 40;

/// The cursor of position `pos` in run number `seq` of a process.
pub fn log_cursor(seq: u32, pos: u64) -> u64 {
    (u64::from(seq) << RUN_SHIFT) | (pos & ((1 << RUN_SHIFT) - 1))
}

/// Inverse of [`log_cursor`]: `(run number, position)`.
pub fn split_cursor(cursor: u64) -> (u32, u64) {
    (
        (cursor >> RUN_SHIFT) as u32,
        cursor & ((1 << RUN_SHIFT) - 1),
    )
}

/// Makes an entry's run-local cursor name its run.
pub(super) fn relabel(e: &mut LogEntry, seq: u32) {
    match e {
        LogEntry::Line { cursor, .. } | LogEntry::Elided { cursor, .. } => {
            *cursor = log_cursor(seq, *cursor);
        }
    }
}

pub(super) fn filter_entries(
    entries: &mut Vec<LogEntry>,
    grep: Option<&Regex>,
    head: Option<usize>,
    tail: Option<usize>,
) {
    if let Some(re) = grep {
        entries.retain(|e| matches!(e, LogEntry::Line { text, .. } if re.is_match(text)));
    }
    if let Some(n) = head {
        entries.truncate(n);
    }
    if let Some(n) = tail {
        let skip = entries.len().saturating_sub(n);
        entries.drain(..skip);
    }
}
