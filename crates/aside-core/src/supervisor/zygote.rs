//! The shim zygote: one `aside-shim --zygote` per daemon that forks each prestarted shim (see
//! [`crate::shim::shim_main`] for its side). A forked shim shares with the zygote every page
//! a shim's start writes until it writes one itself, so a running process costs about 12 KiB
//! less private memory than with a shim started as a program of its own; and a fork of the
//! small zygote is quicker than loading the shim.
//!
//! Forked shims are not the daemon's children: the daemon watches each through a pidfd,
//! opened as soon as the zygote answers with its pid (the zygote leaves its newest shim
//! unreaped, so that pid cannot have been reused by then). Anything that goes wrong with the
//! zygote only costs speed and memory: the prestarted shim is then started as a program, as
//! without a zygote, and a new zygote is started for the next one.

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::process::Stdio;
use std::time::Duration;

use rustix::net::{
    AddressFamily, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags,
    SocketType,
};

use crate::rundir::RunDir;

/// Longest wait for the zygote's answer (a fork): past it, the zygote is given up.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// The zygote of a daemon, if any.
pub(super) enum ZygoteState {
    /// None runs yet (or the last one failed): the next prestart starts one.
    NotStarted,
    Running(Zygote),
    /// It could not be started; shims are started as programs for this daemon's life.
    Unavailable,
}

/// A running zygote: the daemon's child, and the daemon's end of the socket it reads
/// requests from.
pub(super) struct Zygote {
    /// Killed when dropped (a zygote given up), reaped by tokio.
    _child: tokio::process::Child,
    socket: OwnedFd,
}

/// A prestarted shim the zygote forked, waiting for `go`.
pub(super) struct Forked {
    pub(super) pid: i32,
    /// Readable once the shim has exited.
    pub(super) pidfd: OwnedFd,
    /// The shim's stdin: where `go` is written.
    pub(super) go: std::fs::File,
    /// The shim's stdout: its report.
    pub(super) report: OwnedFd,
}

impl Zygote {
    /// Starts `aside-shim --zygote` from `command` (the shim command, with its environment
    /// set up); `runs` is the directory run directories are made in, for the room the forked
    /// shims need to show `--prestarted RUN_DIR` as their arguments.
    pub(super) fn start(
        mut command: tokio::process::Command,
        runs: &std::path::Path,
    ) -> std::io::Result<Zygote> {
        let (socket, theirs) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        rustix::net::sockopt::set_socket_timeout(
            &socket,
            rustix::net::sockopt::Timeout::Recv,
            Some(ANSWER_TIMEOUT),
        )?;
        // `--prestarted`, the run directory (a run id is 36 characters) and some to spare.
        let room = crate::shim::PRESTARTED_FLAG.len() + runs.as_os_str().len() + 64;
        let mut space = OsString::from("room-for-the-arguments-of-each-shim:");
        space.push(".".repeat(room));
        command
            .arg(crate::shim::ZYGOTE_FLAG)
            .arg(space)
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        Ok(Zygote {
            _child: command.spawn()?,
            socket,
        })
    }

    /// Asks for a prestarted shim for `rd` (whose directory is prepared already), blocking
    /// for the answer ([`ANSWER_TIMEOUT`] at most); errors say what failed, after which this
    /// zygote is not to be asked again.
    pub(super) fn fork(&self, rd: &RunDir) -> Result<Forked, String> {
        let pipe = || {
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                .map_err(|e| format!("pipe: {e}"))
        };
        let (go_r, go_w) = pipe()?;
        let (report_r, report_w) = pipe()?;
        let theirs = [go_r.as_fd(), report_w.as_fd()];
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
        let mut ancillary = SendAncillaryBuffer::new(&mut space);
        if !ancillary.push(SendAncillaryMessage::ScmRights(&theirs)) {
            return Err("no room for two file descriptors in a message".into());
        }
        let dir = rd.path().as_os_str().as_bytes();
        rustix::net::sendmsg(
            &self.socket,
            &[std::io::IoSlice::new(dir)],
            &mut ancillary,
            SendFlags::NOSIGNAL,
        )
        .map_err(|e| format!("cannot ask it for a shim: {e}"))?;
        // Ours no more: the shim holds them (EOF on the report once it is gone).
        drop((go_r, report_w));
        let mut answer = [0u8; 512];
        let (n, _) = rustix::net::recv(&self.socket, &mut answer, RecvFlags::empty())
            .map_err(|e| format!("no answer: {e}"))?;
        let answer = String::from_utf8_lossy(&answer[..n]);
        let pid: i32 = answer
            .parse()
            .map_err(|_| format!("it answered {answer:?}"))?;
        let raw = rustix::process::Pid::from_raw(pid).ok_or(format!("it answered pid {pid}"))?;
        let pidfd = rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty())
            .map_err(|e| format!("pidfd_open({pid}): {e}"))?;
        Ok(Forked {
            pid,
            pidfd,
            go: std::fs::File::from(go_w),
            report: report_r,
        })
    }
}

impl Forked {
    /// True while the shim has not exited.
    pub(super) fn is_alive(&self) -> bool {
        use rustix::event::{PollFd, PollFlags};
        let mut fds = [PollFd::new(&self.pidfd, PollFlags::IN)];
        let now = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        matches!(rustix::event::poll(&mut fds, Some(&now)), Ok(0))
    }
}
