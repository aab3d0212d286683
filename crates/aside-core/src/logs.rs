//! Capped, framed run logs: the shim writes them, everyone else reads them.
//!
//! A run's output is one append-only sequence of *records* in arrival order, each a 16-byte
//! header (`stream: u8`, 3 bytes zero, `len: u32 LE`, `unix_ns: i64 LE`) followed by `len` bytes
//! of raw output — bytes, never lines, so invalid UTF-8, `\r` progress bars and a 300 MB line
//! without a newline are all captured as they come. stdout and stderr are kept apart by the
//! stream byte and are readable interleaved by reading every record in order.
//!
//! The sequence is stored in *segment* files named `{pos:016x}-{data:016x}.seg`, where `pos` is
//! the position of the segment's first record in the whole sequence (framing included) and
//! `data` the number of output bytes before it. Positions are the *cursors* readers hand out.
//!
//! The log cap keeps the **head** (the first `cap / 2` bytes of output, exactly, in one segment
//! that is never deleted) and a rotating **tail** (segments of `cap / 8` bytes, the oldest deleted
//! while the tail holds more than `cap / 2`). A reader sees a deleted stretch as a gap and reports
//! the output bytes it held ([`Piece::Gap`]), never silently.
//!
//! A write that fails (a full disk) never leaves half a record: the segment is cut back to its
//! last whole record and closed, and the bytes that could not be written are skipped in both
//! counters, so they too read as a gap; the writer says how many once it can write again.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use aside_proto::{LogEntry, LogStream, OutputSummary, StreamFilter};
use jiff::Timestamp;

/// Bytes of framing before each record's data.
pub const HEADER_LEN: u64 = 16;
/// Default per-run log cap: 8 MiB.
pub const DEFAULT_LOG_CAP: u64 = 8 * 1024 * 1024;
/// Smallest accepted log cap: 1 KiB.
pub const MIN_LOG_CAP: u64 = 1024;

fn stream_byte(s: LogStream) -> u8 {
    match s {
        LogStream::Stdout => 1,
        LogStream::Stderr => 2,
        LogStream::Aside => 3,
    }
}

fn byte_stream(b: u8) -> Option<LogStream> {
    match b {
        1 => Some(LogStream::Stdout),
        2 => Some(LogStream::Stderr),
        3 => Some(LogStream::Aside),
        _ => None,
    }
}

fn segment_name(pos: u64, data: u64) -> String {
    format!("{pos:016x}-{data:016x}.seg")
}

fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".seg")?;
    let (a, b) = stem.split_once('-')?;
    Some((
        u64::from_str_radix(a, 16).ok()?,
        u64::from_str_radix(b, 16).ok()?,
    ))
}

struct OpenSegment {
    path: PathBuf,
    file: File,
    /// Bytes of whole records in the file.
    file_len: u64,
    data_len: u64,
    is_head: bool,
}

/// Appends records to a run's log directory, enforcing the cap. Used by the shim only.
pub struct LogWriter {
    dir: PathBuf,
    head_cap: u64,
    tail_cap: u64,
    seg_cap: u64,
    pos: u64,
    data: u64,
    cur: Option<OpenSegment>,
    /// Closed tail segments, oldest first: (path, output bytes).
    closed_tail: std::collections::VecDeque<(PathBuf, u64)>,
    stdout_bytes: u64,
    stderr_bytes: u64,
    /// Output bytes dropped because the log could not be written.
    dropped: u64,
    /// Dropped since the last note in the log about it.
    dropped_unnoted: u64,
    /// Failed writes since the last one that worked.
    failing: u64,
}

impl LogWriter {
    /// Creates the log directory (0700) and a writer with a cap of `cap` output bytes (at
    /// least [`MIN_LOG_CAP`]). Errors: the directory cannot be created.
    pub fn create(dir: &Path, cap: u64) -> io::Result<LogWriter> {
        {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let cap = cap.max(MIN_LOG_CAP);
        let head_cap = cap / 2;
        let tail_cap = cap - head_cap;
        Ok(LogWriter {
            dir: dir.to_path_buf(),
            head_cap,
            tail_cap,
            seg_cap: (tail_cap / 4).max(1),
            pos: 0,
            data: 0,
            cur: None,
            closed_tail: Default::default(),
            stdout_bytes: 0,
            stderr_bytes: 0,
            dropped: 0,
            dropped_unnoted: 0,
            failing: 0,
        })
    }

    /// Output bytes that could not be written (a full disk) and are missing from the log.
    pub fn dropped_bytes(&self) -> u64 {
        self.dropped
    }

    /// Writes that failed in a row since the last one that worked (0: the last one worked).
    pub fn failing_since_ok(&self) -> u64 {
        self.failing
    }

    /// Output bytes written to stdout so far (before the cap).
    pub fn stdout_bytes(&self) -> u64 {
        self.stdout_bytes
    }

    /// Output bytes written to stderr so far (before the cap).
    pub fn stderr_bytes(&self) -> u64 {
        self.stderr_bytes
    }

    /// Appends `bytes` from `stream`, stamped `ts`, splitting it where the head ends or a tail
    /// segment fills. Errors: the disk write failed; the bytes not written are dropped and
    /// counted (readers see a gap), and the caller keeps draining the pipe.
    pub fn write(&mut self, stream: LogStream, bytes: &[u8], ts: Timestamp) -> io::Result<()> {
        match stream {
            LogStream::Stdout => self.stdout_bytes += bytes.len() as u64,
            LogStream::Stderr => self.stderr_bytes += bytes.len() as u64,
            LogStream::Aside => {}
        }
        match self.append(stream, bytes, ts) {
            Ok(()) => {
                self.failing = 0;
                if self.dropped_unnoted > 0 {
                    let n = std::mem::take(&mut self.dropped_unnoted);
                    let line = format!(
                        "[aside] {n} bytes of output could not be written to the log (disk full?) and are missing\n"
                    );
                    if self.append(LogStream::Aside, line.as_bytes(), ts).is_err() {
                        self.dropped_unnoted += n;
                    }
                }
                Ok(())
            }
            Err(e) => {
                self.failing += 1;
                Err(e)
            }
        }
    }

    /// Writes whole records; on a failure cuts the open segment back to its last whole record,
    /// closes it, and skips the rest of `bytes` in both counters.
    fn append(&mut self, stream: LogStream, bytes: &[u8], ts: Timestamp) -> io::Result<()> {
        let ts_ns = ts.as_nanosecond() as i64;
        let mut rest = bytes;
        while !rest.is_empty() {
            let in_head = self.data < self.head_cap;
            if self.cur.is_none()
                && let Err(e) = self.open_segment(in_head)
            {
                self.skip(rest.len() as u64);
                return Err(e);
            }
            let Some(cur) = self.cur.as_mut() else {
                return Err(io::Error::other("log segment not open"));
            };
            let room = if cur.is_head {
                self.head_cap - self.data
            } else {
                self.seg_cap - cur.data_len
            };
            let take = rest.len().min(room as usize).min(u32::MAX as usize);
            let mut header = [0u8; HEADER_LEN as usize];
            header[0] = stream_byte(stream);
            header[4..8].copy_from_slice(&(take as u32).to_le_bytes());
            header[8..16].copy_from_slice(&ts_ns.to_le_bytes());
            let whole = cur.file_len;
            let written = cur
                .file
                .write_all(&header)
                .and_then(|()| cur.file.write_all(&rest[..take]));
            if let Err(e) = written {
                // No half record: cut back, close, and count what is missing as a gap.
                if let Err(cut) = cur.file.set_len(whole) {
                    tracing::debug!("cannot cut back {}: {cut}", cur.path.display());
                }
                self.close_segment();
                self.skip(rest.len() as u64);
                return Err(e);
            }
            cur.file_len += HEADER_LEN + take as u64;
            cur.data_len += take as u64;
            self.pos += HEADER_LEN + take as u64;
            self.data += take as u64;
            rest = &rest[take..];
            let full = if cur.is_head {
                self.data >= self.head_cap
            } else {
                cur.data_len >= self.seg_cap
            };
            if full {
                self.close_segment();
            }
        }
        Ok(())
    }

    /// Counts `n` output bytes as dropped: the next segment starts past them, a gap.
    fn skip(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        self.close_segment();
        self.pos += HEADER_LEN + n;
        self.data += n;
        self.dropped += n;
        self.dropped_unnoted += n;
    }

    /// Writes an `[aside] …` annotation line.
    pub fn annotate(&mut self, text: &str) -> io::Result<()> {
        let line = format!("[aside] {text}\n");
        self.write(LogStream::Aside, line.as_bytes(), Timestamp::now())
    }

    fn open_segment(&mut self, is_head: bool) -> io::Result<()> {
        let path = self.dir.join(segment_name(self.pos, self.data));
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&path)?;
        self.cur = Some(OpenSegment {
            path,
            file,
            file_len: 0,
            data_len: 0,
            is_head,
        });
        Ok(())
    }

    fn close_segment(&mut self) {
        let Some(seg) = self.cur.take() else { return };
        if seg.is_head {
            return;
        }
        self.closed_tail.push_back((seg.path, seg.data_len));
        let budget = self.tail_cap.saturating_sub(self.seg_cap);
        let mut held: u64 = self.closed_tail.iter().map(|(_, n)| n).sum();
        while held > budget {
            let Some((path, n)) = self.closed_tail.pop_front() else {
                break;
            };
            if let Err(e) = fs::remove_file(&path) {
                // The log holds more than its cap until the next rotation tries again.
                tracing::warn!("cannot drop old log segment {}: {e}", path.display());
            }
            held -= n;
        }
    }
}

#[derive(Debug, Clone)]
struct SegmentFile {
    path: PathBuf,
    pos: u64,
    data: u64,
}

fn list_segments(dir: &Path) -> io::Result<Vec<SegmentFile>> {
    let mut segs = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(segs),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if let Some((pos, data)) = name.to_str().and_then(parse_segment_name) {
            segs.push(SegmentFile {
                path: entry.path(),
                pos,
                data,
            });
        }
    }
    segs.sort_by_key(|s| s.pos);
    Ok(segs)
}

/// A stretch of raw output from one record.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Stream of the record.
    pub stream: LogStream,
    /// When the shim read it.
    pub ts: Timestamp,
    /// Position of `data[0]` in the record sequence.
    pub pos: u64,
    /// The bytes.
    pub data: Vec<u8>,
}

/// What a raw read yields, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// Output.
    Chunk(Chunk),
    /// Output removed by the log cap: `bytes` of output, ending at position `end`.
    Gap {
        /// Output bytes missing.
        bytes: u64,
        /// Position just after the gap.
        end: u64,
    },
}

/// Reads a run's log directory. Cheap to create; every read lists the segments afresh.
#[derive(Debug, Clone)]
pub struct LogReader {
    dir: PathBuf,
}

impl LogReader {
    /// A reader over `dir` (the run's `log/` directory; it may not exist yet).
    pub fn new(dir: &Path) -> LogReader {
        LogReader {
            dir: dir.to_path_buf(),
        }
    }

    /// Every complete record from position `since` on, with gaps, and the position after the
    /// last complete record (the next `since`). A record still being written is left for the
    /// next read. Errors: the directory cannot be listed or a segment read.
    pub fn read_from(&self, since: u64) -> io::Result<(Vec<Piece>, u64)> {
        let segs = list_segments(&self.dir)?;
        let mut pieces = Vec::new();
        let mut end = since;
        let mut prev: Option<(u64, u64)> = None; // (pos_end, data_end) of the previous segment
        for (i, seg) in segs.iter().enumerate() {
            if let Some((prev_pos_end, prev_data_end)) = prev
                && seg.pos > prev_pos_end
                && seg.pos > since
            {
                let bytes = seg.data.saturating_sub(prev_data_end);
                let bytes = if since > prev_pos_end {
                    bytes.min(seg.pos - since)
                } else {
                    bytes
                };
                pieces.push(Piece::Gap {
                    bytes,
                    end: seg.pos,
                });
                end = seg.pos;
            }
            let next_pos = segs.get(i + 1).map(|s| s.pos);
            let skip_body = next_pos.is_some_and(|p| p <= since);
            let (pos_end, data_len) = match read_segment(seg, since, skip_body, &mut pieces) {
                Ok(v) => v,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // Rotated away between listing and opening: the next read reports the gap.
                    prev = None;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if pos_end > end {
                end = pos_end;
            }
            prev = Some((pos_end, seg.data + data_len));
        }
        Ok((pieces, end))
    }
}

/// Reads one segment's records at or after `since` into `out`; returns the position after its
/// last complete record and its output byte count. With `skip_body`, only walks the headers.
fn read_segment(
    seg: &SegmentFile,
    since: u64,
    skip_body: bool,
    out: &mut Vec<Piece>,
) -> io::Result<(u64, u64)> {
    let file = File::open(&seg.path)?;
    let size = file.metadata()?.len();
    let mut r = BufReader::with_capacity(64 * 1024, file);
    let mut off = 0u64; // offset in this file
    let mut data_len = 0u64;
    let mut header = [0u8; HEADER_LEN as usize];
    while off + HEADER_LEN <= size {
        r.read_exact(&mut header)?;
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as u64;
        if off + HEADER_LEN + len > size {
            break; // being written
        }
        let rec_pos = seg.pos + off;
        let data_pos = rec_pos + HEADER_LEN;
        let rec_end = data_pos + len;
        let stream = byte_stream(header[0]);
        if skip_body || rec_end <= since || stream.is_none() {
            r.seek_relative(len as i64)?;
        } else {
            let mut data = vec![0u8; len as usize];
            r.read_exact(&mut data)?;
            let ts_ns = i64::from_le_bytes([
                header[8], header[9], header[10], header[11], header[12], header[13], header[14],
                header[15],
            ]);
            let ts = Timestamp::from_nanosecond(ts_ns as i128).unwrap_or(Timestamp::UNIX_EPOCH);
            let skip = since.saturating_sub(data_pos).min(len) as usize;
            if let Some(stream) = stream {
                out.push(Piece::Chunk(Chunk {
                    stream,
                    ts,
                    pos: data_pos + skip as u64,
                    data: data.split_off(skip),
                }));
            }
        }
        off += HEADER_LEN + len;
        data_len += len;
    }
    Ok((seg.pos + off, data_len))
}

fn stream_selected(filter: StreamFilter, s: LogStream) -> bool {
    match filter {
        StreamFilter::All => true,
        StreamFilter::Stdout => matches!(s, LogStream::Stdout | LogStream::Aside),
        StreamFilter::Stderr => matches!(s, LogStream::Stderr | LogStream::Aside),
    }
}

struct Partial {
    stream: LogStream,
    ts: Timestamp,
    bytes: Vec<u8>,
}

/// Turns raw pieces into line entries for one stream selection, carrying unterminated lines
/// across calls (a line may span records, and reads).
///
/// Lines are split on `\n` per stream; each line's cursor is the position just after it. Lines
/// longer than `max_line` bytes are cut (the rest is dropped with a note) so a newline-free
/// flood cannot make one entry unbounded.
pub struct LineSplitter {
    filter: StreamFilter,
    max_line: usize,
    partials: Vec<Partial>,
    last_pos: u64,
}

impl LineSplitter {
    /// A splitter for `filter`, cutting lines at `max_line` bytes.
    pub fn new(filter: StreamFilter, max_line: usize) -> LineSplitter {
        LineSplitter {
            filter,
            max_line,
            partials: Vec::new(),
            last_pos: 0,
        }
    }

    /// Complete lines (and gap markers) in `pieces`; unterminated ends are kept for later.
    pub fn feed(&mut self, pieces: &[Piece]) -> Vec<LogEntry> {
        let mut out = Vec::new();
        for piece in pieces {
            match piece {
                Piece::Gap { bytes, end } => {
                    out.extend(self.flush_at(*end));
                    out.push(LogEntry::Elided {
                        bytes: *bytes,
                        cursor: *end,
                    });
                    self.last_pos = *end;
                }
                Piece::Chunk(c) => {
                    self.last_pos = c.pos + c.data.len() as u64;
                    if stream_selected(self.filter, c.stream) {
                        self.feed_chunk(c, &mut out);
                    }
                }
            }
        }
        out
    }

    fn feed_chunk(&mut self, c: &Chunk, out: &mut Vec<LogEntry>) {
        let idx = match self.partials.iter().position(|p| p.stream == c.stream) {
            Some(i) => i,
            None => {
                self.partials.push(Partial {
                    stream: c.stream,
                    ts: c.ts,
                    bytes: Vec::new(),
                });
                self.partials.len() - 1
            }
        };
        let max_line = self.max_line;
        let p = &mut self.partials[idx];
        if p.bytes.is_empty() {
            p.ts = c.ts;
        }
        let mut start = 0;
        for (i, b) in c.data.iter().enumerate() {
            if *b == b'\n' {
                push_bounded(&mut p.bytes, &c.data[start..i], max_line);
                out.push(LogEntry::Line {
                    stream: c.stream,
                    ts: p.ts,
                    cursor: c.pos + i as u64 + 1,
                    text: render_line(&p.bytes, max_line),
                });
                p.bytes.clear();
                p.ts = c.ts;
                start = i + 1;
            }
        }
        push_bounded(&mut p.bytes, &c.data[start..], max_line);
        if p.bytes.is_empty() {
            self.partials.remove(idx);
        }
    }

    /// The unterminated line of each stream so far, without consuming it.
    pub fn pending(&self) -> impl Iterator<Item = (LogStream, String)> + '_ {
        self.partials
            .iter()
            .map(|p| (p.stream, render_line(&p.bytes, self.max_line)))
    }

    /// Emits the unterminated lines as they are (at the end of a read or of a run).
    pub fn flush(&mut self) -> Vec<LogEntry> {
        self.flush_at(self.last_pos)
    }

    fn flush_at(&mut self, cursor: u64) -> Vec<LogEntry> {
        let max_line = self.max_line;
        self.partials
            .drain(..)
            .map(|p| LogEntry::Line {
                stream: p.stream,
                ts: p.ts,
                cursor,
                text: render_line(&p.bytes, max_line),
            })
            .collect()
    }
}

/// Every line of `pieces` for `filter`, unterminated ends included (one complete read).
pub fn pieces_to_entries(pieces: &[Piece], filter: StreamFilter, max_line: usize) -> Vec<LogEntry> {
    let mut splitter = LineSplitter::new(filter, max_line);
    let mut out = splitter.feed(pieces);
    out.extend(splitter.flush());
    out
}

fn push_bounded(buf: &mut Vec<u8>, more: &[u8], max_line: usize) {
    // Keep one byte past the bound so render_line knows the line was cut.
    let room = (max_line + 1).saturating_sub(buf.len());
    buf.extend_from_slice(&more[..more.len().min(room)]);
}

fn render_line(bytes: &[u8], max_line: usize) -> String {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    if bytes.len() > max_line {
        let mut s = String::from_utf8_lossy(&bytes[..max_line]).into_owned();
        s.push_str(" [aside: line cut]");
        s
    } else {
        String::from_utf8_lossy(bytes).into_owned()
    }
}

/// Where one complete record's data lies in its segment file.
struct RecordSpan {
    data_off: u64,
    len: u64,
}

/// The complete records of a segment, by walking headers only (the data is skipped).
fn index_segment(path: &Path) -> io::Result<Vec<RecordSpan>> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut r = BufReader::with_capacity(16 * 1024, file);
    let mut header = [0u8; HEADER_LEN as usize];
    let mut off = 0u64;
    let mut spans = Vec::new();
    while off + HEADER_LEN <= size {
        r.read_exact(&mut header)?;
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as u64;
        if off + HEADER_LEN + len > size {
            break;
        }
        spans.push(RecordSpan {
            data_off: off + HEADER_LEN,
            len,
        });
        r.seek_relative(len as i64)?;
        off += HEADER_LEN + len;
    }
    Ok(spans)
}

fn read_at(file: &File, off: u64, len: usize) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, off)?;
    Ok(buf)
}

/// Builds the head/tail extract of a run's interleaved output for its result: up to
/// `head_bytes` from the start and `tail_bytes` from the end (never overlapping), with
/// everything between counted in `elided_bytes` (cap gaps included). Reads only the records it
/// shows, whatever the log's size. Stream byte counts come from the shim's exit record.
pub fn summarize(
    reader: &LogReader,
    head_bytes: usize,
    tail_bytes: usize,
) -> io::Result<OutputSummary> {
    let segs = list_segments(&reader.dir)?;
    let (Some(first), Some(last)) = (segs.first(), segs.last()) else {
        return Ok(OutputSummary::default());
    };
    let last_spans = index_segment(&last.path)?;
    let total = last.data + last_spans.iter().map(|r| r.len).sum::<u64>();

    let mut head = Vec::new();
    let first_file = File::open(&first.path)?;
    for span in index_segment(&first.path)? {
        if head.len() >= head_bytes {
            break;
        }
        let take = span.len.min((head_bytes - head.len()) as u64) as usize;
        head.extend(read_at(&first_file, span.data_off, take)?);
    }

    let mut need = (tail_bytes as u64).min(total - head.len() as u64);
    let mut parts: Vec<Vec<u8>> = Vec::new();
    for (i, seg) in segs.iter().enumerate().rev() {
        if need == 0 {
            break;
        }
        let indexed;
        let spans = if i + 1 == segs.len() {
            &last_spans
        } else {
            indexed = index_segment(&seg.path)?;
            &indexed
        };
        let file = File::open(&seg.path)?;
        for span in spans.iter().rev() {
            if need == 0 {
                break;
            }
            let take = span.len.min(need);
            parts.push(read_at(
                &file,
                span.data_off + span.len - take,
                take as usize,
            )?);
            need -= take;
        }
    }
    let tail: Vec<u8> = parts.into_iter().rev().flatten().collect();
    let shown = head.len() as u64 + tail.len() as u64;
    Ok(OutputSummary {
        head: String::from_utf8_lossy(&head).into_owned(),
        tail: String::from_utf8_lossy(&tail).into_owned(),
        elided_bytes: total.saturating_sub(shown),
        stdout_bytes: 0,
        stderr_bytes: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_data(pieces: &[Piece]) -> (Vec<u8>, u64) {
        let mut data = Vec::new();
        let mut gap = 0;
        for p in pieces {
            match p {
                Piece::Chunk(c) => data.extend_from_slice(&c.data),
                Piece::Gap { bytes, .. } => gap += bytes,
            }
        }
        (data, gap)
    }

    #[test]
    fn small_output_round_trips_with_streams() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::create(dir.path(), DEFAULT_LOG_CAP).unwrap();
        let ts = Timestamp::now();
        w.write(LogStream::Stdout, b"one\ntw", ts).unwrap();
        w.write(LogStream::Stderr, b"err\n", ts).unwrap();
        w.write(LogStream::Stdout, b"o\n", ts).unwrap();
        let r = LogReader::new(dir.path());
        let (pieces, end) = r.read_from(0).unwrap();
        assert_eq!(pieces.len(), 3);
        assert_eq!(end, 3 * HEADER_LEN + 12);
        let lines: Vec<String> = pieces_to_entries(&pieces, StreamFilter::Stdout, 1000)
            .into_iter()
            .map(|e| match e {
                LogEntry::Line { text, .. } => text,
                LogEntry::Elided { .. } => "gap".into(),
            })
            .collect();
        assert_eq!(lines, vec!["one", "two"]);
        let all = pieces_to_entries(&pieces, StreamFilter::All, 1000);
        assert_eq!(all.len(), 3);
        // Reading from the end yields nothing new.
        let (again, end2) = r.read_from(end).unwrap();
        assert!(again.is_empty());
        assert_eq!(end2, end);
    }

    #[test]
    fn cursor_inside_a_record_resumes_mid_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::create(dir.path(), DEFAULT_LOG_CAP).unwrap();
        w.write(LogStream::Stdout, b"a\nb\nc\n", Timestamp::now())
            .unwrap();
        let r = LogReader::new(dir.path());
        let (pieces, _) = r.read_from(0).unwrap();
        let entries = pieces_to_entries(&pieces, StreamFilter::Stdout, 100);
        let LogEntry::Line { cursor, .. } = entries[0] else {
            panic!("line expected")
        };
        let (rest, _) = r.read_from(cursor).unwrap();
        let (data, _) = all_data(&rest);
        assert_eq!(data, b"b\nc\n");
    }

    #[test]
    fn cap_keeps_exact_head_and_tail_and_counts_the_gap() {
        let dir = tempfile::tempdir().unwrap();
        let cap = 4096;
        let mut w = LogWriter::create(dir.path(), cap).unwrap();
        let mut expected = Vec::new();
        for i in 0..2000u32 {
            let line = format!("line {i:05}\n");
            expected.extend_from_slice(line.as_bytes());
            w.write(LogStream::Stdout, line.as_bytes(), Timestamp::now())
                .unwrap();
        }
        let (pieces, _) = LogReader::new(dir.path()).read_from(0).unwrap();
        let (kept, gap) = all_data(&pieces);
        let head = &kept[..2048];
        assert_eq!(head, &expected[..2048]);
        let tail = &kept[2048..];
        assert!(tail.len() as u64 <= cap / 2, "tail {} bytes", tail.len());
        assert!(tail.len() as u64 >= cap / 4, "tail {} bytes", tail.len());
        assert_eq!(tail, &expected[expected.len() - tail.len()..]);
        assert_eq!(gap as usize, expected.len() - kept.len());
        let on_disk: u64 = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        let records = pieces
            .iter()
            .filter(|p| matches!(p, Piece::Chunk(_)))
            .count() as u64;
        assert_eq!(on_disk, kept.len() as u64 + records * HEADER_LEN);
        assert!(kept.len() as u64 <= cap, "{} bytes kept", kept.len());
    }

    /// `summarize` agrees with a naive extract of everything written, for logs that fit in the
    /// head, overlap head and tail, and span a cap gap.
    #[test]
    fn summary_matches_a_naive_extract() {
        for (n_lines, cap) in [
            (0u32, 4096u64),
            (3, 4096),
            (150, 4096),
            (400, 4096),
            (5000, 4096),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let mut w = LogWriter::create(dir.path(), cap).unwrap();
            let mut all = Vec::new();
            for i in 0..n_lines {
                let line = format!("l{i:06}\n");
                all.extend_from_slice(line.as_bytes());
                let stream = if i % 3 == 0 {
                    LogStream::Stderr
                } else {
                    LogStream::Stdout
                };
                w.write(stream, line.as_bytes(), Timestamp::now()).unwrap();
            }
            let s = summarize(&LogReader::new(dir.path()), 1000, 1500).unwrap();
            let head_len = all.len().min(1000);
            assert_eq!(s.head.as_bytes(), &all[..head_len], "{n_lines} lines");
            let tail_len = (all.len() - head_len).min(1500);
            assert_eq!(
                s.tail.as_bytes(),
                &all[all.len() - tail_len..],
                "{n_lines} lines"
            );
            assert_eq!(s.elided_bytes as usize, all.len() - head_len - tail_len);
        }
    }
}
