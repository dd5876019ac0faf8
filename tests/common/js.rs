//! JavaScript clients for the black-box tests: pinned npm packages installed
//! once into a cache under `target/js/`, Node.js scripts run with a timeout,
//! and headless Chromium driven through `playwright-core` (never a browser of
//! its own: the Debian `chromium` that `scripts/setup.sh test` installs).
//!
//! Nothing here skips: a missing `node`, `npm` or `chromium` fails the test
//! with the command that installs it, since CI installs all three.
//!
//! Scripts are CommonJS; `require('mqtt')` and `require('playwright-core')`
//! resolve through `NODE_PATH`, and `require(process.env.MIDGE_JS +
//! '/chromium.js')` gives `launch()`, which starts Chromium with the flags
//! this machine needs (see `tests/js/chromium.js`).
#![allow(dead_code)]

use std::collections::hash_map::DefaultHasher;
use std::ffi::OsStr;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

/// MQTT.js, pinned: its Node entry point and its browser bundle
/// (`mqtt/dist/mqtt.min.js`, which defines `window.mqtt`).
pub const MQTT_JS: &str = "mqtt@5.16.0";

/// Playwright's driver without its browser downloads, pinned; it drives the
/// system Chromium over the DevTools protocol.
pub const PLAYWRIGHT_CORE: &str = "playwright-core@1.65.1";

/// Flags headless Chromium needs on this closed network, as root (without the
/// background-networking ones it stalls trying to reach the internet).
/// playwright-core makes a fresh `--user-data-dir` itself.
pub const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// How long a first `npm install` may take (a cached one takes no time).
const NPM_TIMEOUT: Duration = Duration::from_secs(300);

/// Where the npm caches live: `target/js/` (the parent of cargo's
/// `CARGO_TARGET_TMPDIR` is the target directory, wherever it is).
fn js_root() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("js")
}

/// The directory of the project's own JavaScript helpers (`tests/js`).
pub fn helpers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("js")
}

/// The path of `tool` on PATH, or a test failure naming how to install it.
pub fn require_tool(tool: &str) -> PathBuf {
    which(tool).unwrap_or_else(|| {
        panic!(
            "`{tool}` is not installed, and this test needs it (not skipped: CI installs it). \
             Run `scripts/setup.sh test` (or `apt-get install nodejs npm chromium`)."
        )
    })
}

/// `tool` found on PATH (an absolute path is taken as is).
fn which(tool: &str) -> Option<PathBuf> {
    if tool.contains('/') {
        let p = PathBuf::from(tool);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// The system Chromium (`chromium`, `chromium-browser`, then
/// `google-chrome`), or None when none is installed.
pub fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|t| which(t))
}

/// [`chromium`], or a test failure naming how to install it.
pub fn require_chromium() -> PathBuf {
    chromium().unwrap_or_else(|| {
        panic!(
            "Chromium is not installed, and this test needs it (not skipped: CI installs it). \
             Run `scripts/setup.sh test` (or `apt-get install chromium`)."
        )
    })
}

/// An exclusive `flock` on `path`, released when the file is dropped: the
/// cache is shared by test binaries that cargo runs in parallel.
fn lock(path: &Path) -> File {
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open lock file {}: {e}", path.display()));
    loop {
        // SAFETY: flock on a descriptor this File owns; no memory is passed.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        if r == 0 {
            return f;
        }
        let e = std::io::Error::last_os_error();
        assert!(
            e.kind() == std::io::ErrorKind::Interrupted,
            "flock {}: {e}",
            path.display()
        );
    }
}

/// Install `packages` (each `name@exact-version`, e.g. [`MQTT_JS`]) once into
/// a cache directory under `target/js/` keyed by the set, and return its
/// `node_modules`. Concurrent test processes wait on a lock file, so one
/// installs and the others find it done. Install scripts are not run (no
/// package here needs one, and playwright's would download browsers).
pub fn npm_install(packages: &[&str]) -> PathBuf {
    let mut sorted: Vec<&str> = packages.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    for p in &sorted {
        let version = p.get(1..).and_then(|s| s.split_once('@')).map(|(_, v)| v);
        assert!(
            version.is_some_and(|v| !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-+".contains(c))),
            "npm package {p:?} must be pinned to an exact version (name@1.2.3)"
        );
    }
    let mut h = DefaultHasher::new();
    sorted.hash(&mut h);
    let root = js_root();
    std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("create {}: {e}", root.display()));
    let dir = root.join(format!("{:016x}", h.finish()));
    let modules = dir.join("node_modules");
    let done = dir.join("installed");
    let want = sorted.join("\n");
    let _guard = lock(&root.join(".lock"));
    if std::fs::read_to_string(&done).is_ok_and(|s| s == want) {
        return modules;
    }
    let npm = require_tool("npm");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    std::fs::write(
        dir.join("package.json"),
        "{\"name\":\"midge-test-js\",\"private\":true}\n",
    )
    .expect("write package.json");
    let mut cmd = Command::new(npm);
    cmd.current_dir(&dir)
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
            "--save-exact",
            "--loglevel=error",
        ])
        .args(&sorted)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1");
    let out = run(cmd, NPM_TIMEOUT);
    assert!(
        out.status.success(),
        "npm install {} failed ({}):\n{}\n{}",
        want.replace('\n', " "),
        out.status,
        out.stdout,
        out.stderr
    );
    // Only a complete install is marked: an interrupted one is redone.
    std::fs::write(&done, &want).expect("mark npm install done");
    modules
}

/// What a finished process printed.
#[derive(Debug)]
pub struct Output {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl Output {
    /// Fail the test unless the process exited 0; returns its stdout.
    pub fn ok(&self, what: &str) -> &str {
        assert!(
            self.status.success(),
            "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        &self.stdout
    }
}

/// A Node.js script: a file, or source text (run from a temporary file so
/// that `require` and stack traces behave as for a file).
pub enum Script<'a> {
    /// A script file.
    File(&'a Path),
    /// Script source.
    Source(&'a str),
}

impl<'a> From<&'a Path> for Script<'a> {
    fn from(p: &'a Path) -> Self {
        Script::File(p)
    }
}

impl<'a> From<&'a str> for Script<'a> {
    fn from(s: &'a str) -> Self {
        Script::Source(s)
    }
}

/// Run `script` with `node`, with `args` and the extra `env`, in its own
/// process group; past `timeout` the whole group (the browser too) is killed
/// and the test fails with what it printed. `node_modules` comes from
/// [`npm_install`]. The script sees `NODE_PATH` (so `require('mqtt')` works),
/// `MIDGE_JS` (the `tests/js` helpers) and, when Chromium is installed,
/// `MIDGE_CHROMIUM` and `MIDGE_CHROMIUM_FLAGS` (JSON).
pub fn run_node<'a>(
    node_modules: &Path,
    script: impl Into<Script<'a>>,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> Output {
    let node = require_tool("node");
    let scratch;
    let path: PathBuf = match script.into() {
        Script::File(p) => p.to_path_buf(),
        Script::Source(src) => {
            scratch = super::temp_dir("node");
            let p = scratch.join("script.js");
            std::fs::write(&p, src).expect("write node script");
            p
        }
    };
    let mut cmd = Command::new(node);
    cmd.arg(&path)
        .args(args)
        .env("NODE_PATH", node_modules)
        .env("MIDGE_JS", helpers_dir())
        .env(
            "MIDGE_CHROMIUM_FLAGS",
            format!("[{}]", {
                let quoted: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| format!("{f:?}")).collect();
                quoted.join(",")
            }),
        );
    if let Some(c) = chromium() {
        cmd.env("MIDGE_CHROMIUM", c);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(cmd, timeout)
}

/// Run `cmd` in its own process group with piped output; kill the group and
/// fail past `timeout`.
pub fn run(mut cmd: Command, timeout: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let what = format!("{cmd:?}");
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {what}: {e}"));
    let (tx, rx) = channel();
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut s| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            let _ = tx.send(());
            buf
        })
    })
    .collect();
    drop(tx);
    // Both pipes end when the process (and whatever inherited them) exits.
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    for _ in 0..readers.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if rx.recv_timeout(left).is_err() {
            timed_out = true;
            break;
        }
    }
    if timed_out {
        // The group this test started: SIGTERM first, on which playwright
        // closes the browsers it launched (in groups of their own), then
        // SIGKILL for whatever is left.
        if let Ok(pgid) = i32::try_from(child.id()) {
            // SAFETY: a signal to the process group this test started.
            unsafe {
                libc::kill(-pgid, libc::SIGTERM);
            }
            let grace = Instant::now() + Duration::from_secs(5);
            while rx
                .recv_timeout(grace.saturating_duration_since(Instant::now()))
                .is_ok()
            {}
            // SAFETY: as above.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
    let status = child.wait().expect("wait for child");
    let mut outs = readers
        .into_iter()
        .map(|r| String::from_utf8_lossy(&r.join().unwrap_or_default()).into_owned());
    let out = Output {
        status,
        stdout: outs.next().unwrap_or_default(),
        stderr: outs.next().unwrap_or_default(),
    };
    assert!(
        !timed_out,
        "{what} did not finish within {timeout:?}:\nstdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    out
}

/// `s` as a JavaScript string literal (JSON is a subset).
pub fn js_string(s: impl AsRef<OsStr>) -> String {
    let s = s.as_ref().to_string_lossy();
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
