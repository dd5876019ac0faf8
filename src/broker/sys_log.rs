//! `log_dest topic`: the broker publishes log lines to `$SYS/broker/log/...`
//! as mosquitto does (QoS 2, not retained), routed under the read ACLs.

use std::sync::Arc;
use std::time::Instant;

use super::message::Message;
use super::{Broker, Output};
use crate::protocol::QoS;

impl Broker {
    /// Publish one log line on `topic` (a `$SYS/broker/log/...` topic).
    pub fn publish_log_line(
        &mut self,
        now: Instant,
        topic: &str,
        line: String,
        out: &mut impl Output,
    ) {
        let msg = Arc::new(Message {
            topic: topic.into(),
            payload: line.into_bytes().into_boxed_slice().into(),
            qos: QoS::ExactlyOnce,
            retain: false,
            properties: None,
            received: now,
        });
        self.route(now, &msg, None, out);
    }
}
