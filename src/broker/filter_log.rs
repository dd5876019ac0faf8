//! The log lines of one SUBSCRIBE or UNSUBSCRIBE: a bounded number per packet,
//! whatever the number of filters in it. Each filter of the first
//! [`FILTER_LINES`] gets a `subscribe`/`unsubscribe` line (mosquitto's format:
//! client id, QoS, filter) and a debug line; the rest are counted in one line.
//! Refused filters are counted by cause and reported in one summary line, which
//! is a complaint (it spends the connection's budget, see
//! `crate::logging::Complaints`).

use log::{debug, info};

use crate::logging::{LogStr, SUBSCRIBE, UNSUBSCRIBE};

/// Filters per packet that get their own lines.
pub(super) const FILTER_LINES: usize = 10;

/// Why a filter was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// Deeper than `max_topic_levels`.
    TooDeep,
    /// The client is at `max_subscriptions_per_client`.
    Quota,
    /// The ACL gives no read access through it.
    Denied,
    /// With the listener's `mount_point` in front it is no valid filter.
    Unmountable,
}

/// Lines for one packet's filters.
#[derive(Debug, Default)]
pub(super) struct FilterLog {
    unsubscribe: bool,
    listed: usize,
    too_deep: usize,
    quota: usize,
    denied: usize,
    unmountable: usize,
}

impl FilterLog {
    /// For a SUBSCRIBE (its "Received SUBSCRIBE" line is the server's, with
    /// every packet's: `crate::logging::PacketLine`).
    pub(super) fn subscribe() -> FilterLog {
        FilterLog::default()
    }

    /// For an UNSUBSCRIBE.
    pub(super) fn unsubscribe() -> FilterLog {
        FilterLog {
            unsubscribe: true,
            ..FilterLog::default()
        }
    }

    /// One filter of the packet (`qos`: requested, for SUBSCRIBE).
    pub(super) fn filter(&mut self, client: &str, filter: &str, qos: u8) {
        self.listed += 1;
        if self.listed > FILTER_LINES {
            return;
        }
        if self.unsubscribe {
            debug!("\t{}", LogStr(filter));
            info!(target: UNSUBSCRIBE, "{} {}", LogStr(client), LogStr(filter));
        } else {
            debug!("\t{} (QoS {qos})", LogStr(filter));
            info!(target: SUBSCRIBE, "{} {qos} {}", LogStr(client), LogStr(filter));
        }
    }

    /// The filter just listed was refused.
    pub(super) fn refused(&mut self, why: Refused) {
        match why {
            Refused::TooDeep => self.too_deep += 1,
            Refused::Quota => self.quota += 1,
            Refused::Denied => self.denied += 1,
            Refused::Unmountable => self.unmountable += 1,
        }
    }

    /// Filters refused in this packet.
    pub(super) fn refusals(&self) -> usize {
        self.too_deep + self.quota + self.denied + self.unmountable
    }

    /// The closing lines: how many filters went unlisted and, when any were
    /// refused and `complaint` allows it (`Some(suffix)`), one summary.
    pub(super) fn finish(
        self,
        client: &str,
        max_levels: usize,
        max_subs: usize,
        complaint: Option<&str>,
    ) {
        let unlisted = self.listed.saturating_sub(FILTER_LINES);
        if unlisted > 0 {
            let (target, verb) = if self.unsubscribe {
                (UNSUBSCRIBE, "UNSUBSCRIBE")
            } else {
                (SUBSCRIBE, "SUBSCRIBE")
            };
            debug!("\t... and {unlisted} more filters");
            info!(target: target, "{} {verb}: {unlisted} more filters", LogStr(client));
        }
        let (Some(more), n) = (complaint, self.refusals()) else {
            return;
        };
        if n == 0 {
            return;
        }
        let mut causes = Vec::new();
        if self.quota > 0 {
            causes.push(format!(
                "{} over max_subscriptions_per_client {max_subs}",
                self.quota
            ));
        }
        if self.too_deep > 0 {
            causes.push(format!(
                "{} deeper than max_topic_levels {max_levels}",
                self.too_deep
            ));
        }
        if self.denied > 0 {
            causes.push(format!("{} denied by the ACL", self.denied));
        }
        if self.unmountable > 0 {
            causes.push(format!(
                "{} not a valid filter under the listener's mount_point",
                self.unmountable
            ));
        }
        info!(
            "Client {}: {n} of {} filters refused ({}){more}.",
            LogStr(client),
            self.listed,
            causes.join(", ")
        );
    }
}
