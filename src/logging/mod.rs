//! Log set-up: mosquitto-like lines, `{unix seconds}: {message}`, through
//! `env_logger`. `-v` turns on debug lines; `RUST_LOG` overrides everything.

mod text;

pub use text::LogStr;

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{Config, LogDest};

/// Install the logger. `log_type` in the config picks the level (mosquitto's
/// types map onto levels: `debug`/`all` -> debug, `none` -> off), `-v` raises it
/// to debug.
pub fn init(verbose: bool, config: &Config) {
    let level = if verbose || config.log_types.iter().any(|t| t == "all" || t == "debug") {
        log::LevelFilter::Debug
    } else if !config.log_types.is_empty() && config.log_types.iter().all(|t| t == "none") {
        log::LevelFilter::Off
    } else {
        log::LevelFilter::Info
    };
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    builder.target(match config.log_dest {
        LogDest::Stdout => env_logger::Target::Stdout,
        LogDest::Stderr => env_logger::Target::Stderr,
    });
    builder.format(|buf, record| {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        writeln!(buf, "{secs}: {}", record.args())
    });
    // A second init (tests) is harmless.
    let _ = builder.try_init();
}
