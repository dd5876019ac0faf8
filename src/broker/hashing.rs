//! Password hashing on the loop, metered. Verifying a `$7$` password costs its
//! iteration count in PBKDF2 rounds, on the one thread that serves everyone, so
//! a flood of CONNECTs naming a user whose hash has a high iteration count could
//! starve every other client (issue 10 item 8). Two things bound it:
//!
//! * a budget of [`BUDGET`] iterations per [`WINDOW`] on average (a token
//!   bucket; one verification may overdraw it, however costly, and the next
//!   waits until the debt is paid): a CONNECT that finds no budget is held,
//!   encoded, in its connection and resumed by a wheel timer when there is; packets the client sends meanwhile wait behind it (3.1.4:
//!   clients need not wait for CONNACK). At most [`MAX_HELD`] CONNECTs are held;
//!   beyond that a CONNECT is refused as Server Busy (3.1.1: Server unavailable).
//! * a cache of credentials verified good, keyed by a keyed SHA-256 of password
//!   file, user name and password (never the password itself), so a client that
//!   reconnects costs no hashing. Cleared when the rules are reloaded.
//!
//! Nothing here sleeps or reads the clock: time comes in as `now`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::info;

use super::output::TimerKind;
use super::{Broker, ConnId, Output, Timer};
use crate::auth::PasswordFile;
use crate::logging::NOTICE;
use crate::protocol::{
    decode, encode, Connect, DecodeLimits, Decoded, Packet, ProtocolVersion, ReasonCode,
};

/// Length of one budget window.
pub const WINDOW: Duration = Duration::from_millis(100);
/// PBKDF2 iterations allowed per window: mosquitto_passwd's default hash costs
/// 101, so about 50 first-time CONNECTs per window, ~500 a second; a few
/// milliseconds of hashing per 100 ms on the CI machine.
pub const BUDGET: u64 = 5_000;
/// Most CONNECTs held waiting for hashing budget at once.
pub const MAX_HELD: usize = 256;
/// Most credentials remembered as verified (the cache is emptied when full).
const CACHE_MAX: usize = 4096;
/// Most bytes of packets held behind a waiting CONNECT.
pub const MAX_HELD_BYTES: usize = 64 * 1024;

/// What [`Hashing::check`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// Verified (now or earlier): the password is right or wrong.
    Done(bool),
    /// No budget left in this window: hold the CONNECT until [`Hashing::next_window`].
    Wait,
}

/// The hashing budget and the cache of verified credentials.
#[derive(Debug)]
pub struct Hashing {
    /// Iterations that may be spent now: refilled at [`BUDGET`] per [`WINDOW`]
    /// up to [`BUDGET`]; a costly verification may take it below zero, and
    /// nothing more is hashed until it has been paid back.
    tokens: i64,
    /// When `tokens` was last refilled.
    refilled: Option<Instant>,
    /// CONNECTs held (each with one resume timer pending).
    pub held: usize,
    /// A held CONNECT is being resumed: it goes before new ones.
    pub resuming: bool,
    /// Keyed digests of credentials verified good.
    verified: HashSet<[u8; 32]>,
    /// Random key of the digests (a fresh one per process).
    key: [u8; 32],
}

impl Default for Hashing {
    fn default() -> Self {
        let mut key = [0u8; 32];
        // Without randomness the cache is simply not used (see `digest`).
        if crate::crypto::random_bytes(&mut key).is_err() {
            key = [0; 32];
        }
        Hashing {
            tokens: BUDGET as i64,
            refilled: None,
            held: 0,
            resuming: false,
            verified: HashSet::new(),
            key,
        }
    }
}

impl Hashing {
    /// Verify `user`'s `password` against `file` if the budget allows.
    pub fn check(
        &mut self,
        now: Instant,
        file: &Arc<PasswordFile>,
        user: &str,
        password: &[u8],
    ) -> Checked {
        let digest = self.digest(file, user, password);
        if digest.is_some_and(|d| self.verified.contains(&d)) {
            return Checked::Done(true);
        }
        // Held CONNECTs go first: a new one waits behind them.
        if (self.held > 0 && !self.resuming) || !self.spend(now, file.cost(user)) {
            return Checked::Wait;
        }
        let ok = file.verify(user, password);
        if let (true, Some(d)) = (ok, digest) {
            if self.verified.len() >= CACHE_MAX {
                self.verified.clear();
            }
            self.verified.insert(d);
        }
        Checked::Done(ok)
    }

    /// When hashing may resume: at once if budget is left, else when the debt
    /// of the last verification has been paid back.
    pub fn next_window(&self, now: Instant) -> Instant {
        let debt = u64::try_from(1 - self.tokens).unwrap_or(0);
        let windows = u32::try_from(debt.div_ceil(BUDGET)).unwrap_or(u32::MAX);
        now + WINDOW * windows
    }

    /// The rules changed: forget what was verified under the old ones.
    pub fn forget_verified(&mut self) {
        self.verified = HashSet::new();
    }

    /// Take `cost` iterations from the budget, if any is left.
    fn spend(&mut self, now: Instant, cost: u64) -> bool {
        let last = *self.refilled.get_or_insert(now);
        let elapsed = now.saturating_duration_since(last);
        let earned = elapsed.as_nanos() * u128::from(BUDGET) / WINDOW.as_nanos();
        if earned > 0 {
            let earned = i64::try_from(earned).unwrap_or(i64::MAX);
            self.tokens = self.tokens.saturating_add(earned).min(BUDGET as i64);
            self.refilled = Some(now);
        }
        // Any budget left allows one verification, whatever it costs (or nobody
        // could log in as a user whose hash costs more than the budget); the
        // debt then delays the next one, so hashing takes about BUDGET
        // iterations per WINDOW on average.
        if self.tokens <= 0 {
            return false;
        }
        let cost = i64::try_from(cost.max(1)).unwrap_or(i64::MAX);
        self.tokens = self.tokens.saturating_sub(cost);
        true
    }

    /// SHA-256(key, file, user, password), lengths included so fields cannot
    /// run into each other; None without a key.
    fn digest(&self, file: &Arc<PasswordFile>, user: &str, password: &[u8]) -> Option<[u8; 32]> {
        if self.key == [0; 32] {
            return None;
        }
        let mut h = crate::crypto::Sha256::new();
        h.update(&self.key);
        h.update(&(Arc::as_ptr(file) as usize as u64).to_le_bytes());
        h.update(&(user.len() as u64).to_le_bytes());
        h.update(user.as_bytes());
        h.update(password);
        Some(h.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::PasswordHash;

    fn file(iterations: u32) -> Arc<PasswordFile> {
        let hash = PasswordHash::new(b"right", iterations).expect("hash");
        Arc::new(PasswordFile::parse(&format!("u:{hash}\n")).expect("file"))
    }

    #[test]
    fn a_costly_hash_overdraws_once_then_waits_its_debt() {
        let t0 = Instant::now();
        let f = file(4 * BUDGET as u32);
        let mut h = Hashing::default();
        assert_eq!(h.check(t0, &f, "u", b"wrong"), Checked::Done(false));
        // Three windows of debt plus the one spent: nothing more until then.
        assert_eq!(h.check(t0, &f, "u", b"wrong"), Checked::Wait);
        let resume = h.next_window(t0);
        assert_eq!(resume, t0 + WINDOW * 4);
        assert_eq!(h.check(resume - WINDOW, &f, "u", b"wrong"), Checked::Wait);
        assert_eq!(h.check(resume, &f, "u", b"wrong"), Checked::Done(false));
    }

    #[test]
    fn verified_credentials_are_cached_and_forgotten_on_reload() {
        let t0 = Instant::now();
        let f = file(4 * BUDGET as u32);
        let mut h = Hashing::default();
        assert_eq!(h.check(t0, &f, "u", b"right"), Checked::Done(true));
        // No budget left, but the right password is remembered (not a wrong one).
        assert_eq!(h.check(t0, &f, "u", b"right"), Checked::Done(true));
        assert_eq!(h.check(t0, &f, "u", b"wrong"), Checked::Wait);
        h.forget_verified();
        assert_eq!(h.check(t0, &f, "u", b"right"), Checked::Wait);
    }

    #[test]
    fn cheap_hashes_share_the_budget() {
        let t0 = Instant::now();
        let f = file(101);
        let mut h = Hashing::default();
        let passed = (0..200)
            .filter(|_| h.check(t0, &f, "u", b"wrong") == Checked::Done(false))
            .count();
        // 5,000 iterations of budget: 50 hashes of 101, then the overdraw one.
        assert_eq!(passed, 50);
    }
}

/// A CONNECT waiting for hashing budget, and the packets that followed it,
/// encoded (the decoded packets borrow the connection's read buffer).
#[derive(Debug)]
pub struct Held {
    version: ProtocolVersion,
    connect: Vec<u8>,
    later: Vec<u8>,
}

impl Held {
    /// Keep `packet` to process after the CONNECT; false when over [`MAX_HELD_BYTES`].
    pub fn push(&mut self, packet: &Packet<'_>) -> bool {
        let before = self.later.len();
        if encode(packet, self.version, &mut self.later).is_err()
            || self.later.len() > MAX_HELD_BYTES
        {
            self.later.truncate(before);
            return false;
        }
        true
    }
}

impl Broker {
    /// Hold `connect` until the next hashing window, or refuse it as busy when
    /// too many are held already.
    pub(super) fn hold_connect(
        &mut self,
        now: Instant,
        conn: ConnId,
        connect: &Connect<'_>,
        out: &mut impl Output,
    ) {
        let version = connect.version;
        let mut bytes = Vec::new();
        let encoded = encode(
            &Packet::Connect(Box::new(connect.clone())),
            version,
            &mut bytes,
        )
        .is_ok();
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !encoded || self.hashing.held >= MAX_HELD {
            info!(
                target: NOTICE,
                "Client connection from {} refused: server busy checking passwords.",
                c.peer()
            );
            // 3.1.1 has no "busy": 0x03 Server unavailable.
            self.refuse(conn, version, ReasonCode::SERVER_BUSY, out);
            return;
        }
        c.greeting_mut().held = Some(Box::new(Held {
            version,
            connect: bytes,
            later: Vec::new(),
        }));
        self.hashing.held += 1;
        out.set_timer(
            self.hashing.next_window(now),
            Timer::new(TimerKind::Resume(conn), c.serial),
        );
    }

    /// A held CONNECT's window has come: process it, then what followed it.
    pub(super) fn resume_held(
        &mut self,
        now: Instant,
        conn: ConnId,
        timer: Timer,
        out: &mut impl Output,
    ) {
        self.hashing.held = self.hashing.held.saturating_sub(1);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !timer.is_for(c.serial) {
            return;
        }
        let Some(held) = c.greeting.as_deref_mut().and_then(|g| g.held.take()) else {
            return;
        };
        let limits = DecodeLimits::new(held.version, usize::MAX);
        if let Ok(Decoded::Packet(Packet::Connect(connect), _)) = decode(&held.connect, &limits) {
            self.hashing.resuming = true;
            self.handle_connect(now, conn, &connect, out);
            self.hashing.resuming = false;
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if let Some(again) = c.held_mut() {
            // Still no budget: the packets keep waiting behind it.
            again.later = held.later;
            return;
        }
        let version = c.version;
        let mut rest: &[u8] = &held.later;
        while !rest.is_empty() && self.conns.contains_key(&conn) {
            let limits = DecodeLimits::new(version, usize::MAX);
            let Ok(Decoded::Packet(packet, used)) = decode(rest, &limits) else {
                break;
            };
            self.handle_packet(now, conn, &packet, out);
            rest = rest.get(used..).unwrap_or(&[]);
        }
    }
}
