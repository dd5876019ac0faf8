//! The log file: framing with checksums, streamed replay, group commit,
//! compaction.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::{info, warn};

use super::fs::{dir_of, Fs, LogFile, RealFs};
use super::index::Index;
use super::legacy;
use super::record::{
    self, Owned, Record, StoredMessage, StoredPublisher, StoredSubscription, MESSAGE_HEAD,
};

/// File header: `midge\0\0` and the format version.
pub(super) const MAGIC: &[u8; 8] = b"midge\0\0\x02";
/// Format version 1 (whole subscription lists, a copy of the message and the
/// client id in every queue record), written by midge 0.1.0: converted at
/// start (see `legacy`).
pub(super) const MAGIC_V1: &[u8; 8] = b"midge\0\0\x01";
/// The first bytes of a mosquitto.db (its 15-byte magic begins so).
const MOSQUITTO_MAGIC: &[u8] = b"\x00\xB5\x00mosqu";
pub(super) const FRAME: usize = 8; // length u32 + crc32 u32
/// A record longer than this is damage, not data (the packet limit is 256 MB).
pub(super) const MAX_RECORD: usize = 300 << 20;
const COMPACT_MIN: u64 = 4 << 20;
/// Replay reads through a buffer of this size: a restart needs no RAM in
/// proportion to the log (only to the live state the broker keeps in RAM).
pub(super) const READ_BUF: usize = 64 << 10;
/// Kind byte of the commit marker that ends each batch of records (one per
/// commit). Record kinds are small numbers (see `record`); this one is not a
/// record: replay applies a batch only once it has seen its marker, so a power
/// cut that keeps part of a batch (a message queued for some sessions but not
/// others, a QoS 2 id without its deliveries) loses all of it. Its
/// acknowledgements never left: they wait for the whole commit.
const COMMIT: u8 = 0xC0;

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
    /// A sync failed earlier: the kernel may have dropped the unsynced pages,
    /// so nothing written since can be trusted to be on disk until a restart
    /// replays the file.
    Dead(PathBuf),
    /// The file is mosquitto's persistence database, not a midge log.
    Mosquitto(PathBuf),
}

impl fmt::Display for PersistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PersistError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            PersistError::Dead(p) => write!(
                f,
                "{}: a sync failed earlier; nothing more is written until a restart",
                p.display()
            ),
            PersistError::Corrupt(p, off, why) => write!(
                f,
                "{}: corrupt record at offset {off} ({why}); start with --recover (or `persistence_recover true`) to keep what precedes it",
                p.display()
            ),
            PersistError::Mosquitto(p) => write!(
                f,
                "{}: this is a mosquitto database; midge cannot import it (move it away, or set `persistence_file` to another name)",
                p.display()
            ),
        }
    }
}

impl std::error::Error for PersistError {}

/// A session as replayed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveredSession {
    /// Session number in the log.
    pub sid: u32,
    /// Client identifier.
    pub client_id: String,
    /// Protocol level.
    pub level: u8,
    /// Expiry in seconds; `None` = never.
    pub expiry: Option<u32>,
    /// User name (or certificate name) its ACL checks use; `None` = anonymous.
    pub username: Option<String>,
    /// Listener number (config order) whose rules apply to it.
    pub listener: u32,
    /// Subscriptions by filter.
    pub subscriptions: BTreeMap<String, StoredSubscription>,
    /// Deliveries by number (the order they were queued in).
    pub messages: BTreeMap<u64, RecoveredMessage>,
    /// Incoming QoS 2 ids awaiting PUBREL.
    pub awaiting_rel: Vec<u16>,
    /// A will waiting for its delay: (delay seconds, message).
    pub will: Option<(u32, StoredMessage)>,
}

/// A message queued for or in flight to a session: what RAM keeps of it. The
/// content stays in the log ([`Store::load`] reads it back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredMessage {
    /// Payload bytes.
    pub len: u32,
    /// Delivery QoS.
    pub qos: u8,
    /// RETAIN flag to send.
    pub retain: bool,
    /// Subscription identifiers to send.
    pub subscription_ids: Vec<u32>,
    /// (packet id, PUBREL sent) once it went out.
    pub sent: Option<(u16, bool)>,
}

/// Everything the log held, but message contents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Retained messages by topic.
    pub retained: BTreeMap<String, StoredMessage>,
    /// Who published the retained messages that say so
    /// (`check_retain_source`), by topic.
    pub retained_from: BTreeMap<String, StoredPublisher>,
    /// Sessions by number.
    pub sessions: HashMap<u32, RecoveredSession>,
    /// The highest message or delivery number seen (new ones continue after it).
    pub last_id: u64,
    /// The highest session number seen.
    pub last_sid: u32,
}

/// One record as replay sees it: a `Message` by its head only.
enum Step {
    Record(Owned),
    Message {
        mid: u64,
        len: u32,
    },
    /// The end of a commit (see [`COMMIT`]).
    Commit,
}

impl Recovered {
    /// Deliveries that went out before the restart (their content is resent
    /// as soon as the client returns, so the broker is handed it at start-up).
    pub fn in_flight(&self) -> impl Iterator<Item = u64> + '_ {
        self.sessions.values().flat_map(|s| {
            s.messages
                .iter()
                .filter(|(_, m)| m.sent.is_some())
                .map(|(&id, _)| id)
        })
    }

    fn apply(&mut self, step: Step, offset: u64, index: &mut Index) {
        let rec = match step {
            Step::Message { mid, len } => {
                self.last_id = self.last_id.max(mid);
                index.message(mid, offset, len);
                return;
            }
            Step::Record(rec) => rec,
            Step::Commit => return,
        };
        match rec {
            Owned::RetainSet(m) => {
                self.retained_from.remove(&m.topic);
                self.retained.insert(m.topic.clone(), m);
            }
            Owned::RetainSetFrom(m, from) => {
                self.retained_from.insert(m.topic.clone(), from);
                self.retained.insert(m.topic.clone(), m);
            }
            Owned::RetainClear(t) => {
                self.retained.remove(&t);
                self.retained_from.remove(&t);
            }
            Owned::SessionPut {
                sid,
                client_id,
                level,
                expiry,
                username,
                listener,
            } => {
                self.last_sid = self.last_sid.max(sid);
                let s = self.sessions.entry(sid).or_default();
                s.sid = sid;
                s.client_id = client_id;
                s.level = level;
                s.expiry = expiry;
                s.username = username;
                s.listener = listener;
            }
            Owned::SessionDelete(sid) => {
                if let Some(s) = self.sessions.remove(&sid) {
                    for id in s.messages.keys() {
                        index.done(*id);
                    }
                }
            }
            Owned::SubAdd { sid, sub } => {
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.subscriptions.insert(sub.filter.clone(), sub);
                }
            }
            Owned::SubRemove { sid, filter } => {
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.subscriptions.remove(&filter);
                }
            }
            Owned::Queue {
                sid,
                id,
                mid,
                qos,
                retain,
                subscription_ids,
            } => {
                self.last_id = self.last_id.max(id);
                let Some(s) = self.sessions.get_mut(&sid) else {
                    return;
                };
                if let Some(len) = index.queue(id, offset, mid, sid) {
                    s.messages.insert(
                        id,
                        RecoveredMessage {
                            len,
                            qos,
                            retain,
                            subscription_ids,
                            sent: None,
                        },
                    );
                }
            }
            Owned::Inflight {
                id,
                packet_id,
                released,
            } => {
                if let Some(m) = index
                    .delivery(id)
                    .and_then(|d| self.sessions.get_mut(&d.sid))
                    .and_then(|s| s.messages.get_mut(&id))
                {
                    m.sent = Some((packet_id, released));
                }
            }
            Owned::Done(id) => {
                if let Some(d) = index.done(id) {
                    if let Some(s) = self.sessions.get_mut(&d.sid) {
                        s.messages.remove(&id);
                    }
                }
            }
            Owned::RelHold { sid, packet_id } => {
                if let Some(s) = self.sessions.get_mut(&sid) {
                    if !s.awaiting_rel.contains(&packet_id) {
                        s.awaiting_rel.push(packet_id);
                    }
                }
            }
            Owned::RelDone { sid, packet_id } => {
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.awaiting_rel.retain(|&p| p != packet_id);
                }
            }
            Owned::Will { sid, delay, msg } => {
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.will = msg.map(|m| (delay, m));
                }
            }
        }
    }
}

/// CRC-32 (IEEE), table-driven. A checksum against torn and flipped bytes, not
/// a defence against an attacker who can write the file.
pub(super) fn crc32(data: &[u8]) -> u32 {
    !crc32_update(!0, data)
}

/// Feed `data` into a running CRC-32 (start with `!0`, finish with `!`).
fn crc32_update(mut c: u32, data: &[u8]) -> u32 {
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
    for &b in data {
        c = table[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    c
}

pub(super) fn frame(rec: &Record<'_>, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME]);
    record::encode(rec, out);
    let body_len = (out.len() - start - FRAME) as u32;
    let crc = crc32(&out[start + FRAME..]);
    out[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Append a commit marker frame to `out`.
pub(super) fn frame_commit(out: &mut Vec<u8>) {
    let body = [COMMIT];
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&crc32(&body).to_le_bytes());
    out.extend_from_slice(&body);
}

/// Keep the index in step with a record written at `offset`.
fn note(index: &mut Index, rec: &Record<'_>, offset: u64) {
    match *rec {
        Record::Message { mid, msg } => {
            index.message(
                mid,
                offset,
                u32::try_from(msg.payload.len()).unwrap_or(u32::MAX),
            );
        }
        Record::Queue { sid, id, mid, .. } => {
            let known = index.queue(id, offset, mid, sid).is_some();
            if !known {
                warn!("Persistence: delivery {id} names message {mid}, which is not in the log.");
            }
        }
        Record::Done(id) => {
            index.done(id);
        }
        // A deleted session's deliveries stay indexed until the next
        // compaction, which copies only what the broker still holds.
        _ => {}
    }
}

/// Why a record could not be read.
pub(super) enum Bad {
    Io(std::io::Error),
    /// Damage; `last`: the record's declared end is at or past the file's end.
    Damage(&'static str, bool),
}

impl From<std::io::Error> for Bad {
    fn from(e: std::io::Error) -> Self {
        Bad::Io(e)
    }
}

/// Read the frame header at `pos` (`[length u32][crc32 u32]`, the same in
/// every format) and check the length against the file: returns (body length,
/// checksum, where the record ends).
pub(super) fn read_frame_head(
    rd: &mut impl Read,
    pos: u64,
    file_len: u64,
) -> Result<(usize, u32, u64), Bad> {
    if file_len - pos < FRAME as u64 {
        return Err(Bad::Damage("torn frame header", true));
    }
    let mut head = [0u8; FRAME];
    rd.read_exact(&mut head)?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len > MAX_RECORD {
        return Err(Bad::Damage("impossible length", false));
    }
    let end = pos + (FRAME + len) as u64;
    if end > file_len {
        return Err(Bad::Damage("torn record", true));
    }
    Ok((len, crc, end))
}

/// Read the record at `pos` (the reader is positioned there). A `Message`
/// body is only checksummed, through `chunk`; other bodies land in `body`.
fn read_record(
    rd: &mut impl Read,
    pos: u64,
    file_len: u64,
    body: &mut Vec<u8>,
    chunk: &mut [u8],
) -> Result<(Step, u64), Bad> {
    let (len, crc, end) = read_frame_head(rd, pos, file_len)?;
    let last = end >= file_len;
    let first = len.min(MESSAGE_HEAD);
    body.clear();
    body.resize(first, 0);
    rd.read_exact(body)?;
    let mut c = crc32_update(!0, body);
    if body.first() == Some(&record::MESSAGE) && len >= MESSAGE_HEAD {
        let mut left = len - MESSAGE_HEAD;
        while left > 0 {
            let n = left.min(chunk.len());
            rd.read_exact(&mut chunk[..n])?;
            c = crc32_update(c, &chunk[..n]);
            left -= n;
        }
        if !c != crc {
            return Err(Bad::Damage("checksum mismatch", last));
        }
        let (mid, plen) =
            record::message_head(body).ok_or(Bad::Damage("undecodable record", last))?;
        return Ok((Step::Message { mid, len: plen }, end));
    }
    body.resize(len, 0);
    rd.read_exact(&mut body[first..])?;
    c = crc32_update(c, &body[first..]);
    if !c != crc {
        return Err(Bad::Damage("checksum mismatch", last));
    }
    if body[..] == [COMMIT] {
        return Ok((Step::Commit, end));
    }
    let rec = record::decode(body).ok_or(Bad::Damage("undecodable record", last))?;
    Ok((Step::Record(rec), end))
}

/// Is everything from `pos` to the end zeros (a preallocated block a crash
/// left unwritten)?
pub(super) fn zeros_to_end(
    file: &dyn LogFile,
    pos: u64,
    file_len: u64,
    chunk: &mut [u8],
) -> std::io::Result<bool> {
    let mut at = pos;
    while at < file_len {
        let n = usize::try_from(file_len - at).map_or(chunk.len(), |l| l.min(chunk.len()));
        file.read_exact_at(&mut chunk[..n], at)?;
        if chunk[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

/// Sequential reads of a [`LogFile`] (replay wraps it in a `BufReader`).
pub(super) struct LogReader<'f> {
    pub(super) file: &'f dyn LogFile,
    pub(super) pos: u64,
}

impl Read for LogReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
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
    /// A sync failed. Never retried: after a failed `fsync` Linux may have
    /// dropped the dirty pages and marked them clean, so a later successful
    /// sync would prove nothing. The log takes no more records until restart.
    dead: bool,
    /// Where live deliveries and their messages are in the file.
    index: Index,
}

impl Store {
    /// Open (creating if needed) and replay the log at `path`. Replay streams
    /// the file through a fixed buffer and keeps no message content of queued
    /// messages, only where their records are.
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
        if legacy::resume(&*fs, path)? {
            warn!(
                "{}: finished converting a format 1 log that a crash interrupted (the old file is kept as {}.v1-*).",
                path.display(),
                path.display()
            );
        }
        let mut file = fs.open(path, false).map_err(io)?;
        let file_len = file.size().map_err(io)?;
        let mut state = Recovered::default();
        let mut index = Index::default();
        let mut good = MAGIC.len() as u64;
        if file_len == 0 {
            file.append(MAGIC).map_err(io)?;
            file.sync().map_err(io)?;
            // A new file's name survives a power cut only once its directory is synced.
            fs.sync_dir_of(path).map_err(io)?;
        } else {
            let mut rd = BufReader::with_capacity(
                READ_BUF,
                LogReader {
                    file: &*file,
                    pos: 0,
                },
            );
            let mut magic = [0u8; 8];
            if file_len < MAGIC.len() as u64 || rd.read_exact(&mut magic).is_err() {
                return Err(PersistError::Corrupt(
                    path.to_path_buf(),
                    0,
                    "not a midge log".into(),
                ));
            }
            if magic.starts_with(MOSQUITTO_MAGIC) {
                return Err(PersistError::Mosquitto(path.to_path_buf()));
            }
            if &magic == MAGIC_V1 {
                // Written by midge 0.1.0: converted in place, the old file kept.
                drop(rd);
                let c = legacy::convert(&*fs, &*file, path, recover)?;
                drop(file);
                info!(
                    "Converted {} from log format 1 to format 2 ({} records, {} session(s), {} queued message record(s)); the format 1 file is kept as {}.",
                    path.display(),
                    c.records,
                    c.sessions,
                    c.deliveries,
                    c.aside.display()
                );
                return Self::open_in(fs, path, policy, recover);
            }
            if &magic != MAGIC {
                return Err(PersistError::Corrupt(
                    path.to_path_buf(),
                    0,
                    "not a midge log, or another format version".into(),
                ));
            }
            let mut pos = MAGIC.len() as u64;
            let mut records = 0u64;
            let mut body = Vec::new();
            let mut chunk = vec![0u8; READ_BUF];
            // Records since the last commit marker, applied when it comes (one
            // commit's worth: message contents are not held, only their heads).
            let mut batch: Vec<(Step, u64)> = Vec::new();
            // The log has commit markers (a log written before them has none, and
            // all its records count), and where the last one ends.
            let mut marked = false;
            let mut committed = pos;
            while pos < file_len {
                match read_record(&mut rd, pos, file_len, &mut body, &mut chunk) {
                    Ok((Step::Commit, end)) => {
                        for (step, at) in batch.drain(..) {
                            state.apply(step, at, &mut index);
                        }
                        marked = true;
                        pos = end;
                        committed = end;
                    }
                    Ok((step, end)) => {
                        batch.push((step, pos));
                        pos = end;
                        records += 1;
                    }
                    Err(Bad::Io(e)) => return Err(io(e)),
                    Err(Bad::Damage(why, last)) => {
                        // A record that runs past the end of the file is a write the
                        // crash cut short: drop it. So are zeros to the end: a file
                        // system that preallocates can leave a torn write as zeros,
                        // and a zero frame even passes the checksum (the CRC of
                        // nothing is 0). Damage with good data after it is corruption.
                        let tail = why.starts_with("torn")
                            || (why == "checksum mismatch" && last)
                            || zeros_to_end(&*file, pos, file_len, &mut chunk).map_err(io)?;
                        if tail {
                            warn!(
                                "{}: cutting a torn record at offset {pos} ({} bytes): the last write before a crash.",
                                path.display(),
                                file_len - pos
                            );
                        } else if recover {
                            // Records after the damage may still be good: keep the
                            // whole file aside before cutting it.
                            let copy = keep_aside(&*fs, &*file, path).map_err(io)?;
                            warn!(
                                "{}: corrupt record at offset {pos} of {file_len} ({why}); --recover keeps the {records} records before it; the damaged file was copied to {}.",
                                path.display(),
                                copy.display()
                            );
                        } else {
                            return Err(PersistError::Corrupt(path.to_path_buf(), pos, why.into()));
                        }
                        break;
                    }
                }
            }
            drop(rd);
            let mut end = pos.min(file_len);
            if marked && !batch.is_empty() {
                // A batch whose commit never completed: none of it was acknowledged.
                warn!(
                    "{}: dropping {} record(s) of a commit cut short at offset {committed}: the last write before a crash.",
                    path.display(),
                    batch.len()
                );
                batch.clear();
                end = committed;
            }
            for (step, at) in batch.drain(..) {
                state.apply(step, at, &mut index);
            }
            if end < file_len {
                file.truncate(end).map_err(io)?;
                file.sync().map_err(io)?;
            }
            good = end;
            index.prune();
            info!(
                "Restored {} retained message(s) and {} session(s) with {} queued message(s) from {} ({records} records).",
                state.retained.len(),
                state.sessions.len(),
                index.deliveries(),
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
                dead: false,
                index,
            },
            state,
        ))
    }

    /// Add a record to this turn's batch.
    pub fn append(&mut self, rec: &Record<'_>) {
        if let Record::Keep(_) = rec {
            return;
        }
        note(&mut self.index, rec, self.size + self.buf.len() as u64);
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

    /// Read back the message of delivery `id` (RAM does not hold it). `None`
    /// if it is unknown or its record does not check out.
    pub fn load(&self, id: u64) -> Option<StoredMessage> {
        let d = self.index.delivery(id)?;
        let m = self.index.message_ref(d.mid)?;
        let frame = self.frame_at(m.offset)?;
        let (head, body) = frame.split_at(FRAME);
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if crc32(body) != crc {
            return None;
        }
        let (mid, msg) = record::decode_message(body)?;
        (mid == d.mid).then_some(msg)
    }

    /// Number of live deliveries indexed.
    pub fn indexed(&self) -> usize {
        self.index.deliveries()
    }

    /// True when the last write failed or a sync ever did (new QoS 1/2
    /// messages for durable destinations must be refused).
    pub fn failing(&self) -> bool {
        self.failing || self.dead
    }

    /// A sync failed: the log takes no more records until restart.
    pub fn dead(&self) -> bool {
        self.dead
    }

    /// Records were added since the last successful [`Store::commit`]: output
    /// that depends on them must wait for the next one.
    pub fn needs_commit(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Write this turn's records, ending with a commit marker, and sync as the
    /// policy says. Called before output that depends on them is released.
    /// When the write fails the records stay buffered and are retried at the
    /// next commit; when the sync fails the log is dead (see
    /// [`PersistError::Dead`]) and records are dropped from then on. Either way
    /// the caller must not release what depends on them.
    pub fn commit(&mut self, now: Instant) -> Result<(), PersistError> {
        // The turn is over: messages no delivery names can be forgotten.
        self.index.prune();
        if self.dead {
            if self.buf.is_empty() {
                return Ok(());
            }
            self.buf.clear();
            return Err(PersistError::Dead(self.path.clone()));
        }
        if !self.buf.is_empty() {
            frame_commit(&mut self.buf);
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
                self.dead = true;
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
        !self.dead && self.size > COMPACT_MIN && self.size > self.base.saturating_mul(4)
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
        let mut index = Index::default();
        let mut written = 0u64;
        let mut failure: Option<std::io::Error> = None;
        {
            let old = &*self;
            let mut scratch = Vec::new();
            let mut put = |bytes: &[u8], written: &mut u64| {
                if failure.is_none() {
                    out.extend_from_slice(bytes);
                    *written += bytes.len() as u64;
                    if out.len() >= CHUNK {
                        if let Err(e) = f.append(&out) {
                            failure = Some(e);
                        }
                        out.clear();
                    }
                }
            };
            put(MAGIC, &mut written);
            dump(&mut |rec| {
                if let Record::Keep(id) = *rec {
                    // Held only on disk: copy the message's record (once) and
                    // the delivery's as they are.
                    let Some(d) = old.index.delivery(id) else {
                        return;
                    };
                    if index.message_ref(d.mid).is_none() {
                        let Some((m, fr)) = old
                            .index
                            .message_ref(d.mid)
                            .and_then(|m| Some((m, old.frame_at(m.offset)?)))
                        else {
                            return;
                        };
                        index.message(d.mid, written, m.len);
                        put(&fr, &mut written);
                    }
                    let Some(fr) = old.frame_at(d.offset) else {
                        return;
                    };
                    index.queue(id, written, d.mid, d.sid);
                    put(&fr, &mut written);
                    return;
                }
                scratch.clear();
                note(&mut index, rec, written);
                frame(rec, &mut scratch);
                put(&scratch, &mut written);
            });
        }
        if let Some(e) = failure {
            return Err(io(e));
        }
        let before = out.len();
        frame_commit(&mut out);
        written += (out.len() - before) as u64;
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
        index.prune();
        self.index = index;
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
                sid: 1,
                client_id: "c",
                level: 4,
                expiry: None,
                username: Some("alice"),
                listener: 2,
            });
            let sub = StoredSubscription {
                filter: "a/#".into(),
                options: 1,
                identifier: None,
            };
            s.append(&Record::SubAdd { sid: 1, sub: &sub });
            s.append(&Record::SubAdd {
                sid: 1,
                sub: &StoredSubscription {
                    filter: "gone".into(),
                    options: 0,
                    identifier: None,
                },
            });
            s.append(&Record::SubRemove {
                sid: 1,
                filter: "gone",
            });
            s.append(&Record::Message { mid: 6, msg: &m });
            s.append(&Record::Queue {
                sid: 1,
                id: 7,
                mid: 6,
                qos: 1,
                retain: false,
                subscription_ids: &[],
            });
            s.append(&Record::Inflight {
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
        let (s, r) = Store::open(&path, SyncPolicy::Always, false).expect("reopen");
        assert_eq!(r.retained["a/b"].payload, b"hello");
        let c = &r.sessions[&1];
        assert_eq!(c.client_id, "c");
        assert_eq!(
            c.subscriptions.keys().collect::<Vec<_>>(),
            vec!["a/#"],
            "added, then one added and removed"
        );
        assert_eq!(
            (c.username.as_deref(), c.listener),
            (Some("alice"), 2),
            "the session's identity survives (issue 11)"
        );
        assert_eq!(c.messages[&7].sent, Some((3, false)));
        assert_eq!(c.messages[&7].len, 5);
        assert_eq!(r.last_id, 7);
        assert_eq!(r.last_sid, 1);
        // The content is read back from the file on demand.
        assert_eq!(s.load(7).map(|m| m.payload), Some(b"hello".to_vec()));
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A message for many sessions is written once; each session's copy is a
    /// reference that keeps it alive until the last is done, across a reopen
    /// and a compaction.
    #[test]
    fn a_message_is_stored_once_and_lives_while_referenced() {
        let d = dir("shared");
        let path = d.join("midge.db");
        let m = msg("fan/out", &[7u8; 10_000]);
        let (mut s, _) = Store::open(&path, SyncPolicy::Always, false).expect("open");
        s.append(&Record::Message { mid: 1, msg: &m });
        for sid in 1..=50u32 {
            s.append(&Record::SessionPut {
                sid,
                client_id: &format!("c{sid}"),
                level: 4,
                expiry: None,
                username: None,
                listener: 0,
            });
            s.append(&Record::Queue {
                sid,
                id: 1 + u64::from(sid),
                mid: 1,
                qos: 1,
                retain: false,
                subscription_ids: &[],
            });
        }
        s.commit(Instant::now()).expect("commit");
        assert!(s.size() < 10_000 + 50 * 100, "one copy: {}", s.size());
        for sid in 1..50u32 {
            s.append(&Record::Done(1 + u64::from(sid)));
        }
        s.commit(Instant::now()).expect("commit");
        assert_eq!(s.load(51).map(|m| m.payload.len()), Some(10_000));
        drop(s);
        let (mut s, r) = Store::open(&path, SyncPolicy::Always, false).expect("reopen");
        assert_eq!(r.sessions[&50].messages[&51].len, 10_000);
        assert!(r.sessions[&1].messages.is_empty());
        assert_eq!(s.load(51).map(|m| m.payload.len()), Some(10_000));
        s.compact(|w| w(&Record::Keep(51))).expect("compact");
        assert_eq!(s.load(51).map(|m| m.payload.len()), Some(10_000));
        s.append(&Record::Done(51));
        s.commit(Instant::now()).expect("commit");
        assert_eq!(s.load(51), None);
        // Nothing references it: the next compaction drops it.
        s.compact(|_| {}).expect("compact");
        // The header and a commit marker.
        assert_eq!(s.size(), (MAGIC.len() + FRAME + 1) as u64);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A mosquitto.db at the persistence path is named as such (before: "not a
    /// midge log" with a `--recover` hint); a new log is created 0600.
    #[test]
    fn a_mosquitto_database_is_named_and_new_logs_are_private() {
        let d = dir("mosq");
        let path = d.join("mosquitto.db");
        std::fs::create_dir_all(&d).expect("dir");
        let mut db = b"\x00\xB5\x00mosquitto db".to_vec();
        db.extend_from_slice(&[0, 0, 0, 6, 0, 0, 0, 0]);
        std::fs::write(&path, &db).expect("write");
        match Store::open(&path, SyncPolicy::Always, true) {
            Err(e @ PersistError::Mosquitto(_)) => {
                let m = e.to_string();
                assert!(
                    m.contains("this is a mosquitto database; midge cannot import it"),
                    "{m}"
                );
                assert!(!m.contains("--recover"), "{m}");
            }
            Err(e) => panic!("wrong error {e}"),
            Ok(_) => panic!("a mosquitto db was read"),
        }
        assert_eq!(std::fs::read(&path).expect("read"), db, "left alone");
        let fresh = d.join("midge.db");
        drop(Store::open(&fresh, SyncPolicy::Always, false).expect("open"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&fresh)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A power cut can keep part of a commit (any prefix of the unsynced
    /// write): a batch counts only with its commit marker, so a message is not
    /// kept for one session and lost for another, nor a QoS 2 id held without
    /// its deliveries. A log without markers (written before them) loads whole.
    #[test]
    fn a_batch_without_its_commit_marker_is_dropped_whole() {
        let fs = crate::persist::fs::MemFs::new();
        let path = Path::new("log");
        let open = || Store::open_in(Box::new(fs.clone()), path, SyncPolicy::Always, false);
        {
            let (mut s, _) = open().expect("open");
            s.append(&Record::RetainSet(&msg("kept", b"v")));
            s.commit(Instant::now()).expect("commit");
            s.append(&Record::RetainSet(&msg("a", b"v")));
            s.append(&Record::RetainSet(&msg("b", b"v")));
            fs.fail_sync(true);
            assert!(s.commit(Instant::now()).is_err());
            fs.fail_sync(false);
        }
        let marker = FRAME + 1;
        // Power cut keeping both records of the second batch but not its marker.
        fs.crash(|n| n - marker);
        let (_s, r) = open().expect("reopen");
        assert!(r.retained.contains_key("kept"));
        assert!(!r.retained.contains_key("a") && !r.retained.contains_key("b"));
        drop(_s);
        // The same log without any marker: every record counts.
        let data = fs.contents(path).expect("log");
        let mut old = MAGIC.to_vec();
        let mut pos = MAGIC.len();
        while pos < data.len() {
            let len = u32::from_le_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]])
                as usize;
            if data[pos + FRAME..pos + FRAME + len] != [COMMIT] {
                old.extend_from_slice(&data[pos..pos + FRAME + len]);
            }
            pos += FRAME + len;
        }
        let fs2 = crate::persist::fs::MemFs::new();
        let mut f = fs2.open(path, false).expect("open");
        f.append(&old).expect("write");
        let (_s, r) =
            Store::open_in(Box::new(fs2), path, SyncPolicy::Always, false).expect("old log");
        assert!(r.retained.contains_key("kept"));
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
        fn exists(&self, path: &Path) -> std::io::Result<bool> {
            self.0.exists(path)
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
