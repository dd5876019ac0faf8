//! Running midge like mosquitto: the directive table, real-world mosquitto
//! configurations, logging destinations, `--test-config`, `-d`, `user`.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use midge::directives;

const BEGIN: &str = "<!-- directives:begin -->\n";
const END: &str = "<!-- directives:end -->";

/// The README's directive table is the one `src/directives.rs` generates.
/// `MIDGE_BLESS=1 cargo test --test compat readme` rewrites it.
#[test]
fn readme_directive_table_matches_the_code() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).expect("README");
    let start = readme.find(BEGIN).expect("begin marker") + BEGIN.len();
    let end = readme.find(END).expect("end marker");
    let want = directives::markdown_table();
    if std::env::var_os("MIDGE_BLESS").is_some() {
        let fixed = format!("{}{want}{}", &readme[..start], &readme[end..]);
        std::fs::write(&path, fixed).expect("write README");
        return;
    }
    assert_eq!(
        &readme[start..end],
        want,
        "README directive table differs from src/directives.rs (MIDGE_BLESS=1 to regenerate)"
    );
}

/// Run midge with `args` to completion (stdin closed, output captured).
fn run_midge(args: &[&str], cwd: &Path) -> (i32, String) {
    let out = Command::new(midge_bin())
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .env_remove("RUST_LOG")
        .output()
        .expect("run midge");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn connect_as(
    port: u16,
    version: ProtocolVersion,
    id: &str,
    user: Option<&str>,
) -> (Client, ReasonCode) {
    let mut c = Client::open(port, version);
    c.send(&Packet::Connect(Box::new(Connect {
        version,
        clean_start: true,
        keep_alive: 60,
        properties: Properties::default(),
        client_id: leak_str(id),
        will: None,
        username: user.map(leak_str),
        password: None,
    })));
    match c.recv() {
        Packet::ConnAck(a) => (c, a.reason),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

use midge::protocol::{Connect, Disconnect, Packet, Properties, ProtocolVersion, QoS, ReasonCode};

/// `--test-config` loads every file and checks every address, and reports
/// every problem of the file in one run. Before: "config OK" for a missing
/// password file, a broken ACL and an address the host does not have, and one
/// parse error per run.
#[test]
fn test_config_reports_every_problem_in_one_run() {
    let dir = temp_dir("compat-testconfig");
    let conf = dir.join("m.conf");
    std::fs::write(
        &conf,
        "listener 1883 192.0.2.77\npassword_file /nonexistent/pw\nacl_file acl\nlog_dest file /nonexistent/dir/m.log\n",
    )
    .expect("write");
    std::fs::write(dir.join("acl"), "topic frobnicate x\n").expect("write acl");
    let conf_s = conf.display().to_string();
    let (code, text) = run_midge(&["--test-config", "-c", &conf_s], &dir);
    assert_eq!(code, 1, "{text}");
    for needle in ["/nonexistent/pw", "192.0.2.77", "/nonexistent/dir/m.log"] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    // Syntax errors: all of them, each with file:line.
    std::fs::write(
        &conf,
        "bogus 1\nmax_keepalive x\nlistener 1883 # fine\nlog_dest dlt\n",
    )
    .expect("write");
    let (code, text) = run_midge(&["--test-config", "-c", &conf_s], &dir);
    assert_eq!(code, 1, "{text}");
    for needle in [
        ":1: unknown directive `bogus`",
        ":2: `max_keepalive`",
        ":4: `log_dest dlt` is refused",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    // A good one passes, even with its port held by a running broker.
    let b = BrokerProcess::start("");
    std::fs::write(
        &conf,
        format!("listener {} 127.0.0.1  # the test broker's\n", b.port),
    )
    .expect("write");
    let (code, text) = run_midge(&["--test-config", "-c", &conf_s], &dir);
    assert_eq!(code, 0, "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `-d`: a config problem is reported before detaching (exit 1, on stderr);
/// relative paths mean the start directory, not `/`; with a log file the
/// daemon's lines land there. Before: exit 0, nothing said, `/midge.pid`.
#[test]
fn daemon_fails_before_detaching_and_keeps_relative_paths() {
    let dir = temp_dir("compat-daemon");
    let port = free_port();
    std::fs::write(
        dir.join("m.conf"),
        format!("listener {port} 127.0.0.1\npassword_file missing-pw\n"),
    )
    .expect("write");
    let (code, text) = run_midge(&["-d", "-c", "m.conf"], &dir);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("missing-pw"), "{text}");

    std::fs::write(
        dir.join("m.conf"),
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npid_file m.pid\nlog_dest file m.log\n"),
    )
    .expect("write");
    let (code, text) = run_midge(&["-d", "-c", "m.conf"], &dir);
    assert_eq!(code, 0, "{text}");
    // The daemon writes its pid file, then listens: wait for the listen line in
    // its log file (reads with a deadline, no fixed sleep).
    let deadline = std::time::Instant::now() + TIMEOUT;
    let log = loop {
        let log = std::fs::read_to_string(dir.join("m.log")).unwrap_or_default();
        if log.contains("Opening listen socket") && dir.join("m.pid").exists() {
            break log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "daemon did not start: {log}"
        );
        std::thread::yield_now();
    };
    let pid: i32 = std::fs::read_to_string(dir.join("m.pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    assert!(log.contains("starting"), "{log}");
    let c = Client::connect(port, "daemon-client");
    c.disconnect();
    // SAFETY: plain kill(2) on the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + TIMEOUT;
    while dir.join("m.pid").exists() {
        assert!(std::time::Instant::now() < deadline, "daemon did not stop");
        std::thread::yield_now();
    }
    let log = std::fs::read_to_string(dir.join("m.log")).unwrap_or_default();
    assert!(log.contains("terminating"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `log_dest file` + `topic` + `stdout` at once, `log_timestamp_format`, and
/// the file reopened on SIGHUP after logrotate moved it. `topic` lines arrive
/// on `$SYS/broker/log/N` (mosquitto's topics).
#[test]
fn log_destinations_file_topic_and_reopen() {
    let dir = temp_dir("compat-logdest");
    let log = dir.join("m.log");
    let b = BrokerProcess::start(&format!(
        "log_dest file {}\nlog_dest stdout\nlog_dest topic\nlog_timestamp_format %Y-%m-%dT%H:%M:%S\n",
        log.display()
    ));
    let mut watcher = Client::connect(b.port, "log-watcher");
    watcher.subscribe("$SYS/broker/log/N", QoS::AtMostOnce);
    let c = Client::connect(b.port, "someone");
    let p = watcher.recv_publish();
    assert_eq!(p.topic, "$SYS/broker/log/N");
    let text = String::from_utf8_lossy(p.payload).to_string();
    assert!(
        text.contains("New client connected") && text.contains("someone"),
        "{text}"
    );
    b.wait_log("as someone");
    let line = b
        .log_text()
        .lines()
        .find(|l| l.contains("as someone"))
        .map(str::to_string)
        .expect("line");
    // `YYYY-MM-DDTHH:MM:SS: New client...`
    assert_eq!(line.as_bytes().get(4), Some(&b'-'), "{line}");
    assert_eq!(line.as_bytes().get(10), Some(&b'T'), "{line}");
    c.disconnect();
    b.wait_log("Client someone disconnected.");
    // logrotate: move the file, HUP, the next lines go to a new file.
    std::fs::rename(&log, dir.join("m.log.1")).expect("rename");
    b.signal("HUP");
    b.wait_log("Reloading");
    let c = Client::connect(b.port, "after-rotate");
    b.wait_log("as after-rotate");
    c.disconnect();
    b.wait_log("Client after-rotate disconnected.");
    // The writer thread may be a moment behind stdout: wait for the file.
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let fresh = std::fs::read_to_string(&log).unwrap_or_default();
        if fresh.contains("as after-rotate") {
            assert!(!fresh.contains("as someone"), "{fresh}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no line in the new file: {fresh}"
        );
        std::thread::yield_now();
    }
    let old = std::fs::read_to_string(dir.join("m.log.1")).expect("old log");
    assert!(old.contains("as someone"), "{old}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// mosquitto's connection lines: the user name on "New client connected",
/// "Client X disconnected." after a v5 DISCONNECT 0x04 too, and none at all
/// with `connection_messages false`.
#[test]
fn connection_messages_as_mosquitto() {
    let b = BrokerProcess::start("");
    let (c, rc) = connect_as(b.port, ProtocolVersion::V5, "named", Some("carol"));
    assert_eq!(rc, ReasonCode::SUCCESS);
    let line = b.wait_log("as named");
    assert!(line.contains("(p5, c1, k60, u'carol')."), "{line}");
    let mut c = c;
    c.send(&Packet::Disconnect(Disconnect {
        reason: ReasonCode::DISCONNECT_WITH_WILL,
        properties: Properties::default(),
    }));
    b.wait_log("Client named disconnected.");

    let quiet = BrokerProcess::start("connection_messages false\n");
    let c = Client::connect(quiet.port, "silent");
    c.disconnect();
    // A later line proves the earlier ones would have been written by now.
    let mut c2 = Client::connect(quiet.port, "marker");
    c2.ping();
    assert!(
        !quiet.log_text().contains("as silent"),
        "{}",
        quiet.log_text()
    );
    assert!(
        !quiet.log_text().contains("silent disconnected"),
        "{}",
        quiet.log_text()
    );
}

/// `clientid_prefixes` refuses other ids as not authorised (mosquitto's
/// answer); `auto_id_prefix` names assigned ids.
#[test]
fn clientid_prefixes_and_auto_id_prefix() {
    let b = BrokerProcess::start("clientid_prefixes gw-\nauto_id_prefix gw-auto-\n");
    let (_c, rc) = connect_as(b.port, ProtocolVersion::V311, "gw-1", None);
    assert_eq!(rc, ReasonCode::SUCCESS);
    let (_c, rc) = connect_as(b.port, ProtocolVersion::V5, "other", None);
    assert_eq!(rc, ReasonCode::NOT_AUTHORIZED);
    let (_c, rc) = connect_as(b.port, ProtocolVersion::V311, "other", None);
    assert_eq!(rc, ReasonCode::NOT_AUTHORIZED);
    // An assigned id carries the prefix, and so passes clientid_prefixes.
    let (_c, rc) = connect_as(b.port, ProtocolVersion::V5, "", None);
    assert_eq!(rc, ReasonCode::SUCCESS);
    b.wait_log("as gw-auto-");
}

/// `user`: started as root, midge runs as that user once listening (checked
/// in /proc). Skipped when the tests do not run as root.
#[test]
fn user_drops_root_privileges_after_binding() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: privilege drop not testable here");
        return;
    }
    let b = BrokerProcess::start("user nobody\n");
    b.wait_log("Running as user nobody.");
    let status = std::fs::read_to_string(format!("/proc/{}/status", b.pid())).expect("status");
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).expect("Uid");
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == "65534"),
        "{uid_line}"
    );
    // Still serving.
    let c = Client::connect(b.port, "after-drop");
    c.disconnect();
}

/// A log destination that stops taking lines must not stop the broker: here
/// midge's stderr is a pipe nobody reads. Before, once the pipe's 64 KiB were
/// full the single thread blocked in write(2) and every client timed out; now
/// lines are dropped and counted, and the broker keeps serving.
#[test]
fn a_stuck_log_pipe_never_stalls_the_broker() {
    let port = free_port();
    let dir = temp_dir("compat-stuck-log");
    let conf = dir.join("m.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\nlog_type all\n"),
    )
    .expect("write");
    let mut child = Command::new(midge_bin())
        .args(["-c", &conf.display().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped()) // held, never read
        .env_remove("RUST_LOG")
        .spawn()
        .expect("spawn");
    // Up when it accepts a connection (polled with a deadline).
    let deadline = std::time::Instant::now() + TIMEOUT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "midge did not start");
        std::thread::yield_now();
    }
    // Each cycle logs three lines of ~150 bytes: 2,000 cycles are ~1 MB, far
    // past the pipe's buffer. Client::connect fails after 5 s without CONNACK.
    let long = "x".repeat(100);
    for i in 0..2000 {
        let c = Client::connect(port, &format!("flood-{i:05}-{long}"));
        c.disconnect();
    }
    let mut c = Client::connect(port, "still-here");
    c.ping();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

fn connect_with_will(port: u16, version: ProtocolVersion, id: &str, payload: &[u8]) -> ReasonCode {
    let mut c = Client::open(port, version);
    c.send(&Packet::Connect(Box::new(Connect {
        version,
        clean_start: true,
        keep_alive: 60,
        properties: Properties::default(),
        client_id: leak_str(id),
        will: Some(midge::protocol::Will {
            topic: "wills/x",
            payload: leak_bytes(payload),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Properties::default(),
        }),
        username: None,
        password: None,
    })));
    match c.recv() {
        Packet::ConnAck(a) => a.reason,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// A will payload over `message_size_limit` is refused at CONNECT, as
/// mosquitto does: v5 0x95, 3.1.1 CONNACK 5. Before, it was accepted.
#[test]
fn will_payload_over_message_size_limit_is_refused() {
    let b = BrokerProcess::start("message_size_limit 100\n");
    assert_eq!(
        connect_with_will(b.port, ProtocolVersion::V5, "w5", &[1; 101]),
        ReasonCode::PACKET_TOO_LARGE
    );
    assert_eq!(
        connect_with_will(b.port, ProtocolVersion::V311, "w3", &[1; 101]),
        ReasonCode::NOT_AUTHORIZED
    );
    assert_eq!(
        connect_with_will(b.port, ProtocolVersion::V5, "ok", &[1; 100]),
        ReasonCode::SUCCESS
    );
}

/// mosquitto accepts 200 `/` separators (201 levels) and no more; so does
/// midge's default now (before: 200 levels).
#[test]
fn default_topic_depth_is_mosquittos() {
    let b = BrokerProcess::start("");
    let mut c = Client::connect_v(b.port, ProtocolVersion::V5, "deep");
    let deep = vec!["a"; 201].join("/");
    assert_eq!(
        c.subscribe(&deep, QoS::AtMostOnce),
        vec![ReasonCode::GRANTED_QOS_0]
    );
    let deeper = vec!["a"; 202].join("/");
    assert_eq!(
        c.subscribe(&deeper, QoS::AtMostOnce),
        vec![ReasonCode::TOPIC_FILTER_INVALID]
    );
}

/// Local-only mode listens on `::1` as well as 127.0.0.1, as mosquitto
/// (`localhost` may resolve to either).
#[test]
fn local_only_mode_listens_on_both_loopbacks() {
    let port = free_port();
    let b = BrokerProcess::start_with_args(port, &["-p", &port.to_string()]);
    // The ::1 listener is opened just after 127.0.0.1: wait for its line.
    let line = b.wait_log("[::1]");
    if line.contains("Not listening") {
        // A host without IPv6 loopback: midge warned and kept 127.0.0.1.
        return;
    }
    assert!(
        line.contains(&format!("Opening listen socket on [::1]:{port}.")),
        "{line}"
    );
    let stream = std::net::TcpStream::connect(("::1", port)).expect("connect to [::1]");
    let mut c = Client::from_stream(stream, ProtocolVersion::V311);
    c.send_connect(&ConnectOptions::new(ProtocolVersion::V311, "via-v6"));
    assert!(matches!(c.recv(), Packet::ConnAck(a) if a.reason == ReasonCode::SUCCESS));
}

/// Control characters in a client id, user name and topic are accepted (the
/// specification's SHOULD NOT is for senders; a receiver MAY refuse) and
/// escaped in log lines, so they cannot forge lines.
#[test]
fn control_characters_are_accepted_and_escaped_in_logs() {
    let b = BrokerProcess::start("");
    let (mut c, rc) = connect_as(
        b.port,
        ProtocolVersion::V311,
        "dev\u{1}ice\u{7f}",
        Some("us\ner"),
    );
    assert_eq!(rc, ReasonCode::SUCCESS);
    c.subscribe("odd/\u{9}tab", QoS::AtMostOnce);
    c.publish("odd/\u{9}tab", b"x", QoS::AtMostOnce, false, 0);
    assert_eq!(c.recv_publish().topic, "odd/\u{9}tab");
    let line = b.wait_log("as dev");
    assert!(
        line.contains("dev\\u{1}ice\\u{7f}") && line.contains("u'us\\u{a}er'"),
        "{line}"
    );
}
