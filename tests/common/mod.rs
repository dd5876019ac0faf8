//! Shared helpers for the black-box tests: start the real `midge` binary on a free
//! loopback port, and talk to it over TCP with the project's own codec.
//!
//! Every wait is a read with a timeout, never a sleep: a test that hangs fails
//! with a message after [`TIMEOUT`].
#![allow(dead_code)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod js;
pub mod mosquitto;
pub mod pki;

use midge::protocol::{
    decode, encode, Connect, DecodeLimits, Decoded, Disconnect, Packet, Properties,
    ProtocolVersion, PubResp, Publish, QoS, ReasonCode, Subscribe, SubscriptionOptions,
    Unsubscribe, Will,
};

/// How long any single wait may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// A running broker process, killed when dropped.
pub struct BrokerProcess {
    child: Option<Child>,
    /// The loopback port it listens on.
    pub port: u16,
    /// Every log line the broker has printed so far.
    log: Arc<Mutex<Vec<String>>>,
    log_rx: Receiver<String>,
    /// Directory holding the config file (removed on drop).
    pub dir: PathBuf,
}

/// A port that was free a moment ago. Test processes run in parallel, and the
/// kernel hands a just-released ephemeral port out again, so candidates are
/// spread by process id and a counter over 20000-59999 (outside the ephemeral
/// range, where client sockets cannot take them) and checked by binding.
pub fn free_port() -> u16 {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    loop {
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut x = u64::from(std::process::id()) << 20 ^ u64::from(n).wrapping_mul(0x9E37_79B9);
        x ^= x >> 17;
        x = x.wrapping_mul(0xED5A_D4BB_AC4C_1B51);
        x ^= x >> 29;
        let port = 20_000 + (x % 40_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The broker binary under test: this build's, or `MIDGE_TEST_BIN` (to run a
/// test against an older release and see it fail there).
pub fn midge_bin() -> PathBuf {
    std::env::var_os("MIDGE_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_midge")))
}

/// A `kB` field of /proc/PID/status (`VmRSS:`, `VmHWM:`).
pub fn proc_status_kb(pid: u32, field: &str) -> u64 {
    midge::procfs::status_kb(pid, field).unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// The ports of the `listener PORT ...` lines of a config text.
fn listener_ports(config: &str) -> impl Iterator<Item = u16> + '_ {
    config.lines().filter_map(|l| {
        let mut words = l.split_whitespace();
        match (words.next(), words.next()) {
            (Some("listener"), Some(p)) => p.parse().ok(),
            _ => None,
        }
    })
}

/// Directories made by [`temp_dir`], removed when the test process exits
/// (they may hold private keys; a static one outlives every test).
static CREATED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

extern "C" fn remove_temp_dirs() {
    if let Ok(dirs) = CREATED.lock() {
        for d in dirs.iter() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// A fresh, unique temporary directory, removed at the latest when the test
/// process exits.
pub fn temp_dir(tag: &str) -> PathBuf {
    static HOOK: std::sync::Once = std::sync::Once::new();
    // SAFETY: registers a plain extern "C" function with no arguments.
    HOOK.call_once(|| unsafe {
        libc::atexit(remove_temp_dirs);
    });
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("midge-test-{}-{}-{}", tag, std::process::id(), n));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    if let Ok(mut created) = CREATED.lock() {
        created.push(dir.clone());
    }
    dir
}

impl BrokerProcess {
    /// Start midge with a config made of a `listener PORT 127.0.0.1` line plus `extra`.
    /// Retried on a fresh port if another test took the chosen one meanwhile.
    pub fn start(extra: &str) -> BrokerProcess {
        for _ in 0..5 {
            let port = free_port();
            // mosquitto 2 semantics: a configured listener refuses anonymous
            // clients unless told otherwise; `extra` may say otherwise again.
            let config = format!("listener {port} 127.0.0.1\nallow_anonymous true\n{extra}\n");
            let dir = temp_dir("broker");
            let conf_path = dir.join("midge.conf");
            std::fs::write(&conf_path, config).expect("write config");
            let mut cmd = Command::new(midge_bin());
            cmd.arg("-c").arg(&conf_path).arg("-v");
            match Self::try_spawn(cmd, port, dir) {
                Ok(b) => return b,
                Err(log) if log.contains("cannot listen") => continue,
                Err(log) => panic!("midge exited early; log:\n{log}"),
            }
        }
        panic!("no free port after 5 attempts");
    }

    /// Start midge with exactly this config text; `port` must be one it listens on.
    /// Anonymous clients are allowed unless the config mentions `allow_anonymous`.
    pub fn start_with_config(port: u16, config: &str, args: &[&str]) -> BrokerProcess {
        Self::start_binary(&midge_bin(), port, config, args)
    }

    /// [`BrokerProcess::start_with_config`] with another midge binary (e.g. the
    /// old release, for a before/after figure).
    pub fn start_binary(bin: &Path, port: u16, config: &str, args: &[&str]) -> BrokerProcess {
        let dir = temp_dir("broker");
        let conf_path = dir.join("midge.conf");
        let config = if config.contains("allow_anonymous") {
            config.to_string()
        } else {
            format!("allow_anonymous true\n{config}")
        };
        std::fs::write(&conf_path, &config).expect("write config");
        let mut cmd = Command::new(bin);
        cmd.arg("-c").arg(&conf_path).arg("-v").args(args);
        let b = Self::spawn(cmd, port, dir);
        // Listeners are opened one after another: a test that talks to a second
        // listener must not race its bind.
        for other in listener_ports(&config).filter(|p| *p != port) {
            b.wait_listening(other);
        }
        b
    }

    /// Start midge with command-line arguments only (no config file).
    pub fn start_with_args(port: u16, args: &[&str]) -> BrokerProcess {
        let dir = temp_dir("broker");
        let mut cmd = Command::new(midge_bin());
        cmd.args(args);
        Self::spawn(cmd, port, dir)
    }

    fn spawn(cmd: Command, port: u16, dir: PathBuf) -> BrokerProcess {
        match Self::try_spawn(cmd, port, dir) {
            Ok(b) => b,
            Err(log) => panic!("midge exited early; log:\n{log}"),
        }
    }

    /// Start the process and wait until it listens; Err(log) if it exited.
    fn try_spawn(mut cmd: Command, port: u16, dir: PathBuf) -> Result<BrokerProcess, String> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.env_remove("RUST_LOG");
        let mut child = cmd.spawn().expect("spawn midge binary");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = channel();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = Arc::clone(&log);
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if std::env::var_os("MIDGE_TEST_LOG").is_some() {
                        eprintln!("[midge] {line}");
                    }
                    log.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        let mut broker = BrokerProcess {
            child: Some(child),
            port,
            log,
            log_rx: rx,
            dir,
        };
        broker.wait_ready()?;
        Ok(broker)
    }

    /// Block until the broker logs that it listens on our port (a read with a
    /// timeout on its log, not a sleep, and no probe connection: a connect could
    /// reach another test's broker that happens to hold the port).
    fn wait_ready(&mut self) -> Result<(), String> {
        let needle = format!("Opening listen socket on 127.0.0.1:{}.", self.port);
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if self.log.lock().unwrap().iter().any(|l| l.contains(&needle)) {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                // Let the reader threads collect the last lines.
                while self.log_rx.recv_timeout(Duration::from_millis(100)).is_ok() {}
                return Err(format!("{status}\n{}", self.log_text()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "midge did not start listening; log:\n{}",
                self.log_text()
            );
            let _ = self
                .log_rx
                .recv_timeout(left.min(Duration::from_millis(50)));
        }
    }

    /// Everything logged so far, one string.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Wait until a log line containing `needle` appears; returns it.
    pub fn wait_log(&self, needle: &str) -> String {
        self.wait_log_where(&format!("{needle:?}"), |l| l.contains(needle))
    }

    /// Wait (up to [`TIMEOUT`]) for a log line that `matches`; `what` names it
    /// in the failure message.
    pub fn wait_log_where(&self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        self.wait_log_within(TIMEOUT, what, matches)
    }

    /// [`BrokerProcess::wait_log_where`] for up to `within` (a browser's
    /// start-up takes longer than [`TIMEOUT`] on a loaded machine).
    pub fn wait_log_within(
        &self,
        within: Duration,
        what: &str,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        if let Some(l) = self.log.lock().unwrap().iter().find(|l| matches(l)) {
            return l.clone();
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log_rx.recv_timeout(left) {
                Ok(line) if matches(&line) => return line,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    panic!("no log line containing {what}; log:\n{}", self.log_text())
                }
            }
        }
    }

    /// Wait until the broker has opened its listen socket on `port` (any
    /// address, plain or TLS).
    pub fn wait_listening(&self, port: u16) {
        let tail = [format!(":{port}."), format!(":{port} (")];
        self.wait_log_where(&format!("a listen socket on port {port}"), |l| {
            l.contains("Opening listen socket on ") && tail.iter().any(|t| l.contains(t.as_str()))
        });
    }

    /// Round trip through the broker's loop: a fresh client connects and
    /// disconnects, so everything the broker was doing before has been done
    /// (and its records committed).
    pub fn ping_log(&self) {
        let mut c = Client::connect(self.port, "ping-log");
        c.ping();
        c.disconnect();
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Resident set size now, in kB (`VmRSS` of /proc/PID/status).
    pub fn rss_kb(&self) -> u64 {
        proc_status_kb(self.pid(), "VmRSS:")
    }

    /// Peak resident set size since start, in kB (`VmHWM`): catches a spike
    /// that was freed again before the test looked.
    pub fn peak_rss_kb(&self) -> u64 {
        proc_status_kb(self.pid(), "VmHWM:")
    }

    /// CPU time the broker has used so far (user + system, from
    /// /proc/PID/stat), in seconds: a work bound that, unlike a wall-clock
    /// one, does not move when other processes load the machine.
    pub fn cpu_seconds(&self) -> f64 {
        midge::procfs::cpu_seconds(self.pid()).unwrap_or(0.0)
    }

    /// True while the process runs.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Send a signal to the broker.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status();
        assert!(matches!(status, Ok(s) if s.success()), "kill -{sig} failed");
    }

    /// Wait for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + TIMEOUT;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "midge did not exit; log:\n{}",
                self.log_text()
            );
            // The process has no event we can block on portably; poll its status.
            let _ = self.log_rx.recv_timeout(Duration::from_millis(20));
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Options for [`Client::connect_with`].
#[derive(Clone)]
pub struct ConnectOptions {
    /// Protocol version.
    pub version: ProtocolVersion,
    /// Client identifier.
    pub client_id: String,
    /// Clean session / clean start.
    pub clean: bool,
    /// Keep alive, seconds.
    pub keep_alive: u16,
    /// Will: topic, payload, qos, retain.
    pub will: Option<(String, Vec<u8>, QoS, bool)>,
    /// v5 session expiry interval.
    pub session_expiry: Option<u32>,
}

impl ConnectOptions {
    /// Defaults: v3.1.1, clean, keep alive 60.
    pub fn new(version: ProtocolVersion, client_id: &str) -> Self {
        ConnectOptions {
            version,
            client_id: client_id.to_string(),
            clean: true,
            keep_alive: 60,
            will: None,
            session_expiry: None,
        }
    }
}

/// A raw MQTT client over a blocking TcpStream with read timeouts.
pub struct Client {
    stream: TcpStream,
    /// Version used to encode and decode.
    pub version: ProtocolVersion,
    buf: Vec<u8>,
}

impl Client {
    /// Open a TCP connection without sending anything.
    pub fn open(port: u16, version: ProtocolVersion) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to midge");
        stream.set_read_timeout(Some(TIMEOUT)).expect("set timeout");
        stream.set_nodelay(true).expect("nodelay");
        Client {
            stream,
            version,
            buf: Vec::new(),
        }
    }

    /// Wrap a socket that already completed CONNECT (from [`Client::into_stream`]).
    pub fn from_stream(stream: TcpStream, version: ProtocolVersion) -> Client {
        stream.set_read_timeout(Some(TIMEOUT)).expect("set timeout");
        Client {
            stream,
            version,
            buf: Vec::new(),
        }
    }

    /// Connect with v3.1.1 defaults and expect a successful CONNACK.
    pub fn connect(port: u16, client_id: &str) -> Client {
        Self::connect_v(port, ProtocolVersion::V311, client_id)
    }

    /// Connect with the given version and expect success.
    pub fn connect_v(port: u16, version: ProtocolVersion, client_id: &str) -> Client {
        let (c, ack) = Self::connect_with(port, &ConnectOptions::new(version, client_id));
        assert_eq!(ack.0, ReasonCode::SUCCESS, "CONNACK for {client_id}");
        c
    }

    /// Connect and return the client and (reason, session present).
    pub fn connect_with(port: u16, o: &ConnectOptions) -> (Client, (ReasonCode, bool)) {
        let mut c = Client::open(port, o.version);
        c.send_connect(o);
        match c.recv() {
            Packet::ConnAck(ack) => {
                let r = (ack.reason, ack.session_present);
                (c, r)
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Send a CONNECT built from `o`.
    pub fn send_connect(&mut self, o: &ConnectOptions) {
        let properties = Properties {
            session_expiry_interval: o.session_expiry,
            ..Properties::default()
        };
        let will = o.will.as_ref().map(|(t, p, q, r)| Will {
            topic: leak_str(t),
            payload: leak_bytes(p),
            qos: *q,
            retain: *r,
            properties: Properties::default(),
        });
        let connect = Connect {
            version: o.version,
            clean_start: o.clean,
            keep_alive: o.keep_alive,
            properties,
            client_id: leak_str(&o.client_id),
            will,
            username: None,
            password: None,
        };
        self.send(&Packet::Connect(Box::new(connect)));
    }

    /// Encode and send one packet.
    pub fn send(&mut self, packet: &Packet<'_>) {
        let mut out = Vec::new();
        encode(packet, self.version, &mut out).expect("encode");
        self.send_raw(&out);
    }

    /// Send raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to midge");
    }

    /// Receive one packet, failing the test after [`TIMEOUT`]. The packet borrows
    /// from a leaked buffer: fine for a short-lived test process.
    pub fn recv(&mut self) -> Packet<'static> {
        match self.try_recv(TIMEOUT) {
            Some(Ok(p)) => p,
            Some(Err(e)) => panic!("connection ended while waiting for a packet: {e}"),
            None => panic!("no packet within {TIMEOUT:?}"),
        }
    }

    /// Receive one packet within `timeout`: None on timeout, Some(Err) on close.
    pub fn try_recv(&mut self, timeout: Duration) -> Option<Result<Packet<'static>, String>> {
        let deadline = Instant::now() + timeout;
        loop {
            let limits = DecodeLimits::new(self.version, 1 << 28);
            match decode(&self.buf, &limits) {
                Ok(Decoded::Packet(_, used)) => {
                    let bytes: Vec<u8> = self.buf.drain(..used).collect();
                    let leaked: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                    match decode(leaked, &limits) {
                        Ok(Decoded::Packet(p, _)) => return Some(Ok(p)),
                        other => panic!("re-decode failed: {other:?}"),
                    }
                }
                Ok(Decoded::NeedMore(_)) => {}
                Err(e) => panic!("broker sent an undecodable packet: {e}"),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream.set_read_timeout(Some(left)).expect("timeout");
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Some(Err("closed by broker".into())),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None
                }
                // A signal landed in the read (EINTR): read again.
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Some(Err(e.to_string())),
            }
        }
    }

    /// Assert that nothing arrives within `wait` (used sparingly: only to show absence).
    pub fn expect_nothing(&mut self, wait: Duration) {
        if let Some(r) = self.try_recv(wait) {
            panic!("expected nothing, got {r:?}");
        }
    }

    /// Assert that the broker closes the connection (EOF or reset), possibly after a
    /// DISCONNECT, which is returned.
    pub fn expect_closed(&mut self) -> Option<Disconnect<'static>> {
        let mut disconnect = None;
        loop {
            match self.try_recv(TIMEOUT) {
                Some(Ok(Packet::Disconnect(d))) => disconnect = Some(d),
                Some(Ok(other)) => panic!("expected close, got {other:?}"),
                Some(Err(_)) => return disconnect,
                None => panic!("connection not closed within {TIMEOUT:?}"),
            }
        }
    }

    /// Subscribe to one filter and return the SUBACK reason codes.
    pub fn subscribe(&mut self, filter: &str, qos: QoS) -> Vec<ReasonCode> {
        self.subscribe_opts(
            filter,
            SubscriptionOptions {
                qos,
                ..Default::default()
            },
            1,
        )
    }

    /// Subscribe with full options and a packet id.
    pub fn subscribe_opts(
        &mut self,
        filter: &str,
        options: SubscriptionOptions,
        pid: u16,
    ) -> Vec<ReasonCode> {
        let sub = Subscribe {
            packet_id: pid,
            properties: Properties::default(),
            filters: vec![(leak_str(filter), options)],
        };
        self.send(&Packet::Subscribe(sub));
        match self.recv() {
            Packet::SubAck(ack) => {
                assert_eq!(ack.packet_id, pid, "SUBACK packet id");
                ack.reasons
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Unsubscribe from one filter and wait for UNSUBACK.
    pub fn unsubscribe(&mut self, filter: &str, pid: u16) {
        let u = Unsubscribe {
            packet_id: pid,
            properties: Properties::default(),
            filters: vec![leak_str(filter)],
        };
        self.send(&Packet::Unsubscribe(u));
        match self.recv() {
            Packet::UnsubAck(ack) => assert_eq!(ack.packet_id, pid),
            other => panic!("expected UNSUBACK, got {other:?}"),
        }
    }

    /// Publish and complete the QoS flow as a well-behaved client.
    pub fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS, retain: bool, pid: u16) {
        self.send(&Packet::Publish(publish(topic, payload, qos, retain, pid)));
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => match self.recv() {
                Packet::PubAck(a) => assert_eq!(a.packet_id, pid),
                other => panic!("expected PUBACK, got {other:?}"),
            },
            QoS::ExactlyOnce => {
                match self.recv() {
                    Packet::PubRec(a) => assert_eq!(a.packet_id, pid),
                    other => panic!("expected PUBREC, got {other:?}"),
                }
                self.send(&Packet::PubRel(PubResp::success(pid)));
                match self.recv() {
                    Packet::PubComp(a) => assert_eq!(a.packet_id, pid),
                    other => panic!("expected PUBCOMP, got {other:?}"),
                }
            }
        }
    }

    /// Receive a PUBLISH and acknowledge it as a well-behaved client.
    pub fn recv_publish(&mut self) -> Publish<'static> {
        match self.recv() {
            Packet::Publish(p) => {
                self.ack(&p);
                p
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Acknowledge a received PUBLISH (PUBACK, or PUBREC/PUBREL/PUBCOMP).
    pub fn ack(&mut self, p: &Publish<'_>) {
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send(&Packet::PubAck(PubResp::success(p.packet_id))),
            QoS::ExactlyOnce => {
                self.send(&Packet::PubRec(PubResp::success(p.packet_id)));
                match self.recv() {
                    Packet::PubRel(r) => assert_eq!(r.packet_id, p.packet_id),
                    other => panic!("expected PUBREL, got {other:?}"),
                }
                self.send(&Packet::PubComp(PubResp::success(p.packet_id)));
            }
        }
    }

    /// A round trip (PINGREQ/PINGRESP): everything the broker sent before it has arrived.
    pub fn ping(&mut self) {
        self.send(&Packet::PingReq);
        match self.recv() {
            Packet::PingResp => {}
            other => panic!("expected PINGRESP, got {other:?}"),
        }
    }

    /// Send DISCONNECT and close.
    pub fn disconnect(mut self) {
        self.send(&Packet::Disconnect(Disconnect::with_reason(
            ReasonCode::NORMAL_DISCONNECTION,
        )));
        let _ = self.stream.shutdown(Shutdown::Write);
        // Wait for the broker to close its side so the DISCONNECT is processed
        // before the test goes on.
        let _ = self.try_recv(TIMEOUT);
    }

    /// The socket, for tests that read it their own way (nothing may be buffered).
    pub fn into_stream(self) -> TcpStream {
        assert!(self.buf.is_empty(), "bytes already buffered");
        self.stream
    }

    /// Half-close: the broker sees end of stream, replies can still arrive.
    pub fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Close the socket without DISCONNECT (an abnormal close: wills fire).
    pub fn drop_connection(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// A PUBLISH packet value.
pub fn publish<'a>(
    topic: &'a str,
    payload: &'a [u8],
    qos: QoS,
    retain: bool,
    pid: u16,
) -> Publish<'a> {
    Publish {
        dup: false,
        qos,
        retain,
        topic,
        packet_id: if qos == QoS::AtMostOnce { 0 } else { pid },
        properties: Properties::default(),
        payload,
    }
}

/// Leak a string for a `'static` packet field (tests only).
pub fn leak_str(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

/// Leak bytes for a `'static` packet field (tests only).
pub fn leak_bytes(b: &[u8]) -> &'static [u8] {
    Box::leak(b.to_vec().into_boxed_slice())
}

/// All three QoS levels.
pub const ALL_QOS: [QoS; 3] = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];

/// All three protocol versions.
pub const ALL_VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V31,
    ProtocolVersion::V311,
    ProtocolVersion::V5,
];
