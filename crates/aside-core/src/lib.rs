//! The `aside` runtime, embeddable without HTTP, MCP or terminals.
//!
//! - [`store::Store`]: SQLite state (processes, runs, inbox, event log, wake actions), versioned
//!   migrations.
//! - [`logs`]: capped, framed logs ([`logs::LogWriter`] in the shim, [`logs::LogReader`] elsewhere).
//! - [`shim`]: the per-process supervisor that is the real parent of each command.
//! - [`supervisor::Supervisor`]: starts shims, watches them, stops, restarts, reconciles after
//!   a crash, delivers each result to its owner's inbox exactly once, streams events and wakes
//!   idle owners.
//! - [`policy`]: the permission policy for agents (fail closed); [`audit::AuditLog`] records
//!   stops, restarts, wakes and refusals.
//! - [`authz`]: who may do what — the one table every request is judged by.
//! - [`hosts`]: agent hosts (Claude Code, Codex, Gemini CLI): session owners and resumption;
//!   [`present`]: results as people and models are shown them.
//! - [`paths::StateDir`]: where all of it lives (`ASIDE_HOME`).

#![warn(missing_docs)]

pub mod audit;
pub mod authz;
pub mod hosts;
pub mod logs;
pub mod paths;
pub mod policy;
pub mod present;
pub mod proc;
pub mod rundir;
pub mod shim;
pub mod slurm;
pub mod store;
pub mod supervisor;
pub mod units;
