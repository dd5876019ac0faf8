//! Primitive field readers and writers shared by decode and encode: variable byte
//! integers, two-byte integers, length-prefixed strings and binary data (1.5).
//!
//! Reading goes through [`Reader`], a bounds-checked cursor that never slices
//! unchecked and never panics; writing goes through [`Sink`], so the same code can
//! count bytes (to size a packet) or append them (to emit it).

use super::error::{DecodeError, EncodeError};
use super::packet::PacketType;

/// The largest value a variable byte integer can hold (1.5.5): four bytes of seven bits.
pub(crate) const VARINT_MAX: u32 = 268_435_455;

/// Parse the remaining length at the start of `buf` (the bytes after the type byte).
///
/// `Ok(None)`: more bytes are needed. `Ok(Some((value, bytes_used)))` otherwise. A
/// fourth byte with its continuation bit set is an error at once, without waiting
/// for a fifth [MQTT-1.5.5-1]. Non-minimal encodings (e.g. `0x80 0x00`) are accepted.
pub(crate) fn parse_remaining_length(buf: &[u8]) -> Result<Option<(usize, usize)>, DecodeError> {
    let mut value: usize = 0;
    for i in 0..4 {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        value |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    Err(DecodeError::RemainingLengthTooLong)
}

/// A bounds-checked read cursor over one packet body. Every read that would run
/// past the end fails with `Truncated` for the packet type the cursor was made for.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    ptype: PacketType,
    /// Most repeated properties one property list may hold (see
    /// [`super::DecodeLimits::max_user_properties`]).
    max_repeats: usize,
}

impl<'a> Reader<'a> {
    /// A cursor at the start of `buf`, reporting errors against `ptype`.
    pub(crate) fn new(buf: &'a [u8], ptype: PacketType) -> Self {
        Reader {
            buf,
            pos: 0,
            ptype,
            max_repeats: usize::MAX,
        }
    }

    /// The same cursor, allowing at most `n` repeated properties per property list.
    pub(crate) fn with_max_repeats(mut self, n: usize) -> Self {
        self.max_repeats = n;
        self
    }

    /// Most repeated properties a property list read through this cursor may hold.
    pub(crate) fn max_repeats(&self) -> usize {
        self.max_repeats
    }

    /// The packet type errors are reported against.
    pub(crate) fn packet_type(&self) -> PacketType {
        self.ptype
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// True when every byte has been read.
    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    fn truncated(&self) -> DecodeError {
        DecodeError::Truncated(self.ptype)
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or_else(|| self.truncated())?;
        let bytes = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| self.truncated())?;
        self.pos = end;
        Ok(bytes)
    }

    /// Everything not read yet (e.g. a PUBLISH payload).
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let bytes = self.buf.get(self.pos..).unwrap_or(&[]);
        self.pos = self.buf.len();
        bytes
    }

    /// A cursor over the next `n` bytes, which this cursor skips (a property block).
    pub(crate) fn sub(&mut self, n: usize) -> Result<Reader<'a>, DecodeError> {
        let bytes = self.take(n)?;
        Ok(Reader::new(bytes, self.ptype).with_max_repeats(self.max_repeats))
    }

    /// One byte.
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = self
            .buf
            .get(self.pos)
            .copied()
            .ok_or_else(|| self.truncated())?;
        self.pos += 1;
        Ok(b)
    }

    /// A big-endian two-byte integer (1.5.2).
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        match *b {
            [hi, lo] => Ok(u16::from_be_bytes([hi, lo])),
            _ => Err(self.truncated()),
        }
    }

    /// A big-endian four-byte integer (1.5.3).
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        match *b {
            [a, b1, c, d] => Ok(u32::from_be_bytes([a, b1, c, d])),
            _ => Err(self.truncated()),
        }
    }

    /// A variable byte integer of at most four bytes (1.5.5). Running out of bytes
    /// is `Truncated`; a fourth byte with the continuation bit is
    /// `RemainingLengthTooLong` (callers map it where a better name exists).
    pub(crate) fn varint(&mut self) -> Result<u32, DecodeError> {
        let mut value: u32 = 0;
        for i in 0..4 {
            let b = self.u8()?;
            value |= u32::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::RemainingLengthTooLong)
    }

    /// Binary data: a two-byte length and that many bytes (1.5.6).
    pub(crate) fn binary(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// A UTF-8 encoded string (1.5.4): well-formed UTF-8 (which excludes the
    /// surrogates U+D800..U+DFFF) [MQTT-1.5.4-1] and no U+0000 [MQTT-1.5.4-2].
    pub(crate) fn string(&mut self) -> Result<&'a str, DecodeError> {
        let bytes = self.binary()?;
        let s = std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)?;
        if bytes.contains(&0) {
            return Err(DecodeError::InvalidUtf8);
        }
        Ok(s)
    }

    /// A PUBLISH topic name: a string as [`Reader::string`] reads it, and no
    /// `+` or `#` [MQTT-3.3.2-2], checked in the same pass as U+0000 (a topic
    /// is read for every message). Empty is left to the caller (v5 aliases).
    pub(crate) fn topic_name(&mut self) -> Result<&'a str, DecodeError> {
        let bytes = self.binary()?;
        let (mut nul, mut wildcard) = (false, false);
        for &b in bytes {
            nul |= b == 0;
            wildcard |= b == b'+' || b == b'#';
        }
        // The same order of errors as a string read, then checked.
        let s = std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)?;
        if nul {
            return Err(DecodeError::InvalidUtf8);
        }
        if wildcard {
            return Err(DecodeError::InvalidTopicName);
        }
        Ok(s)
    }

    /// Fail with `TrailingBytes` unless every byte has been read.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.ptype))
        }
    }
}

/// Where encoded bytes go: a byte counter (to size a packet before writing it) or
/// the output buffer. Writing through one trait keeps sizing and writing in step.
pub(crate) trait Sink {
    /// Append one byte.
    fn put_u8(&mut self, b: u8);
    /// Append a run of bytes.
    fn put_slice(&mut self, s: &[u8]);

    /// A big-endian two-byte integer.
    fn put_u16(&mut self, v: u16) {
        self.put_slice(&v.to_be_bytes());
    }

    /// A big-endian four-byte integer.
    fn put_u32(&mut self, v: u32) {
        self.put_slice(&v.to_be_bytes());
    }

    /// A variable byte integer; values above [`VARINT_MAX`] cannot be represented.
    fn put_varint(&mut self, v: usize) -> Result<(), EncodeError> {
        if v > VARINT_MAX as usize {
            return Err(EncodeError::PacketTooLarge(v));
        }
        let mut v = v;
        loop {
            // Truncation is the point: the low seven bits, then shift.
            let mut b = (v & 0x7F) as u8;
            v >>= 7;
            if v > 0 {
                b |= 0x80;
            }
            self.put_u8(b);
            if v == 0 {
                return Ok(());
            }
        }
    }

    /// Binary data with its two-byte length [MQTT-1.5.6].
    fn put_binary(&mut self, data: &[u8]) -> Result<(), EncodeError> {
        let len = u16::try_from(data.len()).map_err(|_| EncodeError::FieldTooLong(data.len()))?;
        self.put_u16(len);
        self.put_slice(data);
        Ok(())
    }

    /// A UTF-8 string with its two-byte length (1.5.4).
    fn put_str(&mut self, s: &str) -> Result<(), EncodeError> {
        self.put_binary(s.as_bytes())
    }
}

/// A [`Sink`] that only counts.
#[derive(Debug, Default)]
pub(crate) struct Counter(pub(crate) usize);

impl Sink for Counter {
    fn put_u8(&mut self, _b: u8) {
        self.0 = self.0.saturating_add(1);
    }

    fn put_slice(&mut self, s: &[u8]) {
        self.0 = self.0.saturating_add(s.len());
    }
}

impl Sink for Vec<u8> {
    fn put_u8(&mut self, b: u8) {
        self.push(b);
    }

    fn put_slice(&mut self, s: &[u8]) {
        self.extend_from_slice(s);
    }
}

/// The number of bytes the variable byte integer `v` takes (1 to 4 for legal values).
pub(crate) fn varint_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: PacketType = PacketType::Publish;

    #[test]
    fn remaining_length_boundaries() {
        // Table 1.5.5 / 2.2.3: the edges of each byte count.
        let cases: &[(&[u8], usize)] = &[
            (&[0x00], 0),
            (&[0x7F], 127),
            (&[0x80, 0x01], 128),
            (&[0xFF, 0x7F], 16_383),
            (&[0x80, 0x80, 0x01], 16_384),
            (&[0xFF, 0xFF, 0x7F], 2_097_151),
            (&[0x80, 0x80, 0x80, 0x01], 2_097_152),
            (&[0xFF, 0xFF, 0xFF, 0x7F], 268_435_455),
        ];
        for (bytes, value) in cases {
            assert_eq!(
                parse_remaining_length(bytes),
                Ok(Some((*value, bytes.len())))
            );
            let mut out = Vec::new();
            out.put_varint(*value).unwrap();
            assert_eq!(&out[..], *bytes);
            assert_eq!(varint_len(*value), bytes.len());
            assert_eq!(Reader::new(bytes, T).varint(), Ok(*value as u32));
        }
    }

    #[test]
    fn remaining_length_incomplete_and_too_long() {
        assert_eq!(parse_remaining_length(&[]), Ok(None));
        assert_eq!(parse_remaining_length(&[0x80, 0x80, 0x80]), Ok(None));
        // The fourth byte's continuation bit is enough to know [MQTT-1.5.5-1].
        assert_eq!(
            parse_remaining_length(&[0x80, 0x80, 0x80, 0x80]),
            Err(DecodeError::RemainingLengthTooLong)
        );
        assert_eq!(
            Reader::new(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01], T).varint(),
            Err(DecodeError::RemainingLengthTooLong)
        );
        assert_eq!(
            Reader::new(&[0xFF], T).varint(),
            Err(DecodeError::Truncated(T))
        );
        let mut out = Vec::new();
        assert!(out.put_varint(268_435_456).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn reader_bounds() {
        let mut r = Reader::new(&[0x00, 0x03, b'a', b'b'], T);
        assert_eq!(r.clone().string(), Err(DecodeError::Truncated(T)));
        assert_eq!(r.u16(), Ok(3));
        assert_eq!(r.u32(), Err(DecodeError::Truncated(T)));
        assert_eq!(r.take(usize::MAX), Err(DecodeError::Truncated(T)));
        assert_eq!(r.remaining(), 2);
        assert_eq!(r.finish(), Err(DecodeError::TrailingBytes(T)));
        assert_eq!(r.rest(), b"ab");
        assert_eq!(r.rest(), b"");
        assert_eq!(r.u8(), Err(DecodeError::Truncated(T)));
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn strings_refuse_bad_utf8_and_nul() {
        // A surrogate (U+D800) encoded as UTF-8 is ill-formed [MQTT-1.5.4-1].
        let surrogate = [0x00, 0x03, 0xED, 0xA0, 0x80];
        assert_eq!(
            Reader::new(&surrogate, T).string(),
            Err(DecodeError::InvalidUtf8)
        );
        let nul = [0x00, 0x03, b'a', 0x00, b'b'];
        assert_eq!(Reader::new(&nul, T).string(), Err(DecodeError::InvalidUtf8));
        // U+FEFF is allowed and must not be stripped [MQTT-1.5.4-3].
        let bom = [0x00, 0x03, 0xEF, 0xBB, 0xBF];
        assert_eq!(Reader::new(&bom, T).string(), Ok("\u{FEFF}"));
    }

    #[test]
    fn field_too_long() {
        let big = vec![b'x'; 65_536];
        let mut out = Vec::new();
        assert_eq!(out.put_binary(&big), Err(EncodeError::FieldTooLong(65_536)));
        let mut c = Counter::default();
        c.put_binary(&big[..65_535]).unwrap();
        assert_eq!(c.0, 65_537);
    }
}
