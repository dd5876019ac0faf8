//! `midge-bench`: a single-threaded MQTT load generator (mio + midge's own codec)
//! for comparing brokers on one machine.
//!
//! Scenarios: `fanin` (P publishers, one wildcard subscriber), `fanout` (one
//! publisher, S subscribers), `pairs` (N publisher/subscriber pairs, one topic
//! each) and `connections` (K clients that subscribe to their own topic, then
//! idle; reports the broker's RSS per connection). Payloads carry a publisher
//! index, a sequence number and a send timestamp, so the subscribers measure
//! latency, loss and duplicates. With `--broker-pid` the broker's CPU time
//! (/proc/PID/stat) gives delivered messages per broker CPU-second. With
//! `--ws` every client speaks MQTT over WebSockets (one masked frame per
//! packet), so a broker's ws cost can be set against its TCP cost. `--rate`
//! paces the publishers evenly (a gateway's sensors: `-c 200 -r 10000` is 50
//! messages per second each), `--retained` loads retained messages first, and
//! acknowledgements with an error reason code (v5) are counted as refused.
//!
//! `midge-bench forwarder --port P` is not a load generator but the other end:
//! a minimal forwarder (see `forwarder.rs`) that calibrates the machine.

mod forwarder;
mod ws;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use ws::{Unframed, WsClient};

use midge::procfs::{cpu_seconds, status_kb};

use midge::protocol::{
    decode, encode, Connect, DecodeLimits, Decoded, Packet, Properties, ProtocolVersion, PubResp,
    Publish, QoS, Subscribe, SubscriptionOptions,
};

const HEADER: usize = 20; // publisher u32, seq u64, send time ns u64
const MAX_PENDING: usize = 256 * 1024;

#[derive(Debug, Clone)]
struct Opts {
    addr: SocketAddr,
    /// Where subscribers connect (`--sub-port`): another broker, for bridges.
    sub_addr: Option<SocketAddr>,
    scenario: String,
    qos: QoS,
    payload: usize,
    inflight: usize,
    duration: Duration,
    count: Option<u64>,
    rate: Option<f64>,
    clients: usize,
    broker_pid: Option<u32>,
    version: ProtocolVersion,
    json: bool,
    tag: String,
    /// Subscribers keep persistent sessions (clean session 0), so a broker with
    /// persistence stores their messages.
    persistent: bool,
    /// Clients connect over WebSockets (`--ws`).
    ws: bool,
    /// Retained messages published before the measured run (`--retained`).
    retained: usize,
}

fn parse_opts() -> Result<Opts, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut o = getopts::Options::new();
    o.optopt("", "host", "broker host (127.0.0.1)", "HOST");
    o.optopt("p", "port", "broker port (1883)", "PORT");
    o.optopt(
        "s",
        "scenario",
        "fanin | fanout | pairs | connections",
        "NAME",
    );
    o.optopt("q", "qos", "0, 1 or 2 (0)", "QOS");
    o.optopt("", "payload", "payload bytes, at least 20 (64)", "BYTES");
    o.optopt(
        "",
        "inflight",
        "unacknowledged QoS 1/2 messages per publisher (64)",
        "N",
    );
    o.optopt("d", "duration", "seconds of publishing (5)", "SECS");
    o.optopt(
        "n",
        "count",
        "messages per publisher instead of a duration",
        "N",
    );
    o.optopt(
        "r",
        "rate",
        "total messages per second, shared evenly by the publishers (fixed-rate mode)",
        "MSGS",
    );
    o.optopt(
        "c",
        "clients",
        "publishers (fanin), subscribers (fanout), pairs, or connections",
        "N",
    );
    o.optopt(
        "",
        "broker-pid",
        "broker process for CPU and RSS figures",
        "PID",
    );
    o.optopt(
        "",
        "sub-port",
        "subscribers connect to this port instead (a bridge's remote)",
        "PORT",
    );
    o.optopt("", "mqtt", "3 (3.1.1) or 5 (3)", "V");
    o.optopt(
        "",
        "retained",
        "retained messages (QoS 0, bench/retained/I) published before the run (0)",
        "N",
    );
    o.optopt("", "tag", "label for the JSON line", "TEXT");
    o.optflag("", "json", "print one JSON line of results");
    o.optflag(
        "",
        "persistent",
        "subscribers use persistent sessions (clean session 0)",
    );
    o.optflag(
        "",
        "ws",
        "clients speak MQTT over WebSockets (the port is a websockets listener)",
    );
    o.optflag("h", "help", "this help");
    let m = o.parse(&args).map_err(|e| e.to_string())?;
    if m.opt_present("h") {
        print!("{}", o.usage("Usage: midge-bench [options]"));
        std::process::exit(0);
    }
    let num = |name: &str, default: f64| -> Result<f64, String> {
        m.opt_str(name).map_or(Ok(default), |v| {
            v.parse::<f64>()
                .map_err(|_| format!("--{name}: bad number {v}"))
        })
    };
    let host = m.opt_str("host").unwrap_or_else(|| "127.0.0.1".into());
    let port = num("port", 1883.0)? as u16;
    let addr = format!("{host}:{port}")
        .parse()
        .map_err(|e| format!("address {host}:{port}: {e}"))?;
    let sub_addr = match m.opt_str("sub-port") {
        None => None,
        Some(p) => Some(
            format!("{host}:{p}")
                .parse()
                .map_err(|e| format!("--sub-port {p}: {e}"))?,
        ),
    };
    let qos = match num("qos", 0.0)? as u8 {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        q => return Err(format!("--qos {q}")),
    };
    let scenario = m.opt_str("scenario").unwrap_or_else(|| "pairs".into());
    let default_clients = match scenario.as_str() {
        "fanout" => 100.0,
        "connections" => 1000.0,
        _ => 8.0,
    };
    Ok(Opts {
        addr,
        sub_addr,
        qos,
        payload: (num("payload", 64.0)? as usize).max(HEADER),
        inflight: (num("inflight", 64.0)? as usize).max(1),
        duration: Duration::from_secs_f64(num("duration", 5.0)?),
        count: m.opt_str("count").map(|c| c.parse().unwrap_or(1000)),
        rate: m.opt_str("rate").and_then(|r| r.parse().ok()),
        clients: (num("clients", default_clients)? as usize).max(1),
        broker_pid: m.opt_str("broker-pid").and_then(|p| p.parse().ok()),
        version: if num("mqtt", 3.0)? as u8 == 5 {
            ProtocolVersion::V5
        } else {
            ProtocolVersion::V311
        },
        json: m.opt_present("json"),
        tag: m.opt_str("tag").unwrap_or_default(),
        persistent: m.opt_present("persistent"),
        ws: m.opt_present("ws"),
        retained: num("retained", 0.0)? as usize,
        scenario,
    })
}

/// One client connection.
struct Conn {
    stream: TcpStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    connected: bool,
    subscribed: bool,
    closed: bool,
    /// Publisher: topic, next sequence number, unacknowledged packet ids.
    topic: String,
    publisher: Option<u32>,
    seq: u64,
    next_pid: u16,
    unacked: usize,
    /// Publisher: messages the broker refused (error reason code), which no
    /// subscriber will see: they count as progress for the window.
    refused: u64,
    /// WebSocket framing (`--ws`), and the packet being framed.
    ws: Option<WsClient>,
    packet: Vec<u8>,
}

struct Stats {
    sent: u64,
    delivered: u64,
    /// Deliveries per publisher (all subscribers together).
    delivered_from: Vec<u64>,
    /// Deliveries per subscriber connection (fan-out paces by the slowest).
    delivered_to: HashMap<usize, u64>,
    dups: u64,
    /// QoS 1/2 acknowledgements with an error reason code (v5), e.g. 0x97.
    refused: u64,
    latencies_us: Vec<u32>,
    /// (subscriber, publisher) -> bitset of received sequence numbers.
    seen: HashMap<(usize, u32), Vec<u64>>,
}

impl Conn {
    fn open(addr: SocketAddr, ws: bool, seed: u32) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr)?;
        let _ = stream.set_nodelay(true);
        let mut wbuf = Vec::new();
        let ws = ws.then(|| WsClient::start(&addr.to_string(), seed, &mut wbuf));
        Ok(Conn {
            stream,
            rbuf: Vec::new(),
            wbuf,
            wpos: 0,
            connected: false,
            subscribed: false,
            closed: false,
            topic: String::new(),
            publisher: None,
            seq: 0,
            next_pid: 1,
            unacked: 0,
            refused: 0,
            ws,
            packet: Vec::new(),
        })
    }

    fn send(&mut self, version: ProtocolVersion, p: &Packet<'_>) {
        let Some(ws) = self.ws.as_mut() else {
            if encode(p, version, &mut self.wbuf).is_err() {
                self.closed = true;
            }
            return;
        };
        self.packet.clear();
        if encode(p, version, &mut self.packet).is_err() {
            self.closed = true;
            return;
        }
        ws.frame(&self.packet, &mut self.wbuf);
    }

    /// Bytes read from the broker, unframed first over WebSockets.
    fn received(&mut self, bytes: &[u8]) {
        let Some(ws) = self.ws.as_mut() else {
            self.rbuf.extend_from_slice(bytes);
            return;
        };
        if let Unframed::Closed = ws.input(bytes, &mut self.rbuf, &mut self.wbuf) {
            self.closed = true;
        }
    }

    /// A packet identifier for a QoS 1/2 PUBLISH, counted as unacknowledged
    /// (1..=65535: 0 is not a valid identifier [MQTT-2.2.1-3]).
    fn take_pid(&mut self) -> u16 {
        let p = self.next_pid;
        self.next_pid = if p == u16::MAX { 1 } else { p + 1 };
        self.unacked += 1;
        p
    }

    fn pending(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    fn flush(&mut self) {
        while self.wpos < self.wbuf.len() {
            match self.stream.write(&self.wbuf[self.wpos..]) {
                Ok(0) => {
                    self.closed = true;
                    return;
                }
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.closed = true;
                    return;
                }
            }
        }
        self.wbuf.clear();
        self.wpos = 0;
    }
}

fn now_ns(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

/// Resident set size of a process, in kB.
fn rss_kb(pid: u32) -> Option<u64> {
    status_kb(pid, "VmRSS:")
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `midge-bench forwarder --port P`.
fn forwarder_main(args: &[String]) -> Result<(), String> {
    let mut o = getopts::Options::new();
    o.optopt("p", "port", "port on 127.0.0.1 (1883)", "PORT");
    o.optflag("h", "help", "this help");
    let m = o.parse(args).map_err(|e| e.to_string())?;
    if m.opt_present("h") {
        print!("{}", o.usage("Usage: midge-bench forwarder [--port PORT]"));
        return Ok(());
    }
    let port = match m.opt_str("port") {
        None => 1883,
        Some(p) => p.parse().map_err(|_| format!("--port: bad port {p}"))?,
    };
    forwarder::run(port)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "forwarder") {
        if let Err(e) = forwarder_main(&args[1..]) {
            eprintln!("midge-bench forwarder: {e}");
            std::process::exit(1);
        }
        return;
    }
    let o = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("midge-bench: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&o) {
        eprintln!("midge-bench: {e}");
        std::process::exit(1);
    }
}

fn run(o: &Opts) -> Result<(), String> {
    let mut conns: Vec<Conn> = Vec::new();
    let v = o.version;

    // Who is who: (topic published to, subscription filter) per scenario.
    let mut plan: Vec<(Option<String>, Option<String>)> = Vec::new();
    match o.scenario.as_str() {
        "fanin" => {
            plan.push((None, Some("bench/in/+".into())));
            for i in 0..o.clients {
                plan.push((Some(format!("bench/in/{i}")), None));
            }
        }
        "fanout" => {
            for _ in 0..o.clients {
                plan.push((None, Some("bench/out".into())));
            }
            plan.push((Some("bench/out".into()), None));
        }
        "pairs" => {
            for i in 0..o.clients {
                plan.push((None, Some(format!("bench/pair/{i}"))));
                plan.push((Some(format!("bench/pair/{i}")), None));
            }
        }
        "connections" => {
            for i in 0..o.clients {
                plan.push((None, Some(format!("bench/conn/{i}"))));
            }
        }
        s => return Err(format!("unknown scenario {s}")),
    }
    let rss_before = o.broker_pid.and_then(rss_kb);
    let connect_started = Instant::now();
    // Publishers are numbered in plan order.
    let mut publisher_of = Vec::with_capacity(plan.len());
    let mut publishers = 0u32;
    for (pub_topic, _) in &plan {
        publisher_of.push(pub_topic.as_ref().map(|_| {
            publishers += 1;
            publishers - 1
        }));
    }
    let mut stats = Stats {
        sent: 0,
        delivered: 0,
        delivered_from: vec![0; publishers as usize],
        delivered_to: HashMap::new(),
        dups: 0,
        refused: 0,
        latencies_us: Vec::new(),
        seen: HashMap::new(),
    };
    let mut net = Net {
        poll: Poll::new().map_err(|e| e.to_string())?,
        events: Events::with_capacity(1024),
        scratch: vec![0u8; 1 << 16],
        limits: DecodeLimits::new(v, 1 << 28),
        base: Instant::now(),
    };
    // Phase 1: everyone connected and subscribed, at most CONNECT_WINDOW
    // clients between their TCP connect and their SUBACK at a time: a burst
    // of thousands of connects overflows the broker's listen backlog, and the
    // dropped SYNs come back only after seconds of kernel backoff (past a
    // broker's CONNECT timeout).
    let ready_deadline = Instant::now() + Duration::from_secs(60);
    // Clients before `first` are all ready (they finish roughly in order, so
    // counting the rest is short).
    let mut first = 0;
    loop {
        let is_ready = |c: &Conn| c.connected && c.subscribed;
        first += conns[first..].iter().take_while(|c| is_ready(c)).count();
        if first == plan.len() {
            break;
        }
        let waiting = conns[first..].iter().filter(|c| !is_ready(c)).count();
        let mut room = CONNECT_WINDOW.saturating_sub(waiting);
        while room > 0 && conns.len() < plan.len() {
            let i = conns.len();
            conns.push(open_client(&net.poll, o, i, &plan[i], publisher_of[i])?);
            room -= 1;
        }
        if Instant::now() > ready_deadline {
            return Err(format!(
                "only {} of {} clients ready after 60 s",
                conns.len() - waiting,
                plan.len()
            ));
        }
        pump(
            &mut net,
            &mut conns,
            o,
            &mut stats,
            Some(Duration::from_millis(50)),
        )?;
    }
    let connect_time = connect_started.elapsed();
    if o.retained > 0 {
        load_retained(&mut net, &mut conns, o, &mut stats)?;
    }
    if o.scenario == "connections" {
        // Idle with everyone connected: memory and CPU of the broker.
        let rss_after = o.broker_pid.and_then(rss_kb);
        let cpu0 = o.broker_pid.and_then(cpu_seconds);
        let idle = o.duration;
        let end = Instant::now() + idle;
        while Instant::now() < end {
            pump(
                &mut net,
                &mut conns,
                o,
                &mut stats,
                Some(Duration::from_millis(200)),
            )?;
        }
        let cpu1 = o.broker_pid.and_then(cpu_seconds);
        let per_conn = match (rss_before, rss_after) {
            (Some(b), Some(a)) => Some((a.saturating_sub(b)) as f64 * 1024.0 / o.clients as f64),
            _ => None,
        };
        let idle_cpu = match (cpu0, cpu1) {
            (Some(a), Some(b)) => Some((b - a) / idle.as_secs_f64() * 100.0),
            _ => None,
        };
        if o.json {
            println!(
                "{{\"tag\":\"{}\",\"scenario\":\"connections\",\"clients\":{},\"connect_s\":{:.3},\"rss_before_kb\":{},\"rss_after_kb\":{},\"bytes_per_conn\":{},\"idle_cpu_pct\":{}}}",
                o.tag,
                o.clients,
                connect_time.as_secs_f64(),
                rss_before.map_or("null".into(), |v| v.to_string()),
                rss_after.map_or("null".into(), |v| v.to_string()),
                per_conn.map_or("null".into(), |v| format!("{v:.0}")),
                idle_cpu.map_or("null".into(), |v| format!("{v:.3}")),
            );
        } else {
            println!(
                "{} clients connected and subscribed in {:.2} s",
                o.clients,
                connect_time.as_secs_f64()
            );
            if let Some(p) = per_conn {
                println!(
                    "broker RSS {} kB -> {} kB: {p:.0} bytes per connection",
                    rss_before.unwrap_or(0),
                    rss_after.unwrap_or(0)
                );
            }
            if let Some(c) = idle_cpu {
                println!("broker CPU while idle: {c:.3}% of a core");
            }
        }
        return Ok(());
    }

    // Phase 2: publish for the duration (or count), then drain.
    let cpu0 = o.broker_pid.and_then(cpu_seconds);
    let started = Instant::now();
    let per_pub_target = o.count;
    let end = started + o.duration;
    let expected_factor = match o.scenario.as_str() {
        "fanout" => o.clients as u64,
        _ => 1,
    };
    loop {
        let now = Instant::now();
        let publishing = match per_pub_target {
            Some(n) => conns.iter().any(|c| c.publisher.is_some() && c.seq < n),
            None => now < end,
        };
        if publishing {
            // Fixed-rate mode: each publisher's share of the rate, so they
            // all run at the same pace (the first ones do not take the lot).
            let share = o.rate.map(|r| r / f64::from(publishers.max(1)));
            let elapsed = started.elapsed().as_secs_f64();
            for c in conns
                .iter_mut()
                .filter(|c| c.publisher.is_some() && !c.closed)
            {
                let mut budget =
                    share.map_or(u64::MAX, |r| ((elapsed * r) as u64).saturating_sub(c.seq));
                // End-to-end window: a publisher runs at most `window` messages
                // ahead of its subscribers, so the test measures what the broker
                // sustains rather than how deep its queues are (an unpaced
                // publisher only fills max_queued_messages and loses the rest).
                // Fan-out: by the slowest subscriber, so none falls behind
                // by more than the window (an average would hide one that does).
                let progress = if o.scenario == "fanout" {
                    let slowest = stats.delivered_to.values().copied().min().unwrap_or(0);
                    if stats.delivered_to.len() < o.clients {
                        0
                    } else {
                        slowest
                    }
                } else {
                    c.publisher
                        .and_then(|p| stats.delivered_from.get(p as usize))
                        .copied()
                        .unwrap_or(0)
                        / expected_factor
                        + c.refused
                };
                // Fixed-rate mode: the rate paces, and a message the broker
                // lost must not stall its publisher for the rest of the run.
                let window = if o.rate.is_some() {
                    u64::MAX / 2
                } else if o.qos == QoS::AtMostOnce {
                    1000
                } else {
                    o.inflight as u64
                };
                while budget > 0
                    && c.pending() < MAX_PENDING
                    && c.seq < progress + window
                    && (o.qos == QoS::AtMostOnce || c.unacked < o.inflight)
                    && per_pub_target.is_none_or(|n| c.seq < n)
                {
                    let mut payload = vec![0u8; o.payload];
                    payload[0..4].copy_from_slice(&c.publisher.unwrap_or(0).to_be_bytes());
                    payload[4..12].copy_from_slice(&c.seq.to_be_bytes());
                    payload[12..20].copy_from_slice(&now_ns(net.base).to_be_bytes());
                    let pid = if o.qos == QoS::AtMostOnce {
                        0
                    } else {
                        c.take_pid()
                    };
                    let topic = c.topic.clone();
                    c.send(
                        v,
                        &Packet::Publish(Publish {
                            dup: false,
                            qos: o.qos,
                            retain: false,
                            topic: &topic,
                            packet_id: pid,
                            properties: Properties::default(),
                            payload: &payload,
                        }),
                    );
                    c.seq += 1;
                    stats.sent += 1;
                    budget -= 1;
                }
                c.flush();
            }
        } else {
            // Refused messages reach nobody.
            let expected = stats.sent.saturating_sub(stats.refused) * expected_factor;
            let unacked: usize = conns.iter().map(|c| c.unacked).sum();
            if stats.delivered >= expected && unacked == 0 {
                break;
            }
            if now > end.max(started) + Duration::from_secs(10) && per_pub_target.is_none()
                || now > started + Duration::from_secs(600)
            {
                break; // drain timeout: what is missing is loss
            }
        }
        let timeout = if o.rate.is_some() {
            Some(Duration::from_micros(200))
        } else {
            Some(Duration::from_millis(1))
        };
        pump(&mut net, &mut conns, o, &mut stats, timeout)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu1 = o.broker_pid.and_then(cpu_seconds);
    let expected = stats.sent.saturating_sub(stats.refused) * expected_factor;
    let loss = expected.saturating_sub(stats.delivered.saturating_sub(stats.dups));
    stats.latencies_us.sort_unstable();
    let l = &stats.latencies_us;
    let cpu = match (cpu0, cpu1) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let rate = stats.delivered as f64 / elapsed;
    let closed = conns.iter().filter(|c| c.closed).count();
    let per_cpu = cpu.map(|c| stats.delivered as f64 / c.max(0.001));
    if o.json {
        println!(
            "{{\"tag\":\"{}\",\"scenario\":\"{}\",\"qos\":{},\"clients\":{},\"sent\":{},\"delivered\":{},\"loss\":{},\"dups\":{},\"refused\":{},\"closed\":{},\"seconds\":{:.3},\"msgs_per_s\":{:.0},\"broker_cpu_s\":{},\"msgs_per_cpu_s\":{},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{}}}",
            o.tag,
            o.scenario,
            o.qos as u8,
            o.clients,
            stats.sent,
            stats.delivered,
            loss,
            stats.dups,
            stats.refused,
            closed,
            elapsed,
            rate,
            cpu.map_or("null".into(), |c| format!("{c:.3}")),
            per_cpu.map_or("null".into(), |c| format!("{c:.0}")),
            percentile(l, 0.5),
            percentile(l, 0.99),
            percentile(l, 0.999),
        );
    } else {
        println!(
            "{} QoS {}: sent {}, delivered {} ({:.0} msg/s), loss {}, dups {}",
            o.scenario, o.qos as u8, stats.sent, stats.delivered, rate, loss, stats.dups
        );
        println!(
            "latency p50 {} us, p99 {} us, p99.9 {} us",
            percentile(l, 0.5),
            percentile(l, 0.99),
            percentile(l, 0.999)
        );
        if let (Some(c), Some(p)) = (cpu, per_cpu) {
            println!("broker CPU {c:.2} s: {p:.0} delivered messages per broker CPU-second");
        }
        if stats.refused > 0 || closed > 0 {
            println!(
                "refused acknowledgements {}, connections closed by the broker {closed}",
                stats.refused
            );
        }
    }
    Ok(())
}

/// Publish `o.retained` retained QoS 0 messages (10-byte payloads on
/// `bench/retained/I`), spread over the publishers, then one QoS 1 message
/// each as a barrier: the broker handles a connection's packets in order, so
/// when every barrier is acknowledged every retained message is stored.
fn load_retained(
    net: &mut Net,
    conns: &mut [Conn],
    o: &Opts,
    stats: &mut Stats,
) -> Result<(), String> {
    let senders: Vec<usize> = (0..conns.len())
        .filter(|&i| conns[i].publisher.is_some())
        .collect();
    let senders = if senders.is_empty() { vec![0] } else { senders };
    for n in 0..o.retained {
        let c = &mut conns[senders[n % senders.len()]];
        let topic = format!("bench/retained/{n}");
        c.send(
            o.version,
            &Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: true,
                topic: &topic,
                packet_id: 0,
                properties: Properties::default(),
                payload: b"0123456789",
            }),
        );
    }
    for &i in &senders {
        let c = &mut conns[i];
        let pid = c.take_pid();
        c.send(
            o.version,
            &Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: "bench/retained-barrier",
                packet_id: pid,
                properties: Properties::default(),
                payload: b"",
            }),
        );
        c.flush();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while senders
        .iter()
        .any(|&i| conns[i].unacked > 0 && !conns[i].closed)
    {
        if Instant::now() > deadline {
            return Err("retained messages not acknowledged after 60 s".into());
        }
        pump(net, conns, o, stats, Some(Duration::from_millis(50)))?;
    }
    Ok(())
}

/// Clients between their TCP connect and their SUBACK at most (see phase 1
/// of [`run`]).
const CONNECT_WINDOW: usize = 256;

/// Open client `i` of the plan (topic it publishes to, filter it subscribes
/// to), registered with the poll under `Token(i)`, CONNECT and SUBSCRIBE queued.
fn open_client(
    poll: &Poll,
    o: &Opts,
    i: usize,
    (pub_topic, sub_filter): &(Option<String>, Option<String>),
    publisher: Option<u32>,
) -> Result<Conn, String> {
    let io = |e: std::io::Error| e.to_string();
    let v = o.version;
    let addr = match (sub_filter, o.sub_addr) {
        (Some(_), Some(a)) => a,
        _ => o.addr,
    };
    let mut c = Conn::open(addr, o.ws, i as u32 + 1).map_err(io)?;
    poll.registry()
        .register(
            &mut c.stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )
        .map_err(io)?;
    let persistent = o.persistent && sub_filter.is_some();
    // Persistent subscribers keep their ids across runs; their sessions are
    // cleaned by the next run's clean connect-and-go only if asked.
    let id = if persistent {
        format!("bench-sub-{i}")
    } else {
        format!("bench-{}-{i}", std::process::id())
    };
    c.send(
        v,
        &Packet::Connect(Box::new(Connect {
            version: v,
            clean_start: !persistent,
            keep_alive: 300,
            properties: Properties::default(),
            client_id: &id,
            will: None,
            username: None,
            password: None,
        })),
    );
    if let Some(f) = sub_filter {
        c.send(
            v,
            &Packet::Subscribe(Subscribe {
                packet_id: 1,
                properties: Properties::default(),
                filters: vec![(
                    f.as_str(),
                    SubscriptionOptions {
                        qos: o.qos,
                        ..Default::default()
                    },
                )],
            }),
        );
    } else {
        c.subscribed = true;
    }
    if let Some(t) = pub_topic {
        c.topic = t.clone();
        c.publisher = publisher;
    }
    Ok(c)
}

/// The generator's loop machinery, which only [`pump`] drives: the poll, its
/// events, the read buffer, the decoder's limits and the clock's origin for
/// latency stamps.
struct Net {
    poll: Poll,
    events: Events,
    scratch: Vec<u8>,
    limits: DecodeLimits,
    base: Instant,
}

/// One poll round: read and answer everything that arrived, flush output.
fn pump(
    net: &mut Net,
    conns: &mut [Conn],
    o: &Opts,
    stats: &mut Stats,
    timeout: Option<Duration>,
) -> Result<(), String> {
    let Net {
        poll,
        events,
        scratch,
        limits,
        base,
    } = net;
    let base = *base;
    match poll.poll(events, timeout) {
        // A signal (a job-control one from the calling shell): just a short round.
        Err(e) if e.kind() == ErrorKind::Interrupted => events.clear(),
        r => r.map_err(|e| e.to_string())?,
    }
    let v = o.version;
    let mut touched: Vec<usize> = events.iter().map(|e| e.token().0).collect();
    touched.sort_unstable();
    touched.dedup();
    for i in touched {
        let Some(c) = conns.get_mut(i) else { continue };
        loop {
            match c.stream.read(scratch) {
                Ok(0) => {
                    c.closed = true;
                    break;
                }
                Ok(n) => c.received(&scratch[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    c.closed = true;
                    break;
                }
            }
        }
        let mut pos = 0;
        let mut replies: Vec<Packet<'static>> = Vec::new();
        while let Ok(Decoded::Packet(p, used)) = decode(&c.rbuf[pos..], limits) {
            pos += used;
            match p {
                Packet::ConnAck(_) => c.connected = true,
                Packet::SubAck(_) => c.subscribed = true,
                Packet::PubAck(r) | Packet::PubComp(r) => {
                    c.unacked = c.unacked.saturating_sub(1);
                    c.refused += u64::from(r.reason.is_error());
                    stats.refused += u64::from(r.reason.is_error());
                }
                // A refused PUBREC ends the exchange [MQTT-4.3.3-4]: no PUBREL.
                Packet::PubRec(r) if r.reason.is_error() => {
                    c.unacked = c.unacked.saturating_sub(1);
                    c.refused += 1;
                    stats.refused += 1;
                }
                Packet::PubRec(r) => replies.push(Packet::PubRel(PubResp::success(r.packet_id))),
                Packet::PubRel(r) => replies.push(Packet::PubComp(PubResp::success(r.packet_id))),
                Packet::Publish(p) => {
                    stats.delivered += 1;
                    if p.payload.len() >= HEADER {
                        let publisher =
                            u32::from_be_bytes(p.payload[0..4].try_into().unwrap_or([0; 4]));
                        let seq = u64::from_be_bytes(p.payload[4..12].try_into().unwrap_or([0; 8]));
                        let sent =
                            u64::from_be_bytes(p.payload[12..20].try_into().unwrap_or([0; 8]));
                        let lat = now_ns(base).saturating_sub(sent) / 1000;
                        stats.latencies_us.push(lat.min(u64::from(u32::MAX)) as u32);
                        *stats.delivered_to.entry(i).or_default() += 1;
                        if let Some(d) = stats.delivered_from.get_mut(publisher as usize) {
                            *d += 1;
                        }
                        let seen = stats.seen.entry((i, publisher)).or_default();
                        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
                        if seen.len() <= word {
                            seen.resize(word + 1, 0);
                        }
                        if seen[word] & bit != 0 {
                            stats.dups += 1;
                        }
                        seen[word] |= bit;
                    }
                    match p.qos {
                        QoS::AtMostOnce => {}
                        QoS::AtLeastOnce => {
                            replies.push(Packet::PubAck(PubResp::success(p.packet_id)))
                        }
                        QoS::ExactlyOnce => {
                            replies.push(Packet::PubRec(PubResp::success(p.packet_id)))
                        }
                    }
                }
                _ => {}
            }
        }
        c.rbuf.drain(..pos);
        for r in &replies {
            c.send(v, r);
        }
        c.flush();
    }
    for c in conns.iter_mut() {
        if c.pending() > 0 {
            c.flush();
        }
    }
    Ok(())
}
