//! `aside`: set a command aside; get its result back.
//!
//! One binary: the CLI (`aside run|status|logs|wait|stop|…`), the daemon (`aside daemon …`),
//! and the per-process shim (`aside __shim <run_dir>`, internal, see `aside_core::shim`). The
//! shim is dispatched before anything else is set up so each shim stays small.

mod access;
mod api;
mod cli;
mod client;
mod config;
mod daemon;
mod hook;
mod mcp;
mod proxy;
mod render;
mod ui;
mod up;

use clap::Parser;

/// The async runtime of the long-lived servers (daemon, MCP server): two workers, so a slow
/// request never stalls the others and idle memory stays small.
fn server_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// Sends `tracing` output to stderr, filtered by `$ASIDE_LOG` (default `default_filter`, e.g.
/// `info`). For the daemon (stderr is `daemon.log`) and the MCP server (stdout is the protocol).
fn log_to_stderr(default_filter: &str) {
    // Set once per process; a second call keeps the first.
    let _already_set = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ASIDE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

fn main() {
    if std::env::args_os().nth(1).is_some_and(|a| a == "__shim") {
        std::process::exit(aside_core::shim::shim_main(
            std::env::args_os().skip(2),
            None,
        ));
    }
    let cli = cli::Cli::parse();
    std::process::exit(cli::main(cli));
}
