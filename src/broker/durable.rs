//! The broker's side of persistence (see `crate::persist`): which changes are
//! durable, the records that describe them, the state dump for compaction, and
//! rebuilding sessions and retained messages at start-up. Only retained messages
//! and sessions that outlive their connection are durable; QoS 0 is not.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::message::{ForwardedProperties, Message};
use super::output::TimerKind;
use log::warn;

use super::retained::{Publisher, Retained};
use super::session::{
    FilterRef, Inflight, Outgoing, PendingWill, Queued, Session, SessionExpiry, Spilled,
};
use super::topic_index::Subscription;
use super::{shared_filter, Broker, Output, Timer};
use crate::persist::{Record, Recovered, StoredMessage, StoredPublisher, StoredSubscription};
use crate::protocol::{ProtocolVersion, QoS, RetainHandling, SubscriptionOptions};

fn options_byte(o: &SubscriptionOptions) -> u8 {
    o.qos as u8
        | (u8::from(o.no_local) << 2)
        | (u8::from(o.retain_as_published) << 3)
        | ((o.retain_handling as u8) << 4)
}

fn options_from(b: u8) -> SubscriptionOptions {
    SubscriptionOptions {
        qos: QoS::from_u8(b & 3).unwrap_or(QoS::AtMostOnce),
        no_local: b & 4 != 0,
        retain_as_published: b & 8 != 0,
        retain_handling: match (b >> 4) & 3 {
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => RetainHandling::SendAtSubscribe,
        },
    }
}

/// A message read back from the log, its age counted from its wall-clock
/// receipt to `wall_now` (Unix ms at `now`).
pub(super) fn message_from(m: StoredMessage, now: Instant, wall_now: u64) -> Message {
    // Age from wall time, so message expiry keeps counting across the restart.
    let age = Duration::from_millis(wall_now.saturating_sub(m.received_unix_ms));
    Message {
        topic: m.topic,
        payload: m.payload,
        qos: QoS::from_u8(m.qos).unwrap_or(QoS::AtLeastOnce),
        retain: m.retain,
        properties: m.properties.map(Box::<ForwardedProperties>::new),
        received: now.checked_sub(age).unwrap_or(now),
    }
}

impl Broker {
    /// Turn persistence on: the broker reports durable changes to
    /// `Output::persist`. Numbers continue after the log's highest.
    pub fn enable_persistence(&mut self, last_id: u64, last_sid: u32) {
        self.persistence = true;
        self.next_message_id = last_id;
        self.next_sid = last_sid;
    }

    /// Session `skey` outlives its connection and persistence is on.
    pub(super) fn durable(&self, skey: usize) -> bool {
        self.persistence
            && self
                .sessions
                .get(skey)
                .is_some_and(|s| !s.expiry.ends_with_connection())
    }

    /// Subscription `filter` of session `skey` as stored, if it holds one.
    fn stored_subscription(&self, skey: usize, filter: &str) -> Option<StoredSubscription> {
        let sub = if shared_filter(filter).is_some() {
            self.shared.get(filter, skey)
        } else {
            self.subscriptions.get(filter, skey).copied()
        }?;
        Some(StoredSubscription {
            filter: filter.to_string(),
            options: options_byte(&sub.options),
            identifier: sub.identifier,
        })
    }

    /// Write the session's metadata record (the first time, with its number
    /// and all its subscriptions), or, for a session that now ends with its
    /// connection, delete its records.
    pub(super) fn persist_session(&mut self, skey: usize, out: &mut impl Output) {
        if !self.persistence {
            return;
        }
        let Some(s) = self.sessions.get_mut(skey) else {
            return;
        };
        if s.expiry.ends_with_connection() {
            if s.sid != 0 {
                out.persist(&Record::SessionDelete(s.sid));
                s.sid = 0;
            }
            return;
        }
        let fresh = s.sid == 0;
        if fresh {
            self.next_sid += 1;
            s.sid = self.next_sid;
        }
        let s = &self.sessions[skey];
        self.session_record(s, &mut |r| out.persist(r));
        if fresh {
            for f in s.subscriptions.iter() {
                if let Some(sub) = self.stored_subscription(skey, self.filter_text(f)) {
                    out.persist(&Record::SubAdd {
                        sid: s.sid,
                        sub: &sub,
                    });
                }
            }
        }
    }

    /// One subscription of a durable session added (or replaced) or removed:
    /// a small record, not the session's whole list.
    pub(super) fn persist_subscription(
        &mut self,
        skey: usize,
        filter: &str,
        added: bool,
        out: &mut impl Output,
    ) {
        if !self.durable(skey) {
            return;
        }
        let sid = self.sessions.get(skey).map_or(0, |s| s.sid);
        if sid == 0 {
            // Not in the log yet: the session record brings every subscription.
            return self.persist_session(skey, out);
        }
        if !added {
            return out.persist(&Record::SubRemove { sid, filter });
        }
        if let Some(sub) = self.stored_subscription(skey, filter) {
            out.persist(&Record::SubAdd { sid, sub: &sub });
        }
    }

    /// The `SessionPut` record describing session `s`, handed to `f`.
    fn session_record(&self, s: &Session, f: &mut dyn FnMut(&Record<'_>)) {
        f(&Record::SessionPut {
            sid: s.sid,
            client_id: &s.client_id,
            level: s.version.level(),
            expiry: s.expiry.stored(),
            username: s.username.as_deref(),
            listener: u32::try_from(s.listener()).unwrap_or(u32::MAX - 1),
        });
    }

    /// The number of durable session `skey` in the log (written first if it is
    /// not there yet); `None` if it is not durable.
    fn logged_sid(&mut self, skey: usize, out: &mut impl Output) -> Option<u32> {
        if !self.durable(skey) {
            return None;
        }
        if self.sessions.get(skey)?.sid == 0 {
            self.persist_session(skey, out);
        }
        self.sessions
            .get(skey)
            .map(|s| s.sid)
            .filter(|&sid| sid != 0)
    }

    /// A QoS 1/2 message accepted for a durable session gets a delivery number
    /// and a `Queue` record. Its content is written once per fan-out: the other
    /// sessions it goes to name the same `Message` record.
    pub(super) fn persist_queued(&mut self, skey: usize, o: &mut Outgoing, out: &mut impl Output) {
        if o.qos == QoS::AtMostOnce || o.id != 0 {
            return;
        }
        let Some(sid) = self.logged_sid(skey, out) else {
            return;
        };
        let mid = match &self.stored_msg {
            Some((w, mid)) if std::ptr::eq(w.as_ptr(), Arc::as_ptr(&o.msg)) => *mid,
            _ => {
                self.next_message_id += 1;
                let mid = self.next_message_id;
                out.persist(&Record::Message { mid, msg: &o.msg });
                self.stored_msg = Some((Arc::downgrade(&o.msg), mid));
                mid
            }
        };
        self.next_message_id += 1;
        o.id = self.next_message_id;
        out.persist(&Record::Queue {
            sid,
            id: o.id,
            mid,
            qos: o.qos as u8,
            retain: o.retain,
            subscription_ids: &o.subscription_ids,
        });
    }

    /// A stored message went out with a packet id (or was released).
    pub(super) fn persist_inflight(&self, i: &Inflight, out: &mut impl Output) {
        if i.out.id == 0 {
            return;
        }
        out.persist(&Record::Inflight {
            id: i.out.id,
            packet_id: i.packet_id,
            released: i.released,
        });
    }

    /// A stored message is finished with.
    pub(super) fn persist_done(&self, id: u64, out: &mut impl Output) {
        if id != 0 {
            out.persist(&Record::Done(id));
        }
    }

    /// An incoming QoS 2 id held (true) or released (false).
    pub(super) fn persist_rel(
        &mut self,
        skey: usize,
        packet_id: u16,
        held: bool,
        out: &mut impl Output,
    ) {
        let Some(sid) = self.logged_sid(skey, out) else {
            return;
        };
        out.persist(&if held {
            Record::RelHold { sid, packet_id }
        } else {
            Record::RelDone { sid, packet_id }
        });
    }

    /// The pending will of a disconnected durable session (`None`: gone).
    pub(super) fn persist_will(
        &mut self,
        skey: usize,
        will: Option<&PendingWill>,
        out: &mut impl Output,
    ) {
        let Some(sid) = self.logged_sid(skey, out) else {
            return;
        };
        out.persist(&Record::Will {
            sid,
            delay: will.map_or(0, |w| w.delay),
            msg: will.map(|w| &*w.msg),
        });
    }

    /// Every durable fact, for compaction. Queued and in-flight messages are
    /// `Keep` records: the log copies their records (RAM may not hold them).
    pub fn dump(&self, w: &mut dyn FnMut(&Record<'_>)) {
        self.retained.for_each(|topic, r| {
            // The `$SYS` tree is the broker's own and rebuilt at every start.
            if !topic.starts_with("$SYS/") {
                w(&retain_record(&r.msg, r.publisher.as_deref()))
            }
        });
        for (skey, s) in self.sessions.iter() {
            if s.expiry.ends_with_connection() || s.sid == 0 {
                continue;
            }
            let sid = s.sid;
            self.session_record(s, w);
            for f in s.subscriptions.iter() {
                if let Some(sub) = self.stored_subscription(skey, self.filter_text(f)) {
                    w(&Record::SubAdd { sid, sub: &sub });
                }
            }
            for i in s.inflight.iter().filter(|i| i.out.id != 0) {
                w(&Record::Keep(i.out.id));
                w(&Record::Inflight {
                    id: i.out.id,
                    packet_id: i.packet_id,
                    released: i.released,
                });
            }
            for q in s.queue.iter() {
                if q.id() != 0 {
                    w(&Record::Keep(q.id()));
                }
            }
            for &packet_id in s.extra.awaiting_rel.iter() {
                w(&Record::RelHold { sid, packet_id });
            }
            if let (None, Some(will)) = (s.conn(), s.will()) {
                w(&Record::Will {
                    sid,
                    delay: will.delay,
                    msg: Some(&will.msg),
                });
            }
        }
    }

    /// Rebuild retained messages and sessions from the log (before any client
    /// connects). Sessions come back disconnected, their expiry counting from
    /// now. Queued messages stay in the log (RAM keeps an index entry, as for a
    /// session that went offline); the contents of the few in flight
    /// ([`Recovered::in_flight`]) come in `in_flight`, read by the shell, since
    /// they are resent as soon as the client returns.
    pub fn restore(
        &mut self,
        now: Instant,
        state: Recovered,
        mut in_flight: HashMap<u64, StoredMessage>,
        out: &mut impl Output,
    ) {
        let wall = self.wall_ms(now);
        let mut from_map = state.retained_from;
        // One publisher value per identity, shared as at run time.
        let mut publishers: HashMap<StoredPublisher, Arc<Publisher>> = HashMap::new();
        for (topic, m) in state.retained {
            let m = Arc::new(message_from(m, now, wall));
            if m.is_expired(now) {
                continue;
            }
            let publisher = match from_map.remove(&topic) {
                Some(p) if self.config.check_retain_source => Some(Arc::clone(
                    publishers.entry(p.clone()).or_insert_with(|| {
                        Arc::new(Publisher {
                            client_id: p.client_id.as_str().into(),
                            username: p.username.map(Into::into),
                            listener: p.listener as usize,
                        })
                    }),
                )),
                _ => None,
            };
            // Accepted under the limits of its day: kept even over today's.
            self.retained
                .insert_unchecked(Retained { msg: m, publisher });
        }
        for (_, rs) in state.sessions {
            let version = ProtocolVersion::from_level(rs.level).unwrap_or(ProtocolVersion::V311);
            let serial = self.serial();
            let mut s = Session::new(&rs.client_id, version, serial);
            s.sid = rs.sid;
            s.expiry = SessionExpiry::from_stored(rs.expiry);
            // The identity its ACL checks use, as when it was stored: without it
            // a restart would judge the session as anonymous (issue 11).
            s.username = rs.username.map(Into::into);
            s.set_listener(usize::try_from(rs.listener).unwrap_or(usize::MAX));
            if !rs.awaiting_rel.is_empty() {
                s.extra.awaiting_rel = rs.awaiting_rel;
            }
            let will_delay = rs.will.as_ref().map(|(d, _)| *d);
            s.set_will(rs.will.map(|(delay, m)| PendingWill {
                msg: Arc::new(message_from(m, now, wall)),
                delay,
            }));
            for (id, m) in rs.messages {
                let qos = QoS::from_u8(m.qos).unwrap_or(QoS::AtLeastOnce);
                match m.sent {
                    Some((packet_id, released)) => match in_flight.remove(&id) {
                        Some(msg) => s.push_inflight(Inflight {
                            packet_id,
                            out: Outgoing {
                                msg: Arc::new(message_from(msg, now, wall)),
                                qos,
                                retain: m.retain,
                                subscription_ids: m.subscription_ids,
                                id,
                            },
                            released,
                            needs_resend: true,
                        }),
                        None => {
                            warn!(
                                "Stored message {id} for {} could not be read back: skipped.",
                                rs.client_id
                            );
                            out.persist(&Record::Done(id));
                        }
                    },
                    // Not sent yet: the log keeps it; RAM keeps an index entry.
                    None => {
                        s.push_queued(Queued::Disk(Spilled {
                            id,
                            len: m.len,
                            qos,
                            retain: m.retain,
                            subscription_ids: m.subscription_ids.into_boxed_slice(),
                            requested: false,
                        }));
                    }
                }
            }
            let skey = self.sessions.insert(s);
            if let Some(s) = self.sessions.get(skey) {
                let sessions = &self.sessions;
                self.by_client_id
                    .insert(&s.client_id, skey, |k| super::client_id_of(sessions, k));
            }
            for sub in rs.subscriptions.into_values() {
                let subscription = Subscription {
                    options: options_from(sub.options),
                    identifier: sub.identifier,
                };
                let added = match shared_filter(&sub.filter) {
                    Some(plain) => self
                        .shared
                        .subscribe(&sub.filter, plain, skey, subscription)
                        .then_some(FilterRef::Shared(&sub.filter)),
                    None => {
                        let new = self
                            .subscriptions
                            .subscribe(&sub.filter, skey, subscription);
                        let id = self.subscriptions.id(&sub.filter).filter(|_| new);
                        id.map(FilterRef::Plain)
                    }
                };
                if let Some(f) = added {
                    if let Some(s) = self.sessions.get_mut(skey) {
                        s.subscriptions.push(f);
                    }
                }
            }
            if let Some(delay) = will_delay {
                // The restart counts as the disconnection: the delay starts now.
                out.set_timer(
                    now + Duration::from_secs(u64::from(delay)),
                    Timer::new(TimerKind::WillDelay(skey), serial),
                );
            }
            if let Some(d) = self.sessions.get(skey).and_then(|s| s.expiry.duration()) {
                out.set_timer(now + d, Timer::new(TimerKind::SessionExpiry(skey), serial));
            }
        }
    }
}

/// The log record of a retained message stored by `from` (`None`: nobody's
/// write access is checked for it).
pub(super) fn retain_record<'a>(msg: &'a Message, from: Option<&'a Publisher>) -> Record<'a> {
    match from {
        None => Record::RetainSet(msg),
        Some(p) => Record::RetainSetFrom {
            msg,
            client_id: &p.client_id,
            username: p.username.as_deref(),
            // Listener numbers are config lines; the bridge number fits too.
            listener: u32::try_from(p.listener).unwrap_or(u32::MAX),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip() {
        let o = SubscriptionOptions {
            qos: QoS::ExactlyOnce,
            no_local: true,
            retain_as_published: true,
            retain_handling: RetainHandling::DoNotSend,
        };
        assert_eq!(options_from(options_byte(&o)), o);
        assert_eq!(
            options_from(options_byte(&SubscriptionOptions::default())),
            SubscriptionOptions::default()
        );
    }
}
