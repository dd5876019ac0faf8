//! Messages through the broker: an incoming PUBLISH (QoS 0/1/2 with exactly-once
//! for QoS 2), the retained store, routing to every matching session (one copy
//! per client at the highest granted QoS), the in-flight window and queue per
//! subscriber, acknowledgements, re-sending on reconnect, and DISCONNECT.

use std::sync::Arc;
use std::time::Instant;

use log::{debug, warn};

use super::aliases::{Inbound, SendAs};
use super::message::Message;
use super::session::{Inflight, Outgoing, Queued, SessionExpiry};
use super::{Broker, ConnId, End, Load, Output, Timer};
use crate::auth::Access;
use crate::logging::LogStr;
use crate::persist::{Record, StoredMessage};
use crate::protocol::{
    encoded_len, Disconnect, Packet, PacketId, PubResp, Publish, QoS, ReasonCode,
};

/// Most messages kept for reuse by [`Broker::recycle`]: enough for the acks
/// of a loop turn (a QoS 1 window is refilled in batches), 64 KiB at most.
const SPARE_MESSAGES: usize = 64;
/// Largest message (topic and payload buffers) kept for reuse.
const SPARE_MESSAGE_BYTES: usize = 1024;

/// One subscription matched by a message: (session, granted QoS, Retain As
/// Published, No Local, subscription identifier).
#[derive(Debug, Clone, Copy)]
pub(super) struct Hit {
    session: usize,
    qos: QoS,
    retain_as_published: bool,
    no_local: bool,
    identifier: Option<u32>,
}

impl Broker {
    pub(super) fn handle_publish(
        &mut self,
        now: Instant,
        conn: ConnId,
        skey: usize,
        p: &Publish<'_>,
        out: &mut impl Output,
    ) {
        self.stats.messages_received += 1;
        self.stats.publish_bytes_received += p.payload.len() as u64;
        let Some(version) = self.sessions.get(skey).map(|s| s.version) else {
            return;
        };
        let listener = self.sessions.get(skey).map_or(0, |s| s.listener());
        let max_qos = self.max_qos(listener);
        if p.qos > max_qos {
            // Over the listener's `max_qos`: v5 was told the Maximum QoS in its
            // CONNACK and is disconnected with 0x9B [MQTT-3.2.2-11]; 3.1/3.1.1
            // could not know and are disconnected too, as mosquitto does.
            // mosquitto's line (once per connection: it ends here).
            log::info!(
                "Too high QoS in PUBLISH from {} (QoS {}, max_qos {}), disconnecting.",
                self.client_name(conn),
                p.qos as u8,
                max_qos as u8
            );
            return self.end(
                now,
                conn,
                End::ProtocolError(ReasonCode::QOS_NOT_SUPPORTED),
                out,
            );
        }
        if !p.properties.subscription_identifiers.is_empty() {
            // [MQTT-3.3.4-6] a client's PUBLISH must not carry a Subscription
            // Identifier: protocol error (DISCONNECT 0x82).
            return self.end(
                now,
                conn,
                End::ProtocolError(ReasonCode::PROTOCOL_ERROR),
                out,
            );
        }
        // Topic aliases (3.3.2.3.4): resolve before anything looks at the topic.
        let mut alias_topic: Option<Box<str>> = None;
        if version.is_v5() {
            let max = self.config.max_topic_alias;
            if let Some(c) = self.conns.get_mut(&conn) {
                match c.aliases.inbound(p.topic, p.properties.topic_alias, max) {
                    // [MQTT-3.3.2-8/9] 0 or over our Topic Alias Maximum: 0x94.
                    Inbound::Invalid => {
                        return self.end(
                            now,
                            conn,
                            End::ProtocolError(ReasonCode::TOPIC_ALIAS_INVALID),
                            out,
                        )
                    }
                    // An empty topic with an alias never mapped: protocol error.
                    Inbound::Unknown => {
                        return self.end(
                            now,
                            conn,
                            End::ProtocolError(ReasonCode::PROTOCOL_ERROR),
                            out,
                        )
                    }
                    Inbound::Topic(t) => {
                        if p.topic.is_empty() {
                            alias_topic = Some(t.into());
                        }
                    }
                }
            }
            if p.retain && !self.config.retain_available {
                // 3.2.2.3.5: RETAIN when Retain Available is 0: 0x9A.
                return self.end(
                    now,
                    conn,
                    End::ProtocolError(ReasonCode::RETAIN_NOT_SUPPORTED),
                    out,
                );
            }
        }
        // The topic as the rest sees it: resolved alias, then full topic. The
        // packet itself is borrowed, not rebuilt around it (a copy of ~300 bytes).
        let topic = alias_topic.as_deref().unwrap_or(p.topic);
        if topic.is_empty() {
            // A zero-length topic needs a Topic Alias (v5); before v5 it is invalid.
            return self.end(
                now,
                conn,
                End::ProtocolError(ReasonCode::PROTOCOL_ERROR),
                out,
            );
        }
        // `mount_point`: the client's topics live under its listener's prefix;
        // everything from here on (limits, ACL, retained store, routing) sees
        // the full topic, as in mosquitto.
        let Some(full) = super::mount::topic(self.mount_point(listener), topic) else {
            return self.end(
                now,
                conn,
                End::ProtocolError(ReasonCode::TOPIC_NAME_INVALID),
                out,
            );
        };
        let topic: &str = &full;
        let max_levels = self.config.max_topic_levels;
        if max_levels != 0 && super::topic_levels(topic) > max_levels {
            // A limit, not a protocol rule (like mosquitto's hierarchy limit): the
            // topic is refused as invalid (v5: 0x90) and the connection closed.
            warn!(
                "Client {} published to a topic deeper than max_topic_levels {max_levels}.",
                self.client_name(conn)
            );
            let reason = ReasonCode::TOPIC_NAME_INVALID;
            return self.end(now, conn, End::ProtocolError(reason), out);
        }
        if p.qos == QoS::ExactlyOnce {
            let Some(s) = self.sessions.get_mut(skey) else {
                return;
            };
            if let Some(pos) = s
                .extra
                .awaiting_rel
                .iter()
                .position(|&id| id == p.packet_id)
            {
                if p.dup {
                    // A re-sent QoS 2 PUBLISH whose PUBREL has not come yet: it was
                    // delivered already; acknowledge again, deliver nothing (4.3.3,
                    // method A).
                    out.send_after_commit(
                        conn,
                        version,
                        &Packet::PubRec(PubResp::success(p.packet_id)),
                    );
                    return;
                }
                // [MQTT-3.3.1-1] a re-delivery has DUP set, and [MQTT-2.2.1-3] an id
                // is reused only after its PUBCOMP: this is a new message, and the
                // release of the old id was lost (with `persistence_sync periodic` a
                // power cut may take its record). Release it rather than
                // acknowledge and drop the new message.
                s.extra.awaiting_rel.swap_remove(pos);
                self.persist_rel(skey, p.packet_id, false, out);
            }
            let Some(s) = self.sessions.get_mut(skey) else {
                return;
            };
            let limit = usize::from(self.config.max_inflight_messages);
            if version.is_v5() && limit != 0 && s.extra.awaiting_rel.len() >= limit {
                // [MQTT-3.3.4-8] more than our Receive Maximum in flight: 0x93.
                return self.end(
                    now,
                    conn,
                    End::ProtocolError(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED),
                    out,
                );
            }
        }
        let over_memory = out.memory_exceeded();
        if over_memory && p.qos == QoS::AtMostOnce {
            // `memory_limit`: QoS 0 promises nothing, so it is dropped (and
            // counted) rather than refused; the client stays connected.
            self.stats.messages_dropped += 1;
            self.stats.dropped_memory_limit += 1;
            if let Some(more) = self.complain(conn, log::Level::Warn) {
                warn!(
                    "Dropping QoS 0 PUBLISH from {}: memory_limit reached{more}.",
                    self.client_name(conn)
                );
            }
            return;
        }
        let failing = self.persistence && out.persistence_failing();
        if p.qos != QoS::AtMostOnce && (over_memory || failing) {
            // Do not acknowledge what cannot be kept: v5 is told 0x97, 3.1.1 (which
            // has no way to say no) is disconnected and will re-send.
            let why = if failing {
                "persistence is failing"
            } else {
                self.stats.refused_memory_limit += 1;
                "memory_limit reached"
            };
            if let Some(more) = self.complain(conn, log::Level::Warn) {
                warn!(
                    "Refusing QoS {} PUBLISH from {}: {why}{more}.",
                    p.qos as u8,
                    self.client_name(conn)
                );
            }
            if !version.is_v5() {
                return self.end(
                    now,
                    conn,
                    End::ProtocolError(ReasonCode::QUOTA_EXCEEDED),
                    out,
                );
            }
            let nack = PubResp {
                packet_id: p.packet_id,
                reason: ReasonCode::QUOTA_EXCEEDED,
                properties: Default::default(),
            };
            let packet = if p.qos == QoS::AtLeastOnce {
                Packet::PubAck(nack)
            } else {
                Packet::PubRec(nack)
            };
            out.send(conn, version, &packet);
            return;
        }
        let limit = self.config.message_size_limit;
        // `$SYS/...` is the broker's own: no client writes there, whatever the
        // ACL says (as mosquitto; [MQTT-4.7.2-1] makes `$` topics the server's).
        let allowed = !crate::auth::broker_only(topic) && self.may(skey, topic, Access::Write);
        let reason = if !allowed {
            // ACL: not delivered, not retained; QoS 1/2 still acknowledged
            // (v5 with 0x87) so the client's flow goes on.
            if let Some(more) = self.complain(conn, log::Level::Debug) {
                debug!(
                    "Denied PUBLISH from {} to {}{more}.",
                    self.client_name(conn),
                    LogStr(topic)
                );
            }
            ReasonCode::NOT_AUTHORIZED
        } else if limit != 0 && p.payload.len() > limit {
            if let Some(more) = self.complain(conn, log::Level::Warn) {
                warn!(
                    "Dropped too large PUBLISH from {} ({} bytes, message_size_limit {limit}){more}.",
                    self.client_name(conn),
                    p.payload.len()
                );
            }
            // 0x95 is not a PUBACK/PUBREC reason (3.4.2.1): the size limit is a
            // quota, so 0x97 (found by the broker fuzz target).
            ReasonCode::QUOTA_EXCEEDED
        } else if p.properties.payload_format_indicator == Some(1)
            && std::str::from_utf8(p.payload).is_err()
        {
            // 3.3.2.3.2: a payload said to be UTF-8 that is not may be refused
            // with 0x99; it is not forwarded.
            if let Some(more) = self.complain(conn, log::Level::Debug) {
                debug!(
                    "Dropped PUBLISH with invalid UTF-8 payload from {}{more}.",
                    self.client_name(conn)
                );
            }
            ReasonCode::PAYLOAD_FORMAT_INVALID
        } else {
            if p.qos == QoS::ExactlyOnce {
                // Held before the message is routed: the id's record precedes the
                // records of its deliveries in the log, so a crash that keeps a
                // delivery keeps the id too, and a re-sent PUBLISH is not
                // delivered twice (4.3.3).
                self.sessions[skey].extra.awaiting_rel.push(p.packet_id);
                self.persist_rel(skey, p.packet_id, true, out);
            }
            let retain = p.retain && self.config.retain_available;
            let msg = self.new_message(p, topic, retain, now);
            let from = match retain {
                true => self
                    .sessions
                    .get_mut(skey)
                    .and_then(|s| super::publisher_of(self.config.check_retain_source, s)),
                false => None,
            };
            if retain && !self.store_retained(&msg, from, out) {
                // The store is full: the message is refused as a whole, as for
                // `message_size_limit` (v5: 0x97 on the ack).
                ReasonCode::QUOTA_EXCEEDED
            } else if self.route(now, &msg, Some(skey), out) == 0 {
                self.recycle(msg);
                ReasonCode::NO_MATCHING_SUBSCRIBERS
            } else {
                self.recycle(msg);
                ReasonCode::SUCCESS
            }
        };
        // v3 acks carry no reason: the encoder leaves it out.
        let ack = |reason| PubResp {
            packet_id: p.packet_id,
            reason,
            properties: Default::default(),
        };
        // The ack promises the message is kept: it leaves after the commit.
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => out.send_after_commit(conn, version, &Packet::PubAck(ack(reason))),
            QoS::ExactlyOnce => out.send_after_commit(conn, version, &Packet::PubRec(ack(reason))),
        }
    }

    /// The message for a PUBLISH: a spare one refilled when there is one (see
    /// [`Broker::recycle`]), else a new one.
    fn new_message(
        &mut self,
        p: &Publish<'_>,
        topic: &str,
        retain: bool,
        now: Instant,
    ) -> Arc<Message> {
        let mut msg = match self.spare_messages.pop() {
            Some(mut spare) => match Arc::get_mut(&mut spare) {
                Some(m) => {
                    m.refill(p, topic, now);
                    spare
                }
                None => Arc::new(Message::from_publish(p, topic, now)),
            },
            None => Arc::new(Message::from_publish(p, topic, now)),
        };
        if let Some(m) = Arc::get_mut(&mut msg) {
            m.retain = retain;
        }
        msg
    }

    /// Done with `msg`: when nothing else holds it (no queue, window, retained
    /// store or log reference), it is kept for a later PUBLISH to refill, so a
    /// steady flow allocates nothing per message. At most [`SPARE_MESSAGES`]
    /// of at most [`SPARE_MESSAGE_BYTES`] each: a burst of large messages
    /// leaves no large buffers behind.
    pub(super) fn recycle(&mut self, mut msg: Arc<Message>) {
        if self.spare_messages.len() < SPARE_MESSAGES
            && Arc::get_mut(&mut msg).is_some_and(|m| m.capacity() <= SPARE_MESSAGE_BYTES)
        {
            self.spare_messages.push(msg);
        }
    }

    /// Keep, replace or clear (empty payload) the retained message of its topic
    /// [MQTT-3.3.1-5/6/7]. Returns false when the store's limits refuse a new
    /// topic or a larger replacement (logged once per episode); clearing always
    /// succeeds.
    pub(super) fn store_retained(
        &mut self,
        msg: &Arc<Message>,
        from: Option<Arc<super::retained::Publisher>>,
        out: &mut impl Output,
    ) -> bool {
        if msg.payload.is_empty() {
            if self.retained.remove(&msg.topic).is_some() && self.retained_full {
                self.retained_full = !self.retained_has_room();
            }
            if self.persistence {
                out.persist(&Record::RetainClear(&msg.topic));
            }
            return true;
        }
        let kept = super::retained::Retained {
            msg: Arc::clone(msg),
            publisher: from.clone(),
        };
        match self.retained.insert(kept) {
            Ok(_) => {
                if self.persistence {
                    out.persist(&super::durable::retain_record(msg, from.as_deref()));
                }
                true
            }
            Err(full) => {
                if !self.retained_full {
                    self.retained_full = true;
                    let limits = self.retained.limits();
                    warn!(
                        "Retained store full ({:?}: {} messages, {} bytes; max_retained_messages {}, max_retained_bytes {}): new retained messages are refused.",
                        full,
                        self.retained.counted(),
                        self.retained.bytes(),
                        limits.max_messages,
                        limits.max_bytes
                    );
                }
                false
            }
        }
    }

    /// The store is back under 90% of both limits: the next refusal starts a new
    /// episode and is logged (the margin keeps a client that clears and sets one
    /// topic at the limit from writing a line per message).
    fn retained_has_room(&self) -> bool {
        let limits = self.retained.limits();
        let under = |used: usize, max: usize| max == 0 || used < max - max / 10;
        under(self.retained.counted(), limits.max_messages)
            && under(self.retained.bytes(), limits.max_bytes)
    }

    /// Deliver `msg` to every session with a matching subscription; returns how
    /// many sessions matched. `from` is the publishing session (for No Local).
    pub(super) fn route(
        &mut self,
        now: Instant,
        msg: &Arc<Message>,
        from: Option<usize>,
        out: &mut impl Output,
    ) -> usize {
        let mut hits = std::mem::take(&mut self.scratch);
        hits.clear();
        self.subscriptions
            .for_each_match(&msg.topic, |_, session, sub| {
                hits.push(Hit {
                    session,
                    qos: sub.options.qos,
                    retain_as_published: sub.options.retain_as_published,
                    no_local: sub.options.no_local,
                    identifier: sub.identifier,
                })
            });
        // Overlapping subscriptions of one client: one copy at the highest granted
        // QoS, carrying every matching identifier (3.3.4, [MQTT-3.3.4-3/4]).
        hits.sort_unstable_by_key(|h| h.session);
        let mut matched = 0;
        let mut j = 0;
        while let Some(first) = hits.get(j) {
            let session = first.session;
            let mut qos = QoS::AtMostOnce;
            let mut rap = false;
            let mut ids = Vec::new();
            let mut wanted = false;
            while let Some(h) = hits.get(j).filter(|h| h.session == session) {
                // [MQTT-3.8.3-3] No Local: not to the publisher's own session. One
                // No Local subscription does not veto the client's others.
                if !(h.no_local && from == Some(session)) {
                    wanted = true;
                    qos = qos.max(h.qos);
                    rap |= h.retain_as_published;
                    ids.extend(h.identifier);
                }
                j += 1;
            }
            if wanted {
                matched += 1;
                let o = Outgoing {
                    msg: Arc::clone(msg),
                    qos: self.delivery_qos(qos, msg.qos),
                    // [MQTT-3.3.1-9] RETAIN is 0 on normal delivery, unless Retain
                    // As Published (v5) [MQTT-3.3.1-12/13].
                    retain: rap && msg.retain,
                    subscription_ids: ids,
                    id: 0,
                };
                self.deliver(now, session, o, out);
            }
        }
        self.scratch = hits;
        // Shared subscriptions: one member per group (4.8.2).
        let mut groups = Vec::new();
        self.shared.matching_groups(&msg.topic, &mut groups);
        for gid in groups {
            let sessions = &self.sessions;
            let security = &self.security;
            let listeners = &self.config.listeners;
            let online = |k: usize| sessions.get(k).is_some_and(|s| s.conn().is_some());
            // Read access decides the member, not only the delivery: a member
            // that may not read the topic (or that sits behind a mount point
            // the topic is outside of) must not swallow the group's copy.
            let may_read = |k: usize| {
                sessions.get(k).is_some_and(|s| {
                    let mount = listeners
                        .get(s.listener())
                        .and_then(|l| l.mount_point.as_deref());
                    super::mount::strip(mount, &msg.topic).is_some()
                        && security.listener(s.listener()).may(
                            &s.client_id,
                            s.username.as_deref(),
                            &msg.topic,
                            Access::Read,
                        )
                })
            };
            let Some((session, sub)) = self.shared.pick(gid, online, may_read) else {
                continue;
            };
            matched += 1;
            let o = Outgoing {
                msg: Arc::clone(msg),
                qos: self.delivery_qos(sub.options.qos, msg.qos),
                retain: sub.options.retain_as_published && msg.retain,
                subscription_ids: sub.identifier.into_iter().collect(),
                id: 0,
            };
            self.deliver(now, session, o, out);
        }
        self.stored_msg = None;
        matched
    }

    /// Send `o` to session `skey` now, or queue it.
    pub(super) fn deliver(
        &mut self,
        now: Instant,
        skey: usize,
        mut o: Outgoing,
        out: &mut impl Output,
    ) {
        let max_pending = self.config.max_pending_bytes;
        let max_bytes = self.config.max_inflight_bytes;
        // ACL on delivery: covers wildcard subscriptions and retained messages.
        if !self.may(skey, &o.msg.topic, Access::Read) {
            return;
        }
        // Outside the session's mount point: not for it (a `#` filter matches
        // its parent level too, which lies outside).
        if !self.inside_mount(skey, &o.msg.topic) {
            return;
        }
        self.persist_queued(skey, &mut o, out);
        let Some(s) = self.sessions.get_mut(skey) else {
            return;
        };
        match (s.conn(), o.qos) {
            (Some(conn), QoS::AtMostOnce) => {
                // QoS 0 to a client whose socket stopped taking data: drop rather
                // than buffer without bound.
                if out.pending_bytes(conn) > max_pending {
                    self.stats.messages_dropped += 1;
                    self.stats.dropped_backlog += 1;
                    s.extra.dropped += 1;
                    if !s.extra.dropping {
                        s.extra.dropping = true;
                        warn!(
                            "Outgoing QoS 0 messages are being dropped for client {}.",
                            LogStr(&s.client_id)
                        );
                    }
                    return;
                }
                self.send_publish(now, skey, conn, &o, 0, false, out);
            }
            (Some(conn), _) if s.queue.is_empty() && s.window_open(max_bytes) => {
                let Some(id) = s.allocate_packet_id() else {
                    return self.enqueue(skey, o, out);
                };
                if self.send_publish(now, skey, conn, &o, id, false, out) {
                    let i = Inflight {
                        packet_id: id,
                        out: o,
                        released: false,
                        needs_resend: false,
                    };
                    self.persist_inflight(&i, out);
                    self.sessions[skey].push_inflight(i);
                } else {
                    self.persist_done(o.id, out);
                }
            }
            (None, QoS::AtMostOnce) if !self.config.queue_qos0_messages => {}
            _ => self.enqueue(skey, o, out),
        }
    }

    /// Is `topic` inside the `mount_point` of session `skey`'s listener (and
    /// so sendable to it)? True without a mount point.
    pub(super) fn inside_mount(&self, skey: usize, topic: &str) -> bool {
        let listener = self.sessions.get(skey).map_or(0, |s| s.listener());
        super::mount::strip(self.mount_point(listener), topic).is_some()
    }

    /// ACL check for session `skey` under the rules of its listener.
    pub(super) fn may(&self, skey: usize, topic: &str, access: Access) -> bool {
        let Some(s) = self.sessions.get(skey) else {
            return false;
        };
        let rules = self.security.listener(s.listener());
        // Every delivery asks; without an ACL the answer needs no client id
        // (reading one kept in place finds its end first).
        rules.acl.is_none() || rules.may(&s.client_id, s.username.as_deref(), topic, access)
    }

    /// Put `o` at the back of the session's queue, within `max_queued_messages`
    /// and `max_queued_bytes`; over them the message is dropped, logged once per
    /// overflow and counted.
    fn enqueue(&mut self, skey: usize, o: Outgoing, out: &mut impl Output) {
        let max_n = self.config.max_queued_messages;
        let max_b = self.config.max_queued_bytes;
        let Some(s) = self.sessions.get_mut(skey) else {
            return;
        };
        let len = o.msg.payload.len();
        if (max_n != 0 && s.queue.len() >= max_n) || (max_b != 0 && s.queued_bytes() + len > max_b)
        {
            self.stats.messages_dropped += 1;
            self.stats.dropped_queue_full += 1;
            s.extra.dropped += 1;
            if !s.extra.dropping {
                s.extra.dropping = true;
                warn!(
                    "Outgoing messages are being dropped for client {} (queue full: {} messages, {} bytes).",
                    LogStr(&s.client_id),
                    s.queue.len(),
                    s.queued_bytes()
                );
            }
            self.persist_done(o.id, out);
            return;
        }
        // An offline session's stored message leaves RAM at once.
        let spill = s.conn().is_none() && o.id != 0;
        s.push_queued(Queued::Ram(o));
        if spill {
            s.spill();
        }
        if s.extra.queue_watch != 0
            && s.conn().is_none()
            && s.queue.len() + s.inflight.len() >= s.extra.queue_watch as usize
        {
            s.extra.queue_watch = 0;
            out.queue_reached(&s.client_id);
        }
    }

    /// Watch the offline session `client_id` until it holds `threshold`
    /// messages (queued and in flight, as mosquitto counts for a lazy
    /// bridge), then call [`Output::queue_reached`] once. Returns true, and
    /// watches nothing, when it holds that many already.
    pub fn watch_queue(&mut self, client_id: &str, threshold: usize) -> bool {
        let Some(s) = self
            .by_client_id
            .get(client_id, |k| super::client_id_of(&self.sessions, k))
            .and_then(|k| self.sessions.get_mut(k))
        else {
            return false;
        };
        if s.queue.len() + s.inflight.len() >= threshold {
            if let Some(e) = s.extra.get_mut() {
                e.queue_watch = 0;
            }
            return true;
        }
        s.extra.queue_watch = u32::try_from(threshold).unwrap_or(u32::MAX);
        false
    }

    /// Encode one PUBLISH for `conn`. Returns false when it was not sent: expired,
    /// or larger than the client's Maximum Packet Size (3.1.2.11.4: dropped).
    #[allow(clippy::too_many_arguments)]
    fn send_publish(
        &mut self,
        now: Instant,
        skey: usize,
        conn: ConnId,
        o: &Outgoing,
        packet_id: PacketId,
        dup: bool,
        out: &mut impl Output,
    ) -> bool {
        let Some(s) = self.sessions.get_mut(skey) else {
            return false;
        };
        if o.msg.is_expired(now) {
            return false;
        }
        let version = s.version;
        // The listener's mount point comes off (a session resumed on another
        // listener may hold messages outside the new one's: not sent).
        let mount =
            (self.config.listeners.get(s.listener())).and_then(|l| l.mount_point.as_deref());
        let Some(sent_topic) = super::mount::strip(mount, &o.msg.topic) else {
            return false;
        };
        let mut topic = sent_topic;
        let mut properties = Default::default();
        let mut new_alias = false;
        if version.is_v5() {
            properties = o.msg.outgoing_properties(now, &o.subscription_ids);
            if self.config.outgoing_topic_aliases {
                if let Some(c) = self.conns.get_mut(&conn) {
                    match c.aliases.outbound(topic) {
                        SendAs::Plain => {}
                        SendAs::Set(a) => {
                            properties.topic_alias = Some(a);
                            new_alias = true;
                        }
                        SendAs::Use(a) => {
                            properties.topic_alias = Some(a);
                            topic = "";
                        }
                    }
                }
            }
        }
        let packet = Packet::Publish(Publish {
            dup,
            qos: o.qos,
            retain: o.retain,
            topic,
            packet_id,
            properties,
            payload: &o.msg.payload,
        });
        if let Some(max) = s.max_packet_size {
            let too_big = encoded_len(&packet, version).map_or(true, |n| n > max.get() as usize);
            if too_big {
                debug!(
                    "Message on {} too large for client {}: dropped.",
                    LogStr(&o.msg.topic),
                    LogStr(&s.client_id)
                );
                s.extra.dropped += 1;
                if new_alias {
                    // The alias was never announced: hand it out again later.
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.aliases.forget(sent_topic);
                    }
                }
                self.stats.messages_dropped += 1;
                self.stats.dropped_too_large += 1;
                return false;
            }
        }
        self.stats.messages_sent += 1;
        self.stats.publish_bytes_sent += o.msg.payload.len() as u64;
        if o.qos == QoS::ExactlyOnce {
            // The receiver delivers a QoS 2 message on PUBLISH: the records that
            // keep it from being delivered again (its packet id in a stored
            // session; the publisher's held id) must be on disk first, or a
            // restart would send it again and it would be delivered twice.
            out.send_after_commit(conn, version, &packet);
        } else {
            out.send(conn, version, &packet);
        }
        true
    }

    /// Fill the in-flight window from the queue (after an ack or a reconnect).
    fn pump(&mut self, now: Instant, skey: usize, out: &mut impl Output) {
        self.resend_pending(now, skey, out);
        let max_bytes = self.config.max_inflight_bytes;
        loop {
            let Some(s) = self.sessions.get_mut(skey) else {
                return;
            };
            let Some(conn) = s.conn() else { return };
            let head_qos0 = s.queue.front().is_some_and(|q| q.qos() == QoS::AtMostOnce);
            if !head_qos0 && !s.window_open(max_bytes) {
                return;
            }
            if let Some(Queued::Disk(d)) = s.queue.front_mut() {
                // Only its index entry is in RAM: ask the shell to read it back
                // (once) and wait for `handle_loaded`.
                if !d.requested {
                    d.requested = true;
                    out.request_load(Load {
                        id: d.id,
                        session: skey,
                    });
                }
                return;
            }
            let Some(q) = s.pop_queued() else {
                if let Some(e) = s.extra.get_mut() {
                    e.dropping = false;
                }
                s.release_idle();
                return;
            };
            let Queued::Ram(o) = q else {
                return;
            };
            // Read access is checked again as the message leaves the queue: the
            // rules may have changed since it was queued (SIGHUP), and a restored
            // session's messages were queued before the restart.
            if !self.may(skey, &o.msg.topic, Access::Read) {
                self.drop_unreadable(skey, &o);
                self.persist_done(o.id, out);
                continue;
            }
            let Some(s) = self.sessions.get_mut(skey) else {
                return;
            };
            if o.qos == QoS::AtMostOnce {
                self.send_publish(now, skey, conn, &o, 0, false, out);
                continue;
            }
            let Some(id) = s.allocate_packet_id() else {
                return;
            };
            if self.send_publish(now, skey, conn, &o, id, false, out) {
                let i = Inflight {
                    packet_id: id,
                    out: o,
                    released: false,
                    needs_resend: false,
                };
                self.persist_inflight(&i, out);
                self.sessions[skey].push_inflight(i);
            } else {
                self.persist_done(o.id, out);
            }
        }
    }

    /// The shell read back the stored message `load` asked for (`None`: it could
    /// not). It takes the head of its session's queue and the session goes on.
    pub fn handle_loaded(
        &mut self,
        now: Instant,
        load: Load,
        msg: Option<StoredMessage>,
        out: &mut impl Output,
    ) {
        let wall = self.wall_ms(now);
        let Some(s) = self.sessions.get_mut(load.session) else {
            return;
        };
        let online = s.conn().is_some();
        // The session may have gone, or been replaced under the same key: only
        // the request for the head of this queue is answered.
        let Some(Queued::Disk(d)) = s.queue.front_mut() else {
            return;
        };
        if d.id != load.id || !d.requested {
            return;
        }
        if !online {
            // Offline again: the message stays on disk; ask again on reconnect.
            d.requested = false;
            return;
        }
        match msg {
            Some(m) => {
                let o = Outgoing {
                    msg: Arc::new(super::durable::message_from(m, now, wall)),
                    qos: d.qos,
                    retain: d.retain,
                    subscription_ids: std::mem::take(&mut d.subscription_ids).into_vec(),
                    id: d.id,
                };
                if let Some(front) = s.queue.front_mut() {
                    *front = Queued::Ram(o);
                }
            }
            None => {
                warn!(
                    "Stored message {} for {} could not be read back: skipped.",
                    d.id,
                    LogStr(&s.client_id)
                );
                s.pop_queued();
                self.persist_done(load.id, out);
            }
        }
        self.pump(now, load.session, out);
    }

    /// On reconnect: re-send unacknowledged PUBLISHes with DUP set and PUBRELs,
    /// in their original order [MQTT-4.4.0-1], as many as the client's Receive
    /// Maximum allows [MQTT-3.3.4-9] (the rest follow as acks come), then the queue.
    pub(super) fn resend_inflight(
        &mut self,
        now: Instant,
        _conn: ConnId,
        skey: usize,
        out: &mut impl Output,
    ) {
        let Some(s) = self.sessions.get_mut(skey) else {
            return;
        };
        s.mark_all_for_resend();
        self.pump(now, skey, out);
    }

    /// Re-send in-flight entries marked `needs_resend`, oldest first, while the
    /// window has room.
    fn resend_pending(&mut self, now: Instant, skey: usize, out: &mut impl Output) {
        loop {
            let Some(s) = self.sessions.get_mut(skey) else {
                return;
            };
            let Some(conn) = s.conn() else { return };
            if s.resends() == 0 || s.outstanding() >= usize::from(s.send_window) {
                return;
            }
            let Some(pos) = s.inflight.iter().position(|i| i.needs_resend) else {
                return;
            };
            let version = s.version;
            let Some(mut i) = s.remove_inflight(pos) else {
                return;
            };
            i.needs_resend = false;
            let keep = if i.released {
                out.send_after_commit(
                    conn,
                    version,
                    &Packet::PubRel(PubResp::success(i.packet_id)),
                );
                true
            } else if !self.may(skey, &i.out.msg.topic, Access::Read) {
                // Re-checked like the queue (see `pump`).
                self.drop_unreadable(skey, &i.out);
                false
            } else {
                // An expired or now too large message is dropped from the flow.
                self.send_publish(now, skey, conn, &i.out, i.packet_id, true, out)
            };
            if keep {
                if let Some(s) = self.sessions.get_mut(skey) {
                    s.insert_inflight(pos, i);
                }
            } else {
                self.persist_done(i.out.id, out);
            }
        }
    }

    /// A queued or in-flight message its session may no longer read: counted
    /// and logged (at debug: one line per message would let a revoked reader's
    /// backlog flood the log); the caller drops it from the flow.
    fn drop_unreadable(&mut self, skey: usize, o: &Outgoing) {
        self.stats.messages_dropped += 1;
        if let Some(s) = self.sessions.get_mut(skey) {
            s.extra.dropped += 1;
            debug!(
                "Denied queued message on {} for {}: no read access.",
                LogStr(&o.msg.topic),
                LogStr(&s.client_id)
            );
        }
    }

    /// `retry_interval` (3.1/3.1.1 only): re-send what is still unacknowledged.
    pub(super) fn retry(
        &mut self,
        now: Instant,
        conn: ConnId,
        timer: Timer,
        out: &mut impl Output,
    ) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let (Some(skey), Some(interval)) = (c.session(), self.config.retry_interval) else {
            return;
        };
        if !timer.is_for(c.serial) {
            return;
        }
        let Some(s) = self.sessions.get(skey) else {
            return;
        };
        let version = s.version;
        let pending: Vec<Inflight> = s
            .inflight
            .iter()
            .filter(|i| !i.needs_resend)
            .cloned()
            .collect();
        for i in pending {
            if i.released {
                out.send_after_commit(
                    conn,
                    version,
                    &Packet::PubRel(PubResp::success(i.packet_id)),
                );
            } else {
                self.send_publish(now, skey, conn, &i.out, i.packet_id, true, out);
            }
        }
        out.set_timer(now + interval, timer);
    }

    /// PUBACK: a QoS 1 delivery is complete.
    pub(super) fn handle_puback(
        &mut self,
        now: Instant,
        skey: usize,
        r: &PubResp<'_>,
        out: &mut impl Output,
    ) {
        self.complete(
            now,
            skey,
            r.packet_id,
            |i| i.out.qos == QoS::AtLeastOnce,
            out,
        );
    }

    /// Remove the in-flight entry `id` if `done` says this ack completes it, and
    /// let the next message into the window. Acks for unknown ids are ignored.
    fn complete(
        &mut self,
        now: Instant,
        skey: usize,
        id: PacketId,
        done: impl Fn(&Inflight) -> bool,
        out: &mut impl Output,
    ) {
        let Some(s) = self.sessions.get_mut(skey) else {
            return;
        };
        let Some(pos) = s.inflight_position(id) else {
            return;
        };
        if s.inflight.get(pos).is_some_and(done) {
            let Some(i) = s.remove_inflight(pos) else {
                return;
            };
            self.persist_done(i.out.id, out);
            self.recycle(i.out.msg);
            self.pump(now, skey, out);
            // A retained replay waiting for the window goes on.
            self.resume_replay(skey);
        }
    }

    pub(super) fn handle_pubrec(
        &mut self,
        now: Instant,
        skey: usize,
        r: &PubResp<'_>,
        out: &mut impl Output,
    ) {
        let Some(s) = self.sessions.get_mut(skey) else {
            return;
        };
        let version = s.version;
        let Some(conn) = s.conn() else { return };
        match s.inflight_position(r.packet_id) {
            Some(pos) if s.inflight[pos].out.qos == QoS::ExactlyOnce => {
                if r.reason.0 >= 0x80 {
                    // v5: the client refused the message; the flow ends here (4.3.3).
                    self.complete(now, skey, r.packet_id, |_| true, out);
                    return;
                }
                s.inflight[pos].released = true;
                if let Some(i) = s.inflight.get(pos).cloned() {
                    self.persist_inflight(&i, out);
                }
                // After the record that it was released: once the receiver
                // has it, a re-sent PUBLISH would be a new delivery.
                out.send_after_commit(
                    conn,
                    version,
                    &Packet::PubRel(PubResp::success(r.packet_id)),
                );
            }
            _ => {
                // Unknown id: answer so the client can finish (v5: 0x92).
                let mut rel = PubResp::success(r.packet_id);
                if version.is_v5() {
                    rel.reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
                }
                out.send(conn, version, &Packet::PubRel(rel));
            }
        }
    }

    /// PUBCOMP: a QoS 2 delivery whose PUBREL was sent is complete.
    pub(super) fn handle_pubcomp(
        &mut self,
        now: Instant,
        skey: usize,
        r: &PubResp<'_>,
        out: &mut impl Output,
    ) {
        self.complete(now, skey, r.packet_id, |i| i.released, out);
    }

    pub(super) fn handle_pubrel(
        &mut self,
        conn: ConnId,
        skey: usize,
        r: &PubResp<'_>,
        out: &mut impl Output,
    ) {
        let Some(s) = self.sessions.get_mut(skey) else {
            return;
        };
        let version = s.version;
        let mut comp = PubResp::success(r.packet_id);
        if let Some(pos) = s
            .extra
            .awaiting_rel
            .iter()
            .position(|&id| id == r.packet_id)
        {
            s.extra.awaiting_rel.swap_remove(pos);
            s.extra.release_if_empty();
            self.persist_rel(skey, r.packet_id, false, out);
        } else if version.is_v5() {
            // 4.3.3: PUBREL for an id we do not hold: 0x92.
            comp.reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
        }
        // After the release record: the client may reuse the id at once.
        out.send_after_commit(conn, version, &Packet::PubComp(comp));
    }

    pub(super) fn handle_disconnect(
        &mut self,
        now: Instant,
        conn: ConnId,
        skey: usize,
        d: &Disconnect<'_>,
        out: &mut impl Output,
    ) {
        let Some(s) = self.sessions.get_mut(skey) else {
            return;
        };
        if let Some(secs) = d.properties.session_expiry_interval {
            if s.expiry.ends_with_connection() && secs != 0 {
                // [MQTT-3.14.2-2] a session that ends with the connection cannot be
                // extended at DISCONNECT.
                return self.end(
                    now,
                    conn,
                    End::ProtocolError(ReasonCode::PROTOCOL_ERROR),
                    out,
                );
            }
            s.expiry = SessionExpiry::from_secs(secs);
        }
        if d.properties.session_expiry_interval.is_some() {
            self.persist_session(skey, out);
        }
        let with_will = d.reason == ReasonCode::DISCONNECT_WITH_WILL;
        self.end(now, conn, End::Disconnect { with_will }, out);
    }
}
