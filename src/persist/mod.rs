//! Persistence: retained messages and persistent sessions survive a restart and
//! a `kill -9`.
//!
//! # Design
//!
//! One append-only log file (`persistence_location/persistence_file`, default
//! `midge.db`) of records, each `[length u32][crc32 u32][kind u8][body]`
//! (little-endian), after an 8-byte header `midge\0\0` + format version 2. The
//! broker describes each durable change as a [`Record`]: a retained message set
//! or cleared; a session's metadata written or the session deleted; one
//! subscription added or removed; a message's content (once, however many
//! sessions it is queued for); a delivery of it queued for, sent to, or
//! completed by a persistent session; an incoming QoS 2 id held or released; a
//! pending will. Sessions are named by a number, not their client id. Clean
//! sessions and QoS 0 traffic write nothing. A version 1 log (midge 0.1.0) is
//! converted to version 2 at start, record by record into a new file; the old
//! file is kept beside it as `<name>.v1-<unix seconds>`.
//!
//! Records of one loop turn are buffered and written together, ending with a
//! commit marker (replay applies a batch only with its marker); with
//! `persistence_sync always` (the default) the file is `fdatasync`ed before
//! any acknowledgement that depends on them leaves (the broker sends those with
//! `Output::send_after_commit`): one sync per loop turn, however many messages
//! (group commit). With `periodic` the sync happens every `autosave_interval`
//! seconds. A failed sync is fatal for the log until restart.
//!
//! Start-up streams the log through a 64 KiB buffer into a [`Recovered`]
//! state; queued messages stay in the file (an index keeps where). A torn
//! last record (a crash mid-write, or zeros left by a preallocated block) is
//! cut off with a warning; a bad record anywhere else stops start-up naming the
//! file and offset, unless recovery is asked for (`--recover` /
//! `persistence_recover true`), which copies the damaged file aside and keeps
//! what precedes the damage. When the log has grown to four times what a fresh
//! copy would take (and past 4 MiB), it is compacted: the broker's live durable
//! state is written to a new file (queued messages copied record by record),
//! synced, renamed over the old one, and the directory synced.
//!
//! Every file operation goes through the [`fs::Fs`] seam, so tests can run the
//! log on an in-memory file system that fails syncs or loses power.

pub mod fs;
mod index;
mod legacy;
mod record;
mod store;

pub use record::{Record, StoredMessage, StoredPublisher, StoredSubscription};
pub use store::{PersistError, Recovered, RecoveredMessage, RecoveredSession, Store, SyncPolicy};
