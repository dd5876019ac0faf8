//! Plain HTTP on a `protocol websockets` listener (issue 14): `http_dir`'s
//! static files (types, 404s, no listings, traversal refused however it is
//! spelt, a large file streamed without buffering it), the built-in live view
//! at `/` and its opt-out, refusals of other methods and bad requests. Every
//! response closes the connection (no keep-alive).
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{free_port, temp_dir, BrokerProcess, Client};

/// A served directory and, beside it, a secret no request may reach.
fn site() -> (PathBuf, PathBuf) {
    let base = temp_dir("http-site");
    let www = base.join("www");
    std::fs::create_dir_all(www.join("sub/deeper")).expect("mkdir");
    let files: [(&str, &[u8]); 9] = [
        ("index.html", b"<h1>home</h1>"),
        ("app.js", b"console.log(1)"),
        ("style.css", b"body{}"),
        ("data.json", b"{\"a\":1}"),
        ("logo.png", b"\x89PNG\r\n\x1a\n\0\0"),
        ("icon.svg", b"<svg/>"),
        ("blob.bin", b"\0\x01\x02"),
        ("sub/index.html", b"<h1>sub</h1>"),
        ("sub/deeper/x.txt", b"deep"),
    ];
    for (name, body) in files {
        std::fs::write(www.join(name), body).expect("write");
    }
    std::fs::write(base.join("secret.txt"), "TOP-SECRET").expect("write");
    std::os::unix::fs::symlink("../secret.txt", www.join("escape.txt")).expect("ln");
    std::os::unix::fs::symlink("..", www.join("up")).expect("ln");
    std::os::unix::fs::symlink(base.join("secret.txt"), www.join("abs.txt")).expect("ln");
    std::os::unix::fs::symlink("index.html", www.join("alias.html")).expect("ln");
    (base, www)
}

/// A broker with a TCP listener and a websockets listener carrying `extra`.
fn start(extra: &str) -> (BrokerProcess, u16, u16) {
    let tcp = free_port();
    let ws = free_port();
    let b = BrokerProcess::start_with_config(
        tcp,
        &format!(
            "listener {tcp} 127.0.0.1\nlistener {ws} 127.0.0.1\nprotocol websockets\n{extra}\n"
        ),
        &[],
    );
    (b, tcp, ws)
}

/// Send `request` as is and read until the server closes: (head, body).
fn exchange(port: u16, request: &[u8]) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(request).expect("write");
    // Done sending: the server's drain after the response ends at our EOF.
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut got = Vec::new();
    // The connection closes after the response: read_to_end returns.
    s.read_to_end(&mut got).expect("response, then close");
    let end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&got)));
    (
        String::from_utf8_lossy(&got[..end + 2]).into_owned(),
        got[end + 4..].to_vec(),
    )
}

fn get(port: u16, target: &str) -> (String, Vec<u8>) {
    exchange(
        port,
        format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Before: `http_dir` was refused at start-up. Now each file comes with its
/// type and length, `/` and `/sub/` are their index.html, a directory named
/// without the slash is 404 (no listing), a missing file 404, HEAD is the
/// head alone, a symlink that stays inside is followed.
#[test]
fn http_dir_serves_files_with_their_types() {
    let (_base, www) = site();
    let (_b, _tcp, ws) = start(&format!("http_dir {}", www.display()));
    for (target, ctype, body) in [
        ("/", "text/html; charset=utf-8", &b"<h1>home</h1>"[..]),
        ("/index.html", "text/html; charset=utf-8", b"<h1>home</h1>"),
        (
            "/app.js",
            "text/javascript; charset=utf-8",
            b"console.log(1)",
        ),
        ("/style.css", "text/css; charset=utf-8", b"body{}"),
        ("/data.json", "application/json", b"{\"a\":1}"),
        ("/logo.png", "image/png", b"\x89PNG\r\n\x1a\n\0\0"),
        ("/icon.svg", "image/svg+xml", b"<svg/>"),
        ("/blob.bin", "application/octet-stream", b"\0\x01\x02"),
        ("/sub/", "text/html; charset=utf-8", b"<h1>sub</h1>"),
        ("/sub/deeper/x.txt", "application/octet-stream", b"deep"),
        (
            "/alias.html?x=1",
            "text/html; charset=utf-8",
            b"<h1>home</h1>",
        ),
        ("/sub/../index.html", "", b""),
    ] {
        let (head, got) = get(ws, target);
        if ctype.is_empty() {
            assert!(head.starts_with("HTTP/1.1 403 "), "{target}: {head}");
            continue;
        }
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{target}: {head}");
        assert_eq!(header(&head, "Content-Type"), Some(ctype), "{target}");
        assert_eq!(
            header(&head, "Content-Length"),
            Some(body.len().to_string().as_str())
        );
        assert_eq!(header(&head, "Connection"), Some("close"));
        assert_eq!(got, body, "{target}");
    }
    for target in ["/missing.html", "/sub", "/sub/deeper/", "/sub/deeper"] {
        let (head, got) = get(ws, target);
        assert!(head.starts_with("HTTP/1.1 404 "), "{target}: {head}");
        assert!(got.is_empty());
    }
    let (head, got) = exchange(ws, b"HEAD /app.js HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(header(&head, "Content-Length"), Some("14"));
    assert!(got.is_empty(), "HEAD has no body");
    // HTTP/1.0 clients (curl --http1.0, old tools) are answered too.
    let (head, got) = exchange(ws, b"GET /app.js HTTP/1.0\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(got, b"console.log(1)");
}

/// Nothing outside `http_dir` is served, however the path is spelt: `..`,
/// encoded dots and slashes, NUL bytes (raw and encoded), absolute paths
/// (which are relative to the directory: 404), absolute-form targets,
/// symlinks inside the directory that lead out of it.
#[test]
fn http_dir_refuses_every_way_out() {
    let (_base, www) = site();
    let (_b, _tcp, ws) = start(&format!("http_dir {}", www.display()));
    let cases: [(&[u8], &str); 16] = [
        (b"GET /../secret.txt HTTP/1.1\r\n\r\n", "403"),
        (b"GET /sub/../../secret.txt HTTP/1.1\r\n\r\n", "403"),
        (b"GET /%2e%2e/secret.txt HTTP/1.1\r\n\r\n", "403"),
        (b"GET /%2E%2E/secret.txt HTTP/1.1\r\n\r\n", "403"),
        (
            b"GET /sub/%2e%2e%2f%2e%2e%2fsecret.txt HTTP/1.1\r\n\r\n",
            "403",
        ),
        (b"GET /..%2fsecret.txt HTTP/1.1\r\n\r\n", "403"),
        (b"GET /%2fetc%2fpasswd HTTP/1.1\r\n\r\n", "403"),
        (b"GET /index.html%00.png HTTP/1.1\r\n\r\n", "403"),
        (b"GET /index.html\0.png HTTP/1.1\r\n\r\n", "403"),
        (b"GET /up/secret.txt HTTP/1.1\r\n\r\n", "404"),
        (b"GET /escape.txt HTTP/1.1\r\n\r\n", "404"),
        (b"GET /abs.txt HTTP/1.1\r\n\r\n", "404"),
        (b"GET /etc/passwd HTTP/1.1\r\n\r\n", "404"),
        (b"GET //etc/passwd HTTP/1.1\r\n\r\n", "404"),
        (b"GET http://x/etc/passwd HTTP/1.1\r\n\r\n", "400"),
        (b"GET etc/passwd HTTP/1.1\r\n\r\n", "400"),
    ];
    for (request, status) in cases {
        let (head, body) = exchange(ws, request);
        let shown = String::from_utf8_lossy(request);
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{shown:?}: {head}"
        );
        assert!(body.is_empty(), "{shown:?}");
        assert!(!head.contains("TOP-SECRET"));
    }
}

/// Other methods get 405 naming GET and HEAD (a POST's body is drained, the
/// answer is not reset away); a request line that is not HTTP/1.x gets 400;
/// headers past `websockets_headers_size` get 431. The MQTT side of the
/// listener is unharmed.
#[test]
fn other_methods_and_bad_requests_are_refused() {
    let (_base, www) = site();
    let (_b, tcp, ws) = start(&format!(
        "http_dir {}\nwebsockets_headers_size 1024",
        www.display()
    ));
    let post = format!(
        "POST /index.html HTTP/1.1\r\nContent-Length: 65536\r\n\r\n{}",
        "x".repeat(65536)
    );
    let (head, _) = exchange(ws, post.as_bytes());
    assert!(head.starts_with("HTTP/1.1 405 "), "{head}");
    assert_eq!(header(&head, "Allow"), Some("GET, HEAD"));
    for m in ["PUT", "DELETE", "OPTIONS"] {
        let (head, _) = exchange(ws, format!("{m} / HTTP/1.1\r\n\r\n").as_bytes());
        assert!(head.starts_with("HTTP/1.1 405 "), "{m}: {head}");
    }
    for bad in [
        "GET / HTTP/2\r\n\r\n",
        "GET /\r\n\r\n",
        "GET / HTTP/1.1\r\nno colon\r\n\r\n",
        "GET /%zz HTTP/1.1\r\n\r\n",
    ] {
        let (head, _) = exchange(ws, bad.as_bytes());
        assert!(head.starts_with("HTTP/1.1 400 "), "{bad:?}: {head}");
    }
    let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(2000));
    let (head, _) = exchange(ws, big.as_bytes());
    assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
    let mut c = Client::connect(tcp, "bystander");
    c.ping();
}

/// A file far larger than any buffer goes to a reader that takes it in small
/// pieces: the broker's peak RSS grows by a small fraction of the file (one
/// 16 KiB piece is in memory at a time), all of it arrives intact, and an
/// MQTT client is served meanwhile.
#[test]
fn a_large_file_to_a_slow_reader_is_streamed_not_buffered() {
    const SIZE: usize = 32 << 20;
    let (_base, www) = site();
    let mut data = Vec::with_capacity(SIZE);
    let mut x: u32 = 1;
    while data.len() < SIZE {
        // xorshift: incompressible, and a misplaced piece shows.
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        data.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(www.join("big.bin"), &data).expect("write");
    let (b, tcp, ws) = start(&format!("http_dir {}\nconnect_timeout 60", www.display()));
    let mut c = Client::connect(tcp, "bystander");
    c.ping();
    let before = b.peak_rss_kb();

    let mut s = TcpStream::connect(("127.0.0.1", ws)).expect("connect");
    // A modest receive window and small reads paced by round trips through
    // the broker: the server meets a full socket again and again.
    socket2::SockRef::from(&s)
        .set_recv_buffer_size(128 * 1024)
        .expect("rcvbuf");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(b"GET /big.bin HTTP/1.1\r\n\r\n")
        .expect("write");
    let mut got = Vec::with_capacity(SIZE + 1024);
    let mut buf = [0u8; 4096];
    let mut reads = 0u64;
    loop {
        let n = s.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        reads += 1;
        if reads % 64 == 0 {
            // The loop serves others while the file goes out.
            c.ping();
        }
    }
    let end = got.windows(4).position(|w| w == b"\r\n\r\n").expect("head");
    let head = String::from_utf8_lossy(&got[..end]).to_string();
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(
        header(&head, "Content-Length"),
        Some(SIZE.to_string().as_str())
    );
    assert_eq!(got.len() - end - 4, SIZE, "the whole body");
    assert!(got[end + 4..] == data[..], "the body is the file");
    let after = b.peak_rss_kb();
    let grown = after.saturating_sub(before);
    eprintln!(
        "peak RSS {before} kB -> {after} kB (+{grown} kB) serving {} kB",
        SIZE / 1024
    );
    assert!(
        grown < (SIZE / 1024 / 16) as u64,
        "peak RSS grew by {grown} kB for a {} kB file",
        SIZE / 1024
    );
}

/// `connect_timeout` bounds a whole HTTP exchange, as it bounds an upgrade:
/// a reader that stops reading does not hold its connection and file open
/// for ever.
#[test]
fn a_reader_that_stops_is_dropped_at_connect_timeout() {
    let (_base, www) = site();
    std::fs::write(www.join("big.bin"), vec![7u8; 32 << 20]).expect("write");
    let (b, _tcp, ws) = start(&format!("http_dir {}\nconnect_timeout 1", www.display()));
    let mut s = TcpStream::connect(("127.0.0.1", ws)).expect("connect");
    socket2::SockRef::from(&s)
        .set_recv_buffer_size(16 * 1024)
        .expect("rcvbuf");
    s.write_all(b"GET /big.bin HTTP/1.1\r\n\r\n")
        .expect("write");
    // Not reading: the server fills the socket and stalls until the timeout.
    b.wait_log("timed out before CONNECT");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            // A reset after the cut is a close too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("not closed: {e}"),
        }
    }
    assert!(total < 32 << 20, "the whole file went out ({total} bytes)");
}

/// An HTTP exchange that is over is over for the broker too: no "timed out
/// before CONNECT" line for it a `connect_timeout` later, even while the
/// client keeps its socket open (the server drains it for 2 s). An idle
/// socket opened after it times out first-hand and is the only one logged.
#[test]
fn a_finished_http_exchange_is_forgotten_by_the_broker() {
    let (b, _tcp, ws) = start("connect_timeout 1");
    let mut s = TcpStream::connect(("127.0.0.1", ws)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("write");
    let mut got = Vec::new();
    s.read_to_end(&mut got)
        .expect("response, then the server's FIN");
    assert!(got.starts_with(b"HTTP/1.1 200 "));
    let idle = TcpStream::connect(("127.0.0.1", ws)).expect("connect");
    let me = idle.local_addr().expect("addr");
    b.wait_log(&format!("{me} timed out before CONNECT"));
    let lines = b.log_text();
    assert_eq!(
        lines.matches("timed out before CONNECT").count(),
        1,
        "{lines}"
    );
    drop(s);
}

/// Without `http_dir`, `GET /` is the built-in live view (one self-contained
/// page, locked down by its Content-Security-Policy); other paths are 404.
/// `http_live_view false` turns it off; with `http_dir`, the directory's
/// index is served instead. Before: every plain GET got 400.
#[test]
fn live_view_at_root_unless_turned_off_or_replaced() {
    let (_b, _tcp, ws) = start("");
    let (head, body) = get(ws, "/");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(
        header(&head, "Content-Type"),
        Some("text/html; charset=utf-8")
    );
    let csp = header(&head, "Content-Security-Policy").expect("CSP");
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
    let page = String::from_utf8(body).expect("utf-8");
    assert!(page.contains("<title>midge live view</title>"));
    assert!(page.len() < 16 * 1024);
    let (head, body) = exchange(ws, b"HEAD / HTTP/1.1\r\n\r\n");
    assert_eq!(
        header(&head, "Content-Length"),
        Some(page.len().to_string().as_str())
    );
    assert!(body.is_empty());
    for other in ["/index.html", "/mqtt", "/x.js"] {
        assert!(get(ws, other).0.starts_with("HTTP/1.1 404 "), "{other}");
    }

    let (_b2, _tcp2, ws2) = start("http_live_view false");
    assert!(get(ws2, "/").0.starts_with("HTTP/1.1 404 "));

    let (_base, www) = site();
    let (_b3, _tcp3, ws3) = start(&format!("http_dir {}", www.display()));
    assert_eq!(get(ws3, "/").1, b"<h1>home</h1>");
}

/// A missing `http_dir` stops start-up with the listener named (and
/// `--test-config` says so); before, `http_dir` was refused outright.
#[test]
fn a_missing_http_dir_is_a_start_up_error() {
    let dir = temp_dir("http-missing");
    let conf = dir.join("m.conf");
    let port = free_port();
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nprotocol websockets\nhttp_dir {}\n",
            Path::new(&dir).join("nope").display()
        ),
    )
    .expect("write");
    let out = std::process::Command::new(common::midge_bin())
        .arg("--test-config")
        .arg("-c")
        .arg(&conf)
        .output()
        .expect("run");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&format!("listener {port}: http_dir")) && text.contains("not a directory"),
        "{text}"
    );
}
