//! Who may do what: the audit log, the agents' policy ([`crate::policy`]) and the access table
//! ([`crate::authz`]) applied to a requester — the one place a supervisor decides.

use std::sync::Arc;

use aside_proto::{ProcessInfo, Spec};
use jiff::Timestamp;

use crate::audit::AuditEntry;
use crate::policy::{Policy, Verdict};

use super::{Error, Requester, Result, Supervisor, lock};

impl Supervisor {
    pub(super) fn audit(&self, who: &Requester, action: &str, target: &str, refused: Option<&str>) {
        self.inner.audit.append(&AuditEntry {
            ts: Timestamp::now(),
            who: &who.owner,
            via: who.via.as_deref(),
            action,
            target,
            outcome: if refused.is_some() { "refused" } else { "done" },
            reason: refused,
        });
    }

    /// Refuses with `reason`, writing it to the audit log first.
    pub(super) fn refuse<T>(
        &self,
        who: &Requester,
        action: &str,
        target: &str,
        reason: String,
    ) -> Result<T> {
        self.audit(who, action, target, Some(&reason));
        Err(Error::Forbidden(reason))
    }

    /// What the daemon trusts when it judges an agent: its own environment and API ports.
    pub(crate) fn trusted(&self) -> crate::policy::Trusted {
        lock(&self.inner.trusted).clone()
    }

    /// Records that the daemon's API also listens on TCP `port`: no agent's probe or webhook
    /// may reach it.
    pub fn add_api_port(&self, port: u16) {
        let mut t = lock(&self.inner.trusted);
        if !t.api_ports.contains(&port) {
            t.api_ports.push(port);
        }
    }

    /// The policy for an agent's request; an invalid policy file refuses every agent request.
    pub(super) fn agent_policy(
        &self,
        who: &Requester,
        action: &str,
        target: &str,
    ) -> Result<Arc<Policy>> {
        self.inner.policy.current().or_else(|e| {
            self.refuse(
                who,
                action,
                target,
                format!(
                    "{e}; agent requests are refused until it is fixed (humans are not affected)"
                ),
            )
        })
    }

    /// Judges `action` for `who` by the one table ([`crate::authz`]); a refusal is audited.
    /// The policy's `team_may_stop` applies to agents (and an invalid policy refuses them).
    pub fn authorize(&self, who: &Requester, action: crate::authz::Action<'_>) -> Result<()> {
        use crate::authz::{Action, Denied, Who};
        let (verb, target) = match action {
            Action::Look => ("look", String::new()),
            Action::Read(p) => ("read", p.name.clone()),
            Action::Start { owner } => ("run", format!("as {owner}")),
            Action::Control { process, verb } => (verb, process.name.clone()),
            Action::StopAll { owner } => ("stop-all", owner.unwrap_or("everything").to_string()),
            Action::OwnerData { owner, .. } => ("owner", owner.to_string()),
            Action::CleanProjects => ("clean", "projects".into()),
            Action::Admin => ("admin", String::new()),
            Action::StopDaemon => ("daemon-stop", String::new()),
        };
        let team_may_stop = if who.is_human() || !matches!(action, Action::Control { .. }) {
            false
        } else {
            self.agent_policy(who, verb, &target)?.limits.team_may_stop
        };
        let asking = Who {
            access: &who.access,
            owner: &who.owner,
            team: who.team.as_deref(),
        };
        match crate::authz::authorize(asking, action, team_may_stop) {
            Ok(()) => Ok(()),
            Err(Denied::NotFound(why)) => Err(Error::NotFound(why)),
            Err(Denied::Forbidden(why)) => self.refuse(who, verb, &target, why),
        }
    }

    /// [`Supervisor::authorize`] of `verb`ing (`stop`, `restart`, `write to`) process `p`.
    pub(super) fn may_control(
        &self,
        who: &Requester,
        p: &ProcessInfo,
        verb: &'static str,
    ) -> Result<()> {
        self.authorize(who, crate::authz::Action::Control { process: p, verb })
    }

    /// Applies the policy to an agent starting `spec` for `owner`: command, cwd and limits.
    /// Fills in the policy's longest timeout and clamps a default log cap. `already_live`:
    /// the process itself is live and counted (a restart).
    pub(super) fn admit(
        &self,
        who: &Requester,
        owner: &str,
        team: Option<&str>,
        spec: &mut Spec,
        explicit_log_cap: bool,
        already_live: bool,
    ) -> Result<()> {
        if who.is_human() {
            return Ok(());
        }
        let cmd = spec.cmd.display();
        self.authorize(who, crate::authz::Action::Start { owner })?;
        let policy = self.agent_policy(who, "run", &cmd)?;
        let source = policy
            .source()
            .map_or("the built-in policy".to_string(), |p| {
                format!("policy {}", p.display())
            });
        let verdict = policy.judge(spec, &self.trusted());
        if let Verdict::Refused(why) = verdict {
            return self.refuse(who, "run", &cmd, format!("{source} refuses {cmd:?}: {why}"));
        }
        let limits = &policy.limits;
        let (by_owner, by_team) = self.store().live_counts(owner, team)?;
        let discount = usize::from(already_live);
        if by_owner.saturating_sub(discount) >= limits.max_processes_per_owner {
            return self.refuse(
                who,
                "run",
                &cmd,
                format!(
                    "{owner} already has {by_owner} running processes, the limit of {source} (max_processes_per_owner): stop one first"
                ),
            );
        }
        if let Some(t) = team
            && by_team.saturating_sub(discount) >= limits.max_processes_per_team
        {
            return self.refuse(
                who,
                "run",
                &cmd,
                format!(
                    "team {t} already has {by_team} running processes, the limit of {source} (max_processes_per_team)"
                ),
            );
        }
        if let Some(max) = limits.max_timeout_ms {
            match spec.timeout_ms {
                Some(t) if t > max => {
                    return self.refuse(
                        who,
                        "run",
                        &cmd,
                        format!("a timeout of {t} ms is longer than the {max} ms {source} allows (max_timeout)"),
                    );
                }
                Some(_) => {}
                None => spec.timeout_ms = Some(max),
            }
        }
        if spec.log_cap_bytes > limits.max_log_cap {
            if explicit_log_cap {
                return self.refuse(
                    who,
                    "run",
                    &cmd,
                    format!(
                        "a log cap of {} bytes is more than the {} bytes {source} allows (max_log_cap)",
                        spec.log_cap_bytes, limits.max_log_cap
                    ),
                );
            }
            spec.log_cap_bytes = limits.max_log_cap;
        }
        Ok(())
    }
}
