//! SIGINT, SIGTERM and SIGHUP turned into readable bytes on a pipe the poll loop
//! watches (the self-pipe trick), so signals are handled between events, never
//! inside a handler. The handler only writes one byte: that is async-signal-safe.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// The write end of the pipe, for the handler. -1 until installed.
static WRITE_FD: AtomicI32 = AtomicI32::new(-1);

/// What a signal asks of the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT or SIGTERM: shut down cleanly.
    Shutdown,
    /// SIGHUP: reload what can be reloaded (mosquitto re-reads its config).
    Reload,
}

/// The read end of the signal pipe.
pub struct SignalPipe {
    read: std::fs::File,
    _write: OwnedFd,
}

extern "C" fn on_signal(sig: libc::c_int) {
    // The handler interrupts code that may be about to read errno (between a
    // failed syscall and its check); a failing write(2) here would change it
    // under that code's feet. Saved and restored, as POSIX handlers must.
    // SAFETY: __errno_location returns this thread's errno slot, valid for the
    // thread's lifetime; reading and writing an int there is async-signal-safe.
    let saved = unsafe { *libc::__errno_location() };
    let fd = WRITE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = sig as u8;
        // SAFETY: write(2) is async-signal-safe; the buffer is one valid byte. A
        // full pipe drops the byte, which is fine: one pending byte is enough.
        unsafe {
            libc::write(fd, (&byte as *const u8).cast(), 1);
        }
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
}

impl SignalPipe {
    /// Create the pipe and install handlers for SIGINT, SIGTERM and SIGHUP.
    pub fn install() -> io::Result<SignalPipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and ours alone.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        WRITE_FD.store(write.as_raw_fd(), Ordering::Relaxed);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: a zeroed sigaction is a valid starting value; the handler is
            // an extern "C" fn that only calls write(2).
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
                action.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                if libc::sigaction(sig, &action, std::ptr::null_mut()) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(SignalPipe {
            read: std::fs::File::from(read),
            _write: write,
        })
    }

    /// The descriptor to register for readability.
    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Drain the pipe; the most urgent signal seen (shutdown beats reload).
    pub fn take(&mut self) -> Option<Signal> {
        let mut buf = [0u8; 64];
        let mut seen = None;
        loop {
            match self.read.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    for &b in &buf[..n] {
                        let s = if i32::from(b) == libc::SIGHUP {
                            Signal::Reload
                        } else {
                            Signal::Shutdown
                        };
                        if seen != Some(Signal::Shutdown) {
                            seen = Some(s);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        seen
    }
}

impl Drop for SignalPipe {
    fn drop(&mut self) {
        WRITE_FD.store(-1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handler whose write(2) fails (here: EBADF on a read-only descriptor)
    /// leaves errno as the interrupted code had it.
    #[test]
    fn the_handler_preserves_errno() {
        let file = std::fs::File::open("/dev/null").expect("open /dev/null");
        let before = WRITE_FD.swap(file.as_raw_fd(), Ordering::Relaxed);
        // SAFETY: this thread's errno slot.
        unsafe { *libc::__errno_location() = libc::EINTR };
        on_signal(libc::SIGHUP);
        // SAFETY: as above.
        let after = unsafe { *libc::__errno_location() };
        WRITE_FD.store(before, Ordering::Relaxed);
        assert_eq!(after, libc::EINTR, "errno changed by the handler");
    }
}
