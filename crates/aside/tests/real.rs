//! Real input: a real dev server and a real build, as the README walks through them.

mod common;

use std::io::{Read, Write};

use common::*;

#[test]
fn dev_server_run_wait_until_request_logs_stop() {
    let env = Env::new();
    env.write("hello.txt", "hello from aside\n");
    env.run(&[
        "--name",
        "web",
        "python3 -u -m http.server 0 --bind 127.0.0.1",
    ]);
    let w = env
        .aside(&[
            "wait",
            "web",
            "--until",
            "port [0-9]+",
            "--regex",
            "--timeout",
            "30s",
            "--json",
        ])
        .ok()
        .json();
    let line = w["line"].as_str().unwrap().to_string();
    let port: u16 = line
        .split("port ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));

    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(conn, "GET /hello.txt HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut resp = String::new();
    conn.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.0 200"), "{resp}");
    assert!(resp.ends_with("hello from aside\n"), "{resp}");

    // The access log line arrives on stderr.
    env.aside(&[
        "wait",
        "web",
        "--until",
        "GET /hello.txt",
        "--timeout",
        "10s",
    ])
    .ok();
    let err = env
        .aside(&["logs", "web", "--stderr", "--tail", "1"])
        .ok()
        .stdout;
    assert!(err.contains("\"GET /hello.txt HTTP/1.0\" 200"), "{err}");

    let p = env.aside(&["stop", "web", "--json"]).ok().json();
    assert_eq!(p["status"], "stopped");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn cargo_build_of_a_small_crate_in_the_foreground() {
    let env = Env::new();
    let krate = env.work.join("tiny");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    std::fs::write(
        krate.join("Cargo.toml"),
        "[package]\nname = \"tiny\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(
        krate.join("src/main.rs"),
        "fn main() { println!(\"tiny ran\"); }\n",
    )
    .unwrap();
    let o = env.aside(&[
        "run",
        "--name",
        "build",
        "--cwd",
        krate.to_str().unwrap(),
        "--wait",
        "cargo build --offline && ./target/debug/tiny",
    ]);
    assert_eq!(o.code, 0, "stdout: {}\nstderr: {}", o.stdout, o.stderr);
    assert!(o.stderr.contains("Compiling tiny v0.1.0"), "{}", o.stderr);
    assert_eq!(o.stdout, "tiny ran\n");
    assert!(
        o.stderr.contains("[aside] build completed (exit 0)"),
        "{}",
        o.stderr
    );
    let r = env.aside(&["result", "build", "--json"]).ok().json();
    assert_eq!(r["status"], "completed");
    assert!(krate.join("target/debug/tiny").exists());
}
