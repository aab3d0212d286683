//! `aside-shim <run_dir>`: the per-process supervisor on its own, in a small binary so that each
//! running process costs little memory (see `aside_core::shim`). The daemon starts it from the
//! directory of the `aside` executable, and falls back to `aside __shim` when it is missing.

fn main() {
    std::process::exit(aside_core::shim::shim_main(std::env::args_os().skip(1)));
}
