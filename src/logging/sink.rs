//! Where log lines are written: a thread of its own that owns the
//! destinations (stdout, stderr, files, syslog), fed through a bounded
//! channel. The broker's single thread only formats a line and hands it over
//! with `try_send`: a slow or stuck destination (a full stderr pipe, a hung
//! NFS log file) costs dropped lines, counted and reported once the
//! destination moves again, never a stalled event loop. A thread rather than
//! non-blocking writes because O_NONBLOCK on stdout/stderr would change the
//! open file description shared with the parent (a terminal, systemd's journal
//! pipe), and syslog(3) and regular files cannot be made non-blocking anyway.

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender};

use super::LogType;

/// Lines waiting for the writer before new ones are dropped (about 1 MB at
/// the usual line length).
pub const QUEUE_LINES: usize = 8192;

/// What the broker thread sends to the writer.
pub(super) enum Msg {
    /// A line to write.
    Line {
        /// Unix seconds when it was logged.
        secs: i64,
        /// Its type (syslog priority).
        kind: LogType,
        /// The text, without timestamp or newline.
        text: String,
        /// Lines dropped just before this one because the queue was full.
        dropped_before: u64,
    },
    /// SIGHUP: reopen the log files (logrotate moved them).
    Reopen,
    /// Answer when everything before has been written.
    Flush(SyncSender<()>),
}

/// One opened destination.
enum Dest {
    Stdout,
    Stderr,
    File { path: PathBuf, file: Option<File> },
    Syslog,
}

/// The destinations and line format, opened before the broker detaches or
/// drops privileges; [`Sink::run`] is the writer thread's body.
pub struct Sink {
    dests: Vec<Dest>,
    timestamp: bool,
    format: Option<CString>,
    facility: libc::c_int,
}

/// `log_dest file PATH` that cannot be opened.
#[derive(Debug)]
pub struct OpenError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub error: std::io::Error,
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unable to open log file {}: {}",
            self.path.display(),
            self.error
        )
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

impl Sink {
    /// Open the destinations `config` names (files now, so that a bad path
    /// stops start-up before `-d` detaches).
    pub fn open(config: &crate::config::Config) -> Result<Sink, OpenError> {
        use crate::config::LogDest;
        let mut dests = Vec::new();
        for d in &config.log_dests {
            dests.push(match d {
                LogDest::Stdout => Dest::Stdout,
                LogDest::Stderr => Dest::Stderr,
                LogDest::Syslog => Dest::Syslog,
                LogDest::File(path) => {
                    let file = open_append(path).map_err(|error| OpenError {
                        path: path.clone(),
                        error,
                    })?;
                    Dest::File {
                        path: path.clone(),
                        file: Some(file),
                    }
                }
                // Published by the broker thread, not written here.
                LogDest::Topic => continue,
            });
        }
        let facility = match config.log_facility {
            Some(n) => (16 + libc::c_int::from(n)) << 3, // LOG_LOCAL0 + n
            None => libc::LOG_DAEMON,
        };
        Ok(Sink {
            dests,
            timestamp: config.log_timestamp,
            format: config
                .log_timestamp_format
                .as_deref()
                .and_then(|f| CString::new(f).ok()),
            facility,
        })
    }

    /// Any destination to write to (else no thread is needed).
    pub fn is_empty(&self) -> bool {
        self.dests.is_empty()
    }

    /// The writer thread: write each line until the broker side hangs up.
    pub(super) fn run(mut self, rx: Receiver<Msg>) {
        if self.dests.iter().any(|d| matches!(d, Dest::Syslog)) {
            // The ident must outlive every syslog call: a static string.
            // SAFETY: openlog keeps the pointer; it points to static memory.
            unsafe {
                libc::openlog(
                    c"midge".as_ptr(),
                    libc::LOG_PID | libc::LOG_NDELAY,
                    self.facility,
                )
            };
        }
        for msg in rx {
            match msg {
                Msg::Line {
                    secs,
                    kind,
                    text,
                    dropped_before,
                } => {
                    if dropped_before > 0 {
                        let note = format!(
                            "{dropped_before} log lines dropped: a log destination is too slow."
                        );
                        self.write(secs, LogType::Warning, &note);
                    }
                    self.write(secs, kind, &text);
                }
                Msg::Reopen => self.reopen(),
                Msg::Flush(done) => {
                    let _ = std::io::stdout().flush();
                    let _ = done.send(());
                }
            }
        }
    }

    fn write(&mut self, secs: i64, kind: LogType, text: &str) {
        let line = if !self.timestamp {
            format!("{text}\n")
        } else if let Some(f) = &self.format {
            format!("{}: {text}\n", strftime(f, secs))
        } else {
            format!("{secs}: {text}\n")
        };
        for d in &mut self.dests {
            // A destination that fails must not stop the others or the broker.
            let _ = match d {
                Dest::Stdout => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(line.as_bytes()).and_then(|()| out.flush())
                }
                Dest::Stderr => std::io::stderr().lock().write_all(line.as_bytes()),
                Dest::File { file: Some(f), .. } => f.write_all(line.as_bytes()),
                Dest::File { file: None, .. } => Ok(()),
                Dest::Syslog => {
                    syslog(kind, text);
                    Ok(())
                }
            };
        }
    }

    fn reopen(&mut self) {
        for d in &mut self.dests {
            if let Dest::File { path, file } = d {
                // Close first: logrotate's `create` made a new file at the path.
                *file = None;
                *file = open_append(path).ok();
                if file.is_none() {
                    let _ = writeln!(
                        std::io::stderr(),
                        "Error: unable to reopen log file {}.",
                        path.display()
                    );
                }
            }
        }
    }
}

fn syslog(kind: LogType, text: &str) {
    let priority = match kind {
        LogType::Error => libc::LOG_ERR,
        LogType::Warning => libc::LOG_WARNING,
        LogType::Notice => libc::LOG_NOTICE,
        LogType::Information | LogType::Subscribe | LogType::Unsubscribe => libc::LOG_INFO,
        LogType::Debug => libc::LOG_DEBUG,
    };
    let Ok(msg) = CString::new(text.replace('\0', "\\0")) else {
        return;
    };
    // SAFETY: a constant "%s" format and a NUL-terminated argument.
    unsafe { libc::syslog(priority, c"%s".as_ptr(), msg.as_ptr()) };
}

/// `secs` in local time through strftime(3) (`log_timestamp_format`).
pub fn strftime(format: &CString, secs: i64) -> String {
    // The libc crate marks musl's `time_t` alias deprecated (its width is to
    // follow musl 1.2's 64-bit change); the value is passed straight back to it.
    #[allow(deprecated)]
    let t: libc::time_t = secs as libc::time_t;
    // SAFETY: zeroed tm is a valid value; localtime_r fills it from `t`.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call.
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return secs.to_string();
    }
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its length; format is NUL-terminated.
    let n = unsafe { libc::strftime(buf.as_mut_ptr().cast(), buf.len(), format.as_ptr(), &tm) };
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_formats_in_local_time() {
        let f = CString::new("%Y|%%").expect("cstring");
        let s = strftime(&f, 1_700_000_000);
        assert_eq!(s, "2023|%");
        // An empty result (format too long for the buffer) is an empty stamp.
        let f = CString::new("").expect("cstring");
        assert_eq!(strftime(&f, 0), "");
    }
}
