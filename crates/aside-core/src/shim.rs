//! The shim: the small per-process supervisor that is the real parent of each managed command.
//!
//! The daemon starts one shim per run (`aside __shim <run_dir>`, the same binary re-executed, in
//! the style of containerd-shim and conmon) and then only talks to it through files in the run
//! directory and signals, so the shim, the command and its logs keep going while the daemon is
//! down. (Ahead of each run the daemon keeps the next run's shim prestarted, waiting for `go`
//! on stdin: see [`shim_main`].) The shim:
//!
//! 1. leaves the daemon's session (`setsid`) and becomes a child subreaper, so descendants that
//!    `setsid`, double-fork or `nohup … &` are re-parented to it instead of to init;
//! 2. starts the command in a new session (its pid is also its process group and session id),
//!    stdin from `/dev/null`, stdout and stderr into two pipes;
//! 3. writes `shim.json`, then reports `{"pid": N}` (or `{"error": "…"}`) as one line on its
//!    stdout, which the daemon reads;
//! 4. copies both pipes into the capped log in chunks (never lines), enforces the timeout,
//!    obeys stop requests (`control.json` + SIGUSR1): the signal to every process of the tree,
//!    the grace period, then SIGKILL;
//! 5. when the main process exits, kills what is left of its tree the same way (and says so in
//!    the log), drains the pipes to EOF, and writes `exit.json` atomically — last.
//!
//! A full disk never ends the command or loses its exit status: the shim's own diagnostics
//! ignore write errors (`note`), log bytes that cannot be written are dropped and counted
//! (readers see the gap; the log says so once writing works again), and `shim.json` and
//! `exit.json` are written with the 64 KiB the shim set aside when it started, retried until
//! they land.
//!
//! It is synchronous (one `poll(2)` loop, no async runtime) to keep its memory small. All
//! reaping happens in one place, a `waitpid(-1, WNOHANG)` loop on SIGCHLD (the one exception:
//! a child whose `exec` failed, reaped where that is learnt, in [`spawn`]).

mod spawn;

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aside_proto::{Command, LogStream, Spec};
use jiff::Timestamp;

use crate::logs::LogWriter;
use crate::proc::{self, signal_name};
use crate::rundir::{
    CONTROL_FILE, EXIT_FILE, ExitRecord, NOTES_FILE, RESERVE_FILE, RunDir, SHIM_FILE, STDIN_FIFO,
    ShimRecord, StopControl,
};

/// Bytes read from a pipe per `read(2)`.
const READ_CHUNK: usize = 256 * 1024;
/// Pipe buffer asked for with `F_SETPIPE_SZ`, so a fast writer rarely waits on the shim.
const PIPE_SIZE: i32 = 1024 * 1024;
/// How often the tree is re-examined while waiting for leftovers to die.
const TREE_RECHECK: Duration = Duration::from_millis(100);
/// Longest wait for pipe EOF once no process of the tree is left (a writer outside the tree,
/// e.g. one handed the fd over a socket, must not hold the result back forever).
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// How often a record that cannot be written (a full disk) is tried again.
const RECORD_RETRY: Duration = Duration::from_secs(1);

/// The argument that makes a shim prestarted: started ahead of its run, it waits for [`GO`] on
/// stdin before it touches the run directory (see [`shim_main`]).
pub const PRESTARTED_FLAG: &str = "--prestarted";
/// What the daemon writes to a prestarted shim's stdin once the run directory is ready.
pub const GO: &[u8] = b"go\n";

/// The argument that makes a shim a zygote: `aside-shim --zygote SPACE`, started once by the
/// daemon, forks each prestarted shim instead of the daemon starting a program for each (see
/// [`shim_main`]).
pub const ZYGOTE_FLAG: &str = "--zygote";

/// Entry point of `aside-shim [--prestarted] <run_dir>` (and `aside __shim …`), given the
/// arguments after the program (or after `__shim`); returns the shim's exit code. `title` is
/// the memory of the process's own arguments, where a shim forked by a zygote writes its own
/// (`None` from `aside __shim`, which cannot be a zygote).
///
/// A prestarted shim (`--prestarted`) is started by the daemon before its run exists, so that `run` does not
/// wait for a program to be loaded: it leaves the daemon's session, then waits for `go\n` on
/// stdin; it then points its stderr at the run's `shim.log` and goes on as any shim. EOF
/// first (the daemon went away or dropped it) ends it at once, having done nothing.
///
/// A zygote (`--zygote SPACE`) makes prestarted shims by forking itself, so that every shim
/// shares the pages a shim's start writes (the C library's and the allocator's setup, its
/// relocated tables) with it until it writes them itself: measured, 64–68 → 52–56 KiB of private
/// memory per running shim. It reads requests from stdin, a `SOCK_SEQPACKET` socket: each a run
/// directory with two file descriptors (`SCM_RIGHTS`), the read end of the pipe `go` will come
/// on and the write end of the one the report goes to. It answers each with the forked shim's
/// pid in decimal (or `error: …`). The shim, with those pipes as its stdin and stdout and
/// `--prestarted RUN_DIR` written over its arguments (so `ps` and the daemon's search by
/// command line see what it is), goes on as a prestarted shim. EOF on the socket (the daemon
/// went away) ends the zygote; the shims it forked carry on.
pub fn shim_main(
    args: impl IntoIterator<Item = std::ffi::OsString>,
    title: Option<ArgSpace>,
) -> i32 {
    ignore_sigpipe();
    small_heap();
    restore_nofile();
    let mut args = args.into_iter().peekable();
    if args.next_if(|a| a == ZYGOTE_FLAG).is_some() {
        let Some(title) = title else {
            note(format_args!(
                "aside shim: {ZYGOTE_FLAG} is for the aside-shim binary only (not `aside __shim`)"
            ));
            return 2;
        };
        return zygote(title);
    }
    let prestarted = args.next_if(|a| a == PRESTARTED_FLAG).is_some();
    let Some(dir) = args.next() else {
        note(format_args!(
            "usage: aside-shim [--prestarted] <run_dir> (started by the aside daemon, not by hand)"
        ));
        return 2;
    };
    shim_for(Path::new(&dir), prestarted)
}

/// The shim of run directory `run_dir`, prestarted (waiting for `go`) or not; its exit code.
fn shim_for(run_dir: &Path, prestarted: bool) -> i32 {
    let mut setup = None;
    if prestarted {
        leave_the_daemon(true);
        let rd = RunDir::new(run_dir);
        // While no run needs it: the space for the records (the files they will be are there
        // already: `RunDir::prepare`; a run that finds them missing makes them itself).
        if rd.path().join(crate::rundir::SHIM_LOG).exists()
            && let Err(e) = rd.reserve()
        {
            note(format_args!("aside shim {}: {e}", run_dir.display()));
        }
        // What does not depend on the run, done while nobody waits (one that fails is tried
        // again after `go`, where its error is reported).
        setup = Setup::new().ok();
        match await_go(run_dir, setup.as_mut().map(|s| &mut s.signals)) {
            Ok(true) => {}
            Ok(false) => {
                // Not used (the daemon stopped or went away): a directory it prepared for a
                // run that never came is removed; one that holds a run's spec is that run's.
                if !rd.path().join(crate::rundir::SPEC_FILE).exists()
                    && let Err(e) = std::fs::remove_dir_all(rd.path())
                    && e.kind() != io::ErrorKind::NotFound
                {
                    note(format_args!(
                        "aside shim: cannot remove {}: {e}",
                        run_dir.display()
                    ));
                }
                return 0;
            }
            Err(e) => {
                note(format_args!("aside shim {}: {e}", run_dir.display()));
                return 1;
            }
        }
    }
    match run(&RunDir::new(run_dir), prestarted, setup) {
        Ok(status) => status,
        Err(e) => {
            note(format_args!("aside shim {}: {e}", run_dir.display()));
            1
        }
    }
}

/// The memory holding a process's arguments after its program name (what
/// `/proc/PID/cmdline` shows), which a shim forked by a zygote overwrites with its own.
pub struct ArgSpace {
    start: std::ptr::NonNull<u8>,
    len: usize,
}

impl ArgSpace {
    /// The space of `argv[1..argc]`, when the kernel laid them out one after the other as it
    /// does; `None` otherwise or without arguments.
    ///
    /// # Safety
    ///
    /// `argc` and `argv` must be what C's `main` was given, and nothing may read or write the
    /// argument strings through another pointer while the `ArgSpace` is used (the Rust
    /// standard library's copies, from `std::env::args_os`, must be taken before).
    pub unsafe fn from_main(
        argc: std::ffi::c_int,
        argv: *const *const std::ffi::c_char,
    ) -> Option<ArgSpace> {
        let argc = usize::try_from(argc).ok()?;
        if argc < 2 || argv.is_null() {
            return None;
        }
        // SAFETY: C's `main` gets `argc` valid pointers to NUL-terminated strings.
        let arg = |i: usize| unsafe { *argv.add(i) };
        let first = arg(1).cast::<u8>().cast_mut();
        let mut end = first;
        for i in 1..argc {
            if arg(i).cast::<u8>().cast_mut() != end {
                return None;
            }
            // SAFETY: as above; the string ends with its NUL, counted here.
            let n = unsafe { std::ffi::CStr::from_ptr(arg(i)) }.count_bytes() + 1;
            end = end.wrapping_add(n);
        }
        Some(ArgSpace {
            start: std::ptr::NonNull::new(first)?,
            len: end as usize - first as usize,
        })
    }

    /// Writes `args` there, each ended by a NUL, and NULs over what is left; `false` (nothing
    /// written) when they do not fit.
    fn set(&mut self, args: &[&std::ffi::OsStr]) -> bool {
        let needed: usize = args.iter().map(|a| a.len() + 1).sum();
        if needed > self.len {
            return false;
        }
        // SAFETY: `len` bytes of the process's own argument strings, ours alone (see
        // `from_main`).
        let space = unsafe { std::slice::from_raw_parts_mut(self.start.as_ptr(), self.len) };
        space.fill(0);
        let mut at = 0;
        for a in args {
            let bytes = a.as_encoded_bytes();
            space[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len() + 1;
        }
        true
    }
}

/// How long a zygote waits for a request before it reaps the shims that ended meanwhile.
const ZYGOTE_REAP_EVERY: rustix::event::Timespec = rustix::event::Timespec {
    tv_sec: 1,
    tv_nsec: 0,
};

/// The zygote's loop (see [`shim_main`]); returns its exit code, or, in a forked shim, the
/// shim's.
fn zygote(mut title: ArgSpace) -> i32 {
    use rustix::event::{PollFd, PollFlags};
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let requests = rustix::stdio::stdin();
    // The shims forked so far and not yet reaped. The newest is left unreaped: the daemon
    // opens its pidfd once it has the answer, and a pid must not be freed (and reused) before.
    let mut forked: Vec<rustix::process::Pid> = Vec::new();
    // Allocated once, before any fork: a forked shim only reads it, so its page stays shared
    // with the zygote (on the stack it would be one more private page in every shim).
    let mut dir = vec![0u8; 4096];
    loop {
        let newest = forked.last().copied();
        forked.retain(|&pid| {
            Some(pid) == newest
                || matches!(
                    rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::NOHANG),
                    Ok(None)
                )
        });
        let mut fds = [PollFd::new(&requests, PollFlags::IN)];
        // Woken to reap only while there is one to reap.
        let wait = (forked.len() > 1).then_some(&ZYGOTE_REAP_EVERY);
        match rustix::event::poll(&mut fds, wait) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => {}
            Err(e) => {
                note(format_args!("aside shim zygote: poll: {e}"));
                return 1;
            }
        }
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
        let mut ancillary = RecvAncillaryBuffer::new(&mut space);
        let got = rustix::net::recvmsg(
            requests,
            &mut [io::IoSliceMut::new(&mut dir)],
            &mut ancillary,
            RecvFlags::CMSG_CLOEXEC,
        );
        let bytes = match got {
            Ok(msg) => msg.bytes,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                note(format_args!(
                    "aside shim zygote: cannot read a request: {e}"
                ));
                return 1;
            }
        };
        if bytes == 0 {
            // The daemon went away: no more shims are asked for.
            return 0;
        }
        let pipes: Vec<OwnedFd> = ancillary
            .drain()
            .filter_map(|m| match m {
                RecvAncillaryMessage::ScmRights(fds) => Some(fds),
                _ => None,
            })
            .flatten()
            .collect();
        let answer = match <[OwnedFd; 2]>::try_from(pipes) {
            Err(p) => format!("error: a request with {} file descriptors, not 2", p.len()),
            // SAFETY: the zygote is single-threaded, so the child may run any code.
            Ok([go, report]) => match unsafe { libc::fork() } {
                -1 => format!("error: fork: {}", io::Error::last_os_error()),
                0 => {
                    use std::os::unix::ffi::OsStrExt;
                    let dir = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(&dir[..bytes]));
                    return become_prestarted(&mut title, &dir, go, report);
                }
                pid => {
                    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                        forked.push(pid);
                    }
                    pid.to_string()
                }
            },
        };
        if let Err(e) =
            rustix::net::send(requests, answer.as_bytes(), rustix::net::SendFlags::empty())
        {
            note(format_args!("aside shim zygote: cannot answer: {e}"));
            return 1;
        }
    }
}

/// In a shim the zygote just forked: takes `go` as stdin and `report` as stdout (the socket
/// to the daemon is closed so), shows `--prestarted RUN_DIR` as its arguments, and goes on as
/// a prestarted shim; its exit code.
fn become_prestarted(title: &mut ArgSpace, run_dir: &Path, go: OwnedFd, report: OwnedFd) -> i32 {
    let moved = rustix::stdio::dup2_stdin(&go).and_then(|()| rustix::stdio::dup2_stdout(&report));
    drop((go, report));
    if let Err(e) = moved {
        note(format_args!(
            "aside shim {}: cannot take its pipes: {e}",
            run_dir.display()
        ));
        return 1;
    }
    if !title.set(&[PRESTARTED_FLAG.as_ref(), run_dir.as_os_str()]) {
        note(format_args!(
            "aside shim {}: its arguments do not fit the zygote's; it shows the zygote's",
            run_dir.display()
        ));
    }
    shim_for(run_dir, true)
}

/// The subreaper of whatever the command leaves behind, and (`own_session`) in a session of
/// its own, out of the daemon's. A shim in a Slurm job keeps the job's session and process
/// group: that is how Slurm signals (`scancel`) and tracks (proctrack/pgid) the job, and the
/// shim is the job's batch step.
fn leave_the_daemon(own_session: bool) {
    if own_session {
        // A process group leader (a shim started again by hand) cannot: nothing to leave.
        if let Err(e) = rustix::process::setsid() {
            note(format_args!("aside shim: setsid: {e}"));
        }
    }
    if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
        note(format_args!("aside shim: cannot become a subreaper: {e}"));
    }
}

/// Ignores SIGPIPE, so that a write to a reader that went away (the daemon, gone before it
/// read the report) fails with `EPIPE` instead of ending the shim and with it the run's
/// supervision. Rust's runtime does this before `main`; `aside-shim` starts without it. The
/// command gets SIGPIPE back at its default (`std::process` resets it in the child).
fn ignore_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code.
    if unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) } == libc::SIG_ERR {
        note(format_args!(
            "aside shim: cannot ignore SIGPIPE: {}",
            io::Error::last_os_error()
        ));
    }
}

/// The environment variable in which the daemon gives a shim the open-files soft limit the
/// daemon started with (it raised its own: see `supervisor::raise_fd_limit`); the shim sets it
/// back for itself and so for its command. Not in the command's environment (the shim gives
/// the command the run's own).
pub const NOFILE_VAR: &str = "ASIDE_SHIM_NOFILE";

/// Sets the open-files soft limit [`NOFILE_VAR`] names, keeping the hard one; a missing or
/// unreadable value leaves the limit as it is (said in the shim's log).
fn restore_nofile() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let Some(value) = std::env::var_os(NOFILE_VAR) else {
        return;
    };
    let Some(soft) = value.to_str().and_then(|v| v.parse::<u64>().ok()) else {
        note(format_args!(
            "aside shim: {NOFILE_VAR}={value:?} is not a number; the open-files limit is left as it is"
        ));
        return;
    };
    let maximum = getrlimit(Resource::Nofile).maximum;
    let lowered = Rlimit {
        current: Some(soft),
        maximum,
    };
    if let Err(e) = setrlimit(Resource::Nofile, lowered) {
        note(format_args!(
            "aside shim: cannot set the open-files limit back to {soft}: {e}"
        ));
    }
}

/// A prestarted shim's wait for its run: `true` once `go` came (stderr is then the run's `shim.log`,
/// stdin `/dev/null`), `false` on EOF, on anything else, or on SIGTERM, SIGINT or SIGHUP
/// (with its `signals` installed already: a shim that runs nothing yet ends as it would
/// without them).
fn await_go(run_dir: &Path, mut signals: Option<&mut Signals>) -> io::Result<bool> {
    use rustix::event::{PollFd, PollFlags};
    // Read from the fd itself: std's stdin would keep an 8 KiB buffer for the shim's whole life.
    let mut got = [0u8; GO.len()];
    let mut filled = 0;
    while filled < got.len() {
        if let Some(signals) = signals.as_deref_mut() {
            let stdin = rustix::stdio::stdin();
            let mut fds = [
                PollFd::new(&stdin, PollFlags::IN),
                PollFd::new(&signals.wake_r, PollFlags::IN),
            ];
            match rustix::event::poll(&mut fds, None) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
            let stdin_ready = !fds[0].revents().is_empty();
            signals.drain();
            if signals.term.load(Ordering::SeqCst) {
                return Ok(false);
            }
            if !stdin_ready {
                continue;
            }
        }
        match rustix::io::read(rustix::stdio::stdin(), &mut got[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if got != GO {
        return Ok(false);
    }
    use std::os::unix::fs::OpenOptionsExt;
    let log = File::options()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(run_dir.join(crate::rundir::SHIM_LOG))?;
    rustix::stdio::dup2_stderr(&log)?;
    let null = File::open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null)?;
    Ok(true)
}

/// Writes one line of the shim's own diagnostics to its stderr (`shim.log`). A write that
/// fails — the disk is full, the file is gone — is dropped: the shim must never die of its own
/// diagnostics (`eprintln!` panics then, which would SIGKILL the command).
fn note(msg: std::fmt::Arguments<'_>) {
    let mut err = io::stderr().lock();
    if err
        .write_fmt(msg)
        .and_then(|()| err.write_all(b"\n"))
        .is_err()
    {
        // Nowhere left to say it.
    }
}

struct Signals {
    wake_r: File,
    chld: Arc<AtomicBool>,
    usr1: Arc<AtomicBool>,
    term: Arc<AtomicBool>,
}

impl Signals {
    fn install() -> io::Result<Signals> {
        let (wake_r, wake_w) = std::os::unix::net::UnixStream::pair()?;
        wake_r.set_nonblocking(true)?;
        wake_w.set_nonblocking(true)?;
        let chld = Arc::new(AtomicBool::new(false));
        let usr1 = Arc::new(AtomicBool::new(false));
        let term = Arc::new(AtomicBool::new(false));
        let pairs = [
            (libc::SIGCHLD, &chld),
            (libc::SIGUSR1, &usr1),
            (libc::SIGTERM, &term),
            (libc::SIGINT, &term),
            (libc::SIGHUP, &term),
        ];
        for (sig, flag) in pairs {
            signal_hook::flag::register(sig, Arc::clone(flag))?;
            signal_hook::low_level::pipe::register(sig, wake_w.try_clone()?)?;
        }
        Ok(Signals {
            wake_r: File::from(OwnedFd::from(wake_r)),
            chld,
            usr1,
            term,
        })
    }

    fn drain(&mut self) {
        let mut buf = [0u8; 64];
        while matches!(self.wake_r.read(&mut buf), Ok(n) if n > 0) {}
    }
}

fn set_nonblocking(fd: &impl AsRawFd) {
    // SAFETY: fcntl on an fd we own, with integer arguments only.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    // A bigger pipe lets a flooding child write on while the shim is between reads; failure
    // (e.g. over /proc/sys/fs/pipe-max-size) only costs speed.
    // SAFETY: fcntl on an fd we own, with integer arguments only.
    unsafe { libc::fcntl(r.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
    Ok((r, w))
}

/// The shell builtins and reserved words of POSIX `sh` (and dash's extras): a command string
/// starting with one of these must run in the shell itself, never be `exec`ed.
const SHELL_OWN_WORDS: &[&str] = &[
    ".", ":", "[", "alias", "bg", "break", "case", "cd", "command", "continue", "do", "done",
    "echo", "elif", "else", "esac", "eval", "exec", "exit", "export", "false", "fc", "fg", "fi",
    "for", "function", "getopts", "hash", "if", "in", "jobs", "kill", "local", "printf", "pwd",
    "read", "readonly", "return", "select", "set", "shift", "test", "then", "time", "times",
    "trap", "true", "type", "ulimit", "umask", "unalias", "unset", "until", "wait", "while",
];

/// The script `/bin/sh -c` is given for a shell command: a simple command (one program and its
/// plain words: no quoting, expansion, redirection, operators or assignments) is prefixed with
/// `exec`, so the program replaces the shell instead of running under it (dash forks even for
/// its last command). It saves one `sh` per running process and makes the reported pid the
/// program's own; anything else runs as written.
pub fn shell_script(command: &str) -> std::borrow::Cow<'_, str> {
    if simple_words(command).is_none() {
        return command.into();
    }
    format!("exec {command}").into()
}

/// The words of a simple command (see [`shell_script`]), as `sh` would split them; `None` for
/// anything else.
fn simple_words(command: &str) -> Option<Vec<&str>> {
    let plain = |c: char| c.is_ascii_alphanumeric() || " -_./=:,+@%".contains(c);
    let words: Vec<&str> = command.split(' ').filter(|w| !w.is_empty()).collect();
    let first = *words.first()?;
    if !command.chars().all(plain) || first.contains('=') || SHELL_OWN_WORDS.contains(&first) {
        return None;
    }
    Some(words)
}

/// The program a simple command runs, found as `sh`'s `exec` finds it (a name with a `/`
/// relative to `cwd`, else the first executable of that name on the run's `PATH`), when the
/// shim can start it without the shell: it must start with `#!` or be an ELF binary (a script
/// without one is the shell's to run). `None` leaves the command to `sh -c 'exec …'`, which
/// then also says what is wrong (not found: 127, not executable: 126), as it always did.
fn direct_program(first: &str, cwd: &str, path: Option<&str>) -> Option<std::path::PathBuf> {
    // Without a `PATH`, `sh` has its own default: left to it.
    if !first.contains('/') {
        path?;
    }
    let found = spawn::find_program(first, cwd, path).ok()?;
    let mut magic = [0u8; 4];
    let n = File::open(&found)
        .and_then(|mut f| f.read(&mut magic))
        .ok()?;
    (magic[..n].starts_with(b"#!") || magic[..n] == *b"\x7fELF").then_some(found)
}

/// What starts `spec`'s command (see [`spawn`]), and the program's name for a failure's
/// message. Errors: its program is not found or not executable (the argv form; a shell
/// command's `sh` says that itself), or a word holds a NUL byte.
fn launch_for(spec: &Spec) -> Result<spawn::Launch, (io::Error, String)> {
    use std::ffi::{OsStr, OsString};
    let path = spec.env.get("PATH").map(String::as_str);
    let script;
    let (program, argv): (std::path::PathBuf, Vec<&str>) = match &spec.cmd {
        Command::Shell(s) => {
            match simple_words(s).and_then(|w| Some((direct_program(w[0], &spec.cwd, path)?, w))) {
                // What `sh -c 'exec …'` would run, without starting the shell first (one exec
                // fewer: the shell's own start is as long as a small program's).
                Some((program, words)) => (program, words),
                None => {
                    script = shell_script(s);
                    ("/bin/sh".into(), vec!["/bin/sh", "-c", &script])
                }
            }
        }
        Command::Argv(argv) => {
            let name = argv.first().map(String::as_str).unwrap_or("");
            let program =
                spawn::find_program(name, &spec.cwd, path).map_err(|e| (e, name.to_string()))?;
            (program, argv.iter().map(String::as_str).collect())
        }
    };
    let mut env: std::collections::BTreeMap<OsString, OsString> =
        spec.env.iter().map(|(k, v)| (k.into(), v.into())).collect();
    if !spec.executor.is_local() {
        // What the job is (SLURM_JOB_ID, SLURM_CPUS_PER_TASK, …), for `srun` and the command.
        use std::os::unix::ffi::OsStrExt;
        env.extend(std::env::vars_os().filter(|(k, _)| k.as_bytes().starts_with(b"SLURM_")));
    }
    let env = env.iter().map(|(k, v)| (k.as_os_str(), v.as_os_str()));
    spawn::Launch::new(&program, argv.into_iter().map(OsStr::new), env, &spec.cwd)
        .map_err(|e| (e, program.to_string_lossy().into_owned()))
}

/// Writes an `[aside] …` line into the run's log; one that cannot be written (a full disk) is
/// said in the shim's own log instead.
fn annotate(log: &mut LogWriter, text: &str) {
    if let Err(e) = log.annotate(text) {
        note(format_args!(
            "cannot write {text:?} into the run's log: {e}"
        ));
    }
}

/// Reports one JSON line to the daemon on stdout, then points stdout at /dev/null so a daemon
/// that went away can never make a later write fail.
fn report(line: &serde_json::Value) {
    // Written to the fd itself, whole: std's stdout would keep a 1 KiB buffer for the shim's
    // whole life.
    let text = format!("{line}\n");
    let mut rest = text.as_bytes();
    while !rest.is_empty() {
        match rustix::io::write(rustix::stdio::stdout(), rest) {
            Ok(n) => rest = &rest[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                // The daemon went away before it read the report; it learns from the run directory.
                note(format_args!("cannot report {line} to the daemon: {e}"));
                break;
            }
        }
    }
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        // SAFETY: dup2 onto our own stdout.
        unsafe { libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO) };
    }
}

/// What a shim sets up before its command whatever the run: a prestarted shim does it while
/// it waits for `go`.
struct Setup {
    signals: Signals,
    shim_pid: i32,
    /// The shim's start time (clock ticks since boot; 0 when `/proc` could not say).
    shim_starttime: u64,
    /// The command's stdout pipe (read end, write end).
    out: (OwnedFd, OwnedFd),
    /// Its stderr pipe.
    err: (OwnedFd, OwnedFd),
}

impl Setup {
    fn new() -> io::Result<Setup> {
        let signals = Signals::install()?;
        let shim_pid = std::process::id() as i32;
        let shim_starttime = proc::stat(shim_pid).map(|s| s.starttime).unwrap_or(0);
        Ok(Setup {
            signals,
            shim_pid,
            shim_starttime,
            out: pipe()?,
            err: pipe()?,
        })
    }
}

struct Stream {
    kind: LogStream,
    file: Option<File>,
}

/// The shim's work for run directory `rd` (`prestarted`: it has left the daemon already).
/// glibc's tunables for a shim (`GLIBC_TUNABLES`, set by the daemon when it starts one): no
/// per-thread cache of freed blocks, which would otherwise keep pages of the heap that the
/// shim freed dirty for the run's lifetime (measured: heap 44 KiB → 16 KiB per shim). The shim
/// gives its command the run's own environment, never this.
pub const SHIM_TUNABLES: &str = "glibc.malloc.tcache_count=0";

/// Keeps the shim's heap as small as what it holds, for the hours a run may last: glibc keeps
/// freed memory for reuse, and a scan of the tree (`opendir` takes a 32 KiB buffer each time)
/// or the spec's parse would leave dirty pages behind in every shim. Blocks of 16 KiB and
/// more are mapped and unmapped on their own; a free top of the heap beyond 16 KiB is given
/// back.
fn small_heap() {
    // SAFETY: mallopt only tunes glibc's allocator; a value it refuses leaves the default.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 16 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 16 * 1024);
    }
}

/// Runs the command of run directory `rd` to its end and records it; the shim's exit status:
/// 0 for a local run (nobody reads it), the command's own in a job (its exit code, 128 + the
/// signal that ended it, 127 when it could not start), so that the scheduler's accounting
/// says `FAILED` for a failed command as it would without aside.
fn run(rd: &RunDir, prestarted: bool, setup: Option<Setup>) -> io::Result<i32> {
    // What lives as long as the run is allocated first, at the bottom of the heap: blocks
    // left among the start's freed ones would keep their pages for the run's whole life.
    let Setup {
        mut signals,
        shim_pid,
        shim_starttime,
        out: (out_r, out_w),
        err: (err_r, err_w),
    } = match setup {
        Some(s) => s,
        None => Setup::new()?,
    };
    let spec = rd
        .spec()?
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "spec.json is missing"))?;
    let local = spec.executor.is_local();
    if !prestarted {
        leave_the_daemon(local);
    }
    // Space for this run's records, set aside before anything runs: with a disk already full,
    // the run fails now, saying so, instead of losing its result later.
    rd.reserve().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot set aside space for the run's records ({RESERVE_FILE}): {e}"),
        )
    })?;
    let mut log = LogWriter::create(&rd.log_dir(), spec.log_cap_bytes)?;
    if let Ok(Some(notes)) = rd.read::<Vec<String>>(NOTES_FILE) {
        for n in notes {
            annotate(&mut log, &n);
        }
    }
    // Interactive runs read a FIFO the daemon writes to. The shim holds it open read-write for
    // the run's life: the command never sees EOF between writes, and a writer never blocks
    // for want of a reader, whether or not the daemon is up.
    let (stdin, _stdin_holder) = if spec.interactive {
        let fifo = rd.path().join(STDIN_FIFO);
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )?;
        let holder = File::options().read(true).write(true).open(&fifo)?;
        (OwnedFd::from(holder.try_clone()?), Some(holder))
    } else {
        (OwnedFd::from(File::open("/dev/null")?), None)
    };
    // The command is forked and the pid reported before its `exec` is known to have happened
    // (see `spawn`); what can be found wrong beforehand is, and fails the run here.
    let forked = launch_for(&spec).and_then(|launch| {
        launch
            .fork([stdin, out_w, err_w])
            .map_err(|e| (e, String::new()))
    });
    // What a failure's message names when nothing more precise is known.
    let asked = || match &spec.cmd {
        Command::Shell(s) => s.clone(),
        Command::Argv(argv) => argv.first().cloned().unwrap_or_default(),
    };
    let forked = match forked {
        Ok(f) => f,
        Err((e, program)) => {
            let program = if program.is_empty() { asked() } else { program };
            return not_started(rd, &spec, &mut log, &program, e, true, local);
        }
    };
    let pid = forked.pid;
    let started = Instant::now();
    let starttime = proc::stat(pid).map(|s| s.starttime).unwrap_or(0);
    let shim_record = ShimRecord {
        shim_pid,
        shim_starttime,
        pid,
        starttime,
        started_at: Timestamp::now(),
    };
    // The command runs now: a `shim.json` that cannot be written (after the reserve is used)
    // only costs re-attachment after a daemon restart, so it does not stop the shim.
    if let Err(e) = rd.write_durably(SHIM_FILE, &shim_record, RECORD_RETRY, Some(0)) {
        note(format_args!("aside shim: cannot write {SHIM_FILE}: {e}"));
    }
    // After shim.json: once `run` has answered, a daemon that dies can re-attach. (In a
    // Slurm job stdout is the batch output: the daemon reads shim.json instead.)
    if spec.executor.is_local() {
        report(&serde_json::json!({ "pid": pid }));
    }
    if let Err(e) = forked.exec_result() {
        // A race with the checks before the fork (its directory or program gone meanwhile):
        // `run` has answered with the pid; the run ends failed, saying why.
        return not_started(rd, &spec, &mut log, &asked(), e, false, local);
    }

    let mut streams = [
        Stream {
            kind: LogStream::Stdout,
            file: Some(File::from(out_r)),
        },
        Stream {
            kind: LogStream::Stderr,
            file: Some(File::from(err_r)),
        },
    ];
    for s in streams.iter().flatten_files() {
        set_nonblocking(s);
    }

    let mut sup = Supervision {
        shim_pid,
        pid,
        grace: Duration::from_millis(spec.grace_ms),
        timeout_at: spec
            .timeout_ms
            .map(|ms| started + Duration::from_millis(ms)),
        timeout_ms: spec.timeout_ms.unwrap_or(0),
        kill_at: None,
        kill_grace_ms: spec.grace_ms,
        main_status: None,
        timed_out: false,
        stop: None,
        leftovers_handled: false,
        tree_empty_since: None,
    };
    // The spec (its environment above all) is not needed past the spawn.
    let grace_ms = spec.grace_ms;
    drop(spec);
    let mut buf = ReadBuffer::new(READ_CHUNK)?;
    // What the start used and freed (the spec's parse, the spawn's argv and environment)
    // goes back to the system: whole free pages of the heap, for the run's lifetime.
    // SAFETY: malloc_trim only releases free memory of glibc's own allocator.
    unsafe { libc::malloc_trim(0) };
    release_stack_below_here();
    loop {
        let now = Instant::now();
        let mut wait = [sup.timeout_at, sup.kill_at]
            .into_iter()
            .flatten()
            .map(|t| t.saturating_duration_since(now))
            .min();
        if sup.main_status.is_some() {
            wait = Some(wait.map_or(TREE_RECHECK, |w| w.min(TREE_RECHECK)));
        }
        poll_fds(&signals.wake_r, &streams, wait)?;

        signals.drain();
        if signals.chld.swap(false, Ordering::SeqCst) {
            sup.reap();
        }
        if signals.usr1.swap(false, Ordering::SeqCst) {
            match rd.read::<StopControl>(CONTROL_FILE) {
                Ok(Some(ctl)) => sup.stop(ctl, &mut log),
                Ok(None) => {}
                Err(e) => note(format_args!("aside shim: unreadable stop request: {e}")),
            }
        }
        if signals.term.swap(false, Ordering::SeqCst) {
            // A stop request that raced the signal (a job cancelled as it started) names its
            // requester.
            let ctl = match rd.read::<StopControl>(CONTROL_FILE) {
                Ok(Some(ctl)) => ctl,
                _ => StopControl {
                    signal: libc::SIGTERM,
                    grace_ms,
                    requested_by: "a signal to the shim".into(),
                },
            };
            sup.stop(ctl, &mut log);
        }
        // One chunk per stream per pass keeps stdout and stderr in arrival order as far as
        // two pipes can tell it.
        for s in streams.iter_mut() {
            drain_stream(s, &mut buf, &mut log, 1);
        }
        sup.check_deadlines(&mut log);
        if sup.main_status.is_some() {
            sup.reap();
            let live = sup.live_tree();
            if !live.is_empty() && !sup.leftovers_handled {
                sup.leftovers_handled = true;
                if sup.kill_at.is_none() {
                    let n = sup.signal_tree(libc::SIGTERM);
                    annotate(
                        &mut log,
                        &format!(
                            "main process ended ({}); SIGTERM to {n} leftover process{} of its tree",
                            sup.describe_main(),
                            if n == 1 { "" } else { "es" }
                        ),
                    );
                    sup.kill_at = Some(Instant::now() + sup.grace);
                    sup.kill_grace_ms = sup.grace.as_millis() as u64;
                }
            }
            if live.is_empty() {
                let since = *sup.tree_empty_since.get_or_insert_with(Instant::now);
                let pipes_open = streams.iter().any(|s| s.file.is_some());
                if !pipes_open || since.elapsed() >= DRAIN_LIMIT {
                    break;
                }
            }
        }
    }
    // One last non-blocking drain: anything written before the last writer died.
    for s in streams.iter_mut() {
        drain_stream(s, &mut buf, &mut log, usize::MAX);
    }
    let (exit_code, signal) = match sup.main_status {
        Some(MainStatus::Exited(c)) => (Some(c), None),
        Some(MainStatus::Signaled(s)) => (None, Some(s)),
        None => (None, None),
    };
    if log.dropped_bytes() > 0 {
        // One last try to say it (the head of the log is where a reader looks first).
        let dropped = log.dropped_bytes();
        annotate(
            &mut log,
            &format!(
                "{dropped} bytes of output could not be written to the log (disk full?) and are missing"
            ),
        );
    }
    let exit = ExitRecord {
        exit_code,
        signal,
        ended_at: Timestamp::now(),
        timed_out: sup.timed_out,
        stop: sup.stop,
        error: None,
        stdout_bytes: log.stdout_bytes(),
        stderr_bytes: log.stderr_bytes(),
    };
    // The result hangs on this file: it is written with the reserve, and retried until it lands.
    rd.write_durably(EXIT_FILE, &exit, RECORD_RETRY, None)?;
    rd.release_reserve();
    Ok(match (local, exit_code, signal) {
        (true, _, _) => 0,
        (false, Some(code), _) => code,
        (false, None, Some(sig)) => 128 + sig,
        (false, None, None) => 1,
    })
}

/// Ends a run whose command could not be started: says so in its log (and to the daemon when
/// `tell` and the run is local: the report it waits for), and writes its exit record, with
/// the shell's exit codes (127: not found, 126: not executable). Returns the shim's exit code.
fn not_started(
    rd: &RunDir,
    spec: &Spec,
    log: &mut LogWriter,
    program: &str,
    e: io::Error,
    tell: bool,
    local: bool,
) -> io::Result<i32> {
    let msg = format!("could not start {program:?} in {}: {e}", spec.cwd);
    let exit_code = match e.kind() {
        io::ErrorKind::NotFound => Some(127),
        io::ErrorKind::PermissionDenied => Some(126),
        _ => None,
    };
    annotate(log, &msg);
    if tell && local {
        report(&serde_json::json!({ "error": msg }));
    }
    let exit = ExitRecord {
        exit_code,
        signal: None,
        ended_at: Timestamp::now(),
        timed_out: false,
        stop: None,
        error: Some(msg),
        stdout_bytes: 0,
        stderr_bytes: 0,
    };
    rd.write_durably(EXIT_FILE, &exit, RECORD_RETRY, None)?;
    rd.release_reserve();
    Ok(if local { 0 } else { 127 })
}

/// What stays of the stack below the frame that gives the rest back (see
/// [`release_stack_below_here`]): the page under it, for the calls that follow.
const STACK_KEPT: usize = 4096;
/// How far below that the stack is given back: past the deepest a shim's start reaches
/// (about 20 KiB from the top), and within the gap the kernel keeps free below a stack.
const STACK_RELEASED: usize = 64 * 1024;

/// Gives back the pages of the main thread's stack below its caller's frame, once the start
/// is done: the spec's parse and the spawn reach about 20 KiB deep, and those pages would
/// otherwise stay in memory for the run's whole life, while the supervision loop needs a
/// fraction of it (a deeper call later gets zeroed pages, as any first use of a stack does).
/// Measured: 16–20 → 12 KiB of stack per running shim. Only on the main thread (a shim is
/// single-threaded; an embedder calling [`shim_main`] from another thread keeps its stack), whose
/// stack the kernel keeps a gap below.
#[inline(never)]
fn release_stack_below_here() {
    // SAFETY: gettid and getpid only return ids.
    if unsafe { libc::gettid() != libc::getpid() } {
        return;
    }
    let page = rustix::param::page_size();
    let here = std::hint::black_box(0u8);
    let sp = std::ptr::addr_of!(here) as usize;
    let Some(end) = (sp & !(page - 1)).checked_sub(STACK_KEPT) else {
        return;
    };
    let start = end.saturating_sub(STACK_RELEASED);
    // SAFETY: the range lies below this function's own frame and the page under it, so below
    // every live frame of the main thread (the shim has no other), whose data there is dead;
    // nothing else is mapped there (the kernel keeps a gap below a stack), and MADV_DONTNEED
    // of a private anonymous page only makes it read as zeros again.
    let done = unsafe {
        rustix::mm::madvise(
            start as *mut std::ffi::c_void,
            end - start,
            rustix::mm::Advice::LinuxDontNeed,
        )
    };
    match done {
        // ENOMEM: part of the range is not mapped (the stack never reached it); the rest is done.
        Ok(()) | Err(rustix::io::Errno::NOMEM) => {}
        Err(e) => note(format_args!(
            "aside shim: cannot give back unused stack: {e}"
        )),
    }
}

/// The buffer output is read into: anonymous memory mapped on its own, so that a page is in
/// memory only once output was read into it (from `malloc`, its first page would be dirtied
/// by the block's header in every shim, output or not).
struct ReadBuffer {
    start: std::ptr::NonNull<u8>,
    len: usize,
}

impl ReadBuffer {
    /// `len` bytes, zeroed; fails when the system has no memory to map.
    fn new(len: usize) -> io::Result<ReadBuffer> {
        use rustix::mm::{MapFlags, ProtFlags, mmap_anonymous};
        // SAFETY: a fresh private anonymous mapping aliases nothing; it is unmapped only in
        // `drop`, once no borrow of it is left.
        let start = unsafe {
            mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE,
            )?
        };
        let start = std::ptr::NonNull::new(start.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null address"))?;
        Ok(ReadBuffer { start, len })
    }
}

impl std::ops::Deref for ReadBuffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len` bytes mapped readable and writable for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.start.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for ReadBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, borrowed mutably through `&mut self` only.
        unsafe { std::slice::from_raw_parts_mut(self.start.as_ptr(), self.len) }
    }
}

impl Drop for ReadBuffer {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, with no borrow of it left.
        if let Err(e) = unsafe { rustix::mm::munmap(self.start.as_ptr().cast(), self.len) } {
            note(format_args!(
                "aside shim: cannot unmap the read buffer: {e}"
            ));
        }
    }
}

trait FlattenFiles<'a> {
    fn flatten_files(self) -> impl Iterator<Item = &'a File>;
}

impl<'a, I: Iterator<Item = &'a Stream>> FlattenFiles<'a> for I {
    fn flatten_files(self) -> impl Iterator<Item = &'a File> {
        self.filter_map(|s| s.file.as_ref())
    }
}

fn poll_fds(wake: &File, streams: &[Stream], wait: Option<Duration>) -> io::Result<()> {
    let mut fds: Vec<libc::pollfd> = std::iter::once(wake)
        .chain(streams.iter().flatten_files())
        .map(|f| libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let timeout = wait.map_or(-1, |d| d.as_millis().min(i32::MAX as u128) as i32 + 1);
    // SAFETY: fds is a valid slice of pollfd for the length given.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

/// Reads what a pipe has now, at most `max_reads` chunks (so one flooding stream cannot
/// starve the other or the signal checks); closes it at EOF.
fn drain_stream(s: &mut Stream, buf: &mut [u8], log: &mut LogWriter, max_reads: usize) {
    for _ in 0..max_reads {
        let Some(f) = s.file.as_mut() else { return };
        match f.read(buf) {
            Ok(0) => {
                s.file = None;
                return;
            }
            Ok(n) => {
                if let Err(e) = log.write(s.kind, &buf[..n], Timestamp::now()) {
                    // Keep draining: a full disk must not block the child on a full pipe. The
                    // bytes are counted as dropped; say so once per stretch of failures.
                    if log.failing_since_ok() == 1 {
                        note(format_args!("aside shim: log write failed: {e}"));
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                s.file = None;
                return;
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum MainStatus {
    Exited(i32),
    Signaled(i32),
}

struct Supervision {
    shim_pid: i32,
    pid: i32,
    grace: Duration,
    timeout_at: Option<Instant>,
    timeout_ms: u64,
    kill_at: Option<Instant>,
    /// The grace that set `kill_at`, for the annotation.
    kill_grace_ms: u64,
    main_status: Option<MainStatus>,
    timed_out: bool,
    stop: Option<StopControl>,
    leftovers_handled: bool,
    tree_empty_since: Option<Instant>,
}

impl Supervision {
    fn reap(&mut self) {
        loop {
            let mut status = 0;
            // SAFETY: waitpid with a valid out-pointer.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            if pid == self.pid {
                self.main_status = Some(if libc::WIFEXITED(status) {
                    MainStatus::Exited(libc::WEXITSTATUS(status))
                } else {
                    MainStatus::Signaled(libc::WTERMSIG(status))
                });
            }
        }
    }

    fn live_tree(&self) -> Vec<i32> {
        proc::descendants(self.shim_pid)
            .into_iter()
            .filter(|p| !p.is_zombie())
            .map(|p| p.pid)
            .collect()
    }

    /// Signals the main process group and every live process of the tree; returns how many
    /// processes of the tree were signalled.
    fn signal_tree(&self, sig: i32) -> usize {
        let live = self.live_tree();
        if self.main_status.is_none() {
            // SAFETY: kill(2) on the run's own process group.
            unsafe { libc::kill(-self.pid, sig) };
        }
        let n = proc::signal_all(live.iter().copied(), sig);
        if sig != libc::SIGKILL && sig != libc::SIGCONT {
            // A stopped process only acts on SIGTERM once continued (as systemd does).
            proc::signal_all(live.iter().copied(), libc::SIGCONT);
        }
        n
    }

    fn describe_main(&self) -> String {
        match self.main_status {
            Some(MainStatus::Exited(c)) => format!("exit {c}"),
            Some(MainStatus::Signaled(s)) => signal_name(s),
            None => "running".into(),
        }
    }

    fn stop(&mut self, ctl: StopControl, log: &mut LogWriter) {
        let n = self.signal_tree(ctl.signal);
        annotate(
            log,
            &format!(
                "stop requested by {}: {} to {n} process{}",
                ctl.requested_by,
                signal_name(ctl.signal),
                if n == 1 { "" } else { "es" }
            ),
        );
        let at = Instant::now() + Duration::from_millis(ctl.grace_ms);
        if self.kill_at.is_none_or(|k| at < k) {
            self.kill_at = Some(at);
            self.kill_grace_ms = ctl.grace_ms;
        }
        self.timeout_at = None;
        if self.stop.is_none() {
            self.stop = Some(ctl);
        }
    }

    fn check_deadlines(&mut self, log: &mut LogWriter) {
        let now = Instant::now();
        if self.timeout_at.is_some_and(|t| now >= t) {
            self.timeout_at = None;
            if self.main_status.is_none() {
                self.timed_out = true;
                let n = self.signal_tree(libc::SIGTERM);
                annotate(
                    log,
                    &format!(
                        "timed out after {}: SIGTERM to {n} process{}",
                        human_ms(self.timeout_ms),
                        if n == 1 { "" } else { "es" }
                    ),
                );
                self.kill_at = Some(now + self.grace);
                self.kill_grace_ms = self.grace.as_millis() as u64;
            }
        }
        if self.kill_at.is_some_and(|t| now >= t) {
            let n = self.signal_tree(libc::SIGKILL);
            if n > 0 {
                annotate(
                    log,
                    &format!(
                        "grace period of {} over: SIGKILL to {n} process{}",
                        human_ms(self.kill_grace_ms),
                        if n == 1 { "" } else { "es" }
                    ),
                );
            }
            // Keep killing until the tree is gone: a process may have forked meanwhile.
            self.kill_at = if n > 0 {
                Some(now + TREE_RECHECK)
            } else {
                None
            };
        }
    }
}

/// `1500` → `1.5s`, `30000` → `30s`, `250` → `250ms`.
pub fn human_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::{direct_program, shell_script};

    #[test]
    fn a_simple_commands_program_is_found_as_sh_exec_finds_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let file = |name: &str, text: &str, mode: u32| {
            let p = bin.join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let script = file("tool", "#!/bin/sh\necho hi\n", 0o755);
        file("bare", "echo no shebang\n", 0o755);
        file("data", "#!/bin/sh\n", 0o644);
        let cwd = dir.path().to_str().unwrap();
        let path = format!("/nonexistent:{}", bin.display());
        assert_eq!(
            direct_program("tool", cwd, Some(&path)),
            Some(script.clone())
        );
        assert_eq!(direct_program("bin/tool", cwd, None), Some(script));
        assert_eq!(
            direct_program("sh", cwd, Some("/bin")),
            Some("/bin/sh".into()),
            "an ELF binary"
        );
        // The shell's to run or to refuse: no shebang, not executable, not found, no PATH.
        assert_eq!(direct_program("bare", cwd, Some(&path)), None);
        assert_eq!(direct_program("data", cwd, Some(&path)), None);
        assert_eq!(direct_program("missing", cwd, Some(&path)), None);
        assert_eq!(direct_program("tool", cwd, None), None);
    }

    #[test]
    fn only_a_simple_command_is_execed() {
        for simple in [
            "sleep 600",
            "python3 -m http.server 8000",
            "cargo test --workspace",
            "./run.sh a=b",
        ] {
            assert_eq!(shell_script(simple), format!("exec {simple}"), "{simple}");
        }
        for shell in [
            "sleep 1; echo done",
            "a && b",
            "seq 10 | wc -l",
            "echo hi",
            "exit 3",
            "cd dir",
            "FOO=1 env",
            "ls *.rs",
            "echo $HOME",
            "cat <in",
            "printf 'x'",
            "sleep 5 &",
            "(sleep 1)",
            "run\nmore",
            "a\nb",
            "ls ~",
            "sleep 1\nsleep 2",
            "",
            "   ",
        ] {
            assert_eq!(shell_script(shell), shell, "{shell:?}");
        }
    }
}
