//! The I/O shell: one thread, one `mio::Poll`. Listeners, connections with their
//! buffers (in a slab), the timing wheel, signals. It moves bytes and time into the
//! broker and the broker's output back out; it makes no protocol decisions.

use crate::config::Config;

/// Why the server could not start or stopped with an error.
#[derive(Debug)]
pub enum ServerError {
    /// A listener could not be bound.
    Bind(String, std::io::Error),
    /// Any other I/O failure of the loop itself (poll, signal pipe).
    Io(std::io::Error),
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerError::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            ServerError::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}

impl std::error::Error for ServerError {}

/// Run the broker with `config` until SIGINT/SIGTERM.
pub fn run(config: Config) -> Result<(), ServerError> {
    let _ = config;
    unimplemented!("server helper")
}
