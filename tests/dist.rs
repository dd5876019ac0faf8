//! The static binaries of `make dist`, run where they will run: the aarch64
//! ones under `qemu-aarch64` (user-mode emulation, on an x86_64 host), the
//! armv7 ones (built only when asked for) under `qemu-arm`, the x86_64 ones
//! natively. Each gets the same smoke, over loopback with the
//! project's test client: connect, QoS 0/1/2 publish and subscribe, a retained
//! message, a password file (PBKDF2), a WebSocket upgrade (SHA-1), a TLS
//! listener (TLS builds) or the "built without TLS" refusal (no-TLS builds),
//! and persistence across `kill -9`.
//!
//! The binaries come from `scripts/dist.sh` (`make dist`): this test does not
//! build them. With `MIDGE_DIST_SMOKE=1` (`make dist-test`, CI) a missing or
//! stale binary among those `DIST_TARGETS` and `DIST_VARIANTS` name (the
//! script's defaults: all four), or a missing qemu, fails the test; otherwise
//! (plain `make test`) such a case is reported and skipped.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use common::*;
use midge::protocol::{Connect, Packet, Properties, ProtocolVersion, QoS, ReasonCode};

/// Strict mode for this binary: `MIDGE_DIST_SMOKE=1` and the dist build
/// was asked for it (same defaults as scripts/dist.sh).
fn strict(target: &str, tls: bool) -> bool {
    let env = |k: &str, default: &str| std::env::var(k).unwrap_or_else(|_| default.to_string());
    let targets = env(
        "DIST_TARGETS",
        "x86_64-unknown-linux-musl aarch64-unknown-linux-musl",
    );
    let variants = env("DIST_VARIANTS", "tls notls");
    let variant = if tls { "tls" } else { "notls" };
    std::env::var_os("MIDGE_DIST_SMOKE").is_some_and(|v| v == "1")
        && targets.split_whitespace().any(|t| t == target)
        && variants.split_whitespace().any(|v| v == variant)
}

/// Skip (report) or, in strict mode, fail.
fn unavailable(strict: bool, why: &str) {
    assert!(!strict, "MIDGE_DIST_SMOKE=1: {why}");
    eprintln!("dist smoke skipped: {why}");
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where `scripts/dist.sh` leaves the binary of `target` (`tls`: with TLS).
fn dist_binary(target: &str, tls: bool) -> PathBuf {
    let base = if tls {
        root().join("target")
    } else {
        root().join("target/dist-notls")
    };
    base.join(target).join("release/midge")
}

/// Newest modification time among the sources the binary is built from.
fn newest_source() -> SystemTime {
    fn walk(p: &Path, newest: &mut SystemTime) {
        let Ok(meta) = std::fs::metadata(p) else {
            return;
        };
        if meta.is_dir() {
            for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
                walk(&e.path(), newest);
            }
        } else if let Ok(m) = meta.modified() {
            *newest = (*newest).max(m);
        }
    }
    let mut newest = SystemTime::UNIX_EPOCH;
    for p in ["src", "Cargo.toml", "Cargo.lock"] {
        walk(&root().join(p), &mut newest);
    }
    newest
}

/// The binary if it is there and newer than every source, else why not.
fn fresh_binary(target: &str, tls: bool) -> Result<PathBuf, String> {
    let bin = dist_binary(target, tls);
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .map_err(|_| format!("{} missing (run `make dist`)", bin.display()))?;
    if built < newest_source() {
        return Err(format!(
            "{} is older than the sources (run `make dist`)",
            bin.display()
        ));
    }
    Ok(bin)
}

/// A program that runs `bin` with its arguments: `bin` itself on a host of its
/// architecture, else a shell script that execs it under qemu (the script's
/// process becomes qemu's, so the harness's pid and signals reach it).
fn runner(bin: &Path, arch: &str) -> Result<PathBuf, String> {
    if std::env::consts::ARCH == arch {
        return Ok(bin.to_path_buf());
    }
    let qemu = [format!("qemu-{arch}"), format!("qemu-{arch}-static")]
        .into_iter()
        .find(|q| {
            Command::new(q)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .ok_or_else(|| format!("no qemu-{arch} (Debian: apt-get install qemu-user)"))?;
    let dir = temp_dir("dist-runner");
    let script = dir.join(format!("midge-{arch}"));
    std::fs::write(
        &script,
        format!("#!/bin/sh\nexec {qemu} '{}' \"$@\"\n", bin.display()),
    )
    .expect("write runner");
    let status = Command::new("chmod")
        .arg("0755")
        .arg(&script)
        .status()
        .expect("chmod");
    assert!(status.success());
    Ok(script)
}

/// The ELF header says what `file` would: static (no PT_INTERP program header)
/// and for the expected machine.
fn assert_static_elf(bin: &Path, machine: u16) {
    let elf = std::fs::read(bin).expect("read binary");
    assert_eq!(&elf[..4], b"\x7fELF", "{}", bin.display());
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]);
    let word_at = |o: usize, n: usize| {
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&elf[o..o + n]);
        u64::from_le_bytes(b) as usize
    };
    assert_eq!(u16_at(18), machine, "e_machine of {}", bin.display());
    // e_phoff, e_phentsize, e_phnum: after the 4- or 8-byte entry point.
    let (phoff, phentsize, phnum) = match elf[4] {
        1 => (
            word_at(28, 4),
            usize::from(u16_at(42)),
            usize::from(u16_at(44)),
        ),
        2 => (
            word_at(32, 8),
            usize::from(u16_at(54)),
            usize::from(u16_at(56)),
        ),
        c => panic!("ELF class {c} of {}", bin.display()),
    };
    for i in 0..phnum {
        let p_type = u32::from_le_bytes(
            elf[phoff + i * phentsize..phoff + i * phentsize + 4]
                .try_into()
                .expect("4 bytes"),
        );
        // PT_INTERP = 3: a dynamic loader would be needed.
        assert_ne!(
            p_type,
            3,
            "{} asks for a program interpreter",
            bin.display()
        );
        // PT_DYNAMIC without PT_INTERP is a static PIE: fine.
    }
}

/// A self-signed certificate for 127.0.0.1 (it is its own CA for the client).
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (crt, key) = (dir.join("server.crt"), dir.join("server.key"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=midge dist smoke"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (crt, key)
}

fn persistent(id: &str) -> ConnectOptions {
    let mut o = ConnectOptions::new(ProtocolVersion::V311, id);
    o.clean = false;
    o
}

/// Ports and files of one smoke run; the broker is restarted on new ports
/// with the same persistence directory.
struct Setup {
    run: PathBuf,
    state: PathBuf,
    passwd: PathBuf,
    pki: Option<(PathBuf, PathBuf)>,
}

struct Ports {
    plain: u16,
    users: u16,
    ws: u16,
    tls: u16,
}

impl Setup {
    fn config(&self, p: &Ports) -> String {
        let mut c = format!(
            "per_listener_settings true\npersistence true\npersistence_location {}\n\
             listener {} 127.0.0.1\nallow_anonymous true\n\
             listener {} 127.0.0.1\nallow_anonymous false\npassword_file {}\n\
             listener {} 127.0.0.1\nprotocol websockets\nallow_anonymous true\n",
            self.state.display(),
            p.plain,
            p.users,
            self.passwd.display(),
            p.ws,
        );
        if let Some((crt, key)) = &self.pki {
            c.push_str(&format!(
                "listener {} 127.0.0.1\nallow_anonymous true\ncertfile {}\nkeyfile {}\n",
                p.tls,
                crt.display(),
                key.display()
            ));
        }
        c
    }

    fn start(&self) -> (BrokerProcess, Ports) {
        let p = Ports {
            plain: free_port(),
            users: free_port(),
            ws: free_port(),
            tls: free_port(),
        };
        let b = BrokerProcess::start_binary(&self.run, p.plain, &self.config(&p), &[]);
        (b, p)
    }
}

/// The smoke, against the binary run by `run` (`tls`: built with TLS).
fn smoke(run: PathBuf, tls: bool) {
    let dir = temp_dir("dist-smoke");
    let state = dir.join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    // The password file, made by the binary under test (PBKDF2-SHA512, $7$).
    let passwd = dir.join("passwd");
    let out = Command::new(&run)
        .args(["passwd", "-b", "-c"])
        .arg(&passwd)
        .args(["gateway", "s3cret"])
        .output()
        .expect("midge passwd");
    assert!(
        out.status.success(),
        "midge passwd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&passwd).expect("passwd file");
    assert!(text.starts_with("gateway:$7$101$"), "{text}");

    if !tls {
        // A TLS directive stops the no-TLS build at load, naming file and line.
        let conf = dir.join("tls.conf");
        std::fs::write(&conf, "listener 8883\ncertfile /c.pem\nkeyfile /k.pem\n").expect("conf");
        let out = Command::new(&run)
            .arg("--test-config")
            .arg("-c")
            .arg(&conf)
            .output()
            .expect("midge --test-config");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(
            err.contains(&format!(
                "{}:2: certfile: midge was built without TLS",
                conf.display()
            )),
            "{err}"
        );
    }

    let setup = Setup {
        run,
        state,
        passwd,
        pki: tls.then(|| certificate(&dir)),
    };
    let (mut b, ports) = setup.start();

    // QoS 0, 1 and 2, each delivered at the QoS it was sent with.
    let mut sub = Client::connect(ports.plain, "gw-sub");
    assert_eq!(
        sub.subscribe("gw/#", QoS::ExactlyOnce),
        vec![ReasonCode::GRANTED_QOS_2]
    );
    let mut publisher = Client::connect(ports.plain, "gw-pub");
    for (pid, qos) in [
        (1, QoS::AtMostOnce),
        (2, QoS::AtLeastOnce),
        (3, QoS::ExactlyOnce),
    ] {
        let payload = format!("reading {pid}");
        publisher.publish("gw/temp", payload.as_bytes(), qos, false, pid);
        let got = sub.recv_publish();
        assert_eq!((got.topic, got.qos), ("gw/temp", qos));
        assert_eq!(got.payload, payload.as_bytes());
    }

    // A retained message reaches a later subscriber, flagged retained.
    publisher.publish("gw/state", b"online", QoS::AtLeastOnce, true, 4);
    assert_eq!(sub.recv_publish().payload, b"online");
    let mut late = Client::connect(ports.plain, "gw-late");
    late.subscribe("gw/state", QoS::AtLeastOnce);
    let r = late.recv_publish();
    assert!(r.retain, "retained flag");
    assert_eq!(r.payload, b"online");

    // The password listener: the right password in, a wrong one out.
    for (password, want) in [
        (&b"s3cret"[..], ReasonCode::SUCCESS),
        (&b"wrong"[..], ReasonCode::BAD_USER_NAME_OR_PASSWORD),
    ] {
        let mut c = Client::open(ports.users, ProtocolVersion::V311);
        c.send(&Packet::Connect(Box::new(Connect {
            version: ProtocolVersion::V311,
            clean_start: true,
            keep_alive: 60,
            properties: Properties::default(),
            client_id: "gw-user",
            will: None,
            username: Some("gateway"),
            password: Some(password),
        })));
        match c.recv() {
            Packet::ConnAck(a) => assert_eq!(a.reason, want, "password {password:?}"),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    // The WebSocket upgrade: the accept key is SHA-1 and base64 of the
    // client's key (RFC 6455 section 1.3's example pair).
    let mut ws = TcpStream::connect(("127.0.0.1", ports.ws)).expect("ws connect");
    ws.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    ws.write_all(
        b"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
          Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
    )
    .expect("upgrade request");
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match ws.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    assert!(
        answer.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{answer}"
    );

    // TLS: mosquitto_pub publishes over the TLS listener (QoS 1: it waits for
    // the PUBACK), the plain subscriber gets it.
    if let Some((crt, _)) = &setup.pki {
        let out = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &ports.tls.to_string()])
            .arg("--cafile")
            .arg(crt)
            .args(["-i", "gw-tls", "-t", "gw/tls", "-m", "over tls", "-q", "1"])
            .output()
            .expect("mosquitto_pub");
        assert!(
            out.status.success(),
            "mosquitto_pub over TLS: {}\nlog:\n{}",
            String::from_utf8_lossy(&out.stderr),
            b.log_text()
        );
        let got = sub.recv_publish();
        assert_eq!((got.topic, got.payload), ("gw/tls", &b"over tls"[..]));
    }

    // Persistence across kill -9: an offline persistent session's queued QoS 1
    // message (acknowledged, so on disk: persistence_sync always) and the
    // retained message are there after the restart.
    let (mut keeper, _) = Client::connect_with(ports.plain, &persistent("gw-keeper"));
    keeper.subscribe("gw/cmd", QoS::AtLeastOnce);
    keeper.disconnect();
    publisher.publish("gw/cmd", b"reboot at 3", QoS::AtLeastOnce, false, 5);
    b.signal("KILL");
    b.wait_exit();

    let (b, ports) = setup.start();
    let (mut keeper, (reason, present)) =
        Client::connect_with(ports.plain, &persistent("gw-keeper"));
    assert_eq!(reason, ReasonCode::SUCCESS);
    assert!(
        present,
        "session restored after kill -9; log:\n{}",
        b.log_text()
    );
    assert_eq!(keeper.recv_publish().payload, b"reboot at 3");
    let mut fresh = Client::connect(ports.plain, "gw-fresh");
    fresh.subscribe("gw/state", QoS::AtMostOnce);
    assert_eq!(fresh.recv_publish().payload, b"online");
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Run the smoke on one dist binary, or say why it cannot run here.
fn smoke_target(target: &str, arch: &str, machine: u16, tls: bool) {
    let strict = strict(target, tls);
    let bin = match fresh_binary(target, tls) {
        Ok(b) => b,
        Err(why) => return unavailable(strict, &why),
    };
    assert_static_elf(&bin, machine);
    let run = match runner(&bin, arch) {
        Ok(r) => r,
        Err(why) => return unavailable(strict, &why),
    };
    smoke(run, tls);
}

/// EM_AARCH64, EM_X86_64 and EM_ARM in the ELF header.
const EM_AARCH64: u16 = 183;
const EM_X86_64: u16 = 62;
const EM_ARM: u16 = 40;

#[test]
fn aarch64_static_binary_with_tls_under_qemu() {
    smoke_target("aarch64-unknown-linux-musl", "aarch64", EM_AARCH64, true);
}

#[test]
fn aarch64_static_binary_without_tls_under_qemu() {
    smoke_target("aarch64-unknown-linux-musl", "aarch64", EM_AARCH64, false);
}

#[test]
fn x86_64_static_binary_with_tls() {
    smoke_target("x86_64-unknown-linux-musl", "x86_64", EM_X86_64, true);
}

#[test]
fn x86_64_static_binary_without_tls() {
    smoke_target("x86_64-unknown-linux-musl", "x86_64", EM_X86_64, false);
}

/// 32-bit ARM (`DIST_TARGETS=armv7-unknown-linux-musleabihf make dist`, its
/// standard library built from source) under `qemu-arm`.
#[test]
fn armv7_static_binary_with_tls_under_qemu() {
    smoke_target("armv7-unknown-linux-musleabihf", "arm", EM_ARM, true);
}

#[test]
fn armv7_static_binary_without_tls_under_qemu() {
    smoke_target("armv7-unknown-linux-musleabihf", "arm", EM_ARM, false);
}
