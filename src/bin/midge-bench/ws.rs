//! The client side of MQTT over WebSockets for the load generator: the
//! upgrade request, masked binary frames out, and unframing of what the broker
//! sends. Only what a benchmark client needs: MQTT output waits until the
//! `101` arrives (as browser clients do), one frame per packet.

/// A bench connection's WebSocket state.
pub struct WsClient {
    /// The `101` arrived: the stream is frames.
    pub upgraded: bool,
    /// Bytes read and not yet unframed (the HTTP answer, then frames).
    raw: Vec<u8>,
    /// MQTT output held until the upgrade completes.
    held: Vec<u8>,
    /// xorshift state for masking keys.
    seed: u32,
}

/// What the broker's bytes turned into.
pub enum Unframed {
    /// MQTT bytes were appended to the caller's buffer (maybe none).
    Data,
    /// The upgrade was refused or the broker sent a close frame.
    Closed,
}

impl WsClient {
    /// Starts the upgrade: the request goes into `wbuf`.
    pub fn start(host: &str, seed: u32, wbuf: &mut Vec<u8>) -> WsClient {
        // The key only has to be 16 base64-encoded bytes; the broker's accept
        // value is not checked here (the tests check it).
        wbuf.extend_from_slice(
            format!(
                "GET /mqtt HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: bWlkZ2UtYmVuY2gta2V5MQ==\r\nSec-WebSocket-Version: 13\r\n\
                 Sec-WebSocket-Protocol: mqtt\r\n\r\n"
            )
            .as_bytes(),
        );
        WsClient {
            upgraded: false,
            raw: Vec::new(),
            held: Vec::new(),
            seed: seed | 1,
        }
    }

    /// Wraps one encoded MQTT packet (`packet`) in a masked binary frame, into
    /// `wbuf` once upgraded, held until then.
    pub fn frame(&mut self, packet: &[u8], wbuf: &mut Vec<u8>) {
        let out = if self.upgraded { wbuf } else { &mut self.held };
        out.push(0x82); // FIN, binary
        let len = packet.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len <= usize::from(u16::MAX) {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 17;
        self.seed ^= self.seed << 5;
        let key = self.seed.to_be_bytes();
        out.extend_from_slice(&key);
        out.extend(packet.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    }

    /// Takes bytes read from the broker: completes the upgrade (releasing the
    /// held output into `wbuf`), then appends frame payloads to `rbuf`.
    pub fn input(&mut self, bytes: &[u8], rbuf: &mut Vec<u8>, wbuf: &mut Vec<u8>) -> Unframed {
        self.raw.extend_from_slice(bytes);
        if !self.upgraded {
            let Some(end) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                return Unframed::Data;
            };
            if !self.raw.starts_with(b"HTTP/1.1 101") {
                return Unframed::Closed;
            }
            self.raw.drain(..end + 4);
            self.upgraded = true;
            wbuf.append(&mut self.held);
        }
        let mut pos = 0;
        loop {
            let b = &self.raw[pos..];
            if b.len() < 2 {
                break;
            }
            let opcode = b[0] & 0x0f;
            let masked = b[1] & 0x80 != 0;
            let (len, mut head): (usize, usize) = match b[1] & 0x7f {
                126 if b.len() >= 4 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
                127 if b.len() >= 10 => {
                    let mut l = [0u8; 8];
                    l.copy_from_slice(&b[2..10]);
                    (u64::from_be_bytes(l) as usize, 10)
                }
                126 | 127 => break,
                l => (usize::from(l), 2),
            };
            let key_at = head;
            if masked {
                head += 4;
            }
            if b.len() < head.saturating_add(len) {
                break;
            }
            match opcode {
                0x0 | 0x2 => {
                    let start = rbuf.len();
                    rbuf.extend_from_slice(&b[head..head + len]);
                    if masked {
                        let key = [b[key_at], b[key_at + 1], b[key_at + 2], b[key_at + 3]];
                        for (i, x) in rbuf[start..].iter_mut().enumerate() {
                            *x ^= key[i % 4];
                        }
                    }
                }
                0x8 => return Unframed::Closed,
                _ => {} // pings go unanswered: a bench run is shorter than any timeout
            }
            pos += head + len;
        }
        self.raw.drain(..pos);
        Unframed::Data
    }
}
