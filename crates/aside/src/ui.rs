//! `aside ui`: the terminal monitor (ratatui). The process table and the selected process's
//! log, both event-driven: the table from `/v1/events` (after one listing), CPU and memory from
//! the `/v1/stats` stream, the log from a follow read; nothing polls.
//!
//! Keys follow agent-procs' `ui`: `j`/`k` (or arrows) move, `x` stops the selected process
//! (SIGTERM, SIGKILL after its grace), `X` stops everything you may stop, `r` restarts, `e`
//! switches the log between stdout+stderr, stdout and stderr, `/` searches (Enter keeps the
//! filter, Esc clears it), space pauses the log, `q` (or Ctrl-C) quits.

use std::collections::{HashMap, VecDeque};

use aside_core::paths::StateDir;
use aside_proto::{
    LogEntry, LogStream, ProcessInfo, ProcessStats, Status, StopAllRequest, StopRequest,
    StreamFilter,
};
use clap::Args;
use ratatui::crossterm::event::{self, Event as TermEvent, KeyCode, KeyEvent, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState};
use tokio::sync::mpsc;

use crate::client::{Client, ClientError, Connectivity, Result, owner_or_human, read_sse};
use crate::render;

/// Lines of log kept for the pane.
const LOG_KEEP: usize = 5000;

/// `aside ui`.
#[derive(Debug, Args)]
pub struct UiArgs {
    /// Also list ended processes whose results were read.
    #[arg(long)]
    all: bool,
}

enum Msg {
    Snapshot(Vec<ProcessInfo>),
    Process(Box<ProcessInfo>),
    Stats(Vec<ProcessStats>),
    Log(u64, Vec<LogEntry>),
    LogEnded(u64),
    Key(KeyEvent),
    Redraw,
    Note(String),
    /// The daemon went away (why), or came back (empty).
    Away(String),
}

struct App {
    procs: HashMap<String, ProcessInfo>,
    stats: HashMap<String, ProcessStats>,
    selected: Option<String>,
    search: String,
    searching: bool,
    stream: StreamFilter,
    paused_at: Option<u64>,
    log: VecDeque<(LogStream, String)>,
    /// Lines received for the current log (the buffer keeps the last [`LOG_KEEP`]).
    log_total: u64,
    log_gen: u64,
    log_ended: bool,
    note: String,
    /// While the daemon is away: why, shown until it is back (other notes do not hide it).
    away: String,
    quit: bool,
    loaded: bool,
}

fn status_color(s: Status) -> Color {
    match s {
        Status::Queued => Color::Magenta,
        Status::Starting | Status::Running => Color::Blue,
        Status::Ready | Status::Completed | Status::CompletedEmpty => Color::Green,
        Status::Failed | Status::TimedOut | Status::Abandoned => Color::Red,
        Status::Stopped => Color::Yellow,
    }
}

impl App {
    /// The processes shown, newest first, after the search filter.
    fn visible(&self) -> Vec<&ProcessInfo> {
        let q = self.search.to_lowercase();
        let mut v: Vec<&ProcessInfo> = self
            .procs
            .values()
            .filter(|p| {
                q.is_empty()
                    || [
                        p.reference(),
                        p.command.clone(),
                        p.owner.clone(),
                        p.team.clone().unwrap_or_default(),
                        p.status.as_str().to_string(),
                    ]
                    .iter()
                    .any(|f| f.to_lowercase().contains(&q))
            })
            .collect();
        v.sort_by(|a, b| b.id.cmp(&a.id));
        v
    }

    fn selected_info(&self) -> Option<&ProcessInfo> {
        self.selected.as_ref().and_then(|id| self.procs.get(id))
    }

    /// Moves the selection by `delta` rows; returns whether it changed.
    fn step(&mut self, delta: isize) -> bool {
        let ids: Vec<String> = self.visible().iter().map(|p| p.id.to_string()).collect();
        if ids.is_empty() {
            return false;
        }
        let at = self
            .selected
            .as_ref()
            .and_then(|s| ids.iter().position(|i| i == s));
        let next = match at {
            None => 0,
            Some(i) => (i as isize + delta).clamp(0, ids.len() as isize - 1) as usize,
        };
        let changed = self.selected.as_ref() != Some(&ids[next]);
        self.selected = Some(ids[next].clone());
        changed
    }

    fn reset_log(&mut self) {
        self.log.clear();
        self.log_total = 0;
        self.log_gen += 1;
        self.log_ended = false;
        self.paused_at = None;
    }

    fn draw(&self, f: &mut ratatui::Frame) {
        let [top, bottom, foot] = Layout::vertical([
            Constraint::Percentage(45),
            Constraint::Min(5),
            Constraint::Length(1),
        ])
        .areas(f.area());
        let visible = self.visible();
        let header = Row::new(
            [
                "NAME", "PID", "OWNER", "TEAM", "PROJECT", "STATUS", "STARTED", "DURATION",
                "RESTARTS", "CPU", "MEM", "COMMAND",
            ]
            .map(|h| Cell::from(h).style(Style::new().add_modifier(Modifier::BOLD))),
        );
        let now = jiff::Timestamp::now();
        let rows = visible.iter().map(|p| {
            let live = !p.status.is_terminal();
            let duration = if live {
                now.duration_since(p.started_at).as_millis().max(0) as u64
            } else {
                p.duration_ms
            };
            let st = self.stats.get(p.id.as_str()).filter(|_| live);
            let mut cmd = match &p.url {
                Some(u) => format!("{}  → {u}", p.command),
                None => p.command.clone(),
            };
            // What the run last said comes first: a long command would hide it.
            if let Some(progress) = &p.progress {
                cmd = format!("{} · {cmd}", progress.text);
            }
            if let Some(j) = &p.job {
                let node = j
                    .node
                    .as_deref()
                    .map_or(String::new(), |n| format!(" on {n}"));
                let state = j
                    .state
                    .as_deref()
                    .map_or(String::new(), |s| format!(", {s}"));
                cmd = format!("{cmd}  [{} job {}{node}{state}]", j.executor, j.id);
            }
            Row::new(vec![
                Cell::from(p.reference()),
                Cell::from(p.pid.map_or("-".into(), |x| x.to_string())),
                Cell::from(p.owner.clone()),
                Cell::from(p.team.clone().unwrap_or_else(|| "-".into())),
                Cell::from(p.project.clone().unwrap_or_else(|| "-".into())),
                Cell::from(p.status.as_str()).style(Style::new().fg(status_color(p.status))),
                Cell::from(render::time(p.started_at)),
                Cell::from(render::duration(duration)),
                Cell::from(render::restarts(p)),
                Cell::from(st.map_or("-".into(), |s| format!("{:.1}%", s.cpu_percent))),
                Cell::from(st.map_or("-".into(), |s| render::bytes(s.memory_bytes))),
                Cell::from(cmd),
            ])
        });
        let widths = [
            Constraint::Length(18),
            Constraint::Length(7),
            Constraint::Length(10),
            Constraint::Length(8),
            Constraint::Length(9),
            Constraint::Length(15),
            Constraint::Length(19),
            Constraint::Length(9),
            Constraint::Length(14),
            Constraint::Length(7),
            Constraint::Length(10),
            Constraint::Min(10),
        ];
        let live = self
            .procs
            .values()
            .filter(|p| !p.status.is_terminal())
            .count();
        let title = if !self.loaded {
            " aside · loading… ".to_string()
        } else {
            format!(" aside · {live} running · {} shown ", visible.len())
        };
        let table = Table::new(rows, widths)
            .header(header)
            .block(Block::default().borders(Borders::ALL).title(title.clone()))
            .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
        let mut state = TableState::default();
        state.select(
            self.selected
                .as_ref()
                .and_then(|s| visible.iter().position(|p| &p.id == s)),
        );
        if self.loaded && visible.is_empty() {
            let empty = if self.procs.is_empty() {
                "Nothing is running. Start a command with `aside run -- make test`: it appears here at once."
            } else {
                "No process matches the search."
            };
            f.render_widget(
                Paragraph::new(empty).block(Block::default().borders(Borders::ALL).title(title)),
                top,
            );
        } else {
            f.render_stateful_widget(table, top, &mut state);
        }
        self.draw_log(f, bottom);
        let footer = if self.searching {
            Line::from(vec![
                Span::raw("/"),
                Span::raw(self.search.as_str()),
                Span::raw("▏"),
            ])
        } else {
            Line::from(vec![
                Span::styled(
                    "j/k move  x stop  X stop all  r restart  e stream  / search  space pause  q quit",
                    Style::new().fg(Color::DarkGray),
                ),
                Span::raw("  "),
                Span::styled(self.away.as_str(), Style::new().fg(Color::Yellow)),
                Span::raw(if self.away.is_empty() { "" } else { "  " }),
                Span::raw(self.note.as_str()),
            ])
        };
        f.render_widget(Paragraph::new(footer), foot);
    }

    fn draw_log(&self, f: &mut ratatui::Frame, area: ratatui::layout::Rect) {
        let Some(p) = self.selected_info() else {
            f.render_widget(
                Paragraph::new("Select a process (j/k) to follow its log.")
                    .block(Block::default().borders(Borders::ALL).title(" log ")),
                area,
            );
            return;
        };
        let stream = match self.stream {
            StreamFilter::All => "stdout+stderr",
            one => one.as_str(),
        };
        let state = match (self.paused_at, self.log_ended) {
            (Some(_), _) => "paused (space resumes)".to_string(),
            (None, true) => "run ended".to_string(),
            (None, false) => "following".to_string(),
        };
        let title = format!(
            " log · {} · {stream} · {state} · {} lines ",
            p.reference(),
            self.log_total
        );
        let height = area.height.saturating_sub(2) as usize;
        // Paused: the view stays where it was while lines keep arriving.
        let end_total = self.paused_at.unwrap_or(self.log_total);
        let first_total = self.log_total - self.log.len() as u64;
        let end = (end_total.saturating_sub(first_total) as usize).min(self.log.len());
        let start = end.saturating_sub(height);
        let lines: Vec<Line> = self
            .log
            .range(start..end)
            .map(|(s, text)| {
                let style = match s {
                    LogStream::Stderr => Style::new().fg(Color::Red),
                    LogStream::Aside => Style::new().fg(Color::Yellow),
                    LogStream::Stdout => Style::new(),
                };
                Line::styled(text.as_str(), style)
            })
            .collect();
        f.render_widget(
            Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(title)),
            area,
        );
    }
}

/// `aside ui`: runs until `q`. Errors: the daemon cannot be reached, or the terminal fails.
pub async fn ui(a: UiArgs, state: StateDir) -> Result<i32> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(ClientError::new(
            aside_proto::ErrorCode::InvalidRequest,
            "`aside ui` needs a terminal; without one, use `aside status`, `aside logs -f` or `aside events`",
        ));
    }
    let client = std::sync::Arc::new(Client::new(state, owner_or_human(None), true));
    // Fail before taking over the terminal when there is no daemon to show.
    let (snapshot, seq) = list(&client, a.all).await?;
    let (tx, mut rx) = mpsc::channel::<Msg>(1024);
    tell(&tx, Msg::Snapshot(snapshot)).await;
    // Events are few but must not be dropped: they queue unbounded and are forwarded.
    let (etx, mut erx) = mpsc::unbounded_channel::<Msg>();
    tokio::spawn(follow_events(client.clone(), seq, etx));
    let forward = tx.clone();
    tokio::spawn(async move {
        while let Some(m) = erx.recv().await {
            if forward.send(m).await.is_err() {
                return;
            }
        }
    });
    // Polled again and again: it must not start a daemon that was stopped.
    let stats = std::sync::Arc::new(client.never_starting());
    tokio::spawn(follow_stats(stats, tx.clone()));
    let keys = tx.clone();
    std::thread::spawn(move || {
        while let Ok(ev) = event::read() {
            let msg = match ev {
                TermEvent::Key(k) => Msg::Key(k),
                TermEvent::Resize(..) => Msg::Redraw,
                _ => continue,
            };
            if keys.blocking_send(msg).is_err() {
                return;
            }
        }
    });
    let mut terminal = ratatui::try_init().map_err(|e| {
        ClientError::new(
            aside_proto::ErrorCode::Internal,
            format!("cannot take over the terminal: {e}"),
        )
    })?;
    let mut app = App {
        procs: HashMap::new(),
        stats: HashMap::new(),
        selected: None,
        search: String::new(),
        searching: false,
        stream: StreamFilter::All,
        paused_at: None,
        log: VecDeque::new(),
        log_total: 0,
        log_gen: 0,
        log_ended: false,
        note: String::new(),
        away: String::new(),
        quit: false,
        loaded: false,
    };
    let mut log_task: Option<tokio::task::JoinHandle<()>> = None;
    let mut following: Option<(String, String, StreamFilter)> = None;
    // Redraws at most every 33 ms: a log flood costs one frame per batch, not one per line.
    let mut ticker = tokio::time::interval(std::time::Duration::from_millis(33));
    let mut dirty = true;
    let mut seconds = tokio::time::interval(std::time::Duration::from_secs(1));
    let outcome = loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some(msg) = msg else { break Ok(0) };
                handle(&mut app, msg, &client, &tx);
                while let Ok(m) = rx.try_recv() {
                    handle(&mut app, m, &client, &tx);
                }
                dirty = true;
            }
            _ = ticker.tick(), if dirty => {
                if let Err(e) = terminal.draw(|f| app.draw(f)) {
                    break Err(ClientError::new(aside_proto::ErrorCode::Internal, format!("cannot draw: {e}")));
                }
                dirty = false;
            }
            // Durations of live processes advance with the clock.
            _ = seconds.tick() => dirty = true,
        }
        if app.quit {
            break Ok(0);
        }
        // (Re)start the log follow when the selection, its run or the stream changed.
        let want = app
            .selected_info()
            .map(|p| (p.id.to_string(), p.run_id.to_string(), app.stream));
        if want != following {
            if let Some(t) = log_task.take() {
                t.abort();
            }
            app.reset_log();
            if let Some((id, _, stream)) = &want {
                log_task = Some(tokio::spawn(follow_log(
                    client.clone(),
                    id.clone(),
                    *stream,
                    app.log_gen,
                    tx.clone(),
                )));
            }
            following = want;
        }
    };
    ratatui::restore();
    outcome
}

fn handle(app: &mut App, msg: Msg, client: &std::sync::Arc<Client>, tx: &mpsc::Sender<Msg>) {
    match msg {
        Msg::Snapshot(list) => {
            for p in list {
                app.procs.insert(p.id.to_string(), p);
            }
            app.loaded = true;
            if app.selected.is_none() {
                app.step(0);
            }
        }
        Msg::Process(p) => {
            app.procs.insert(p.id.to_string(), *p);
            if app.selected.is_none() {
                app.step(0);
            }
        }
        Msg::Stats(s) => app.stats = s.into_iter().map(|s| (s.id.clone(), s)).collect(),
        Msg::Log(generation, entries) if generation == app.log_gen => {
            for e in entries {
                let line = match e {
                    LogEntry::Line { stream, text, .. } => (stream, text),
                    LogEntry::Elided { bytes: n, .. } => (
                        LogStream::Aside,
                        format!("… {} dropped by the log cap …", render::bytes(n)),
                    ),
                };
                app.log.push_back(line);
                app.log_total += 1;
            }
            while app.log.len() > LOG_KEEP {
                app.log.pop_front();
            }
        }
        Msg::LogEnded(generation) if generation == app.log_gen => app.log_ended = true,
        Msg::Log(..) | Msg::LogEnded(_) | Msg::Redraw => {}
        Msg::Note(n) => app.note = n,
        Msg::Away(why) => app.away = why,
        Msg::Key(k) => key(app, k, client, tx),
    }
}

fn key(app: &mut App, k: KeyEvent, client: &std::sync::Arc<Client>, tx: &mpsc::Sender<Msg>) {
    if k.kind != event::KeyEventKind::Press {
        return;
    }
    if k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL) {
        app.quit = true;
        return;
    }
    if app.searching {
        match k.code {
            KeyCode::Enter => app.searching = false,
            KeyCode::Esc => {
                app.searching = false;
                app.search.clear();
            }
            KeyCode::Backspace => {
                app.search.pop();
            }
            KeyCode::Char(c) => app.search.push(c),
            _ => {}
        }
        if !app
            .visible()
            .iter()
            .any(|p| app.selected.as_deref() == Some(p.id.as_str()))
        {
            app.selected = None;
            app.step(0);
        }
        return;
    }
    let selected = app
        .selected_info()
        .map(|p| (p.id.to_string(), p.reference()));
    match k.code {
        KeyCode::Char('q') => app.quit = true,
        KeyCode::Char('j') | KeyCode::Down => {
            app.step(1);
        }
        KeyCode::Char('k') | KeyCode::Up => {
            app.step(-1);
        }
        KeyCode::Char('/') => app.searching = true,
        KeyCode::Esc => app.search.clear(),
        KeyCode::Char('e') => {
            app.stream = match app.stream {
                StreamFilter::All => StreamFilter::Stdout,
                StreamFilter::Stdout => StreamFilter::Stderr,
                StreamFilter::Stderr => StreamFilter::All,
            }
        }
        KeyCode::Char(' ') => {
            app.paused_at = match app.paused_at {
                Some(_) => None,
                None => Some(app.log_total),
            }
        }
        KeyCode::Char(c @ ('x' | 'r')) => {
            if let Some((id, name)) = selected {
                let (verb, done) = if c == 'x' {
                    ("stop", "stopped")
                } else {
                    ("restart", "restarted")
                };
                app.note = format!("{verb}: {name}…");
                act(client, tx, name, id, c == 'x', done);
            }
        }
        KeyCode::Char('X') => {
            app.note = "stopping everything you may stop…".into();
            let (client, tx) = (client.clone(), tx.clone());
            tokio::spawn(async move {
                let r = client.stop_all(&StopAllRequest::default()).await;
                let note = match r {
                    Ok(r) => format!(
                        "stopped {}{}",
                        r.stopped.len(),
                        if r.refused.is_empty() {
                            String::new()
                        } else {
                            format!(", {} refused", r.refused.len())
                        }
                    ),
                    Err(e) => format!("stop all failed: {e}"),
                };
                tell(&tx, Msg::Note(note)).await;
            });
        }
        _ => {}
    }
}

/// Runs a stop or restart in the background and reports how it went in the footer.
fn act(
    client: &std::sync::Arc<Client>,
    tx: &mpsc::Sender<Msg>,
    name: String,
    id: String,
    stop: bool,
    done: &'static str,
) {
    let (client, tx) = (client.clone(), tx.clone());
    tokio::spawn(async move {
        let r = if stop {
            client.stop(&id, &StopRequest::default()).await
        } else {
            client.restart(&id).await
        };
        let note = match r {
            Ok(p) => {
                let note = format!("{name}: {done} ({})", p.status.as_str());
                tell(&tx, Msg::Process(Box::new(p))).await;
                note
            }
            Err(e) => format!("{name}: {e}"),
        };
        tell(&tx, Msg::Note(note)).await;
    });
}

/// Hands `m` to the UI loop. After `q` nobody receives, and there is nothing left to show.
async fn tell(tx: &mpsc::Sender<Msg>, m: Msg) {
    if tx.send(m).await.is_err() {
        tracing::trace!("the UI has quit");
    }
}

/// [`tell`] for the unbounded event channel.
fn tell_now(tx: &mpsc::UnboundedSender<Msg>, m: Msg) {
    if tx.send(m).is_err() {
        tracing::trace!("the UI has quit");
    }
}

/// The listing and the event sequence number it is at least as new as.
async fn list(client: &Client, all: bool) -> Result<(Vec<ProcessInfo>, Option<String>)> {
    let q = aside_proto::ListQuery {
        all,
        ..Default::default()
    };
    let resp = client.processes_response(&q).await?;
    let seq = resp
        .headers()
        .get("aside-last-event")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = crate::client::body_bytes(resp).await?;
    let list = serde_json::from_slice(&bytes).map_err(|e| {
        ClientError::new(
            aside_proto::ErrorCode::Internal,
            format!("unexpected listing: {e}"),
        )
    })?;
    Ok((list, seq))
}

/// Run events → table updates, from `since` on, across a daemon's stop and restart (said in
/// the footer; see [`crate::client::follow_events`]).
async fn follow_events(
    client: std::sync::Arc<Client>,
    since: Option<String>,
    tx: mpsc::UnboundedSender<Msg>,
) {
    let since = since.and_then(|s| s.parse().ok());
    let each = |_: &str, data: &str| match serde_json::from_str::<aside_proto::Event>(data) {
        Ok(e) => match e.process() {
            Some(p) => tx.send(Msg::Process(Box::new(p.clone()))).is_ok(),
            None => !tx.is_closed(),
        },
        Err(err) => {
            // A newer daemon's event: noted, and the view goes on.
            let note = format!("an event this aside does not know: {err}");
            tx.send(Msg::Note(note)).is_ok()
        }
    };
    let connectivity = |c: Connectivity| match c {
        Connectivity::Connected => {
            tell_now(&tx, Msg::Away(String::new()));
            tell_now(&tx, Msg::Note("connected to the daemon again".into()));
        }
        Connectivity::Stopped(why) => tell_now(
            &tx,
            Msg::Away(format!(
                "{why}: waiting for it to come back (`aside daemon start`)"
            )),
        ),
        Connectivity::Lost(e) => tell_now(
            &tx,
            Msg::Away(format!("lost the daemon ({e}): reconnecting")),
        ),
    };
    let q = aside_proto::EventsQuery {
        since,
        ..Default::default()
    };
    if let Err(e) = crate::client::follow_events(&client, q, each, connectivity).await {
        tell_now(&tx, Msg::Note(format!("events: {e}")));
    }
}

async fn follow_stats(client: std::sync::Arc<Client>, tx: mpsc::Sender<Msg>) {
    while !tx.is_closed() {
        if let Ok(resp) = client.stats_stream(2000).await {
            let read = read_sse(resp, |_, data| {
                if let Ok(s) = serde_json::from_str::<Vec<ProcessStats>>(data)
                    && tx.try_send(Msg::Stats(s)).is_err()
                {
                    // A busy UI skips a sample; the next comes in two seconds.
                    tracing::trace!("stats sample skipped");
                }
                !tx.is_closed()
            })
            .await;
            // A broken stream (the daemon went away) is tried again below.
            if let Err(e) = read {
                tracing::debug!("stats: {e}");
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

/// The selected process's log: its tail, then new lines as they come, until its run ends.
async fn follow_log(
    client: std::sync::Arc<Client>,
    id: String,
    stream: StreamFilter,
    generation: u64,
    tx: mpsc::Sender<Msg>,
) {
    let q = aside_proto::LogQuery {
        stream,
        tail: Some(500),
        ..Default::default()
    };
    let resp = match client.follow_logs(&id, &q).await {
        Ok(r) => r,
        Err(e) => {
            tell(&tx, Msg::Note(format!("log: {e}"))).await;
            return;
        }
    };
    let mut reader = crate::client::NdjsonReader::new(resp);
    loop {
        match reader.next_batch::<LogEntry>().await {
            Ok(Some(batch)) => {
                if !batch.is_empty() && tx.send(Msg::Log(generation, batch)).await.is_err() {
                    return;
                }
            }
            Ok(None) => break,
            // Said, not taken for the end of the run.
            Err(e) => {
                tell(&tx, Msg::Note(format!("log: {e}"))).await;
                break;
            }
        }
    }
    tell(&tx, Msg::LogEnded(generation)).await;
}
