//! The stdio transport of `aside mcp`: newline-delimited JSON-RPC on stdin and stdout, with two
//! things rmcp's own stdio transport does not do.
//!
//! - A line that is not JSON at all gets a JSON-RPC parse error (`-32700`, `id: null`), as
//!   JSON-RPC 2.0 §5.1 asks, instead of silence: a person typing at the server, or a client
//!   writing garbage, learns what is wrong. (rmcp ignores such lines on purpose, to avoid error
//!   loops with peers that echo; a parse error is itself valid JSON, so it cannot start one.)
//! - The end of stdin is reported on a watch channel, so the server can end what would
//!   otherwise hold the connection open (subscriptions) and exit at once.
//!
//! rmcp reads and writes in-memory pipes; two pumps move whole lines between them and the real
//! stdin/stdout, so a parse error never interleaves with a message.

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio::sync::{mpsc, watch};

/// Longest line read from stdin, in bytes (a `tools/call` with a long command fits easily).
const MAX_LINE: usize = 16 * 1024 * 1024;

/// The transport's two ends as rmcp sees them, and a watch that turns true once stdin ended.
pub struct Stdio {
    /// What rmcp reads (lines from stdin that are JSON).
    pub read: DuplexStream,
    /// What rmcp writes (copied to stdout line by line).
    pub write: DuplexStream,
    /// True once stdin reached its end.
    pub closed: watch::Receiver<bool>,
}

/// Starts the pumps on the current runtime.
pub fn start() -> Stdio {
    let (rmcp_read, mut to_rmcp) = tokio::io::duplex(1 << 20);
    let (rmcp_write, from_rmcp) = tokio::io::duplex(1 << 20);
    let (errors_tx, mut errors_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let (closed_tx, closed) = watch::channel(false);

    tokio::spawn(async move {
        let mut stdin = BufReader::new(tokio::io::stdin());
        let mut line = Vec::new();
        loop {
            line.clear();
            match read_line(&mut stdin, &mut line).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("cannot read stdin: {e}");
                    break;
                }
            }
            let text = trim(&line);
            if text.is_empty() {
                continue;
            }
            if let Some(err) = parse_error(text) {
                if errors_tx.send(err).is_err() {
                    break;
                }
                continue;
            }
            if to_rmcp.write_all(text).await.is_err() || to_rmcp.write_all(b"\n").await.is_err() {
                break;
            }
        }
        // rmcp sees the end of its input and winds the service down.
        drop(to_rmcp);
        closed_tx.send_replace(true);
    });

    tokio::spawn(async move {
        let mut from_rmcp = BufReader::new(from_rmcp);
        let mut stdout = tokio::io::stdout();
        let mut line = Vec::new();
        let mut rmcp_open = true;
        loop {
            line.clear();
            let out = tokio::select! {
                n = read_line(&mut from_rmcp, &mut line), if rmcp_open => match n {
                    Ok(0) | Err(_) => { rmcp_open = false; continue; }
                    Ok(_) => std::mem::take(&mut line),
                },
                e = errors_rx.recv() => match e {
                    Some(mut e) => { e.push(b'\n'); e }
                    None if rmcp_open => continue,
                    None => break,
                },
                else => break,
            };
            if stdout.write_all(&out).await.is_err() || stdout.flush().await.is_err() {
                // The client is gone: nothing more can be said.
                break;
            }
        }
    });

    Stdio {
        read: rmcp_read,
        write: rmcp_write,
        closed,
    }
}

/// Reads one line (with its `\n`) into `buf`, refusing to grow past [`MAX_LINE`]: an overlong
/// line is consumed and replaced by a marker that fails to parse.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(total);
        }
        let (take, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if buf.len() + take <= MAX_LINE {
            buf.extend_from_slice(&chunk[..take]);
        } else if !buf.starts_with(b"\0") {
            buf.clear();
            buf.push(0);
        }
        r.consume(take);
        total += take;
        if done {
            return Ok(total);
        }
    }
}

fn trim(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    line.trim_ascii()
}

/// The `-32700` answer for a line that is not JSON; `None` for one that is (whether or not it
/// is a valid message: rmcp answers those itself).
fn parse_error(line: &[u8]) -> Option<Vec<u8>> {
    let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    match serde_json::from_slice::<serde::de::IgnoredAny>(line) {
        Ok(_) => None,
        Err(e) if matches!(e.classify(), serde_json::error::Category::Data) => None,
        Err(e) => {
            let message = if line.starts_with(b"\0") {
                format!("Parse error: a line longer than {MAX_LINE} bytes")
            } else {
                format!(
                    "Parse error: not JSON ({e}). aside mcp speaks JSON-RPC 2.0, one message per line; start it from an MCP host"
                )
            };
            serde_json::to_vec(&serde_json::json!({
                "jsonrpc": "2.0",
                "id": null,
                "error": {"code": -32700, "message": message},
            }))
            .ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lines_that_are_not_json_get_a_parse_error() {
        let err = parse_error(b"hello there").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&err).unwrap();
        assert_eq!(v["error"]["code"], -32700);
        assert!(v["id"].is_null());
        assert!(parse_error(br#"{"jsonrpc":"2.0","method":"ping","id":1}"#).is_none());
        assert!(
            parse_error(b"[1, 2]").is_none(),
            "JSON, if not a message: rmcp answers"
        );
        assert!(parse_error(b"{\"unterminated\": ").is_some());
    }
}
