//! The broker's side of persistence (see `crate::persist`): which changes are
//! durable, the records that describe them, the state dump for compaction, and
//! rebuilding sessions and retained messages at start-up. Only retained messages
//! and sessions that outlive their connection are durable; QoS 0 is not.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::message::{ForwardedProperties, Message};
use super::output::TimerKind;
use super::session::{Inflight, Outgoing, PendingWill, Queued, Session, Spilled};
use super::topic_index::Subscription;
use super::{shared_filter, Broker, Output, Timer};
use crate::persist::{Record, Recovered, StoredMessage, StoredSubscription};
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

/// A message read back from the log, its age counted from its wall-clock receipt.
pub(super) fn message_from(m: StoredMessage, now: Instant) -> Message {
    // Age from wall time, so message expiry keeps counting across the restart.
    let wall_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let age = Duration::from_millis(wall_now.saturating_sub(m.received_unix_ms));
    Message {
        topic: m.topic.into(),
        payload: m.payload.into(),
        qos: QoS::from_u8(m.qos).unwrap_or(QoS::AtLeastOnce),
        retain: m.retain,
        properties: m.properties.map(Box::<ForwardedProperties>::new),
        received: now.checked_sub(age).unwrap_or(now),
    }
}

fn write_queue(w: &mut dyn FnMut(&Record<'_>), client_id: &str, o: &Outgoing) {
    w(&Record::Queue {
        client_id,
        id: o.id,
        msg: &o.msg,
        qos: o.qos as u8,
        retain: o.retain,
        subscription_ids: &o.subscription_ids,
    });
}

impl Broker {
    /// Turn persistence on: the broker reports durable changes to `Output::persist`.
    pub fn enable_persistence(&mut self, last_id: u64) {
        self.persistence = true;
        self.next_message_id = last_id;
    }

    /// Session `skey` outlives its connection and persistence is on.
    pub(super) fn durable(&self, skey: usize) -> bool {
        self.persistence
            && self
                .sessions
                .get(skey)
                .is_some_and(|s| s.expiry != Some(Duration::ZERO))
    }

    fn stored_subscriptions(&self, skey: usize, s: &Session) -> Vec<StoredSubscription> {
        s.subscriptions
            .iter()
            .filter_map(|f| {
                let sub = if shared_filter(f).is_some() {
                    self.shared.get(f, skey)
                } else {
                    self.subscriptions.get(f, skey).copied()
                }?;
                Some(StoredSubscription {
                    filter: f.to_string(),
                    options: options_byte(&sub.options),
                    identifier: sub.identifier,
                })
            })
            .collect()
    }

    /// Write (or, for a session that ends with its connection, delete) the
    /// session's metadata record.
    pub(super) fn persist_session(&self, skey: usize, out: &mut impl Output) {
        if !self.persistence {
            return;
        }
        let Some(s) = self.sessions.get(skey) else {
            return;
        };
        if s.expiry == Some(Duration::ZERO) {
            out.persist(&Record::SessionDelete(&s.client_id));
            return;
        }
        self.session_record(skey, s, |r| out.persist(r));
    }

    /// The `SessionPut` record describing session `s`, handed to `f`.
    fn session_record(&self, skey: usize, s: &Session, f: impl FnOnce(&Record<'_>)) {
        let subscriptions = self.stored_subscriptions(skey, s);
        f(&Record::SessionPut {
            client_id: &s.client_id,
            level: s.version.level(),
            expiry: s
                .expiry
                .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX - 1)),
            subscriptions: &subscriptions,
            username: s.username.as_deref(),
            listener: u32::try_from(s.listener).unwrap_or(u32::MAX),
        });
    }

    /// A QoS 1/2 message accepted for a durable session gets a number and a record.
    pub(super) fn persist_queued(&mut self, skey: usize, o: &mut Outgoing, out: &mut impl Output) {
        if o.qos == QoS::AtMostOnce || o.id != 0 || !self.durable(skey) {
            return;
        }
        self.next_message_id += 1;
        o.id = self.next_message_id;
        let Some(s) = self.sessions.get(skey) else {
            return;
        };
        out.persist(&Record::Queue {
            client_id: &s.client_id,
            id: o.id,
            msg: &o.msg,
            qos: o.qos as u8,
            retain: o.retain,
            subscription_ids: &o.subscription_ids,
        });
    }

    /// A stored message went out with a packet id (or was released).
    pub(super) fn persist_inflight(&self, skey: usize, i: &Inflight, out: &mut impl Output) {
        if i.out.id == 0 {
            return;
        }
        if let Some(s) = self.sessions.get(skey) {
            out.persist(&Record::Inflight {
                client_id: &s.client_id,
                id: i.out.id,
                packet_id: i.packet_id,
                released: i.released,
            });
        }
    }

    /// A stored message is finished with.
    pub(super) fn persist_done(&self, skey: usize, id: u64, out: &mut impl Output) {
        if id == 0 {
            return;
        }
        if let Some(s) = self.sessions.get(skey) {
            out.persist(&Record::Done {
                client_id: &s.client_id,
                id,
            });
        }
    }

    /// An incoming QoS 2 id held (true) or released (false).
    pub(super) fn persist_rel(
        &self,
        skey: usize,
        packet_id: u16,
        held: bool,
        out: &mut impl Output,
    ) {
        if !self.durable(skey) {
            return;
        }
        let Some(s) = self.sessions.get(skey) else {
            return;
        };
        let client_id = &s.client_id;
        out.persist(&if held {
            Record::RelHold {
                client_id,
                packet_id,
            }
        } else {
            Record::RelDone {
                client_id,
                packet_id,
            }
        });
    }

    /// The pending will of a disconnected durable session (`None`: gone).
    pub(super) fn persist_will(
        &self,
        skey: usize,
        will: Option<&PendingWill>,
        out: &mut impl Output,
    ) {
        if !self.persistence {
            return;
        }
        let Some(s) = self.sessions.get(skey) else {
            return;
        };
        out.persist(&Record::Will {
            client_id: &s.client_id,
            delay: will.map_or(0, |w| w.delay),
            msg: will.map(|w| &*w.msg),
        });
    }

    /// Every durable fact, for compaction.
    pub fn dump(&self, w: &mut dyn FnMut(&Record<'_>)) {
        self.retained.for_each(|topic, m| {
            // The `$SYS` tree is the broker's own and rebuilt at every start.
            if !topic.starts_with("$SYS/") {
                w(&Record::RetainSet(m))
            }
        });
        for (skey, s) in self.sessions.iter() {
            if s.expiry == Some(Duration::ZERO) {
                continue;
            }
            self.session_record(skey, s, |r| w(r));
            for i in s.inflight.iter().filter(|i| i.out.id != 0) {
                write_queue(w, &s.client_id, &i.out);
                w(&Record::Inflight {
                    client_id: &s.client_id,
                    id: i.out.id,
                    packet_id: i.packet_id,
                    released: i.released,
                });
            }
            for q in s.queue.iter() {
                match q {
                    Queued::Ram(o) if o.id != 0 => write_queue(w, &s.client_id, o),
                    Queued::Ram(_) => {}
                    Queued::Disk(d) => w(&Record::Keep(d.id)),
                }
            }
            for &packet_id in s.awaiting_rel.iter() {
                w(&Record::RelHold {
                    client_id: &s.client_id,
                    packet_id,
                });
            }
            if let (None, Some(will)) = (s.conn, &s.will) {
                w(&Record::Will {
                    client_id: &s.client_id,
                    delay: will.delay,
                    msg: Some(&will.msg),
                });
            }
        }
    }

    /// Rebuild retained messages and sessions from the log (before any client
    /// connects). Sessions come back disconnected, their expiry counting from now.
    pub fn restore(&mut self, now: Instant, state: Recovered, out: &mut impl Output) {
        for (_, m) in state.retained {
            let m = Arc::new(message_from(m, now));
            if !m.is_expired(now) {
                // Accepted under the limits of its day: kept even over today's.
                self.retained.insert_unchecked(m);
            }
        }
        for (_, rs) in state.sessions {
            let version = ProtocolVersion::from_level(rs.level).unwrap_or(ProtocolVersion::V311);
            let serial = self.serial();
            let mut s = Session::new(&rs.client_id, version, serial);
            s.expiry = rs.expiry.map(|e| Duration::from_secs(u64::from(e)));
            // The identity its ACL checks use, as when it was stored: without it
            // a restart would judge the session as anonymous (issue 11).
            s.username = rs.username.map(Into::into);
            s.listener = usize::try_from(rs.listener).unwrap_or(usize::MAX);
            if !rs.awaiting_rel.is_empty() {
                s.awaiting_rel = rs.awaiting_rel.into();
            }
            let will_delay = rs.will.as_ref().map(|(d, _)| *d);
            s.will = rs.will.map(|(delay, m)| PendingWill {
                msg: Arc::new(message_from(m, now)),
                delay,
            });
            for (id, m) in rs.messages {
                let qos = QoS::from_u8(m.qos).unwrap_or(QoS::AtLeastOnce);
                match m.sent {
                    Some((packet_id, released)) => s.inflight.push_back(Inflight {
                        packet_id,
                        out: Outgoing {
                            msg: Arc::new(message_from(m.msg, now)),
                            qos,
                            retain: m.retain,
                            subscription_ids: m.subscription_ids,
                            id,
                        },
                        released,
                        needs_resend: true,
                    }),
                    // Not sent yet: the log keeps it; RAM keeps an index entry.
                    None => {
                        let len = u32::try_from(m.msg.payload.len()).unwrap_or(u32::MAX);
                        s.queued_bytes += len as usize;
                        s.queue.push_back(Queued::Disk(Spilled {
                            id,
                            len,
                            qos,
                            retain: m.retain,
                            subscription_ids: m.subscription_ids.into_boxed_slice(),
                        }));
                    }
                }
            }
            let skey = self.sessions.insert(s);
            if let Some(s) = self.sessions.get(skey) {
                self.by_client_id.insert(Arc::clone(&s.client_id), skey);
            }
            for sub in rs.subscriptions {
                let subscription = Subscription {
                    options: options_from(sub.options),
                    identifier: sub.identifier,
                };
                let added = match shared_filter(&sub.filter) {
                    Some(plain) => self
                        .shared
                        .subscribe(&sub.filter, plain, skey, subscription),
                    None => self
                        .subscriptions
                        .subscribe(&sub.filter, skey, subscription),
                };
                if added {
                    if let Some(s) = self.sessions.get_mut(skey) {
                        s.subscriptions.push(sub.filter.as_str().into());
                    }
                }
            }
            if let Some(delay) = will_delay {
                // The restart counts as the disconnection: the delay starts now.
                out.set_timer(
                    now + Duration::from_secs(u64::from(delay)),
                    Timer {
                        kind: TimerKind::WillDelay(skey),
                        serial,
                    },
                );
            }
            if let Some(d) = self.sessions.get(skey).and_then(|s| s.expiry) {
                out.set_timer(
                    now + d,
                    Timer {
                        kind: TimerKind::SessionExpiry(skey),
                        serial,
                    },
                );
            }
        }
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
