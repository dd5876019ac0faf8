//! The command line and the process: flags, config errors, `-p`, signals.

mod common;

use std::process::Command;

use common::*;
use midge::protocol::{Packet, ProtocolVersion, ReasonCode};

fn midge(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_midge"))
        .args(args)
        .output()
        .expect("run midge")
}

#[test]
fn version_and_help() {
    let out = midge(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("midge version "), "{text}");
    let out = midge(&["-h"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "-c, --config-file",
        "-p, --port",
        "-v, --verbose",
        "-d, --daemon",
        "--test-config",
    ] {
        assert!(text.contains(flag), "help lacks {flag}:\n{text}");
    }
    assert!(text.contains("ignored when"), "{text}");
}

#[test]
fn unknown_flag_fails() {
    let out = midge(&["--frobnicate"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("midge -h"));
}

#[test]
fn bad_config_line_stops_start_up_with_file_line_and_reason() {
    let dir = temp_dir("cli");
    let conf = dir.join("bad.conf");
    std::fs::write(&conf, "listener 1883\n# fine\nmax_inflight_messages lots\n").expect("write");
    let out = midge(&["-c", conf.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:3: `max_inflight_messages` expects a number",
            conf.display()
        )),
        "{err}"
    );
    let out = midge(&["-c", conf.to_str().expect("utf-8 path"), "--test-config"]);
    assert_eq!(out.status.code(), Some(1));
    std::fs::write(&conf, "listener 1883\n").expect("write");
    let out = midge(&["-c", conf.to_str().expect("utf-8 path"), "--test-config"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("config OK: 1 listener(s)"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dash_p_listens_on_loopback() {
    let port = free_port();
    let b = BrokerProcess::start_with_args(port, &["-p", &port.to_string(), "-v"]);
    let c = Client::connect(b.port, "dash-p");
    c.disconnect();
    b.wait_log("New client connected from 127.0.0.1:");
}

#[test]
fn sigterm_disconnects_v5_clients_with_0x8b_and_exits_cleanly() {
    let mut b = BrokerProcess::start("");
    let mut v5 = Client::connect_v(b.port, ProtocolVersion::V5, "v5-client");
    let mut v4 = Client::connect_v(b.port, ProtocolVersion::V311, "v4-client");
    v5.ping();
    v4.ping();
    b.signal("TERM");
    let d = v5.expect_closed().expect("a DISCONNECT before the close");
    assert_eq!(d.reason, ReasonCode::SERVER_SHUTTING_DOWN);
    assert!(
        v4.expect_closed().is_none(),
        "3.1.1 has no server DISCONNECT"
    );
    assert_eq!(b.wait_exit(), Some(0));
}

#[test]
fn sigint_stops_the_broker_and_wills_are_not_published() {
    let mut b = BrokerProcess::start("");
    let mut watcher = Client::connect(b.port, "watcher");
    watcher.subscribe("wills/#", midge::protocol::QoS::AtLeastOnce);
    let mut o = ConnectOptions::new(ProtocolVersion::V311, "with-will");
    o.will = Some((
        "wills/x".into(),
        b"gone".to_vec(),
        midge::protocol::QoS::AtLeastOnce,
        false,
    ));
    let (_c, _) = Client::connect_with(b.port, &o);
    b.signal("INT");
    // The watcher sees its connection close and no will before it.
    match watcher.try_recv(TIMEOUT) {
        Some(Err(_)) => {}
        Some(Ok(Packet::Publish(p))) => panic!("will published on shutdown: {p:?}"),
        other => panic!("expected close, got {other:?}"),
    }
    assert_eq!(b.wait_exit(), Some(0));
}

#[test]
fn pid_file_is_written_and_removed() {
    let port = free_port();
    let dir = temp_dir("pid");
    let pid_path = dir.join("midge.pid");
    let config = format!(
        "listener {port} 127.0.0.1\npid_file {}\n",
        pid_path.display()
    );
    let mut b = BrokerProcess::start_with_config(port, &config, &[]);
    let pid = std::fs::read_to_string(&pid_path).expect("pid file");
    assert_eq!(pid.trim(), b.pid().to_string());
    b.signal("TERM");
    assert_eq!(b.wait_exit(), Some(0));
    assert!(!pid_path.exists(), "pid file removed on exit");
    let _ = std::fs::remove_dir_all(&dir);
}
