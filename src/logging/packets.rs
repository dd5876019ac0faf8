//! mosquitto's per-packet `debug` lines ("Received PUBLISH from c (d0, q1, r0,
//! m1, 't', ... (5 bytes))", "Sending PUBACK to c (m1, rc0)"), for `-v` and
//! `log_type debug`. Formatting only: the server decides whether to write them
//! (one flag read per packet, set once at start, so a broker without debug
//! logging formats nothing). Client ids and topics are peer-controlled and go
//! through [`LogStr`].

use std::fmt;

use crate::protocol::{Packet, PacketType, ProtocolVersion};

use super::LogStr;

/// One packet's line: received from, or sent to, `client`.
#[derive(Debug)]
pub struct PacketLine<'a> {
    /// The broker sends it (else it was received).
    pub sending: bool,
    /// Client id (or the peer's address before one is known).
    pub client: &'a str,
    /// Protocol version of the connection (CONNACK codes differ).
    pub version: ProtocolVersion,
    /// The packet.
    pub packet: &'a Packet<'a>,
}

impl PacketLine<'_> {
    /// mosquitto logs no line for a received CONNECT (its "New client
    /// connected" notice says it all).
    pub fn wanted(&self) -> bool {
        !matches!((self.sending, self.packet), (false, Packet::Connect(_)))
    }
}

/// mosquitto's upper-case packet names.
fn name(t: PacketType) -> &'static str {
    match t {
        PacketType::Connect => "CONNECT",
        PacketType::ConnAck => "CONNACK",
        PacketType::Publish => "PUBLISH",
        PacketType::PubAck => "PUBACK",
        PacketType::PubRec => "PUBREC",
        PacketType::PubRel => "PUBREL",
        PacketType::PubComp => "PUBCOMP",
        PacketType::Subscribe => "SUBSCRIBE",
        PacketType::SubAck => "SUBACK",
        PacketType::Unsubscribe => "UNSUBSCRIBE",
        PacketType::UnsubAck => "UNSUBACK",
        PacketType::PingReq => "PINGREQ",
        PacketType::PingResp => "PINGRESP",
        PacketType::Disconnect => "DISCONNECT",
        PacketType::Auth => "AUTH",
    }
}

impl fmt::Display for PacketLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (verb, to) = if self.sending {
            ("Sending", "to")
        } else {
            ("Received", "from")
        };
        let kind = name(self.packet.packet_type());
        write!(f, "{verb} {kind} {to} {}", LogStr(self.client))?;
        // The details mosquitto 2.0 adds, direction by direction (its received
        // acknowledgements say "Mid:", its sent ones "m").
        match (self.sending, self.packet) {
            (_, Packet::Publish(p)) => write!(
                f,
                " (d{}, q{}, r{}, m{}, '{}', ... ({} bytes))",
                u8::from(p.dup),
                p.qos as u8,
                u8::from(p.retain),
                p.packet_id,
                LogStr(p.topic),
                p.payload.len()
            ),
            (true, Packet::ConnAck(a)) => {
                let code = if self.version.is_v5() {
                    a.reason.0
                } else {
                    a.reason.to_v3_connack()
                };
                write!(f, " ({}, {code})", u8::from(a.session_present))
            }
            (true, Packet::PubAck(r) | Packet::PubRec(r)) => {
                write!(f, " (m{}, rc{})", r.packet_id, r.reason.0)
            }
            (true, Packet::PubRel(r) | Packet::PubComp(r)) => write!(f, " (m{})", r.packet_id),
            (false, Packet::PubAck(r) | Packet::PubComp(r)) => {
                write!(f, " (Mid: {}, RC:{})", r.packet_id, r.reason.0)
            }
            (false, Packet::PubRec(r) | Packet::PubRel(r)) => write!(f, " (Mid: {})", r.packet_id),
            (true, Packet::Disconnect(d)) => write!(f, " (rc{})", d.reason.0),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ConnAck, Disconnect, Properties, PubResp, Publish, QoS, ReasonCode};

    fn line(sending: bool, client: &str, packet: &Packet<'_>) -> String {
        PacketLine {
            sending,
            client,
            version: ProtocolVersion::V311,
            packet,
        }
        .to_string()
    }

    /// The lines mosquitto 2.0.11 -v writes for a QoS 1 and a QoS 2 exchange.
    #[test]
    fn lines_read_as_mosquittos() {
        let publish = Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "a/b",
            packet_id: 1,
            properties: Properties::default(),
            payload: b"hello",
        });
        assert_eq!(
            line(false, "pubber", &publish),
            "Received PUBLISH from pubber (d0, q1, r0, m1, 'a/b', ... (5 bytes))"
        );
        assert_eq!(
            line(true, "subber", &publish),
            "Sending PUBLISH to subber (d0, q1, r0, m1, 'a/b', ... (5 bytes))"
        );
        let ack = PubResp::success(1);
        assert_eq!(
            line(true, "pubber", &Packet::PubAck(ack.clone())),
            "Sending PUBACK to pubber (m1, rc0)"
        );
        assert_eq!(
            line(false, "subber", &Packet::PubAck(ack.clone())),
            "Received PUBACK from subber (Mid: 1, RC:0)"
        );
        assert_eq!(
            line(true, "pubber", &Packet::PubRec(ack.clone())),
            "Sending PUBREC to pubber (m1, rc0)"
        );
        assert_eq!(
            line(false, "pubber", &Packet::PubRel(ack.clone())),
            "Received PUBREL from pubber (Mid: 1)"
        );
        assert_eq!(
            line(true, "pubber", &Packet::PubComp(ack.clone())),
            "Sending PUBCOMP to pubber (m1)"
        );
        assert_eq!(
            line(false, "subber", &Packet::PubRec(ack.clone())),
            "Received PUBREC from subber (Mid: 1)"
        );
        assert_eq!(
            line(true, "subber", &Packet::PubRel(ack.clone())),
            "Sending PUBREL to subber (m1)"
        );
        assert_eq!(
            line(false, "subber", &Packet::PubComp(ack)),
            "Received PUBCOMP from subber (Mid: 1, RC:0)"
        );
        assert_eq!(
            line(false, "u3", &Packet::PingReq),
            "Received PINGREQ from u3"
        );
        assert_eq!(
            line(true, "u3", &Packet::PingResp),
            "Sending PINGRESP to u3"
        );
        let refused = Packet::ConnAck(ConnAck {
            session_present: false,
            reason: ReasonCode::NOT_AUTHORIZED,
            properties: Properties::default(),
        });
        // 3.1.1 return code 5; v5 reason 0x87.
        assert_eq!(line(true, "c", &refused), "Sending CONNACK to c (0, 5)");
        let v5 = PacketLine {
            sending: true,
            client: "c",
            version: ProtocolVersion::V5,
            packet: &refused,
        };
        assert_eq!(v5.to_string(), "Sending CONNACK to c (0, 135)");
        let bye = Packet::Disconnect(Disconnect::with_reason(ReasonCode(0x8E)));
        assert_eq!(line(true, "c", &bye), "Sending DISCONNECT to c (rc142)");
        assert_eq!(line(false, "c", &bye), "Received DISCONNECT from c");
    }

    /// Client ids and topics are the peer's: bounded and escaped.
    #[test]
    fn peer_strings_are_bounded_and_escaped() {
        let topic = "t\n1234567890: forged line".to_string() + &"x".repeat(70_000);
        let publish = Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: true,
            topic: &topic,
            packet_id: 0,
            properties: Properties::default(),
            payload: b"",
        });
        let id = "c\u{1b}[2J".to_string() + &"y".repeat(70_000);
        let s = line(false, &id, &publish);
        assert!(!s.contains('\n') && !s.contains('\u{1b}'), "{s}");
        assert!(s.len() < 400, "{} bytes", s.len());
        assert!(s.contains(&format!("...({} bytes)", id.len())), "{s}");
        assert!(s.contains(&format!("...({} bytes)'", topic.len())), "{s}");
    }
}
