//! Results and the inbox: a run's result, an owner's pending results, taking a batch within a
//! byte budget under one lock (so no two answers carry the same result), and acknowledging.

use aside_proto::{AckResponse, InboxResponse, Notification, RunResult, TakeResponse};
use jiff::Timestamp;

use super::{Result, Supervisor};

impl Supervisor {
    /// The result of a process's latest run, once it has ended.
    pub fn result(&self, reference: &str) -> Result<Option<RunResult>> {
        let row = self.find(reference)?;
        Ok(self.store().result(&row.info.run_id)?)
    }

    /// Unacknowledged notifications of `owner`, oldest first; with `deliverable`, only those no
    /// resumed host session is being given right now (what a hook or tool answer may show).
    pub fn inbox(&self, owner: &str, deliverable: bool) -> Result<InboxResponse> {
        let store = self.store();
        Ok(InboxResponse {
            notifications: if deliverable {
                store.deliverable(owner)?
            } else {
                store.inbox(owner)?
            },
        })
    }

    /// Takes `owner`'s deliverable results for showing to a model: oldest first within
    /// `max_bytes` of rendered blocks ([`crate::present::notification_block`]; at least one),
    /// acknowledged together with `also_ack` under one store lock, so concurrent callers never
    /// take the same result. Returns them and how many deliverable ones are left.
    pub fn take(
        &self,
        owner: &str,
        max_bytes: Option<usize>,
        also_ack: &[String],
    ) -> Result<TakeResponse> {
        let mut store = self.store();
        let offered: Vec<Notification> = store
            .deliverable(owner)?
            .into_iter()
            .filter(|n| !also_ack.contains(&n.id.0))
            .collect();
        let offered_count = offered.len();
        let mut used = 0usize;
        let mut taken = Vec::new();
        for n in offered {
            let size = crate::present::notification_block(&n).len();
            if max_bytes.is_some_and(|m| !taken.is_empty() && used + size > m) {
                break;
            }
            used += size;
            taken.push(n);
        }
        let more = offered_count - taken.len();
        let mut ids: Vec<String> = taken.iter().map(|n| n.id.to_string()).collect();
        ids.extend(also_ack.iter().cloned());
        let (acked, events) = store.ack(owner, &ids, false, Timestamp::now())?;
        drop(store);
        self.publish(&events);
        let notifications = acked
            .into_iter()
            .filter(|n| !also_ack.contains(&n.id.0))
            .collect();
        Ok(TakeResponse {
            notifications,
            more,
        })
    }

    /// Acknowledges notifications of `owner` (`all`: every pending one).
    pub fn ack(&self, owner: &str, ids: &[String], all: bool) -> Result<AckResponse> {
        let mut store = self.store();
        let (acked, events) = store.ack(owner, ids, all, Timestamp::now())?;
        self.publish(&events);
        Ok(AckResponse { acked })
    }
}
