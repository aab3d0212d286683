//! `aside-shim <run_dir>`: the per-process supervisor on its own, in a small binary so that each
//! running process costs little memory (see `aside_core::shim`). The daemon starts it from the
//! directory of the `aside` executable, and falls back to `aside __shim` when it is missing.

fn main() {
    let code = match std::env::args_os().nth(1) {
        Some(dir) => aside_core::shim::shim_main(std::path::Path::new(&dir)),
        None => {
            eprintln!("usage: aside-shim <run_dir> (started by the aside daemon, not by hand)");
            2
        }
    };
    std::process::exit(code);
}
