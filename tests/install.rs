//! `make install` lays out the binary, the unit and the example configuration
//! under DESTDIR/PREFIX; the example configuration parses.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::temp_dir;

fn make_install(dest: &Path, prefix: &str) {
    let out = Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(env!("CARGO_MANIFEST_DIR"))
        .arg("install")
        .arg(format!("DESTDIR={}", dest.display()))
        .arg(format!("PREFIX={prefix}"))
        // The binary this test run built: no release build inside a test.
        .arg(format!("MIDGE_BIN={}", env!("CARGO_BIN_EXE_midge")))
        .output()
        .expect("run make");
    assert!(
        out.status.success(),
        "make install failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn make_install_lays_out_the_files() {
    let dest = temp_dir("install");
    make_install(&dest, "/usr");
    let bin = dest.join("usr/bin/midge");
    let mode = std::fs::metadata(&bin)
        .expect("usr/bin/midge")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    let unit =
        std::fs::read_to_string(dest.join("usr/lib/systemd/system/midge.service")).expect("unit");
    assert!(unit.contains("ExecStart=/usr/bin/midge -c /etc/midge/midge.conf"));
    let conf = dest.join("etc/midge/midge.conf");
    let example = dest.join("usr/share/doc/midge/midge.conf.example");
    assert_eq!(
        std::fs::read(&conf).expect("etc/midge/midge.conf"),
        std::fs::read(&example).expect("example")
    );
    midge::config::Config::load(&conf).expect("the example configuration parses");

    // A second install keeps the administrator's configuration.
    std::fs::write(&conf, "listener 1884\n").expect("edit");
    make_install(&dest, "/usr");
    assert_eq!(
        std::fs::read_to_string(&conf).expect("conf"),
        "listener 1884\n"
    );

    // Another prefix: the unit points at the binary where it was put.
    make_install(&dest, "/usr/local");
    let unit = std::fs::read_to_string(dest.join("usr/local/lib/systemd/system/midge.service"))
        .expect("unit");
    assert!(
        unit.contains("ExecStart=/usr/local/bin/midge -c /usr/local/etc/midge/midge.conf"),
        "{unit}"
    );
    assert!(dest.join("usr/local/bin/midge").is_file());
    let _ = std::fs::remove_dir_all(&dest);
}
