//! The config file parser fed arbitrary text: it returns a config or an error
//! naming the file and a line of it, and never panics. The same text goes to
//! the other files an administrator writes, the ACL file (then checked with
//! client ids, user names and topics taken from the text, as a peer controls
//! those) and the password file.
//!
//! `include_dir` reads directories from the real file system, which would make
//! runs depend on the machine; inputs that use it are skipped (its parsing is
//! covered by the unit tests in src/config.rs).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use midge::auth::{Access, Acl, PasswordFile};
use midge::config::Config;
use midge::protocol::topic::{valid_topic_filter, valid_topic_name};

/// ACL parsing, then every check with words of the text as client id, user
/// name and topic (topics only where valid, as the broker only asks for those).
fn acl(text: &str) {
    let acl = match Acl::parse(text) {
        Ok(acl) => acl,
        Err(e) => {
            assert!(e.line <= text.lines().count().max(1), "ACL error line: {e}");
            return;
        }
    };
    let words: Vec<&str> = text.split_whitespace().rev().take(4).collect();
    for &id in &words {
        for user in [None, words.first().copied()] {
            for &t in &words {
                if valid_topic_name(t) {
                    let _ = acl.check(id, user, t, Access::Read);
                    let _ = acl.check(id, user, t, Access::Write);
                }
                if valid_topic_filter(t) {
                    let _ = acl.check_subscribe(id, user, t);
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    acl(text);
    let _ = PasswordFile::parse(text);
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
