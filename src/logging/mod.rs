//! Log set-up: mosquitto-like lines, `{unix seconds}: {message}`, filtered by
//! mosquitto's log types (`log_type`). Each line has one type, from its level
//! and target: `error!` is error, `warn!` warning, `debug!`/`trace!` debug, and
//! `info!` information unless its target is [`NOTICE`], [`SUBSCRIBE`] or
//! [`UNSUBSCRIBE`]. A line is written when its type is enabled. `-v` enables
//! every type (as mosquitto's `-v`); `RUST_LOG`, for developers, replaces the
//! filter with env_logger's.

mod budget;
mod packets;
mod sink;
mod text;
pub mod topic;

pub use budget::{Complaints, Verdict};
pub use packets::PacketLine;
pub use sink::{OpenError, Sink};
pub use text::LogStr;

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{Config, LogDest};

/// Target of `info!` lines of type notice (start-up, clients connecting and
/// leaving).
pub const NOTICE: &str = "notice";
/// Target of `info!` lines of type subscribe (one per subscribed filter).
pub const SUBSCRIBE: &str = "subscribe";
/// Target of `info!` lines of type unsubscribe.
pub const UNSUBSCRIBE: &str = "unsubscribe";

/// mosquitto's log types (`websockets` is accepted and has no lines in midge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogType {
    /// `error`.
    Error,
    /// `warning`.
    Warning,
    /// `notice`.
    Notice,
    /// `information`.
    Information,
    /// `subscribe`.
    Subscribe,
    /// `unsubscribe`.
    Unsubscribe,
    /// `debug`.
    Debug,
}

impl LogType {
    /// The type of a line with this level and target.
    pub fn of(level: log::Level, target: &str) -> LogType {
        match level {
            log::Level::Error => LogType::Error,
            log::Level::Warn => LogType::Warning,
            log::Level::Info => match target {
                NOTICE => LogType::Notice,
                SUBSCRIBE => LogType::Subscribe,
                UNSUBSCRIBE => LogType::Unsubscribe,
                _ => LogType::Information,
            },
            log::Level::Debug | log::Level::Trace => LogType::Debug,
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of enabled log types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogTypes(u8);

impl LogTypes {
    /// mosquitto's default when no `log_type` is given: error, warning, notice
    /// and information.
    pub const DEFAULT: LogTypes = LogTypes(0b1111);
    /// Every type (`log_type all`, `-v`).
    pub const ALL: LogTypes = LogTypes(0b111_1111);

    /// The set `log_type` lines name (names were checked by the config parser;
    /// unknown ones and `websockets` add nothing). No line: the default. `none`
    /// alone: nothing.
    pub fn from_config(names: &[String]) -> LogTypes {
        if names.is_empty() {
            return LogTypes::DEFAULT;
        }
        let mut set = 0u8;
        for n in names {
            set |= match n.as_str() {
                "all" => LogTypes::ALL.0,
                "error" => LogType::Error.bit(),
                "warning" => LogType::Warning.bit(),
                "notice" => LogType::Notice.bit(),
                "information" => LogType::Information.bit(),
                "subscribe" => LogType::Subscribe.bit(),
                "unsubscribe" => LogType::Unsubscribe.bit(),
                "debug" => LogType::Debug.bit(),
                _ => 0,
            };
        }
        LogTypes(set)
    }

    /// Lines of type `t` are written.
    pub fn contains(self, t: LogType) -> bool {
        self.0 & t.bit() != 0
    }

    /// The most verbose `log` level any enabled type needs (the global filter,
    /// so disabled `debug!` lines cost a comparison, not a format).
    fn max_level(self) -> log::LevelFilter {
        if self.contains(LogType::Debug) {
            log::LevelFilter::Debug
        } else if self.0 & 0b11_1100 != 0 {
            log::LevelFilter::Info
        } else if self.contains(LogType::Warning) {
            log::LevelFilter::Warn
        } else if self.contains(LogType::Error) {
            log::LevelFilter::Error
        } else {
            log::LevelFilter::Off
        }
    }
}

/// The installed logger: the enabled types, the writer thread's queue, and
/// whether lines are also published to `$SYS/broker/log/...`.
struct Logger {
    types: LogTypes,
    tx: Option<SyncSender<sink::Msg>>,
    dropped: AtomicU64,
    /// Lines still to drop unformatted after the queue was found full.
    skip: AtomicU64,
    topic: bool,
}

/// After a line is dropped for a full queue, the next lines up to this many
/// are dropped (and counted) without being formatted: a flood of debug lines
/// (`-v` with a client pipelining PINGREQs) must not cost the loop a format
/// per line that the writer has no room for.
const SKIP_WHEN_FULL: u64 = 1023;

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        self.types.contains(LogType::of(m.level(), m.target()))
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        if !self.topic
            && self
                .skip
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let kind = LogType::of(record.level(), record.target());
        let text = record.args().to_string();
        if self.topic {
            topic::push(kind, secs, &text);
        }
        let Some(tx) = &self.tx else {
            return;
        };
        let dropped_before = self.dropped.swap(0, Ordering::Relaxed);
        let msg = sink::Msg::Line {
            secs,
            kind,
            text,
            dropped_before,
        };
        // Never wait for the writer: a full queue drops the line and counts it.
        if tx.try_send(msg).is_err() {
            self.dropped
                .fetch_add(dropped_before + 1, Ordering::Relaxed);
            self.skip.store(SKIP_WHEN_FULL, Ordering::Relaxed);
        }
    }

    fn flush(&self) {
        flush();
    }
}

/// The logger once installed (for [`reopen`] and [`flush`]).
static SENDER: OnceLock<SyncSender<sink::Msg>> = OnceLock::new();

/// Open the log destinations of `config` (files now: a bad path is reported
/// before `-d` detaches and before privileges are dropped).
pub fn open(config: &Config) -> Result<Sink, OpenError> {
    Sink::open(config)
}

/// Install the logger for `log_type` (`-v`: every type), writing to `sink`
/// from a thread of its own (start it after `-d` has forked).
pub fn init(verbose: bool, config: &Config, sink: Sink) {
    if let Ok(spec) = std::env::var("RUST_LOG") {
        return init_env_logger(&spec, config);
    }
    let types = if verbose {
        LogTypes::ALL
    } else {
        LogTypes::from_config(&config.log_types)
    };
    let tx = if sink.is_empty() {
        None
    } else {
        let (tx, rx) = std::sync::mpsc::sync_channel(sink::QUEUE_LINES);
        let spawned = std::thread::Builder::new()
            .name("log".into())
            .spawn(move || sink.run(rx));
        match spawned {
            Ok(_) => {
                let _ = SENDER.set(tx.clone());
                Some(tx)
            }
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "Error: unable to start logging: {e}.");
                None
            }
        }
    };
    let logger = Logger {
        types,
        tx,
        dropped: AtomicU64::new(0),
        skip: AtomicU64::new(0),
        topic: config.log_dests.contains(&LogDest::Topic),
    };
    // A second init (tests) is harmless.
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(types.max_level());
    }
}

/// SIGHUP: reopen `log_dest file` files (after logrotate moved them).
pub fn reopen() {
    if let Some(tx) = SENDER.get() {
        let _ = tx.try_send(sink::Msg::Reopen);
    }
}

/// Wait (at most two seconds) until every line logged so far is written: at
/// exit, so that the last lines are not lost.
pub fn flush() {
    if let Some(tx) = SENDER.get() {
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
        if tx.send(sink::Msg::Flush(done_tx)).is_ok() {
            let _ = done_rx.recv_timeout(std::time::Duration::from_secs(2));
        }
    }
}

/// `RUST_LOG` set: env_logger's module filters, same line format, to the
/// first stdout/stderr destination.
fn init_env_logger(spec: &str, config: &Config) {
    let mut builder = env_logger::Builder::new();
    builder.parse_filters(spec);
    builder.target(if config.log_dests.first() == Some(&LogDest::Stdout) {
        env_logger::Target::Stdout
    } else {
        env_logger::Target::Stderr
    });
    builder.format(|buf, record| {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        writeln!(buf, "{secs}: {}", record.args())
    });
    let _ = builder.try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Level;

    fn types(names: &[&str]) -> LogTypes {
        LogTypes::from_config(&names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn lines_get_their_type_from_level_and_target() {
        assert_eq!(LogType::of(Level::Error, "midge::x"), LogType::Error);
        assert_eq!(LogType::of(Level::Warn, NOTICE), LogType::Warning);
        assert_eq!(LogType::of(Level::Info, "midge::x"), LogType::Information);
        assert_eq!(LogType::of(Level::Info, NOTICE), LogType::Notice);
        assert_eq!(LogType::of(Level::Info, SUBSCRIBE), LogType::Subscribe);
        assert_eq!(LogType::of(Level::Info, UNSUBSCRIBE), LogType::Unsubscribe);
        assert_eq!(LogType::of(Level::Debug, SUBSCRIBE), LogType::Debug);
        assert_eq!(LogType::of(Level::Trace, "x"), LogType::Debug);
    }

    #[test]
    fn log_type_lines_pick_the_set() {
        let d = types(&[]);
        assert_eq!(d, LogTypes::DEFAULT);
        for t in [
            LogType::Error,
            LogType::Warning,
            LogType::Notice,
            LogType::Information,
        ] {
            assert!(d.contains(t), "{t:?}");
        }
        assert!(!d.contains(LogType::Subscribe) && !d.contains(LogType::Debug));
        let s = types(&["subscribe"]);
        assert!(s.contains(LogType::Subscribe));
        assert!(!s.contains(LogType::Information) && !s.contains(LogType::Error));
        assert_eq!(s.max_level(), log::LevelFilter::Info);
        assert_eq!(types(&["all"]), LogTypes::ALL);
        assert_eq!(types(&["none"]).max_level(), log::LevelFilter::Off);
        assert_eq!(types(&["websockets"]).max_level(), log::LevelFilter::Off);
        assert_eq!(types(&["error"]).max_level(), log::LevelFilter::Error);
        assert_eq!(
            types(&["warning", "debug"]).max_level(),
            log::LevelFilter::Debug
        );
        let eu = types(&["error", "unsubscribe"]);
        assert!(eu.contains(LogType::Unsubscribe) && !eu.contains(LogType::Warning));
    }
}
