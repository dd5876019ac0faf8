//! SUBSCRIBE and UNSUBSCRIBE: the subscription index, SUBACK/UNSUBACK, and the
//! retained messages a new subscription receives.

use std::collections::HashSet;
use std::time::Instant;

use log::debug;

use super::filter_log::{FilterLog, Refused};
use super::session::FilterRef;
use super::topic_index::Subscription;
use super::{Broker, ConnId, End, Output};
use crate::logging::LogStr;
use crate::protocol::topic::parse_shared;
use crate::protocol::{
    Packet, QoS, ReasonCode, RetainHandling, SubAck, Subscribe, UnsubAck, Unsubscribe,
};

impl Broker {
    pub(super) fn handle_subscribe(
        &mut self,
        now: Instant,
        conn: ConnId,
        skey: usize,
        sub: &Subscribe<'_>,
        out: &mut impl Output,
    ) {
        let Some(s) = self.sessions.get(skey) else {
            return;
        };
        let version = s.version;
        let client = s.client_id.clone();
        let max_qos = self.max_qos(s.listener());
        // `mount_point`: each filter as the broker keeps it (`None`: not a
        // valid filter under the prefix); no copies without a mount point.
        let mounted: Option<Vec<Option<String>>> = self.mount_point(s.listener()).map(|m| {
            sub.filters
                .iter()
                .map(|(f, _)| super::mount::filter(Some(m), f).map(|f| f.into_owned()))
                .collect()
        });
        let mut log = FilterLog::subscribe();
        let identifier = sub.properties.subscription_identifiers.first().copied();
        let mut reasons = Vec::with_capacity(sub.filters.len());
        // A filter repeated in one SUBSCRIBE: processed in sequence, each would
        // replace the last [MQTT-3.8.4-3/4], so only its last occurrence is
        // processed and the earlier ones get its reason code. 20,000 copies of `#`
        // cost one subscription and one retained replay.
        let last = last_occurrences(&sub.filters);
        let mut repeats = Vec::new();
        // Retained messages go out after the SUBACK, paced by `poll_replay`.
        let mut replays: Vec<(&str, QoS)> = Vec::new();
        for (i, (filter, options)) in sub.filters.iter().enumerate() {
            let winner = last.as_ref().and_then(|l| l.get(i)).map(|&j| j as usize);
            if let Some(j) = winner.filter(|&j| j != i) {
                repeats.push((i, j));
                reasons.push(ReasonCode::SUCCESS);
                continue;
            }
            let filter: &str = match &mounted {
                None => filter,
                Some(m) => match m.get(i).and_then(|f| f.as_deref()) {
                    Some(f) => f,
                    None => {
                        log.filter(&client, filter, options.qos as u8);
                        log.refused(Refused::Unmountable);
                        reasons.push(ReasonCode::TOPIC_FILTER_INVALID);
                        continue;
                    }
                },
            };
            log.filter(&client, filter, options.qos as u8);
            let max_levels = self.config.max_topic_levels;
            if max_levels != 0 && super::topic_levels(filter) > max_levels {
                log.refused(Refused::TooDeep);
                reasons.push(ReasonCode::TOPIC_FILTER_INVALID);
                continue;
            }
            let max_subs = self.config.max_subscriptions_per_client;
            let held = self.sessions.get(skey).map_or(0, |s| s.subscriptions.len());
            // Replacing a subscription does not count against the limit.
            let replacing = if parse_shared(filter).is_some() {
                self.shared.is_member(filter, skey)
            } else {
                self.subscriptions.get(filter, skey).is_some()
            };
            if max_subs != 0 && held >= max_subs && !replacing {
                log.refused(Refused::Quota);
                reasons.push(ReasonCode::QUOTA_EXCEEDED);
                continue;
            }
            // A shared subscription is judged by its plain filter.
            let acl_filter = parse_shared(filter).map_or(filter, |(_, f)| f);
            let allowed = self.sessions.get(skey).is_some_and(|s| {
                self.security.listener(s.listener()).may_subscribe(
                    &s.client_id,
                    s.username.as_deref(),
                    acl_filter,
                )
            });
            if !allowed {
                // Entirely denied by the ACL: refused up front (3.1.1: 0x80).
                log.refused(Refused::Denied);
                reasons.push(ReasonCode::NOT_AUTHORIZED);
                continue;
            }
            // Granted at most the listener's `max_qos` (3.9.3: the server may
            // grant a lower QoS than requested).
            let granted = options.qos.min(max_qos);
            let mut stored = *options;
            stored.qos = granted;
            if self.conns.get(&conn).is_some_and(|c| c.bridge) && parse_shared(filter).is_none() {
                // A bridge (level | 0x80) gets what mosquitto gives it: never its
                // own messages back (loop safety) and retained flags as published.
                stored.no_local = true;
                stored.retain_as_published = true;
            }
            // Shared subscriptions are an MQTT 5 feature; mosquitto accepts them
            // from 3.1.1 clients too, and so does midge.
            if let Some((_, plain)) = parse_shared(filter) {
                if options.no_local {
                    // [MQTT-3.8.3-4] No Local on a shared subscription.
                    self.end(
                        now,
                        conn,
                        End::ProtocolError(ReasonCode::PROTOCOL_ERROR),
                        out,
                    );
                    return;
                }
                let sub = Subscription {
                    options: stored,
                    identifier,
                };
                if self.shared.subscribe(filter, plain, skey, sub) {
                    self.sessions[skey]
                        .subscriptions
                        .push(FilterRef::Shared(filter));
                }
                self.persist_subscription(skey, filter, true, out);
                // No retained messages for a shared subscription (4.8.2).
                reasons.push(ReasonCode(granted as u8));
                continue;
            }
            // [MQTT-3.8.4-3] an identical filter replaces the old subscription.
            let is_new = self.subscriptions.subscribe(
                filter,
                skey,
                Subscription {
                    options: stored,
                    identifier,
                },
            );
            if let Some(id) = self.subscriptions.id(filter).filter(|_| is_new) {
                self.sessions[skey].subscriptions.push(FilterRef::Plain(id));
            }
            // One record per subscription, not the whole list again.
            self.persist_subscription(skey, filter, true, out);
            reasons.push(ReasonCode(granted as u8));
            // [MQTT-3.3.1-8] / 3.8.4: retained messages on subscribe, per Retain
            // Handling (v5; always for 3.1.1).
            let send = match options.retain_handling {
                RetainHandling::SendAtSubscribe => true,
                RetainHandling::SendIfNew => is_new,
                RetainHandling::DoNotSend => false,
            };
            if send {
                replays.push((filter, granted));
            }
        }
        for (i, j) in repeats {
            if let Some(&r) = reasons.get(j) {
                reasons[i] = r;
            }
        }
        // One summary line per packet, within the connection's budget.
        let complaint = if log.refusals() > 0 {
            self.complain(conn, log::Level::Info)
        } else {
            None
        };
        log.finish(
            &client,
            self.config.max_topic_levels,
            self.config.max_subscriptions_per_client,
            complaint,
        );
        out.send_after_commit(
            conn,
            version,
            &Packet::SubAck(SubAck {
                packet_id: sub.packet_id,
                properties: Default::default(),
                reasons,
            }),
        );
        for (filter, granted) in replays {
            if !self.start_replay(skey, filter, granted, identifier) {
                debug!(
                    "Client {} has too many retained replays pending: none for {}.",
                    LogStr(&client),
                    LogStr(filter)
                );
            }
        }
    }

    /// Take `skey`'s subscription to `filter` (plain or shared) out of the
    /// index; what the session held, if it was there.
    fn unsubscribe_filter<'f>(&mut self, filter: &'f str, skey: usize) -> Option<FilterRef<'f>> {
        if parse_shared(filter).is_some() {
            let existed = self.shared.unsubscribe(filter, skey);
            existed.then_some(FilterRef::Shared(filter))
        } else {
            // The id goes with the filter's last subscriber: read it first.
            let id = self.subscriptions.id(filter)?;
            let existed = self.subscriptions.unsubscribe_id(id, skey);
            existed.then_some(FilterRef::Plain(id))
        }
    }

    /// Take one of the filters session `skey` holds out of the index.
    pub(super) fn unsubscribe_held(&mut self, filter: FilterRef<'_>, skey: usize) {
        match filter {
            FilterRef::Plain(id) => self.subscriptions.unsubscribe_id(id, skey),
            FilterRef::Shared(f) => self.shared.unsubscribe(f, skey),
        };
    }

    /// The text of a filter a session holds.
    pub(super) fn filter_text<'a>(&'a self, filter: FilterRef<'a>) -> &'a str {
        match filter {
            FilterRef::Plain(id) => self.subscriptions.filter(id),
            FilterRef::Shared(f) => f,
        }
    }

    pub(super) fn handle_unsubscribe(
        &mut self,
        conn: ConnId,
        skey: usize,
        u: &Unsubscribe<'_>,
        out: &mut impl Output,
    ) {
        let Some(s) = self.sessions.get(skey) else {
            return;
        };
        let version = s.version;
        let client_id = s.client_id.clone();
        let mut log = FilterLog::unsubscribe();
        // The index says in O(1) whether the subscription exists; the session's
        // list is then filtered once. (A search of the list per filter froze the
        // loop for 1.6 s on a 1.8 MB UNSUBSCRIBE: issue 10 item 8.) A filter
        // named twice is removed once; the second gets 0x11.
        let mut reasons = Vec::with_capacity(u.filters.len());
        // `mount_point`: the filters as they were subscribed (see SUBSCRIBE).
        let listener = s.listener();
        let mounted: Vec<std::borrow::Cow<'_, str>> = u
            .filters
            .iter()
            .map(|f| super::mount::filter(self.mount_point(listener), f).unwrap_or_default())
            .collect();
        let mut removed: HashSet<&str> = HashSet::new();
        let mut held: HashSet<FilterRef<'_>> = HashSet::new();
        for filter in &mounted {
            let filter: &str = filter;
            log.filter(&client_id, filter, 0);
            let gone = self.unsubscribe_filter(filter, skey);
            let existed = gone.is_some();
            if let Some(f) = gone {
                removed.insert(filter);
                held.insert(f);
            }
            reasons.push(if existed {
                ReasonCode::SUCCESS
            } else {
                ReasonCode::NO_SUBSCRIPTION_EXISTED
            });
        }
        log.finish(&client_id, 0, 0, None);
        if !removed.is_empty() {
            if let Some(s) = self.sessions.get_mut(skey) {
                s.subscriptions.retain(|f| !held.contains(&f));
            }
        }
        for filter in &removed {
            self.persist_subscription(skey, filter, false, out);
        }
        if !version.is_v5() {
            reasons.clear();
        }
        out.send_after_commit(
            conn,
            version,
            &Packet::UnsubAck(UnsubAck {
                packet_id: u.packet_id,
                properties: Default::default(),
                reasons,
            }),
        );
    }
}

/// For a SUBSCRIBE with repeated filters, the index of the last occurrence of
/// each entry's filter; None when no filter repeats. Sorting indices costs 8
/// bytes per filter, a fraction of what each costs decoded.
fn last_occurrences<T>(filters: &[(&str, T)]) -> Option<Vec<u32>> {
    let n = u32::try_from(filters.len()).ok()?;
    if n < 2 {
        return None;
    }
    let name = |i: u32| filters.get(i as usize).map_or("", |f| f.0);
    let mut order: Vec<u32> = (0..n).collect();
    // Stable: equal filters stay in packet order, the last one last.
    order.sort_by(|&a, &b| name(a).cmp(name(b)));
    if order.windows(2).all(|w| name(w[0]) != name(w[1])) {
        return None;
    }
    let mut last = vec![0u32; filters.len()];
    for run in order.chunk_by(|&a, &b| name(a) == name(b)) {
        let winner = run.last().copied().unwrap_or(0);
        for &i in run {
            if let Some(l) = last.get_mut(i as usize) {
                *l = winner;
            }
        }
    }
    Some(last)
}
