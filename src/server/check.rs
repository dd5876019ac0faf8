//! `--test-config` (and `-d` before it detaches): everything start-up would
//! load or bind, checked without starting: password, ACL and PSK files, TLS
//! certificates and keys, listener addresses and `http_dir`s, log files, the
//! `user` account.
//! Every problem is collected, so one run reports them all.

use std::io::ErrorKind;

use crate::config::{Config, LogDest};

/// The problems start-up would meet with `config`; empty when none.
pub fn check(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(e) = crate::auth::Security::load(config) {
        problems.push(e);
    }
    for (index, lc) in config.listeners.iter().enumerate() {
        if lc.optional {
            continue;
        }
        if let Some(dir) = lc.http_dir.as_ref().filter(|d| !d.is_dir()) {
            problems.push(format!(
                "listener {}: http_dir {}: not a directory",
                lc.port,
                dir.display()
            ));
        }
        if let Some(t) = &lc.tls {
            // `.err()`: without TLS the Ok side is uninhabited.
            if let Some(e) = super::tls::acceptor(t, config.psk_file(index)).err() {
                problems.push(format!("listener {}: {e}", lc.port));
            }
        }
        match super::listener::addresses(lc) {
            Err((name, e)) => problems.push(format!(
                "listener {}: cannot listen on {name}: {e}",
                lc.port
            )),
            Ok(addrs) => {
                for a in addrs {
                    if let Err(e) = probe_bind(a) {
                        problems.push(format!("listener {}: cannot listen on {a}: {e}", lc.port));
                    }
                }
            }
        }
    }
    for d in &config.log_dests {
        if let LogDest::File(path) = d {
            let exists = path.exists();
            let opened = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(path);
            match opened {
                Ok(_) if !exists => {
                    // Leave no trace of a check.
                    let _ = std::fs::remove_file(path);
                }
                Ok(_) => {}
                Err(e) => problems.push(format!("log_dest file {}: {e}", path.display())),
            }
        }
    }
    if let Some(dir) = &config.persistence_location {
        if config.persistence && !dir.is_dir() {
            problems.push(format!(
                "persistence_location {}: not a directory",
                dir.display()
            ));
        }
    }
    if let Some(user) = &config.user {
        if let Err(e) = crate::sys::lookup_user(user) {
            problems.push(format!("user {user}: {e}"));
        }
    }
    problems
}

/// Can `addr` be bound here? A port already in use counts as fine (the
/// running broker may hold it while its next config is checked); an address
/// this host does not have, or a port it may not use, does not.
fn probe_bind(addr: std::net::SocketAddr) -> std::io::Result<()> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(!addr.ip().is_unspecified())?;
    }
    match socket.bind(&addr.into()) {
        Err(e) if e.kind() == ErrorKind::AddrInUse => Ok(()),
        other => other,
    }
}
