//! Real MQTT clients over WebSockets (issue 14) against the real binary:
//! MQTT.js in Node.js over ws and wss, Python paho-mqtt with
//! `transport="websockets"`, WebSocket and TCP clients mixed, and MQTT.js's
//! browser bundle in headless Chromium. Nothing is skipped: node, npm,
//! chromium and paho-mqtt are installed by `scripts/setup.sh test`, and the
//! npm packages (pinned) are cached under `target/js/`.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::js::{self, npm_install, run_node, MQTT_JS};
use common::{free_port, temp_dir, BrokerProcess};

/// A generous bound for one client script (each takes well under a second).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(25);

/// A self-signed certificate for 127.0.0.1 and localhost (its own CA), made
/// once per test process with the openssl CLI: (cert, key).
fn cert() -> &'static (PathBuf, PathBuf) {
    static PAIR: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    PAIR.get_or_init(|| {
        let d = temp_dir("ws-pki");
        let (crt, key) = (d.join("server.crt"), d.join("server.key"));
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&crt)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (crt, key)
    })
}

/// A broker with a TCP listener (its port is the broker's), a ws listener and
/// a wss listener: (broker, tcp, ws, wss).
fn start() -> (BrokerProcess, u16, u16, u16) {
    let (tcp, ws, wss) = (free_port(), free_port(), free_port());
    let (crt, key) = cert();
    let b = BrokerProcess::start_with_config(
        tcp,
        &format!(
            "listener {tcp} 127.0.0.1\n\
             listener {ws} 127.0.0.1\nprotocol websockets\n\
             listener {wss} 127.0.0.1\nprotocol websockets\ncertfile {}\nkeyfile {}\n",
            crt.display(),
            key.display()
        ),
        &[],
    );
    (b, tcp, ws, wss)
}

fn script(name: &str) -> PathBuf {
    js::helpers_dir().join(name)
}

/// What `tests/js/mqtt_clients.js` prints when every message arrived as sent.
fn expected_mqtt_js(prefix: &str) -> String {
    format!(
        "{{\"granted\":[2],\"live\":[\
         {{\"topic\":\"{prefix}/q0\",\"payload\":\"zero\",\"qos\":0,\"retain\":false}},\
         {{\"topic\":\"{prefix}/q1\",\"payload\":\"one\",\"qos\":1,\"retain\":false}},\
         {{\"topic\":\"{prefix}/q2\",\"payload\":\"two\",\"qos\":2,\"retain\":false}}],\
         \"retained\":[{{\"topic\":\"{prefix}/q2\",\"payload\":\"two\",\"qos\":2,\"retain\":true}}]}}\n"
    )
}

fn mqtt_js(url: &str, version: &str, ca: Option<&Path>, prefix: &str) {
    let modules = npm_install(&[MQTT_JS]);
    let ca = ca
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let out = run_node(
        &modules,
        script("mqtt_clients.js").as_path(),
        &[url, version, &ca, prefix],
        &[],
        SCRIPT_TIMEOUT,
    );
    let what = format!("MQTT.js v{version} on {url}");
    assert_eq!(out.ok(&what), expected_mqtt_js(prefix), "{what}");
}

/// MQTT.js (3.1.1 and 5) over ws publishes at QoS 0, 1 and 2 to a subscriber
/// at QoS 2, which gets each at the publisher's QoS and unflagged
/// [MQTT-3.3.1-9]; a late subscriber gets the retained message, flagged.
#[test]
fn mqtt_js_over_ws() {
    let (_b, _tcp, ws, _wss) = start();
    mqtt_js(&format!("ws://127.0.0.1:{ws}/mqtt"), "4", None, "v4");
    mqtt_js(&format!("ws://127.0.0.1:{ws}/"), "5", None, "v5");
}

/// The same over wss, verifying the broker's certificate.
#[test]
fn mqtt_js_over_wss() {
    let (_b, _tcp, _ws, wss) = start();
    let (crt, _) = cert();
    mqtt_js(&format!("wss://localhost:{wss}/mqtt"), "4", Some(crt), "s4");
    mqtt_js(&format!("wss://127.0.0.1:{wss}/mqtt"), "5", Some(crt), "s5");
}

/// Headless Chromium loads `tests/js/browser_mqtt.html` (a file: URL) and
/// runs the same scenario with MQTT.js's browser bundle against `url`.
fn browser(url: &str, version: &str, prefix: &str) {
    js::require_chromium();
    let modules = npm_install(&[MQTT_JS, js::PLAYWRIGHT_CORE]);
    let out = run_node(
        &modules,
        script("browser_mqtt.js").as_path(),
        &[url, version, prefix],
        &[],
        SCRIPT_TIMEOUT,
    );
    let what = format!("Chromium page, MQTT v{version} on {url}");
    assert_eq!(out.ok(&what), expected_mqtt_js(prefix), "{what}");
}

/// A real browser over ws: the page's result, read from its DOM, is exactly
/// what was sent (MQTT 3.1.1 and 5 in one page load each).
#[test]
fn browser_mqtt_js_over_ws() {
    let (_b, _tcp, ws, _wss) = start();
    browser(&format!("ws://127.0.0.1:{ws}/mqtt"), "4", "web4");
    browser(&format!("ws://127.0.0.1:{ws}/mqtt"), "5", "web5");
}

/// A real browser over wss (the test certificate let through).
#[test]
fn browser_mqtt_js_over_wss() {
    let (_b, _tcp, _ws, wss) = start();
    browser(&format!("wss://localhost:{wss}/mqtt"), "4", "webs");
}

/// The npm cache takes exact versions only: a range would let CI test
/// whatever the registry serves that day.
#[test]
#[should_panic(expected = "must be pinned to an exact version")]
fn npm_install_refuses_unpinned_packages() {
    npm_install(&["mqtt@^5"]);
}

/// A script that never ends is killed at its timeout and fails the test
/// (the process group is killed, so the test does not hang).
#[test]
#[should_panic(expected = "did not finish within 2s")]
fn run_node_kills_a_script_past_its_timeout() {
    let modules = npm_install(&[MQTT_JS]);
    run_node(
        &modules,
        "setInterval(() => {}, 1000);",
        &[],
        &[],
        Duration::from_secs(2),
    );
}

/// The broker's close frames as a browser sees them: a session taken over
/// closes cleanly with 1000 and the reason's name, a malformed packet with
/// 1002 (RFC 6455 section 7.1.5, `CloseEvent` of the WebSocket API).
#[test]
fn browser_sees_the_brokers_close_frames() {
    js::require_chromium();
    let (_b, _tcp, ws, _wss) = start();
    let modules = npm_install(&[MQTT_JS, js::PLAYWRIGHT_CORE]);
    let url = format!("ws://127.0.0.1:{ws}/mqtt");
    let out = run_node(
        &modules,
        script("browser_close.js").as_path(),
        &[&url],
        &[],
        SCRIPT_TIMEOUT,
    );
    assert_eq!(
        out.ok("Chromium close events"),
        "{\"takenOver\":{\"code\":1000,\"reason\":\"Session taken over\",\"wasClean\":true},\
         \"malformed\":{\"code\":1002,\"reason\":\"Malformed Packet\",\"wasClean\":true}}\n"
    );
}
