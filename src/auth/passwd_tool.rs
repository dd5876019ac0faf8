//! `midge passwd`: manage password files like `mosquitto_passwd`, with the same
//! flags, writing `$7$` (PBKDF2-SHA512) entries mosquitto reads unchanged.

use std::io::{self, BufRead, Write};
use std::path::Path;

use super::passwd::{PasswordFile, PasswordHash, DEFAULT_ITERATIONS};

const USAGE: &str = "\
Usage: midge passwd [-H sha512 | -H sha512-pbkdf2] [-c | -D] passwordfile username
       midge passwd [-H sha512 | -H sha512-pbkdf2] [-c] -b passwordfile username password
       midge passwd -U passwordfile
 -b : batch mode: the password is given on the command line.
 -c : create a new password file, overwriting an existing one.
 -D : delete the user rather than adding/updating it.
 -H : hash: sha512-pbkdf2 ($7$, default) or sha512 ($6$, mosquitto 1.x).
 -U : hash the passwords of a plain-text `user:password` file in place.";

enum Hash {
    Pbkdf2,
    Sha512,
}

fn make_hash(kind: &Hash, password: &str) -> Result<PasswordHash, String> {
    let h =
        PasswordHash::new(password.as_bytes(), DEFAULT_ITERATIONS).map_err(|e| e.to_string())?;
    Ok(match (kind, h) {
        (Hash::Sha512, PasswordHash::Pbkdf2 { salt, .. }) => {
            // Same salt source; $6$ is SHA-512(password || salt).
            let mut input = password.as_bytes().to_vec();
            input.extend_from_slice(&salt);
            PasswordHash::Sha512 {
                hash: crate::crypto::sha512(&input).to_vec(),
                salt,
            }
        }
        (_, h) => h,
    })
}

/// Run the tool with `args` (after `passwd`); returns the exit code.
pub fn run(args: &[String]) -> i32 {
    match run_inner(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("Error: {e}");
            1
        }
    }
}

fn run_inner(args: &[String]) -> Result<(), String> {
    let mut create = false;
    let mut delete = false;
    let mut batch = false;
    let mut update = false;
    let mut hash = Hash::Pbkdf2;
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-c" => create = true,
            "-D" => delete = true,
            "-b" => batch = true,
            "-U" => update = true,
            "-H" => {
                hash = match it.next().map(String::as_str) {
                    Some("sha512-pbkdf2") => Hash::Pbkdf2,
                    Some("sha512") => Hash::Sha512,
                    other => return Err(format!("-H: unknown hash {other:?}\n{USAGE}")),
                }
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            s if s.starts_with('-') => return Err(format!("unknown flag {s}\n{USAGE}")),
            s => rest.push(s.to_string()),
        }
    }
    if create && delete {
        return Err(format!("-c and -D cannot be used together\n{USAGE}"));
    }
    if update {
        let [file] = rest.as_slice() else {
            return Err(USAGE.into());
        };
        return update_plain(Path::new(file), &hash);
    }
    let (file, user, password) = match (rest.as_slice(), batch) {
        ([f, u], false) => (f, u, None),
        ([f, u, p], true) => (f, u, Some(p.clone())),
        _ => return Err(USAGE.into()),
    };
    if user.contains(':') {
        return Err("user names may not contain ':'".into());
    }
    let path = Path::new(file);
    let mut pw = if create {
        PasswordFile::default()
    } else {
        PasswordFile::load(path).map_err(|e| e.to_string())?
    };
    if delete {
        if !pw.remove(user) {
            return Err(format!("user {user} not in the file"));
        }
    } else {
        let password = match password {
            Some(p) => p,
            None => prompt_twice()?,
        };
        pw.set(user, make_hash(&hash, &password)?);
    }
    write_file(path, &pw.to_text())
}

/// `-U`: hash a plain-text `user:password` file in place (already hashed
/// lines are kept as they are).
fn update_plain(path: &Path, hash: &Hash) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = PasswordFile::default();
    for line in text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let (user, secret) = line
            .split_once(':')
            .ok_or_else(|| format!("{}: line without ':'", path.display()))?;
        let h = match PasswordHash::parse(secret) {
            Ok(h) => h,
            Err(_) => make_hash(hash, secret)?,
        };
        out.set(user, h);
    }
    write_file(path, &out.to_text())
}

/// Write atomically (temporary file, then rename), readable by the owner only.
fn write_file(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp-midge-passwd");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Read a password twice from the terminal without echo (or from stdin lines
/// when it is not a terminal).
fn prompt_twice() -> Result<String, String> {
    let a = prompt("Password: ")?;
    let b = prompt("Reenter password: ")?;
    if a != b {
        return Err("passwords do not match".into());
    }
    if a.is_empty() {
        return Err("empty password".into());
    }
    Ok(a)
}

fn prompt(label: &str) -> Result<String, String> {
    eprint!("{label}");
    let _ = io::stderr().flush();
    let echo_off = EchoOff::new();
    let mut line = String::new();
    let r = io::stdin().lock().read_line(&mut line);
    drop(echo_off);
    eprintln!();
    r.map_err(|e| e.to_string())?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Terminal echo switched off while it lives (no-op when stdin is no terminal).
struct EchoOff(Option<libc::termios>);

impl EchoOff {
    fn new() -> EchoOff {
        // SAFETY: termios is plain data; tcgetattr fills it or fails (not a tty).
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return EchoOff(None);
            }
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            if libc::tcsetattr(0, libc::TCSANOW, &t) != 0 {
                return EchoOff(None);
            }
            EchoOff(Some(saved))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            // SAFETY: restores the settings read by tcgetattr on the same fd.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, t);
            }
        }
    }
}
