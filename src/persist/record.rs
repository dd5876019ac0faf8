//! The log's records: what the broker writes (borrowed, no copies) and how each
//! is encoded. Decoding yields owned values for the replay.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::broker::message::{ForwardedProperties, Message};

/// A durable change, as the broker reports it. Sessions are named by their
/// number (`sid`, given once when the session first becomes durable), not by
/// their client id; a message's content is written once (`Message`) and each
/// session's copy is a small `Queue` record that names it.
#[derive(Debug, Clone, Copy)]
pub enum Record<'a> {
    /// A retained message was stored (or replaced).
    RetainSet(&'a Message),
    /// A retained message was stored (or replaced) by a client whose write
    /// access is checked again when it is sent (`check_retain_source`).
    RetainSetFrom {
        /// The message.
        msg: &'a Message,
        /// The publisher's client identifier.
        client_id: &'a str,
        /// The user name (or certificate name) it authenticated with.
        username: Option<&'a str>,
        /// Number of the listener (config order) whose rules applied to it.
        listener: u32,
    },
    /// The retained message of a topic was cleared.
    RetainClear(&'a str),
    /// A persistent session's metadata (its subscriptions are separate records).
    SessionPut {
        /// Session number.
        sid: u32,
        /// Client identifier.
        client_id: &'a str,
        /// Protocol level (3, 4, 5).
        level: u8,
        /// Seconds it outlives its connection; `None` = never expires.
        expiry: Option<u32>,
        /// The identity its ACL checks use: the user name (or TLS certificate
        /// name) it authenticated with.
        username: Option<&'a str>,
        /// Number of the listener (in config order) whose rules apply to it.
        listener: u32,
    },
    /// A session ended (with its subscriptions, queue and QoS 2 ids).
    SessionDelete(u32),
    /// A subscription added to (or replaced in) a session.
    SubAdd {
        /// Session number.
        sid: u32,
        /// The subscription.
        sub: &'a StoredSubscription,
    },
    /// A subscription removed from a session.
    SubRemove {
        /// Session number.
        sid: u32,
        /// Its filter.
        filter: &'a str,
    },
    /// The content of a message queued for one or more durable sessions,
    /// written once however many sessions it is queued for.
    Message {
        /// Message number.
        mid: u64,
        /// The message.
        msg: &'a Message,
    },
    /// Message `mid` was queued for (or sent to) a persistent session as
    /// delivery `id`.
    Queue {
        /// Session number.
        sid: u32,
        /// Broker-wide delivery number (orders the queue on replay).
        id: u64,
        /// The `Message` record it delivers.
        mid: u64,
        /// Delivery QoS.
        qos: u8,
        /// RETAIN flag to send.
        retain: bool,
        /// Subscription identifiers to send.
        subscription_ids: &'a [u32],
    },
    /// Delivery `id` went out with `packet_id` (and, once PUBREC came, `released`).
    Inflight {
        /// Delivery number.
        id: u64,
        /// Packet identifier used.
        packet_id: u16,
        /// PUBREL sent.
        released: bool,
    },
    /// Delivery `id` is done with (acknowledged, expired or dropped).
    Done(u64),
    /// An incoming QoS 2 packet id is held until PUBREL (exactly once across restarts).
    RelHold {
        /// Session number.
        sid: u32,
        /// Packet identifier.
        packet_id: u16,
    },
    /// The PUBREL for it came.
    RelDone {
        /// Session number.
        sid: u32,
        /// Packet identifier.
        packet_id: u16,
    },
    /// The will a disconnected session holds during its Will Delay Interval
    /// (`None`: there is none any more).
    Will {
        /// Session number.
        sid: u32,
        /// Will Delay Interval, seconds.
        delay: u32,
        /// The will message.
        msg: Option<&'a Message>,
    },
    /// Compaction only: copy delivery `id`'s queue record, and its message's
    /// record the first time, from the old log (RAM need not hold either).
    Keep(u64),
}

/// A subscription as stored: filter, options byte (3.8.3.1 layout) and identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSubscription {
    /// Topic filter (shared subscriptions keep their `$share/g/` prefix).
    pub filter: String,
    /// Subscription options byte.
    pub options: u8,
    /// Subscription identifier (v5).
    pub identifier: Option<u32>,
}

/// Who published a retained message, read back from the log.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StoredPublisher {
    /// Client identifier.
    pub client_id: String,
    /// User name; `None` = anonymous.
    pub username: Option<String>,
    /// Listener number (config order).
    pub listener: u32,
}

/// A message read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// QoS as published.
    pub qos: u8,
    /// RETAIN as published.
    pub retain: bool,
    /// Forwarded MQTT 5 properties.
    pub properties: Option<ForwardedProperties>,
    /// When it was received, milliseconds since the Unix epoch (for expiry).
    pub received_unix_ms: u64,
}

pub(super) const RETAIN_SET: u8 = 1;
pub(super) const RETAIN_CLEAR: u8 = 2;
pub(super) const SESSION_PUT: u8 = 3;
pub(super) const SESSION_DELETE: u8 = 4;
pub(super) const QUEUE: u8 = 5;
pub(super) const INFLIGHT: u8 = 6;
pub(super) const DONE: u8 = 7;
pub(super) const REL_HOLD: u8 = 8;
pub(super) const REL_DONE: u8 = 9;
pub(super) const WILL: u8 = 10;
pub(super) const SUB_ADD: u8 = 11;
pub(super) const SUB_REMOVE: u8 = 12;
pub(super) const MESSAGE: u8 = 13;
pub(super) const RETAIN_SET_FROM: u8 = 14;
/// Bytes of a `Message` body that replay reads (kind, number, payload length);
/// the rest is only checksummed, so a restart holds no message content.
pub(super) const MESSAGE_HEAD: usize = 1 + 8 + 4;

/// Little-endian writer helpers.
pub(super) struct W<'b>(pub &'b mut Vec<u8>);

impl W<'_> {
    pub(super) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(super) fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(super) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(super) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(super) fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
    pub(super) fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    pub(super) fn opt_u32(&mut self, v: Option<u32>) {
        match v {
            Some(x) => {
                self.u8(1);
                self.u32(x);
            }
            None => self.u8(0),
        }
    }
    fn opt_str(&mut self, v: Option<&str>) {
        match v {
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
            None => self.u8(0),
        }
    }
}

/// Little-endian reader; every read is checked (the file may be damaged).
pub(super) struct R<'b> {
    buf: &'b [u8],
    pos: usize,
}

impl<'b> R<'b> {
    pub(super) fn new(buf: &'b [u8]) -> Self {
        R { buf, pos: 0 }
    }
    pub(super) fn take(&mut self, n: usize) -> Option<&'b [u8]> {
        let s = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    pub(super) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    pub(super) fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    pub(super) fn u32(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(super) fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Some(u64::from_le_bytes(a))
    }
    pub(super) fn bytes(&mut self) -> Option<&'b [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub(super) fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
    pub(super) fn opt_u32(&mut self) -> Option<Option<u32>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.u32()?)),
            _ => None,
        }
    }
    fn opt_string(&mut self) -> Option<Option<String>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.string()?)),
            _ => None,
        }
    }
    pub(super) fn done(&self) -> bool {
        self.pos == self.buf.len()
    }
    /// Bytes read so far.
    pub(super) fn pos(&self) -> usize {
        self.pos
    }
}

fn unix_ms(msg: &Message) -> u64 {
    // The message keeps a monotonic Instant; translate its age to wall time.
    let age = msg.received.elapsed();
    SystemTime::now()
        .checked_sub(age)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

fn put_message(w: &mut W<'_>, m: &Message) {
    w.str(&m.topic);
    w.bytes(&m.payload);
    w.u8(m.qos as u8);
    w.u8(u8::from(m.retain));
    w.u64(unix_ms(m));
    match &m.properties {
        None => w.u8(0),
        Some(p) => {
            w.u8(1);
            w.opt_u32(p.payload_format_indicator.map(u32::from));
            w.opt_u32(p.message_expiry_interval);
            w.opt_str(p.content_type.as_deref());
            w.opt_str(p.response_topic.as_deref());
            match &p.correlation_data {
                Some(c) => {
                    w.u8(1);
                    w.bytes(c);
                }
                None => w.u8(0),
            }
            w.u32(p.user_properties.len() as u32);
            for (k, v) in &p.user_properties {
                w.str(k);
                w.str(v);
            }
        }
    }
}

pub(super) fn get_message(r: &mut R<'_>) -> Option<StoredMessage> {
    let topic = r.string()?;
    let payload = r.bytes()?.to_vec();
    let qos = r.u8()?;
    let retain = r.u8()? != 0;
    let received_unix_ms = r.u64()?;
    let properties = match r.u8()? {
        0 => None,
        1 => {
            let payload_format_indicator = r.opt_u32()?.map(|v| v as u8);
            let message_expiry_interval = r.opt_u32()?;
            let content_type = r.opt_string()?.map(Into::into);
            let response_topic = r.opt_string()?.map(Into::into);
            let correlation_data = match r.u8()? {
                0 => None,
                1 => Some(r.bytes()?.to_vec().into_boxed_slice()),
                _ => return None,
            };
            let n = r.u32()? as usize;
            let mut pairs = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                pairs.push((r.string()?, r.string()?));
            }
            let user_properties = pairs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            Some(ForwardedProperties {
                payload_format_indicator,
                message_expiry_interval,
                content_type,
                response_topic,
                correlation_data,
                user_properties,
            })
        }
        _ => return None,
    };
    (qos <= 2).then_some(StoredMessage {
        topic,
        payload,
        qos,
        retain,
        properties,
        received_unix_ms,
    })
}

/// Encode a record's kind byte and body.
pub(super) fn encode(rec: &Record<'_>, out: &mut Vec<u8>) {
    let mut w = W(out);
    match *rec {
        Record::RetainSet(m) => {
            w.u8(RETAIN_SET);
            put_message(&mut w, m);
        }
        Record::RetainSetFrom {
            msg,
            client_id,
            username,
            listener,
        } => {
            w.u8(RETAIN_SET_FROM);
            put_message(&mut w, msg);
            w.str(client_id);
            w.opt_str(username);
            w.u32(listener);
        }
        Record::RetainClear(t) => {
            w.u8(RETAIN_CLEAR);
            w.str(t);
        }
        Record::SessionPut {
            sid,
            client_id,
            level,
            expiry,
            username,
            listener,
        } => {
            w.u8(SESSION_PUT);
            w.u32(sid);
            w.str(client_id);
            w.u8(level);
            w.opt_u32(expiry);
            w.opt_str(username);
            w.u32(listener);
        }
        Record::SessionDelete(sid) => {
            w.u8(SESSION_DELETE);
            w.u32(sid);
        }
        Record::SubAdd { sid, sub } => {
            w.u8(SUB_ADD);
            w.u32(sid);
            w.str(&sub.filter);
            w.u8(sub.options);
            w.opt_u32(sub.identifier);
        }
        Record::SubRemove { sid, filter } => {
            w.u8(SUB_REMOVE);
            w.u32(sid);
            w.str(filter);
        }
        Record::Message { mid, msg } => {
            w.u8(MESSAGE);
            w.u64(mid);
            w.u32(u32::try_from(msg.payload.len()).unwrap_or(u32::MAX));
            put_message(&mut w, msg);
        }
        Record::Queue {
            sid,
            id,
            mid,
            qos,
            retain,
            subscription_ids,
        } => {
            w.u8(QUEUE);
            w.u32(sid);
            w.u64(id);
            w.u64(mid);
            w.u8(qos);
            w.u8(u8::from(retain));
            w.u32(subscription_ids.len() as u32);
            for s in subscription_ids {
                w.u32(*s);
            }
        }
        Record::Inflight {
            id,
            packet_id,
            released,
        } => {
            w.u8(INFLIGHT);
            w.u64(id);
            w.u16(packet_id);
            w.u8(u8::from(released));
        }
        Record::Done(id) => {
            w.u8(DONE);
            w.u64(id);
        }
        Record::RelHold { sid, packet_id } => {
            w.u8(REL_HOLD);
            w.u32(sid);
            w.u16(packet_id);
        }
        Record::RelDone { sid, packet_id } => {
            w.u8(REL_DONE);
            w.u32(sid);
            w.u16(packet_id);
        }
        Record::Will { sid, delay, msg } => {
            w.u8(WILL);
            w.u32(sid);
            w.u32(delay);
            match msg {
                Some(m) => {
                    w.u8(1);
                    put_message(&mut w, m);
                }
                None => w.u8(0),
            }
        }
        Record::Keep(_) => {
            // Never encoded: `Store::compact` copies the old records instead.
        }
    }
}

/// A decoded record, owned. A `Message` body is decoded only when it is read
/// back for sending ([`decode_message`]); replay sees its head only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Owned {
    RetainSet(StoredMessage),
    RetainSetFrom(StoredMessage, StoredPublisher),
    RetainClear(String),
    SessionPut {
        sid: u32,
        client_id: String,
        level: u8,
        expiry: Option<u32>,
        username: Option<String>,
        listener: u32,
    },
    SessionDelete(u32),
    SubAdd {
        sid: u32,
        sub: StoredSubscription,
    },
    SubRemove {
        sid: u32,
        filter: String,
    },
    Queue {
        sid: u32,
        id: u64,
        mid: u64,
        qos: u8,
        retain: bool,
        subscription_ids: Vec<u32>,
    },
    Inflight {
        id: u64,
        packet_id: u16,
        released: bool,
    },
    Done(u64),
    RelHold {
        sid: u32,
        packet_id: u16,
    },
    RelDone {
        sid: u32,
        packet_id: u16,
    },
    Will {
        sid: u32,
        delay: u32,
        msg: Option<StoredMessage>,
    },
}

/// The head of a `Message` body: (message number, payload length); `None`
/// if `head` is not one.
pub(super) fn message_head(head: &[u8]) -> Option<(u64, u32)> {
    let mut r = R::new(head);
    if r.u8()? != MESSAGE {
        return None;
    }
    Some((r.u64()?, r.u32()?))
}

/// Decode a whole `Message` body: (message number, message).
pub(super) fn decode_message(body: &[u8]) -> Option<(u64, StoredMessage)> {
    let mut r = R::new(body);
    if r.u8()? != MESSAGE {
        return None;
    }
    let mid = r.u64()?;
    let len = r.u32()?;
    let msg = get_message(&mut r)?;
    (r.done() && msg.payload.len() == len as usize).then_some((mid, msg))
}

/// Decode one record body (kind byte first); `None` when it does not parse
/// (a `Message` body included: see [`decode_message`]).
pub(super) fn decode(body: &[u8]) -> Option<Owned> {
    let mut r = R::new(body);
    let rec = match r.u8()? {
        RETAIN_SET => Owned::RetainSet(get_message(&mut r)?),
        RETAIN_SET_FROM => Owned::RetainSetFrom(
            get_message(&mut r)?,
            StoredPublisher {
                client_id: r.string()?,
                username: r.opt_string()?,
                listener: r.u32()?,
            },
        ),
        RETAIN_CLEAR => Owned::RetainClear(r.string()?),
        SESSION_PUT => Owned::SessionPut {
            sid: r.u32()?,
            client_id: r.string()?,
            level: r.u8()?,
            expiry: r.opt_u32()?,
            username: r.opt_string()?,
            listener: r.u32()?,
        },
        SESSION_DELETE => Owned::SessionDelete(r.u32()?),
        SUB_ADD => Owned::SubAdd {
            sid: r.u32()?,
            sub: StoredSubscription {
                filter: r.string()?,
                options: r.u8()?,
                identifier: r.opt_u32()?,
            },
        },
        SUB_REMOVE => Owned::SubRemove {
            sid: r.u32()?,
            filter: r.string()?,
        },
        QUEUE => {
            let sid = r.u32()?;
            let id = r.u64()?;
            let mid = r.u64()?;
            let qos = r.u8()?;
            let retain = r.u8()? != 0;
            let n = r.u32()? as usize;
            let mut subscription_ids = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                subscription_ids.push(r.u32()?);
            }
            Owned::Queue {
                sid,
                id,
                mid,
                qos,
                retain,
                subscription_ids,
            }
        }
        INFLIGHT => Owned::Inflight {
            id: r.u64()?,
            packet_id: r.u16()?,
            released: r.u8()? != 0,
        },
        DONE => Owned::Done(r.u64()?),
        REL_HOLD => Owned::RelHold {
            sid: r.u32()?,
            packet_id: r.u16()?,
        },
        REL_DONE => Owned::RelDone {
            sid: r.u32()?,
            packet_id: r.u16()?,
        },
        WILL => {
            let sid = r.u32()?;
            let delay = r.u32()?;
            let msg = match r.u8()? {
                0 => None,
                1 => Some(get_message(&mut r)?),
                _ => return None,
            };
            Owned::Will { sid, delay, msg }
        }
        _ => return None,
    };
    r.done().then_some(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session_put(username: Option<&str>) -> Vec<u8> {
        let mut buf = Vec::new();
        encode(
            &Record::SessionPut {
                sid: 9,
                client_id: "c",
                level: 5,
                expiry: Some(60),
                username,
                listener: 3,
            },
            &mut buf,
        );
        buf
    }

    #[test]
    fn session_identity_round_trips() {
        for user in [Some("alice"), None] {
            match decode(&session_put(user)) {
                Some(Owned::SessionPut {
                    sid,
                    username,
                    listener,
                    ..
                }) => assert_eq!((sid, username.as_deref(), listener), (9, user, 3)),
                other => panic!("{other:?}"),
            }
        }
        // A cut inside the record is damage.
        let mut torn = session_put(Some("alice"));
        torn.truncate(torn.len() - 2);
        assert_eq!(decode(&torn), None);
    }

    /// `check_retain_source`: a retained message keeps who published it; the
    /// record without a publisher (as written before) still reads back.
    #[test]
    fn retained_publisher_round_trips() {
        let m = Message {
            topic: "w/alice/x".into(),
            payload: b"v".to_vec(),
            qos: crate::protocol::QoS::AtLeastOnce,
            retain: true,
            properties: None,
            received: std::time::Instant::now(),
        };
        for username in [Some("alice"), None] {
            let mut buf = Vec::new();
            encode(
                &Record::RetainSetFrom {
                    msg: &m,
                    client_id: "c1",
                    username,
                    listener: 2,
                },
                &mut buf,
            );
            match decode(&buf) {
                Some(Owned::RetainSetFrom(msg, from)) => {
                    assert_eq!(msg.topic, "w/alice/x");
                    assert_eq!(
                        from,
                        StoredPublisher {
                            client_id: "c1".into(),
                            username: username.map(Into::into),
                            listener: 2
                        }
                    );
                }
                other => panic!("{other:?}"),
            }
            buf.truncate(buf.len() - 1);
            assert_eq!(decode(&buf), None, "torn record is damage");
        }
        let mut buf = Vec::new();
        encode(&Record::RetainSet(&m), &mut buf);
        assert!(matches!(decode(&buf), Some(Owned::RetainSet(_))));
    }

    /// Subscription changes and queue records are a few bytes each: no client
    /// id, no copy of the message, no list of the other subscriptions.
    #[test]
    fn delta_and_reference_records_are_small() {
        let sub = StoredSubscription {
            filter: "sensors/+/temp".into(),
            options: 1,
            identifier: None,
        };
        let mut buf = Vec::new();
        encode(&Record::SubAdd { sid: 1, sub: &sub }, &mut buf);
        assert_eq!(buf.len(), 1 + 4 + 4 + sub.filter.len() + 1 + 1);
        assert_eq!(
            decode(&buf),
            Some(Owned::SubAdd {
                sid: 1,
                sub: sub.clone()
            })
        );
        buf.clear();
        encode(
            &Record::Queue {
                sid: 1,
                id: 2,
                mid: 3,
                qos: 1,
                retain: false,
                subscription_ids: &[],
            },
            &mut buf,
        );
        assert_eq!(buf.len(), 27);
        buf.clear();
        encode(&Record::Done(2), &mut buf);
        assert_eq!(buf.len(), 9);
    }
}
