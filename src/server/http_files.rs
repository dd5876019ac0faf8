//! The files of a listener's `http_dir`: a request's path (already checked by
//! `protocol::websocket::http::file_path`: relative, no `..`) is opened
//! beneath the directory and never outside it, whatever symlinks the
//! directory holds; only regular files are served. Nothing here parses HTTP.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// `struct open_how` of openat2(2) (libc's is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Open flags: read only; `O_NONBLOCK` so that a FIFO placed in the
/// directory cannot block the loop in `open` (regular files ignore it).
const FLAGS: libc::c_int = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK;

/// The regular file `rel` under `dir` and its size; `None` for anything else
/// (missing, a directory, a device, outside `dir`), which is answered 404.
pub fn open(dir: &Path, rel: &str) -> Option<(File, u64)> {
    let file = match open_beneath(dir, Path::new(rel)) {
        Ok(f) => f,
        Err(e) => {
            log::debug!("http_dir {}: {rel}: {e}.", dir.display());
            return None;
        }
    };
    let meta = file.metadata().ok()?;
    meta.is_file().then_some((file, meta.len()))
}

/// Open `rel` for reading without resolving outside `dir`: `..`, absolute
/// symlinks and symlinks that lead out fail (openat2 with `RESOLVE_BENEATH`,
/// Linux 5.6). Where openat2 is missing (an older kernel, a seccomp filter),
/// [`open_canonical`] does the same check on canonical paths.
pub fn open_beneath(dir: &Path, rel: &Path) -> io::Result<File> {
    match openat2_beneath(dir, rel) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
            open_canonical(dir, rel)
        }
        other => other,
    }
}

fn openat2_beneath(dir: &Path, rel: &Path) -> io::Result<File> {
    let root = File::open(dir)?;
    let name = std::ffi::CString::new(rel.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let how = OpenHow {
        flags: FLAGS as u64,
        mode: 0,
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: `name` is a NUL-terminated string and `how` a valid open_how of
    // the size passed; both outlive the call. The descriptor returned is new
    // and owned by nobody else.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            name.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(fd).map_err(|_| io::Error::other("bad descriptor"))?;
    // SAFETY: `fd` was just returned by openat2 and is owned by no one else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// The fallback: the file's canonical path must lie under the directory's,
/// and it is opened by that path without following a final symlink. A
/// directory entry swapped for a symlink between the two steps is the
/// window openat2 closes.
pub fn open_canonical(dir: &Path, rel: &Path) -> io::Result<File> {
    if rel.is_absolute() {
        return Err(io::ErrorKind::PermissionDenied.into());
    }
    let root = dir.canonicalize()?;
    let full = root.join(rel).canonicalize()?;
    if !full.starts_with(&root) {
        return Err(io::ErrorKind::PermissionDenied.into());
    }
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(FLAGS | libc::O_NOFOLLOW)
        .open(full)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// A served directory with a file, a subdirectory, symlinks in and out,
    /// and a secret next to it.
    fn site(tag: &str) -> std::path::PathBuf {
        let base = std::env::temp_dir().join(format!("midge-http-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let www = base.join("www");
        std::fs::create_dir_all(www.join("sub")).expect("mkdir");
        std::fs::write(www.join("a.txt"), "inside").expect("write");
        std::fs::write(www.join("sub/b.txt"), "deeper").expect("write");
        std::fs::write(base.join("secret"), "outside").expect("write");
        let link = |to: &str, at: &str| std::os::unix::fs::symlink(to, www.join(at)).expect("ln");
        link("a.txt", "in-link");
        link("../secret", "out-link");
        link(&base.join("secret").display().to_string(), "abs-link");
        link("..", "up");
        link("/", "root");
        base
    }

    fn read(f: io::Result<File>) -> Option<String> {
        let mut s = String::new();
        f.ok()?.read_to_string(&mut s).ok()?;
        Some(s)
    }

    /// Both ways of opening refuse every way out of the directory and serve
    /// what is inside (symlinks that stay inside included).
    #[test]
    fn nothing_outside_the_directory_is_opened() {
        let base = site("beneath");
        let www = base.join("www");
        for opener in [open_beneath, open_canonical] {
            let o = |rel: &str| read(opener(&www, Path::new(rel)));
            assert_eq!(o("a.txt").as_deref(), Some("inside"));
            assert_eq!(o("sub/b.txt").as_deref(), Some("deeper"));
            assert_eq!(o("in-link").as_deref(), Some("inside"));
            for bad in [
                "out-link",
                "abs-link",
                "up/secret",
                "root/etc/passwd",
                "../secret",
                "sub/../../secret",
                "/etc/passwd",
            ] {
                assert_eq!(o(bad), None, "{bad}");
            }
        }
        // A directory opens (it is refused by type, below), a missing file not.
        assert!(open(&www, "sub").is_none());
        assert!(open(&www, "missing").is_none());
        assert_eq!(open(&www, "a.txt").map(|(_, n)| n), Some(6));
        let _ = std::fs::remove_dir_all(&base);
    }

    /// A FIFO in the directory neither blocks the open nor gets served.
    #[test]
    fn a_fifo_is_not_served_and_does_not_block() {
        let base = site("fifo");
        let fifo = base.join("www/pipe");
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).expect("path");
        // SAFETY: a valid path string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(open(&base.join("www"), "pipe").is_none());
        let _ = std::fs::remove_dir_all(&base);
    }
}
