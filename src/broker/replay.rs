//! Retained messages for a new subscription [MQTT-3.3.1-9], sent from a cursor as
//! the subscriber takes them rather than all at once: a SUBSCRIBE queues one
//! [`Replay`] per filter in its session, and the server calls
//! [`Broker::poll_replay`] every loop turn (and [`Broker::handle_writable`] when a
//! stuck socket can take more; acks wake a replay waiting for the window). A
//! replay that must wait is parked, costing nothing. Each turn spends a bounded amount of
//! work, and a session only gets more while its socket has drained below a high
//! water mark (QoS 0) and its in-flight window has room (QoS 1/2), so every
//! retained message reaches a subscriber that reads, memory stays bounded, and
//! other clients are not delayed (issue 10 item 4). Never touches a socket.

use std::sync::Arc;
use std::time::Instant;

use super::message::Message;
use super::retained::Step;
use super::session::Outgoing;
use super::{Broker, ConnId, Output};
use crate::protocol::QoS;

/// Work units (store entries visited, one more per 64 bytes of topic) spent on
/// replays per loop turn, all sessions together: about a millisecond.
const TURN_BUDGET: usize = 8192;
/// Most of a turn's budget one session may take, so several replays share it.
const SESSION_SLICE: usize = 2048;
/// Bytes waiting on a subscriber's socket above which its replay waits for the
/// socket to drain (kept under `max_pending_bytes`, the QoS 0 drop threshold).
const HIGH_WATER: usize = 64 * 1024;
/// Most replays one session may have pending; a SUBSCRIBE beyond it sends no
/// retained messages for its filters (a client re-subscribing faster than it
/// reads, as only a hostile one does).
const MAX_PENDING: usize = 10_000;

/// Retained messages still to send for one subscription.
#[derive(Debug)]
pub struct Replay {
    /// The subscription's filter (plain, not shared).
    filter: Box<str>,
    /// Granted QoS: the ceiling of each delivery.
    qos: QoS,
    /// Subscription identifier (v5).
    identifier: Option<u32>,
    /// The last message visited: the scan resumes after its topic. Holding the
    /// message (not a copy of its topic) keeps the cursor valid if it leaves the store.
    after: Option<Arc<Message>>,
    /// Store sequence number when the subscription was made: messages stored
    /// later reached the subscriber as live messages and are skipped.
    upto: u64,
}

/// How a session's replay ended its slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// Nothing left to send (or the session is gone).
    Done,
    /// Waiting for the socket to drain or an ack to open the window.
    Blocked,
    /// The slice was spent with work left.
    Budget,
    /// The session has no connection: resumed when it comes back.
    Offline,
}

impl Broker {
    /// Queue the retained messages matching `filter` for session `skey`; they go
    /// out from the next [`Broker::poll_replay`]. Returns false when the session
    /// already has [`MAX_PENDING`] replays waiting.
    pub(super) fn start_replay(
        &mut self,
        skey: usize,
        filter: &str,
        qos: QoS,
        identifier: Option<u32>,
    ) -> bool {
        if self.retained.is_empty() {
            return true;
        }
        let upto = self.retained.seq();
        let Some(s) = self.sessions.get_mut(skey) else {
            return true;
        };
        if s.extra.replays.len() >= MAX_PENDING {
            return false;
        }
        if s.extra.replays.is_empty() {
            self.replaying.push(skey);
        }
        s.extra.replays.push_back(Replay {
            filter: filter.into(),
            qos,
            identifier,
            after: None,
            upto,
        });
        true
    }

    /// A persistent session with replays pending has a connection again.
    pub(super) fn resume_replay(&mut self, skey: usize) {
        if self
            .sessions
            .get(skey)
            .is_some_and(|s| !s.extra.replays.is_empty())
        {
            self.replaying.push(skey);
        }
    }

    /// Send retained messages owed to new subscriptions, within this turn's work
    /// budget and each subscriber's room. The server calls it every loop turn
    /// after flushing (so room reflects what the sockets took). Returns true when
    /// work is left that may go on at once (the budget ran out, or a replay sent
    /// something before it had to wait): the server should not sleep before
    /// calling again. When every replay is waiting, with nothing sent, for a
    /// socket to drain or for an ack, it returns false: the writable event or the
    /// ack brings the next turn.
    pub fn poll_replay(&mut self, now: Instant, out: &mut impl Output) -> bool {
        if self.replaying.is_empty() {
            return false;
        }
        let mut list = std::mem::take(&mut self.replaying);
        list.sort_unstable();
        list.dedup();
        // Start where the last turn's budget ran out, so every session gets turns.
        let start = self.replay_next % list.len();
        list.rotate_left(start);
        let mut budget = TURN_BUDGET;
        let mut again = false;
        let mut keep = Vec::with_capacity(list.len());
        let mut next = None;
        for skey in list {
            if budget == 0 {
                next.get_or_insert(skey);
                keep.push(skey);
                again = true;
                continue;
            }
            let mut slice = budget.min(SESSION_SLICE);
            let given = slice;
            let progress = self.replay_session(now, skey, &mut slice, out);
            let spent = given - slice;
            budget -= spent;
            match progress {
                Progress::Done | Progress::Offline => {}
                // Blocked after sending: the server's flush may still take it all
                // (the socket drained meanwhile) and then no writable event will
                // come, so look again next turn. Blocked without sending: parked
                // until `handle_writable` or an ack wakes it, so replays waiting
                // on slow readers cost the loop nothing.
                Progress::Blocked if spent > 0 => {
                    keep.push(skey);
                    again = true;
                }
                Progress::Blocked => {}
                Progress::Budget => {
                    keep.push(skey);
                    again = true;
                }
            }
        }
        self.replay_next = next
            .and_then(|n| keep.iter().position(|&k| k == n))
            .unwrap_or(0);
        // Sessions that subscribed during this call were pushed meanwhile.
        keep.append(&mut self.replaying);
        self.replaying = keep;
        again
    }

    /// Work on session `skey`'s replays, oldest first, until they are done, its
    /// room is used up or `budget` is spent.
    fn replay_session(
        &mut self,
        now: Instant,
        skey: usize,
        budget: &mut usize,
        out: &mut impl Output,
    ) -> Progress {
        let high_water = HIGH_WATER.min(self.config.max_pending_bytes);
        loop {
            let Some(s) = self.sessions.get_mut(skey) else {
                return Progress::Done;
            };
            let Some(conn) = s.conn() else {
                return Progress::Offline;
            };
            let Some(r) = s.extra.replays.front() else {
                s.extra.release_if_empty();
                return Progress::Done;
            };
            // Unsubscribed since: its retained messages are no longer wanted.
            if self.subscriptions.get(&r.filter, skey).is_none() {
                s.extra.replays.pop_front();
                continue;
            }
            // Room: the socket took most of what was sent (a QoS 0 message is never
            // sent past `max_pending_bytes` and so never dropped here), and for
            // QoS 1/2 the window is open with nothing queued ahead.
            let pending = out.pending_bytes(conn);
            if pending > 0 && pending >= high_water {
                return Progress::Blocked;
            }
            if r.qos != QoS::AtMostOnce
                && (!s.queue.is_empty() || !s.window_open(self.config.max_inflight_bytes))
            {
                return Progress::Blocked;
            }
            if *budget == 0 {
                return Progress::Budget;
            }
            let after = r.after.as_ref().map(|m| &*m.topic);
            let (found, visited, from) =
                match self.retained.next_match(&r.filter, after, r.upto, budget) {
                    Step::Match(m) => (true, Some(Arc::clone(&m.msg)), m.publisher.clone()),
                    Step::Paused(m) => (false, Some(Arc::clone(&m.msg)), None),
                    Step::End => (false, None, None),
                };
            let Some(s) = self.sessions.get_mut(skey) else {
                return Progress::Done;
            };
            let Some(r) = s.extra.replays.front_mut() else {
                return Progress::Done;
            };
            let Some(msg) = visited else {
                s.extra.replays.pop_front();
                continue;
            };
            r.after = Some(Arc::clone(&msg));
            if !found {
                continue;
            }
            if msg.is_expired(now) {
                self.drop_expired_retained(&msg);
                continue;
            }
            // `check_retain_source`: its publisher may have lost write access
            // since (SIGHUP with a new ACL): then it is not sent, as mosquitto.
            if let Some(p) = from.filter(|_| self.config.check_retain_source) {
                let allowed = self.security.listener(p.listener).may(
                    &p.client_id,
                    p.username.as_deref(),
                    &msg.topic,
                    crate::auth::Access::Write,
                );
                if !allowed {
                    log::debug!(
                        "Retained message on {} not sent: its publisher {} may no longer write it.",
                        crate::logging::LogStr(&msg.topic),
                        crate::logging::LogStr(&p.client_id)
                    );
                    continue;
                }
            }
            let Some(r) = self
                .sessions
                .get(skey)
                .and_then(|s| s.extra.replays.front())
            else {
                return Progress::Done;
            };
            let (granted, ids) = (r.qos, r.identifier.into_iter().collect());
            let o = Outgoing {
                qos: self.delivery_qos(granted, msg.qos),
                // [MQTT-3.3.1-8] RETAIN set on messages sent for a new subscription.
                retain: true,
                subscription_ids: ids,
                id: 0,
                msg,
            };
            self.deliver(now, skey, o, out);
            // One session only: no later delivery may take this message as
            // already written (see `Broker::stored_msg`).
            self.stored_msg = None;
        }
    }

    /// A replay met a retained message whose expiry has passed: it leaves the
    /// store (unless replaced meanwhile) and gives its room back. The log needs
    /// no record: a restart drops expired messages as it reads them.
    fn drop_expired_retained(&mut self, msg: &Arc<Message>) {
        if self
            .retained
            .get(&msg.topic)
            .is_some_and(|m| Arc::ptr_eq(&m.msg, msg))
        {
            self.retained.remove(&msg.topic);
        }
    }

    /// The socket of `conn` took its backlog (the server saw it writable): a
    /// replay parked on it goes on from the next [`Broker::poll_replay`].
    pub fn handle_writable(&mut self, conn: ConnId) {
        if let Some(skey) = self.conns.get(&conn).and_then(|c| c.session()) {
            self.resume_replay(skey);
        }
    }

    /// Number of replays pending over all sessions (for tests).
    #[cfg(test)]
    pub(super) fn pending_replays(&self) -> usize {
        self.sessions
            .iter()
            .map(|(_, s)| s.extra.replays.len())
            .sum()
    }
}
