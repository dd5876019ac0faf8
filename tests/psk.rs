//! TLS-PSK listeners (`psk_hint`, `psk_file`) with mosquitto's meaning, against
//! the real `mosquitto_pub`/`mosquitto_sub` and their `--psk`/`--psk-identity`
//! options: keys from `identity:hexkey` lines, a wrong key refused,
//! `use_identity_as_username` under ACLs, the file re-read on SIGHUP and
//! checked by `--test-config` with file:line errors.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use common::*;

const READER_KEY: &str = "00112233445566778899aabbccddeeff";
const SENSOR_KEY: &str = "DEADBEEFCAFE0123456789ABCDEF0001";

/// A broker with a PSK-only listener (no `certfile`) using keys `psk`, and
/// `extra` lines; the PSK listener's port is `Psk::port` (the first, plain
/// listener only serves the test harness's start-up wait).
struct Psk {
    b: BrokerProcess,
    port: u16,
    file: PathBuf,
}

fn psk_broker(psk: &str, extra: &str) -> Psk {
    let dir = temp_dir("psk");
    let file = dir.join("psk.txt");
    std::fs::write(&file, psk).expect("write psk file");
    let (plain, port) = (free_port(), free_port());
    let config = format!(
        "listener {plain} 127.0.0.1\nlistener {port} 127.0.0.1\npsk_hint midge test hint\n\
         psk_file {}\n{extra}\n",
        file.display()
    );
    let b = BrokerProcess::start_with_config(plain, &config, &[]);
    Psk { b, port, file }
}

fn psk_args(port: u16, identity: &str, key: &str) -> Vec<String> {
    [
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "--psk",
        key,
        "--psk-identity",
        identity,
        "-i",
        identity,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// mosquitto_sub over TLS-PSK, waiting for one message (at most 10 s).
fn psk_sub(p: &Psk, identity: &str, key: &str, filter: &str) -> Child {
    let child = Command::new("mosquitto_sub")
        .args(psk_args(p.port, identity, key))
        .args(["-t", filter, "-q", "1", "-C", "1", "-W", "10", "-v"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub must be installed (apt-get install mosquitto-clients)");
    // The subscription is in place once the broker has logged it.
    p.b.wait_log(&format!("Received SUBSCRIBE from {identity}"));
    child
}

/// mosquitto_pub over TLS-PSK, QoS 1.
fn psk_pub(port: u16, identity: &str, key: &str, topic: &str, msg: &str) -> Output {
    Command::new("mosquitto_pub")
        .args(psk_args(port, identity, key))
        .args(["-t", topic, "-m", msg, "-q", "1"])
        .output()
        .expect("mosquitto_pub must be installed (apt-get install mosquitto-clients)")
}

fn delivered(sub: Child) -> String {
    let out = sub.wait_with_output().expect("mosquitto_sub output");
    assert!(
        out.status.success(),
        "mosquitto_sub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// mosquitto's clients talk to a `psk_hint` listener without certificates; a
/// client with the wrong key, or an identity the file lacks, is refused in the
/// handshake.
#[test]
fn mosquitto_clients_speak_tls_psk_and_a_wrong_key_is_refused() {
    let psk = format!("# keys\nreader:{READER_KEY}\nsensor1:{SENSOR_KEY}\n");
    let p = psk_broker(&psk, "allow_anonymous true");
    let b = &p.b;
    b.wait_log(&format!("127.0.0.1:{} (TLS)", p.port));
    let sub = psk_sub(&p, "reader", READER_KEY, "psk/#");
    let out = psk_pub(p.port, "sensor1", SENSOR_KEY, "psk/t", "over psk");
    assert!(
        out.status.success(),
        "mosquitto_pub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(delivered(sub), "psk/t over psk");
    b.wait_log("(TLSv1.3)");

    // TLS 1.2 has PSK cipher suites of its own (the listener's default
    // list); mosquitto_pub's `--tls-version` only sets a minimum, so
    // openssl s_client forces 1.2.
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{}", p.port)])
        .args([
            "-psk",
            SENSOR_KEY,
            "-psk_identity",
            "sensor1",
            "-tls1_2",
            "-brief",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("openssl must be installed");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("Protocol version: TLSv1.2"), "{text}");
    assert!(text.contains("PSK"), "not a PSK suite: {text}");
    b.wait_log("(TLSv1.2)");

    // One bit off in the key: the handshake fails, nothing is published.
    let wrong = format!("{}0", &SENSOR_KEY[..SENSOR_KEY.len() - 1]);
    let out = psk_pub(p.port, "sensor1", &wrong, "psk/t", "wrong key");
    assert!(!out.status.success(), "a wrong key was accepted");
    // The failure comes mid-handshake; its line still names the peer.
    b.wait_log("TLS handshake with 127.0.0.1:");
    let out = psk_pub(p.port, "stranger", SENSOR_KEY, "psk/t", "unknown identity");
    assert!(!out.status.success(), "an unknown identity was accepted");
    assert!(!b.log_text().contains("as stranger"), "{}", b.log_text());
}

/// `use_identity_as_username`: the PSK identity is the user name, so the ACL
/// file's `user` sections apply, with anonymous access off and no `-u`.
#[test]
fn the_psk_identity_is_the_user_name_under_acls() {
    let dir = temp_dir("psk-acl");
    let acl = dir.join("acl");
    std::fs::write(
        &acl,
        "user reader\ntopic read sensors/#\n\nuser sensor1\ntopic write sensors/sensor1/#\n",
    )
    .expect("write acl");
    let psk = format!("reader:{READER_KEY}\nsensor1:{SENSOR_KEY}\n");
    let extra = format!(
        "use_identity_as_username true\nallow_anonymous false\nacl_file {}",
        acl.display()
    );
    let p = psk_broker(&psk, &extra);
    let b = &p.b;
    let sub = psk_sub(&p, "reader", READER_KEY, "sensors/#");
    b.wait_log("as reader (p4, c1, k60, u'reader')");
    // Denied first (the ACL gives sensor1 only its own subtree), then allowed:
    // the subscriber's single message is the allowed one.
    let out = psk_pub(p.port, "sensor1", SENSOR_KEY, "sensors/other/t", "denied");
    assert!(out.status.success());
    let out = psk_pub(
        p.port,
        "sensor1",
        SENSOR_KEY,
        "sensors/sensor1/t",
        "allowed",
    );
    assert!(out.status.success());
    assert_eq!(delivered(sub), "sensors/sensor1/t allowed");
}

/// SIGHUP re-reads `psk_file` (as the password file): an identity added
/// afterwards gets in, one removed does not.
#[test]
fn sighup_reloads_the_psk_file() {
    let p = psk_broker(&format!("reader:{READER_KEY}\n"), "allow_anonymous true");
    let (b, psk_file) = (&p.b, &p.file);
    let out = psk_pub(p.port, "sensor1", SENSOR_KEY, "t", "before");
    assert!(!out.status.success(), "sensor1 is not in the file yet");
    std::fs::write(psk_file, format!("sensor1:{SENSOR_KEY}\n")).expect("rewrite");
    b.signal("HUP");
    b.wait_log("Reloading password, ACL, PSK");
    let out = psk_pub(p.port, "sensor1", SENSOR_KEY, "t", "after");
    assert!(
        out.status.success(),
        "mosquitto_pub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = psk_pub(p.port, "reader", READER_KEY, "t", "removed");
    assert!(!out.status.success(), "a removed identity still gets in");
}

fn test_config(conf: &Path) -> (bool, String) {
    let out = Command::new(midge_bin())
        .arg("-c")
        .arg(conf)
        .arg("--test-config")
        .output()
        .expect("run midge");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `--test-config` reads the PSK file and names each bad line; `psk_hint`
/// without a `psk_file` is refused.
#[test]
fn test_config_checks_the_psk_file_line_by_line() {
    let dir = temp_dir("psk-check");
    let psk = dir.join("keys.psk");
    std::fs::write(&psk, "good:00ff\nno-colon-here\nbad:12zz\n").expect("write");
    let conf = dir.join("midge.conf");
    let port = free_port();
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\npsk_hint h\npsk_file {}\n",
            psk.display()
        ),
    )
    .expect("write");
    let (ok, err) = test_config(&conf);
    assert!(!ok, "a bad psk_file passed --test-config");
    let p = psk.display();
    assert!(
        err.contains(&format!("{p}:2: expected `identity:hexkey`")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{p}:3: the key is not hexadecimal")),
        "{err}"
    );
    assert!(!err.contains("12zz"), "the key is echoed: {err}");

    std::fs::write(&psk, "good:00ff\n").expect("write");
    let (ok, err) = test_config(&conf);
    assert!(ok, "{err}");

    std::fs::write(&conf, format!("listener {port} 127.0.0.1\npsk_hint h\n")).expect("write");
    let (ok, err) = test_config(&conf);
    assert!(!ok);
    assert!(err.contains("`psk_hint` needs a `psk_file`"), "{err}");
}
