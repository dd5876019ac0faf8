//! The log file: framing with checksums, replay, group commit, compaction.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::{info, warn};

use super::fs::{dir_of, Fs, LogFile, RealFs};
use super::record::{self, Owned, Record, StoredMessage, StoredSubscription};

const MAGIC: &[u8; 8] = b"midge\0\0\x01";
const FRAME: usize = 8; // length u32 + crc32 u32
/// A record longer than this is damage, not data (the packet limit is 256 MB).
const MAX_RECORD: usize = 300 << 20;
const COMPACT_MIN: u64 = 4 << 20;

/// When the log is synced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Before each loop turn's acknowledgements go out (group commit).
    Always,
    /// Every `autosave_interval`.
    Periodic(Duration),
}

/// A persistence failure, naming the file (and the offset for a bad record).
#[derive(Debug)]
pub enum PersistError {
    /// The file could not be opened, read, written or synced.
    Io(PathBuf, std::io::Error),
    /// A damaged record before the end of the log.
    Corrupt(PathBuf, u64, String),
}

impl fmt::Display for PersistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PersistError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            PersistError::Corrupt(p, off, why) => write!(
                f,
                "{}: corrupt record at offset {off} ({why}); start with --recover (or `persistence_recover true`) to keep what precedes it",
                p.display()
            ),
        }
    }
}

impl std::error::Error for PersistError {}

/// A session as replayed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveredSession {
    /// Client identifier.
    pub client_id: String,
    /// Protocol level.
    pub level: u8,
    /// Expiry in seconds; `None` = never.
    pub expiry: Option<u32>,
    /// Subscriptions.
    pub subscriptions: Vec<StoredSubscription>,
    /// User name (or certificate name) its ACL checks use; `None` = anonymous.
    pub username: Option<String>,
    /// Listener number (config order) whose rules apply to it.
    pub listener: u32,
    /// Messages by number (the order they were queued in).
    pub messages: BTreeMap<u64, RecoveredMessage>,
    /// Incoming QoS 2 ids awaiting PUBREL.
    pub awaiting_rel: Vec<u16>,
    /// A will waiting for its delay: (delay seconds, message).
    pub will: Option<(u32, StoredMessage)>,
}

/// A message queued for or in flight to a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredMessage {
    /// The message.
    pub msg: StoredMessage,
    /// Delivery QoS.
    pub qos: u8,
    /// RETAIN flag to send.
    pub retain: bool,
    /// Subscription identifiers to send.
    pub subscription_ids: Vec<u32>,
    /// (packet id, PUBREL sent) once it went out.
    pub sent: Option<(u16, bool)>,
}

/// Everything the log held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Retained messages by topic.
    pub retained: BTreeMap<String, StoredMessage>,
    /// Sessions by client id.
    pub sessions: HashMap<String, RecoveredSession>,
    /// The highest message number seen (new ones continue after it).
    pub last_id: u64,
}

impl Recovered {
    fn apply(&mut self, rec: Owned) {
        match rec {
            Owned::RetainSet(m) => {
                self.retained.insert(m.topic.clone(), m);
            }
            Owned::RetainClear(t) => {
                self.retained.remove(&t);
            }
            Owned::SessionPut {
                client_id,
                level,
                expiry,
                subscriptions,
                username,
                listener,
            } => {
                let s = self.sessions.entry(client_id.clone()).or_default();
                s.client_id = client_id;
                s.level = level;
                s.expiry = expiry;
                s.subscriptions = subscriptions;
                s.username = username;
                s.listener = listener;
            }
            Owned::SessionDelete(c) => {
                self.sessions.remove(&c);
            }
            Owned::Queue {
                client_id,
                id,
                msg,
                qos,
                retain,
                subscription_ids,
            } => {
                self.last_id = self.last_id.max(id);
                if let Some(s) = self.sessions.get_mut(&client_id) {
                    s.messages.insert(
                        id,
                        RecoveredMessage {
                            msg,
                            qos,
                            retain,
                            subscription_ids,
                            sent: None,
                        },
                    );
                }
            }
            Owned::Inflight {
                client_id,
                id,
                packet_id,
                released,
            } => {
                if let Some(m) = self
                    .sessions
                    .get_mut(&client_id)
                    .and_then(|s| s.messages.get_mut(&id))
                {
                    m.sent = Some((packet_id, released));
                }
            }
            Owned::Done { client_id, id } => {
                if let Some(s) = self.sessions.get_mut(&client_id) {
                    s.messages.remove(&id);
                }
            }
            Owned::RelHold {
                client_id,
                packet_id,
            } => {
                if let Some(s) = self.sessions.get_mut(&client_id) {
                    if !s.awaiting_rel.contains(&packet_id) {
                        s.awaiting_rel.push(packet_id);
                    }
                }
            }
            Owned::RelDone {
                client_id,
                packet_id,
            } => {
                if let Some(s) = self.sessions.get_mut(&client_id) {
                    s.awaiting_rel.retain(|&p| p != packet_id);
                }
            }
            Owned::Will {
                client_id,
                delay,
                msg,
            } => {
                if let Some(s) = self.sessions.get_mut(&client_id) {
                    s.will = msg.map(|m| (delay, m));
                }
            }
        }
    }
}

/// CRC-32 (IEEE), table-driven. A checksum against torn and flipped bytes, not
/// a defence against an attacker who can write the file.
fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    let mut c = !0u32;
    for &b in data {
        c = table[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

fn frame(rec: &Record<'_>, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME]);
    record::encode(rec, out);
    let body_len = (out.len() - start - FRAME) as u32;
    let crc = crc32(&out[start + FRAME..]);
    out[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The open log.
pub struct Store {
    path: PathBuf,
    fs: Box<dyn Fs>,
    file: Box<dyn LogFile>,
    /// Records of this loop turn, not yet written.
    buf: Vec<u8>,
    /// Bytes in the file.
    size: u64,
    /// Size right after the last compaction (or the replayed size).
    base: u64,
    policy: SyncPolicy,
    last_sync: Instant,
    unsynced: bool,
    /// The last write or sync failed: the broker must not acknowledge what it
    /// cannot keep.
    failing: bool,
    /// Where each live queued message's record starts (so RAM need not hold it).
    offsets: HashMap<u64, u64>,
}

impl Store {
    /// Open (creating if needed) and replay the log at `path`.
    pub fn open(
        path: &Path,
        policy: SyncPolicy,
        recover: bool,
    ) -> Result<(Store, Recovered), PersistError> {
        Self::open_in(Box::new(RealFs), path, policy, recover)
    }

    /// [`Store::open`] on the file system `fs` (tests pass an in-memory one).
    pub fn open_in(
        fs: Box<dyn Fs>,
        path: &Path,
        policy: SyncPolicy,
        recover: bool,
    ) -> Result<(Store, Recovered), PersistError> {
        let io = |e| PersistError::Io(path.to_path_buf(), e);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs.create_dir_all(dir).map_err(io)?;
        }
        let mut file = fs.open(path, false).map_err(io)?;
        let len = usize::try_from(file.size().map_err(io)?).map_err(|_| {
            io(std::io::Error::other(
                "the log is larger than the address space",
            ))
        })?;
        let mut data = vec![0u8; len];
        file.read_exact_at(&mut data, 0).map_err(io)?;
        let mut state = Recovered::default();
        let mut offsets = HashMap::new();
        let mut good = MAGIC.len() as u64;
        if data.is_empty() {
            file.append(MAGIC).map_err(io)?;
            file.sync().map_err(io)?;
            // A new file's name survives a power cut only once its directory is synced.
            fs.sync_dir_of(path).map_err(io)?;
        } else if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
            return Err(PersistError::Corrupt(
                path.to_path_buf(),
                0,
                "not a midge log, or another format version".into(),
            ));
        } else {
            let mut pos = MAGIC.len();
            let mut records = 0u64;
            while pos < data.len() {
                let bad = |why: &str| why.to_string();
                let outcome: Result<(Owned, usize), String> = (|| {
                    let head = data
                        .get(pos..pos + FRAME)
                        .ok_or_else(|| bad("torn frame header"))?;
                    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
                    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
                    if len > MAX_RECORD {
                        return Err(bad("impossible length"));
                    }
                    let body = data
                        .get(pos + FRAME..pos + FRAME + len)
                        .ok_or_else(|| bad("torn record"))?;
                    if crc32(body) != crc {
                        return Err(bad("checksum mismatch"));
                    }
                    let rec = record::decode(body).ok_or_else(|| bad("undecodable record"))?;
                    Ok((rec, FRAME + len))
                })();
                match outcome {
                    Ok((rec, used)) => {
                        match &rec {
                            Owned::Queue { id, .. } => {
                                offsets.insert(*id, pos as u64);
                            }
                            Owned::Done { id, .. } => {
                                offsets.remove(id);
                            }
                            _ => {}
                        }
                        state.apply(rec);
                        pos += used;
                        records += 1;
                    }
                    Err(why) => {
                        // A record that runs past the end of the file is a write the
                        // crash cut short: drop it. Damage with good data after it
                        // is corruption.
                        // A file system that preallocates blocks can leave a torn
                        // write as zeros; a zero frame even passes the checksum
                        // (the CRC of nothing is 0), so zeros to the end are a tail.
                        let tail = why.starts_with("torn")
                            || (why == "checksum mismatch" && is_last_frame(&data, pos))
                            || data[pos..].iter().all(|&b| b == 0);
                        if tail {
                            warn!(
                                "{}: cutting a torn record at offset {pos} ({} bytes): the last write before a crash.",
                                path.display(),
                                data.len() - pos
                            );
                        } else if recover {
                            // Records after the damage may still be good: keep the
                            // whole file aside before cutting it.
                            let copy = keep_aside(&*fs, &*file, path).map_err(io)?;
                            warn!(
                                "{}: corrupt record at offset {pos} of {} ({why}); --recover keeps the {records} records before it; the damaged file was copied to {}.",
                                path.display(),
                                data.len(),
                                copy.display()
                            );
                        } else {
                            return Err(PersistError::Corrupt(path.to_path_buf(), pos as u64, why));
                        }
                        file.truncate(pos as u64).map_err(io)?;
                        file.sync().map_err(io)?;
                        break;
                    }
                }
            }
            good = pos.min(data.len()) as u64;
            info!(
                "Restored {} retained message(s) and {} session(s) from {} ({records} records).",
                state.retained.len(),
                state.sessions.len(),
                path.display()
            );
        }
        Ok((
            Store {
                path: path.to_path_buf(),
                fs,
                file,
                buf: Vec::new(),
                size: good,
                base: good,
                policy,
                last_sync: Instant::now(),
                unsynced: false,
                failing: false,
                offsets,
            },
            state,
        ))
    }

    /// Add a record to this turn's batch.
    pub fn append(&mut self, rec: &Record<'_>) {
        match rec {
            Record::Queue { id, .. } => {
                self.offsets.insert(*id, self.size + self.buf.len() as u64);
            }
            Record::Done { id, .. } => {
                self.offsets.remove(id);
            }
            Record::Keep(_) => return,
            _ => {}
        }
        frame(rec, &mut self.buf);
    }

    /// The raw frame (header and body) of the record at `offset`, from the file
    /// or from this turn's unwritten batch.
    fn frame_at(&self, offset: u64) -> Option<Vec<u8>> {
        let read = |at: u64, n: usize| -> Option<Vec<u8>> {
            if at >= self.size {
                let start = usize::try_from(at - self.size).ok()?;
                return self
                    .buf
                    .get(start..start.checked_add(n)?)
                    .map(<[u8]>::to_vec);
            }
            let mut v = vec![0u8; n];
            self.file.read_exact_at(&mut v, at).ok()?;
            Some(v)
        };
        let head = read(offset, FRAME)?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if len > MAX_RECORD {
            return None;
        }
        read(offset, FRAME + len)
    }

    /// Read back the message of queue record `id` (a message that RAM does not
    /// hold). `None` if it is unknown or its record does not check out.
    pub fn load(&self, id: u64) -> Option<StoredMessage> {
        let frame = self.frame_at(*self.offsets.get(&id)?)?;
        let (head, body) = frame.split_at(FRAME);
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if crc32(body) != crc {
            return None;
        }
        match record::decode(body)? {
            Owned::Queue { msg, .. } => Some(msg),
            _ => None,
        }
    }

    /// Number of queued messages whose records are indexed.
    pub fn indexed(&self) -> usize {
        self.offsets.len()
    }

    /// True when the last write failed (new QoS 1/2 messages for durable
    /// destinations must be refused until one succeeds).
    pub fn failing(&self) -> bool {
        self.failing
    }

    /// Write this turn's records and sync as the policy says. Called once per
    /// loop turn before output is flushed. On failure the records stay buffered
    /// and are retried next turn; the error is returned for logging.
    pub fn commit(&mut self, now: Instant) -> Result<(), PersistError> {
        if !self.buf.is_empty() {
            let r = self.file.append(&self.buf);
            if let Err(e) = r {
                self.failing = true;
                // Partial writes leave a torn record; rewind to the last good end.
                let _ = self.file.truncate(self.size);
                return Err(PersistError::Io(self.path.clone(), e));
            }
            self.size += self.buf.len() as u64;
            self.buf.clear();
            self.unsynced = true;
        }
        let due = match self.policy {
            SyncPolicy::Always => true,
            SyncPolicy::Periodic(every) => now.duration_since(self.last_sync) >= every,
        };
        if self.unsynced && due {
            if let Err(e) = self.file.sync() {
                self.failing = true;
                return Err(PersistError::Io(self.path.clone(), e));
            }
            self.unsynced = false;
            self.last_sync = now;
        }
        self.failing = false;
        Ok(())
    }

    /// The log has grown enough to be worth compacting.
    pub fn wants_compaction(&self) -> bool {
        self.size > COMPACT_MIN && self.size > self.base.saturating_mul(4)
    }

    /// Replace the log by the live state `dump` writes. Returns the pause.
    pub fn compact(
        &mut self,
        dump: impl FnOnce(&mut dyn FnMut(&Record<'_>)),
    ) -> Result<Duration, PersistError> {
        let started = Instant::now();
        let tmp = self.path.with_extension("compact");
        let io = |e| PersistError::Io(tmp.clone(), e);
        // Read and write: queued messages are read back from this file later.
        let mut f = self.fs.open(&tmp, true).map_err(io)?;
        // Streamed through a small buffer, so compaction needs no RAM in
        // proportion to the state (a gateway may have 64 MB in all).
        const CHUNK: usize = 64 * 1024;
        let mut out = Vec::with_capacity(CHUNK);
        let mut offsets = HashMap::new();
        let mut written = 0u64;
        let mut failure: Option<std::io::Error> = None;
        {
            let old = &*self;
            let mut scratch = Vec::new();
            let mut put = |bytes: &[u8], written: &mut u64, out: &mut Vec<u8>| {
                if failure.is_none() {
                    out.extend_from_slice(bytes);
                    *written += bytes.len() as u64;
                    if out.len() >= CHUNK {
                        if let Err(e) = f.append(out) {
                            failure = Some(e);
                        }
                        out.clear();
                    }
                }
            };
            put(MAGIC, &mut written, &mut out);
            dump(&mut |rec| {
                scratch.clear();
                match rec {
                    Record::Keep(id) => {
                        // Content held only on disk: copy its old record as it is.
                        match old.offsets.get(id).and_then(|&o| old.frame_at(o)) {
                            Some(fr) => scratch = fr,
                            None => return,
                        }
                        offsets.insert(*id, written);
                    }
                    Record::Queue { id, .. } => {
                        offsets.insert(*id, written);
                        frame(rec, &mut scratch);
                    }
                    _ => frame(rec, &mut scratch),
                }
                put(&scratch, &mut written, &mut out);
            });
        }
        if let Some(e) = failure {
            return Err(io(e));
        }
        f.append(&out).map_err(io)?;
        f.sync().map_err(io)?;
        self.fs
            .rename(&tmp, &self.path)
            .map_err(|e| PersistError::Io(self.path.clone(), e))?;
        // The rename is durable only once the directory is synced: without it
        // a power cut can bring the old log back. Said, not ignored.
        self.fs
            .sync_dir_of(&self.path)
            .map_err(|e| PersistError::Io(dir_of(&self.path).to_path_buf(), e))?;
        self.file = f;
        self.size = written;
        self.base = self.size;
        self.offsets = offsets;
        // Records appended this turn describe changes already in the dump.
        self.buf.clear();
        self.unsynced = false;
        Ok(started.elapsed())
    }

    /// Bytes in the log.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// Copy the damaged log to `<name>.corrupt-<unix seconds>` next to it (a
/// suffix `-N` if that exists) and sync it; returns the copy's path.
fn keep_aside(fs: &dyn Fs, file: &dyn LogFile, path: &Path) -> std::io::Result<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".corrupt-{secs}"));
    let mut copy = PathBuf::from(&name);
    let mut n = 1;
    while copy.exists() {
        let mut alt = name.clone();
        alt.push(format!("-{n}"));
        copy = PathBuf::from(alt);
        n += 1;
    }
    let mut out = fs.open(&copy, true)?;
    let len = file.size()?;
    let mut chunk = vec![0u8; 64 << 10];
    let mut at = 0u64;
    while at < len {
        let n = usize::try_from(len - at).map_or(chunk.len(), |l| l.min(chunk.len()));
        file.read_exact_at(&mut chunk[..n], at)?;
        out.append(&chunk[..n])?;
        at += n as u64;
    }
    out.sync()?;
    fs.sync_dir_of(&copy)?;
    Ok(copy)
}

/// Is the frame at `pos` the last one (its declared end at or past the file end)?
fn is_last_frame(data: &[u8], pos: usize) -> bool {
    let Some(head) = data.get(pos..pos + 4) else {
        return true;
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    pos + FRAME + len >= data.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::message::Message;
    use crate::protocol::QoS;

    fn msg(topic: &str, payload: &[u8]) -> Message {
        Message {
            topic: topic.into(),
            payload: payload.into(),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: None,
            received: Instant::now(),
        }
    }

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("midge-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn records_survive_a_reopen_and_torn_tails_are_cut() {
        let d = dir("reopen");
        let path = d.join("midge.db");
        {
            let (mut s, r) = Store::open(&path, SyncPolicy::Always, false).expect("open");
            assert_eq!(r, Recovered::default());
            let m = msg("a/b", b"hello");
            s.append(&Record::RetainSet(&m));
            s.append(&Record::SessionPut {
                client_id: "c",
                level: 4,
                expiry: None,
                subscriptions: &[StoredSubscription {
                    filter: "a/#".into(),
                    options: 1,
                    identifier: None,
                }],
                username: Some("alice"),
                listener: 2,
            });
            s.append(&Record::Queue {
                client_id: "c",
                id: 7,
                msg: &m,
                qos: 1,
                retain: false,
                subscription_ids: &[],
            });
            s.append(&Record::Inflight {
                client_id: "c",
                id: 7,
                packet_id: 3,
                released: false,
            });
            s.commit(Instant::now()).expect("commit");
        }
        // A crash mid-write: half a record at the end.
        let mut f = RealFs.open(&path, false).expect("append");
        f.append(&[200, 0, 0, 0, 1, 2, 3]).expect("torn");
        drop(f);
        let (_s, r) = Store::open(&path, SyncPolicy::Always, false).expect("reopen");
        assert_eq!(r.retained["a/b"].payload, b"hello");
        let c = &r.sessions["c"];
        assert_eq!(c.subscriptions[0].filter, "a/#");
        assert_eq!(
            (c.username.as_deref(), c.listener),
            (Some("alice"), 2),
            "the session's identity survives (issue 11)"
        );
        assert_eq!(c.messages[&7].sent, Some((3, false)));
        assert_eq!(r.last_id, 7);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn corruption_in_the_middle_stops_unless_recovering() {
        let d = dir("corrupt");
        let path = d.join("midge.db");
        {
            let (mut s, _) = Store::open(&path, SyncPolicy::Always, false).expect("open");
            for t in ["x/1", "x/2", "x/3"] {
                s.append(&Record::RetainSet(&msg(t, b"v")));
            }
            s.commit(Instant::now()).expect("commit");
        }
        let mut data = std::fs::read(&path).expect("read");
        let second = MAGIC.len() + 40; // inside the second record's body or frame
        data[second] ^= 0xFF;
        std::fs::write(&path, &data).expect("write");
        match Store::open(&path, SyncPolicy::Always, false) {
            Err(PersistError::Corrupt(p, off, _)) => {
                assert_eq!(p, path);
                assert!(off > 0);
            }
            Err(e) => panic!("wrong error {e}"),
            Ok(_) => panic!("corruption accepted"),
        }
        let (_s, r) = Store::open(&path, SyncPolicy::Always, true).expect("recover");
        assert!(r.retained.contains_key("x/1"));
        assert!(!r.retained.contains_key("x/3"));
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A torn write on a file system that preallocates leaves zeros: a zero
    /// frame passes the CRC (CRC-32 of nothing is 0) but is a tail, not damage.
    #[test]
    fn an_all_zero_tail_is_a_torn_write() {
        let d = dir("zeros");
        let path = d.join("midge.db");
        {
            let (mut s, _) = Store::open(&path, SyncPolicy::Always, false).expect("open");
            s.append(&Record::RetainSet(&msg("z/1", b"v")));
            s.commit(Instant::now()).expect("commit");
        }
        let good = std::fs::metadata(&path).expect("meta").len();
        let mut f = RealFs.open(&path, false).expect("append");
        f.append(&[0u8; 4096]).expect("zeros");
        drop(f);
        let (_s, r) = Store::open(&path, SyncPolicy::Always, false).expect("zeros are a tail");
        assert!(r.retained.contains_key("z/1"));
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), good);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// --recover keeps the damaged file aside (records after the damage may be
    /// good) before cutting the log.
    #[test]
    fn recover_copies_the_damaged_file_aside() {
        let d = dir("aside");
        let path = d.join("midge.db");
        {
            let (mut s, _) = Store::open(&path, SyncPolicy::Always, false).expect("open");
            for t in ["x/1", "x/2", "x/3"] {
                s.append(&Record::RetainSet(&msg(t, b"v")));
            }
            s.commit(Instant::now()).expect("commit");
        }
        let mut data = std::fs::read(&path).expect("read");
        data[MAGIC.len() + FRAME + 2] ^= 0xFF;
        std::fs::write(&path, &data).expect("write");
        let (_s, r) = Store::open(&path, SyncPolicy::Always, true).expect("recover");
        assert!(r.retained.is_empty());
        let copies: Vec<_> = std::fs::read_dir(&d)
            .expect("dir")
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("midge.db.corrupt-")
            })
            .collect();
        assert_eq!(copies.len(), 1);
        assert_eq!(std::fs::read(copies[0].path()).expect("copy"), data);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A file system whose directory syncs fail (files work).
    struct NoDirSync(crate::persist::fs::MemFs);

    impl Fs for NoDirSync {
        fn open(&self, path: &Path, truncate: bool) -> std::io::Result<Box<dyn LogFile>> {
            self.0.open(path, truncate)
        }
        fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
            self.0.create_dir_all(dir)
        }
        fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
            self.0.rename(from, to)
        }
        fn sync_dir_of(&self, file: &Path) -> std::io::Result<()> {
            if file.extension().is_some_and(|e| e == "db")
                && self.0.contents(file).is_some_and(|c| c.len() > 100)
            {
                return Err(std::io::Error::other("injected directory sync failure"));
            }
            self.0.sync_dir_of(file)
        }
    }

    /// Compaction syncs the directory of the log after the rename (the
    /// working directory for a bare name: `persistence_location` unset) and
    /// a failure to do so is an error, not ignored.
    #[test]
    fn compaction_reports_a_failed_directory_sync() {
        let fs = crate::persist::fs::MemFs::new();
        let path = Path::new("midge.db");
        let (mut s, _) = Store::open_in(
            Box::new(NoDirSync(fs.clone())),
            path,
            SyncPolicy::Always,
            false,
        )
        .expect("open");
        let m = msg("k", &[0u8; 1000]);
        s.append(&Record::RetainSet(&m));
        s.commit(Instant::now()).expect("commit");
        match s.compact(|w| w(&Record::RetainSet(&m))) {
            Err(PersistError::Io(dir, e)) => {
                assert_eq!(dir, Path::new("."), "{e}");
            }
            other => panic!("directory sync failure not reported: {other:?}"),
        }
    }

    #[test]
    fn compaction_keeps_only_the_live_state() {
        let d = dir("compact");
        let path = d.join("midge.db");
        let (mut s, _) = Store::open(&path, SyncPolicy::Always, false).expect("open");
        let m = msg("k", &[0u8; 1000]);
        for _ in 0..5000 {
            s.append(&Record::RetainSet(&m));
        }
        s.commit(Instant::now()).expect("commit");
        assert!(s.wants_compaction());
        let pause = s.compact(|w| w(&Record::RetainSet(&m))).expect("compact");
        assert!(s.size() < 2000, "{}", s.size());
        assert!(pause < Duration::from_secs(5));
        s.append(&Record::RetainClear("k"));
        s.commit(Instant::now()).expect("commit");
        drop(s);
        let (_s, r) = Store::open(&path, SyncPolicy::Always, false).expect("reopen");
        assert!(r.retained.is_empty());
        let _ = std::fs::remove_dir_all(&d);
    }
}
