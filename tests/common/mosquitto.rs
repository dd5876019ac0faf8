//! A real Debian `mosquitto` as the other end of bridge tests: started on its own
//! free loopback port with its own config file, killed when dropped. Waits are
//! reads of its log with a timeout. Also the counting done at such a remote:
//! persistent sessions that collect what a test sends while it runs, and
//! counters of numbered payloads.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use midge::protocol::{Packet, ProtocolVersion, PubResp, QoS};

use super::{free_port, temp_dir, Client, ConnectOptions, TIMEOUT};

/// Where Debian installs the broker.
pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// A running mosquitto.
pub struct Mosquitto {
    child: Option<Child>,
    /// Its loopback port.
    pub port: u16,
    /// Its directory (config file, certificates).
    pub dir: PathBuf,
    /// The config lines it was started with (after the listener).
    extra: String,
    log: Arc<Mutex<Vec<String>>>,
    log_rx: Receiver<String>,
}

impl Mosquitto {
    /// Start mosquitto on a free port with `extra` config lines.
    pub fn start(extra: &str) -> Mosquitto {
        for _ in 0..5 {
            let port = free_port();
            if let Some(m) = Self::try_start_on(port, extra, temp_dir("mosquitto")) {
                return m;
            }
        }
        panic!("mosquitto would not start");
    }

    /// Start on a free port with persistence in its own directory, plus
    /// `extra`; [`Mosquitto::restart`] brings it back with what it saved.
    pub fn start_persistent(extra: &str) -> Mosquitto {
        let dir = temp_dir("mosquitto-persistent");
        let conf = format!(
            "persistence true\npersistence_location {}/\n{extra}",
            dir.display()
        );
        Self::start_on(free_port(), &conf, dir)
    }

    /// Start again (after [`Mosquitto::stop`] or [`Mosquitto::kill`]) on the
    /// same port, in the same directory, with the same config.
    pub fn restart(&self) -> Mosquitto {
        Self::start_on(self.port, &self.extra, self.dir.clone())
    }

    /// Create the persistent session `id` (clean session 0) subscribed to
    /// `filter` at QoS 2 and leave it offline: the remote queues for it what
    /// arrives meanwhile (use `max_queued_messages 0` for big counts). Returns
    /// the options to connect it again and read the count.
    pub fn counting_session(&self, id: &str, filter: &str) -> ConnectOptions {
        let o = ConnectOptions {
            clean: false,
            ..ConnectOptions::new(ProtocolVersion::V311, id)
        };
        let (mut c, _) = Client::connect_with(self.port, &o);
        c.subscribe(filter, QoS::ExactlyOnce);
        c.disconnect();
        o
    }

    /// Start (or restart) on a given port, in an existing directory.
    pub fn start_on(port: u16, extra: &str, dir: PathBuf) -> Mosquitto {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            // A just-killed listener may hold the port a moment longer.
            if let Some(m) = Self::try_start_on(port, extra, dir.clone()) {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto would not restart on {port}"
            );
        }
    }

    fn try_start_on(port: u16, extra: &str, dir: PathBuf) -> Option<Mosquitto> {
        let conf = dir.join("mosquitto.conf");
        let text = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nlog_dest stderr\nlog_type all\n\
             user root\n{extra}\n"
        );
        std::fs::write(&conf, text).expect("write mosquitto.conf");
        let mut child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mosquitto (apt-get install mosquitto)");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = channel();
        let stderr = child.stderr.take().expect("stderr");
        let l2 = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                l2.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let m = Mosquitto {
            child: Some(child),
            port,
            dir,
            extra: extra.to_string(),
            log,
            log_rx: rx,
        };
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match m.log_rx.recv_timeout(left) {
                Ok(l) if l.contains("running") => return Some(m),
                Ok(l) if l.contains("Error") => return None,
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Wait for a log line containing `needle`.
    pub fn wait_log(&self, needle: &str) -> String {
        if let Some(l) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log_rx.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(_) => panic!(
                    "mosquitto logged no {needle:?}; log:\n{}",
                    self.log.lock().unwrap().join("\n")
                ),
            }
        }
    }

    /// Everything logged so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Kill it (SIGKILL) and wait for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stop it with SIGTERM (it saves its persistence file) and wait until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }

    /// Freeze it (SIGSTOP): its sockets stay open but nothing is read from
    /// them, so whoever writes to it backs up.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Thaw it after [`Mosquitto::pause`] (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let status = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(c.id().to_string())
                .status();
            assert!(matches!(status, Ok(s) if s.success()), "kill -{sig}");
        }
    }

    /// Wait for it to exit by itself for at most `wait`.
    pub fn wait_exit(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let Some(c) = self.child.as_mut() else {
            return true;
        };
        loop {
            if let Ok(Some(_)) = c.try_wait() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            let _ = self.log_rx.recv_timeout(Duration::from_millis(20));
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Count what a QoS 2 subscriber receives until `n` distinct numbered payloads
/// (`0`..`n`) arrived and a short quiet period passed; returns the count per
/// payload. QoS 2 as the spec has it: a PUBLISH whose id still waits for its
/// PUBREL is the same message again [MQTT-4.3.3-10].
pub fn count_numbered(c: &mut Client, n: usize) -> Vec<u32> {
    let mut seen = vec![0u32; n];
    let mut distinct = 0;
    let mut awaiting_rel = std::collections::HashSet::new();
    loop {
        let wait = if distinct < n {
            TIMEOUT * 2
        } else {
            Duration::from_millis(500)
        };
        let mut count = |payload: &[u8]| {
            let i: usize = std::str::from_utf8(payload)
                .expect("utf8")
                .parse()
                .expect("number");
            if seen[i] == 0 {
                distinct += 1;
            }
            seen[i] += 1;
        };
        match c.try_recv(wait) {
            Some(Ok(Packet::Publish(p))) => {
                if p.qos == QoS::ExactlyOnce {
                    if awaiting_rel.insert(p.packet_id) {
                        count(p.payload);
                    }
                    c.send(&Packet::PubRec(PubResp::success(p.packet_id)));
                } else {
                    count(p.payload);
                    c.ack(&p);
                }
            }
            Some(Ok(Packet::PubRel(r))) => {
                awaiting_rel.remove(&r.packet_id);
                c.send(&Packet::PubComp(PubResp::success(r.packet_id)));
            }
            None if distinct == n => return seen,
            other => panic!(
                "after {distinct} of {n} messages: {other:?}; missing: {:?}",
                (0..n)
                    .filter(|i| seen[*i] == 0)
                    .take(20)
                    .collect::<Vec<_>>()
            ),
        }
    }
}

/// Count numbered QoS 0/1 payloads arriving at `c` (acknowledged) into `seen`
/// until nothing comes for `quiet`.
pub fn count_received(c: &mut Client, seen: &mut [u32], quiet: Duration) {
    while let Some(Ok(Packet::Publish(m))) = c.try_recv(quiet) {
        c.ack(&m);
        let i: usize = std::str::from_utf8(m.payload)
            .expect("utf8")
            .parse()
            .expect("number");
        seen[i] += 1;
    }
}
