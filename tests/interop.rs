//! Interoperability with real clients: mosquitto_pub / mosquitto_sub (MQTT 3.1.1 and
//! 5) and Python paho-mqtt. `.ci/run` installs both; a missing tool fails the test.

mod common;

use std::process::{Command, Stdio};

use common::*;

fn run_sub(port: u16, version: &str, topic: &str, qos: u8, id: &str) -> std::process::Child {
    Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-V",
            version,
            "-t",
            topic,
        ])
        .args([
            "-q",
            &qos.to_string(),
            "-C",
            "1",
            "-W",
            "10",
            "-i",
            id,
            "-v",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub must be installed (apt-get install mosquitto-clients)")
}

fn run_pub(port: u16, version: &str, topic: &str, qos: u8, msg: &str, extra: &[&str]) {
    let out = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-V",
            version,
            "-t",
            topic,
        ])
        .args(["-q", &qos.to_string(), "-m", msg])
        .args(extra)
        .output()
        .expect("mosquitto_pub must be installed (apt-get install mosquitto-clients)");
    assert!(
        out.status.success(),
        "mosquitto_pub failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn mosquitto_clients_at_every_qos_and_version() {
    let b = BrokerProcess::start("");
    for version in ["mqttv311", "mqttv5", "mqttv31"] {
        for sub_qos in 0..=2u8 {
            for pub_qos in 0..=2u8 {
                let topic = format!("interop/{version}/{sub_qos}/{pub_qos}");
                let id = format!("msub-{version}-{sub_qos}-{pub_qos}");
                let sub = run_sub(b.port, version, &topic, sub_qos, &id);
                // The subscription is in place once the broker has logged it.
                b.wait_log(&format!("Received SUBSCRIBE from {id}"));
                run_pub(b.port, version, &topic, pub_qos, "hello", &[]);
                let out = sub.wait_with_output().expect("mosquitto_sub output");
                assert!(
                    out.status.success(),
                    "mosquitto_sub: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert_eq!(
                    String::from_utf8_lossy(&out.stdout).trim(),
                    format!("{topic} hello")
                );
            }
        }
    }
}

#[test]
fn mosquitto_retained_and_v5_user_properties() {
    let b = BrokerProcess::start("");
    run_pub(
        b.port,
        "mqttv5",
        "interop/ret",
        1,
        "stored",
        &["-r", "-D", "publish", "user-property", "k", "v"],
    );
    let out = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &b.port.to_string(),
            "-V",
            "mqttv5",
            "-t",
            "interop/#",
        ])
        .args(["-C", "1", "-W", "10", "-F", "%t %p %P"])
        .output()
        .expect("mosquitto_sub");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "interop/ret stored k:v"
    );
}

#[test]
fn paho_mqtt_python_client() {
    let b = BrokerProcess::start("");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/paho_check.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(b.port.to_string())
        .output()
        .expect("python3 must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "paho check failed:\n{stdout}\n{stderr}\nbroker log:\n{}",
        b.log_text()
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

/// MQTT 5 features through paho-mqtt's MQTTv5 client (tests/interop/paho_v5.py).
#[test]
fn paho_mqtt_v5_features() {
    let b = BrokerProcess::start("response_information replies/");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/paho_v5.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(b.port.to_string())
        .output()
        .expect("python3 must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("all v5 checks passed"),
        "paho v5 check failed:\n{stdout}\n{stderr}\nbroker log:\n{}",
        b.log_text()
    );
}

/// mosquitto_pub/mosquitto_sub -V mqttv5 with -D properties: content type,
/// response topic, correlation data, message expiry, payload format, and the
/// subscription identifier, read back with mosquitto_sub's -F format codes.
#[test]
fn mosquitto_v5_properties() {
    let b = BrokerProcess::start("");
    let port = b.port.to_string();
    let out = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "mqttv5",
            "-t",
            "i5/r",
            "-m",
            "hi",
        ])
        .args(["-r", "-q", "1"])
        .args(["-D", "publish", "content-type", "text/x"])
        .args(["-D", "publish", "response-topic", "i5/reply"])
        .args(["-D", "publish", "correlation-data", "abc"])
        .args(["-D", "publish", "message-expiry-interval", "100"])
        .args(["-D", "publish", "payload-format-indicator", "1"])
        .output()
        .expect("mosquitto_pub");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv5", "-t", "i5/#"])
        .args(["-D", "subscribe", "subscription-identifier", "5"])
        .args(["-C", "1", "-W", "10", "-F", "%t|%p|%C|%R|%D|%F|%S"])
        .output()
        .expect("mosquitto_sub");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "i5/r|hi|text/x|i5/reply|abc|1|5"
    );
}
