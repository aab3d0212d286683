// The aside dashboard: a live table from the daemon's event stream (no polling), a detail
// pane with a followed log tail, the result, the run history and the owner's pending results.
// Every change is batched into one animation frame, so a flood of events or log lines costs
// one DOM update per frame. Served by the daemon with the assets embedded in its binary.
'use strict';

const $ = (id) => document.getElementById(id);
const LIVE = new Set(['queued', 'starting', 'running', 'ready']);
const FAILED = new Set(['failed', 'timed_out', 'abandoned']);
const MAX_LOG_LINES = 5000;
const COLUMNS = ['name', 'cmd', 'pid', 'owner', 'team', 'project', 'status', 'started', 'ended',
  'duration', 'restarts', 'cpu', 'mem'];

const S = {
  procs: new Map(),      // id → ProcessInfo
  rows: new Map(),       // id → { tr, cells }
  stats: new Map(),      // id → ProcessStats
  dirty: new Set(),      // ids whose row changed since the last frame
  options: { owner: new Set(), team: new Set(), project: new Set() },
  selected: null,
  runOfSelected: null,
  who: null,
  loaded: false,
  events: null,
  frame: false,
  filtersChanged: false,
  log: { ctl: null, queue: [], lines: 0 },
  tab: 'logs',
};

// The event kinds this page knows (each run event carries the process after the change).
const KNOWN_EVENTS = ['run_queued', 'run_started', 'run_ready', 'run_progress', 'run_exited', 'restarts_exhausted', 'notification_created', 'notification_acked'];

// ---------- helpers ----------

async function api(method, path, body) {
  const init = { method, credentials: 'same-origin', headers: { 'aside-protocol': '1' } };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  let data = null;
  try { data = await resp.json(); } catch (_) { /* not JSON */ }
  if (!resp.ok) {
    const err = new Error((data && data.error && data.error.message) || `${resp.status} ${resp.statusText}`);
    err.status = resp.status;
    throw err;
  }
  return { data, headers: resp.headers };
}

const enc = encodeURIComponent;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? '' : String(c)));
  return e;
}

function time(t) {
  if (!t) return '–';
  const d = new Date(t);
  const now = new Date();
  const hms = d.toLocaleTimeString([], { hour12: false });
  return d.toDateString() === now.toDateString() ? hms : `${d.toISOString().slice(0, 10)} ${hms}`;
}

function duration(ms) {
  if (ms == null) return '–';
  const s = Math.floor(ms / 1000);
  if (s < 60) return ms < 10000 ? `${(ms / 1000).toFixed(1)}s` : `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  return `${h}h${String(m % 60).padStart(2, '0')}m`;
}

function bytes(n) {
  if (n == null) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function liveDuration(p) {
  return LIVE.has(p.status) ? Date.now() - new Date(p.started_at).getTime() : p.duration_ms;
}

function reference(p) { return p.project ? `${p.project}/${p.name}` : p.name; }

function setConn(state, text) {
  const c = $('conn');
  c.dataset.state = state;
  c.textContent = text;
}

function banner(text) {
  const b = $('banner');
  b.hidden = !text;
  b.textContent = text || '';
}

function schedule() {
  if (!S.frame) {
    S.frame = true;
    requestAnimationFrame(flush);
  }
}

// ---------- the table ----------

function upsert(p) {
  if (!p || !p.id) return;
  S.procs.set(p.id, p);
  S.dirty.add(p.id);
  for (const k of ['owner', 'team', 'project']) {
    const v = p[k];
    if (v && !S.options[k].has(v)) {
      S.options[k].add(v);
      $(`f-${k}`).append(el('option', { value: v }, v));
    }
  }
  schedule();
}

function makeRow(id) {
  const tr = el('tr', { 'data-id': id });
  const cells = {};
  for (const c of COLUMNS) {
    const td = el('td');
    if (c === 'cmd') td.className = 'cmd';
    if (['duration', 'restarts', 'cpu', 'mem'].includes(c)) td.className = 'num';
    cells[c] = td;
    tr.append(td);
  }
  tr.addEventListener('click', () => select(id));
  // Newest first: a new process is newer than every row shown.
  $('rows').prepend(tr);
  const row = { tr, cells };
  S.rows.set(id, row);
  return row;
}

function setText(td, text) {
  if (td.textContent !== text) td.textContent = text;
}

// A cluster job as one phrase: `slurm job 12 on node1, RUNNING`.
function jobText(j) {
  return `${j.executor} job ${j.id}${j.node ? ` on ${j.node}` : ''}${j.state ? `, ${j.state}` : ''}${j.reason ? ` (${j.reason})` : ''}`;
}

function renderRow(id) {
  const p = S.procs.get(id);
  const row = S.rows.get(id) || makeRow(id);
  const c = row.cells;
  setText(c.name, reference(p));
  let cmd = p.url ? `${p.command}  → ${p.url}` : p.command;
  // What the run last said it is doing (`aside progress` inside it).
  if (p.progress) cmd += `  — ${p.progress.text}`;
  if (p.job) cmd += `  [${jobText(p.job)}]`;
  setText(c.cmd, cmd);
  c.cmd.title = cmd;
  setText(c.pid, p.pid == null ? '–' : String(p.pid));
  setText(c.owner, p.owner);
  setText(c.team, p.team || '–');
  setText(c.project, p.project || '–');
  // A run that ended while its result could not be recorded (a full disk) says so.
  setText(c.status, p.unrecorded ? `${p.status} · ended, not recorded yet` : p.status);
  c.status.className = `status st-${p.status}`;
  c.status.title = p.unrecorded || '';
  setText(c.started, time(p.started_at));
  setText(c.ended, time(p.ended_at));
  setText(c.duration, duration(liveDuration(p)));
  const ar = p.autorestart;
  setText(c.restarts, ar && ar.state && ar.state !== 'active' ? `${p.restarts} (${ar.state})` : String(p.restarts));
  renderStats(id);
  row.tr.classList.toggle('selected', id === S.selected);
  row.tr.hidden = !matches(p);
}

function renderStats(id) {
  const row = S.rows.get(id);
  const p = S.procs.get(id);
  if (!row || !p) return;
  const s = LIVE.has(p.status) ? S.stats.get(id) : null;
  setText(row.cells.cpu, s ? `${s.cpu_percent.toFixed(1)}%` : '–');
  setText(row.cells.mem, s ? bytes(s.memory_bytes) : '–');
  row.cells.mem.title = s ? `${s.tasks} processes in its tree` : '';
}

function matches(p) {
  const q = $('search').value.trim().toLowerCase();
  for (const k of ['owner', 'team', 'project']) {
    const want = $(`f-${k}`).value;
    if (want && p[k] !== want) return false;
  }
  const st = $('f-status').value;
  if (st === 'live' && !LIVE.has(p.status)) return false;
  if (st === 'ended' && LIVE.has(p.status)) return false;
  if (st === 'failed' && !FAILED.has(p.status)) return false;
  if (q) {
    const hay = [reference(p), p.command, p.owner, p.team, p.project, p.status, p.pid, p.id, p.url]
      .filter((x) => x != null).join(' ').toLowerCase();
    if (!hay.includes(q)) return false;
  }
  return true;
}

function flush() {
  S.frame = false;
  for (const id of S.dirty) renderRow(id);
  const selectedChanged = S.dirty.has(S.selected);
  S.dirty.clear();
  if (S.filtersChanged) {
    S.filtersChanged = false;
    for (const [id, row] of S.rows) row.tr.hidden = !matches(S.procs.get(id));
  }
  let live = 0, queued = 0, failed = 0, shown = 0;
  for (const [id, p] of S.procs) {
    // Waiting on a cluster's scheduler is not running yet.
    if (p.status === 'queued') queued++;
    else if (LIVE.has(p.status)) live++;
    if (FAILED.has(p.status)) failed++;
    if (!S.rows.get(id).tr.hidden) shown++;
  }
  const waiting = queued ? ` · ${queued} queued` : '';
  $('counts').textContent = `${live} running${waiting} · ${failed} failed · ${S.procs.size} shown`;
  const empty = $('empty');
  if (!S.loaded) {
    empty.hidden = false;
  } else if (S.procs.size === 0) {
    empty.hidden = false;
    empty.replaceChildren('Nothing is running. Start a command with ', el('code', {}, 'aside run -- make test'),
      ' (or from an agent): it appears here at once.');
  } else if (shown === 0) {
    empty.hidden = false;
    empty.textContent = 'No process matches the filters.';
  } else {
    empty.hidden = true;
  }
  if (selectedChanged) renderDetail();
}

// Durations of live processes advance with the clock (local; nothing is fetched).
setInterval(() => {
  for (const [id, p] of S.procs) {
    if (LIVE.has(p.status)) setText(S.rows.get(id).cells.duration, duration(liveDuration(p)));
  }
}, 1000);

// ---------- streams from the daemon ----------

async function loadList() {
  const all = $('f-all').checked ? '?all=true' : '';
  const { data, headers } = await api('GET', `/v1/processes${all}`);
  for (const p of data) upsert(p);
  return headers.get('aside-last-event');
}

function openEvents(since) {
  if (S.events) S.events.close();
  const es = new EventSource(since != null ? `/v1/events?since=${enc(since)}` : '/v1/events');
  S.events = es;
  let stopped = null; // why the daemon said it stopped, until a daemon answers again
  es.onopen = () => { stopped = null; setConn('live', 'live'); banner(''); };
  es.onerror = () => {
    if (stopped && es.readyState !== EventSource.CLOSED) {
      setConn('lost', 'daemon stopped');
      banner(stopped);
    } else if (es.readyState === EventSource.CLOSED) {
      setConn('lost', 'disconnected');
      banner('The daemon refused the event stream (token revoked?). Reload the page, or open the address `aside web` prints.');
    } else {
      setConn('lost', 'reconnecting…');
      banner('Lost the connection to the daemon: reconnecting. What you see may be out of date.');
    }
  };
  // Every event that carries a process (run started, ready, exited; a result read) carries
  // it as it stands after the change: the row follows it, an exit by itself included.
  const onEvent = (m) => {
    let ev;
    try { ev = JSON.parse(m.data); } catch (_) { console.warn('aside: an unreadable event', m.data); return; }
    if (ev.data && ev.data.process) upsert(ev.data.process);
    if (ev.kind === 'notification_created' || ev.kind === 'notification_acked') {
      const p = S.procs.get(S.selected);
      if (p && ev.owner === p.owner && S.tab === 'inbox') loadTab();
    }
  };
  for (const kind of KNOWN_EVENTS) es.addEventListener(kind, onEvent);
  // The daemon's last word before it stops: why. The browser keeps trying; a daemon serving
  // this address again (`aside web`) resumes the stream after the last event seen.
  es.addEventListener('daemon_stopping', (m) => {
    let why = {};
    try { why = JSON.parse(m.data); } catch (_) { console.warn('aside: an unreadable event', m.data); }
    const reason = why.reason === 'signal' ? `it received ${why.signal}`
      : why.reason === 'requested' ? 'it was asked to (aside daemon stop)'
      : why.reason === 'idle' ? 'it was idle' : (why.reason || 'no reason given');
    stopped = `The daemon stopped: ${reason}. Run \`aside web\` to bring it back; this page reconnects by itself.`;
    setConn('lost', 'daemon stopped');
    banner(stopped);
  });
  // A newer daemon's kinds arrive as plain messages here: said, and the page goes on.
  es.onmessage = (m) => console.warn('aside: an event this page does not know', m.data);
}

function openStats() {
  const es = new EventSource('/v1/stats?every_ms=2000');
  es.addEventListener('stats', (e) => {
    S.stats.clear();
    for (const s of JSON.parse(e.data)) S.stats.set(s.id, s);
    for (const id of S.rows.keys()) renderStats(id);
  });
}

async function start() {
  try {
    S.who = (await api('GET', '/v1/whoami')).data;
    $('who').textContent = `you: ${S.who.owner}${S.who.team ? '@' + S.who.team : ''}${S.who.read_only ? ' (read-only)' : ''}`;
    const seq = await loadList();
    S.loaded = true;
    schedule();
    // For benchmarks (bench/run): the first frame that shows the listing.
    requestAnimationFrame(() => requestAnimationFrame(() => performance.mark('aside:first-paint')));
    openEvents(seq);
    openStats();
  } catch (e) {
    S.loaded = true;
    setConn('lost', 'error');
    $('empty').textContent = `Cannot load the processes: ${e.message}`;
    banner(e.status === 401 ? 'This page has no valid token: run `aside web` and open the address it prints.' : `Error: ${e.message}`);
  }
}

// ---------- the detail pane ----------

function select(id) {
  const before = S.selected;
  S.selected = id;
  if (before && S.rows.get(before)) S.rows.get(before).tr.classList.remove('selected');
  if (!id) {
    $('detail').hidden = true;
    stopLog();
    return;
  }
  S.rows.get(id).tr.classList.add('selected');
  $('detail').hidden = false;
  $('confirm').hidden = true;
  $('d-action').textContent = '';
  S.runOfSelected = null;
  renderDetail();
  loadTab();
}

function renderDetail() {
  const p = S.procs.get(S.selected);
  if (!p) return;
  $('d-name').textContent = reference(p);
  $('d-status').textContent = p.unrecorded ? `${p.status} · ${p.unrecorded}` : p.status;
  $('d-status').className = `status st-${p.status}`;
  const meta = $('d-meta');
  const rows = [
    ['id', p.id], ['command', p.command], ['cwd', p.cwd], ['pid', p.pid], ['owner', p.owner],
    ['team', p.team], ['project', p.project], ['url', p.url], ['started', time(p.started_at)],
    ['ended', p.ended_at ? time(p.ended_at) : null], ['exit', p.exit_code], ['signal', p.signal],
    ['restarts', p.restarts], ['autorestart', p.autorestart ? `${p.autorestart.mode}, ${p.autorestart.state}` : null],
    ['stopped by', p.stopped_by], ['error', p.error], ['description', p.description],
    ['progress', p.progress ? `${p.progress.text} (${time(p.progress.at)})` : null],
    ['job', p.job ? jobText(p.job) : null],
  ];
  const dl = el('dl', { class: 'kv' });
  for (const [k, v] of rows) {
    if (v == null || v === '') continue;
    dl.append(el('dt', {}, k), el('dd', {}, String(v)));
  }
  meta.replaceChildren(dl);
  const live = LIVE.has(p.status);
  const ro = S.who && S.who.read_only;
  $('b-stop').disabled = !live || ro;
  $('b-restart').disabled = ro;
  $('b-stop').title = ro ? 'read-only token' : '';
  if (!live) $('b-kill').hidden = true;
  // A new run (a restart): follow its log.
  if (S.runOfSelected !== p.run_id) {
    const first = S.runOfSelected === null;
    S.runOfSelected = p.run_id;
    if (!first && S.tab === 'logs') openLog();
    if (!first && S.tab !== 'logs') loadTab();
  } else if (!live && S.tab === 'result') {
    loadTab();
  }
}

async function act(label, path, body) {
  const p = S.procs.get(S.selected);
  if (!p) return;
  $('d-action').textContent = `${label}…`;
  try {
    const { data } = await api('POST', `/v1/processes/${enc(p.id)}/${path}`, body);
    upsert(data);
    $('d-action').textContent = `${label}: done (${data.status})`;
  } catch (e) {
    $('d-action').textContent = `${label} failed: ${e.message}`;
  } finally {
    $('b-kill').hidden = true;
  }
}

function wireActions() {
  $('b-stop').addEventListener('click', () => { $('confirm').hidden = false; });
  $('b-stop-no').addEventListener('click', () => { $('confirm').hidden = true; });
  $('b-stop-yes').addEventListener('click', () => {
    $('confirm').hidden = true;
    $('b-kill').hidden = false;
    act('stopping (SIGTERM, then SIGKILL after the grace)', 'stop', {});
  });
  $('b-kill').addEventListener('click', () => act('killing', 'stop', { signal: 'KILL' }));
  $('b-restart').addEventListener('click', () => act('restarting', 'restart', {}));
  $('d-close').addEventListener('click', () => select(null));
  for (const t of document.querySelectorAll('.tab')) {
    t.addEventListener('click', () => {
      S.tab = t.dataset.tab;
      for (const o of document.querySelectorAll('.tab')) o.classList.toggle('active', o === t);
      loadTab();
    });
  }
  $('l-stream').addEventListener('change', () => openLog());
  $('l-follow').addEventListener('change', () => openLog());
  const refilter = () => { S.filtersChanged = true; schedule(); };
  for (const id of ['search', 'f-owner', 'f-team', 'f-project', 'f-status']) {
    $(id).addEventListener('input', refilter);
  }
  $('f-all').addEventListener('change', () => loadList().catch((e) => banner(e.message)));
  document.addEventListener('keydown', (e) => {
    if (e.key === '/' && document.activeElement !== $('search')) { e.preventDefault(); $('search').focus(); }
    if (e.key === 'Escape') select(null);
  });
}

function loadTab() {
  for (const t of ['logs', 'result', 'history', 'inbox']) $(`t-${t}`).hidden = t !== S.tab;
  if (S.tab !== 'logs') stopLog();
  const p = S.procs.get(S.selected);
  if (!p) return;
  if (S.tab === 'logs') openLog();
  if (S.tab === 'result') loadResult(p);
  if (S.tab === 'history') loadHistory(p);
  if (S.tab === 'inbox') loadInbox(p);
}

function resultView(r) {
  const dl = el('dl', { class: 'kv' });
  const rows = [['status', r.status], ['exit code', r.exit_code], ['signal', r.signal],
    ['started', time(r.started_at)], ['ended', time(r.ended_at)], ['duration', duration(r.duration_ms)],
    ['stopped by', r.stopped_by], ['error', r.error],
    ['output', `${bytes(r.output.stdout_bytes)} stdout, ${bytes(r.output.stderr_bytes)} stderr`],
    ['elided', r.output.elided_bytes ? bytes(r.output.elided_bytes) : null], ['run', r.run_id]];
  for (const [k, v] of rows) if (v != null && v !== '') dl.append(el('dt', {}, k), el('dd', {}, String(v)));
  const out = el('div', {}, dl);
  if (r.output.head) out.append(el('h4', {}, 'head'), el('pre', {}, r.output.head));
  if (r.output.tail) out.append(el('h4', {}, 'tail'), el('pre', {}, r.output.tail));
  return out;
}

async function loadResult(p) {
  const pane = $('t-result');
  pane.replaceChildren(el('div', { class: 'state' }, 'Loading the result…'));
  try {
    const { data } = await api('GET', `/v1/processes/${enc(p.id)}/result`);
    pane.replaceChildren(resultView(data));
  } catch (e) {
    pane.replaceChildren(el('div', { class: 'state' }, e.status === 409
      ? 'Still running: its result appears here when it ends.' : `Cannot load the result: ${e.message}`));
  }
}

async function loadHistory(p) {
  const pane = $('t-history');
  pane.replaceChildren(el('div', { class: 'state' }, 'Loading the runs…'));
  try {
    const { data } = await api('GET', `/v1/processes/${enc(p.id)}/history`);
    if (!data.length) {
      pane.replaceChildren(el('div', { class: 'state' }, 'No run has ended yet.'));
      return;
    }
    const t = el('table', {}, el('thead', {}, el('tr', {}, ...['run', 'status', 'exit', 'started', 'duration', 'stopped by'].map((h) => el('th', {}, h)))));
    const body = el('tbody');
    for (const r of data) {
      body.append(el('tr', {}, el('td', {}, r.run_id.slice(-8)), el('td', { class: `status st-${r.status}` }, r.status),
        el('td', {}, r.exit_code ?? r.signal ?? '–'), el('td', {}, time(r.started_at)),
        el('td', { class: 'num' }, duration(r.duration_ms)), el('td', {}, r.stopped_by || '–')));
    }
    t.append(body);
    pane.replaceChildren(t);
  } catch (e) {
    pane.replaceChildren(el('div', { class: 'state' }, `Cannot load the runs: ${e.message}`));
  }
}

async function loadInbox(p) {
  const pane = $('t-inbox');
  pane.replaceChildren(el('div', { class: 'state' }, 'Loading…'));
  try {
    const { data } = await api('GET', `/v1/owners/${enc(p.owner)}/inbox`);
    const n = data.notifications;
    if (!n.length) {
      pane.replaceChildren(el('div', { class: 'state' }, `${p.owner} has no pending results.`));
      return;
    }
    const list = el('div', {}, el('p', {}, `${n.length} result(s) ${p.owner} has not read yet:`));
    for (const x of n) {
      list.append(el('details', {}, el('summary', {}, `${x.result.name} — ${x.result.status}, ended ${time(x.result.ended_at)}`), resultView(x.result)));
    }
    pane.replaceChildren(list);
  } catch (e) {
    pane.replaceChildren(el('div', { class: 'state' }, `Cannot read ${p.owner}'s pending results: ${e.message}`));
  }
}

// ---------- the log tail ----------

function stopLog() {
  if (S.log.ctl) S.log.ctl.abort();
  S.log.ctl = null;
  S.log.queue = [];
}

function logLine(entry) {
  if (entry.type === 'elided') return el('div', { class: 'gap' }, `… ${bytes(entry.bytes)} dropped by the log cap …`);
  if (entry.type === 'skipped') return el('div', { class: 'gap' }, '… lines skipped to keep up with the output (all of it is in `aside logs`) …');
  const d = document.createElement('div');
  if (entry.stream === 'stderr') d.className = 'err';
  else if (entry.stream === 'aside') d.className = 'note';
  d.textContent = entry.text;
  return d;
}

function flushLog() {
  S.log.frame = false;
  const box = $('log');
  let q = S.log.queue;
  S.log.queue = [];
  if (!q.length) return;
  if (q.length > MAX_LOG_LINES) q = q.slice(q.length - MAX_LOG_LINES);
  const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
  const frag = document.createDocumentFragment();
  for (const e of q) frag.append(logLine(e));
  box.append(frag);
  S.log.lines += q.length;
  let extra = box.childElementCount - MAX_LOG_LINES;
  while (extra-- > 0) box.firstChild.remove();
  // Keep following unless the reader scrolled up to read.
  if (atBottom) box.scrollTop = box.scrollHeight;
  $('l-state').textContent = `${S.log.lines} lines${S.log.lines > MAX_LOG_LINES ? ` (last ${MAX_LOG_LINES} kept)` : ''}`;
}

function queueLog(entries) {
  S.log.queue.push(...entries);
  if (!S.log.frame) {
    S.log.frame = true;
    requestAnimationFrame(flushLog);
  }
}

// A reader this far behind the output jumps to its tail instead of drawing every line: the
// page stays live under a flood, and the whole log is still on disk.
const LOG_BEHIND_MS = 1000;

async function openLog(keep) {
  stopLog();
  const p = S.procs.get(S.selected);
  if (!p) return;
  const box = $('log');
  if (keep !== true) {
    box.replaceChildren();
    S.log.lines = 0;
  }
  const ctl = new AbortController();
  S.log.ctl = ctl;
  const follow = $('l-follow').checked;
  const stream = $('l-stream').value;
  const url = `/v1/processes/${enc(p.id)}/logs?stream=${stream}&tail=${keep === true ? 100 : 500}${follow ? '&follow=true' : ''}`;
  $('l-state').textContent = 'loading…';
  try {
    const resp = await fetch(url, { credentials: 'same-origin', signal: ctl.signal });
    if (!resp.ok) {
      let msg = `${resp.status}`;
      try { msg = (await resp.json()).error.message; } catch (_) { /* keep the status */ }
      $('l-state').textContent = '';
      box.replaceChildren(el('div', { class: 'gap' }, `No log: ${msg}`));
      return;
    }
    if (!follow) {
      const data = await resp.json();
      queueLog(data.entries);
      if (!data.entries.length) box.replaceChildren(el('div', { class: 'gap' }, 'No output yet.'));
      return;
    }
    $('l-state').textContent = LIVE.has(p.status) ? 'following' : '';
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let rest = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      rest += decoder.decode(value, { stream: true });
      const parts = rest.split('\n');
      rest = parts.pop();
      const entries = [];
      for (const line of parts) if (line) entries.push(JSON.parse(line));
      queueLog(entries);
      const last = entries.length ? Date.parse(entries[entries.length - 1].ts) : NaN;
      if (Date.now() - last > LOG_BEHIND_MS && Date.now() - (S.log.skippedAt || 0) > 2 * LOG_BEHIND_MS) {
        S.log.skippedAt = Date.now();
        openLog(true);
        queueLog([{ type: 'skipped' }]);
        return;
      }
    }
    if (S.log.ctl === ctl) {
      requestAnimationFrame(() => {
        $('l-state').textContent = `${S.log.lines} lines · the run ended`;
        if (!S.log.lines) box.replaceChildren(el('div', { class: 'gap' }, 'It wrote no output.'));
      });
    }
  } catch (e) {
    if (e.name !== 'AbortError') $('l-state').textContent = `log stream lost: ${e.message}`;
  }
}

wireActions();
start();
