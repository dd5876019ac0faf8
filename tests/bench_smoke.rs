//! The load generator works: a short count-based run at QoS 1 and 2 against
//! the real broker delivers every message, once. (Counts only: no timing is
//! asserted; speed is measured by scripts/compare.sh, not by tests.)

mod common;

use std::process::Command;

use common::*;

/// Run `midge-bench` with `args` (split at spaces); its standard output,
/// after checking that it succeeded (the failure shows both its outputs).
fn bench(args: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_midge-bench"))
        .args(args.split_whitespace())
        .output()
        .expect("midge-bench");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn field(json: &str, key: &str) -> Option<u64> {
    let start = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &json[start..];
    let end = rest.find([',', '}'])?;
    rest[..end].trim().parse().ok()
}

#[test]
fn bench_tool_delivers_everything_at_qos_1_and_2() {
    let b = BrokerProcess::start("");
    for (scenario, clients, factor) in [("pairs", "4", 1), ("fanin", "4", 1), ("fanout", "5", 5)] {
        for qos in ["1", "2"] {
            let (port, pid) = (b.port, b.pid());
            let text = bench(&format!(
                "-p {port} -s {scenario} -q {qos} -c {clients} -n 500 --json --broker-pid {pid}"
            ));
            let sent = field(&text, "sent").expect("sent");
            let publishers = if scenario == "fanout" { 1 } else { 4 };
            assert_eq!(sent, 500 * publishers, "{text}");
            assert_eq!(field(&text, "delivered"), Some(sent * factor), "{text}");
            assert_eq!(field(&text, "loss"), Some(0), "{text}");
            assert_eq!(field(&text, "dups"), Some(0), "{text}");
        }
    }
}

#[test]
fn bench_tool_connections_scenario_reports_memory() {
    let b = BrokerProcess::start("");
    let (port, pid) = (b.port, b.pid());
    let text = bench(&format!(
        "-p {port} -s connections -c 50 -d 0.2 --json --broker-pid {pid}"
    ));
    assert_eq!(field(&text, "clients"), Some(50), "{text}");
    assert!(text.contains("\"rss_after_kb\":"), "{text}");
}

/// `--ws`: the same count-based run over a WebSocket listener delivers every
/// message once (the load generator's framing works, so `make bench`'s ws rows
/// measure the broker, not a broken client).
#[test]
fn bench_tool_speaks_websockets() {
    let tcp = free_port();
    let ws = free_port();
    let b = BrokerProcess::start_with_config(
        tcp,
        &format!("listener {tcp} 127.0.0.1\nlistener {ws} 127.0.0.1\nprotocol websockets\n"),
        &[],
    );
    for qos in ["0", "1", "2"] {
        let text = bench(&format!(
            "-p {ws} --ws -s pairs -q {qos} -c 3 -n 400 --payload 300 --json"
        ));
        assert_eq!(field(&text, "sent"), Some(1200), "{text}");
        assert_eq!(field(&text, "delivered"), Some(1200), "{text}");
        assert_eq!(field(&text, "dups"), Some(0), "{text}");
    }
    drop(b);
}

/// The forwarder that `make bench` uses as the machine's limit, killed when dropped.
struct Forwarder(std::process::Child);

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `midge-bench forwarder`: exact topics at QoS 0 and 1, one and many
/// subscribers per topic, deliver every message once (its figures in `make
/// bench` are the limit a broker is measured against: a forwarder that lost
/// or skipped work would set that limit too high).
#[test]
fn forwarder_delivers_everything_at_qos_0_and_1() {
    use std::io::BufRead;
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_midge-bench"))
        .args(["forwarder", "--port", &port.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("midge-bench forwarder");
    let stdout = child.stdout.take().expect("stdout");
    let f = Forwarder(child);
    // Its first line says the socket is listening (EOF if it failed to start).
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("forwarder output");
    assert!(
        line.contains("listening"),
        "forwarder did not start: {line}"
    );
    for (scenario, clients, publishers, factor) in [("pairs", "4", 4, 1), ("fanout", "5", 1, 5)] {
        for qos in ["0", "1"] {
            let pid = f.0.id();
            let text = bench(&format!(
                "-p {port} -s {scenario} -q {qos} -c {clients} -n 500 --json --broker-pid {pid}"
            ));
            assert_eq!(field(&text, "sent"), Some(500 * publishers), "{text}");
            assert_eq!(
                field(&text, "delivered"),
                Some(500 * publishers * factor),
                "{text}"
            );
            assert_eq!(field(&text, "loss"), Some(0), "{text}");
            assert_eq!(field(&text, "dups"), Some(0), "{text}");
        }
    }
}
