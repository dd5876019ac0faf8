//! TLS listeners, password files, ACLs and `midge passwd`, against the real
//! binary, with real clients (mosquitto_pub/mosquitto_sub, paho-mqtt) and the
//! project's codec. Certificates are made at test time with the openssl CLI.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use midge::protocol::{
    ConnAck, Connect, Packet, Properties, ProtocolVersion, QoS, ReasonCode, Will,
};

// ------------------------------------------------------------------ helpers

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A CA, a server certificate (127.0.0.1 / localhost, EC key in PKCS#8), the
/// same with a traditional RSA key, and client certificates for `sensor-1` and
/// `intruder` (the latter signed by another CA). Made once per test process.
fn pki() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = temp_dir("pki");
        let ossl = |args: &[&str]| {
            run(Command::new("openssl").args(args).current_dir(&d));
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for ca in ["ca", "other-ca"] {
            let mut a = vec!["req", "-x509", "-days", "2", "-keyout"];
            let key = format!("{ca}.key");
            let crt = format!("{ca}.crt");
            let subj = format!("/CN=midge test {ca}");
            a.extend([key.as_str(), "-out", crt.as_str(), "-subj", subj.as_str()]);
            a.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
            a.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
            a.extend(ec);
            ossl(&a);
        }
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .expect("ext");
        std::fs::write(
            d.join("client.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
        )
        .expect("ext");
        // name, CN, CA, ext, key kind
        let certs = [
            ("server", "localhost", "ca", "server.ext", "ec"),
            ("server-rsa", "localhost", "ca", "server.ext", "rsa"),
            ("sensor-1", "sensor-1", "ca", "client.ext", "ec"),
            ("intruder", "intruder", "other-ca", "client.ext", "ec"),
        ];
        for (name, cn, ca, ext, kind) in certs {
            let key = format!("{name}.key");
            if kind == "rsa" {
                // A traditional ("BEGIN RSA PRIVATE KEY") key, as older setups have.
                ossl(&["genrsa", "-traditional", "-out", &key, "2048"]);
                ossl(&[
                    "req",
                    "-new",
                    "-key",
                    &key,
                    "-out",
                    &format!("{name}.csr"),
                    "-subj",
                    &format!("/CN={cn}"),
                ]);
            } else {
                let mut a = vec!["req", "-new", "-keyout", key.as_str()];
                let csr = format!("{name}.csr");
                let subj = format!("/O=midge/CN={cn}");
                a.extend(["-out", csr.as_str(), "-subj", subj.as_str()]);
                a.extend(ec);
                ossl(&a);
            }
            ossl(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.crt"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-out",
                &format!("{name}.crt"),
                "-days",
                "2",
                "-extfile",
                ext,
            ]);
        }
        let rsa = std::fs::read_to_string(d.join("server-rsa.key")).expect("rsa key");
        assert!(
            rsa.contains("BEGIN RSA PRIVATE KEY"),
            "traditional RSA key expected"
        );
        d
    })
}

fn pem(name: &str) -> String {
    pki().join(name).display().to_string()
}

/// A broker with a plain listener (anonymous allowed) and a TLS listener.
fn tls_broker(tls_lines: &str) -> (BrokerProcess, u16) {
    let plain = free_port();
    let tls = free_port();
    let config = format!(
        "listener {plain} 127.0.0.1\nallow_anonymous true\nlistener {tls} 127.0.0.1\n{tls_lines}\n"
    );
    let b = BrokerProcess::start_with_config(plain, &config, &[]);
    b.wait_log(&format!("Opening listen socket on 127.0.0.1:{tls} (TLS)."));
    (b, tls)
}

fn server_tls() -> String {
    format!(
        "certfile {}\nkeyfile {}\n",
        pem("server.crt"),
        pem("server.key")
    )
}

fn mosq(tool: &str, port: u16, args: &[&str]) -> Output {
    Command::new(tool)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("mosquitto client")
}

/// Subscribe with mosquitto_sub (waiting until midge has the subscription),
/// publish with mosquitto_pub, return what the subscriber printed.
fn tls_round_trip(
    b: &BrokerProcess,
    port: u16,
    id: &str,
    qos: &str,
    sub_args: &[&str],
    pub_args: &[&str],
) -> (String, Output) {
    let topic = format!("tls/{id}");
    let mut sub = Command::new("mosquitto_sub");
    sub.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-i",
        id,
        "-t",
        &topic,
        "-q",
        qos,
    ])
    .args(["-C", "1", "-W", "10"])
    .args(sub_args);
    let child = sub
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_sub");
    b.wait_log(&format!("Received SUBSCRIBE from {id}"));
    let p = mosq(
        "mosquitto_pub",
        port,
        &[
            &["-t", topic.as_str(), "-m", "over tls", "-q", qos][..],
            pub_args,
        ]
        .concat(),
    );
    let out = child.wait_with_output().expect("sub output");
    (String::from_utf8_lossy(&out.stdout).trim().to_string(), p)
}

fn connect_with_credentials(
    port: u16,
    version: ProtocolVersion,
    id: &str,
    user: Option<&str>,
    pass: Option<&[u8]>,
) -> (Client, ConnAck<'static>) {
    connect_full(port, version, id, user, pass, None)
}

fn connect_full(
    port: u16,
    version: ProtocolVersion,
    id: &str,
    user: Option<&str>,
    pass: Option<&[u8]>,
    will: Option<Will<'static>>,
) -> (Client, ConnAck<'static>) {
    let mut c = Client::open(port, version);
    c.send(&Packet::Connect(Box::new(Connect {
        version,
        clean_start: true,
        keep_alive: 60,
        properties: Properties::default(),
        client_id: leak_str(id),
        will,
        username: user.map(leak_str),
        password: pass.map(leak_bytes),
    })));
    match c.recv() {
        Packet::ConnAck(a) => (c, a),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

// ------------------------------------------------------------------ TLS

/// mosquitto clients over TLS (--cafile) at QoS 0, 1 and 2; TLS 1.3 is
/// negotiated when both sides allow it.
#[test]
fn tls_with_mosquitto_clients_at_every_qos() {
    let (b, port) = tls_broker(&server_tls());
    for qos in ["0", "1", "2"] {
        let ca = pem("ca.crt");
        let (got, p) = tls_round_trip(
            &b,
            port,
            &format!("tls-q{qos}"),
            qos,
            &["--cafile", &ca],
            &["--cafile", &ca],
        );
        assert!(p.status.success(), "{}", String::from_utf8_lossy(&p.stderr));
        assert_eq!(got, "over tls", "QoS {qos}");
    }
    b.wait_log("(TLSv1.3)");
}

/// A traditional RSA key loads as well as a PKCS#8 one, and `tls_version
/// tlsv1.3` refuses a TLS 1.2-only client.
#[test]
fn rsa_key_and_minimum_version() {
    let lines = format!(
        "certfile {}\nkeyfile {}\ntls_version tlsv1.3\n",
        pem("server-rsa.crt"),
        pem("server-rsa.key")
    );
    let (b, port) = tls_broker(&lines);
    let ca = pem("ca.crt");
    let (got, _) = tls_round_trip(
        &b,
        port,
        "rsa-13",
        "1",
        &["--cafile", &ca],
        &["--cafile", &ca],
    );
    assert_eq!(got, "over tls");
    // A client capped at TLS 1.2 (Python's ssl module) cannot get in.
    let probe = "import ssl, socket, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
ctx.maximum_version = ssl.TLSVersion.TLSv1_2
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5)
try:
    ctx.wrap_socket(s, server_hostname='localhost')
    print('connected')
except (ssl.SSLError, OSError) as e:
    print('refused', e)
";
    let out = Command::new("python3")
        .args(["-c", probe, &port.to_string(), &ca])
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("refused"),
        "a TLS 1.2 client got in: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// require_certificate: no certificate, or one from another CA, is refused; a
/// good one gets in.
#[test]
fn require_certificate() {
    let lines = format!(
        "{}cafile {}\nrequire_certificate true\n",
        server_tls(),
        pem("ca.crt")
    );
    let (b, port) = tls_broker(&lines);
    let ca = pem("ca.crt");
    let bare = mosq(
        "mosquitto_pub",
        port,
        &["--cafile", &ca, "-t", "x", "-m", "y"],
    );
    assert!(!bare.status.success(), "no client certificate accepted");
    let (c, k) = (pem("intruder.crt"), pem("intruder.key"));
    let foreign = mosq(
        "mosquitto_pub",
        port,
        &[
            "--cafile", &ca, "--cert", &c, "--key", &k, "-t", "x", "-m", "y",
        ],
    );
    assert!(
        !foreign.status.success(),
        "certificate from another CA accepted"
    );
    let (c, k) = (pem("sensor-1.crt"), pem("sensor-1.key"));
    let args = [
        "--cafile",
        ca.as_str(),
        "--cert",
        c.as_str(),
        "--key",
        k.as_str(),
    ];
    let (got, p) = tls_round_trip(&b, port, "mutual", "2", &args, &args);
    assert!(p.status.success(), "{}", String::from_utf8_lossy(&p.stderr));
    assert_eq!(got, "over tls");
}

/// use_identity_as_username: the certificate CN is the user the ACL sees.
#[test]
fn identity_as_username_drives_the_acl() {
    let dir = temp_dir("acl-cn");
    let acl = dir.join("acl");
    std::fs::write(&acl, "user sensor-1\ntopic readwrite sensors/1/#\n").expect("acl");
    let lines = format!(
        "{}cafile {}\nrequire_certificate true\nuse_identity_as_username true\nacl_file {}\n",
        server_tls(),
        pem("ca.crt"),
        acl.display()
    );
    let plain = free_port();
    let tls = free_port();
    // Global settings (no per_listener_settings): the ACL applies to both
    // listeners; anonymous plain clients may connect but the ACL gives them nothing.
    let config = format!(
        "listener {plain} 127.0.0.1\nallow_anonymous true\nlistener {tls} 127.0.0.1\n{lines}"
    );
    let b = BrokerProcess::start_with_config(plain, &config, &[]);
    let (ca, c, k) = (pem("ca.crt"), pem("sensor-1.crt"), pem("sensor-1.key"));
    let args = [
        "--cafile",
        ca.as_str(),
        "--cert",
        c.as_str(),
        "--key",
        k.as_str(),
    ];
    let sub = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &tls.to_string(),
            "-i",
            "cn-sub",
            "-t",
            "sensors/#",
            "-q",
            "1",
            "-C",
            "1",
            "-W",
            "10",
            "-F",
            "%t %p",
        ])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sub");
    b.wait_log("Received SUBSCRIBE from cn-sub");
    for t in ["sensors/2/x", "sensors/1/x"] {
        let p = mosq(
            "mosquitto_pub",
            tls,
            &[&args[..], &["-t", t, "-m", t, "-q", "1"]].concat(),
        );
        assert!(p.status.success());
    }
    let out = sub.wait_with_output().expect("sub");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "sensors/1/x sensors/1/x"
    );
}

/// A plain MQTT client on the TLS port fails cleanly; the broker and its TLS
/// clients carry on.
#[test]
fn plain_client_on_the_tls_port_fails_cleanly() {
    let (mut b, port) = tls_broker(&server_tls());
    let mut c = Client::open(port, ProtocolVersion::V311);
    c.send_connect(&ConnectOptions::new(ProtocolVersion::V311, "plain-on-tls"));
    let mut buf = [0u8; 64];
    use std::io::Read;
    let mut s = c.into_stream();
    s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    // Whatever TLS alert comes back, the socket is then closed.
    let mut closed = false;
    for _ in 0..4 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => {
                closed = true;
                break;
            }
            Ok(_) => {}
        }
    }
    assert!(closed, "plain client not disconnected");
    b.wait_log("TLS handshake with 127.0.0.1:");
    assert!(b.is_alive());
    let ca = pem("ca.crt");
    let (got, _) = tls_round_trip(
        &b,
        port,
        "after-plain",
        "1",
        &["--cafile", &ca],
        &["--cafile", &ca],
    );
    assert_eq!(got, "over tls");
}

/// A bad certificate path stops start-up with a clear message.
#[test]
fn bad_certificate_path_stops_start_up() {
    let port = free_port();
    let dir = temp_dir("badcert");
    let conf = dir.join("m.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\ncertfile /nonexistent/server.crt\nkeyfile {}\n",
            pem("server.key")
        ),
    )
    .expect("conf");
    let out = Command::new(env!("CARGO_BIN_EXE_midge"))
        .args(["-c", conf.to_str().expect("path")])
        .output()
        .expect("midge");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("certfile /nonexistent/server.crt: no such file"),
        "{err}"
    );
}

/// paho-mqtt's tls_set at QoS 0, 1 and 2.
#[test]
fn paho_over_tls() {
    let (_b, port) = tls_broker(&server_tls());
    let script = r#"
import sys, threading
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
port, ca = int(sys.argv[1]), sys.argv[2]
got, done = [], threading.Event()
def on_message(c, u, m):
    got.append((m.topic, m.payload, m.qos))
    if len(got) == 3: done.set()
sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="paho-tls-sub")
sub.tls_set(ca_certs=ca)
sub.on_message = on_message
sub.connect("127.0.0.1", port)
sub.loop_start()
r, mid = sub.subscribe("paho/tls", qos=2)
pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="paho-tls-pub")
pub.tls_set(ca_certs=ca)
pub.connect("127.0.0.1", port)
pub.loop_start()
import time
deadline = time.time() + 10
while not sub.is_connected() and time.time() < deadline: time.sleep(0.01)
# The subscription is in place once a retained-free round trip arrives; publish after SUBACK.
ok = threading.Event()
sub.on_subscribe = lambda *a: ok.set()
sub.subscribe("paho/tls", qos=2)
ok.wait(10)
for q in (0, 1, 2):
    pub.publish("paho/tls", f"q{q}".encode(), qos=q).wait_for_publish(10)
if not done.wait(10):
    print("FAIL", got); sys.exit(1)
print("ok", sorted(p for _, p, _ in got))
"#;
    let out = Command::new("python3")
        .args(["-c", script, &port.to_string(), &pem("ca.crt")])
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ok [b'q0', b'q1', b'q2']"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ------------------------------------------------------------------ passwords

fn mosquitto_passwd_file(dir: &Path) -> PathBuf {
    let f = dir.join("passwd");
    run(Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(&f)
        .args(["alice", "wonder"]));
    run(Command::new("mosquitto_passwd")
        .args(["-H", "sha512", "-b"])
        .arg(&f)
        .args(["bob", "builder"]));
    f
}

/// A file made by the real mosquitto_passwd ($7$ and $6$) works unchanged;
/// wrong passwords get 0x04 / v5 0x86 (after a delay that does not block the
/// loop); anonymous clients get 0x05 / v5 0x87; the log names who failed and
/// from where, never the password.
#[test]
fn mosquitto_password_file() {
    let dir = temp_dir("pw");
    let f = mosquitto_passwd_file(&dir);
    let b = BrokerProcess::start(&format!(
        "allow_anonymous false\npassword_file {}",
        f.display()
    ));
    for (user, pass) in [("alice", "wonder"), ("bob", "builder")] {
        let (_c, a) = connect_with_credentials(
            b.port,
            ProtocolVersion::V311,
            user,
            Some(user),
            Some(pass.as_bytes()),
        );
        assert_eq!(a.reason, ReasonCode::SUCCESS, "{user}");
    }
    // While a refusal waits, others are served at once.
    let started = Instant::now();
    let mut bad = Client::open(b.port, ProtocolVersion::V5);
    bad.send(&Packet::Connect(Box::new(Connect {
        version: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 60,
        properties: Properties::default(),
        client_id: "guesser",
        will: None,
        username: Some("alice"),
        password: Some(b"s3cr3t-guess"),
    })));
    let (_ok, a) = connect_with_credentials(
        b.port,
        ProtocolVersion::V311,
        "alice2",
        Some("alice"),
        Some(b"wonder"),
    );
    assert_eq!(a.reason, ReasonCode::SUCCESS);
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "the loop was blocked"
    );
    match bad.recv() {
        Packet::ConnAck(a) => assert_eq!(a.reason, ReasonCode::BAD_USER_NAME_OR_PASSWORD),
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "refusal not delayed"
    );
    let (_c, a) = connect_with_credentials(
        b.port,
        ProtocolVersion::V311,
        "bob-wrong",
        Some("bob"),
        Some(b"nope"),
    );
    assert_eq!(
        a.reason,
        ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        "3.1.1 return code 4"
    );
    let (_c, a) = connect_with_credentials(b.port, ProtocolVersion::V5, "anon", None, None);
    assert_eq!(a.reason, ReasonCode::NOT_AUTHORIZED);
    let (_c, a) = connect_with_credentials(b.port, ProtocolVersion::V311, "anon3", None, None);
    assert_eq!(a.reason, ReasonCode::NOT_AUTHORIZED, "3.1.1 return code 5");
    let line = b.wait_log("guesser from 127.0.0.1:");
    assert!(line.contains("alice"), "{line}");
    assert!(
        !b.log_text().contains("s3cr3t-guess"),
        "password in the log"
    );
    // Real clients too.
    let ok = mosq(
        "mosquitto_pub",
        b.port,
        &["-u", "alice", "-P", "wonder", "-t", "t", "-m", "m"],
    );
    assert!(ok.status.success());
    let no = mosq(
        "mosquitto_pub",
        b.port,
        &["-u", "alice", "-P", "wrong", "-t", "t", "-m", "m"],
    );
    assert!(!no.status.success());
}

/// `midge passwd` writes $7$ entries the real mosquitto accepts, and reads
/// mosquitto's; -D deletes; -U hashes a plain file.
#[test]
fn midge_passwd_interoperates_with_mosquitto() {
    let dir = temp_dir("mpw");
    let f = dir.join("passwd");
    let midge = env!("CARGO_BIN_EXE_midge");
    run(Command::new(midge)
        .args(["passwd", "-c", "-b"])
        .arg(&f)
        .args(["carol", "c4rol"]));
    run(Command::new(midge)
        .args(["passwd", "-b"])
        .arg(&f)
        .args(["dave", "d4ve"]));
    run(Command::new("mosquitto_passwd")
        .arg("-b")
        .arg(&f)
        .args(["erin", "3rin"]));
    run(Command::new(midge)
        .args(["passwd", "-D"])
        .arg(&f)
        .arg("dave"));
    let text = std::fs::read_to_string(&f).expect("file");
    assert!(
        text.contains("carol:$7$101$") && !text.contains("dave:") && text.contains("erin:$7$"),
        "{text}"
    );

    // The real mosquitto broker with midge's file. Started as root, mosquitto
    // drops to its own user: let that user read the file.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let port = free_port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n",
            f.display()
        ),
    )
    .expect("conf");
    let mut mosquitto = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mosquitto");
    let deadline = Instant::now() + TIMEOUT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mosquitto did not start");
        std::thread::sleep(Duration::from_millis(20)); // process start-up: nothing to read yet
    }
    let ok = mosq(
        "mosquitto_pub",
        port,
        &["-u", "carol", "-P", "c4rol", "-t", "t", "-m", "m"],
    );
    let bad = mosq(
        "mosquitto_pub",
        port,
        &["-u", "carol", "-P", "nope", "-t", "t", "-m", "m"],
    );
    let _ = mosquitto.kill();
    let _ = mosquitto.wait();
    assert!(ok.status.success(), "mosquitto refused midge's hash");
    assert!(!bad.status.success());

    // midge with the same file, and -U on a plain file.
    let plain = dir.join("plain");
    std::fs::write(&plain, "frank:fr4nk\n").expect("plain");
    run(Command::new(midge).args(["passwd", "-U"]).arg(&plain));
    let text = std::fs::read_to_string(&plain).expect("plain");
    assert!(text.starts_with("frank:$7$"), "{text}");
    let b = BrokerProcess::start(&format!(
        "allow_anonymous false\npassword_file {}",
        f.display()
    ));
    let (_c, a) = connect_with_credentials(
        b.port,
        ProtocolVersion::V311,
        "c",
        Some("erin"),
        Some(b"3rin"),
    );
    assert_eq!(a.reason, ReasonCode::SUCCESS);
}

// ------------------------------------------------------------------ ACLs

const ACL: &str = "\
topic read public/#
user alice
topic readwrite alice/#
topic deny alice/secret
topic read shared/#
user bob
topic write shared/#
topic read bob/inbox
pattern write devices/%c/status
pattern read users/%u/#
";

fn acl_broker() -> (BrokerProcess, PathBuf) {
    let dir = temp_dir("acl");
    let pw = mosquitto_passwd_file(&dir);
    let acl = dir.join("acl");
    std::fs::write(&acl, ACL).expect("acl");
    let b = BrokerProcess::start(&format!(
        "allow_anonymous true\npassword_file {}\nacl_file {}",
        pw.display(),
        acl.display()
    ));
    (b, dir)
}

fn login(port: u16, id: &str, user: Option<&str>) -> Client {
    let pass: Option<&[u8]> = match user {
        Some("alice") => Some(b"wonder"),
        Some("bob") => Some(b"builder"),
        _ => None,
    };
    let (c, a) = connect_with_credentials(port, ProtocolVersion::V5, id, user, pass);
    assert_eq!(a.reason, ReasonCode::SUCCESS);
    c
}

/// The ACL matrix: users x topics x read/write, wildcards, patterns; denied
/// publishes are acknowledged with 0x87 and not delivered; denied filters get
/// SUBACK 0x87 (3.1.1: 0x80); delivery is filtered for wildcard subscriptions.
#[test]
fn acl_matrix() {
    let (b, _dir) = acl_broker();
    // Writers: (client id, user, topic, allowed).
    let writes = [
        ("w-anon", None, "public/x", false),
        ("w-alice", Some("alice"), "alice/x", true),
        ("w-alice", Some("alice"), "alice/secret", false),
        ("w-alice", Some("alice"), "shared/x", false),
        ("w-bob", Some("bob"), "shared/x", true),
        ("w-bob", Some("bob"), "bob/inbox", false),
        ("dev7", Some("bob"), "devices/dev7/status", true),
        ("dev7", Some("bob"), "devices/dev8/status", false),
        ("w-anon2", None, "devices/w-anon2/status", true),
    ];
    // A superuser-free observer per reader: (id, user, filter, topics it may get).
    let mut alice = login(b.port, "r-alice", Some("alice"));
    assert_eq!(
        midge_sub(&mut alice, "#"),
        ReasonCode::GRANTED_QOS_1,
        "overlaps readable topics"
    );
    assert_eq!(
        midge_sub(&mut alice, "alice/secret"),
        ReasonCode::NOT_AUTHORIZED
    );
    assert_eq!(midge_sub(&mut alice, "bob/#"), ReasonCode::NOT_AUTHORIZED);
    let mut bob = login(b.port, "r-bob", Some("bob"));
    assert_eq!(midge_sub(&mut bob, "#"), ReasonCode::GRANTED_QOS_1);
    let mut anon = login(b.port, "r-anon", None);
    assert_eq!(midge_sub(&mut anon, "public/#"), ReasonCode::GRANTED_QOS_1);
    let mut old = Client::connect(b.port, "r-old");
    assert_eq!(
        old.subscribe("alice/#", QoS::AtMostOnce),
        vec![ReasonCode(0x80)]
    );

    for (id, user, topic, allowed) in writes {
        let mut w = login(b.port, id, user);
        let r = w_publish(&mut w, topic);
        let want = if allowed {
            r.0 < 0x80
        } else {
            r == ReasonCode::NOT_AUTHORIZED
        };
        assert!(want, "{id} {user:?} -> {topic}: {r:?}");
        w.disconnect();
    }
    // What each reader received, in order.
    // Everything delivered before a PINGRESP has arrived by then.
    let got = |c: &mut Client| -> Vec<String> {
        c.send(&Packet::PingReq);
        let mut v = Vec::new();
        loop {
            match c.recv() {
                Packet::Publish(p) => {
                    c.ack(&p);
                    v.push(p.topic.to_string());
                }
                Packet::PingResp => return v,
                other => panic!("{other:?}"),
            }
        }
    };
    assert_eq!(got(&mut alice), vec!["alice/x", "shared/x"]);
    assert!(
        got(&mut bob).is_empty(),
        "bob reads only bob/inbox and users/bob/#"
    );
    assert!(got(&mut anon).is_empty(), "nobody could write public/#");
}

fn midge_sub(c: &mut Client, filter: &str) -> ReasonCode {
    c.send(&Packet::Subscribe(midge::protocol::Subscribe {
        packet_id: 3,
        properties: Properties::default(),
        filters: vec![(
            leak_str(filter),
            midge::protocol::SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            },
        )],
    }));
    match c.recv() {
        Packet::SubAck(a) => a.reasons[0],
        other => panic!("{other:?}"),
    }
}

fn w_publish(c: &mut Client, topic: &str) -> ReasonCode {
    c.send(&Packet::Publish(publish(
        leak_str(topic),
        b"m",
        QoS::AtLeastOnce,
        false,
        9,
    )));
    match c.recv() {
        Packet::PubAck(a) => a.reason,
        other => panic!("{other:?}"),
    }
}

/// Retained messages are filtered by read access too, and a will on a topic
/// the client may not write is refused at CONNECT.
#[test]
fn acl_covers_retained_messages_and_wills() {
    let (b, _dir) = acl_broker();
    let mut alice = login(b.port, "ret-alice", Some("alice"));
    w_publish_retained(&mut alice, "alice/kept");
    let mut other = login(b.port, "ret-bob", Some("bob"));
    assert_eq!(
        midge_sub(&mut other, "users/bob/#"),
        ReasonCode::GRANTED_QOS_1
    );
    // bob may not read alice/kept even through a filter the ACL lets him hold.
    other.ping();
    other.expect_nothing(Duration::from_millis(200));
    let mut alice2 = login(b.port, "ret-alice2", Some("alice"));
    assert_eq!(midge_sub(&mut alice2, "alice/+"), ReasonCode::GRANTED_QOS_1);
    match alice2.recv() {
        Packet::Publish(p) => assert_eq!((p.topic, p.retain), ("alice/kept", true)),
        other => panic!("{other:?}"),
    }
    let will = Will {
        topic: "alice/x",
        payload: b"bye",
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Properties::default(),
    };
    let (_c, a) = connect_full(
        b.port,
        ProtocolVersion::V5,
        "bob-will",
        Some("bob"),
        Some(b"builder"),
        Some(will),
    );
    assert_eq!(
        a.reason,
        ReasonCode::NOT_AUTHORIZED,
        "will on a topic bob may not write"
    );
}

fn w_publish_retained(c: &mut Client, topic: &str) {
    c.send(&Packet::Publish(publish(
        leak_str(topic),
        b"kept",
        QoS::AtLeastOnce,
        true,
        4,
    )));
    assert!(matches!(c.recv(), Packet::PubAck(_)));
}

/// per_listener_settings: each listener has its own anonymous rule and files.
#[test]
fn per_listener_settings() {
    let dir = temp_dir("plisten");
    let pw = mosquitto_passwd_file(&dir);
    let open = free_port();
    let closed = free_port();
    let config = format!(
        "per_listener_settings true\nlistener {open} 127.0.0.1\nallow_anonymous true\n\
         listener {closed} 127.0.0.1\nallow_anonymous false\npassword_file {}\n",
        pw.display()
    );
    let b = BrokerProcess::start_with_config(open, &config, &[]);
    b.wait_log(&format!("127.0.0.1:{closed}"));
    let (_c, a) = connect_with_credentials(open, ProtocolVersion::V311, "anon-open", None, None);
    assert_eq!(a.reason, ReasonCode::SUCCESS);
    let (_c, a) =
        connect_with_credentials(closed, ProtocolVersion::V311, "anon-closed", None, None);
    assert_eq!(a.reason, ReasonCode::NOT_AUTHORIZED);
    let (_c, a) = connect_with_credentials(
        closed,
        ProtocolVersion::V311,
        "alice-closed",
        Some("alice"),
        Some(b"wonder"),
    );
    assert_eq!(a.reason, ReasonCode::SUCCESS);
}

/// SIGHUP reloads the password file without dropping connections; a broken
/// file keeps the old rules.
#[test]
fn sighup_reloads_passwords_and_keeps_connections() {
    let dir = temp_dir("hup");
    let f = dir.join("passwd");
    let midge = env!("CARGO_BIN_EXE_midge");
    run(Command::new(midge)
        .args(["passwd", "-c", "-b"])
        .arg(&f)
        .args(["gina", "old"]));
    let b = BrokerProcess::start(&format!(
        "allow_anonymous false\npassword_file {}",
        f.display()
    ));
    let (mut stay, a) = connect_with_credentials(
        b.port,
        ProtocolVersion::V311,
        "stay",
        Some("gina"),
        Some(b"old"),
    );
    assert_eq!(a.reason, ReasonCode::SUCCESS);
    run(Command::new(midge)
        .args(["passwd", "-b"])
        .arg(&f)
        .args(["gina", "new"]));
    b.signal("HUP");
    b.wait_log("Reloading password");
    stay.ping();
    let (_c, a) = connect_with_credentials(
        b.port,
        ProtocolVersion::V311,
        "n1",
        Some("gina"),
        Some(b"new"),
    );
    assert_eq!(a.reason, ReasonCode::SUCCESS, "new password after SIGHUP");
    std::fs::write(&f, "broken line without colon\n").expect("break");
    b.signal("HUP");
    b.wait_log("Reload failed, keeping the old rules");
    let (_c, a) = connect_with_credentials(
        b.port,
        ProtocolVersion::V311,
        "n2",
        Some("gina"),
        Some(b"new"),
    );
    assert_eq!(a.reason, ReasonCode::SUCCESS, "old rules kept");
    stay.ping();
}

/// A client that opens a TLS connection and stalls in the handshake is closed
/// by the CONNECT timeout in the wheel.
#[test]
fn stalled_tls_handshake_is_timed_out() {
    let (_b, port) = tls_broker(&format!("{}connect_timeout 1\n", server_tls()));
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let started = Instant::now();
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("{n} unexpected bytes"),
    }
    assert!(
        started.elapsed() < TIMEOUT,
        "not closed by the connect timeout"
    );
}
