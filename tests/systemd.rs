//! systemd integration without systemd: the notification datagrams midge sends
//! to `$NOTIFY_SOCKET` (READY=1 once it accepts connections, WATCHDOG=1 at half
//! of `$WATCHDOG_USEC`, STOPPING=1 on SIGTERM), and the shipped unit file.

mod common;

use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{free_port, temp_dir, Client, TIMEOUT};

/// A broker started with `env`, stopped when dropped.
struct Notified {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Drop for Notified {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(env: &[(&str, &str)]) -> Notified {
    let port = free_port();
    let dir = temp_dir("systemd");
    let conf = dir.join("midge.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\n"),
    )
    .expect("config");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_midge"));
    cmd.arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("spawn midge");
    Notified { child, port, dir }
}

fn recv(socket: &UnixDatagram) -> String {
    socket.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let mut buf = [0u8; 512];
    let n = socket
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn sigterm(child: &Child) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
}

/// READY=1 arrives once the port accepts MQTT clients, STOPPING=1 on SIGTERM.
#[test]
fn ready_after_listening_and_stopping_on_sigterm() {
    let dir = temp_dir("notify");
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind notify socket");
    let mut b = start(&[("NOTIFY_SOCKET", path.to_str().expect("utf-8"))]);
    assert_eq!(recv(&socket), "READY=1");
    // No retry: at READY the listener must already be there.
    TcpStream::connect(("127.0.0.1", b.port)).expect("port accepts at READY=1");
    let c = Client::connect(b.port, "after-ready");
    c.disconnect();
    sigterm(&b.child);
    assert_eq!(recv(&socket), "STOPPING=1");
    let status = b.child.wait().expect("exit");
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `NOTIFY_SOCKET=@name` is an abstract socket, as systemd may hand out.
#[test]
fn abstract_notify_socket() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("midge-test-notify-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        .expect("abstract address");
    let socket = UnixDatagram::bind_addr(&addr).expect("bind abstract socket");
    let _b = start(&[("NOTIFY_SOCKET", &format!("@{name}"))]);
    assert_eq!(recv(&socket), "READY=1");
}

/// With `WATCHDOG_USEC` set, WATCHDOG=1 comes at half that interval, from the
/// wheel; with `WATCHDOG_PID` naming another process, never.
#[test]
fn watchdog_keepalives_at_half_the_interval() {
    let dir = temp_dir("watchdog");
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind notify socket");
    let p = path.to_str().expect("utf-8");
    let _b = start(&[("NOTIFY_SOCKET", p), ("WATCHDOG_USEC", "400000")]);
    assert_eq!(recv(&socket), "READY=1");
    let started = std::time::Instant::now();
    assert_eq!(recv(&socket), "WATCHDOG=1");
    assert_eq!(recv(&socket), "WATCHDOG=1");
    // Two at 200 ms intervals, not one per loop turn. READY may have been read
    // late on a loaded machine, which shortens what we see: 100 ms of slack.
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    drop(_b);

    let other = start(&[
        ("NOTIFY_SOCKET", p),
        ("WATCHDOG_USEC", "100000"),
        ("WATCHDOG_PID", "1"),
    ]);
    assert_eq!(recv(&socket), "READY=1");
    // A measured window of six would-be intervals, not synchronisation.
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    assert!(socket.recv(&mut buf).is_err(), "watchdog for another pid");
    drop(other);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The unit file: Type=notify, reload by SIGHUP, hardening; `systemd-analyze
/// verify` accepts it (pointed at the built binary) where it is installed.
#[test]
fn unit_file_is_valid() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/midge.service"),
    )
    .expect("contrib/midge.service");
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/midge",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "WatchdogSec=",
    ] {
        assert!(unit.lines().any(|l| l.starts_with(line)), "missing {line}");
    }
    let Ok(analyze) = which("systemd-analyze") else {
        println!("skipped systemd-analyze verify: systemd-analyze is not installed");
        return;
    };
    let dir = temp_dir("unit");
    let local = unit.replace("/usr/bin/midge", env!("CARGO_BIN_EXE_midge"));
    let path = dir.join("midge.service");
    std::fs::write(&path, local).expect("unit copy");
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .output()
        .expect("run systemd-analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Only complaints about this unit count: without a running systemd,
    // verify may also grumble about the host's own units.
    let ours: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("midge.service") || l.contains("midge"))
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify:\n{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn which(tool: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(tool))
                .find(|f| f.is_file())
        })
        .ok_or(())
}
