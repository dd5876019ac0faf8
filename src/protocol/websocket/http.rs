//! Plain HTTP/1.1 on a WebSocket listener (the requests that are not an
//! upgrade): which file a GET or HEAD names, refused when it could reach
//! outside the served directory; the `Content-Type` by extension; the response
//! heads. No I/O: the shell opens the file and streams it. One request per
//! connection: every response says `Connection: close` (no keep-alive).

use super::handshake::UpgradeError;

/// A plain GET or HEAD request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Get {
    /// Bytes the request head took.
    pub used: usize,
    /// HEAD: the same head as GET, no body.
    pub head_only: bool,
    /// The file asked for, relative to the served directory: `/`-separated
    /// segments, none empty, none starting with `.`, no NUL or `\`; a path
    /// ending in `/` names that directory's `index.html`.
    pub path: String,
    /// The request was for `/` itself (the live view's address).
    pub root: bool,
}

/// The relative file path a request target names (query and fragment
/// dropped, percent-decoded segment by segment). Refused (`Forbidden`): a
/// segment that starts with `.` (so `..`, `.` and hidden files, also when
/// encoded as `%2e`), an encoded `/` (`%2f`) or `\`, a NUL. `Malformed`: a
/// target that is not origin-form (`/...`, RFC 9112 section 3.2.1), bad
/// percent-encoding, a name that is not UTF-8. Empty segments (`//`) are
/// skipped, so the result is never absolute.
pub fn file_path(target: &str) -> Result<(String, bool), UpgradeError> {
    let path = target.split(['?', '#']).next().unwrap_or("");
    if !path.starts_with('/') {
        return Err(UpgradeError::Malformed);
    }
    let mut out = String::new();
    for raw in path.split('/').filter(|s| !s.is_empty()) {
        let segment = percent_decode(raw)?;
        if segment.starts_with('.') || segment.contains(['/', '\\', '\0']) {
            return Err(UpgradeError::Forbidden);
        }
        if !out.is_empty() {
            out.push('/');
        }
        out.push_str(&segment);
    }
    let root = out.is_empty();
    if root || path.ends_with('/') {
        if !out.is_empty() {
            out.push('/');
        }
        out.push_str("index.html");
    }
    Ok((out, root))
}

/// `%XX` escapes decoded; the result must be UTF-8.
fn percent_decode(s: &str) -> Result<String, UpgradeError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).ok_or(UpgradeError::Malformed)?;
            let hex = std::str::from_utf8(hex).map_err(|_| UpgradeError::Malformed)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| UpgradeError::Malformed)?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| UpgradeError::Malformed)
}

/// The `Content-Type` for a file name, by its extension.
pub fn content_type(path: &str) -> &'static str {
    let ext = path
        .rsplit('/')
        .next()
        .and_then(|name| name.rsplit_once('.'))
        .map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

/// Append a `200 OK` head for a body of `length` bytes; `extra` is more header
/// lines, each ending in CRLF.
pub fn write_ok_head(content_type: &str, length: u64, extra: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Type: ");
    out.extend_from_slice(content_type.as_bytes());
    out.extend_from_slice(b"\r\nContent-Length: ");
    out.extend_from_slice(length.to_string().as_bytes());
    // The type is the one above, not one a browser guesses from the bytes.
    out.extend_from_slice(
        b"\r\nX-Content-Type-Options: nosniff\r\nCache-Control: no-cache\r\nConnection: close\r\n",
    );
    out.extend_from_slice(extra.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The live view: one page with its own script and style (no external
/// resources), an ordinary MQTT client of this broker over WebSockets.
pub const LIVE_VIEW: &str = include_str!("live_view.html");

/// Extra headers for the live view: nothing but the page's own inline script
/// and style runs, it connects only back to this listener, and no other site
/// may frame it.
pub const LIVE_VIEW_HEADERS: &str = "Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'\r\n";

/// The answer for a file that is not there, or not a regular file (a
/// directory: no listings).
pub const NOT_FOUND: &[u8] =
    b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_map_to_relative_paths() {
        let ok = |t: &str| file_path(t).expect(t);
        assert_eq!(ok("/"), ("index.html".into(), true));
        assert_eq!(ok("/?x=1"), ("index.html".into(), true));
        assert_eq!(ok("/app.js"), ("app.js".into(), false));
        assert_eq!(ok("/a/b.css#top"), ("a/b.css".into(), false));
        assert_eq!(ok("/docs/"), ("docs/index.html".into(), false));
        // Never absolute: empty segments are dropped.
        assert_eq!(ok("//etc/passwd"), ("etc/passwd".into(), false));
        assert_eq!(ok("/my%20page.html"), ("my page.html".into(), false));
    }

    #[test]
    fn traversal_and_odd_targets_are_refused() {
        for t in [
            "/..",
            "/../etc/passwd",
            "/a/../../b",
            "/%2e%2e/etc/passwd",
            "/%2E%2e/x",
            "/a/%2e%2e%2fb",
            "/..%2fetc%2fpasswd",
            "/a%2fb",
            "/a%5cb",
            "/a%00.html",
            "/.hidden",
            "/./x",
        ] {
            assert_eq!(file_path(t), Err(UpgradeError::Forbidden), "{t}");
        }
        for t in [
            "",
            "*",
            "http://x/y",
            "etc/passwd",
            "/%",
            "/%2",
            "/%zz",
            "/%ff.html",
        ] {
            assert_eq!(file_path(t), Err(UpgradeError::Malformed), "{t}");
        }
    }

    #[test]
    fn content_types_follow_the_extension() {
        for (p, t) in [
            ("index.html", "text/html; charset=utf-8"),
            ("a/B.HTM", "text/html; charset=utf-8"),
            ("app.js", "text/javascript; charset=utf-8"),
            ("s.css", "text/css; charset=utf-8"),
            ("d.json", "application/json"),
            ("i.png", "image/png"),
            ("i.svg", "image/svg+xml"),
            ("x.tar.gz", "application/octet-stream"),
            ("noext", "application/octet-stream"),
            ("dir.js/file", "application/octet-stream"),
        ] {
            assert_eq!(content_type(p), t, "{p}");
        }
    }

    /// Issue 14: the built-in page stays small and self-contained.
    #[test]
    fn live_view_is_one_small_page() {
        assert!(LIVE_VIEW.len() < 16 * 1024, "{} bytes", LIVE_VIEW.len());
        eprintln!("live view {} bytes", LIVE_VIEW.len());
        for external in [
            "<script src",
            "<link",
            "@import",
            "url(",
            "http://",
            "https://",
        ] {
            assert!(!LIVE_VIEW.contains(external), "{external}");
        }
    }

    #[test]
    fn ok_head_is_complete() {
        let mut out = Vec::new();
        write_ok_head("image/png", 42, "X-A: b\r\n", &mut out);
        let text = String::from_utf8(out).expect("text");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("\r\nContent-Type: image/png\r\n"));
        assert!(text.contains("\r\nContent-Length: 42\r\n"));
        assert!(text.contains("\r\nConnection: close\r\n"));
        assert!(text.ends_with("X-A: b\r\n\r\n"));
    }
}
