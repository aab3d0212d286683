//! The event stream: subscribe, replay from the durable log, and the live stream a client
//! follows (Server-Sent Events in the daemon). The invariant it keeps: every event once, in
//! sequence order, none lost — subscribe first, replay from the table, skip what was sent,
//! replay again when a slow reader lagged.

use aside_proto::Event;
use tokio::sync::broadcast;

use super::{Result, Supervisor};

impl Supervisor {
    /// Live events from now on. Subscribe before reading [`Supervisor::events_since`] and
    /// skip sequence numbers already seen: then nothing falls between replay and live. A
    /// receiver that lags behind gets `Lagged` and should replay from the log.
    pub fn subscribe_events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Logged events after `since` (oldest first, at most `limit`), of `owner` when given.
    pub fn events_since(
        &self,
        since: u64,
        owner: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Event>> {
        Ok(self.store().events_since(since, owner, limit)?)
    }

    /// The newest event's sequence number (0 when none).
    pub fn last_event_seq(&self) -> Result<u64> {
        Ok(self.store().last_event_seq()?)
    }

    /// Every event after `since`, in sequence order, then the new ones as they happen, each
    /// once — the invariant *events in order, none lost*: it subscribes before it reads the log
    /// (so nothing falls between), skips the sequence numbers the replay sent, and replays from
    /// the log again when it falls behind the live channel. `owner` filters in the store; the
    /// stream ends when the daemon's events close.
    pub fn event_stream(
        &self,
        since: u64,
        owner: Option<String>,
    ) -> impl futures_util::Stream<Item = Event> + Send + use<> {
        struct St {
            sup: Supervisor,
            rx: broadcast::Receiver<Event>,
            backlog: std::collections::VecDeque<Event>,
            last: u64,
            replaying: bool,
            owner: Option<String>,
        }
        // Subscribe first, then read the log.
        let st = St {
            sup: self.clone(),
            rx: self.subscribe_events(),
            backlog: Default::default(),
            last: since,
            replaying: true,
            owner,
        };
        futures_util::stream::unfold(st, |mut st| async move {
            loop {
                if let Some(e) = st.backlog.pop_front() {
                    st.last = e.seq;
                    return Some((e, st));
                }
                if st.replaying {
                    match st
                        .sup
                        .events_since(st.last, st.owner.as_deref(), REPLAY_BATCH)
                    {
                        Ok(batch) if !batch.is_empty() => {
                            st.backlog.extend(batch);
                            continue;
                        }
                        Ok(_) => st.replaying = false,
                        Err(e) => {
                            tracing::error!("event replay failed: {e}");
                            return None;
                        }
                    }
                }
                match st.rx.recv().await {
                    Ok(e)
                        if e.seq > st.last
                            && st
                                .owner
                                .as_ref()
                                .is_none_or(|o| e.owner.as_ref() == Some(o)) =>
                    {
                        st.backlog.push_back(e)
                    }
                    Ok(_) => {}
                    // Fell behind the live channel: the log has everything.
                    Err(broadcast::error::RecvError::Lagged(_)) => st.replaying = true,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }
}

/// Events read from the log per replay step.
pub(super) const REPLAY_BATCH: usize = 500;
