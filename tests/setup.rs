//! `scripts/setup.sh`, the bare-machine set-up that `make run` and `make test`
//! call first: its detection, run on a PATH without the tools.

mod common;

use std::path::Path;
use std::process::Command;

use common::temp_dir;

fn setup(path: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/setup.sh");
    let out = Command::new("/bin/bash")
        .arg(script)
        .args(args)
        .env_clear()
        .env("PATH", path)
        .output()
        .expect("run setup.sh");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// With none of the tools on PATH, `--check` names each missing tool and the
/// one command that installs them all, on one line, and fails.
#[test]
fn check_names_the_missing_tools_and_the_command() {
    let dir = temp_dir("setup");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    // Only what the script itself runs besides the tools it looks for.
    std::os::unix::fs::symlink("/usr/bin/id", bin.join("id")).expect("id");
    let (code, out, err) = setup(bin.to_str().expect("utf-8"), &["--check"]);
    assert_eq!(code, Some(1), "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {out:?}");
    let line = lines[0];
    for tool in [
        "pkg-config",
        "mosquitto",
        "mosquitto_passwd",
        "mosquitto_sub",
        "mosquitto_pub",
        "openssl",
        "qemu-aarch64",
        "python3",
        "paho-mqtt>=2",
        "node",
        "npm",
        "chromium",
    ] {
        assert!(line.contains(tool), "{tool} not named: {line}");
    }
    let sudo = if unsafe { libc::geteuid() } == 0 {
        ""
    } else {
        "sudo "
    };
    assert!(
        line.contains(&format!(
            "run: {sudo}apt-get update && {sudo}apt-get install -y pkg-config mosquitto mosquitto-clients openssl qemu-user nodejs npm chromium python3 python3-pip && python3 -m pip install 'paho-mqtt>=2,<3'"
        )),
        "{line}"
    );
    // `make run` needs the build tools only.
    let (code, out, _) = setup(bin.to_str().expect("utf-8"), &["--check", "build"]);
    assert_eq!(code, Some(1));
    assert!(
        out.contains("pkg-config") && !out.contains("mosquitto"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// On this machine (where `make test` ran the set-up first) nothing is missing.
#[test]
fn check_passes_when_everything_is_there() {
    let path = std::env::var("PATH").expect("PATH");
    let (code, out, err) = setup(&path, &["--check"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.is_empty(), "{out}");
}

#[test]
fn unknown_arguments_are_refused() {
    let (code, _, err) = setup("/usr/bin:/bin", &["--instal"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("usage"), "{err}");
}
