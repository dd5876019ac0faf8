//! The WebSocket layer of a `protocol websockets` connection, between the
//! socket and the MQTT decoder: the upgrade request is collected in the
//! connection's partial-packet buffer (bounded by `websockets_headers_size`),
//! then frames are unwrapped in place in the loop's shared read buffer, and the
//! connection's MQTT output is wrapped in binary frames at flush time. The only
//! per-connection cost is [`WsState`] (one allocation, WebSocket connections
//! only); no buffer is added.
//!
//! A plain HTTP GET or HEAD on the listener is answered instead (a file of
//! `http_dir`, the built-in live view at `/`, or 404) and the connection
//! closes after the response: a file goes out through the same write buffer
//! one piece at a time, read as the socket takes it ([`next_piece`]).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use log::debug;

use crate::protocol::websocket::frame::{self, CloseCode, Control, FrameDecoder};
use crate::protocol::websocket::http::{self, Get};
use crate::protocol::websocket::{parse_request, Request};
use crate::protocol::ReasonCode;

use super::connection::{Connection, WriteBuffer, NO_BARRIER};

/// Bytes of a file read into the write buffer at a time (the buffer's kept
/// capacity: streaming a file allocates nothing more).
pub const PIECE: usize = 16 * 1024;

/// What a websockets listener answers plain HTTP GETs with.
#[derive(Debug, Clone, Copy)]
pub struct Site<'a> {
    /// `http_dir`: files from here.
    pub dir: Option<&'a Path>,
    /// Without `http_dir`: `GET /` is the live view (unless `http_live_view false`).
    pub live_view: bool,
}

/// One WebSocket connection's state.
#[derive(Debug, Default)]
pub struct WsState {
    /// The `101` answer was queued: the stream is frames.
    upgraded: bool,
    /// The client's frames.
    decoder: FrameDecoder,
    /// `out.bytes[..framed]` is framed wire bytes; what follows is MQTT output not
    /// yet wrapped. Always a frame boundary, so control frames go in here.
    framed: usize,
    /// A close frame (or an HTTP refusal) was queued: nothing may follow it.
    finished: bool,
    /// Why the broker closes the connection, for its close frame.
    close_reason: Option<ReasonCode>,
    /// A plain HTTP request is being answered: the output is not framed,
    /// nothing more is read, the connection closes after the response.
    http: bool,
    /// The file a GET answer streams, and how many of its bytes are still due.
    body: Option<(File, u64)>,
}

/// What the bytes read mean for the MQTT decoder.
pub enum Input {
    /// `scratch[..n]` is MQTT data (possibly none).
    Data(usize),
    /// The connection must close after its queued output (a refusal, a close
    /// answer, or a protocol error's close frame).
    Close,
}

/// Unwrap the `n` bytes just read into `scratch`: complete the upgrade, or
/// unmask frames in place. Answers (the `101`, pongs, close frames) are queued
/// on `conn`.
pub fn input(
    conn: &mut Connection,
    scratch: &mut [u8],
    n: usize,
    max_frame: usize,
    max_header: usize,
    site: Site<'_>,
) -> Input {
    let Connection { ws, out, .. } = conn;
    let Some(ws) = ws.as_deref_mut() else {
        return Input::Data(n);
    };
    if ws.finished {
        return Input::Close;
    }
    if ws.http {
        return Input::Data(0);
    }
    let mut n = n;
    if !ws.upgraded {
        // The request is bounded: at most `max_header` bytes are ever kept.
        let request = conn.rbuf.get_or_insert_with(Box::default);
        request.extend_from_slice(&scratch[..n]);
        match parse_request(request, max_header) {
            Ok(None) => return Input::Data(0),
            Err(e) => {
                debug!("WebSocket upgrade refused: {e}.");
                conn.rbuf = None;
                let out = out.get_or_insert_with(Box::default);
                out.bytes.extend_from_slice(e.response());
                ws.framed = out.bytes.len();
                ws.finished = true;
                // Input may follow the request (a POST's body): drain it
                // after the answer rather than reset the answer away.
                conn.linger = true;
                return Input::Close;
            }
            Ok(Some(Request::Get(get))) => {
                conn.rbuf = None;
                respond(
                    ws,
                    &mut out.get_or_insert_with(Box::default).bytes,
                    &get,
                    site,
                );
                return Input::Data(0);
            }
            Ok(Some(Request::Upgrade(u))) => {
                let out = out.get_or_insert_with(Box::default);
                u.write_response(&mut out.bytes);
                ws.framed = out.bytes.len();
                ws.upgraded = true;
                // Frames sent right behind the request (without waiting for
                // the answer) go on to the frame decoder.
                let rest = request.len() - u.used;
                if rest > scratch.len() {
                    ws.finished = true;
                    return Input::Close;
                }
                scratch[..rest].copy_from_slice(&request[u.used..]);
                conn.rbuf = None;
                n = rest;
            }
        }
    }
    let mut closing = None;
    let framed = &mut ws.framed;
    let result = ws
        .decoder
        .unframe(&mut scratch[..n], max_frame as u64, &mut |c| match c {
            Control::Ping(p) => {
                let mut pong = Vec::with_capacity(2 + p.len());
                frame::write_pong(p, &mut pong);
                insert(out.get_or_insert_with(Box::default), framed, &pong);
            }
            Control::Close(code) => closing = Some(code.unwrap_or(CloseCode::NORMAL)),
        });
    match result {
        Ok(m) => match closing {
            None => Input::Data(m),
            Some(code) => {
                // Answer the close after the MQTT data before it was handled:
                // the caller handles `m` bytes first, then closes.
                close(ws, out.get_or_insert_with(Box::default), code, "");
                if m > 0 {
                    Input::Data(m)
                } else {
                    Input::Close
                }
            }
        },
        Err(e) => {
            debug!("WebSocket protocol error: {e}.");
            close(ws, out.get_or_insert_with(Box::default), e.close_code(), "");
            Input::Close
        }
    }
}

/// Queue the answer to a plain GET or HEAD: the head, and the body or the
/// file to stream after it.
fn respond(ws: &mut WsState, wbuf: &mut Vec<u8>, get: &Get, site: Site<'_>) {
    ws.http = true;
    if let Some(dir) = site.dir {
        match super::http_files::open(dir, &get.path) {
            Some((file, len)) => {
                http::write_ok_head(http::content_type(&get.path), len, "", wbuf);
                if !get.head_only && len > 0 {
                    ws.body = Some((file, len));
                }
            }
            None => wbuf.extend_from_slice(http::NOT_FOUND),
        }
    } else if get.root && site.live_view {
        let page = http::LIVE_VIEW.as_bytes();
        http::write_ok_head(
            "text/html; charset=utf-8",
            page.len() as u64,
            http::LIVE_VIEW_HEADERS,
            wbuf,
        );
        if !get.head_only {
            wbuf.extend_from_slice(page);
        }
    } else {
        wbuf.extend_from_slice(http::NOT_FOUND);
    }
}

/// A plain HTTP request is being answered: do not read the socket (what the
/// peer sends is drained once the response is out).
pub fn responding(conn: &Connection) -> bool {
    conn.ws.as_ref().is_some_and(|w| w.http)
}

/// What follows once the write buffer is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Not an HTTP response: nothing.
    Nothing,
    /// The next piece of the file is in the buffer.
    Piece,
    /// The response is complete (or its file ended early): close.
    End,
}

/// With the write buffer empty: read the next piece of the file being sent
/// into it. A file that shrank or failed ends the response short (the peer
/// sees fewer bytes than `Content-Length`, and the close).
pub fn next_piece(ws: &mut WsState, wbuf: &mut Vec<u8>) -> Next {
    if !ws.http {
        return Next::Nothing;
    }
    let Some((file, left)) = ws.body.as_mut() else {
        return Next::End;
    };
    let want = PIECE.min(usize::try_from(*left).unwrap_or(PIECE));
    wbuf.resize(want, 0);
    let got = loop {
        match file.read(&mut wbuf[..want]) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => break other,
        }
    };
    match got {
        Ok(n) if n > 0 => {
            wbuf.truncate(n);
            *left -= n as u64;
            if *left == 0 {
                ws.body = None;
            }
            Next::Piece
        }
        other => {
            if let Err(e) = other {
                debug!("Reading a file being served failed: {e}.");
            }
            wbuf.clear();
            ws.body = None;
            Next::End
        }
    }
}

/// The connection is being closed before its response is complete (the
/// connect timeout): the rest of the file is not sent.
pub fn abandon_body(ws: &mut WsState) {
    ws.body = None;
}

/// Put a whole control frame at the frame boundary.
fn insert(out: &mut WriteBuffer, framed: &mut usize, f: &[u8]) {
    out.bytes.splice(*framed..*framed, f.iter().copied());
    *framed += f.len();
    if out.barrier != NO_BARRIER {
        out.barrier += f.len();
    }
}

/// Frame what is queued and end the stream with a close frame.
fn close(ws: &mut WsState, out: &mut WriteBuffer, code: CloseCode, reason: &str) {
    if ws.finished {
        return;
    }
    frame_output(ws, out);
    let mut f = Vec::with_capacity(4 + reason.len());
    frame::write_close(code, reason, &mut f);
    insert(out, &mut ws.framed, &f);
    ws.finished = true;
}

/// Remember why the broker closes the connection (the first reason given
/// wins), for [`broker_close`].
pub fn set_close_reason(ws: &mut WsState, reason: ReasonCode) {
    ws.close_reason.get_or_insert(reason);
}

/// The broker closes the connection: once nothing waits for the log's commit,
/// frame what is queued and end with a close frame whose status fits the
/// broker's reason, the reason's name as its text, before the TCP stream
/// ends (RFC 6455 section 7.1.1: the endpoint that closes sends a close frame
/// first). Nothing is added before the upgrade completed (the stream is still
/// HTTP) or after a close frame. True when the close frame was queued.
pub fn broker_close(ws: &mut WsState, out: &mut WriteBuffer) -> bool {
    if ws.finished || !ws.upgraded || out.barrier != NO_BARRIER {
        return false;
    }
    let reason = ws.close_reason.unwrap_or(ReasonCode::NORMAL_DISCONNECTION);
    let text = if reason.is_error() { reason.name() } else { "" };
    close(ws, out, close_status(reason), text);
    true
}

/// The WebSocket close status (RFC 6455 section 7.4.1) for an MQTT reason:
/// an orderly end (a client's DISCONNECT, a session taken over, a redirect)
/// is 1000; shutdown is 1001 (going away); a broken packet or stream 1002; a
/// packet over `max_packet_size` 1009 (too big); a busy or unavailable server
/// 1013 (try again later); an internal failure 1011; every refusal by policy
/// (credentials, ACLs, quotas, client id, keep-alive and connect timeouts)
/// 1008.
pub fn close_status(reason: ReasonCode) -> CloseCode {
    match reason.0 {
        0x00..=0x7F | 0x8E | 0x9C | 0x9D => CloseCode::NORMAL,
        0x8B => CloseCode::GOING_AWAY,
        0x81 | 0x82 | 0x84 | 0x8F..=0x94 | 0x99..=0x9B | 0x9E | 0xA1 | 0xA2 => CloseCode::PROTOCOL,
        0x95 => CloseCode::TOO_BIG,
        0x88 | 0x89 | 0x96 | 0x9F => CloseCode::TRY_AGAIN_LATER,
        0x80 | 0x83 => CloseCode::INTERNAL_ERROR,
        _ => CloseCode::POLICY,
    }
}

/// True once the connection's stream is finished (close frame or refusal
/// queued): the connection should close.
pub fn finished(conn: &Connection) -> bool {
    conn.ws.as_ref().is_some_and(|w| w.finished)
}

/// Wrap the MQTT output queued since the last frame, up to the barrier (what
/// waits for the log's commit is framed once released), in one binary frame:
/// one frame may carry several packets [MQTT-6.0.0-2]. After a close frame,
/// nothing more is sent.
pub fn frame_output(ws: &mut WsState, out: &mut WriteBuffer) {
    if ws.http {
        return;
    }
    if ws.finished {
        out.bytes.truncate(ws.framed);
        if out.barrier >= out.bytes.len() {
            out.barrier = NO_BARRIER;
        }
        return;
    }
    let end = out.bytes.len().min(out.barrier);
    if end <= ws.framed {
        return;
    }
    let mut h = [0u8; 10];
    let hn = frame::server_header(frame::BINARY, end - ws.framed, &mut h);
    out.bytes
        .splice(ws.framed..ws.framed, h[..hn].iter().copied());
    ws.framed = end + hn;
    if out.barrier != NO_BARRIER {
        out.barrier += hn;
    }
}

/// The whole output was written and the buffer cleared.
pub fn reset(ws: &mut WsState) {
    ws.framed = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every MQTT reason maps to a status a peer may receive (section 7.4.2),
    /// and the ones the broker closes with most have their fitting class.
    #[test]
    fn every_reason_has_a_wire_status() {
        for r in 0..=255u8 {
            assert!(close_status(ReasonCode(r)).valid_on_wire(), "reason {r:#x}");
        }
        let cases = [
            (ReasonCode::NORMAL_DISCONNECTION, 1000),
            (ReasonCode::SESSION_TAKEN_OVER, 1000),
            (ReasonCode::SERVER_SHUTTING_DOWN, 1001),
            (ReasonCode::MALFORMED_PACKET, 1002),
            (ReasonCode::PROTOCOL_ERROR, 1002),
            (ReasonCode::TOPIC_ALIAS_INVALID, 1002),
            (ReasonCode::NOT_AUTHORIZED, 1008),
            (ReasonCode::BAD_USER_NAME_OR_PASSWORD, 1008),
            (ReasonCode::KEEP_ALIVE_TIMEOUT, 1008),
            (ReasonCode::QUOTA_EXCEEDED, 1008),
            (ReasonCode::PACKET_TOO_LARGE, 1009),
            (ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR, 1011),
            (ReasonCode::SERVER_BUSY, 1013),
        ];
        for (reason, code) in cases {
            assert_eq!(close_status(reason), CloseCode(code), "{reason}");
        }
    }
}
