//! Who may do what: the one table every request is judged by, whichever front end it came
//! through. The daemon's listeners only say who a request is from ([`Access`] and the owner the
//! request speaks for); everything else is decided by [`authorize`].
//!
//! | action | local user (socket) | dashboard token | member token | read-only member |
//! |---|---|---|---|---|
//! | look: list, events, stats, whoami | everything | everything | own + team's live | same |
//! | read one process: show, logs, result, history, wait | any | any | if it sees it | same |
//! | start: run, up | as any owner ¹ | as `human` | as the token's owner ¹ | no |
//! | control one process: stop, restart, stdin | any ² | any | own (team's with `team_may_stop`), if it sees it | no |
//! | stop all of an owner | any owner ² | any | own only | no |
//! | an owner's inbox, wake action, idle mark, session: read | any | any | own | own |
//! | the same: change | any ² | any | own | no |
//! | forget idle projects (`session clean`) | yes | yes | no | no |
//! | tokens, dashboard listener, sessions by process | yes | no | no | no |
//! | stop the daemon | yes | yes | no | no |
//!
//! ¹ An agent (an owner other than `human`) starts only processes it owns, as the permission
//! policy allows. ² For an agent speaking on the socket: only its own (or its team's with
//! `team_may_stop`); a `human` may do anything — the socket trusts the local user, and what binds
//! an agent to its own owner is what connects it (the MCP server, the hooks, member tokens).

use aside_proto::{Event, HUMAN_OWNER, ProcessInfo, TokenInfo};

/// How a request reached the daemon, set by the listener that took it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Access {
    /// The Unix socket: the local user.
    #[default]
    Local,
    /// The dashboard token over TCP: the local user in a browser.
    Web,
    /// A member token over TCP.
    Member(TokenInfo),
}

impl Access {
    /// The member, for member tokens.
    pub fn member(&self) -> Option<&TokenInfo> {
        match self {
            Access::Member(m) => Some(m),
            _ => None,
        }
    }

    /// How the request came, for the audit log: `socket`, `web` or `token:ID`.
    pub fn via(&self) -> String {
        match self {
            Access::Local => "socket".into(),
            Access::Web => "web".into(),
            Access::Member(m) => format!("token:{}", m.id),
        }
    }

    /// Whether this requester may see process `p`: everyone but members sees everything; a
    /// member sees their own processes and the live ones of their team.
    pub fn sees(&self, p: &ProcessInfo) -> bool {
        match self {
            Access::Member(m) => {
                p.owner == m.owner
                    || (m.team.is_some() && p.team == m.team && !p.status.is_terminal())
            }
            _ => true,
        }
    }

    /// Whether this requester may see event `e`: its own owner's, or a run event of a process
    /// it sees (a team's run ending is seen, as the running process was).
    pub fn sees_event(&self, e: &Event) -> bool {
        let Access::Member(m) = self else {
            return true;
        };
        if e.owner.as_deref() == Some(m.owner.as_str()) {
            return true;
        }
        match e.process() {
            Some(p) => m.team.is_some() && p.team == m.team,
            None => false,
        }
    }
}

/// What a request asks to do (one row of the table).
#[derive(Debug, Clone, Copy)]
pub enum Action<'a> {
    /// List processes, stream events or stats (answers are filtered by [`Access::sees`]).
    Look,
    /// Read one process: show, logs, result, history, wait.
    Read(&'a ProcessInfo),
    /// Start processes owned by `owner` (run, up).
    Start {
        /// The owner the new processes get.
        owner: &'a str,
    },
    /// Stop, restart or write to the stdin of one process.
    Control {
        /// The process.
        process: &'a ProcessInfo,
        /// What is asked, for the refusal: `stop`, `restart`, `write to`.
        verb: &'static str,
    },
    /// Stop every process of `owner`; `None`: of everyone the requester may stop.
    StopAll {
        /// Whose.
        owner: Option<&'a str>,
    },
    /// Read or change an owner's inbox, wake action, idle mark or host session.
    OwnerData {
        /// Whose.
        owner: &'a str,
        /// A change (ack, take, set, clear, idle, record) rather than a read.
        change: bool,
    },
    /// Forget the projects with nothing running.
    CleanProjects,
    /// Manage tokens, start the dashboard listener, look up host sessions by process.
    Admin,
    /// Stop the daemon.
    StopDaemon,
}

/// Why a request is refused: not found (what a member may not see does not exist for them), or
/// forbidden.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// Answer "not found".
    NotFound(String),
    /// Answer "forbidden", saying why.
    Forbidden(String),
}

/// Who asks: how the request came, the owner it speaks for, its team.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    /// The listener's word on who this is.
    pub access: &'a Access,
    /// The owner the request speaks for (a member's is the token's).
    pub owner: &'a str,
    /// Its team.
    pub team: Option<&'a str>,
}

/// Judges `action` for `who` by the table above; `team_may_stop` is the policy's.
pub fn authorize(who: Who<'_>, action: Action<'_>, team_may_stop: bool) -> Result<(), Denied> {
    let human = who.owner == HUMAN_OWNER;
    let controls = |owner: &str, team: Option<&str>| {
        human || who.owner == owner || (team_may_stop && who.team.is_some() && who.team == team)
    };
    let forbidden = |why: String| Err(Denied::Forbidden(why));
    match who.access {
        Access::Member(m) => {
            let unseen = |p: &ProcessInfo| {
                Denied::NotFound(format!(
                    "no process named or with id {:?} that {} may see: `aside status` lists those you may",
                    p.name, m.owner
                ))
            };
            let changes = match action {
                Action::Look | Action::Read(_) => false,
                Action::OwnerData { change, .. } => change,
                _ => true,
            };
            if m.read_only && changes {
                return forbidden(format!(
                    "token {} ({}) is read-only: it may look, not change anything",
                    m.id, m.owner
                ));
            }
            match action {
                Action::Look => Ok(()),
                Action::Read(p) => {
                    if who.access.sees(p) {
                        Ok(())
                    } else {
                        Err(unseen(p))
                    }
                }
                Action::Start { owner } if owner == m.owner => Ok(()),
                Action::Start { owner } => forbidden(format!(
                    "token {} acts as {}; it may not start processes for {owner}",
                    m.id, m.owner
                )),
                Action::Control { process: p, .. } if !who.access.sees(p) => Err(unseen(p)),
                Action::Control { process: p, .. } if controls(&p.owner, p.team.as_deref()) => {
                    Ok(())
                }
                Action::Control { process: p, verb } => forbidden(format!(
                    "{} may not {verb} {:?}: it is owned by {}",
                    m.owner, p.name, p.owner
                )),
                Action::StopAll { owner: None } => Ok(()),
                Action::StopAll { owner: Some(o) } if o == m.owner => Ok(()),
                Action::StopAll { owner: Some(o) } => forbidden(format!(
                    "token {} acts as {}; it may not stop the processes of {o}",
                    m.id, m.owner
                )),
                Action::OwnerData { owner, .. } if owner == m.owner => Ok(()),
                Action::OwnerData { owner, .. } => forbidden(format!(
                    "token {} acts as {}; it may not reach the inbox, wake action or session of {owner}",
                    m.id, m.owner
                )),
                Action::CleanProjects => forbidden(
                    "forgetting projects forgets every owner's: only the daemon's own user may (`aside session clean` on its machine)".into(),
                ),
                Action::Admin => forbidden(
                    "tokens, host sessions and the dashboard are managed on the daemon's machine, over its socket (`aside token`, `aside web`)".into(),
                ),
                Action::StopDaemon => {
                    forbidden("only the daemon's own user may stop it".into())
                }
            }
        }
        Access::Web if matches!(action, Action::Admin) => forbidden(
            "tokens, host sessions and the dashboard are managed on the daemon's machine, over its socket (`aside token`, `aside web`)".into(),
        ),
        Access::Local | Access::Web => match action {
            Action::Start { owner } if !human && owner != who.owner => forbidden(format!(
                "{} may not start processes for {owner}: an agent starts processes it owns",
                who.owner
            )),
            Action::Control { process: p, verb } if !controls(&p.owner, p.team.as_deref()) => {
                let also = if team_may_stop {
                    " or a member of its team"
                } else {
                    ""
                };
                forbidden(format!(
                    "{} may not {verb} {:?}: it is owned by {}; only its owner{also} or a human may {verb} it",
                    who.owner, p.name, p.owner
                ))
            }
            Action::StopAll { owner: Some(o) } if !human && o != who.owner => forbidden(
                format!("{} may not stop the processes of {o}", who.owner),
            ),
            Action::OwnerData {
                owner,
                change: true,
            } if !human && owner != who.owner => forbidden(format!(
                "{} may not change the inbox, wake action or session of {owner}",
                who.owner
            )),
            _ => Ok(()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aside_proto::Status;

    fn token(owner: &str, team: Option<&str>, read_only: bool) -> Access {
        Access::Member(TokenInfo {
            id: "t1".into(),
            owner: owner.into(),
            team: team.map(str::to_string),
            read_only,
            created_at: jiff::Timestamp::UNIX_EPOCH,
            last_used_at: None,
            revoked_at: None,
        })
    }

    fn process(owner: &str, team: Option<&str>, status: Status) -> ProcessInfo {
        serde_json::from_value(serde_json::json!({
            "id": "p1", "name": "job", "owner": owner, "team": team, "command": "true",
            "cwd": "/", "run_id": "r1", "restarts": 0, "status": status, "pid": null,
            "exit_code": null, "signal": null, "started_at": "2026-01-01T00:00:00Z",
            "ended_at": null, "duration_ms": 0, "stopped_by": null, "error": null,
        }))
        .unwrap()
    }

    fn ok(access: &Access, owner: &str, team: Option<&str>, a: Action<'_>, tms: bool) -> bool {
        authorize(
            Who {
                access,
                owner,
                team,
            },
            a,
            tms,
        )
        .is_ok()
    }

    #[test]
    fn every_row_of_the_table() {
        let local = Access::Local;
        let web = Access::Web;
        let alice = token("alice", Some("red"), false);
        let viewer = token("vera", Some("red"), true);
        let mine = process("alice", Some("red"), Status::Running);
        let teams = process("bob", Some("red"), Status::Running);
        let ended_team = process("bob", Some("red"), Status::Completed);
        let other = process("carol", None, Status::Running);
        // look
        for a in [&local, &web, &alice, &viewer] {
            assert!(ok(a, "x", None, Action::Look, false));
        }
        // read one process
        assert!(ok(
            &alice,
            "alice",
            Some("red"),
            Action::Read(&teams),
            false
        ));
        assert!(!ok(
            &alice,
            "alice",
            Some("red"),
            Action::Read(&ended_team),
            false
        ));
        assert!(matches!(
            authorize(
                Who {
                    access: &alice,
                    owner: "alice",
                    team: Some("red")
                },
                Action::Read(&other),
                false
            ),
            Err(Denied::NotFound(_))
        ));
        assert!(ok(
            &viewer,
            "vera",
            Some("red"),
            Action::Read(&teams),
            false
        ));
        // start
        assert!(ok(
            &local,
            "human",
            None,
            Action::Start { owner: "agent" },
            false
        ));
        assert!(!ok(
            &local,
            "agent",
            None,
            Action::Start { owner: "human" },
            false
        ));
        assert!(ok(
            &alice,
            "alice",
            None,
            Action::Start { owner: "alice" },
            false
        ));
        assert!(!ok(
            &viewer,
            "vera",
            None,
            Action::Start { owner: "vera" },
            false
        ));
        // control
        assert!(ok(
            &alice,
            "alice",
            Some("red"),
            Action::Control {
                process: &mine,
                verb: "stop"
            },
            false
        ));
        assert!(!ok(
            &alice,
            "alice",
            Some("red"),
            Action::Control {
                process: &teams,
                verb: "stop"
            },
            false
        ));
        assert!(ok(
            &alice,
            "alice",
            Some("red"),
            Action::Control {
                process: &teams,
                verb: "stop"
            },
            true
        ));
        assert!(!ok(
            &viewer,
            "vera",
            Some("red"),
            Action::Control {
                process: &teams,
                verb: "stop"
            },
            true
        ));
        assert!(!ok(
            &local,
            "agent",
            None,
            Action::Control {
                process: &other,
                verb: "stop"
            },
            false
        ));
        assert!(ok(
            &local,
            "human",
            None,
            Action::Control {
                process: &other,
                verb: "stop"
            },
            false
        ));
        assert!(ok(
            &web,
            "human",
            None,
            Action::Control {
                process: &other,
                verb: "stop"
            },
            false
        ));
        // stop all
        assert!(!ok(
            &alice,
            "alice",
            None,
            Action::StopAll {
                owner: Some("carol")
            },
            false
        ));
        assert!(ok(
            &alice,
            "alice",
            None,
            Action::StopAll {
                owner: Some("alice")
            },
            false
        ));
        assert!(!ok(
            &local,
            "agent",
            None,
            Action::StopAll {
                owner: Some("carol")
            },
            false
        ));
        assert!(ok(
            &local,
            "human",
            None,
            Action::StopAll {
                owner: Some("carol")
            },
            false
        ));
        // owner data
        let read = |o| Action::OwnerData {
            owner: o,
            change: false,
        };
        let change = |o| Action::OwnerData {
            owner: o,
            change: true,
        };
        assert!(ok(&alice, "alice", None, change("alice"), false));
        assert!(!ok(&alice, "alice", None, read("carol"), false));
        assert!(ok(&viewer, "vera", None, read("vera"), false));
        assert!(!ok(&viewer, "vera", None, change("vera"), false));
        assert!(!ok(&local, "agent", None, change("other"), false));
        assert!(ok(&local, "agent", None, read("other"), false));
        // clean, admin, daemon
        assert!(!ok(&alice, "alice", None, Action::CleanProjects, false));
        assert!(ok(&local, "human", None, Action::CleanProjects, false));
        assert!(!ok(&web, "human", None, Action::Admin, false));
        assert!(ok(&local, "human", None, Action::Admin, false));
        assert!(!ok(&alice, "alice", None, Action::StopDaemon, false));
        assert!(ok(&web, "human", None, Action::StopDaemon, false));
    }
}
