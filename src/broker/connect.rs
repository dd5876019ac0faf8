//! CONNECT: client identifier rules, session take-over and resumption, the will,
//! keep-alive, and the CONNACK with the broker's limits for MQTT 5 clients.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::hashing::Checked;
use super::message::Message;
use super::output::TimerKind;
use super::session::{PendingWill, Session, SessionExpiry};
use super::{connack, keep_alive_grace, Broker, ConnId, End, Output, Timer};
use crate::auth::Access;
use crate::logging::{LogStr, NOTICE};
use crate::protocol::{
    encoded_len, ConnAck, Connect, Packet, Properties, ProtocolVersion, QoS, ReasonCode,
};

/// How long a client with bad credentials waits for its CONNACK.
const AUTH_FAILURE_DELAY: Duration = Duration::from_secs(1);

/// Largest packet the protocol allows (remaining length 268,435,455 + 5 header bytes).
const PROTOCOL_MAX_PACKET: usize = 268_435_460;

impl Broker {
    pub(super) fn handle_connect(
        &mut self,
        now: Instant,
        conn: ConnId,
        connect: &Connect<'_>,
        out: &mut impl Output,
    ) {
        let version = connect.version;
        let Some(peer) = self.conns.get(&conn).map(|c| Box::<str>::from(c.peer())) else {
            return;
        };
        if let Err(reason) = super::auth::authenticate(connect) {
            info!(target: NOTICE, "Client connection from {peer} refused: {}.", reason.name());
            self.refuse(conn, version, reason, out);
            return;
        }
        let Some(listener) = self.conns.get(&conn).and_then(super::Conn::listener) else {
            // Its greeting went at an accepted CONNECT: this is a second one
            // [MQTT-3.1.0-2] (not reached: a connected client's packets go to its session).
            self.conns.remove(&conn);
            out.close_with(conn, ReasonCode::PROTOCOL_ERROR);
            return;
        };
        // `mount_point`: the will topic lives under the listener's prefix too
        // (its limits and ACL apply to the full topic, as in mosquitto).
        let will_topic = match &connect.will {
            Some(w) => match super::mount::topic(self.mount_point(listener), w.topic) {
                Some(t) => Some(t),
                None => {
                    info!("Client connection from {peer} refused: will topic too long under the mount point.");
                    if version.is_v5() {
                        self.refuse(conn, version, ReasonCode::TOPIC_NAME_INVALID, out);
                    } else {
                        self.conns.remove(&conn);
                        out.close(conn);
                    }
                    return;
                }
            },
            None => None,
        };
        if let (Some(w), Some(topic)) = (&connect.will, &will_topic) {
            if self.will_topic_too_deep(conn, version, topic, &peer, out) {
                return;
            }
            // [MQTT-3.2.2-12] a Will QoS over the listener's `max_qos` refuses
            // the connection: v5 with 0x9B; 3.1/3.1.1 have no return code for
            // it and are closed without a CONNACK, as mosquitto does.
            if w.qos > self.max_qos(listener) {
                info!(
                    target: NOTICE,
                    "Client connection from {peer} refused: will QoS {} over max_qos {}.",
                    w.qos as u8,
                    self.max_qos(listener) as u8
                );
                if version.is_v5() {
                    self.refuse(conn, version, ReasonCode::QOS_NOT_SUPPORTED, out);
                } else {
                    self.conns.remove(&conn);
                    out.close(conn);
                }
                return;
            }
        }

        // Client identifier rules.
        let mut assigned = None;
        if connect.client_id.is_empty() {
            // [MQTT-3.1.3-8] 3.1.1: empty id needs clean session; 3.1 ids are 1-23
            // characters; v5 may always be assigned one (3.1.3.1).
            let allowed = self.config.allow_zero_length_clientid
                && match version {
                    ProtocolVersion::V31 => false,
                    ProtocolVersion::V311 => connect.clean_start,
                    ProtocolVersion::V5 => true,
                };
            if !allowed {
                info!(target: NOTICE, "Client connection from {peer} refused: empty client id.");
                self.refuse(conn, version, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID, out);
                return;
            }
            assigned = Some(self.generate_client_id(now));
        }
        let client_id: Box<str> = match &assigned {
            Some(id) => id.as_str().into(),
            None => connect.client_id.into(),
        };
        out.client_named(conn, &client_id);

        // A will whose payload a PUBLISH could not carry is refused as mosquitto
        // does: v5 0x95 (packet too large), 3.1/3.1.1 5 (not authorised).
        let limit = self.config.message_size_limit;
        if let Some(w) = &connect.will {
            if limit > 0 && w.payload.len() > limit {
                info!(
                    target: NOTICE,
                    "Client connection from {peer} refused: will payload of {} bytes over message_size_limit {limit}.",
                    w.payload.len()
                );
                let reason = if version.is_v5() {
                    ReasonCode::PACKET_TOO_LARGE
                } else {
                    ReasonCode::NOT_AUTHORIZED
                };
                self.refuse(conn, version, reason, out);
                return;
            }
        }

        // `clientid_prefixes`: other ids are refused as not authorised, as
        // mosquitto does.
        if let Some(prefix) = &self.config.clientid_prefixes {
            if !client_id.starts_with(prefix.as_str()) {
                info!(
                    target: NOTICE,
                    "Client connection from {peer} refused: client id {} lacks the prefix `clientid_prefixes` asks for.",
                    LogStr(&client_id)
                );
                self.refuse(conn, version, ReasonCode::NOT_AUTHORIZED, out);
                return;
            }
        }

        // Credentials (password file, certificate identity) and the will's ACL.
        let Some(identity) = self
            .conns
            .get(&conn)
            .map(|c| c.greeting.as_ref().and_then(|g| g.identity.clone()))
        else {
            return;
        };
        let sec = Arc::clone(self.security.listener(listener));
        let by_certificate = sec.use_identity_as_username || sec.use_subject_as_username;
        let username: Option<Box<str>> = if by_certificate {
            identity
        } else {
            connect.username.map(Into::into)
        };
        // `use_username_as_clientid`: the user name (the certificate's name
        // with `use_identity_as_username`) is the client id, so one user cannot
        // take over another's session; without one the client is not
        // authorised (mosquitto's answer). An id the broker assigned is
        // announced as the user name (v5 Assigned Client Identifier).
        let client_id = if self.listener_options(listener).use_username_as_clientid {
            let Some(user) = username.clone() else {
                info!(
                    target: NOTICE,
                    "Client {} from {peer} refused: use_username_as_clientid and no user name.",
                    LogStr(&client_id)
                );
                self.refuse(conn, version, ReasonCode::NOT_AUTHORIZED, out);
                return;
            };
            if let Some(a) = assigned.as_mut() {
                *a = user.to_string();
            }
            user
        } else {
            client_id
        };
        // Hashing is metered (issue 10 item 8): over budget, the CONNECT waits.
        let password_ok = match (&username, &sec.passwords) {
            (Some(user), Some(pw)) if !by_certificate => {
                match self
                    .hashing
                    .check(now, pw, user, connect.password.unwrap_or(b""))
                {
                    Checked::Done(ok) => ok,
                    Checked::Wait => return self.hold_connect(now, conn, connect, out),
                }
            }
            _ => false,
        };
        let verdict = match (&username, &sec.passwords) {
            (None, _) if by_certificate => Err(ReasonCode::NOT_AUTHORIZED),
            (Some(_), _) if by_certificate => Ok(()),
            (Some(_), Some(_)) => {
                if password_ok {
                    Ok(())
                } else {
                    Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
                }
            }
            // No way to check a name, or no name: only if anonymous access is on.
            (_, _) if sec.allow_anonymous => Ok(()),
            _ => Err(ReasonCode::NOT_AUTHORIZED),
        };
        let verdict = verdict.and_then(|()| match &will_topic {
            Some(topic)
                if crate::auth::broker_only(topic)
                    || !sec.may(&client_id, username.as_deref(), topic, Access::Write) =>
            {
                Err(ReasonCode::NOT_AUTHORIZED)
            }
            _ => Ok(()),
        });
        if let Err(reason) = verdict {
            // Who and from where, never the password.
            info!(
                target: NOTICE,
                "Client {} from {peer} refused: {} (user {}).",
                LogStr(&client_id),
                reason.name(),
                LogStr(username.as_deref().unwrap_or("<none>"))
            );
            // A wrong password is answered after a delay held by the wheel:
            // guessing costs the attacker time, not the broker.
            let serial = match self.conns.get_mut(&conn) {
                Some(c) => {
                    c.greeting_mut().refusal = Some((version, reason));
                    c.serial
                }
                None => return,
            };
            out.set_timer(
                now + AUTH_FAILURE_DELAY,
                Timer::new(TimerKind::Refuse(conn), serial),
            );
            return;
        }

        // Keep-alive against max_keepalive: v5 is told the lower value (Server
        // Keep Alive, 3.2.2.3.14); 3.1/3.1.1 cannot be, so it is refused, as
        // mosquitto does.
        // A bridge's local side has no socket to watch: max_keepalive is for
        // network clients.
        let max_ka = if listener == crate::auth::BRIDGE_LISTENER {
            u16::MAX
        } else {
            self.config.max_keepalive
        };
        let mut keep_alive = connect.keep_alive;
        let mut server_keep_alive = None;
        if max_ka < u16::MAX && (keep_alive == 0 || keep_alive > max_ka) {
            if version.is_v5() {
                keep_alive = max_ka;
                server_keep_alive = Some(max_ka);
            } else {
                info!(
                    target: NOTICE,
                    "Client {} from {peer} refused: keep-alive {} over max_keepalive {max_ka}.",
                    LogStr(&client_id),
                    connect.keep_alive
                );
                self.refuse(conn, version, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID, out);
                return;
            }
        }

        // Take over a connection holding the same client id [MQTT-3.1.4-2].
        let existing = self
            .by_client_id
            .get(&client_id, |k| super::client_id_of(&self.sessions, k));
        if let Some(skey) = existing {
            if let Some(old) = self.sessions.get(skey).and_then(|s| s.conn()) {
                info!(
                    target: NOTICE,
                    "Client {} already connected, closing old connection.",
                    LogStr(&client_id)
                );
                self.end(now, old, End::TakenOver, out);
            }
        }
        // Clean start discards the old session [MQTT-3.1.2-4]; otherwise resume
        // it, if there is one to resume and it is this user's.
        let mut session_present = false;
        let resumable = existing.is_some_and(|skey| {
            !connect.clean_start && self.resumable(skey, &client_id, username.as_deref(), listener)
        });
        let skey = match existing {
            Some(skey) if resumable => {
                session_present = true;
                skey
            }
            Some(skey) => {
                if let Some(s) = self.sessions.get_mut(skey) {
                    // A will waiting for its delay is cancelled by the return of
                    // its client [MQTT-3.1.3-9].
                    s.set_will(None);
                }
                self.remove_session(now, skey, out);
                self.new_session(&client_id, version)
            }
            None => self.new_session(&client_id, version),
        };
        let serial = self.serial();
        let max_qos = self.max_qos(listener);
        let props = &connect.properties;
        let Some(s) = self.sessions.get_mut(skey) else {
            return;
        };
        s.version = version;
        s.set_conn(Some(conn));
        s.serial = serial;
        // The new connection's will replaces any earlier one [MQTT-3.1.3-9]; a
        // stored will still waiting for its delay is cancelled.
        let had_pending = session_present && s.has_will();
        s.set_will(connect.will.as_ref().map(|w| PendingWill {
            msg: Arc::new({
                let mut m = Message::from_will(w, now);
                if let Some(t) = will_topic.as_deref().filter(|t| *t != w.topic) {
                    m.topic = t.into();
                }
                m
            }),
            delay: w.properties.will_delay_interval.unwrap_or(0),
        }));
        s.expiry = match version {
            // 3.1.2.11.2: absent = 0; 0xFFFFFFFF = never.
            ProtocolVersion::V5 => {
                SessionExpiry::from_secs(props.session_expiry_interval.unwrap_or(0))
            }
            _ if connect.clean_start => SessionExpiry::ENDS_WITH_CONNECTION,
            _ => SessionExpiry::from_duration(self.config.persistent_client_expiration),
        };
        // 0 = no limit of ours: the 65,535 packet ids are the limit then.
        let ours = match self.config.max_inflight_messages {
            0 => u16::MAX,
            n => n,
        };
        // [MQTT-3.3.4-9] never more in flight than the client's Receive Maximum.
        let theirs = props.receive_maximum.unwrap_or(u16::MAX);
        s.send_window = ours.min(theirs);
        s.max_packet_size = props.maximum_packet_size.and_then(NonZeroU32::new);
        if let Some(e) = s.extra.get_mut() {
            e.dropping = false;
            e.publisher = None;
        }
        let s_username = username.clone();
        s.username = username;
        s.set_listener(listener);

        let accept_aliases = if self.config.outgoing_topic_aliases && version.is_v5() {
            props.topic_alias_maximum.unwrap_or(0)
        } else {
            0
        };
        if let Some(c) = self.conns.get_mut(&conn) {
            c.skey = u32::try_from(skey).unwrap_or(super::NO_SESSION);
            c.version = version;
            c.keep_alive = keep_alive;
            // Logged below for the last time: from now on the client id names it.
            c.greeting = None;
            c.aliases.accept_outbound(accept_aliases);
        }
        self.stats.clients_connected += 1;

        // Request/response (4.10): a prefix for the client's response topics.
        let response_information = match (
            props.request_response_information,
            &self.config.response_information,
        ) {
            (Some(1), Some(prefix)) => Some(format!("{prefix}{client_id}")),
            _ => None,
        };
        let mut properties = Properties::default();
        if version.is_v5() {
            properties.response_information = response_information.as_deref();
            properties.assigned_client_identifier = assigned.as_deref();
            properties.server_keep_alive = server_keep_alive;
            if self.config.max_inflight_messages != 0 {
                properties.receive_maximum = Some(self.config.max_inflight_messages);
            }
            if self.config.max_packet_size < PROTOCOL_MAX_PACKET {
                properties.maximum_packet_size = u32::try_from(self.config.max_packet_size).ok();
            }
            if !self.config.retain_available {
                properties.retain_available = Some(0);
            }
            if self.config.max_topic_alias > 0 {
                properties.topic_alias_maximum = Some(self.config.max_topic_alias);
            }
            // [MQTT-3.2.2-9] a server without QoS 1 or 2 says so.
            if max_qos != QoS::ExactlyOnce {
                properties.maximum_qos = Some(max_qos as u8);
            }
        }
        let mut ack = Packet::ConnAck(ConnAck {
            session_present,
            reason: ReasonCode::SUCCESS,
            properties,
        });
        // [MQTT-3.1.2-24] nothing larger than the client's Maximum Packet Size, the
        // CONNACK included: its properties are optional, so they go first (a
        // 5-byte CONNACK fits any maximum the decoder accepts). Found by fuzzing.
        if let Some(max) = props.maximum_packet_size {
            let too_big = encoded_len(&ack, version).map_or(true, |n| n > max as usize);
            if let (true, Packet::ConnAck(a)) = (too_big, &mut ack) {
                a.properties = Properties::default();
            }
        }
        if self.config.connection_messages {
            // mosquitto's line, the user name last when there is one.
            let user = match s_username.as_deref() {
                Some(u) => format!(", u'{}'", LogStr(u)),
                None => String::new(),
            };
            info!(
                target: NOTICE,
                "New client connected from {peer} as {} (p{}, c{}, k{keep_alive}{user}).",
                LogStr(&client_id),
                version.level(),
                u8::from(connect.clean_start)
            );
        }
        // mosquitto's debug lines about the will, between the notice above and
        // the CONNACK below.
        match &connect.will {
            Some(w) => {
                debug!(
                    "Will message specified ({} bytes) (r{}, q{}).",
                    w.payload.len(),
                    u8::from(w.retain),
                    w.qos as u8
                );
                debug!("\t{}", LogStr(w.topic));
            }
            None => debug!("No will message specified."),
        }
        // Session present promises the session's state: after its records.
        out.send_after_commit(conn, version, &ack);
        // One timer per connection: the CONNECT timeout, still pending, fires
        // before the keep-alive deadline when the grace is longer, and is turned
        // into the keep-alive check then (see `handle_timer`).
        if keep_alive > 0 && keep_alive_grace(keep_alive) < self.config.connect_timeout {
            let c_serial = self.conns.get(&conn).map_or(0, |c| c.serial);
            out.set_timer(
                now + keep_alive_grace(keep_alive),
                Timer::new(TimerKind::KeepAlive(conn), c_serial),
            );
        }
        if let (Some(interval), false) = (self.config.retry_interval, version.is_v5()) {
            let c_serial = self.conns.get(&conn).map_or(0, |c| c.serial);
            out.set_timer(now + interval, Timer::new(TimerKind::Retry(conn), c_serial));
        }
        // Durable: its metadata (and identity); no longer durable (a resumed
        // session whose expiry is now 0): its records go.
        self.persist_session(skey, out);
        if had_pending {
            self.persist_will(skey, None, out);
        }
        if session_present {
            self.resend_inflight(now, conn, skey, out);
            // Retained replays cut short by the last connection carry on.
            self.resume_replay(skey);
        }
    }

    /// May a CONNECT as `username` on `listener` resume session `skey`?
    ///
    /// Only a session that outlives its connection: one that ends with it (a
    /// clean session taken over while connected) is not there to resume
    /// [MQTT-3.1.2-6] [MQTT-3.2.2-2]. And only by the user that owns it: a
    /// persistent session belongs to the identity that created it (user name or
    /// certificate name; with `per_listener_settings`, on the same listener's
    /// users). Another user with the same client id starts a fresh session and
    /// the old one is discarded, as with clean start: its subscriptions and
    /// queued messages never reach a different user. (mosquitto hands the
    /// session over and drops the queued messages the new user may not read;
    /// midge does not hand over the subscriptions either.)
    fn resumable(
        &self,
        skey: usize,
        client_id: &str,
        username: Option<&str>,
        listener: usize,
    ) -> bool {
        let Some(s) = self.sessions.get(skey) else {
            return false;
        };
        if s.expiry.ends_with_connection() {
            return false;
        }
        let same_user =
            s.username.as_deref() == username && self.security.same_users(s.listener(), listener);
        if !same_user {
            warn!(
                "Client {} (user {}) did not resume the session of user {}: a new session replaces it.",
                LogStr(client_id),
                LogStr(username.unwrap_or("<none>")),
                LogStr(s.username.as_deref().unwrap_or("<none>"))
            );
        }
        same_user
    }

    /// `max_topic_levels` applies to a will topic as to any topic it will be
    /// published on: a deeper one refuses the CONNECT (v5: CONNACK 0x90, "the Will
    /// Topic Name is not malformed, but is not accepted by this Server", 3.2.2.2);
    /// 3.1/3.1.1 have no return code for it, so the socket is closed without a
    /// CONNACK, as mosquitto does with a will topic it rejects. Returns true when
    /// refused.
    fn will_topic_too_deep(
        &mut self,
        conn: ConnId,
        version: ProtocolVersion,
        topic: &str,
        peer: &str,
        out: &mut impl Output,
    ) -> bool {
        let max = self.config.max_topic_levels;
        if max == 0 || super::topic_levels(topic) <= max {
            return false;
        }
        info!(
            "Client connection from {peer} refused: will topic deeper than max_topic_levels {max}."
        );
        if version.is_v5() {
            self.refuse(conn, version, ReasonCode::TOPIC_NAME_INVALID, out);
        } else {
            self.conns.remove(&conn);
            out.close_with(conn, ReasonCode::TOPIC_NAME_INVALID);
        }
        true
    }

    /// CONNACK with a refusal, then close [MQTT-3.2.2-5].
    pub(super) fn refuse(
        &mut self,
        conn: ConnId,
        version: ProtocolVersion,
        reason: ReasonCode,
        out: &mut impl Output,
    ) {
        out.send(conn, version, &connack(false, reason));
        self.conns.remove(&conn);
        out.close_with(conn, reason);
    }

    fn new_session(&mut self, client_id: &str, version: ProtocolVersion) -> usize {
        let serial = self.serial();
        let skey = self
            .sessions
            .insert(Session::new(client_id, version, serial));
        let sessions = &self.sessions;
        self.by_client_id
            .insert(client_id, skey, |k| super::client_id_of(sessions, k));
        skey
    }

    /// A unique id for a client that sent none, mosquitto-style ("auto-" + hex).
    fn generate_client_id(&mut self, now: Instant) -> String {
        let nanos = self.wall_ms(now).wrapping_mul(1_000_000);
        loop {
            let n = self.serial();
            // Mix time and a counter so ids differ across restarts too.
            let mut x = nanos ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            x ^= x >> 31;
            x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x ^= x >> 29;
            let id = format!(
                "{}{:08X}-{:08X}",
                self.config.auto_id_prefix,
                (x >> 32) as u32,
                (x as u32) ^ (n as u32)
            );
            if !self
                .by_client_id
                .contains(&id, |k| super::client_id_of(&self.sessions, k))
            {
                return id;
            }
        }
    }
}
