//! Real-world mosquitto configurations (tests/configs/): the one Debian's
//! package installs with its conf.d include, a Home Assistant / Zigbee2MQTT
//! gateway, TLS with client certificates, and bridges with WebSockets. Each is
//! checked with `--test-config`, then started and used.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use midge::protocol::{Connect, Packet, Properties, ProtocolVersion, QoS, ReasonCode};

/// Copy fixture `name` into a fresh directory, `@DIR@`, `@PORT@`, `@PORT2@`,
/// `@PORT3@` substituted. Returns the directory.
fn install(name: &str, ports: [u16; 3]) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/configs")
        .join(name);
    let dir = temp_dir(&format!("real-{name}"));
    let fill = |text: &str| {
        text.replace("@DIR@", &dir.display().to_string())
            .replace("@PORT3@", &ports[2].to_string())
            .replace("@PORT2@", &ports[1].to_string())
            .replace("@PORT@", &ports[0].to_string())
    };
    copy_tree(&src, &dir, &fill);
    dir
}

fn copy_tree(src: &Path, dst: &Path, fill: &dyn Fn(&str) -> String) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for e in std::fs::read_dir(src).expect("fixture dir") {
        let e = e.expect("entry");
        let to = dst.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &to, fill);
        } else {
            let text = std::fs::read_to_string(e.path()).expect("fixture");
            std::fs::write(&to, fill(&text)).expect("write");
        }
    }
}

fn midge(args: &[&str]) -> (i32, String) {
    let out = Command::new(midge_bin())
        .args(args)
        .stdin(Stdio::null())
        .env_remove("RUST_LOG")
        .output()
        .expect("run midge");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn passwd(file: &Path, user: &str, pass: &str) {
    let create = if file.exists() { None } else { Some("-c") };
    let f = file.display().to_string();
    let mut args = vec!["passwd"];
    args.extend(create);
    args.extend(["-b", &f, user, pass]);
    let (code, text) = midge(&args);
    assert_eq!(code, 0, "{text}");
}

fn login(port: u16, id: &str, user: &str, pass: &str) -> Client {
    let mut c = Client::open(port, ProtocolVersion::V311);
    c.send(&Packet::Connect(Box::new(Connect {
        version: ProtocolVersion::V311,
        clean_start: true,
        keep_alive: 60,
        properties: Properties::default(),
        client_id: leak_str(id),
        will: None,
        username: Some(leak_str(user)),
        password: Some(leak_bytes(pass.as_bytes())),
    })));
    match c.recv() {
        Packet::ConnAck(a) => assert_eq!(a.reason, ReasonCode::SUCCESS, "{id}"),
        other => panic!("{other:?}"),
    }
    c
}

fn check_ok(conf: &Path) {
    let (code, text) = midge(&["--test-config", "-c", &conf.display().to_string()]);
    assert_eq!(code, 0, "{}: {text}", conf.display());
}

/// Debian's /etc/mosquitto/mosquitto.conf (pid file, persistence, `log_dest
/// file`, `include_dir conf.d`) with a listener added in conf.d. Before, it
/// stopped at `log_dest file`.
#[test]
fn debian_packaged_config() {
    let port = free_port();
    let dir = install("debian", [port, 0, 0]);
    for d in [
        "run/mosquitto",
        "var/lib/mosquitto",
        "var/log/mosquitto",
        "etc/mosquitto",
    ] {
        std::fs::create_dir_all(dir.join(d)).expect("mkdir");
    }
    // The fixture's files live at the top of the copy; put them where the
    // config names them.
    std::fs::rename(dir.join("conf.d"), dir.join("etc/mosquitto/conf.d")).expect("move conf.d");
    passwd(&dir.join("etc/mosquitto/passwd"), "hass", "pw1");
    let conf = dir.join("mosquitto.conf");
    check_ok(&conf);
    // Plus stdout, where the test harness watches for the listen line: the
    // file keeps getting every line too.
    let text = std::fs::read_to_string(&conf).expect("conf") + "log_dest stdout\n";
    let b = BrokerProcess::start_with_config(port, &text, &[]);
    let mut sub = login(port, "deb-sub", "hass", "pw1");
    sub.subscribe("home/#", QoS::AtLeastOnce);
    let mut publ = login(port, "deb-pub", "hass", "pw1");
    publ.publish("home/temp", b"21", QoS::AtLeastOnce, true, 1);
    assert_eq!(sub.recv_publish().payload, b"21");
    // Lines went to the log file, the pid file and the persistence log exist.
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let log = std::fs::read_to_string(dir.join("var/log/mosquitto/mosquitto.log"))
            .unwrap_or_default();
        if log.contains("as deb-pub") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "log file: {log}");
        std::thread::yield_now();
    }
    assert!(dir.join("run/mosquitto/mosquitto.pid").exists());
    assert!(dir.join("var/lib/mosquitto/midge.db").exists());
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A Home Assistant / Zigbee2MQTT gateway: passwords, an ACL with comments,
/// mosquitto logging directives, a trailing comment on the listener line.
#[test]
fn home_assistant_gateway_config() {
    let port = free_port();
    let dir = install("homeassistant", [port, 0, 0]);
    std::fs::create_dir_all(dir.join("data")).expect("mkdir");
    passwd(&dir.join("passwd"), "homeassistant", "ha-pw");
    passwd(&dir.join("passwd"), "zigbee2mqtt", "z2m-pw");
    let conf = dir.join("mosquitto.conf");
    check_ok(&conf);
    let b =
        BrokerProcess::start_with_config(port, &std::fs::read_to_string(&conf).expect("conf"), &[]);
    let mut ha = login(port, "homeassistant-1", "homeassistant", "ha-pw");
    ha.subscribe("zigbee2mqtt/#", QoS::AtMostOnce);
    let mut z2m = login(port, "zigbee2mqtt-1", "zigbee2mqtt", "z2m-pw");
    z2m.publish(
        "zigbee2mqtt/bridge/state",
        b"online",
        QoS::AtMostOnce,
        true,
        0,
    );
    assert_eq!(ha.recv_publish().payload, b"online");
    // `log_timestamp_format %Y-%m-%d %H:%M:%S`: "2026-12-01 04:00:00: New client..."
    let line = b.wait_log("as zigbee2mqtt-1");
    assert_eq!(line.as_bytes().get(10), Some(&b' '), "{line}");
    assert_eq!(line.as_bytes().get(19), Some(&b':'), "{line}");
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}

/// TLS with client certificates (require_certificate, use_identity_as_username)
/// beside a plain loopback listener, per_listener_settings.
#[test]
fn tls_gateway_config() {
    let (port, plain) = (free_port(), free_port());
    let dir = install("tls", [port, plain, 0]);
    let certs = dir.join("certs");
    // The device's certificate names it: use_identity_as_username makes that
    // its user name for the ACL.
    common::pki::generate(&certs, "sensor-9");
    let conf = dir.join("mosquitto.conf");
    check_ok(&conf);
    let b = BrokerProcess::start_with_config(
        plain,
        &std::fs::read_to_string(&conf).expect("conf"),
        &[],
    );
    b.wait_log(&format!("127.0.0.1:{port} (TLS)"));
    // The device publishes over TLS with its certificate; a local service
    // reads on the plain loopback listener.
    let mut local = Client::connect(plain, "local-reader");
    local.subscribe("devices/#", QoS::AtMostOnce);
    let c = |f: &str| certs.join(f).display().to_string();
    let out = Command::new("mosquitto_pub")
        .args([
            "-h",
            "localhost",
            "-p",
            &port.to_string(),
            "--cafile",
            &c("ca.crt"),
        ])
        .args(["--cert", &c("client.crt"), "--key", &c("client.key")])
        .args([
            "-i",
            "sensor-9",
            "-t",
            "devices/sensor-9/temp",
            "-m",
            "7",
            "-q",
            "1",
        ])
        .output()
        .expect("mosquitto_pub");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(local.recv_publish().payload, b"7");
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bridges and WebSockets with `http_dir`: the whole file is accepted now
/// (before, `http_dir` was refused), and the dashboard directory is served on
/// the WebSocket listener.
#[test]
fn bridge_and_websockets_config_with_http_dir() {
    let ports = [free_port(), free_port(), free_port()];
    let dir = install("bridge-websockets", ports);
    let conf = dir.join("mosquitto.conf");
    check_ok(&conf);
    let text = std::fs::read_to_string(&conf).expect("conf");
    let _b = BrokerProcess::start_with_config(ports[0], &text, &[]);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", ports[1])).expect("connect");
    s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    use std::io::{Read, Write};
    s.write_all(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
        .expect("write");
    let mut got = String::new();
    s.read_to_string(&mut got).expect("response");
    assert!(got.starts_with("HTTP/1.1 200 "), "{got}");
    assert!(got.contains("served by http_dir"), "{got}");
    let _ = std::fs::remove_dir_all(&dir);
}
