//! Encoding: append a packet to the caller's buffer, for a given protocol version.
//!
//! The body is sized first (through a counting sink) so the remaining length
//! can be written up front and errors are found before a byte is appended; the
//! only allocation is `out` growing. Values are written as given, not validated,
//! except where the spec puts a MUST on the sender that costs nothing to honour.

use super::error::EncodeError;
use super::packet::{
    Auth, ConnAck, Connect, Disconnect, Packet, PacketType, ProtocolVersion, PubResp, Publish, QoS,
    SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe,
};
use super::properties::{Properties, PropertyContext};
use super::property_codec::{properties_len, write_properties};
use super::reason::ReasonCode;
use super::wire::{varint_len, Counter, Sink, VARINT_MAX};

/// Append `packet`, encoded for `version`, to `out`. Returns the number of bytes
/// written. v5-only fields are left out for older versions; on error `out` is
/// left as it was.
///
/// CONNECT is written for its own `version` field (as the decoder reads it by its
/// own level), whatever `version` says. In v5, properties a packet type may not
/// carry (2.2.2.2) are left out, so the output always decodes.
pub fn encode(
    packet: &Packet<'_>,
    version: ProtocolVersion,
    out: &mut Vec<u8>,
) -> Result<usize, EncodeError> {
    let first = first_byte(packet, version)?;
    let body = body_len(packet, version)?;
    let total = 1 + varint_len(body) + body;
    let start = out.len();
    out.reserve(total);
    out.push(first);
    let written = out
        .put_varint(body)
        .and_then(|()| write_body(packet, version, out));
    if let Err(e) = written {
        // Unreachable after a successful sizing pass, but `out` stays intact anyway.
        out.truncate(start);
        return Err(e);
    }
    Ok(out.len() - start)
}

/// The number of bytes `encode` would write, without writing them (used to honour
/// a client's Maximum Packet Size before encoding).
pub fn encoded_len(packet: &Packet<'_>, version: ProtocolVersion) -> Result<usize, EncodeError> {
    first_byte(packet, version)?;
    let body = body_len(packet, version)?;
    Ok(1 + varint_len(body) + body)
}

/// The remaining length, checked against the 268,435,455 maximum (1.5.5).
fn body_len(packet: &Packet<'_>, version: ProtocolVersion) -> Result<usize, EncodeError> {
    let mut c = Counter::default();
    write_body(packet, version, &mut c)?;
    if c.0 > VARINT_MAX as usize {
        return Err(EncodeError::PacketTooLarge(c.0));
    }
    Ok(c.0)
}

/// The fixed header's first byte: type and flags (2.1.2, 2.2.2).
fn first_byte(packet: &Packet<'_>, version: ProtocolVersion) -> Result<u8, EncodeError> {
    let t = packet.packet_type();
    let flags = match packet {
        Packet::Publish(p) => {
            let qos = p.qos as u8;
            // DUP must be 0 for QoS 0 [MQTT-3.3.1-2], whatever the caller left in it.
            let dup = p.dup && p.qos != QoS::AtMostOnce;
            (u8::from(dup) << 3) | (qos << 1) | u8::from(p.retain)
        }
        // [MQTT-3.6.1-1] [MQTT-3.8.1-1] [MQTT-3.10.1-1]
        Packet::PubRel(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) => 0b0010,
        Packet::Auth(_) if !version.is_v5() => return Err(EncodeError::NotInVersion(t)),
        _ => 0,
    };
    Ok(((t as u8) << 4) | flags)
}

/// Write everything after the fixed header.
fn write_body<S: Sink>(
    packet: &Packet<'_>,
    version: ProtocolVersion,
    s: &mut S,
) -> Result<(), EncodeError> {
    let v5 = version.is_v5();
    match packet {
        Packet::Connect(c) => connect(c, s),
        Packet::ConnAck(c) => connack(c, version, s),
        Packet::Publish(p) => publish(p, v5, s),
        Packet::PubAck(r) => pub_resp(r, PacketType::PubAck, v5, s),
        Packet::PubRec(r) => pub_resp(r, PacketType::PubRec, v5, s),
        Packet::PubRel(r) => pub_resp(r, PacketType::PubRel, v5, s),
        Packet::PubComp(r) => pub_resp(r, PacketType::PubComp, v5, s),
        Packet::Subscribe(p) => subscribe(p, v5, s),
        Packet::SubAck(p) => suback(p, v5, s),
        Packet::Unsubscribe(p) => unsubscribe(p, v5, s),
        Packet::UnsubAck(p) => unsuback(p, v5, s),
        Packet::PingReq | Packet::PingResp => Ok(()),
        Packet::Disconnect(d) => disconnect(d, v5, s),
        Packet::Auth(a) => auth(a, s),
    }
}

/// Properties of packet type `t`, in v5 only.
fn props<S: Sink>(
    p: &Properties<'_>,
    t: PacketType,
    v5: bool,
    s: &mut S,
) -> Result<(), EncodeError> {
    if v5 {
        write_properties(p, PropertyContext::Packet(t), s)?;
    }
    Ok(())
}

/// CONNECT (3.1).
fn connect<S: Sink>(c: &Connect<'_>, s: &mut S) -> Result<(), EncodeError> {
    let v5 = c.version.is_v5();
    s.put_str(c.version.protocol_name())?;
    s.put_u8(c.version.level());
    let mut flags = u8::from(c.clean_start) << 1;
    if let Some(w) = &c.will {
        flags |= 0x04 | ((w.qos as u8) << 3) | (u8::from(w.retain) << 5);
    }
    if c.password.is_some() {
        flags |= 0x40;
    }
    if c.username.is_some() {
        flags |= 0x80;
    }
    s.put_u8(flags);
    s.put_u16(c.keep_alive);
    props(&c.properties, PacketType::Connect, v5, s)?;
    s.put_str(c.client_id)?;
    if let Some(w) = &c.will {
        if v5 {
            write_properties(&w.properties, PropertyContext::Will, s)?;
        }
        s.put_str(w.topic)?;
        s.put_binary(w.payload)?;
    }
    if let Some(u) = c.username {
        s.put_str(u)?;
    }
    if let Some(p) = c.password {
        s.put_binary(p)?;
    }
    Ok(())
}

/// CONNACK (3.2).
fn connack<S: Sink>(
    c: &ConnAck<'_>,
    version: ProtocolVersion,
    s: &mut S,
) -> Result<(), EncodeError> {
    // Session Present is 0 with a failure code [MQTT-3.2.2-4] (3.1.1) [MQTT-3.2.2-6]
    // (5.0), and 3.1 has no such flag (the byte is reserved there).
    let session_present =
        c.session_present && !c.reason.is_error() && version != ProtocolVersion::V31;
    s.put_u8(u8::from(session_present));
    if version.is_v5() {
        s.put_u8(c.reason.0);
        write_properties(
            &c.properties,
            PropertyContext::Packet(PacketType::ConnAck),
            s,
        )?;
    } else {
        s.put_u8(c.reason.to_v3_connack());
    }
    Ok(())
}

/// PUBLISH (3.3).
fn publish<S: Sink>(p: &Publish<'_>, v5: bool, s: &mut S) -> Result<(), EncodeError> {
    s.put_str(p.topic)?;
    if p.qos != QoS::AtMostOnce {
        s.put_u16(p.packet_id);
    }
    props(&p.properties, PacketType::Publish, v5, s)?;
    s.put_slice(p.payload);
    Ok(())
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP (3.4-3.7), in the shortest legal form for v5:
/// no reason and no properties for a plain Success, no property length when
/// there are no properties [MQTT-3.4.2-1].
fn pub_resp<S: Sink>(
    r: &PubResp<'_>,
    t: PacketType,
    v5: bool,
    s: &mut S,
) -> Result<(), EncodeError> {
    s.put_u16(r.packet_id);
    if v5 {
        reason_and_properties(r.reason, &r.properties, t, false, s)?;
    }
    Ok(())
}

/// A trailing reason code and properties that may be left out: nothing for
/// Success/Normal with no properties, the code alone when there are no properties
/// (unless `always_props_with_code`), else both.
fn reason_and_properties<S: Sink>(
    reason: ReasonCode,
    p: &Properties<'_>,
    t: PacketType,
    always_props_with_code: bool,
    s: &mut S,
) -> Result<(), EncodeError> {
    let ctx = PropertyContext::Packet(t);
    let has_props = properties_len(p, ctx)? > 0;
    if reason.0 == 0 && !has_props {
        return Ok(());
    }
    s.put_u8(reason.0);
    if has_props || always_props_with_code {
        write_properties(p, ctx, s)?;
    }
    Ok(())
}

/// The subscription options byte (3.8.3.1); before v5 only the QoS bits exist.
fn options_byte(o: &SubscriptionOptions, v5: bool) -> u8 {
    let qos = o.qos as u8;
    if !v5 {
        return qos;
    }
    qos | (u8::from(o.no_local) << 2)
        | (u8::from(o.retain_as_published) << 3)
        | ((o.retain_handling as u8) << 4)
}

/// SUBSCRIBE (3.8).
fn subscribe<S: Sink>(p: &Subscribe<'_>, v5: bool, s: &mut S) -> Result<(), EncodeError> {
    s.put_u16(p.packet_id);
    props(&p.properties, PacketType::Subscribe, v5, s)?;
    for (filter, options) in &p.filters {
        s.put_str(filter)?;
        s.put_u8(options_byte(options, v5));
    }
    Ok(())
}

/// SUBACK (3.9). Before v5 any failure is 0x80 [MQTT-3.9.3-2].
fn suback<S: Sink>(p: &SubAck<'_>, v5: bool, s: &mut S) -> Result<(), EncodeError> {
    s.put_u16(p.packet_id);
    props(&p.properties, PacketType::SubAck, v5, s)?;
    for r in &p.reasons {
        let code = match r.0 {
            c if v5 => c,
            c @ 0x00..=0x02 => c,
            _ => 0x80,
        };
        s.put_u8(code);
    }
    Ok(())
}

/// UNSUBSCRIBE (3.10).
fn unsubscribe<S: Sink>(p: &Unsubscribe<'_>, v5: bool, s: &mut S) -> Result<(), EncodeError> {
    s.put_u16(p.packet_id);
    props(&p.properties, PacketType::Unsubscribe, v5, s)?;
    for filter in &p.filters {
        s.put_str(filter)?;
    }
    Ok(())
}

/// UNSUBACK (3.11): no properties or payload before v5.
fn unsuback<S: Sink>(p: &UnsubAck<'_>, v5: bool, s: &mut S) -> Result<(), EncodeError> {
    s.put_u16(p.packet_id);
    if v5 {
        write_properties(
            &p.properties,
            PropertyContext::Packet(PacketType::UnsubAck),
            s,
        )?;
        for r in &p.reasons {
            s.put_u8(r.0);
        }
    }
    Ok(())
}

/// DISCONNECT (3.14): empty before v5; in v5 Normal with no properties is the
/// empty packet and a code alone needs no property length (3.14.2.2.1).
fn disconnect<S: Sink>(d: &Disconnect<'_>, v5: bool, s: &mut S) -> Result<(), EncodeError> {
    if v5 {
        reason_and_properties(d.reason, &d.properties, PacketType::Disconnect, false, s)?;
    }
    Ok(())
}

/// AUTH (3.15): empty for Success without properties; otherwise the code and the
/// property length, which 3.15.2 does not allow to be left out on its own.
fn auth<S: Sink>(a: &Auth<'_>, s: &mut S) -> Result<(), EncodeError> {
    reason_and_properties(a.reason, &a.properties, PacketType::Auth, true, s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::packet::{ProtocolVersion::*, Will};

    fn enc(p: &Packet<'_>, v: ProtocolVersion) -> Vec<u8> {
        let mut out = Vec::new();
        let n = encode(p, v, &mut out).unwrap();
        assert_eq!(n, out.len());
        assert_eq!(encoded_len(p, v), Ok(n));
        out
    }

    #[test]
    fn connect_311_matches_hand_written_bytes() {
        let c = Packet::Connect(Box::new(Connect {
            version: V311,
            clean_start: true,
            keep_alive: 60,
            properties: Properties::default(),
            client_id: "abc",
            will: None,
            username: Some("user"),
            password: Some(b"pass"),
        }));
        let expected = [
            0x10, 0x1B, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0xC2, 0x00, 0x3C, 0x00, 0x03,
            b'a', b'b', b'c', 0x00, 0x04, b'u', b's', b'e', b'r', 0x00, 0x04, b'p', b'a', b's',
            b's',
        ];
        // CONNECT follows its own version, not the argument.
        assert_eq!(enc(&c, V5), expected);
    }

    #[test]
    fn connect_31_uses_mqisdp() {
        let c = Packet::Connect(Box::new(Connect {
            version: V31,
            clean_start: false,
            keep_alive: 10,
            properties: Properties::default(),
            client_id: "c",
            will: Some(Will {
                topic: "t",
                payload: b"bye",
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: Properties::default(),
            }),
            username: None,
            password: None,
        }));
        let expected = [
            0x10, 0x17, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x2C, 0x00, 0x0A,
            0x00, 0x01, b'c', 0x00, 0x01, b't', 0x00, 0x03, b'b', b'y', b'e',
        ];
        assert_eq!(enc(&c, V31), expected);
    }

    #[test]
    fn connack_v5_matches_hand_written_bytes() {
        let c = Packet::ConnAck(ConnAck {
            session_present: true,
            reason: ReasonCode::SUCCESS,
            properties: Properties {
                receive_maximum: Some(10),
                topic_alias_maximum: Some(5),
                maximum_qos: Some(1),
                ..Properties::default()
            },
        });
        // Properties are written in identifier order: 0x21, 0x22, 0x24.
        let expected = [
            0x20, 0x0B, 0x01, 0x00, 0x08, 0x21, 0x00, 0x0A, 0x22, 0x00, 0x05, 0x24, 0x01,
        ];
        assert_eq!(enc(&c, V5), expected);
    }

    #[test]
    fn connack_v3_mapping() {
        let c = |reason, session_present| {
            Packet::ConnAck(ConnAck {
                session_present,
                reason,
                properties: Properties {
                    reason_string: Some("ignored before v5"),
                    ..Properties::default()
                },
            })
        };
        assert_eq!(
            enc(&c(ReasonCode::SUCCESS, true), V311),
            [0x20, 0x02, 0x01, 0x00]
        );
        // 3.1 has no Session Present flag.
        assert_eq!(
            enc(&c(ReasonCode::SUCCESS, true), V31),
            [0x20, 0x02, 0x00, 0x00]
        );
        // A refusal never claims a session [MQTT-3.2.2-4].
        assert_eq!(
            enc(&c(ReasonCode::BANNED, true), V311),
            [0x20, 0x02, 0x00, 0x05]
        );
        assert_eq!(
            enc(&c(ReasonCode::SERVER_BUSY, false), V311),
            [0x20, 0x02, 0x00, 0x03]
        );
        assert_eq!(
            enc(&c(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION, false), V31),
            [0x20, 0x02, 0x00, 0x01]
        );
    }

    #[test]
    fn shortest_ack_forms() {
        let ok = Packet::PubAck(PubResp::success(5));
        assert_eq!(enc(&ok, V5), [0x40, 0x02, 0x00, 0x05]);
        let rec = Packet::PubRec(PubResp {
            reason: ReasonCode::NO_MATCHING_SUBSCRIBERS,
            ..PubResp::success(5)
        });
        assert_eq!(enc(&rec, V5), [0x50, 0x03, 0x00, 0x05, 0x10]);
        // Before v5 the reason is not on the wire.
        assert_eq!(enc(&rec, V311), [0x50, 0x02, 0x00, 0x05]);
        assert_eq!(
            enc(&Packet::PubRel(PubResp::success(5)), V311),
            [0x62, 0x02, 0x00, 0x05]
        );
        let normal = Packet::Disconnect(Disconnect::with_reason(ReasonCode::NORMAL_DISCONNECTION));
        assert_eq!(enc(&normal, V5), [0xE0, 0x00]);
        let taken = Packet::Disconnect(Disconnect::with_reason(ReasonCode::SESSION_TAKEN_OVER));
        assert_eq!(enc(&taken, V5), [0xE0, 0x01, 0x8E]);
        assert_eq!(enc(&taken, V311), [0xE0, 0x00]);
        let auth_ok = Packet::Auth(Auth {
            reason: ReasonCode::SUCCESS,
            properties: Properties::default(),
        });
        assert_eq!(enc(&auth_ok, V5), [0xF0, 0x00]);
        let auth_cont = Packet::Auth(Auth {
            reason: ReasonCode::CONTINUE_AUTHENTICATION,
            properties: Properties::default(),
        });
        assert_eq!(enc(&auth_cont, V5), [0xF0, 0x02, 0x18, 0x00]);
        assert_eq!(enc(&Packet::PingReq, V31), [0xC0, 0x00]);
        assert_eq!(enc(&Packet::PingResp, V5), [0xD0, 0x00]);
    }

    #[test]
    fn v3_suback_and_unsuback() {
        let s = Packet::SubAck(SubAck {
            packet_id: 1,
            properties: Properties::default(),
            reasons: vec![
                ReasonCode::GRANTED_QOS_1,
                ReasonCode::NOT_AUTHORIZED,
                ReasonCode::GRANTED_QOS_2,
                ReasonCode::QUOTA_EXCEEDED,
            ],
        });
        assert_eq!(
            enc(&s, V311),
            [0x90, 0x06, 0x00, 0x01, 0x01, 0x80, 0x02, 0x80]
        );
        assert_eq!(
            enc(&s, V5),
            [0x90, 0x07, 0x00, 0x01, 0x00, 0x01, 0x87, 0x02, 0x97]
        );
        let u = Packet::UnsubAck(UnsubAck {
            packet_id: 1,
            properties: Properties::default(),
            reasons: vec![ReasonCode::SUCCESS],
        });
        assert_eq!(enc(&u, V311), [0xB0, 0x02, 0x00, 0x01]);
        assert_eq!(enc(&u, V5), [0xB0, 0x04, 0x00, 0x01, 0x00, 0x00]);
    }

    #[test]
    fn publish_flags() {
        let p = |qos, dup, retain| {
            Packet::Publish(Publish {
                dup,
                qos,
                retain,
                topic: "a",
                packet_id: if qos == QoS::AtMostOnce { 0 } else { 7 },
                properties: Properties::default(),
                payload: b"x",
            })
        };
        assert_eq!(
            enc(&p(QoS::AtMostOnce, false, false), V311),
            [0x30, 0x04, 0x00, 0x01, b'a', b'x']
        );
        // DUP is dropped for QoS 0 [MQTT-3.3.1-2].
        assert_eq!(enc(&p(QoS::AtMostOnce, true, true), V311)[0], 0x31);
        assert_eq!(
            enc(&p(QoS::ExactlyOnce, true, true), V5),
            [0x3D, 0x07, 0x00, 0x01, b'a', 0x00, 0x07, 0x00, b'x']
        );
    }

    #[test]
    fn auth_not_in_v3() {
        let a = Packet::Auth(Auth {
            reason: ReasonCode::SUCCESS,
            properties: Properties::default(),
        });
        let mut out = vec![1, 2, 3];
        assert_eq!(
            encode(&a, V311, &mut out),
            Err(EncodeError::NotInVersion(PacketType::Auth))
        );
        assert_eq!(
            encoded_len(&a, V31),
            Err(EncodeError::NotInVersion(PacketType::Auth))
        );
        assert_eq!(out, [1, 2, 3]);
    }

    #[test]
    fn field_too_long_leaves_out_unchanged() {
        let long = "x".repeat(65_536);
        let p = Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: &long,
            packet_id: 0,
            properties: Properties::default(),
            payload: b"",
        });
        let mut out = vec![9];
        assert_eq!(
            encode(&p, V5, &mut out),
            Err(EncodeError::FieldTooLong(65_536))
        );
        assert_eq!(out, [9]);
        // A too-long user property value, deep in the property block.
        let p = Packet::PubAck(PubResp {
            properties: Properties {
                user_properties: vec![("k", &long)],
                ..Properties::default()
            },
            ..PubResp::success(1)
        });
        assert_eq!(
            encode(&p, V5, &mut out),
            Err(EncodeError::FieldTooLong(65_536))
        );
        assert_eq!(encoded_len(&p, V5), Err(EncodeError::FieldTooLong(65_536)));
        assert_eq!(out, [9]);
        // Before v5 the properties are not written, so there is nothing too long.
        assert_eq!(encoded_len(&p, V311), Ok(4));
    }

    #[test]
    fn packet_too_large() {
        let payload = vec![0u8; VARINT_MAX as usize - 2];
        let mut p = Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "",
            packet_id: 0,
            properties: Properties::default(),
            payload: &payload,
        };
        // Exactly the largest remaining length: 2 (topic length) + payload.
        assert_eq!(
            encoded_len(&Packet::Publish(p.clone()), V311),
            Ok(1 + 4 + VARINT_MAX as usize)
        );
        p.topic = "a";
        let mut out = Vec::new();
        assert_eq!(
            encode(&Packet::Publish(p), V311, &mut out),
            Err(EncodeError::PacketTooLarge(VARINT_MAX as usize + 1))
        );
        assert!(out.is_empty());
    }
}
