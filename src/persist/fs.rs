//! The log's file operations, behind a seam: [`Fs`] opens, renames and syncs
//! directories, [`LogFile`] appends, reads, syncs and truncates. [`RealFs`] is
//! `std::fs`; [`MemFs`] is an in-memory file system for tests that can fail a
//! sync on demand and simulate a power cut (only what was synced survives, plus,
//! to be hard on the log, a torn prefix of what was not). Nothing here knows the
//! record format.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// An open log file. Writes only ever go to the end.
pub trait LogFile {
    /// Write all of `data` at the end of the file. On error a prefix of it may
    /// have been written.
    fn append(&mut self, data: &[u8]) -> io::Result<()>;
    /// Read up to `buf.len()` bytes at `offset`; the count read, 0 at the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Make every byte written so far durable (`fdatasync`).
    fn sync(&mut self) -> io::Result<()>;
    /// Cut (or extend with zeros) the file to `len` bytes.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// The file's length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Fill `buf` from `offset`, failing with `UnexpectedEof` at the end.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A file system as the log sees it.
pub trait Fs {
    /// Open `path` for reading and appending, creating it if missing; with
    /// `truncate`, empty it first.
    fn open(&self, path: &Path, truncate: bool) -> io::Result<Box<dyn LogFile>>;
    /// Create `dir` and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Rename `from` over `to` (atomic on POSIX).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Make the directory holding `file` durable (its entries: a created or
    /// renamed file survives a power cut only after this).
    fn sync_dir_of(&self, file: &Path) -> io::Result<()>;
    /// Whether `path` names a file (a conversion interrupted between its
    /// renames is finished at the next start: see `legacy`).
    fn exists(&self, path: &Path) -> io::Result<bool>;
}

/// The directory a file name lives in (`.` for a bare name).
pub fn dir_of(file: &Path) -> &Path {
    match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

struct RealFile(File);

impl LogFile for RealFile {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.0.write_all(data)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(&self.0, buf, offset)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
}

impl Fs for RealFs {
    fn open(&self, path: &Path, truncate: bool) -> io::Result<Box<dyn LogFile>> {
        // O_APPEND: every write goes to the end, whatever was read or cut before.
        // 0600: the log holds messages and user names (mosquitto's db is 0600 too).
        use std::os::unix::fs::OpenOptionsExt;
        let f = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)?;
        if truncate {
            f.set_len(0)?;
        }
        Ok(Box::new(RealFile(f)))
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn sync_dir_of(&self, file: &Path) -> io::Result<()> {
        File::open(dir_of(file))?.sync_all()
    }
    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }
}

/// One file's contents in [`MemFs`].
#[derive(Debug, Default, Clone)]
struct Inode {
    /// What reads see.
    data: Vec<u8>,
    /// What a power cut keeps (as of the last sync).
    durable: Vec<u8>,
}

#[derive(Debug, Default)]
struct MemState {
    inodes: Vec<Inode>,
    /// Directory entries as the running system sees them.
    names: BTreeMap<PathBuf, usize>,
    /// Directory entries a power cut keeps (as of each directory's last sync).
    durable_names: BTreeMap<PathBuf, usize>,
    /// Bumped by a crash: handles from before it stop working.
    generation: u64,
    fail_sync: bool,
    fail_append: bool,
    syncs: u64,
}

/// An in-memory file system for tests. Clones share the same files.
#[derive(Debug, Default, Clone)]
pub struct MemFs(Arc<Mutex<MemState>>);

struct MemFile {
    fs: MemFs,
    inode: usize,
    generation: u64,
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("injected I/O error ({what})"))
}

impl MemFs {
    /// An empty file system.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, MemState> {
        // A test that panicked while holding the lock has already failed.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Make every later file sync fail with EIO (`true`) or succeed again.
    pub fn fail_sync(&self, on: bool) {
        self.state().fail_sync = on;
    }

    /// Make every later append fail with EIO (`true`) or succeed again.
    pub fn fail_append(&self, on: bool) {
        self.state().fail_append = on;
    }

    /// How many file syncs have succeeded.
    pub fn syncs(&self) -> u64 {
        self.state().syncs
    }

    /// Bytes of `path` written but not yet synced (0 if it does not exist).
    pub fn unsynced(&self, path: &Path) -> usize {
        let st = self.state();
        st.names.get(path).map_or(0, |&i| {
            let n = &st.inodes[i];
            if n.data.starts_with(&n.durable) {
                n.data.len() - n.durable.len()
            } else {
                n.data.len().max(1)
            }
        })
    }

    /// What a power cut would keep of `path` (its contents as of its last sync).
    pub fn synced(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.state();
        st.names.get(path).map(|&i| st.inodes[i].durable.clone())
    }

    /// The current contents of `path`.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.state();
        st.names.get(path).map(|&i| st.inodes[i].data.clone())
    }

    /// A power cut: directory entries fall back to their last synced state and
    /// each file to its synced contents plus the first `torn(n)` (clamped to
    /// `n`) of the `n` bytes appended after them. Open handles stop working.
    pub fn crash(&self, mut torn: impl FnMut(usize) -> usize) {
        let mut st = self.state();
        st.generation += 1;
        st.names = st.durable_names.clone();
        let live: Vec<usize> = st.names.values().copied().collect();
        for i in live {
            let n = &mut st.inodes[i];
            let mut kept = n.durable.clone();
            if n.data.starts_with(&n.durable) {
                let extra = &n.data[n.durable.len()..];
                let keep = torn(extra.len()).min(extra.len());
                kept.extend_from_slice(&extra[..keep]);
            }
            n.data = kept.clone();
            n.durable = kept;
        }
    }
}

impl Fs for MemFs {
    fn open(&self, path: &Path, truncate: bool) -> io::Result<Box<dyn LogFile>> {
        let mut st = self.state();
        let inode = match st.names.get(path) {
            Some(&i) => i,
            None => {
                st.inodes.push(Inode::default());
                let i = st.inodes.len() - 1;
                st.names.insert(path.to_path_buf(), i);
                i
            }
        };
        if truncate {
            st.inodes[inode].data.clear();
        }
        Ok(Box::new(MemFile {
            fs: self.clone(),
            inode,
            generation: st.generation,
        }))
    }
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.state();
        let i = st
            .names
            .remove(from)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        st.names.insert(to.to_path_buf(), i);
        Ok(())
    }
    fn sync_dir_of(&self, file: &Path) -> io::Result<()> {
        let dir = dir_of(file).to_path_buf();
        let mut st = self.state();
        let in_dir = |p: &Path| dir_of(p) == dir;
        st.durable_names.retain(|p, _| !in_dir(p));
        let entries: Vec<(PathBuf, usize)> = st
            .names
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, &i)| (p.clone(), i))
            .collect();
        st.durable_names.extend(entries);
        Ok(())
    }
    fn exists(&self, path: &Path) -> io::Result<bool> {
        Ok(self.state().names.contains_key(path))
    }
}

impl MemFile {
    fn with<T>(&self, f: impl FnOnce(&mut MemState, usize) -> io::Result<T>) -> io::Result<T> {
        let mut st = self.fs.state();
        if st.generation != self.generation {
            return Err(eio("handle from before a crash"));
        }
        f(&mut st, self.inode)
    }
}

impl LogFile for MemFile {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.with(|st, i| {
            if st.fail_append {
                return Err(eio("write"));
            }
            st.inodes[i].data.extend_from_slice(data);
            Ok(())
        })
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.with(|st, i| {
            let data = &st.inodes[i].data;
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(data.len());
            let n = buf.len().min(data.len() - start);
            buf[..n].copy_from_slice(&data[start..start + n]);
            Ok(n)
        })
    }
    fn sync(&mut self) -> io::Result<()> {
        self.with(|st, i| {
            if st.fail_sync {
                return Err(eio("fdatasync"));
            }
            let n = &mut st.inodes[i];
            n.durable = n.data.clone();
            st.syncs += 1;
            Ok(())
        })
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.with(|st, i| {
            let len = usize::try_from(len).map_err(|_| eio("length"))?;
            st.inodes[i].data.resize(len, 0);
            Ok(())
        })
    }
    fn size(&self) -> io::Result<u64> {
        self.with(|st, i| Ok(st.inodes[i].data.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_keeps_what_was_synced_and_a_torn_prefix() {
        let fs = MemFs::new();
        let p = Path::new("d/log");
        let mut f = fs.open(p, false).expect("open");
        f.append(b"abc").expect("append");
        f.sync().expect("sync");
        f.append(b"defg").expect("append");
        // The file was created but its directory never synced: it is gone.
        fs.crash(|n| n);
        assert!(fs.contents(p).is_none());

        let mut f = fs.open(p, false).expect("open");
        f.append(b"abc").expect("append");
        f.sync().expect("sync");
        fs.sync_dir_of(p).expect("dir");
        f.append(b"defg").expect("append");
        assert_eq!(fs.unsynced(p), 4);
        fs.crash(|n| n / 2);
        assert_eq!(fs.contents(p).as_deref(), Some(&b"abcde"[..]));
        assert!(f.append(b"x").is_err(), "old handles die with the crash");
    }

    #[test]
    fn an_unsynced_rename_is_undone_by_a_crash() {
        let fs = MemFs::new();
        let (a, b) = (Path::new("a"), Path::new("b"));
        for (p, body) in [(a, b"old"), (b, b"new")] {
            let mut f = fs.open(p, false).expect("open");
            f.append(body).expect("append");
            f.sync().expect("sync");
        }
        fs.sync_dir_of(a).expect("dir");
        fs.rename(b, a).expect("rename");
        assert_eq!(fs.contents(a).as_deref(), Some(&b"new"[..]));
        fs.crash(|_| 0);
        assert_eq!(fs.contents(a).as_deref(), Some(&b"old"[..]));
        fs.rename(b, a).expect("rename");
        fs.sync_dir_of(a).expect("dir");
        fs.crash(|_| 0);
        assert_eq!(fs.contents(a).as_deref(), Some(&b"new"[..]));
    }

    #[test]
    fn injected_sync_failures_keep_nothing() {
        let fs = MemFs::new();
        let p = Path::new("log");
        let mut f = fs.open(p, false).expect("open");
        fs.sync_dir_of(p).expect("dir");
        f.append(b"abc").expect("append");
        fs.fail_sync(true);
        assert!(f.sync().is_err());
        fs.crash(|_| 0);
        assert_eq!(fs.contents(p).as_deref(), Some(&b""[..]));
    }

    #[test]
    fn real_files_append_read_and_truncate() {
        let d = std::env::temp_dir().join(format!("midge-fs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let p = d.join("log");
        RealFs.create_dir_all(&d).expect("dir");
        let mut f = RealFs.open(&p, false).expect("open");
        f.append(b"hello world").expect("append");
        f.truncate(5).expect("truncate");
        f.append(b"!").expect("append");
        f.sync().expect("sync");
        RealFs.sync_dir_of(&p).expect("sync dir");
        let mut buf = [0u8; 6];
        f.read_exact_at(&mut buf, 0).expect("read");
        assert_eq!(&buf, b"hello!");
        assert_eq!(f.size().expect("len"), 6);
        assert!(f.read_exact_at(&mut buf, 3).is_err());
        assert_eq!(dir_of(Path::new("midge.db")), Path::new("."));
        let _ = std::fs::remove_dir_all(&d);
    }
}
