//! Test certificates made with the openssl command line: a CA, a server
//! certificate for 127.0.0.1 and localhost, a client certificate, and an
//! unrelated CA (for "wrong CA" cases). EC P-256 keys, valid two days.

use std::path::Path;
use std::process::Command;

/// Write `ca.crt`/`ca.key`, `other-ca.crt`/`other-ca.key`, `server.crt`/
/// `server.key` (CN localhost, SAN IP:127.0.0.1 and DNS:localhost) and
/// `client.crt`/`client.key` (CN `client_cn`, both signed by `ca`) into `dir`.
pub fn generate(dir: &Path, client_cn: &str) {
    std::fs::create_dir_all(dir).expect("mkdir pki");
    let ossl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for ca in ["ca", "other-ca"] {
        let (key, crt, subj) = (
            format!("{ca}.key"),
            format!("{ca}.crt"),
            format!("/CN=test {ca}"),
        );
        let mut a = vec![
            "req", "-x509", "-days", "2", "-keyout", &key, "-out", &crt, "-subj", &subj,
        ];
        a.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
        a.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
        a.extend(ec);
        ossl(&a);
    }
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .expect("ext");
    for (name, cn, ext) in [
        ("server", "localhost", "server.ext"),
        ("client", client_cn, "client.ext"),
    ] {
        let (key, csr, crt, subj) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("/CN={cn}"),
        );
        let mut a = vec!["req", "-new", "-keyout", &key, "-out", &csr, "-subj", &subj];
        a.extend(ec);
        ossl(&a);
        ossl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &crt,
            "-extfile",
            ext,
        ]);
    }
}
