//! `log_dest topic`: log lines waiting to be published to
//! `$SYS/broker/log/<type>` (mosquitto's topics). The logger may be called from
//! inside the broker, which cannot publish re-entrantly, so lines wait here and
//! the event loop publishes them between events. Bounded: past
//! [`MAX_PENDING`] lines the newest are dropped. Debug lines are never
//! published (as mosquitto: publishing them would log more debug lines).

use std::collections::VecDeque;
use std::sync::Mutex;

use super::LogType;

/// Lines held for publishing at most.
pub const MAX_PENDING: usize = 1024;

static PENDING: Mutex<VecDeque<(&'static str, String)>> = Mutex::new(VecDeque::new());

/// mosquitto's topic for a line type (`None`: not published).
pub fn topic_of(kind: LogType) -> Option<&'static str> {
    Some(match kind {
        LogType::Error => "$SYS/broker/log/E",
        LogType::Warning => "$SYS/broker/log/W",
        LogType::Notice => "$SYS/broker/log/N",
        LogType::Information => "$SYS/broker/log/I",
        LogType::Subscribe => "$SYS/broker/log/M/subscribe",
        LogType::Unsubscribe => "$SYS/broker/log/M/unsubscribe",
        LogType::Debug => return None,
    })
}

/// Hold a line for publishing.
pub(super) fn push(kind: LogType, secs: i64, text: &str) {
    let Some(topic) = topic_of(kind) else {
        return;
    };
    if let Ok(mut q) = PENDING.lock() {
        if q.len() < MAX_PENDING {
            q.push_back((topic, format!("{secs}: {text}")));
        }
    }
}

/// Lines are waiting to be published.
pub fn pending() -> bool {
    PENDING.lock().is_ok_and(|q| !q.is_empty())
}

/// Take the lines waiting to be published: (topic, payload).
pub fn take() -> Vec<(&'static str, String)> {
    match PENDING.lock() {
        Ok(mut q) if !q.is_empty() => q.drain(..).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_wait_bounded_and_debug_is_never_published() {
        let _ = take();
        push(LogType::Debug, 1, "d");
        push(LogType::Notice, 1, "n");
        push(LogType::Subscribe, 2, "s");
        let got = take();
        assert_eq!(
            got,
            vec![
                ("$SYS/broker/log/N", "1: n".to_string()),
                ("$SYS/broker/log/M/subscribe", "2: s".to_string())
            ]
        );
        for _ in 0..MAX_PENDING + 10 {
            push(LogType::Error, 1, "e");
        }
        assert_eq!(take().len(), MAX_PENDING);
    }
}
