//! Access control lists in mosquitto's `acl_file` grammar:
//!
//! ```text
//! # anonymous clients (rules before the first `user` line)
//! topic read public/#
//! user alice
//! topic readwrite alice/#        # no keyword = readwrite
//! topic deny alice/secret
//! pattern write devices/%c/status  # every client; %c client id, %u user name
//! ```
//!
//! A deny rule that matches wins; otherwise access needs a rule granting it.
//! `$` topics only match rules that themselves start with `$` [MQTT-4.7.2-1].
//! A client whose id or user name contains `+`, `#` or `/` gets no pattern
//! access (it could widen the pattern or reach into another client's subtree).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use crate::protocol::topic::{matches, valid_topic_filter};

/// What a client wants to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Receive messages (SUBSCRIBE, delivery).
    Read,
    /// Publish (including wills and retained messages).
    Write,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grant {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl Grant {
    fn allows(self, a: Access) -> bool {
        matches!(
            (self, a),
            (Grant::ReadWrite, _) | (Grant::Read, Access::Read) | (Grant::Write, Access::Write)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    grant: Grant,
    topic: Box<str>,
}

/// A parsed ACL file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    anonymous: Vec<Rule>,
    users: HashMap<Box<str>, Vec<Rule>>,
    patterns: Vec<Rule>,
}

/// An ACL file error, with its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclError {
    /// 1-based line; 0 for the whole file.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for AclError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str(&self.message)
        } else {
            write!(f, "line {}: {}", self.line, self.message)
        }
    }
}

impl std::error::Error for AclError {}

impl Acl {
    /// Read and parse an ACL file.
    pub fn load(path: &Path) -> Result<Acl, AclError> {
        let text = std::fs::read_to_string(path).map_err(|e| AclError {
            line: 0,
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        Acl::parse(&text).map_err(|e| AclError {
            line: e.line,
            message: format!("{}: {}", path.display(), e.message),
        })
    }

    /// Parse ACL text.
    pub fn parse(text: &str) -> Result<Acl, AclError> {
        let mut acl = Acl::default();
        let mut user: Option<Box<str>> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |m: &str| AclError {
                line: i + 1,
                message: m.to_string(),
            };
            let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let rest = rest.trim();
            match word {
                "user" => {
                    if rest.is_empty() {
                        return Err(err("`user` needs a name"));
                    }
                    user = Some(rest.into());
                    acl.users.entry(rest.into()).or_default();
                }
                "topic" | "pattern" => {
                    let (grant, topic) = match rest.split_once(char::is_whitespace) {
                        Some(("read", t)) => (Grant::Read, t.trim()),
                        Some(("write", t)) => (Grant::Write, t.trim()),
                        Some(("readwrite", t)) => (Grant::ReadWrite, t.trim()),
                        Some(("deny", t)) => (Grant::Deny, t.trim()),
                        _ => (Grant::ReadWrite, rest),
                    };
                    let keyword = matches!(topic, "read" | "write" | "readwrite" | "deny");
                    if topic.is_empty() || keyword {
                        return Err(err("missing topic"));
                    }
                    if !valid_topic_filter(topic) {
                        return Err(err(&format!("invalid topic filter `{topic}`")));
                    }
                    let rule = Rule {
                        grant,
                        topic: topic.into(),
                    };
                    if word == "pattern" {
                        acl.patterns.push(rule);
                    } else {
                        match &user {
                            Some(u) => acl.users.entry(u.clone()).or_default().push(rule),
                            None => acl.anonymous.push(rule),
                        }
                    }
                }
                other => return Err(err(&format!("unknown keyword `{other}`"))),
            }
        }
        Ok(acl)
    }

    /// The rules that apply to a client, patterns expanded.
    fn rules_for<'a>(
        &'a self,
        client_id: &str,
        username: Option<&str>,
    ) -> impl Iterator<Item = (Grant, std::borrow::Cow<'a, str>)> + 'a {
        let own: &'a [Rule] = match username {
            Some(u) => self.users.get(u).map_or(&[], |v| v.as_slice()),
            None => &self.anonymous,
        };
        // `/` too: a client named `victim/x` must not reach into
        // `devices/victim/...` through `devices/%c/#` (found by fuzzing).
        let id_ok = !client_id.contains(['+', '#', '/']);
        let user_ok = username.map(|u| !u.contains(['+', '#', '/']));
        let client_id = client_id.to_string();
        let user = username.map(str::to_string);
        own.iter()
            .map(|r| (r.grant, std::borrow::Cow::Borrowed(&*r.topic)))
            .chain(self.patterns.iter().filter_map(move |r| {
                if r.topic.contains("%c") && !id_ok {
                    return None;
                }
                let mut t = r.topic.replace("%c", &client_id);
                if t.contains("%u") {
                    match (&user, user_ok) {
                        (Some(u), Some(true)) => t = t.replace("%u", u),
                        _ => return None,
                    }
                }
                Some((r.grant, std::borrow::Cow::Owned(t)))
            }))
    }

    /// May this client read from or write to `topic` (a topic name)?
    pub fn check(
        &self,
        client_id: &str,
        username: Option<&str>,
        topic: &str,
        access: Access,
    ) -> bool {
        let mut allowed = false;
        for (grant, rule) in self.rules_for(client_id, username) {
            if matches(&rule, topic) {
                if grant == Grant::Deny {
                    return false;
                }
                allowed |= grant.allows(access);
            }
        }
        allowed
    }

    /// May this client subscribe to `filter`? Refused only when the filter is
    /// entirely denied: a deny rule covers all of it, or no read rule overlaps it.
    /// Delivery is checked per message as well.
    pub fn check_subscribe(&self, client_id: &str, username: Option<&str>, filter: &str) -> bool {
        let mut readable = false;
        for (grant, rule) in self.rules_for(client_id, username) {
            if grant == Grant::Deny && covers(&rule, filter) {
                return false;
            }
            if grant.allows(Access::Read) && overlaps(&rule, filter) {
                readable = true;
            }
        }
        readable
    }
}

/// Does every topic matched by `inner` also match `outer`?
fn covers(outer: &str, inner: &str) -> bool {
    // [MQTT-4.7.2-1] a wildcard-first rule never matches `$` topics.
    if inner.starts_with('$') && (outer.starts_with('+') || outer.starts_with('#')) {
        return false;
    }
    let mut o = outer.split('/');
    let mut i = inner.split('/');
    loop {
        match (o.next(), i.next()) {
            (Some("#"), _) => return true,
            (None, None) => return true,
            (Some(_), Some("#")) | (None, Some(_)) | (Some(_), None) => return false,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) => {
                if a != b {
                    return false;
                }
            }
        }
    }
}

/// Is there a topic matched by both filters?
fn overlaps(a: &str, b: &str) -> bool {
    let dollar = |f: &str| f.starts_with('$');
    let wild_first = |f: &str| f.starts_with('+') || f.starts_with('#');
    // [MQTT-4.7.2-1]: a `$` filter and a wildcard-first filter share no topic.
    if (dollar(a) && wild_first(b)) || (dollar(b) && wild_first(a)) {
        return false;
    }
    let mut x = a.split('/');
    let mut y = b.split('/');
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, None) => return true,
            (None, Some(_)) | (Some(_), None) => return false,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(p), Some(q)) => {
                if p != q {
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACL: &str = "\
# anonymous
topic read public/#
user alice
topic alice/#
topic deny alice/secret
topic read $SYS/#
user bob
topic write bob/out
pattern readwrite devices/%c/#
pattern read users/%u/inbox
";

    #[test]
    fn matrix() {
        let acl = Acl::parse(ACL).expect("parse");
        use Access::*;
        let cases: &[(&str, Option<&str>, &str, Access, bool)] = &[
            ("anon", None, "public/news", Read, true),
            ("anon", None, "public/news", Write, false),
            ("anon", None, "alice/x", Read, false),
            ("a1", Some("alice"), "alice/x", Read, true),
            ("a1", Some("alice"), "alice/x", Write, true),
            ("a1", Some("alice"), "alice/secret", Read, false),
            ("a1", Some("alice"), "alice/secret", Write, false),
            ("a1", Some("alice"), "public/news", Read, false),
            ("a1", Some("alice"), "$SYS/broker/load", Read, true),
            ("b1", Some("bob"), "bob/out", Write, true),
            ("b1", Some("bob"), "bob/out", Read, false),
            ("b1", Some("bob"), "devices/b1/status", Write, true),
            ("b1", Some("bob"), "devices/other/status", Write, false),
            ("b1", Some("bob"), "users/bob/inbox", Read, true),
            ("b1", Some("bob"), "users/alice/inbox", Read, false),
            ("anon", None, "users/x/inbox", Read, false),
            ("dev+", Some("bob"), "devices/dev+/x", Write, false),
            ("b1/x", Some("bob"), "devices/b1/x/status", Write, false),
            ("carol", Some("carol"), "devices/carol/x", Read, true),
        ];
        for &(id, user, topic, access, want) in cases {
            assert_eq!(
                acl.check(id, user, topic, access),
                want,
                "{id} {user:?} {topic} {access:?}"
            );
        }
    }

    #[test]
    fn subscribe_refused_only_when_entirely_denied() {
        let acl = Acl::parse(ACL).expect("parse");
        assert!(acl.check_subscribe("a1", Some("alice"), "alice/#"));
        assert!(!acl.check_subscribe("a1", Some("alice"), "alice/secret"));
        assert!(!acl.check_subscribe("a1", Some("alice"), "bob/#"));
        assert!(acl.check_subscribe("anon", None, "public/+"));
        assert!(acl.check_subscribe("anon", None, "#"), "overlaps public/#");
        assert!(!acl.check_subscribe("anon", None, "$SYS/#"));
    }

    #[test]
    fn dollar_topics_need_dollar_rules() {
        let acl = Acl::parse("topic read #\n").expect("parse");
        assert!(acl.check("c", None, "a/b", Access::Read));
        assert!(!acl.check("c", None, "$SYS/x", Access::Read));
    }

    #[test]
    fn errors() {
        assert_eq!(Acl::parse("topic read a/#/b").expect_err("bad").line, 1);
        assert!(Acl::parse("\nfrobnicate x").is_err());
        assert!(Acl::parse("user").is_err());
        assert!(Acl::parse("topic read").is_err());
    }
}
