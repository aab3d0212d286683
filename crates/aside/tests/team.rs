//! Team access over the TCP listener: member tokens (visibility, read-only, revocation, runs as
//! the member, audit) through the real CLI with `--remote`, and the listener's refusals (no
//! token, foreign Host, foreign Origin) over raw HTTP.

mod common;

use std::time::Duration;

use common::{Env, eventually, http};
use serde_json::Value;

/// A daemon listening on a free loopback port; returns the port.
fn listening(env: &Env) -> u16 {
    env.aside(&["daemon", "start", "--listen", "127.0.0.1:0"])
        .ok();
    let web = env.aside(&["web", "--json"]).ok().json();
    web["port"].as_u64().expect("port") as u16
}

fn token(env: &Env, args: &[&str]) -> String {
    let mut a = vec!["token", "create", "--json"];
    a.extend_from_slice(args);
    env.aside(&a).ok().json()["token"]
        .as_str()
        .expect("token")
        .to_string()
}

/// `aside --remote … ARGS` with `token` in ASIDE_TOKEN.
fn remote(env: &Env, port: u16, token: &str, args: &[&str]) -> common::Out {
    env.command()
        .env("ASIDE_TOKEN", token)
        .arg("--remote")
        .arg(format!("http://127.0.0.1:{port}"))
        .args(args)
        .output()
        .expect("run aside")
        .into()
}

fn names(v: &Value) -> Vec<String> {
    let mut n: Vec<String> = v
        .as_array()
        .expect("a list")
        .iter()
        .map(|p| p["name"].as_str().unwrap_or_default().to_string())
        .collect();
    n.sort();
    n
}

#[test]
fn members_see_their_own_and_their_teams_running_processes_and_act_only_as_allowed() {
    let env = Env::new();
    let port = listening(&env);
    let bob_run = |name: &str, owner: &str, team: &str| {
        env.command()
            .env("ASIDE_OWNER", owner)
            .env("ASIDE_TEAM", team)
            .args(["run", "--json", "--name", name, "sleep 300"])
            .output()
            .expect("run");
    };
    bob_run("bob-web", "bob", "red");
    bob_run("carol-db", "carol", "blue");
    env.run(&["--name", "mine", "sleep 300"]);
    let alice = token(&env, &["--owner", "alice", "--team", "red"]);
    let viewer = token(&env, &["--owner", "vera", "--team", "red", "--read-only"]);

    // alice starts a process: it is hers, whatever owner the CLI claims.
    let started = remote(
        &env,
        port,
        &alice,
        &["run", "--json", "--name", "alice-job", "sleep 300"],
    )
    .ok()
    .json();
    assert_eq!(started["owner"], "alice");
    assert_eq!(started["team"], "red");

    // She sees her own and her team's running processes, not the human's nor team blue's.
    let seen = remote(&env, port, &alice, &["status", "--json"])
        .ok()
        .json();
    assert_eq!(names(&seen), ["alice-job", "bob-web"]);
    let hidden = remote(&env, port, &alice, &["logs", "carol-db"]);
    assert_eq!(hidden.code, 2, "{}", hidden.stderr);
    assert!(hidden.stderr.contains("alice may see"), "{}", hidden.stderr);

    // She may not stop bob's (no team_may_stop in the policy); the refusal is audited.
    let refused = remote(&env, port, &alice, &["stop", "bob-web"]);
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("owned by bob"),
        "{}",
        refused.stderr
    );
    assert_eq!(env.status("bob-web")["status"], "running");
    remote(&env, port, &alice, &["stop", "alice-job"]).ok();
    assert_eq!(env.status("alice-job")["status"], "stopped");

    // A read-only token reads but cannot stop, even its team's.
    let ro = remote(&env, port, &viewer, &["status", "--json"])
        .ok()
        .json();
    assert_eq!(names(&ro), ["bob-web"]);
    let ro_stop = remote(&env, port, &viewer, &["stop", "bob-web"]);
    assert_eq!(ro_stop.code, 1);
    assert!(ro_stop.stderr.contains("read-only"), "{}", ro_stop.stderr);
    assert_eq!(env.status("bob-web")["status"], "running");

    // Another owner's inbox is out of reach.
    let inbox = remote(&env, port, &alice, &["inbox", "--owner", "bob"]);
    assert_ne!(inbox.code, 0);

    // Token management is for the daemon's own user, on its socket.
    let manage = remote(&env, port, &alice, &["token", "list"]);
    assert_ne!(manage.code, 0);

    let audit = std::fs::read_to_string(env.home.join("audit.log")).expect("audit log");
    let lines: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by = |action: &str, outcome: &str| {
        lines
            .iter()
            .find(|l| l["who"] == "alice" && l["action"] == action && l["outcome"] == outcome)
    };
    let refusal = by("stop", "refused").expect("the refused stop is audited");
    assert!(
        refusal["via"].as_str().unwrap().starts_with("token:"),
        "{refusal}"
    );
    assert!(refusal["ts"].is_string());
    assert!(by("stop", "done").is_some(), "{audit}");
}

#[test]
fn a_revoked_token_is_refused_at_once() {
    let env = Env::new();
    let port = listening(&env);
    let made = env
        .aside(&["token", "create", "--owner", "dana", "--json"])
        .ok()
        .json();
    let secret = made["token"].as_str().unwrap().to_string();
    let id = made["info"]["id"].as_str().unwrap().to_string();
    remote(&env, port, &secret, &["status"]).ok();
    let listed = env.aside(&["token", "list", "--json"]).ok().json();
    assert_eq!(listed[0]["id"], id.as_str());
    assert!(listed[0]["last_used_at"].is_string(), "{listed}");
    assert!(
        !env.aside(&["token", "list"]).ok().stdout.contains(&secret),
        "secrets are never listed"
    );

    env.aside(&["token", "revoke", &id]).ok();
    let after = remote(&env, port, &secret, &["status"]);
    assert_eq!(after.code, 1);
    assert!(after.stderr.contains("not valid"), "{}", after.stderr);
    let (code, _) = http(
        port,
        &format!(
            "GET /v1/processes HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {secret}"
        ),
        "",
    );
    assert_eq!(code, 401);
    assert!(
        env.aside(&["token", "list"])
            .ok()
            .stdout
            .contains("revoked")
    );
    let unknown = env.aside(&["token", "revoke", "nope"]);
    assert_eq!(unknown.code, 2, "{}", unknown.stderr);
    let human = env.aside(&["token", "create", "--owner", "human"]);
    assert_eq!(human.code, 1);
    assert!(
        human.stderr.contains("cannot act as `human`"),
        "{}",
        human.stderr
    );
}

#[test]
fn the_listener_refuses_no_token_foreign_hosts_and_foreign_origins() {
    let env = Env::new();
    let port = listening(&env);
    let web = env.aside(&["web", "--json"]).ok().json();
    let url = web["url"].as_str().unwrap().to_string();
    let secret = url
        .split("token=")
        .nth(1)
        .expect("token in the url")
        .to_string();
    let p = env.run(&["--name", "keep", "sleep 300"]);
    let id = p["id"].as_str().unwrap();
    let host = format!("Host: 127.0.0.1:{port}");
    let auth = format!("Authorization: Bearer {secret}");

    // No token: the page explains, the API refuses.
    let (code, page) = http(port, &format!("GET / HTTP/1.1\r\n{host}"), "");
    assert_eq!(code, 401);
    assert!(page.contains("aside web"), "{page}");
    let (code, _) = http(port, &format!("GET /v1/processes HTTP/1.1\r\n{host}"), "");
    assert_eq!(code, 401);

    // The hand-over: the token becomes an HttpOnly SameSite=Strict cookie, then leaves the URL.
    let (code, answer) = http(
        port,
        &format!("GET /?token={secret} HTTP/1.1\r\n{host}"),
        "",
    );
    assert_eq!(code, 303, "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(
        lower.contains(&format!(
            "set-cookie: aside_{port}={secret}; httponly; samesite=strict"
        )),
        "{answer}"
    );
    assert!(lower.contains("location: /\r\n"), "{answer}");
    let cookie = format!("Cookie: aside_{port}={secret}");
    let (code, _) = http(port, &format!("GET / HTTP/1.1\r\n{host}\r\n{cookie}"), "");
    assert_eq!(code, 200);

    // DNS rebinding: a foreign Host is refused even with a valid token.
    let (code, answer) = http(
        port,
        &format!("GET /v1/processes HTTP/1.1\r\nHost: evil.example:{port}\r\n{auth}"),
        "",
    );
    assert_eq!(code, 403, "{answer}");

    // CSRF: a change from a foreign Origin is refused, and so is a cookie change with none.
    let stop = format!(
        "POST /v1/processes/{id}/stop HTTP/1.1\r\n{host}\r\nContent-Type: application/json"
    );
    let (code, answer) = http(
        port,
        &format!("{stop}\r\n{cookie}\r\nOrigin: http://evil.example"),
        "{}",
    );
    assert_eq!(code, 403, "{answer}");
    let (code, answer) = http(port, &format!("{stop}\r\n{cookie}"), "{}");
    assert_eq!(code, 403, "{answer}");
    // A GET cannot stop anything.
    let (code, _) = http(
        port,
        &format!("GET /v1/processes/{id}/stop HTTP/1.1\r\n{host}\r\n{cookie}"),
        "",
    );
    assert_eq!(code, 405);
    assert_eq!(env.status("keep")["status"], "running");

    // The same origin may.
    let (code, answer) = http(
        port,
        &format!("{stop}\r\n{cookie}\r\nOrigin: http://127.0.0.1:{port}"),
        "{}",
    );
    assert_eq!(code, 200, "{answer}");
    eventually(Duration::from_secs(10), "the stop", || {
        env.status("keep")["status"] == "stopped"
    });
    let audit = std::fs::read_to_string(env.home.join("audit.log")).expect("audit log");
    assert!(
        audit.contains(r#""who":"human","via":"web","action":"stop""#),
        "{audit}"
    );
}

#[test]
fn listening_is_loopback_only() {
    let env = Env::new();
    let out = env.aside(&["daemon", "start", "--listen", "0.0.0.0:7000"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("loopback only"), "{}", out.stderr);
    let bad = env.aside(&["--remote", "https://example.com:1", "status"]);
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("only http://"), "{}", bad.stderr);
}

#[test]
fn the_table_of_who_may_do_what_holds_for_members_over_tcp() {
    let env = Env::new();
    let port = listening(&env);
    env.aside(&["run", "--name", "carol-db", "--owner", "carol", "sleep 300"])
        .ok();
    env.aside(&["session", "list"]).ok();
    let dana = token(&env, &["--owner", "dana"]);
    let viewer = token(&env, &["--owner", "vera", "--read-only"]);
    let refused = |o: common::Out, why: &str| {
        assert_ne!(o.code, 0, "refused: {}", o.stdout);
        assert!(o.stderr.contains(why), "{why}: {}", o.stderr);
    };
    // Stop everything of another owner: refused, and nothing of theirs stops.
    refused(
        remote(&env, port, &dana, &["stop-all", "--owner", "carol"]),
        "may not stop the processes of carol",
    );
    assert_eq!(env.status("carol-db")["status"], "running");
    // Forgetting projects forgets everyone's: not for members.
    refused(
        remote(&env, port, &dana, &["session", "clean"]),
        "only the daemon's own user",
    );
    // Another owner's wake action or inbox: out of reach; one's own: fine.
    refused(
        remote(&env, port, &dana, &["wake", "show", "--owner", "carol"]),
        "acts as dana",
    );
    remote(&env, port, &dana, &["inbox", "--owner", "dana"]).ok();
    // Read-only: reads its own inbox, starts nothing, acknowledges nothing.
    remote(&env, port, &viewer, &["inbox", "--owner", "vera"]).ok();
    refused(
        remote(&env, port, &viewer, &["run", "echo hi"]),
        "read-only",
    );
    refused(
        remote(
            &env,
            port,
            &viewer,
            &["inbox", "--owner", "vera", "--drain"],
        ),
        "read-only",
    );
    // The daemon and its tokens are the local user's.
    refused(remote(&env, port, &dana, &["daemon", "stop"]), "");
    let (code, _) = http(
        port,
        &format!(
            "POST /v1/daemon/stop HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {dana}\r\nContent-Type: application/json"
        ),
        "{}",
    );
    assert_eq!(code, 403);
    env.aside(&["daemon", "status"]).ok();
    // A member's own stop-all stops only their own.
    remote(
        &env,
        port,
        &dana,
        &["run", "--name", "dana-job", "sleep 300"],
    )
    .ok();
    remote(&env, port, &dana, &["stop-all"]).ok();
    assert_eq!(env.status("dana-job")["status"], "stopped");
    assert_eq!(env.status("carol-db")["status"], "running");
}

#[test]
fn idle_connections_to_the_listener_starve_nobody_and_are_closed() {
    use std::io::Read;
    let env = Env::new();
    let port = listening(&env);
    // Far more idle connections than the listener holds (256), none sending a byte.
    let idle: Vec<std::net::TcpStream> = (0..400)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    assert!(idle.len() > 256, "{} connections opened", idle.len());
    // The local user's socket is served as ever.
    env.run(&["--name", "still-served", "true"]);
    env.aside(&["status", "--all"]).ok();
    // Idle connections are closed by the daemon: within the header timeout (10 s), or at once
    // beyond the cap.
    let mut first = idle.into_iter().next().expect("a connection");
    first
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 1];
    let started = std::time::Instant::now();
    let n = first
        .read(&mut buf)
        .expect("the daemon closes it (a read timeout means it never did)");
    assert_eq!(n, 0, "closed without an answer");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "closed in time"
    );
    // Once they are gone, members are served again.
    let t = token(&env, &["--owner", "zed"]);
    eventually(
        Duration::from_secs(20),
        "the listener to serve again",
        || remote(&env, port, &t, &["status"]).code == 0,
    );
}
