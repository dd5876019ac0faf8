//! WebSocket frames (RFC 6455 section 5). Decoding works in place: the client's
//! masked frames are unmasked and their payloads moved to the front of the
//! caller's buffer (the output is never longer than the input, so no second
//! buffer), ready for the MQTT decoder. The decoder keeps only the state of the
//! frame in progress (a partial header, the mask, what remains) and a control
//! frame's payload (at most 125 bytes), so a frame's payload is streamed, never
//! buffered: an MQTT packet may span frames and a frame may carry several
//! packets [MQTT-6.0.0-2].

/// A WebSocket close status (RFC 6455 section 7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: normal closure.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: going away (the server shuts down).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: protocol error.
    pub const PROTOCOL: CloseCode = CloseCode(1002);
    /// 1003: a data type the endpoint does not accept (text frames for MQTT).
    pub const UNSUPPORTED: CloseCode = CloseCode(1003);
    /// 1007: payload not consistent with its type (a close reason not UTF-8).
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: a message that violates the server's policy; the generic refusal
    /// (section 7.4.1).
    pub const POLICY: CloseCode = CloseCode(1008);
    /// 1009: a frame too big to process.
    pub const TOO_BIG: CloseCode = CloseCode(1009);
    /// 1011: the server met a condition it cannot handle.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1013: try again later (a temporary condition; IANA's WebSocket Close
    /// Code Number registry).
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);

    /// May a peer send this code in a close frame? 1004-1006 and 1015 are
    /// reserved for reports, never the wire; below 1000, 1016-2999 and from 5000
    /// on are not assigned (section 7.4.2).
    pub fn valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

/// Why the client's frames are refused; the connection is closed with the
/// carried status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// An unmasked client frame (section 5.1).
    Unmasked,
    /// RSV bits set: no extension was negotiated (section 5.2).
    Reserved,
    /// A reserved opcode (3-7, 0xB-0xF).
    ReservedOpcode(u8),
    /// A control frame longer than 125 bytes or fragmented (section 5.5).
    BadControl,
    /// Continuation without a message, or a new message inside one (section 5.4).
    BadFragmentation,
    /// A 64-bit length with its top bit set (section 5.2).
    BadLength,
    /// A close frame with a one-byte payload or a status not allowed on the wire.
    BadCloseCode,
    /// A close reason that is not UTF-8.
    BadCloseReason,
    /// A text frame: MQTT travels in binary frames only [MQTT-6.0.0-1].
    Text,
    /// A data frame longer than the limit (`max_packet_size`).
    TooBig(u64),
}

impl FrameError {
    /// The status the server closes with.
    pub fn close_code(self) -> CloseCode {
        match self {
            FrameError::Text => CloseCode::UNSUPPORTED,
            FrameError::TooBig(_) => CloseCode::TOO_BIG,
            FrameError::BadCloseReason => CloseCode::INVALID_PAYLOAD,
            _ => CloseCode::PROTOCOL,
        }
    }
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Unmasked => f.write_str("unmasked client frame"),
            FrameError::Reserved => f.write_str("RSV bits set"),
            FrameError::ReservedOpcode(o) => write!(f, "reserved opcode {o:#x}"),
            FrameError::BadControl => f.write_str("control frame fragmented or over 125 bytes"),
            FrameError::BadFragmentation => f.write_str("bad fragmentation"),
            FrameError::BadLength => f.write_str("frame length with the top bit set"),
            FrameError::BadCloseCode => f.write_str("invalid close status"),
            FrameError::BadCloseReason => f.write_str("close reason not UTF-8"),
            FrameError::Text => f.write_str("text frame (MQTT needs binary frames)"),
            FrameError::TooBig(n) => write!(f, "frame of {n} bytes over the limit"),
        }
    }
}

/// A control frame the server must answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Control<'a> {
    /// Answer with a pong carrying the same payload (section 5.5.2).
    Ping(&'a [u8]),
    /// The client closes, with this status if it gave one: answer with a close
    /// frame and end the connection (section 5.5.1). Later input is ignored.
    Close(Option<CloseCode>),
}

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;
/// Longest frame header: 2 + 8 (64-bit length) + 4 (mask).
const MAX_HEADER: usize = 14;
/// Longest control payload (section 5.5).
const MAX_CONTROL: usize = 125;

/// The decoding state of one connection's client-to-server stream.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    head: [u8; MAX_HEADER],
    head_len: u8,
    /// A frame's header is decoded and its payload is arriving.
    in_frame: bool,
    opcode: u8,
    remaining: u64,
    mask: [u8; 4],
    mask_pos: u8,
    /// A fragmented binary message is open (its last frame has not come).
    in_message: bool,
    control: [u8; MAX_CONTROL],
    control_len: u8,
    /// A close frame arrived: nothing after it is read.
    closed: bool,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder {
            head: [0; MAX_HEADER],
            head_len: 0,
            in_frame: false,
            opcode: 0,
            remaining: 0,
            mask: [0; 4],
            mask_pos: 0,
            in_message: false,
            control: [0; MAX_CONTROL],
            control_len: 0,
            closed: false,
        }
    }
}

/// XOR `data` with a frame's masking key (RFC 6455 section 5.3), `pos`
/// bytes into the key. Eight bytes at a time: this runs over every byte a
/// WebSocket client sends, and a byte loop cost more than the rest of a
/// small PUBLISH's handling.
fn unmask(data: &mut [u8], mask: [u8; 4], pos: u8) {
    let k: [u8; 4] = std::array::from_fn(|i| mask[(usize::from(pos) + i) & 3]);
    let key = u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]]);
    let mut words = data.chunks_exact_mut(8);
    for word in &mut words {
        let mut v = [0u8; 8];
        v.copy_from_slice(word);
        word.copy_from_slice(&(u64::from_ne_bytes(v) ^ key).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8 bytes: at key byte 0 again.
    for (i, b) in words.into_remainder().iter_mut().enumerate() {
        *b ^= k[i & 3];
    }
}

/// Header length implied by its first two bytes.
fn header_len(b1: u8) -> usize {
    let ext = match b1 & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + 4
}

impl FrameDecoder {
    /// A decoder at the start of the stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// True once a close frame was decoded.
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// Decode the frames in `buf` (which continues whatever came before): MQTT
    /// data is unmasked and moved to `buf[..n]`, and `n` returned. Control
    /// frames go to `on_control` as they complete. Data frames longer than
    /// `max_frame` are refused before their payload arrives. On an error the
    /// connection must be closed with [`FrameError::close_code`].
    pub fn unframe(
        &mut self,
        buf: &mut [u8],
        max_frame: u64,
        on_control: &mut dyn FnMut(Control<'_>),
    ) -> Result<usize, FrameError> {
        let (mut r, mut w) = (0usize, 0usize);
        while r < buf.len() && !self.closed {
            if !self.in_frame {
                r += self.take_header(&buf[r..])?;
                if self.head_len == 0 && self.in_frame {
                    self.start_frame(max_frame)?;
                    if self.remaining == 0 {
                        self.end_frame(on_control)?;
                    }
                }
                continue;
            }
            let take = usize::try_from(self.remaining)
                .unwrap_or(usize::MAX)
                .min(buf.len() - r);
            if self.opcode >= OP_CLOSE {
                for i in 0..take {
                    let b = buf[r + i] ^ self.mask[(usize::from(self.mask_pos) + i) & 3];
                    // The header checked the length: at most 125 bytes.
                    if let Some(slot) = self.control.get_mut(usize::from(self.control_len)) {
                        *slot = b;
                        self.control_len += 1;
                    }
                }
            } else {
                // Data moves down over the headers already read (w <= r),
                // then is unmasked where it lands.
                if w != r {
                    buf.copy_within(r..r + take, w);
                }
                unmask(&mut buf[w..w + take], self.mask, self.mask_pos);
                w += take;
            }
            r += take;
            self.remaining -= take as u64;
            self.mask_pos = ((usize::from(self.mask_pos) + take) & 3) as u8;
            if self.remaining == 0 {
                self.end_frame(on_control)?;
            }
        }
        Ok(w)
    }

    /// Collect header bytes from `input`; returns how many were taken. Sets
    /// `in_frame` (with `head_len` back to 0) once the header is whole. Checks
    /// what the first two bytes decide at once, so a bad frame is refused
    /// without waiting for more.
    fn take_header(&mut self, input: &[u8]) -> Result<usize, FrameError> {
        let mut taken = 0;
        loop {
            let have = usize::from(self.head_len);
            if have >= 2 {
                if self.head[1] & 0x80 == 0 {
                    return Err(FrameError::Unmasked);
                }
                if have == header_len(self.head[1]) {
                    self.in_frame = true;
                    self.head_len = 0;
                    return Ok(taken);
                }
            }
            let Some(&b) = input.get(taken) else {
                return Ok(taken);
            };
            self.head[have] = b;
            self.head_len += 1;
            taken += 1;
        }
    }

    /// Validate the header just completed and set up its payload.
    fn start_frame(&mut self, max_frame: u64) -> Result<(), FrameError> {
        let h = &self.head;
        let fin = h[0] & 0x80 != 0;
        if h[0] & 0x70 != 0 {
            return Err(FrameError::Reserved);
        }
        let opcode = h[0] & 0x0F;
        let (len, mask_at) = match h[1] & 0x7F {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&h[2..10]);
                let n = u64::from_be_bytes(b);
                if n >> 63 != 0 {
                    return Err(FrameError::BadLength);
                }
                (n, 10)
            }
            n => (u64::from(n), 2),
        };
        match opcode {
            OP_CLOSE | OP_PING | OP_PONG => {
                if !fin || len > MAX_CONTROL as u64 {
                    return Err(FrameError::BadControl);
                }
            }
            OP_TEXT => return Err(FrameError::Text),
            OP_BINARY | OP_CONTINUATION => {
                if (opcode == OP_BINARY) == self.in_message {
                    return Err(FrameError::BadFragmentation);
                }
                if len > max_frame {
                    return Err(FrameError::TooBig(len));
                }
                self.in_message = !fin;
            }
            other => return Err(FrameError::ReservedOpcode(other)),
        }
        self.mask.copy_from_slice(&h[mask_at..mask_at + 4]);
        self.opcode = opcode;
        self.remaining = len;
        self.mask_pos = 0;
        self.control_len = 0;
        Ok(())
    }

    /// A frame's payload is complete: answer control frames.
    fn end_frame(&mut self, on_control: &mut dyn FnMut(Control<'_>)) -> Result<(), FrameError> {
        self.in_frame = false;
        let payload = &self.control[..usize::from(self.control_len)];
        match self.opcode {
            OP_PING => on_control(Control::Ping(payload)),
            OP_CLOSE => {
                let code = match payload {
                    [] => None,
                    [_] => return Err(FrameError::BadCloseCode),
                    [a, b, reason @ ..] => {
                        let code = CloseCode(u16::from_be_bytes([*a, *b]));
                        if !code.valid_on_wire() {
                            return Err(FrameError::BadCloseCode);
                        }
                        if std::str::from_utf8(reason).is_err() {
                            return Err(FrameError::BadCloseReason);
                        }
                        Some(code)
                    }
                };
                self.closed = true;
                on_control(Control::Close(code));
            }
            // Pongs (unsolicited or not) need no answer; data needs nothing here.
            _ => {}
        }
        Ok(())
    }
}

/// The header of an unmasked server frame with `opcode`, final, carrying
/// `len` bytes (the shortest length encoding, section 5.2), into `out`;
/// returns its length.
pub fn server_header(opcode: u8, len: usize, out: &mut [u8; 10]) -> usize {
    out[0] = 0x80 | opcode;
    if len < 126 {
        out[1] = len as u8;
        2
    } else if let Ok(n) = u16::try_from(len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&n.to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// The opcode of binary data frames.
pub const BINARY: u8 = OP_BINARY;

/// Append a pong answering a ping with `payload` (at most 125 bytes).
pub fn write_pong(payload: &[u8], out: &mut Vec<u8>) {
    let mut h = [0u8; 10];
    let n = server_header(OP_PONG, payload.len(), &mut h);
    out.extend_from_slice(&h[..n]);
    out.extend_from_slice(payload);
}

/// Append a close frame with `code` and `reason` (UTF-8, cut at a character
/// boundary to the 123 bytes a control frame leaves it, section 5.5.1).
pub fn write_close(code: CloseCode, reason: &str, out: &mut Vec<u8>) {
    let mut end = reason.len().min(MAX_CONTROL - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason.as_bytes()[..end];
    out.extend_from_slice(&[0x80 | OP_CLOSE, (2 + reason.len()) as u8]);
    out.extend_from_slice(&code.0.to_be_bytes());
    out.extend_from_slice(reason);
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];

    /// A masked client frame, as a browser sends it.
    fn client_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![b0];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&MASK);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        f
    }

    /// Feed `input` in pieces of `step` bytes; the data and the controls seen.
    fn run(input: &[u8], step: usize, max: u64) -> (Vec<u8>, Vec<String>, Result<(), FrameError>) {
        let mut d = FrameDecoder::new();
        let (mut data, mut controls) = (Vec::new(), Vec::new());
        for chunk in input.chunks(step.max(1)) {
            let mut buf = chunk.to_vec();
            match d.unframe(&mut buf, max, &mut |c| controls.push(format!("{c:?}"))) {
                Ok(n) => data.extend_from_slice(&buf[..n]),
                Err(e) => return (data, controls, Err(e)),
            }
        }
        (data, controls, Ok(()))
    }

    /// A close reason longer than a control frame allows is cut at a
    /// character boundary within 123 bytes (section 5.5.1).
    #[test]
    fn close_frames_carry_a_bounded_utf8_reason() {
        let mut out = Vec::new();
        write_close(CloseCode::POLICY, "Not authorized", &mut out);
        assert_eq!(out[..4], [0x88, 16, 0x03, 0xF0]);
        assert_eq!(&out[4..], b"Not authorized");
        let mut out = Vec::new();
        write_close(CloseCode::NORMAL, &"\u{e9}".repeat(70), &mut out);
        assert_eq!(out[1], 2 + 122, "61 two-byte characters fit in 123 bytes");
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }

    /// RFC 6455 section 5.7: a masked "Hello".
    #[test]
    fn unmasks_the_rfc_example() {
        let mut buf = vec![
            0x82, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let n = FrameDecoder::new()
            .unframe(&mut buf, 1 << 20, &mut |_| panic!("no control"))
            .expect("ok");
        assert_eq!(&buf[..n], b"Hello");
    }

    /// The word-at-a-time unmasking equals the byte-by-byte definition
    /// (RFC 6455 section 5.3: j = i MOD 4) at every key offset and length.
    #[test]
    fn unmask_matches_the_byte_definition() {
        let data: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(37)).collect();
        for pos in 0..4u8 {
            for len in 0..data.len() {
                let mut fast = data[..len].to_vec();
                unmask(&mut fast, MASK, pos);
                let slow: Vec<u8> = (0..len)
                    .map(|i| data[i] ^ MASK[(usize::from(pos) + i) % 4])
                    .collect();
                assert_eq!(fast, slow, "pos {pos} len {len}");
            }
        }
    }

    /// [MQTT-6.0.0-2]: packets may span frames, frames may carry several, and
    /// frames may be cut anywhere by TCP; fragments and interleaved pings too.
    #[test]
    fn data_is_the_same_however_it_is_framed_and_split() {
        let mqtt: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        let mut input = client_frame(0x02, &mqtt[..10]); // binary, not final
        input.extend(client_frame(0x89, b"hi")); // ping inside the message
        input.extend(client_frame(0x00, &mqtt[10..200])); // continuation
        input.extend(client_frame(0x80, &mqtt[200..70_000])); // final, 64-bit length
        input.extend(client_frame(0x82, b"")); // empty message
        input.extend(client_frame(0x8A, b"unsolicited pong"));
        for step in [1, 2, 3, 7, 13, 100, 4096, usize::MAX] {
            let (data, controls, r) = run(&input, step, 1 << 20);
            assert_eq!(r, Ok(()), "step {step}");
            assert!(data == mqtt, "step {step}: data differs");
            assert_eq!(controls, vec![r#"Ping([104, 105])"#], "step {step}");
        }
    }

    #[test]
    fn close_is_reported_and_ends_the_stream() {
        let mut input = client_frame(0x82, b"ab");
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice("bye é".as_bytes());
        input.extend(client_frame(0x88, &payload));
        input.extend(client_frame(0x82, b"after"));
        let (data, controls, r) = run(&input, usize::MAX, 100);
        assert_eq!((data.as_slice(), r), (&b"ab"[..], Ok(())));
        assert_eq!(controls, vec!["Close(Some(CloseCode(1000)))"]);
        let (_, controls, _) = run(&client_frame(0x88, b""), 1, 100);
        assert_eq!(controls, vec!["Close(None)"]);
    }

    #[test]
    fn hostile_frames_are_refused_with_their_status() {
        let mut long_len = vec![0x82, 0xFF];
        long_len.extend_from_slice(&(1u64 << 63).to_be_bytes());
        long_len.extend_from_slice(&MASK);
        let cases: Vec<(Vec<u8>, FrameError, u16)> = vec![
            (vec![0x82, 0x05, 1, 2, 3, 4, 5], FrameError::Unmasked, 1002),
            (client_frame(0xC2, b"x"), FrameError::Reserved, 1002),
            (client_frame(0x92, b"x"), FrameError::Reserved, 1002),
            (
                client_frame(0x83, b"x"),
                FrameError::ReservedOpcode(3),
                1002,
            ),
            (
                client_frame(0x8B, b"x"),
                FrameError::ReservedOpcode(0xB),
                1002,
            ),
            (client_frame(0x89, &[0; 126]), FrameError::BadControl, 1002),
            (client_frame(0x09, b"x"), FrameError::BadControl, 1002),
            (client_frame(0x80, b"x"), FrameError::BadFragmentation, 1002),
            (
                [client_frame(0x02, b"x"), client_frame(0x82, b"y")].concat(),
                FrameError::BadFragmentation,
                1002,
            ),
            (long_len, FrameError::BadLength, 1002),
            (client_frame(0x81, b"text"), FrameError::Text, 1003),
            (client_frame(0x82, &[0; 101]), FrameError::TooBig(101), 1009),
            (client_frame(0x88, &[3]), FrameError::BadCloseCode, 1002),
            (
                client_frame(0x88, &1005u16.to_be_bytes()),
                FrameError::BadCloseCode,
                1002,
            ),
            (
                client_frame(0x88, &999u16.to_be_bytes()),
                FrameError::BadCloseCode,
                1002,
            ),
            (
                client_frame(0x88, &5000u16.to_be_bytes()),
                FrameError::BadCloseCode,
                1002,
            ),
            (
                client_frame(0x88, &[0x03, 0xE8, 0xFF]),
                FrameError::BadCloseReason,
                1007,
            ),
        ];
        for (input, want, code) in cases {
            for step in [1, usize::MAX] {
                let (_, _, r) = run(&input, step, 100);
                assert_eq!(r, Err(want), "{input:02x?} step {step}");
                assert_eq!(want.close_code().0, code);
            }
        }
    }

    /// An oversized frame is refused from its header, before its payload.
    #[test]
    fn oversized_frames_are_refused_from_the_header() {
        let frame = client_frame(0x82, &[0; 70_000]);
        let mut head = frame[..14].to_vec();
        let r = FrameDecoder::new().unframe(&mut head, 65_536, &mut |_| {});
        assert_eq!(r, Err(FrameError::TooBig(70_000)));
    }

    #[test]
    fn server_frames_use_the_shortest_length() {
        let mut h = [0u8; 10];
        assert_eq!(server_header(BINARY, 125, &mut h), 2);
        assert_eq!(&h[..2], &[0x82, 125]);
        assert_eq!(server_header(BINARY, 126, &mut h), 4);
        assert_eq!(&h[..4], &[0x82, 126, 0, 126]);
        assert_eq!(server_header(BINARY, 65_536, &mut h), 10);
        assert_eq!(&h[..10], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        let mut out = Vec::new();
        write_pong(b"hi", &mut out);
        write_close(CloseCode::PROTOCOL, "", &mut out);
        assert_eq!(out, vec![0x8A, 2, b'h', b'i', 0x88, 2, 0x03, 0xEA]);
    }
}
