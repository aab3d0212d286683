//! `aside-shim <run_dir>`: the per-process supervisor on its own, in a small binary so that each
//! running process costs little memory (see `aside_core::shim`). The daemon starts it from the
//! directory of the `aside` executable (as a zygote, `--zygote`, that forks the shims), and
//! falls back to `aside __shim` when it is missing.
//!
//! It is entered as C's `main`, from the C library's start, without Rust's own runtime setup
//! (`#![no_main]`): none of what that sets up is used here (a main-thread record, a stack
//! overflow handler with its own stack, the stack's bounds read from `/proc/self/maps`), and it
//! stays in every running process's private memory (measured: 64 → 52 KiB for an empty
//! program). The one part the shim needs, SIGPIPE ignored, it does itself
//! (`aside_core::shim::shim_main`). The arguments come from `std::env` (glibc hands them to the
//! Rust standard library before `main`), copied before a forked shim writes over them.
#![no_main]

/// The shim's `main`, as the C library calls it; returns the exit status.
#[unsafe(no_mangle)]
extern "C" fn main(argc: std::ffi::c_int, argv: *const *const std::ffi::c_char) -> std::ffi::c_int {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    // SAFETY: C's own `argc` and `argv`; the standard library's copies are taken above, and
    // nothing else reads the strings.
    let title = unsafe { aside_core::shim::ArgSpace::from_main(argc, argv) };
    aside_core::shim::shim_main(args, title)
}
