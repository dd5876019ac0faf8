//! The `$SYS/broker/...` tree: mosquitto's topic names and payload formats, so
//! monitoring written for mosquitto (Home Assistant diagnostics, exporters, MQTT
//! Explorer) reads midge unchanged, plus a few midge figures under the same tree.
//!
//! Every `sys_interval` a wheel timer fires; the values are gathered from plain
//! counters the core keeps ([`super::Stats`]) and from the I/O layer's byte counts
//! ([`super::IoCounters`]), and each one whose text changed since it was last
//! published goes out as a retained message, routed like any other: read ACLs
//! apply on delivery, and `#` or `+/...` filters do not match it [MQTT-4.7.2-1].
//! With `sys_interval 0` no timer is ever armed, so an idle broker still sleeps.
//!
//! The retained copies are not written to the persistence log: they are rebuilt
//! at every start, and logging them every interval would only grow the log.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::message::Message;
use super::output::{Timer, TimerKind};
use super::session::Queued;
use super::{Broker, IoCounters, Output, Stats};
use crate::bridge::BridgeStats;
use crate::protocol::QoS;

/// Where every topic lives.
const ROOT: &str = "$SYS/broker/";

/// The moving averages: topic below `$SYS/broker/load/`, one per measured rate.
const LOADS: [&str; 9] = [
    "messages/received",
    "messages/sent",
    "publish/dropped",
    "publish/received",
    "publish/sent",
    "bytes/received",
    "bytes/sent",
    "sockets",
    "connections",
];

/// Averaging windows of the loads: (suffix, seconds), as mosquitto's.
const WINDOWS: [(&str, f64); 3] = [("1min", 60.0), ("5min", 300.0), ("15min", 900.0)];

/// A change of a load smaller than this is not published (mosquitto's rule).
const LOAD_EPSILON: f64 = 0.01;

/// State between two refreshes.
#[derive(Debug)]
pub(super) struct SysTree {
    interval: Duration,
    started: Instant,
    /// Time and counter values of the previous refresh (None before the first).
    previous: Option<(Instant, [u64; 9])>,
    /// Current value of each load, per window.
    loads: [[f64; 3]; 9],
    /// Most sessions seen at a refresh (`clients/maximum`).
    max_clients: usize,
    /// Most heap bytes seen at a refresh (`heap/maximum`).
    max_heap: u64,
    /// Last payload published on each topic (suffix after [`ROOT`]).
    published: HashMap<Cow<'static, str>, String>,
    /// Each bridge's remote client id and counters, as the server last gave
    /// them (see [`Broker::set_bridge_stats`]).
    bridges: Vec<(Box<str>, BridgeStats)>,
}

impl SysTree {
    fn new(interval: Duration, now: Instant) -> Self {
        SysTree {
            interval,
            started: now,
            previous: None,
            loads: [[0.0; 3]; 9],
            max_clients: 0,
            max_heap: 0,
            published: HashMap::new(),
            bridges: Vec::new(),
        }
    }

    /// The counters the loads are computed from, in [`LOADS`] order.
    fn load_counters(stats: &Stats, io: &IoCounters) -> [u64; 9] {
        [
            stats.packets_received,
            io.packets_sent,
            stats.messages_dropped,
            stats.messages_received,
            stats.messages_sent,
            io.bytes_received,
            io.bytes_sent,
            stats.sockets_opened,
            stats.connects,
        ]
    }

    /// Advance the loads to `now`; returns the (topic, payload) pairs to publish.
    /// The first refresh publishes every load at 0.00; later ones publish a load
    /// when it moved by at least 0.01. Each is an exponentially weighted moving
    /// average of the per-minute rate over the last interval, decaying with
    /// exp(-elapsed / window), as mosquitto computes it.
    fn advance_loads(&mut self, now: Instant, counters: [u64; 9]) -> Vec<(String, String)> {
        let mut changed = Vec::new();
        let previous = self.previous.replace((now, counters));
        for (i, name) in LOADS.iter().enumerate() {
            for (w, (suffix, window)) in WINDOWS.iter().enumerate() {
                let topic = format!("load/{name}/{suffix}");
                let current = self.loads[i][w];
                let Some((then, before)) = previous else {
                    changed.push((topic, format!("{current:.2}")));
                    continue;
                };
                let elapsed = now.saturating_duration_since(then).as_secs_f64();
                if elapsed <= 0.0 {
                    continue;
                }
                let per_minute = counters[i].saturating_sub(before[i]) as f64 * 60.0 / elapsed;
                let decay = (-elapsed / window).exp();
                let next = per_minute + decay * (current - per_minute);
                self.loads[i][w] = next;
                if (next - current).abs() >= LOAD_EPSILON {
                    changed.push((topic, format!("{next:.2}")));
                }
            }
        }
        changed
    }
}

impl Broker {
    /// The counters of bridge `index` (remote client id `remote_id`) changed:
    /// they are published at the next refresh under
    /// `$SYS/broker/connection/<remote_id>/messages/...`, and their drops
    /// are added to the broker-wide dropped counters. A no-op without a `$SYS`
    /// tree.
    pub fn set_bridge_stats(&mut self, index: usize, remote_id: &str, stats: BridgeStats) {
        let Some(tree) = self.sys_tree.as_mut() else {
            return;
        };
        if tree.bridges.len() <= index {
            tree.bridges
                .resize_with(index + 1, || (Box::from(""), BridgeStats::default()));
        }
        let entry = &mut tree.bridges[index];
        if &*entry.0 != remote_id {
            entry.0 = remote_id.into();
        }
        entry.1 = stats;
    }

    /// Start publishing the `$SYS` tree every `sys_interval` (no-op when it is 0):
    /// the static `version` now, the first refresh at once.
    pub fn start_sys_tree(&mut self, now: Instant, out: &mut impl Output) {
        let interval = self.config.sys_interval;
        if interval.is_zero() || self.sys_tree.is_some() {
            return;
        }
        self.sys_tree = Some(Box::new(SysTree::new(interval, now)));
        let version = format!("midge version {}", env!("CARGO_PKG_VERSION"));
        self.publish_sys(now, "$SYS/broker/version", version, out);
        self.sys_tree_tick(now, out);
    }

    /// Refresh the tree: publish what changed, arm the next refresh.
    pub(super) fn sys_tree_tick(&mut self, now: Instant, out: &mut impl Output) {
        let Some(mut tree) = self.sys_tree.take() else {
            return;
        };
        let io = out.io_counters();
        let mut stats = self.stats;
        // A bridge's drops are drops of the broker too (its local side is one
        // more client), counted by the bridge because it decides them.
        for (_, b) in &tree.bridges {
            stats.messages_dropped += b.dropped_backlog + b.dropped_too_large;
            stats.dropped_backlog += b.dropped_backlog;
            stats.dropped_too_large += b.dropped_too_large;
        }
        let mut values: Vec<(&'static str, String)> = Vec::with_capacity(40);
        let uptime = now.saturating_duration_since(tree.started).as_secs();
        values.push(("uptime", format!("{uptime} seconds")));

        let total = self.sessions.len();
        let connected = stats.clients_connected;
        tree.max_clients = tree.max_clients.max(total);
        values.push(("clients/total", total.to_string()));
        values.push(("clients/maximum", tree.max_clients.to_string()));
        values.push(("clients/connected", connected.to_string()));
        values.push(("clients/active", connected.to_string()));
        let disconnected = total.saturating_sub(connected);
        values.push(("clients/disconnected", disconnected.to_string()));
        values.push(("clients/inactive", disconnected.to_string()));
        values.push(("clients/expired", stats.clients_expired.to_string()));

        values.push(("messages/received", stats.packets_received.to_string()));
        values.push(("messages/sent", io.packets_sent.to_string()));
        values.push((
            "publish/messages/received",
            stats.messages_received.to_string(),
        ));
        values.push(("publish/messages/sent", stats.messages_sent.to_string()));
        values.push((
            "publish/messages/dropped",
            stats.messages_dropped.to_string(),
        ));
        values.push((
            "publish/bytes/received",
            stats.publish_bytes_received.to_string(),
        ));
        values.push(("publish/bytes/sent", stats.publish_bytes_sent.to_string()));
        values.push(("bytes/received", io.bytes_received.to_string()));
        values.push(("bytes/sent", io.bytes_sent.to_string()));

        let (stored, stored_bytes, on_disk) = self.stored_messages();
        values.push(("messages/stored", stored.to_string()));
        values.push(("store/messages/count", stored.to_string()));
        values.push(("store/messages/bytes", stored_bytes.to_string()));
        values.push(("retained messages/count", self.retained.len().to_string()));
        values.push(("subscriptions/count", self.subscriptions.len().to_string()));
        values.push(("shared_subscriptions/count", self.shared.len().to_string()));

        // midge's own figures.
        values.push((
            "publish/messages/dropped/backlog",
            stats.dropped_backlog.to_string(),
        ));
        values.push((
            "publish/messages/dropped/queue full",
            stats.dropped_queue_full.to_string(),
        ));
        values.push((
            "publish/messages/dropped/too large",
            stats.dropped_too_large.to_string(),
        ));
        values.push((
            "publish/messages/dropped/memory limit",
            stats.dropped_memory_limit.to_string(),
        ));
        values.push((
            "publish/messages/refused/memory limit",
            stats.refused_memory_limit.to_string(),
        ));
        // mosquitto counts every allocation for these; midge reads the
        // allocator's own figure at each refresh, so `maximum` is the highest
        // value seen at a refresh, not between two.
        if let Some(heap) = io.heap_bytes {
            tree.max_heap = tree.max_heap.max(heap);
            values.push(("heap/current", heap.to_string()));
            values.push(("heap/maximum", tree.max_heap.to_string()));
        }
        if let Some(size) = io.persistence_log_bytes {
            values.push(("persistence/log/bytes", size.to_string()));
            values.push(("persistence/queued/count", on_disk.to_string()));
        }

        let mut changed: Vec<(String, String)> = Vec::new();
        // Per bridge (midge), beside mosquitto's `connection/<id>/state`.
        let mut per_bridge: Vec<(Cow<'static, str>, String)> = Vec::new();
        for (id, b) in &tree.bridges {
            for (what, n) in [
                ("sent", b.sent),
                ("received", b.received),
                ("dropped/backlog", b.dropped_backlog),
                ("dropped/too large", b.dropped_too_large),
            ] {
                let topic = format!("connection/{id}/messages/{what}");
                per_bridge.push((topic.into(), n.to_string()));
            }
        }
        let values = values
            .into_iter()
            .map(|(k, v)| (Cow::Borrowed(k), v))
            .chain(per_bridge);
        for (suffix, value) in values {
            if tree.published.get(&suffix) != Some(&value) {
                changed.push((format!("{ROOT}{suffix}"), value.clone()));
                tree.published.insert(suffix, value);
            }
        }
        let counters = SysTree::load_counters(&stats, &io);
        for (suffix, value) in tree.advance_loads(now, counters) {
            changed.push((format!("{ROOT}{suffix}"), value));
        }
        let next = now + tree.interval;
        self.sys_tree = Some(tree);
        for (topic, payload) in changed {
            self.publish_sys(now, &topic, payload, out);
        }
        out.set_timer(next, Timer::new(TimerKind::SysTree, 0));
    }

    /// Messages the broker holds (retained, queued, in flight): count, payload
    /// bytes, and how many of the queued ones live only in the persistence log.
    /// A walk over sessions and the retained store, once per `sys_interval`.
    fn stored_messages(&self) -> (usize, u64, usize) {
        let mut count = self.retained.len();
        let mut bytes = 0u64;
        self.retained
            .for_each(|_, r| bytes += r.msg.payload.len() as u64);
        let mut on_disk = 0;
        for (_, s) in self.sessions.iter() {
            count += s.queue.len() + s.inflight.len();
            bytes += s.queued_bytes() as u64;
            bytes += s
                .inflight
                .iter()
                .map(|i| i.out.msg.payload.len() as u64)
                .sum::<u64>();
            on_disk += s
                .queue
                .iter()
                .filter(|q| matches!(q, Queued::Disk(_)))
                .count();
        }
        (count, bytes, on_disk)
    }

    /// Publish one `$SYS` value: retained (kept in RAM only), QoS 2 as mosquitto
    /// (subscribers get it at their granted QoS), routed under the read ACLs.
    fn publish_sys(&mut self, now: Instant, topic: &str, payload: String, out: &mut impl Output) {
        let msg = Arc::new(Message {
            topic: topic.into(),
            payload: payload.into_bytes().into_boxed_slice().into(),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: None,
            received: now,
        });
        // The broker's own bounded set of topics: never refused by the limits
        // that keep clients in check.
        self.retained
            .insert_unchecked(super::retained::Retained::unchecked(Arc::clone(&msg)));
        self.route(now, &msg, None, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{BrokerConfig, ConnId};
    use crate::persist::Record;
    use crate::protocol::{Packet, ProtocolVersion};

    /// Keeps the timers and the retained topics written to the log.
    #[derive(Default)]
    struct Out {
        timers: Vec<(Instant, Timer)>,
        logged_retained: Vec<String>,
    }

    impl Output for Out {
        fn send(&mut self, _: ConnId, _: ProtocolVersion, _: &Packet<'_>) {}
        fn send_after_commit(&mut self, _: ConnId, _: ProtocolVersion, _: &Packet<'_>) {}
        fn request_load(&mut self, _: crate::broker::Load) {}
        fn pending_bytes(&self, _: ConnId) -> usize {
            0
        }
        fn close(&mut self, _: ConnId) {}
        fn set_timer(&mut self, at: Instant, timer: Timer) {
            self.timers.push((at, timer));
        }
        fn persist(&mut self, record: &Record<'_>) {
            if let Record::RetainSet(m) = record {
                self.logged_retained.push(m.topic.to_string());
            }
        }
    }

    #[test]
    fn the_tree_is_retained_in_ram_only_and_refreshed_on_the_wheel() {
        let now = Instant::now();
        let mut b = Broker::new(BrokerConfig::default());
        b.enable_persistence(0, 0);
        let mut out = Out::default();
        b.start_sys_tree(now, &mut out);
        assert!(b.retained_count() > 30, "{}", b.retained_count());
        let next = now + Duration::from_secs(10);
        assert_eq!(out.timers.len(), 1);
        assert_eq!(out.timers[0].0, next);
        assert!(matches!(out.timers[0].1.kind, TimerKind::SysTree));
        // Neither as it is published nor when the log is compacted.
        let mut dumped = Vec::new();
        b.dump(&mut |r| {
            if let Record::RetainSet(m) = r {
                dumped.push(m.topic.to_string());
            }
        });
        assert_eq!(out.logged_retained, Vec::<String>::new());
        assert_eq!(dumped, Vec::<String>::new());
        let timer = out.timers[0].1;
        b.handle_timer(next, timer, &mut out);
        assert_eq!(out.timers.len(), 2);
        assert_eq!(out.timers[1].0, next + Duration::from_secs(10));
    }

    #[test]
    fn sys_interval_zero_publishes_nothing_and_arms_nothing() {
        let config = BrokerConfig {
            sys_interval: Duration::ZERO,
            ..BrokerConfig::default()
        };
        let mut b = Broker::new(config);
        let mut out = Out::default();
        b.start_sys_tree(Instant::now(), &mut out);
        assert_eq!(b.retained_count(), 0);
        assert!(out.timers.is_empty());
    }

    #[test]
    fn first_refresh_publishes_every_load_at_zero() {
        let t0 = Instant::now();
        let mut tree = SysTree::new(Duration::from_secs(10), t0);
        let first = tree.advance_loads(t0, [0; 9]);
        assert_eq!(first.len(), LOADS.len() * WINDOWS.len());
        assert!(first.iter().all(|(_, v)| v == "0.00"));
        assert!(first
            .iter()
            .any(|(t, _)| t == "load/publish/received/15min"));
    }

    #[test]
    fn loads_follow_mosquittos_moving_average() {
        let t0 = Instant::now();
        let mut tree = SysTree::new(Duration::from_secs(10), t0);
        tree.advance_loads(t0, [0; 9]);
        // 100 PUBLISH received in 10 s: 600 per minute; the 1-minute load moves
        // from 0 to 600 * (1 - exp(-10/60)) = 92.11.
        let mut c = [0; 9];
        c[3] = 100;
        let t1 = t0 + Duration::from_secs(10);
        let changed = tree.advance_loads(t1, c);
        let get = |t: &str| {
            changed
                .iter()
                .find(|(k, _)| k == t)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("load/publish/received/1min"), Some("92.11"));
        // 600 * (1 - exp(-10/300)) = 19.67; 600 * (1 - exp(-10/900)) = 6.63.
        assert_eq!(get("load/publish/received/5min"), Some("19.67"));
        assert_eq!(get("load/publish/received/15min"), Some("6.63"));
        // Loads that stayed at 0 are not published again.
        assert_eq!(get("load/sockets/1min"), None);
        // Nothing more arrives: the load decays, 92.11 * exp(-10/60) = 77.97.
        let changed = tree.advance_loads(t1 + Duration::from_secs(10), c);
        let get = |t: &str| {
            changed
                .iter()
                .find(|(k, _)| k == t)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("load/publish/received/1min"), Some("77.97"));
    }
}
