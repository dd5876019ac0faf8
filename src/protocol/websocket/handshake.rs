//! The opening handshake (RFC 6455 section 4.2): parse a client's HTTP/1.1
//! upgrade request from a byte prefix (incrementally: `Ok(None)` until the blank
//! line arrives, never more than the caller's header limit), and write the
//! `101 Switching Protocols` answer or the refusal.
//!
//! Subprotocols: `mqtt` (MQTT 3.1.1 and 5 [MQTT-6.0.0-3], [MQTT-6.0.0-4]) and
//! `mqttv3.1` (old clients) are accepted, in the client's order of preference.
//! A request that offers only other subprotocols is refused (400), as
//! libwebsockets (mosquitto's WebSocket layer) refuses a request whose list
//! matches none of its protocols. A request that offers no subprotocol at all is
//! accepted and answered without a `Sec-WebSocket-Protocol` header, and MQTT is
//! spoken on it: a lenient choice for simple clients, the stream still has to
//! be valid MQTT.
//!
//! A request that is not an upgrade attempt (no `Upgrade: websocket`, no
//! `Sec-WebSocket-Key` or `-Version`) is plain HTTP: a GET or HEAD is handed
//! on as [`Get`] (see [`super::http`]), other methods get 405.

use crate::crypto::{base64, sha1};

use super::http::{file_path, Get};

/// The GUID every server appends to the client's key (RFC 6455 section 1.3).
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Subprotocols spoken, in the server's order (the client's order decides).
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// A complete, valid upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// Bytes the request took (the blank line included); what follows is frames.
    pub used: usize,
    /// `Sec-WebSocket-Accept` for the answer.
    pub accept: String,
    /// The subprotocol chosen, if the client offered one we speak.
    pub subprotocol: Option<&'static str>,
}

/// What a complete request head asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A valid WebSocket upgrade.
    Upgrade(Upgrade),
    /// A plain GET or HEAD: a file, the live view, or 404.
    Get(Get),
}

/// Why a request on a WebSocket listener is refused; each maps to an HTTP
/// status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeError {
    /// The header section grew past the limit without ending (431).
    TooLarge,
    /// Not an HTTP/1.1 GET request line, a header line without a colon, bytes
    /// that are not text (400).
    Malformed,
    /// `Upgrade: websocket` or `Connection: upgrade` missing (400).
    NotUpgrade,
    /// No `Sec-WebSocket-Key`, or not 16 bytes in base64 (400).
    BadKey,
    /// `Sec-WebSocket-Version` missing or not 13 (426, naming 13).
    BadVersion,
    /// Subprotocols offered, none of them MQTT (400).
    NoSubprotocol,
    /// A plain request for a path that could leave the served directory
    /// (`..`, an encoded `/`, a NUL, a hidden file) (403).
    Forbidden,
    /// A plain request with a method other than GET and HEAD (405).
    Method,
}

impl UpgradeError {
    /// The HTTP response refusing the request (the connection closes after it).
    pub fn response(self) -> &'static [u8] {
        match self {
            UpgradeError::TooLarge => b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            UpgradeError::Forbidden => b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            UpgradeError::Method => b"HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            UpgradeError::BadVersion => b"HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            _ => b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        }
    }
}

impl std::fmt::Display for UpgradeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UpgradeError::TooLarge => "upgrade request headers too large",
            UpgradeError::Malformed => "malformed upgrade request",
            UpgradeError::NotUpgrade => "not a WebSocket upgrade request",
            UpgradeError::BadKey => "missing or bad Sec-WebSocket-Key",
            UpgradeError::BadVersion => "unsupported Sec-WebSocket-Version",
            UpgradeError::NoSubprotocol => "no MQTT subprotocol offered",
            UpgradeError::Forbidden => "request path outside the served directory",
            UpgradeError::Method => "HTTP method not allowed",
        })
    }
}

/// Parse the request at the start of `buf`. `Ok(None)`: not complete yet (and
/// within `max_header` bytes). Any request path is accepted for an upgrade.
pub fn parse_request(buf: &[u8], max_header: usize) -> Result<Option<Request>, UpgradeError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > max_header {
            return Err(UpgradeError::TooLarge);
        }
        return Ok(None);
    };
    let used = end + 4;
    if used > max_header {
        return Err(UpgradeError::TooLarge);
    }
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| UpgradeError::Malformed)?;
    let mut lines = text.split("\r\n");
    let request = lines.next().ok_or(UpgradeError::Malformed)?;
    let mut parts = request.split(' ');
    let (Some(method), Some(path), Some(http), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(UpgradeError::Malformed);
    };
    if path.is_empty() {
        return Err(UpgradeError::Malformed);
    }
    let (mut upgrade, mut connection, mut key, mut version) = (false, false, None, None);
    let mut offered = false;
    let mut subprotocol: Option<(usize, &'static str)> = None;
    let mut position = 0;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(UpgradeError::Malformed)?;
        let value = value.trim();
        let tokens = || value.split(',').map(str::trim);
        match name.trim().to_ascii_lowercase().as_str() {
            "upgrade" => upgrade |= tokens().any(|t| t.eq_ignore_ascii_case("websocket")),
            "connection" => connection |= tokens().any(|t| t.eq_ignore_ascii_case("upgrade")),
            "sec-websocket-key" => key = Some(value),
            "sec-websocket-version" => version = Some(value),
            "sec-websocket-protocol" => {
                for t in tokens().filter(|t| !t.is_empty()) {
                    offered = true;
                    // Subprotocol names are case-sensitive (RFC 6455 section 4.1).
                    if let Some(p) = SUBPROTOCOLS.iter().find(|p| **p == t) {
                        if subprotocol.is_none_or(|(i, _)| position < i) {
                            subprotocol = Some((position, p));
                        }
                    }
                    position += 1;
                }
            }
            _ => {}
        }
    }
    // Not a WebSocket attempt at all (`Connection: upgrade` alone may be
    // HTTP/2's h2c, which is not spoken): plain HTTP.
    if !upgrade && key.is_none() && version.is_none() {
        if !matches!(http, "HTTP/1.1" | "HTTP/1.0") {
            return Err(UpgradeError::Malformed);
        }
        let head_only = match method {
            "GET" => false,
            "HEAD" => true,
            _ => return Err(UpgradeError::Method),
        };
        let (path, root) = file_path(path)?;
        return Ok(Some(Request::Get(Get {
            used,
            head_only,
            path,
            root,
        })));
    }
    if method != "GET" || http != "HTTP/1.1" {
        return Err(UpgradeError::Malformed);
    }
    if !upgrade || !connection {
        return Err(UpgradeError::NotUpgrade);
    }
    if version != Some("13") {
        return Err(UpgradeError::BadVersion);
    }
    let key = key.ok_or(UpgradeError::BadKey)?;
    match base64::decode(key) {
        Ok(k) if k.len() == 16 => {}
        _ => return Err(UpgradeError::BadKey),
    }
    if offered && subprotocol.is_none() {
        return Err(UpgradeError::NoSubprotocol);
    }
    Ok(Some(Request::Upgrade(Upgrade {
        used,
        accept: accept_key(key),
        subprotocol: subprotocol.map(|(_, p)| p),
    })))
}

/// `Sec-WebSocket-Accept`: base64 of the SHA-1 of the key and the GUID.
pub fn accept_key(key: &str) -> String {
    let mut input = String::with_capacity(key.len() + GUID.len());
    input.push_str(key);
    input.push_str(GUID);
    base64::encode(&sha1(input.as_bytes()))
}

impl Upgrade {
    /// Append the `101 Switching Protocols` answer to `out`.
    pub fn write_response(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
        out.extend_from_slice(self.accept.as_bytes());
        if let Some(p) = self.subprotocol {
            out.extend_from_slice(b"\r\nSec-WebSocket-Protocol: ");
            out.extend_from_slice(p.as_bytes());
        }
        out.extend_from_slice(b"\r\n\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    /// The upgrade, or why not (a plain request counts as `NotUpgrade`).
    fn parse_upgrade(buf: &[u8], max: usize) -> Result<Option<Upgrade>, UpgradeError> {
        match parse_request(buf, max)? {
            None => Ok(None),
            Some(Request::Upgrade(u)) => Ok(Some(u)),
            Some(Request::Get(_)) => Err(UpgradeError::NotUpgrade),
        }
    }

    /// Requests without any WebSocket header are plain HTTP: GET and HEAD
    /// name a file, other methods get 405, traversal 403; HTTP/1.0 is fine
    /// here (not for an upgrade), `Connection: upgrade` alone (h2c) too.
    #[test]
    fn plain_requests_are_told_apart_from_upgrades() {
        let get = |r: &str| parse_request(r.as_bytes(), 4096);
        assert_eq!(
            get("GET /a/b.js?v=2 HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok(Some(Request::Get(Get {
                used: 37,
                head_only: false,
                path: "a/b.js".into(),
                root: false
            })))
        );
        assert!(matches!(
            get("HEAD / HTTP/1.0\r\n\r\n"),
            Ok(Some(Request::Get(Get {
                head_only: true,
                root: true,
                ..
            })))
        ));
        assert!(matches!(
            get("GET / HTTP/1.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n"),
            Ok(Some(Request::Get(_)))
        ));
        assert_eq!(get("POST / HTTP/1.1\r\n\r\n"), Err(UpgradeError::Method));
        assert_eq!(
            get("GET /../x HTTP/1.1\r\n\r\n"),
            Err(UpgradeError::Forbidden)
        );
        assert_eq!(get("GET / HTTP/2.0\r\n\r\n"), Err(UpgradeError::Malformed));
        assert_eq!(
            get("GET /x HTTP/1.0\r\nSec-WebSocket-Version: 13\r\n\r\n"),
            Err(UpgradeError::Malformed),
            "an upgrade attempt needs HTTP/1.1"
        );
        assert!(UpgradeError::Method
            .response()
            .starts_with(b"HTTP/1.1 405 "));
        assert!(UpgradeError::Forbidden
            .response()
            .starts_with(b"HTTP/1.1 403 "));
    }

    fn request(extra: &str) -> String {
        format!("GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n")
    }

    /// RFC 6455 section 1.3's worked example.
    #[test]
    fn accept_key_matches_the_rfc_example() {
        assert_eq!(accept_key(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn a_complete_request_is_accepted_with_mqtt() {
        let r = request("Sec-WebSocket-Protocol: mqtt\r\n");
        let mut bytes = r.clone().into_bytes();
        bytes.extend_from_slice(&[0x82, 0x80]);
        let u = parse_upgrade(&bytes, 4096).expect("ok").expect("complete");
        assert_eq!(u.used, r.len(), "frames after the request are not consumed");
        assert_eq!(u.subprotocol, Some("mqtt"));
        let mut out = Vec::new();
        u.write_response(&mut out);
        let text = String::from_utf8(out).expect("text");
        assert!(text.starts_with("HTTP/1.1 101 "));
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(text.contains("Sec-WebSocket-Protocol: mqtt\r\n"));
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let r = request("Sec-WebSocket-Protocol: mqtt\r\n").into_bytes();
        for n in 0..r.len() {
            assert_eq!(parse_upgrade(&r[..n], 4096), Ok(None), "prefix {n}");
        }
    }

    #[test]
    fn the_clients_preference_decides_the_subprotocol() {
        let u = |p: &str| {
            parse_upgrade(
                request(&format!("Sec-WebSocket-Protocol: {p}\r\n")).as_bytes(),
                4096,
            )
        };
        assert_eq!(
            u("mqttv3.1, mqtt").map(|u| u.and_then(|u| u.subprotocol)),
            Ok(Some("mqttv3.1"))
        );
        assert_eq!(
            u("chat, mqtt").map(|u| u.and_then(|u| u.subprotocol)),
            Ok(Some("mqtt"))
        );
        assert_eq!(u("chat, MQTT"), Err(UpgradeError::NoSubprotocol));
        // None offered at all: accepted, answered without the header.
        let none = parse_upgrade(request("").as_bytes(), 4096);
        assert_eq!(none.map(|u| u.and_then(|u| u.subprotocol)), Ok(None));
    }

    #[test]
    fn bad_requests_are_refused_with_their_reason() {
        let ok = request("");
        let cases = [
            (
                ok.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
                UpgradeError::BadKey,
            ),
            (ok.replace(KEY, "c2hvcnQ="), UpgradeError::BadKey),
            (
                ok.replace("Version: 13", "Version: 8"),
                UpgradeError::BadVersion,
            ),
            (
                ok.replace("Upgrade: websocket\r\n", ""),
                UpgradeError::NotUpgrade,
            ),
            (
                ok.replace("keep-alive, Upgrade", "keep-alive"),
                UpgradeError::NotUpgrade,
            ),
            (ok.replace("GET", "POST"), UpgradeError::Malformed),
            (ok.replace("HTTP/1.1", "HTTP/1.0"), UpgradeError::Malformed),
            (ok.replace("Host: x", "Host x"), UpgradeError::Malformed),
        ];
        for (req, want) in cases {
            assert_eq!(parse_upgrade(req.as_bytes(), 4096), Err(want), "{req:?}");
        }
        assert_eq!(
            parse_upgrade(b"GET / HTTP/1.1\r\nX: \xff\r\n\r\n", 4096),
            Err(UpgradeError::Malformed)
        );
    }

    #[test]
    fn headers_are_bounded_complete_or_not() {
        let big = request(&format!("X-Pad: {}\r\n", "a".repeat(5000)));
        assert_eq!(
            parse_upgrade(big.as_bytes(), 4096),
            Err(UpgradeError::TooLarge)
        );
        assert_eq!(
            parse_upgrade(&big.as_bytes()[..4097], 4096),
            Err(UpgradeError::TooLarge)
        );
        assert!(parse_upgrade(big.as_bytes(), 8192).is_ok_and(|u| u.is_some()));
    }
}
