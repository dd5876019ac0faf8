//! Listening sockets, made with socket2 so that options (dual-stack IPv6,
//! SO_REUSEADDR, the backlog) are set before `listen`. Binding only: accepting is
//! the loop's job.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::{ListenerConfig, SocketDomain};

/// Pending connections the kernel may hold for us (mosquitto uses 100; accepts are
/// cheap here and bursts of reconnecting gateways are the norm).
const BACKLOG: i32 = 1024;

/// A bound, non-blocking listener and a printable name for logs.
pub struct Listener {
    /// The socket, registered with the poll.
    pub socket: mio::net::TcpListener,
    /// "0.0.0.0:1883", "[::]:1883", ... for log lines.
    pub name: String,
    /// TLS acceptor for TLS listeners (replaced on SIGHUP for new connections).
    pub tls: Option<std::sync::Arc<super::tls::Acceptor>>,
}

/// The addresses a listener binds: all interfaces when no address is given
/// (`[::]` dual-stack, `0.0.0.0` with `socket_domain ipv4`), else each address
/// the name resolves to of the `socket_domain` family.
pub fn addresses(config: &ListenerConfig) -> Result<Vec<SocketAddr>, (String, std::io::Error)> {
    let want = |a: &SocketAddr| match config.socket_domain {
        Some(SocketDomain::V4) => a.is_ipv4(),
        Some(SocketDomain::V6) => a.is_ipv6(),
        None => true,
    };
    let addrs: Vec<SocketAddr> = match &config.bind_address {
        None => match config.socket_domain {
            Some(SocketDomain::V4) => vec![SocketAddr::new(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                config.port,
            )],
            _ => vec![SocketAddr::new(
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                config.port,
            )],
        },
        Some(host) => match (host.as_str(), config.port).to_socket_addrs() {
            Ok(a) => a.filter(want).collect(),
            Err(e) => return Err((format!("{host}:{}", config.port), e)),
        },
    };
    if addrs.is_empty() {
        let host = config.bind_address.as_deref().unwrap_or("");
        return Err((
            format!("{host}:{}", config.port),
            std::io::Error::new(
                std::io::ErrorKind::AddrNotAvailable,
                "no address of the `socket_domain` family",
            ),
        ));
    }
    Ok(addrs)
}

/// Bind every address `config` asks for ([`addresses`]); all interfaces
/// fall back to IPv4 alone on a host without IPv6.
pub fn bind(config: &ListenerConfig) -> Result<Vec<Listener>, (String, std::io::Error)> {
    let addrs = addresses(config)?;
    let only_v6 = config.socket_domain == Some(SocketDomain::V6);
    let device = config.bind_interface.as_deref();
    if config.bind_address.is_none() && config.socket_domain.is_none() {
        if let Ok(l) = bind_one(addrs[0], false, device) {
            return Ok(vec![l]);
        }
        // No IPv6 on this host: IPv4 alone.
        let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), config.port);
        return bind_one(v4, false, device)
            .map(|l| vec![l])
            .map_err(|e| (v4.to_string(), e));
    }
    addrs
        .into_iter()
        .map(|a| bind_one(a, only_v6, device).map_err(|e| (a.to_string(), e)))
        .collect()
}

fn bind_one(addr: SocketAddr, only_v6: bool, device: Option<&str>) -> std::io::Result<Listener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        // One socket for both families when bound to [::], as mosquitto does,
        // unless `socket_domain ipv6` asks for IPv6 alone.
        socket.set_only_v6(only_v6 || !addr.ip().is_unspecified())?;
    }
    if let Some(name) = device {
        // `bind_interface`: SO_BINDTODEVICE (Linux; needs CAP_NET_RAW).
        socket.bind_device(Some(name.as_bytes()))?;
    }
    // Restarting the broker must not wait for TIME_WAIT sockets to clear.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    let std_listener: std::net::TcpListener = socket.into();
    let name = std_listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| addr.to_string());
    Ok(Listener {
        socket: mio::net::TcpListener::from_std(std_listener),
        name,
        tls: None,
    })
}

/// A peer address as logged: IPv4-mapped IPv6 addresses (from a dual-stack
/// listener) print as plain IPv4, like mosquitto.
pub fn peer_name(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()).to_string(),
            None => addr.to_string(),
        },
        SocketAddr::V4(_) => addr.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_an_ephemeral_loopback_port() {
        let l = bind(&ListenerConfig::new(0, Some("127.0.0.1".into()))).expect("bind");
        assert_eq!(l.len(), 1);
        assert!(l[0].name.starts_with("127.0.0.1:"));
    }

    #[test]
    fn bad_host_is_an_error_naming_it() {
        let e = bind(&ListenerConfig::new(1, Some("no such host.invalid".into())));
        let Err((name, _)) = e else {
            panic!("bound a bad host")
        };
        assert!(name.contains("no such host.invalid"));
    }

    #[test]
    fn mapped_addresses_print_as_ipv4() {
        let a: SocketAddr = "[::ffff:10.0.0.1]:5000".parse().expect("addr");
        assert_eq!(peer_name(a), "10.0.0.1:5000");
        let b: SocketAddr = "[::1]:5000".parse().expect("addr");
        assert_eq!(peer_name(b), "[::1]:5000");
    }
}
