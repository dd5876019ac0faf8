//! Name resolution off the loop thread: `getaddrinfo` may block for seconds on a
//! dead DNS server, and a gateway with a dead uplink must keep serving its local
//! clients meanwhile. One thread takes requests and hands results back through a
//! channel, waking the loop with a `mio::Waker`. No broker state crosses over.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use mio::Waker;

/// A finished resolution.
pub struct Resolved {
    /// Which bridge asked.
    pub bridge: usize,
    /// The attempt it belongs to (older answers are ignored).
    pub attempt: u64,
    /// For a check of the first address, not for the link itself.
    pub probe: bool,
    /// The addresses, or why there are none.
    pub result: Result<Vec<SocketAddr>, String>,
}

struct Request {
    bridge: usize,
    attempt: u64,
    probe: bool,
    host: String,
    port: u16,
}

/// The resolver thread's two ends, as the loop sees them.
pub struct Resolver {
    requests: Sender<Request>,
    results: Receiver<Resolved>,
}

impl Resolver {
    /// Start the thread; it wakes the loop through `waker` after each answer.
    pub fn start(waker: Arc<Waker>) -> std::io::Result<Resolver> {
        let (req_tx, req_rx) = channel::<Request>();
        let (res_tx, res_rx) = channel::<Resolved>();
        std::thread::Builder::new()
            .name("midge-resolver".into())
            .spawn(move || {
                // Ends when the loop drops its sender.
                for r in req_rx {
                    let result = (r.host.as_str(), r.port)
                        .to_socket_addrs()
                        .map(|a| a.collect::<Vec<_>>())
                        .map_err(|e| e.to_string());
                    let answer = Resolved {
                        bridge: r.bridge,
                        attempt: r.attempt,
                        probe: r.probe,
                        result,
                    };
                    if res_tx.send(answer).is_err() {
                        return;
                    }
                    let _ = waker.wake();
                }
            })?;
        Ok(Resolver {
            requests: req_tx,
            results: res_rx,
        })
    }

    /// Ask for `host:port` (`probe`: for a check of the first address).
    pub fn resolve(&self, bridge: usize, attempt: u64, probe: bool, host: &str, port: u16) {
        let _ = self.requests.send(Request {
            bridge,
            attempt,
            probe,
            host: host.to_string(),
            port,
        });
    }

    /// Answers that arrived since the last call.
    pub fn take(&self) -> Vec<Resolved> {
        self.results.try_iter().collect()
    }
}
