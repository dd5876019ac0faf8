//! Standard base64 (RFC 4648 section 4, padded), as mosquitto_passwd writes
//! salts and hashes and as WebSocket keys are sent. One implementation for every
//! build, so the TLS and no-TLS builds accept exactly the same files.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// `data` in padded standard base64.
pub fn encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Why text is not base64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidBase64;

fn value(c: u8) -> Option<u32> {
    Some(u32::from(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    }))
}

/// Decode padded standard base64: a length that is a multiple of four, at
/// most two `=` and only at the end, nothing outside the alphabet.
pub fn decode(text: &str) -> Result<Vec<u8>, InvalidBase64> {
    let t = text.as_bytes();
    if t.len() % 4 != 0 {
        return Err(InvalidBase64);
    }
    let mut out = Vec::with_capacity(t.len() / 4 * 3);
    let quads = t.len() / 4;
    for (q, quad) in t.chunks_exact(4).enumerate() {
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && q + 1 != quads) {
            return Err(InvalidBase64);
        }
        let mut n = 0u32;
        for &c in &quad[..4 - pad] {
            n = n << 6 | value(c).ok_or(InvalidBase64)?;
        }
        n <<= 6 * pad as u32;
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 4648 section 10 test vectors.
    #[test]
    fn rfc4648_vectors() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode(plain.as_bytes()), coded);
            assert_eq!(decode(coded).as_deref(), Ok(plain.as_bytes()));
        }
    }

    #[test]
    fn refuses_what_is_not_padded_base64() {
        for bad in ["Zg", "Zg=", "Z===", "Zg==Zm8=", "Zm9v!A==", "Zm 9", "=Zm9"] {
            assert_eq!(decode(bad), Err(InvalidBase64), "{bad}");
        }
    }

    #[test]
    fn every_byte_round_trips() {
        let data: Vec<u8> = (0..=255).collect();
        for len in 0..data.len() {
            assert_eq!(decode(&encode(&data[..len])).as_deref(), Ok(&data[..len]));
        }
    }

    #[cfg(feature = "tls")]
    #[test]
    fn same_as_openssl() {
        let data: Vec<u8> = (0..100u32).map(|i| (i * 37 + 5) as u8).collect();
        for len in 0..data.len() {
            let coded = openssl::base64::encode_block(&data[..len]);
            assert_eq!(encode(&data[..len]), coded);
            assert_eq!(decode(&coded).as_deref(), Ok(&data[..len]));
        }
    }
}
