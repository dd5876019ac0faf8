//! The built-in live view in a real browser (issue 14): headless Chromium
//! loads `/` from a websockets listener, logs in with a user name and
//! password typed into the page, and shows what a TCP client publishes
//! (retained and live, text and binary) but not what the user's ACL hides; the
//! `$SYS` table fills. A screenshot is saved in the test's scratch directory.
mod common;

use std::time::Duration;

use common::js::{npm_install, run_node, PLAYWRIGHT_CORE};
use common::{free_port, midge_bin, temp_dir, BrokerProcess, Client};
use midge::protocol::QoS;

#[test]
fn live_view_logs_in_and_shows_topics_in_chromium() {
    let modules = npm_install(&[PLAYWRIGHT_CORE]);
    let dir = temp_dir("live-view");
    let passwd = dir.join("passwd");
    let out = std::process::Command::new(midge_bin())
        .args(["passwd", "-c", "-b"])
        .arg(&passwd)
        .args(["viewer", "s3cret"])
        .output()
        .expect("midge passwd");
    assert!(out.status.success(), "{out:?}");
    let acl = dir.join("acl");
    std::fs::write(&acl, "user viewer\ntopic read home/#\ntopic read $SYS/#\n").expect("acl");
    // A gateway's usual split: anonymous MQTT on the local TCP listener, the
    // web side behind passwords and an ACL.
    let tcp = free_port();
    let ws = free_port();
    let b = BrokerProcess::start_with_config(
        tcp,
        &format!(
            "per_listener_settings true\nsys_interval 1\nlog_type all\n\
             listener {tcp} 127.0.0.1\nallow_anonymous true\n\
             listener {ws} 127.0.0.1\nprotocol websockets\nallow_anonymous false\n\
             password_file {}\nacl_file {}\n",
            passwd.display(),
            acl.display()
        ),
        &[],
    );
    let mut publisher = Client::connect(tcp, "sensor-gw");
    // QoS 1: `publish` waits for the PUBACK.
    publisher.publish("home/kitchen/temp", b"21.5", QoS::AtLeastOnce, true, 1);
    publisher.publish("home/blob", &[0x00, 0xff, 0x10], QoS::AtMostOnce, true, 0);
    publisher.publish("secret/code", b"1234", QoS::AtMostOnce, true, 0);
    publisher.ping();

    let shot = dir.join("live-view.png");
    let expect = r#"{"topics": [["home/kitchen/temp", "21.5", true], ["home/blob", "00 ff 10", true], ["home/door", "open", false]], "absent": ["secret", "secret/code", "secret/live"], "sys": ["version", "clients/connected"]}"#;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js/live_view.js");
    let url = format!("http://127.0.0.1:{ws}/");
    let shot_arg = shot.display().to_string();
    let browser = std::thread::spawn(move || {
        run_node(
            &modules,
            script.as_path(),
            &[&url, "viewer", "s3cret", &shot_arg, expect],
            &[],
            Duration::from_secs(60),
        )
    });
    // The page's SUBSCRIBE has been handled (its SUBACK is on the way): what
    // is published now reaches it live, not as a retained message.
    // Chromium's start may take long on a loaded machine; node's own
    // timeout (below) is the bound.
    b.wait_log_within(Duration::from_secs(50), "the page's SUBSCRIBE", |l| {
        l.contains("1 $SYS/#")
    });
    publisher.publish("secret/live", b"hidden", QoS::AtMostOnce, false, 0);
    publisher.publish("home/door", b"open", QoS::AtLeastOnce, false, 2);
    let out = browser.join().expect("browser thread");
    let stdout = out.ok("the live view in Chromium");
    for line in [
        "SUBSCRIBED",
        "SEEN home/kitchen/temp",
        "SEEN home/blob",
        "SEEN home/door",
        "SYS version",
    ] {
        assert!(stdout.lines().any(|l| l == line), "{line}: {stdout}");
    }
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 0, "no screenshot at {}", shot.display());
    eprintln!("screenshot: {} ({size} bytes)", shot.display());
    // Keep it for a look when asked (the scratch directory goes at exit).
    if let Some(to) = std::env::var_os("MIDGE_LIVE_VIEW_SHOT") {
        std::fs::copy(&shot, to).expect("copy screenshot");
    }
    assert!(
        b.log_text().contains("k30, u'viewer')"),
        "the page logged in as viewer with keep-alive 30"
    );
}
