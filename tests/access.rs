//! Access control that holds: a persistent session keeps the identity that
//! created it (across a take-over attempt by another user, a SIGHUP and a
//! restart), queued messages are re-checked against the ACL when they leave,
//! `$SYS` is the broker's own, and shared subscriptions pick a member that may
//! read the message. Against the real binary, with a password file and an ACL.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use midge::protocol::{Connect, Packet, Properties, ProtocolVersion, QoS, ReasonCode};

const ACL: &str = "\
user alice
topic readwrite alice/#
user mallory
topic readwrite mallory/#
user writer
topic write #
";

/// A password file (alice, mallory, writer; password = user name + \"-pw\")
/// and the ACL above, in `dir`.
fn security_files(dir: &Path, acl: &str) -> (PathBuf, PathBuf) {
    let pw = dir.join("passwd");
    let midge = env!("CARGO_BIN_EXE_midge");
    for (i, user) in ["alice", "mallory", "writer"].into_iter().enumerate() {
        let mut cmd = Command::new(midge);
        cmd.arg("passwd");
        if i == 0 {
            cmd.arg("-c");
        }
        let status = cmd
            .arg("-b")
            .arg(&pw)
            .arg(user)
            .arg(format!("{user}-pw"))
            .status()
            .expect("run midge passwd");
        assert!(status.success(), "midge passwd {user}");
    }
    let acl_path = dir.join("acl");
    std::fs::write(&acl_path, acl).expect("write acl");
    (pw, acl_path)
}

fn config(port: u16, pw: &Path, acl: &Path, extra: &str) -> String {
    format!(
        "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nacl_file {}\n{extra}\n",
        pw.display(),
        acl.display()
    )
}

/// Connect as `user` (its password) with client id `id`; returns the client
/// and (reason, session present).
fn login(
    port: u16,
    version: ProtocolVersion,
    id: &str,
    user: &str,
    clean: bool,
) -> (Client, (ReasonCode, bool)) {
    let mut c = Client::open(port, version);
    let properties = Properties {
        // v5: the session outlives the connection unless clean.
        session_expiry_interval: (version.is_v5() && !clean).then_some(3600),
        ..Properties::default()
    };
    c.send(&Packet::Connect(Connect {
        version,
        clean_start: clean,
        keep_alive: 60,
        properties,
        client_id: leak_str(id),
        will: None,
        username: Some(leak_str(user)),
        password: Some(leak_bytes(format!("{user}-pw").as_bytes())),
    }));
    match c.recv() {
        Packet::ConnAck(a) => (c, (a.reason, a.session_present)),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// Publish `n` QoS 1 messages on `topic` as the writer.
fn write_n(port: u16, topic: &str, n: u16) {
    let (mut w, (r, _)) = login(port, ProtocolVersion::V311, "writer", "writer", true);
    assert_eq!(r, ReasonCode::SUCCESS);
    for i in 1..=n {
        w.publish(
            topic,
            format!("m{i}").as_bytes(),
            QoS::AtLeastOnce,
            false,
            i,
        );
    }
    w.disconnect();
}

/// Every PUBLISH that arrives before a PINGRESP (so: everything the broker had
/// for the client when it answered the ping), acknowledged.
fn drain(c: &mut Client) -> Vec<String> {
    c.send(&Packet::PingReq);
    let mut got = Vec::new();
    loop {
        match c.recv() {
            Packet::Publish(p) => {
                c.ack(&p);
                got.push(format!(
                    "{}:{}",
                    p.topic,
                    String::from_utf8_lossy(p.payload)
                ));
            }
            Packet::PingResp => return got,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// alice's persistent session, offline with a subscription to `alice/#`.
fn park_alice(port: u16, version: ProtocolVersion) {
    let (mut a, (r, _)) = login(port, version, "alice-dev", "alice", false);
    assert_eq!(r, ReasonCode::SUCCESS);
    assert_eq!(
        a.subscribe("alice/#", QoS::AtLeastOnce),
        vec![ReasonCode::GRANTED_QOS_1]
    );
    a.disconnect();
}

/// Issue 11 item 3: a persistent session keeps its user name across a restart,
/// so its queued messages (and those published after the restart) still pass
/// its ACL. Before the fix the restored session was anonymous: 0 of 3.
#[test]
fn session_identity_survives_a_restart() {
    for signal in ["TERM", "KILL"] {
        let dir = temp_dir("access-restart");
        let (pw, acl) = security_files(&dir, ACL);
        let store = dir.join("store");
        std::fs::create_dir_all(&store).expect("store dir");
        let persist = format!("persistence true\npersistence_location {}", store.display());
        let port = free_port();
        let mut b = BrokerProcess::start_with_config(port, &config(port, &pw, &acl, &persist), &[]);
        park_alice(port, ProtocolVersion::V311);
        write_n(port, "alice/before", 1);
        b.signal(signal);
        b.wait_exit();

        let port = free_port();
        let b = BrokerProcess::start_with_config(port, &config(port, &pw, &acl, &persist), &[]);
        b.wait_log("1 session(s)");
        write_n(port, "alice/private", 3);
        let (mut a, (r, present)) = login(port, ProtocolVersion::V311, "alice-dev", "alice", false);
        assert_eq!((r, present), (ReasonCode::SUCCESS, true), "{signal}");
        assert_eq!(
            drain(&mut a),
            [
                "alice/before:m1",
                "alice/private:m1",
                "alice/private:m2",
                "alice/private:m3"
            ],
            "{signal}: queued before and after the restart"
        );
        drop(b);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
