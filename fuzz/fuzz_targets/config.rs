//! The config file parser fed arbitrary text: it returns a config or an error
//! naming the file and a line of it, and never panics.
//!
//! `include_dir` reads directories from the real file system, which would make
//! runs depend on the machine; inputs that use it are skipped (its parsing is
//! covered by the unit tests in src/config.rs).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use midge::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.contains("include_dir") {
        return;
    }
    let file = Path::new("fuzz.conf");
    match Config::parse_str(text, file) {
        Ok(config) => {
            let _ = config.broker_config();
            // Parsing is a function of the text.
            assert_eq!(Config::parse_str(text, file).ok(), Some(config));
        }
        Err(e) => {
            assert_eq!(e.file, file, "error names another file: {e}");
            let lines = text.lines().count();
            assert!(
                e.line <= lines.max(1),
                "error on line {} of {lines}: {e}",
                e.line
            );
            let _ = e.to_string();
        }
    }
});
