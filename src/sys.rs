//! Process-level chores: the open-file limit, daemonising, the pid file and
//! systemd's notification protocol. Nothing here knows about MQTT.

use std::io;
use std::path::Path;

/// Bytes the C allocator has handed out and not had back, from its own
/// statistics (glibc's `mallinfo2`: small blocks in every arena plus large
/// mmapped ones). Read once per `sys_interval` for `$SYS/broker/heap/current`,
/// so that no allocation pays for bookkeeping. `None` where the allocator has
/// no such call (musl, other systems): the topics are then left out.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn heap_in_use() -> Option<u64> {
    // SAFETY: mallinfo2 takes no arguments and returns plain data (glibc >= 2.33).
    let m = unsafe { libc::mallinfo2() };
    Some((m.uordblks as u64).saturating_add(m.hblkhd as u64))
}

/// See the glibc version: elsewhere there is no cheap figure to read.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn heap_in_use() -> Option<u64> {
    None
}

/// Raise the soft open-file limit to the hard limit (each client is one
/// descriptor). Returns the new soft limit.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit; raising soft to hard is always allowed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}

/// Detach from the terminal: fork (the parent exits 0), start a new session,
/// move to `/`, point stdin/stdout/stderr at /dev/null.
pub fn daemonize() -> io::Result<()> {
    // SAFETY: called before any thread is started (main is single-threaded at
    // this point), so fork is sound; the child continues with this process image.
    match unsafe { libc::fork() } {
        -1 => return Err(io::Error::last_os_error()),
        0 => {}
        _ => std::process::exit(0),
    }
    // SAFETY: setsid has no memory-safety preconditions.
    if unsafe { libc::setsid() } == -1 {
        return Err(io::Error::last_os_error());
    }
    std::env::set_current_dir("/")?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    use std::os::fd::AsRawFd;
    for fd in 0..3 {
        // SAFETY: both descriptors are open; dup2 replaces the standard ones.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Write our process id to `path`.
pub fn write_pid_file(path: &Path) -> io::Result<()> {
    std::fs::write(path, format!("{}\n", std::process::id()))
}

/// Tell the service manager about a state change (`READY=1`, `STOPPING=1`,
/// `WATCHDOG=1`): one datagram to `$NOTIFY_SOCKET`, as sd_notify(3) does,
/// without libsystemd. A name starting with `@` is an abstract socket.
/// Returns Ok(false) when no manager asked for notifications.
pub fn sd_notify(state: &str) -> io::Result<bool> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let socket = std::os::unix::net::UnixDatagram::unbound()?;
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str());
    match bytes.split_first() {
        None => return Ok(false),
        Some((b'@', name)) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
        }
        Some(_) => {
            socket.send_to(state.as_bytes(), Path::new(&target))?;
        }
    }
    Ok(true)
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC` (systemd's
/// `WatchdogSec`), when it is set for this process (`$WATCHDOG_PID` absent or
/// ours), as sd_watchdog_enabled(3) advises.
pub fn watchdog_interval() -> Option<std::time::Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
        if pid.to_str()?.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| std::time::Duration::from_micros(usec / 2))
}

/// An account's ids, for `user`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    /// User id.
    pub uid: libc::uid_t,
    /// Primary group id.
    pub gid: libc::gid_t,
}

/// Look up `name` in the password database.
pub fn lookup_user(name: &str) -> io::Result<Account> {
    let cname = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "user name with a NUL byte"))?;
    // SAFETY: zeroed passwd is a valid out-parameter; buf outlives the call
    // and the result is only read before buf is dropped.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the call, buf.len() is its size.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    if result.is_null() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "no such user"));
    }
    Ok(Account {
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    })
}

/// `user NAME`: when running as root, switch to that account (groups first,
/// then the user id: afterwards root's rights are gone for good). Not root,
/// or `user root`: nothing to do. Returns whether privileges were dropped.
pub fn drop_privileges(name: &str) -> io::Result<bool> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || name == "root" {
        return Ok(false);
    }
    let account = lookup_user(name)?;
    let cname = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "user name with a NUL byte"))?;
    // SAFETY: plain system calls with valid arguments.
    unsafe {
        if libc::setgid(account.gid) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::initgroups(cname.as_ptr(), account.gid) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::setuid(account.uid) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(true)
}
