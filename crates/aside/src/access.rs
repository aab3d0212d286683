//! `aside web` (the dashboard's address) and `aside token` (member tokens for the TCP
//! listener): both only over the local socket, by the daemon's own user.

use aside_proto::{ErrorCode, TokenRequest, WebRequest};
use clap::{Args, Subcommand};

use crate::client::owner_or_human;
use crate::client::{Client, ClientError, Result, remote};
use crate::render::print_json;
use aside_core::paths::StateDir;

/// `aside web`.
#[derive(Debug, Args)]
pub struct WebArgs {
    /// Open it in the browser (`$BROWSER`, else `xdg-open`).
    #[arg(long)]
    open: bool,
    /// Port on 127.0.0.1 (default: the listener's, else 7979 or a free one when that is taken).
    #[arg(long, env = "ASIDE_WEB_PORT")]
    port: Option<u16>,
    /// Print JSON (`url`, `port`).
    #[arg(long)]
    json: bool,
}

/// `aside token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Make a bearer token for a team member (printed once; only its hash is kept).
    Create {
        /// The owner the token acts as: the member's processes are theirs.
        #[arg(long)]
        owner: String,
        /// The member's team: they also see the team's running processes.
        #[arg(long)]
        team: Option<String>,
        /// May only look: list, logs, results, events.
        #[arg(long)]
        read_only: bool,
        /// Print JSON (schema: `aside schema token-created`).
        #[arg(long)]
        json: bool,
    },
    /// List member tokens (never their secrets).
    List {
        /// Print JSON (schema: `aside schema token`, as an array).
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token at once: requests carrying it are refused from now on.
    Revoke {
        /// The token's id (from `aside token list`).
        id: String,
    },
}

fn local_only(what: &str) -> Result<()> {
    match remote() {
        Some(r) => Err(ClientError::new(
            ErrorCode::Forbidden,
            format!(
                "`aside {what}` works only on the daemon's own machine, over its socket, not with --remote http://{}",
                r.authority
            ),
        )),
        None => Ok(()),
    }
}

/// `aside web`: asks the daemon to listen (if it does not yet) and prints the address.
pub async fn web(a: WebArgs, state: StateDir) -> Result<i32> {
    local_only("web")?;
    let client = Client::new(state, owner_or_human(None), true);
    let info = client.web(&WebRequest { port: a.port }).await?;
    if a.json {
        print_json(&info);
    } else {
        println!("{}", info.url);
        eprintln!(
            "the address carries the dashboard token once: this browser keeps it in a cookie; keep the address to yourself"
        );
    }
    if a.open {
        open_browser(&info.url)?;
    }
    Ok(0)
}

/// Opens `url` with `$BROWSER` or `xdg-open`, the URL as an argument (never through a shell).
fn open_browser(url: &str) -> Result<()> {
    let program = std::env::var("BROWSER")
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| "xdg-open".into());
    std::process::Command::new(&program)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(drop)
        .map_err(|e| {
            ClientError::new(
                ErrorCode::Internal,
                format!(
                    "cannot open a browser with {program:?} ({e}): open the address above yourself, or set $BROWSER"
                ),
            )
        })
}

/// `aside token create|list|revoke`.
pub async fn token(cmd: TokenCmd, state: StateDir) -> Result<i32> {
    local_only("token")?;
    let client = Client::new(state, owner_or_human(None), true);
    match cmd {
        TokenCmd::Create {
            owner,
            team,
            read_only,
            json,
        } => {
            let made = client
                .create_token(&TokenRequest {
                    owner,
                    team,
                    read_only,
                })
                .await?;
            if json {
                print_json(&made);
            } else {
                println!("{}", made.token);
                eprintln!(
                    "token {} for {}{}{}: shown once; the member sets ASIDE_TOKEN to it and passes --remote http://127.0.0.1:PORT (the daemon's --listen port, through an SSH tunnel from another machine)",
                    made.info.id,
                    made.info.owner,
                    made.info
                        .team
                        .as_deref()
                        .map(|t| format!(" of team {t}"))
                        .unwrap_or_default(),
                    if made.info.read_only {
                        ", read-only"
                    } else {
                        ""
                    }
                );
            }
            Ok(0)
        }
        TokenCmd::List { json } => {
            let tokens = client.tokens().await?;
            if json {
                print_json(&tokens);
            } else if tokens.is_empty() {
                println!("no tokens: make one with `aside token create --owner NAME`");
            } else {
                println!(
                    "{:<10} {:<20} {:<14} {:<6} {:<20} {:<20} STATE",
                    "ID", "OWNER", "TEAM", "ACCESS", "CREATED", "LAST USED"
                );
                for t in tokens {
                    println!(
                        "{:<10} {:<20} {:<14} {:<6} {:<20} {:<20} {}",
                        t.id,
                        t.owner,
                        t.team.as_deref().unwrap_or("-"),
                        if t.read_only { "read" } else { "full" },
                        crate::render::time(t.created_at),
                        t.last_used_at.map_or("-".into(), crate::render::time),
                        if t.revoked_at.is_some() {
                            "revoked"
                        } else {
                            "active"
                        }
                    );
                }
            }
            Ok(0)
        }
        TokenCmd::Revoke { id } => {
            let t = client.revoke_token(&id).await?;
            println!("token {} ({}) revoked", t.id, t.owner);
            Ok(0)
        }
    }
}
