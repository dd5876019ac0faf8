//! Persistence: retained messages and persistent sessions survive a restart and
//! a `kill -9`.
//!
//! # Design
//!
//! One append-only log file (`persistence_location/persistence_file`, default
//! `midge.db`) of records, each `[length u32][crc32 u32][kind u8][body]`
//! (little-endian), after an 8-byte header `midge\0\0` + format version 1. The
//! broker describes each durable change as a [`Record`] (a retained message set
//! or cleared; a session's metadata written; a message queued for, sent to, or
//! completed by a persistent session; an incoming QoS 2 id held or released).
//! Clean sessions and QoS 0 traffic write nothing.
//!
//! Records of one loop turn are buffered and written together; with
//! `persistence_sync always` (the default) the file is `fdatasync`ed *before* the
//! server flushes that turn's output, so no PUBACK/PUBREC leaves for a message
//! that is not on disk: one sync per loop turn, however many messages (group
//! commit). With `periodic` the sync happens every `autosave_interval` seconds.
//!
//! Start-up replays the log into a [`Recovered`] state. A torn last record (a
//! crash mid-write) is cut off with a warning; a bad record anywhere else stops
//! start-up naming the file and offset, unless recovery is asked for
//! (`--recover` / `persistence_recover true`), which keeps what precedes it.
//! When the log has grown to four times what a fresh copy would take (and past
//! 4 MiB), it is compacted: the broker's live durable state is written to a new
//! file, synced, and renamed over the old one (a pause proportional to the live
//! state, measured in the README).
//!
//! Messages queued for offline sessions are kept in RAM as well as in the log.
//!
//! Every file operation goes through the [`fs::Fs`] seam, so tests can run the
//! log on an in-memory file system that fails syncs or loses power.

pub mod fs;
mod record;
mod store;

pub use record::{Record, StoredMessage, StoredSubscription};
pub use store::{PersistError, Recovered, RecoveredMessage, RecoveredSession, Store, SyncPolicy};
