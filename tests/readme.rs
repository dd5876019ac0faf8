//! The README's snippets, run as a reader would paste them: every config and
//! ACL block, the `midge passwd` lines, the certificate recipe and the client
//! commands of the TLS and TLS-PSK walkthroughs, and the quick start's client commands.
//! `/etc/midge/` becomes a temporary directory and ports become free ones;
//! nothing else is changed. Blocks not run here: `make run`/`make test` (the
//! whole suite itself), `make install` (tests/install.rs) and the systemd
//! commands (need a booted systemd).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

/// Fenced blocks of README.md: (info string, lines).
fn blocks() -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README");
    let mut out = Vec::new();
    let mut current: Option<(String, Vec<String>)> = None;
    for line in text.lines() {
        if let Some(info) = line.strip_prefix("```") {
            match current.take() {
                Some(b) => out.push(b),
                None => current = Some((info.trim().to_string(), Vec::new())),
            }
        } else if let Some((_, lines)) = current.as_mut() {
            lines.push(line.to_string());
        }
    }
    out
}

/// The one block whose first line is `first`.
fn block_starting(first: &str) -> Vec<String> {
    let found: Vec<_> = blocks()
        .into_iter()
        .filter(|(_, l)| l.first().is_some_and(|f| f.starts_with(first)))
        .collect();
    assert_eq!(found.len(), 1, "README blocks starting with {first:?}");
    found[0].1.clone()
}

/// Run one shell line in `dir` with midge on PATH, stdin `input`.
fn sh(line: &str, dir: &Path, input: &str) -> (bool, String) {
    use std::io::Write;
    let bin_dir = midge_bin().parent().expect("bin dir").to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = Command::new("sh")
        .args(["-c", line])
        .current_dir(dir)
        .env("PATH", path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh");
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(input.as_bytes());
    }
    let out = child.wait_with_output().expect("wait");
    (
        out.status.success(),
        format!(
            "{line}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Shell lines of a block with `\` continuations joined.
fn commands(lines: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut acc = String::new();
    for l in lines {
        match l.strip_suffix('\\') {
            Some(head) => {
                acc.push_str(head);
                acc.push(' ');
            }
            None => {
                acc.push_str(l);
                if !acc.trim().is_empty() {
                    out.push(std::mem::take(&mut acc));
                }
                acc.clear();
            }
        }
    }
    out
}

fn test_config(conf: &Path) -> (bool, String) {
    let out = Command::new(midge_bin())
        .args(["--test-config", "-c", &conf.display().to_string()])
        .output()
        .expect("midge");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// "Listening": the one-listener config (with its trailing comment) is valid.
/// Before, `listener 1883  # all interfaces` was refused.
#[test]
fn readme_listener_snippet_is_valid() {
    let dir = temp_dir("readme-listener");
    let port = free_port();
    let lines = blocks()
        .into_iter()
        .find(|(_, l)| l.len() == 2 && l[0] == "# /etc/midge/midge.conf")
        .expect("listener block")
        .1;
    let conf = dir.join("midge.conf");
    std::fs::write(&conf, lines.join("\n").replace("1883", &port.to_string())).expect("write");
    let (ok, out) = test_config(&conf);
    assert!(ok, "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every other config block (bridges, persistence...) passes `--test-config`
/// with its paths moved into a temporary directory and a free port.
#[test]
fn readme_other_config_blocks_are_valid() {
    let root = temp_dir("readme-configs");
    let mut checked = 0;
    for (_, lines) in blocks() {
        let is_conf = lines
            .first()
            .is_some_and(|f| f == "# /etc/midge/midge.conf");
        // The TLS one is run end to end by the walkthrough test.
        if !is_conf || lines.iter().any(|l| l.starts_with("certfile")) {
            continue;
        }
        let var = root.join(format!("var{checked}"));
        std::fs::create_dir_all(&var).expect("mkdir");
        let text = lines
            .join("\n")
            .replace("/etc/midge/", &format!("{}/", root.display()))
            .replace("/var/lib/midge/", &format!("{}/", var.display()))
            .replace("listener 1883", &format!("listener {}", free_port()));
        let conf = root.join(format!("block{checked}.conf"));
        std::fs::write(&conf, &text).expect("write");
        let (ok, out) = test_config(&conf);
        assert!(ok, "{text}\n{out}");
        checked += 1;
    }
    assert!(checked >= 2, "README config blocks found: {checked}");
    let _ = std::fs::remove_dir_all(&root);
}

/// "Passwords, ACLs and TLS", start to end: make the password file, the ACL,
/// the certificates, check and start the config, then the client commands.
#[test]
fn readme_passwords_acls_and_tls_walkthrough() {
    let root = temp_dir("readme-tls");
    let etc: PathBuf = root.join("etc/midge");
    std::fs::create_dir_all(&etc).expect("mkdir");
    let here = |s: &str| s.replace("/etc/midge/", &format!("{}/", etc.display()));
    // midge passwd lines; the prompting one reads its two lines from stdin.
    let pw = block_starting("midge passwd");
    for cmd in commands(&pw) {
        let (ok, out) = sh(&here(&cmd), &etc, "wonderland\nwonderland\n");
        assert!(ok, "{out}");
    }
    // The ACL file.
    let acl = block_starting("# /etc/midge/acl");
    std::fs::write(etc.join("acl"), acl.join("\n") + "\n").expect("acl");
    // The certificate recipe, up to the client commands.
    let recipe = commands(&block_starting("openssl req -x509"));
    let (make, clients): (Vec<_>, Vec<_>) = recipe
        .iter()
        .partition(|c| c.starts_with("openssl") || c.starts_with("printf"));
    for cmd in &make {
        let (ok, out) = sh(cmd, &etc, "");
        assert!(ok, "{out}");
    }
    // The config, with free ports.
    let (plain, tls) = (free_port(), free_port());
    let conf_lines = blocks()
        .into_iter()
        .find(|(_, l)| {
            l.first().is_some_and(|f| f == "# /etc/midge/midge.conf")
                && l.iter().any(|x| x.starts_with("certfile"))
        })
        .expect("TLS config block")
        .1;
    let conf_text = here(&conf_lines.join("\n"))
        .replace("listener 1883", &format!("listener {plain} 127.0.0.1"))
        .replace("listener 8883", &format!("listener {tls} 127.0.0.1"));
    let conf = etc.join("midge.conf");
    std::fs::write(&conf, &conf_text).expect("conf");
    let (ok, out) = test_config(&conf);
    assert!(ok, "{out}");
    let b = BrokerProcess::start_with_config(plain, &conf_text, &[]);
    b.wait_log(&format!("127.0.0.1:{tls} (TLS)"));
    assert!(!clients.is_empty(), "the walkthrough has client commands");
    for cmd in clients {
        let cmd = cmd
            .replace("-p 8883", &format!("-p {tls}"))
            .replace("-p 1883", &format!("-p {plain}"));
        let (ok, out) = sh(&cmd, &etc, "");
        assert!(ok, "{out}\nbroker log:\n{}", b.log_text());
    }
    drop(b);
    let _ = std::fs::remove_dir_all(&root);
}

/// Quick start: the client commands, against a broker in local-only mode.
#[test]
fn readme_quick_start_clients() {
    let port = free_port();
    let b = BrokerProcess::start_with_args(port, &["-p", &port.to_string()]);
    let dir = temp_dir("readme-quick");
    for cmd in commands(&block_starting("mosquitto_sub -h 127.0.0.1")) {
        if cmd.starts_with("mosquitto_sub") {
            continue; // runs until killed; the publishes below are what is checked
        }
        let cmd = cmd.replace("-h 127.0.0.1", &format!("-h 127.0.0.1 -p {port}"));
        let (ok, out) = sh(&cmd, &dir, "");
        assert!(ok, "{out}\nbroker log:\n{}", b.log_text());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// "TLS-PSK": the key file, the listener and the `mosquitto_pub --psk` line,
/// pasted as they are: the identity logs in as the user `sensor-2`.
#[test]
fn readme_tls_psk_walkthrough() {
    let root = temp_dir("readme-psk");
    let etc: PathBuf = root.join("etc/midge");
    std::fs::create_dir_all(&etc).expect("mkdir");
    let here = |s: &str| s.replace("/etc/midge/", &format!("{}/", etc.display()));
    let keys = block_starting("# /etc/midge/psk");
    std::fs::write(etc.join("psk"), keys.join("\n") + "\n").expect("psk");
    let (plain, psk) = (free_port(), free_port());
    let conf_text = format!(
        "listener {plain} 127.0.0.1\n{}\n",
        here(&block_starting("# /etc/midge/midge.conf, a TLS-PSK").join("\n"))
            .replace("listener 8884", &format!("listener {psk} 127.0.0.1"))
    );
    let conf = etc.join("midge.conf");
    std::fs::write(&conf, &conf_text).expect("conf");
    let (ok, out) = test_config(&conf);
    assert!(ok, "{out}");
    let b = BrokerProcess::start_with_config(plain, &conf_text, &[]);
    b.wait_log(&format!("127.0.0.1:{psk} (TLS)"));
    let clients = commands(&block_starting("mosquitto_pub -h localhost -p 8884 --psk"));
    assert_eq!(clients.len(), 1);
    for cmd in clients {
        let (ok, out) = sh(&cmd.replace("-p 8884", &format!("-p {psk}")), &etc, "");
        assert!(ok, "{out}\nbroker log:\n{}", b.log_text());
    }
    b.wait_log("(p4, c1, k60, u'sensor-2')");
    drop(b);
    let _ = std::fs::remove_dir_all(&root);
}
