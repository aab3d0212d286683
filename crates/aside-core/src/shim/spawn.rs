//! Starting the command: `fork`, then `execvpe` in the child, told apart so that the shim has
//! the pid (and can report it) while the child is still on its way to `exec`.
//!
//! `std::process::Command::spawn` returns only once the child's `exec` succeeded (or failed):
//! 250 µs from the fork measured on a 2-core VM, which the answer to `run` waited for. Here the
//! shim reports the pid as soon as `fork` returns (after `shim.json`), while the child execs on
//! the other core, and only then learns from a close-on-exec pipe whether `exec` happened
//! (measured: the daemon's side of `run` 130 µs shorter). Everything that can be found wrong
//! beforehand (a program not on `PATH` or not executable, a NUL byte) is found before the
//! fork, so that `run` still answers with it; what is left to fail after the pid is out is a
//! race (the working directory removed, the program replaced or open for writing meanwhile),
//! and ends the run as failed with the same message, through its exit record.
//!
//! The child does what `std::process` does in its child (the same order: descriptors, signal
//! mask, SIGPIPE back to its default, the working directory), then `setsid`, then `execvpe`,
//! calling only async-signal-safe functions on what was built before the fork.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// `confstr(_CS_PATH)` on glibc: where `execvp` looks when the environment has no `PATH`.
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// A command ready to start: what `execvpe` takes, built before the fork.
pub(super) struct Launch {
    program: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
    cwd: CString,
}

/// The step of the child's start that failed (sent with its errno).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Descriptors = 1,
    Cwd = 2,
    Session = 3,
    Exec = 4,
}

/// A forked child on its way to `exec`: its pid, and the pipe that tells how that went.
pub(super) struct Forked {
    pub pid: i32,
    status: OwnedFd,
}

fn cstring(what: &str, bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the {what} holds a NUL byte"),
        )
    })
}

/// The program `execvp` would run for `name` in `cwd` with `path` (a run's `PATH`; glibc's
/// default without one): `name` itself when it holds a `/` (relative to `cwd`, as after the
/// child's `chdir`), else the first executable file of that name on `path`. Errors: `NotFound`
/// when there is none, or `PermissionDenied` when there are only files that are not
/// executable (what `execvp` would say).
pub(super) fn find_program(name: &str, cwd: &str, path: Option<&str>) -> io::Result<PathBuf> {
    if name.is_empty() {
        return Err(io::ErrorKind::NotFound.into());
    }
    let candidates: Vec<PathBuf> = if name.contains('/') {
        vec![Path::new(cwd).join(name)]
    } else {
        // An empty entry is the working directory, as for `execvp`.
        let path = path.unwrap_or(DEFAULT_PATH);
        path.split(':')
            .map(|d| Path::new(cwd).join(d).join(name))
            .collect()
    };
    let mut denied = false;
    for candidate in candidates {
        if !candidate.is_file() {
            continue;
        }
        if rustix::fs::access(&candidate, rustix::fs::Access::EXEC_OK).is_ok() {
            return Ok(candidate);
        }
        denied = true;
    }
    Err(if denied {
        io::ErrorKind::PermissionDenied.into()
    } else {
        io::ErrorKind::NotFound.into()
    })
}

/// The null-terminated array of pointers into `strings` that `execvpe` takes.
fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

impl Launch {
    /// `program` run with `argv` (its first word is the program's name for itself) and exactly
    /// `env`, in `cwd`. Errors: a NUL byte in any of them.
    pub(super) fn new<'a>(
        program: &Path,
        argv: impl IntoIterator<Item = &'a OsStr>,
        env: impl IntoIterator<Item = (&'a OsStr, &'a OsStr)>,
        cwd: &str,
    ) -> io::Result<Launch> {
        let argv = argv
            .into_iter()
            .map(|a| cstring("command", a.as_bytes()))
            .collect::<io::Result<Vec<_>>>()?;
        let env = env
            .into_iter()
            .map(|(k, v)| {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                cstring("environment", &kv)
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Launch {
            program: cstring("program", program.as_os_str().as_bytes())?,
            argv,
            env,
            cwd: cstring("working directory", cwd.as_bytes())?,
        })
    }

    /// Forks the child that becomes the command, with `stdio` as its stdin, stdout and stderr
    /// (the parent's copies are closed on return). Errors: the fork or the status pipe failed;
    /// nothing was started.
    pub(super) fn fork(&self, stdio: [OwnedFd; 3]) -> io::Result<Forked> {
        let argv = pointers(&self.argv);
        let envp = pointers(&self.env);
        let (status_r, status_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let fds = stdio.each_ref().map(|f| f.as_raw_fd());
        // SAFETY: the shim is single-threaded, and the child calls only async-signal-safe
        // functions on memory built before the fork, then execs or exits.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: in the child, see above.
            unsafe { self.child(fds, &argv, &envp, status_w.as_raw_fd()) }
        }
        drop(status_w);
        drop(stdio);
        Ok(Forked {
            pid,
            status: status_r,
        })
    }

    /// The child's side: never returns.
    ///
    /// # Safety
    /// Only in the child of a fork of a single-threaded process; `argv` and `envp` are
    /// null-terminated arrays of pointers into `self`.
    unsafe fn child(
        &self,
        fds: [RawFd; 3],
        argv: &[*const libc::c_char],
        envp: &[*const libc::c_char],
        status_w: RawFd,
    ) -> ! {
        let fail = |step: Step| -> ! {
            let errno = io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
            let mut msg = [0u8; 5];
            msg[..4].copy_from_slice(&errno.to_le_bytes());
            msg[4] = step as u8;
            // SAFETY: write and _exit are async-signal-safe; msg outlives the call.
            unsafe {
                libc::write(status_w, msg.as_ptr().cast(), msg.len());
                libc::_exit(127)
            }
        };
        // SAFETY (the block): async-signal-safe calls on descriptors and memory we own.
        unsafe {
            for (target, &fd) in fds.iter().enumerate() {
                let target = target as RawFd;
                let done = if fd == target {
                    // Already in place: only its close-on-exec flag must go.
                    libc::fcntl(fd, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, target)
                };
                if done < 0 {
                    fail(Step::Descriptors);
                }
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            // The shim ignores SIGPIPE; its command gets the default back (as std does).
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            if libc::chdir(self.cwd.as_ptr()) < 0 {
                fail(Step::Cwd);
            }
            if libc::setsid() < 0 {
                fail(Step::Session);
            }
            // execvpe: a file without `#!` that the kernel does not run goes to `sh`, as with
            // `execvp` (the program is a path already: nothing is searched).
            libc::execvpe(self.program.as_ptr(), argv.as_ptr(), envp.as_ptr());
            fail(Step::Exec)
        }
    }
}

impl Forked {
    /// Waits until the child has exec'd (`Ok`) or failed to. Errors: what failed, of the kind
    /// of its errno (`NotFound`, `PermissionDenied`, …); the child has exited (127) and is
    /// reaped here.
    pub(super) fn exec_result(self) -> io::Result<()> {
        let mut msg = [0u8; 5];
        let mut got = 0;
        while got < msg.len() {
            match rustix::io::read(&self.status, &mut msg[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if got == 0 {
            return Ok(()); // closed by the exec
        }
        let os = io::Error::from_raw_os_error(i32::from_le_bytes([msg[0], msg[1], msg[2], msg[3]]));
        let step = match msg[4] {
            x if x == Step::Descriptors as u8 => Some("its standard descriptors"),
            x if x == Step::Cwd as u8 => Some("its working directory"),
            x if x == Step::Session as u8 => Some("its own session"),
            _ => None,
        };
        let mut status = 0;
        // SAFETY: waitpid on our own child, with a valid pointer.
        unsafe { libc::waitpid(self.pid, &mut status, 0) };
        Err(match step {
            Some(what) => io::Error::new(os.kind(), format!("{what}: {os}")),
            None => os,
        })
    }
}
