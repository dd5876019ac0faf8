//! Format 1 logs (written by midge 0.1.0) are converted to format 2 at start:
//! read one record at a time, each translated into format 2 records written to
//! a new file beside the old one, which is then kept as `<log>.v1-<unix secs>`
//! (renamed, never deleted). Nothing here replays state: the converted file is
//! opened like any other log afterwards.
//!
//! Format 1 named sessions by client id, stored each session's whole
//! subscription list in its `SessionPut`, and carried a copy of the message in
//! every `Queue` record. The translation gives each session a number, turns
//! each list into the subscriptions added and removed since the last one, and
//! each `Queue` into a `Message` record (numbered like the delivery: format 1
//! delivery numbers are unique) and a `Queue` that names it. Format 1 stored no
//! identity: converted sessions are anonymous on the first listener, as 0.1.0
//! itself restored them.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use log::warn;

use super::fs::{Fs, LogFile};
use super::record::{self, get_message, Record, StoredSubscription, R, W};
use super::store::{
    crc32, frame, frame_commit, read_frame_head, zeros_to_end, Bad, LogReader, PersistError, FRAME,
    MAGIC, READ_BUF,
};

/// Output is written (and a commit marker placed) in chunks of this size: a
/// replay of the converted log holds at most one chunk's records in a batch.
const CHUNK: usize = 64 << 10;

/// What a conversion did, for the start-up log line.
#[derive(Debug)]
pub(super) struct Conversion {
    /// Where the format 1 file now is.
    pub aside: PathBuf,
    /// Format 1 records read.
    pub records: u64,
    /// Sessions alive at the end of the old log.
    pub sessions: usize,
    /// Deliveries (queued or in flight) written.
    pub deliveries: u64,
}

/// The converted file while it is written; renamed to [`converted_path`] once
/// complete and synced.
fn converting_path(path: &Path) -> PathBuf {
    suffixed(path, ".converting")
}

/// A complete, synced conversion not yet in place (see [`resume`]).
fn converted_path(path: &Path) -> PathBuf {
    suffixed(path, ".converted")
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// `<log>.v1-<unix secs>`, with `-N` added if that name is taken.
fn aside_path(fs: &dyn Fs, path: &Path) -> std::io::Result<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let base = suffixed(path, &format!(".v1-{secs}"));
    let mut candidate = base.clone();
    let mut n = 1;
    while fs.exists(&candidate)? {
        candidate = suffixed(&base, &format!("-{n}"));
        n += 1;
    }
    Ok(candidate)
}

/// A crash between moving the format 1 file aside and moving the converted
/// file into place leaves no log but a complete conversion: put it in place.
/// Returns whether it did.
pub(super) fn resume(fs: &dyn Fs, path: &Path) -> Result<bool, PersistError> {
    let done = converted_path(path);
    let io = |e| PersistError::Io(path.to_path_buf(), e);
    if fs.exists(path).map_err(io)? || !fs.exists(&done).map_err(io)? {
        return Ok(false);
    }
    fs.rename(&done, path).map_err(io)?;
    fs.sync_dir_of(path).map_err(io)?;
    Ok(true)
}

/// Convert the format 1 log `v1` (open at `path`) to format 2 and put the
/// result at `path`, the old file moved aside. A torn tail is cut (the old
/// file keeps it); damage before the end is [`PersistError::Corrupt`] unless
/// `recover`, which keeps what precedes it. On error `path` is untouched.
pub(super) fn convert(
    fs: &dyn Fs,
    v1: &dyn LogFile,
    path: &Path,
    recover: bool,
) -> Result<Conversion, PersistError> {
    let tmp = converting_path(path);
    let io_old = |e| PersistError::Io(path.to_path_buf(), e);
    let io_tmp = |e| PersistError::Io(tmp.clone(), e);
    let file_len = v1.size().map_err(io_old)?;
    let mut out_file = fs.open(&tmp, true).map_err(io_tmp)?;
    let mut out = Vec::with_capacity(CHUNK + FRAME);
    out.extend_from_slice(MAGIC);
    let mut t = Translator::default();
    let mut rd = BufReader::with_capacity(
        READ_BUF,
        LogReader {
            file: v1,
            pos: MAGIC.len() as u64,
        },
    );
    let mut pos = MAGIC.len() as u64;
    let mut records = 0u64;
    let mut body = Vec::new();
    while pos < file_len {
        let step = read_frame(&mut rd, pos, file_len, &mut body).and_then(|end| {
            let rec = decode(&body).ok_or(Bad::Damage("undecodable record", end >= file_len))?;
            t.translate(rec, &mut out);
            Ok(end)
        });
        match step {
            Ok(end) => {
                pos = end;
                records += 1;
                if out.len() >= CHUNK {
                    // Whole format 1 records only: each was applied on its own.
                    frame_commit(&mut out);
                    out_file.append(&out).map_err(io_tmp)?;
                    out.clear();
                }
            }
            Err(Bad::Io(e)) => return Err(io_old(e)),
            Err(Bad::Damage(why, last)) => {
                // The same rules as a format 2 log (see `Store::open`).
                let mut chunk = vec![0u8; READ_BUF];
                let tail = why.starts_with("torn")
                    || (why == "checksum mismatch" && last)
                    || zeros_to_end(v1, pos, file_len, &mut chunk).map_err(io_old)?;
                if tail {
                    warn!(
                        "{}: cutting a torn record at offset {pos} ({} bytes) of the format 1 log: the last write before a crash.",
                        path.display(),
                        file_len - pos
                    );
                } else if recover {
                    warn!(
                        "{}: corrupt record at offset {pos} of {file_len} ({why}); --recover converts the {records} records before it (the whole format 1 file is kept aside).",
                        path.display()
                    );
                } else {
                    // Leave nothing that `resume` could mistake for a result.
                    let _ = out_file.truncate(0);
                    return Err(PersistError::Corrupt(path.to_path_buf(), pos, why.into()));
                }
                break;
            }
        }
    }
    drop(rd);
    frame_commit(&mut out);
    out_file.append(&out).map_err(io_tmp)?;
    out_file.sync().map_err(io_tmp)?;
    drop(out_file);
    // Three renames, each made durable before the next: a crash leaves either
    // the format 1 log in place (converted again next time) or a complete
    // `.converted` file that `resume` puts in place. The old file is never
    // overwritten nor removed.
    let done = converted_path(path);
    fs.rename(&tmp, &done).map_err(io_tmp)?;
    fs.sync_dir_of(&done).map_err(io_tmp)?;
    let aside = aside_path(fs, path).map_err(io_old)?;
    fs.rename(path, &aside).map_err(io_old)?;
    fs.sync_dir_of(path).map_err(io_old)?;
    fs.rename(&done, path).map_err(io_old)?;
    fs.sync_dir_of(path).map_err(io_old)?;
    Ok(Conversion {
        aside,
        records,
        sessions: t.sessions.len(),
        deliveries: t.deliveries,
    })
}

/// Read the format 1 frame at `pos` into `body` (framing as in format 2:
/// `[length u32][crc32 u32][body]`); returns where it ends.
fn read_frame(rd: &mut impl Read, pos: u64, file_len: u64, body: &mut Vec<u8>) -> Result<u64, Bad> {
    let (len, crc, end) = read_frame_head(rd, pos, file_len)?;
    body.clear();
    body.resize(len, 0);
    rd.read_exact(body)?;
    if crc32(body) != crc {
        return Err(Bad::Damage("checksum mismatch", end >= file_len));
    }
    Ok(end)
}

/// A format 1 record. Messages stay as their encoded bytes (`put_message`'s
/// layout, unchanged in format 2), borrowed from the record being read.
#[derive(Debug, PartialEq, Eq)]
enum V1<'b> {
    /// Body identical in format 2.
    RetainSet(&'b [u8]),
    RetainClear(String),
    SessionPut {
        client_id: String,
        level: u8,
        expiry: Option<u32>,
        subscriptions: Vec<StoredSubscription>,
    },
    SessionDelete(String),
    Queue {
        client_id: String,
        id: u64,
        msg: &'b [u8],
        payload_len: u32,
        qos: u8,
        retain: bool,
        subscription_ids: Vec<u32>,
    },
    Inflight {
        client_id: String,
        id: u64,
        packet_id: u16,
        released: bool,
    },
    Done {
        client_id: String,
        id: u64,
    },
    RelHold {
        client_id: String,
        packet_id: u16,
    },
    RelDone {
        client_id: String,
        packet_id: u16,
    },
    Will {
        client_id: String,
        delay: u32,
        msg: Option<&'b [u8]>,
    },
}

/// An encoded message at the reader's position: its bytes and payload length
/// (checked by decoding it).
fn message<'b>(r: &mut R<'_>, body: &'b [u8]) -> Option<(&'b [u8], u32)> {
    let start = r.pos();
    let m = get_message(r)?;
    let len = u32::try_from(m.payload.len()).ok()?;
    Some((body.get(start..r.pos())?, len))
}

/// Decode a format 1 record body (kind numbers are format 2's for the kinds
/// both have); `None` when it does not parse.
fn decode(body: &[u8]) -> Option<V1<'_>> {
    let mut r = R::new(body);
    let rec = match r.u8()? {
        record::RETAIN_SET => {
            message(&mut r, body)?;
            V1::RetainSet(body)
        }
        record::RETAIN_CLEAR => V1::RetainClear(r.string()?),
        record::SESSION_PUT => {
            let client_id = r.string()?;
            let level = r.u8()?;
            let expiry = r.opt_u32()?;
            let n = r.u32()? as usize;
            let mut subscriptions = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                subscriptions.push(StoredSubscription {
                    filter: r.string()?,
                    options: r.u8()?,
                    identifier: r.opt_u32()?,
                });
            }
            V1::SessionPut {
                client_id,
                level,
                expiry,
                subscriptions,
            }
        }
        record::SESSION_DELETE => V1::SessionDelete(r.string()?),
        record::QUEUE => {
            let client_id = r.string()?;
            let id = r.u64()?;
            let (msg, payload_len) = message(&mut r, body)?;
            let qos = r.u8()?;
            let retain = r.u8()? != 0;
            let n = r.u32()? as usize;
            let mut subscription_ids = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                subscription_ids.push(r.u32()?);
            }
            V1::Queue {
                client_id,
                id,
                msg,
                payload_len,
                qos,
                retain,
                subscription_ids,
            }
        }
        record::INFLIGHT => V1::Inflight {
            client_id: r.string()?,
            id: r.u64()?,
            packet_id: r.u16()?,
            released: r.u8()? != 0,
        },
        record::DONE => V1::Done {
            client_id: r.string()?,
            id: r.u64()?,
        },
        record::REL_HOLD => V1::RelHold {
            client_id: r.string()?,
            packet_id: r.u16()?,
        },
        record::REL_DONE => V1::RelDone {
            client_id: r.string()?,
            packet_id: r.u16()?,
        },
        record::WILL => {
            let client_id = r.string()?;
            let delay = r.u32()?;
            let msg = match r.u8()? {
                0 => None,
                1 => Some(message(&mut r, body)?.0),
                _ => return None,
            };
            V1::Will {
                client_id,
                delay,
                msg,
            }
        }
        _ => return None,
    };
    r.done().then_some(rec)
}

/// A session of the old log as the translation tracks it.
#[derive(Debug)]
struct Session {
    sid: u32,
    /// Its subscriptions as last written, to turn the next whole list into
    /// additions and removals.
    subscriptions: BTreeMap<String, StoredSubscription>,
}

/// The state the translation needs: sessions (number and subscriptions),
/// never message contents.
#[derive(Debug, Default)]
struct Translator {
    sessions: HashMap<String, Session>,
    last_sid: u32,
    deliveries: u64,
}

/// Append a frame whose body `body` writes.
fn raw_frame(out: &mut Vec<u8>, body: impl FnOnce(&mut W<'_>)) {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME]);
    body(&mut W(out));
    let len = u32::try_from(out.len() - start - FRAME).unwrap_or(u32::MAX);
    let crc = crc32(&out[start + FRAME..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

impl Translator {
    fn sid(&self, client_id: &str) -> Option<u32> {
        self.sessions.get(client_id).map(|s| s.sid)
    }

    /// Append the format 2 records for `rec` to `out`. Records for a session
    /// the log does not hold are dropped, as format 1's replay ignored them.
    fn translate(&mut self, rec: V1<'_>, out: &mut Vec<u8>) {
        match rec {
            V1::RetainSet(body) => raw_frame(out, |w| w.0.extend_from_slice(body)),
            V1::RetainClear(topic) => frame(&Record::RetainClear(&topic), out),
            V1::SessionPut {
                client_id,
                level,
                expiry,
                subscriptions,
            } => {
                if !self.sessions.contains_key(&client_id) {
                    // A new session (or one deleted and begun again): a new number.
                    self.last_sid += 1;
                    let s = Session {
                        sid: self.last_sid,
                        subscriptions: BTreeMap::new(),
                    };
                    self.sessions.insert(client_id.clone(), s);
                }
                let Some(s) = self.sessions.get_mut(&client_id) else {
                    return;
                };
                frame(
                    &Record::SessionPut {
                        sid: s.sid,
                        client_id: &client_id,
                        level,
                        expiry,
                        username: None,
                        listener: 0,
                    },
                    out,
                );
                let new: BTreeMap<String, StoredSubscription> = subscriptions
                    .into_iter()
                    .map(|sub| (sub.filter.clone(), sub))
                    .collect();
                for filter in s.subscriptions.keys().filter(|f| !new.contains_key(*f)) {
                    frame(&Record::SubRemove { sid: s.sid, filter }, out);
                }
                for sub in new.values() {
                    if s.subscriptions.get(&sub.filter) != Some(sub) {
                        frame(&Record::SubAdd { sid: s.sid, sub }, out);
                    }
                }
                s.subscriptions = new;
            }
            V1::SessionDelete(client_id) => {
                if let Some(s) = self.sessions.remove(&client_id) {
                    frame(&Record::SessionDelete(s.sid), out);
                }
            }
            V1::Queue {
                client_id,
                id,
                msg,
                payload_len,
                qos,
                retain,
                subscription_ids,
            } => {
                let Some(sid) = self.sid(&client_id) else {
                    return;
                };
                // The message gets the delivery's number: format 1 numbered
                // each delivery once, and format 2 numbers messages and
                // deliveries apart.
                raw_frame(out, |w| {
                    w.u8(record::MESSAGE);
                    w.u64(id);
                    w.u32(payload_len);
                    w.0.extend_from_slice(msg);
                });
                frame(
                    &Record::Queue {
                        sid,
                        id,
                        mid: id,
                        qos,
                        retain,
                        subscription_ids: &subscription_ids,
                    },
                    out,
                );
                self.deliveries += 1;
            }
            V1::Inflight {
                client_id,
                id,
                packet_id,
                released,
            } => {
                if self.sessions.contains_key(&client_id) {
                    frame(
                        &Record::Inflight {
                            id,
                            packet_id,
                            released,
                        },
                        out,
                    );
                }
            }
            V1::Done { client_id, id } => {
                if self.sessions.contains_key(&client_id) {
                    frame(&Record::Done(id), out);
                }
            }
            V1::RelHold {
                client_id,
                packet_id,
            } => {
                if let Some(sid) = self.sid(&client_id) {
                    frame(&Record::RelHold { sid, packet_id }, out);
                }
            }
            V1::RelDone {
                client_id,
                packet_id,
            } => {
                if let Some(sid) = self.sid(&client_id) {
                    frame(&Record::RelDone { sid, packet_id }, out);
                }
            }
            V1::Will {
                client_id,
                delay,
                msg,
            } => {
                let Some(sid) = self.sid(&client_id) else {
                    return;
                };
                raw_frame(out, |w| {
                    w.u8(record::WILL);
                    w.u32(sid);
                    w.u32(delay);
                    match msg {
                        Some(m) => {
                            w.u8(1);
                            w.0.extend_from_slice(m);
                        }
                        None => w.u8(0),
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::fs::MemFs;
    use crate::persist::store::{Store, SyncPolicy, MAGIC_V1};

    /// A format 1 frame around the body `body` writes (as midge 0.1.0 did).
    fn v1_frame(out: &mut Vec<u8>, body: impl FnOnce(&mut W<'_>)) {
        raw_frame(out, body);
    }

    /// A message in `put_message`'s layout (no properties).
    fn v1_message(w: &mut W<'_>, topic: &str, payload: &[u8]) {
        w.str(topic);
        w.bytes(payload);
        w.u8(1);
        w.u8(0);
        w.u64(1_700_000_000_000);
        w.u8(0);
    }

    fn v1_session(out: &mut Vec<u8>, client_id: &str, filters: &[&str]) {
        v1_frame(out, |w| {
            w.u8(record::SESSION_PUT);
            w.str(client_id);
            w.u8(4);
            w.opt_u32(None);
            w.u32(filters.len() as u32);
            for f in filters {
                w.str(f);
                w.u8(1);
                w.opt_u32(None);
            }
        });
    }

    /// A format 1 log: one session, a subscription replaced, a queued
    /// message, a retained one.
    fn v1_log() -> Vec<u8> {
        let mut log = MAGIC_V1.to_vec();
        v1_session(&mut log, "keeper", &["old/#"]);
        v1_session(&mut log, "keeper", &["a/#"]);
        v1_frame(&mut log, |w| {
            w.u8(record::QUEUE);
            w.str("keeper");
            w.u64(5);
            v1_message(w, "a/b", b"hello");
            w.u8(1);
            w.u8(0);
            w.u32(0);
        });
        v1_frame(&mut log, |w| {
            w.u8(record::RETAIN_SET);
            v1_message(w, "r", b"kept");
        });
        log
    }

    fn write(fs: &MemFs, path: &Path, data: &[u8]) {
        let mut f = fs.open(path, true).expect("open");
        f.append(data).expect("write");
    }

    /// A crash while midge 0.1.0 appended leaves a torn last record: it is
    /// cut (the old file keeps it), everything before it is converted, and
    /// the old file is kept aside byte for byte.
    #[test]
    fn a_torn_v1_tail_is_cut_and_the_rest_converted() {
        let fs = MemFs::new();
        let path = Path::new("midge.db");
        let mut log = v1_log();
        // Half a record: a frame header promising 200 bytes, 3 of them written.
        log.extend_from_slice(&[200, 0, 0, 0, 9, 9, 9, 9, record::QUEUE, 1, 2]);
        write(&fs, path, &log);
        let file = fs.open(path, false).expect("open");
        let c = convert(&fs, &*file, path, false).expect("convert");
        drop(file);
        assert_eq!(c.records, 4);
        assert_eq!(fs.contents(&c.aside), Some(log), "old file kept as it was");
        assert!(c.aside.to_string_lossy().starts_with("midge.db.v1-"));
        assert_eq!(fs.synced(path), fs.contents(path), "the new log is synced");
        let (s, r) = Store::open_in(Box::new(fs.clone()), path, SyncPolicy::Always, false)
            .expect("open the converted log");
        let keeper = &r.sessions[&1];
        assert_eq!(keeper.client_id, "keeper");
        assert_eq!(
            keeper.subscriptions.keys().collect::<Vec<_>>(),
            ["a/#"],
            "a whole list replaced became a removal and an addition"
        );
        assert_eq!(keeper.messages[&5].len, 5);
        assert_eq!(s.load(5).map(|m| m.payload), Some(b"hello".to_vec()));
        assert_eq!(r.retained["r"].payload, b"kept");
        assert_eq!(r.last_id, 5);
    }

    /// Damage with good records after it stops the start (the log left as
    /// it was) unless recovering, which converts what precedes it.
    #[test]
    fn a_corrupt_v1_log_stops_start_unless_recovering() {
        let fs = MemFs::new();
        let path = Path::new("midge.db");
        let mut log = v1_log();
        let first_len = u32::from_le_bytes([log[8], log[9], log[10], log[11]]) as usize;
        let second = MAGIC_V1.len() + FRAME + first_len;
        log[second + FRAME + 2] ^= 0xFF;
        write(&fs, path, &log);
        let open =
            |recover| Store::open_in(Box::new(fs.clone()), path, SyncPolicy::Always, recover);
        match open(false) {
            Err(PersistError::Corrupt(_, off, _)) => assert_eq!(off, second as u64),
            Err(e) => panic!("wrong error {e}"),
            Ok(_) => panic!("corruption accepted"),
        }
        assert_eq!(fs.contents(path), Some(log.clone()), "left as it was");
        assert_eq!(fs.contents(&converted_path(path)), None);
        let (_s, r) = open(true).expect("recover");
        let keeper = &r.sessions[&1];
        assert_eq!(keeper.subscriptions.keys().collect::<Vec<_>>(), ["old/#"]);
        assert!(keeper.messages.is_empty() && r.retained.is_empty());
    }

    /// A power cut after the old file was moved aside but before the new one
    /// was moved into place: the next start finishes the job.
    #[test]
    fn a_conversion_cut_between_its_renames_is_finished() {
        let fs = MemFs::new();
        let path = Path::new("midge.db");
        write(&fs, path, &v1_log());
        let file = fs.open(path, false).expect("open");
        let c = convert(&fs, &*file, path, false).expect("convert");
        drop(file);
        // Undo the last rename, as a crash before it would have left things.
        fs.rename(path, &converted_path(path)).expect("rename");
        fs.sync_dir_of(path).expect("sync");
        let (_s, r) =
            Store::open_in(Box::new(fs.clone()), path, SyncPolicy::Always, false).expect("open");
        assert_eq!(r.sessions[&1].messages[&5].len, 5);
        assert!(fs.contents(&c.aside).is_some());
    }
}
