//! One client session (3.1.2.4 / 4.1): what outlives a connection when the client
//! asked for it: subscriptions, messages in flight in both directions, the queue
//! for the offline or slow client, a pending will. Pure data plus bookkeeping;
//! the broker decides when to send.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use super::client_id::ClientId;
use super::message::Message;
use super::replay::Replay;
use super::topic_index::FilterId;
use super::ConnId;
use crate::protocol::{PacketId, ProtocolVersion, QoS};

/// A message on its way to one subscriber.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The shared message.
    pub msg: Arc<Message>,
    /// QoS of this delivery: min(published, granted).
    pub qos: QoS,
    /// RETAIN flag to send.
    pub retain: bool,
    /// Subscription identifiers of the matching subscriptions (v5).
    pub subscription_ids: Vec<u32>,
    /// Number in the persistence log; 0 = not stored.
    pub id: u64,
}

/// A message waiting in a session's queue: in memory, or (for an offline
/// session with persistence on) only on disk, with a small index entry here.
#[derive(Debug, Clone)]
pub enum Queued {
    /// Held in RAM.
    Ram(Outgoing),
    /// In the persistence log only; loaded back when it is sent.
    Disk(Spilled),
}

/// What RAM keeps of a message that lives in the persistence log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spilled {
    /// Its number in the log.
    pub id: u64,
    /// Payload bytes (for `max_queued_bytes`).
    pub len: u32,
    /// Delivery QoS.
    pub qos: QoS,
    /// RETAIN flag to send.
    pub retain: bool,
    /// Subscription identifiers to send.
    pub subscription_ids: Box<[u32]>,
    /// Asked of the shell (`Output::request_load`), not yet answered.
    pub requested: bool,
}

impl Queued {
    /// Payload bytes.
    pub fn payload_len(&self) -> usize {
        match self {
            Queued::Ram(o) => o.msg.payload.len(),
            Queued::Disk(d) => d.len as usize,
        }
    }

    /// Delivery QoS.
    pub fn qos(&self) -> QoS {
        match self {
            Queued::Ram(o) => o.qos,
            Queued::Disk(d) => d.qos,
        }
    }

    /// Stored in the log (a number is assigned).
    pub fn id(&self) -> u64 {
        match self {
            Queued::Ram(o) => o.id,
            Queued::Disk(d) => d.id,
        }
    }
}

/// A QoS 1/2 delivery sent and not yet completed.
#[derive(Debug, Clone)]
pub struct Inflight {
    /// Its packet identifier.
    pub packet_id: PacketId,
    /// What was sent.
    pub out: Outgoing,
    /// QoS 2: PUBREC received and PUBREL sent; waiting for PUBCOMP.
    pub released: bool,
    /// Resumed session: not yet re-sent on this connection, because the
    /// client's Receive Maximum had no room for it [MQTT-3.3.4-9]. It keeps its
    /// packet id (exactly-once for QoS 2 depends on it) and goes out as acks
    /// free the window, before anything queued.
    pub needs_resend: bool,
}

/// A will kept with the session until it is due (3.1.2.5, 3.1.3.2.2).
#[derive(Debug, Clone)]
pub struct PendingWill {
    /// The will message.
    pub msg: Arc<Message>,
    /// Will Delay Interval (v5), seconds; 0 publishes at once.
    pub delay: u32,
}

/// How long a session outlives its connection: MQTT 5's Session Expiry
/// Interval, seconds in a four-byte integer (3.1.2.11.2), where 0 ends it with
/// the connection and `0xFFFFFFFF` means it never expires. A 3.1.1 session's
/// `persistent_client_expiration` is held the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionExpiry(u32);

impl SessionExpiry {
    /// The session ends with its connection.
    pub const ENDS_WITH_CONNECTION: SessionExpiry = SessionExpiry(0);
    /// The session never expires.
    pub const NEVER: SessionExpiry = SessionExpiry(u32::MAX);

    /// From the interval as a client sends it (0xFFFFFFFF: never).
    pub fn from_secs(secs: u32) -> SessionExpiry {
        SessionExpiry(secs)
    }

    /// From a duration (`None`: never). Rounded up to whole seconds, so a
    /// short one does not become "ends with the connection", and held to
    /// 136 years, the longest a finite interval can be.
    pub fn from_duration(d: Option<Duration>) -> SessionExpiry {
        let Some(d) = d else {
            return SessionExpiry::NEVER;
        };
        let secs = d.as_secs() + u64::from(d.subsec_nanos() != 0);
        SessionExpiry(
            u32::try_from(secs)
                .unwrap_or(u32::MAX - 1)
                .min(u32::MAX - 1),
        )
    }

    /// The session ends with its connection.
    pub fn ends_with_connection(self) -> bool {
        self == SessionExpiry::ENDS_WITH_CONNECTION
    }

    /// How long it outlives its connection; `None` = forever.
    pub fn duration(self) -> Option<Duration> {
        (self != SessionExpiry::NEVER).then(|| Duration::from_secs(u64::from(self.0)))
    }

    /// As the persistence log stores it: seconds, `None` = never.
    pub fn stored(self) -> Option<u32> {
        (self != SessionExpiry::NEVER).then_some(self.0)
    }

    /// From the log's form (see [`Self::stored`]).
    pub fn from_stored(secs: Option<u32>) -> SessionExpiry {
        secs.map_or(SessionExpiry::NEVER, SessionExpiry)
    }
}

/// A collection that costs one pointer until something is put in it: most
/// sessions (idle, QoS 0) never queue or hold a message in flight, and every
/// session carries three of these. Reads of an empty one see a shared empty
/// collection; the first write allocates.
#[derive(Debug, Default)]
pub struct Lazy<T: 'static>(Option<Box<T>>);

/// A shared empty value for [`Lazy`]'s reads.
pub trait Empty: Default + 'static {
    /// The empty value.
    fn empty() -> &'static Self;
    /// Holds nothing.
    fn holds_nothing(&self) -> bool;
}

/// The messages in flight to a client and what is counted of them: one box,
/// made for the first one (see [`Lazy`]). Reads as the entries, in sending
/// order; changes that add, remove or mark entries go through [`Session`]'s
/// methods, which keep the counts.
#[derive(Debug, Default)]
pub struct Window {
    entries: VecDeque<Inflight>,
    /// Payload bytes of the entries (for `max_inflight_bytes`).
    bytes: usize,
    /// How many entries are marked `needs_resend`: every ack asks whether any
    /// are, and counting them by walking the window cost two scans of it per
    /// acknowledged message.
    resends: usize,
    /// How many ids from the session's next one on are known not to be in
    /// flight: [`Session::allocate_packet_id`] hands them out without
    /// searching the window, which it then searches once per run of free ids
    /// rather than once per message (ids go out in order, so a run is nearly
    /// the whole id space). Entries added inside the run shorten it.
    free_ahead: u16,
}

impl Empty for Window {
    fn empty() -> &'static Self {
        static E: Window = Window {
            entries: VecDeque::new(),
            bytes: 0,
            resends: 0,
            free_ahead: 0,
        };
        &E
    }
    fn holds_nothing(&self) -> bool {
        self.entries.is_empty()
    }
}

impl std::ops::Deref for Window {
    type Target = VecDeque<Inflight>;
    fn deref(&self) -> &VecDeque<Inflight> {
        &self.entries
    }
}

impl std::ops::DerefMut for Window {
    fn deref_mut(&mut self) -> &mut VecDeque<Inflight> {
        &mut self.entries
    }
}

/// The messages waiting for room in the in-flight window or for the client to
/// return, and their payload bytes: one box, made for the first one. Reads as
/// the entries, oldest first; [`Session::push_queued`] and
/// [`Session::pop_queued`] keep the count.
#[derive(Debug, Default)]
pub struct Queue {
    entries: VecDeque<Queued>,
    /// Payload bytes of the entries (for `max_queued_bytes`).
    bytes: usize,
}

impl Empty for Queue {
    fn empty() -> &'static Self {
        static E: Queue = Queue {
            entries: VecDeque::new(),
            bytes: 0,
        };
        &E
    }
    fn holds_nothing(&self) -> bool {
        self.entries.is_empty()
    }
}

impl std::ops::Deref for Queue {
    type Target = VecDeque<Queued>;
    fn deref(&self) -> &VecDeque<Queued> {
        &self.entries
    }
}

impl std::ops::DerefMut for Queue {
    fn deref_mut(&mut self) -> &mut VecDeque<Queued> {
        &mut self.entries
    }
}

impl<T: Empty> std::ops::Deref for Lazy<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.0.as_deref().unwrap_or_else(|| T::empty())
    }
}

impl<T: Empty> std::ops::DerefMut for Lazy<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.0.get_or_insert_with(Box::default)
    }
}

impl<T: Empty> From<T> for Lazy<T> {
    fn from(v: T) -> Self {
        Lazy(Some(Box::new(v)))
    }
}

impl<T: Empty> Lazy<T> {
    /// The value, mutably, if one was made (never allocates).
    pub fn get_mut(&mut self) -> Option<&mut T> {
        self.0.as_deref_mut()
    }

    /// Give the memory back once the collection is empty again.
    pub fn release_if_empty(&mut self) {
        if self.0.as_deref().is_some_and(T::holds_nothing) {
            self.0 = None;
        }
    }
}

/// In-flight windows larger than this get a bitmap of their packet ids.
pub const IDS_INDEXED: usize = 64;

/// One bit per packet id (8 KiB), for large in-flight windows.
pub struct IdBitmap([u64; 1024]);

impl IdBitmap {
    fn get(&self, id: PacketId) -> bool {
        self.0[usize::from(id >> 6)] & (1 << (id & 63)) != 0
    }

    fn set(&mut self, id: PacketId, on: bool) {
        let word = &mut self.0[usize::from(id >> 6)];
        if on {
            *word |= 1 << (id & 63);
        } else {
            *word &= !(1 << (id & 63));
        }
    }
}

impl std::fmt::Debug for IdBitmap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n: u32 = self.0.iter().map(|w| w.count_ones()).sum();
        write!(f, "IdBitmap({n} ids)")
    }
}

/// One filter a session holds, as [`Filters`] gives it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilterRef<'a> {
    /// A plain filter, by its place in the subscription index (which keeps
    /// the one copy of its text: `SubscriptionIndex::filter`).
    Plain(FilterId),
    /// A shared subscription's full `$share/{group}/{filter}`.
    Shared(&'a str),
}

/// One filter of a [`Filters`] list (see [`FilterRef`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Held {
    /// A plain filter's place in the subscription index.
    Plain(FilterId),
    /// A shared subscription's full text.
    Shared(Box<str>),
}

impl Held {
    fn as_ref(&self) -> FilterRef<'_> {
        match self {
            Held::Plain(id) => FilterRef::Plain(*id),
            Held::Shared(f) => FilterRef::Shared(f),
        }
    }
}

impl From<FilterRef<'_>> for Held {
    fn from(f: FilterRef<'_>) -> Held {
        match f {
            FilterRef::Plain(id) => Held::Plain(id),
            FilterRef::Shared(f) => Held::Shared(f.into()),
        }
    }
}

/// The filters a session holds, in the order subscribed. Plain filters are
/// named by their place in the subscription index, not copied: the common
/// session holds one, inline (4 bytes and a tag, no allocation). Anything
/// else (more filters, a shared subscription) goes to a boxed list.
#[derive(Debug, Default)]
pub enum Filters {
    /// None.
    #[default]
    None,
    /// One plain filter.
    One(FilterId),
    /// Any other list (not empty).
    Many(Box<Vec<Held>>),
}

impl Filters {
    /// How many filters are held.
    pub fn len(&self) -> usize {
        match self {
            Filters::None => 0,
            Filters::One(_) => 1,
            Filters::Many(v) => v.len(),
        }
    }

    /// No filter is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The filters, in the order subscribed.
    pub fn iter(&self) -> impl Iterator<Item = FilterRef<'_>> + '_ {
        let (one, many): (Option<FilterRef<'_>>, &[Held]) = match self {
            Filters::None => (None, &[]),
            Filters::One(id) => (Some(FilterRef::Plain(*id)), &[]),
            Filters::Many(v) => (None, v),
        };
        one.into_iter().chain(many.iter().map(Held::as_ref))
    }

    /// Add `filter` (the caller knows it is not held yet).
    pub fn push(&mut self, filter: FilterRef<'_>) {
        match (&mut *self, filter) {
            (Filters::None, FilterRef::Plain(id)) => *self = Filters::One(id),
            (Filters::None, f) => *self = Filters::Many(Box::new(vec![f.into()])),
            (Filters::One(first), f) => {
                *self = Filters::Many(Box::new(vec![Held::Plain(*first), f.into()]))
            }
            (Filters::Many(v), f) => v.push(f.into()),
        }
    }

    /// Keep only the filters for which `keep` says true.
    pub fn retain(&mut self, mut keep: impl FnMut(FilterRef<'_>) -> bool) {
        match self {
            Filters::None => {}
            Filters::One(id) => {
                if !keep(FilterRef::Plain(*id)) {
                    *self = Filters::None;
                }
            }
            Filters::Many(v) => {
                v.retain(|f| keep(f.as_ref()));
                match v.as_slice() {
                    [] => *self = Filters::None,
                    [Held::Plain(id)] => *self = Filters::One(*id),
                    _ => {}
                }
            }
        }
    }
}

/// The parts of a session that an idle or QoS 0 client never uses, in one
/// box made on first write (reads of a session without one see an empty
/// value): a connected client with one subscription and nothing in flight
/// pays one pointer for all of them.
#[derive(Debug, Default)]
pub struct Extra {
    /// Incoming QoS 2 packet ids received (PUBREC sent), awaiting PUBREL.
    pub awaiting_rel: Vec<PacketId>,
    /// Retained messages still to send for recent subscriptions, oldest first
    /// (kept across a reconnect of a persistent session, not across a restart).
    pub replays: VecDeque<Replay>,
    /// The ids in `inflight` as a bitmap, kept while more than [`IDS_INDEXED`]
    /// are in flight, so a free id is found without searching the window.
    ids_in_use: Option<Box<IdBitmap>>,
    /// Messages dropped because the queue was full.
    pub dropped: u64,
    /// True while dropping: the overflow is logged once per episode.
    pub dropping: bool,
    /// Its identity as the publisher of retained messages
    /// (`check_retain_source`), made on first use; cleared at each CONNECT
    /// (the user name or listener may change).
    pub publisher: Option<Arc<super::retained::Publisher>>,
    /// Tell the shell once the offline session holds this many messages
    /// (queued and in flight); 0 = not watched. See `Broker::watch_queue`.
    pub queue_watch: u32,
}

impl Empty for Extra {
    fn empty() -> &'static Self {
        static E: Extra = Extra {
            awaiting_rel: Vec::new(),
            replays: VecDeque::new(),
            ids_in_use: None,
            dropped: 0,
            dropping: false,
            publisher: None,
            queue_watch: 0,
        };
        &E
    }
    /// Nothing but the count of dropped messages, which is kept for
    /// the session's lifetime only while there is a box anyway.
    fn holds_nothing(&self) -> bool {
        self.awaiting_rel.is_empty()
            && self.replays.is_empty()
            && self.ids_in_use.is_none()
            && !self.dropping
            && self.publisher.is_none()
            && self.queue_watch == 0
            && self.dropped == 0
    }
}

/// One session. Its fields are as narrow as their ranges allow (a
/// connection, listener or window as 32 or 16 bits, the expiry in seconds):
/// every client carries one.
#[derive(Debug)]
pub struct Session {
    /// Client identifier (the client-id table keeps no copy of it).
    pub client_id: ClientId,
    /// Protocol version of the last connection.
    pub version: ProtocolVersion,
    /// The connection attached now ([`NO_CONN`]: none). See [`Session::conn`].
    conn: u32,
    /// Changes whenever a timer of this session must be forgotten.
    pub serial: u64,
    /// How long the session outlives its connection.
    pub expiry: SessionExpiry,
    /// Filters this session holds in the subscription index (to remove them when
    /// the session ends).
    pub subscriptions: Filters,
    /// Outgoing QoS 1/2 messages awaiting acknowledgement, in sending order.
    pub inflight: Lazy<Window>,
    /// Messages waiting for room in the in-flight window or for the client to return.
    pub queue: Lazy<Queue>,
    /// Next packet id to try.
    next_packet_id: PacketId,
    /// Will message of the current or last connection. Kept apart from its
    /// delay (see [`Session::will`]): together they were 16 bytes with 4 of
    /// padding.
    will: Option<Arc<Message>>,
    /// Its Will Delay Interval (v5), seconds; 0 publishes at once.
    will_delay: u32,
    /// Most QoS 1/2 messages in flight to the client (our limit and its
    /// Receive Maximum). Never more than the 65,535 packet ids anyway
    /// [MQTT-2.2.1-3], so `u16::MAX` stands for no limit of ours.
    pub send_window: u16,
    /// The client's Maximum Packet Size (v5), if it gave one (zero is a
    /// protocol error, 3.1.2.11.4).
    pub max_packet_size: Option<NonZeroU32>,
    /// User name the client authenticated as (for ACL checks).
    pub username: Option<Box<str>>,
    /// Listener of the last connection (whose ACL applies). See [`Session::listener`].
    listener: u32,
    /// Its number in the persistence log; 0 = it has no records there.
    pub sid: u32,
    /// What most sessions never use, boxed on first use (see [`Extra`]).
    pub extra: Lazy<Extra>,
}

/// [`Session::conn`]'s "no connection": connection ids are the server's slab
/// keys, bounded by the open-file limit, far below it.
const NO_CONN: u32 = u32::MAX;

impl Session {
    /// A new, empty session.
    pub fn new(client_id: &str, version: ProtocolVersion, serial: u64) -> Session {
        Session {
            client_id: client_id.into(),
            version,
            conn: NO_CONN,
            serial,
            expiry: SessionExpiry::ENDS_WITH_CONNECTION,
            subscriptions: Filters::None,
            inflight: Lazy::default(),
            queue: Lazy::default(),
            next_packet_id: 1,
            will: None,
            will_delay: 0,
            send_window: u16::MAX,
            extra: Lazy::default(),
            max_packet_size: None,
            username: None,
            listener: 0,
            sid: 0,
        }
    }

    /// The connection attached now, if any.
    pub fn conn(&self) -> Option<ConnId> {
        (self.conn != NO_CONN).then_some(self.conn as ConnId)
    }

    /// Attach connection `conn` (`None`: detach).
    pub fn set_conn(&mut self, conn: Option<ConnId>) {
        self.conn = conn.and_then(|c| u32::try_from(c).ok()).unwrap_or(NO_CONN);
    }

    /// Listener number of the last connection.
    pub fn listener(&self) -> usize {
        self.listener as usize
    }

    /// Set the listener number. Listener numbers are indexes into the
    /// configuration's listeners, or [`crate::auth::BRIDGE_LISTENER`] (which
    /// is `u32::MAX`); one that does not fit (none can) reads back as a
    /// number with no listener, whose rules are closed, never as the bridges'.
    pub fn set_listener(&mut self, listener: usize) {
        self.listener = u32::try_from(listener).unwrap_or(u32::MAX - 1);
    }

    /// The will, if one is pending.
    pub fn will(&self) -> Option<PendingWill> {
        self.will.as_ref().map(|msg| PendingWill {
            msg: Arc::clone(msg),
            delay: self.will_delay,
        })
    }

    /// A will is pending.
    pub fn has_will(&self) -> bool {
        self.will.is_some()
    }

    /// Replace the will (`None`: no will).
    pub fn set_will(&mut self, will: Option<PendingWill>) {
        (self.will, self.will_delay) = match will {
            Some(w) => (Some(w.msg), w.delay),
            None => (None, 0),
        };
    }

    /// Take the will out.
    pub fn take_will(&mut self) -> Option<PendingWill> {
        let w = self.will();
        self.set_will(None);
        w
    }

    /// Payload bytes of the queued messages.
    pub fn queued_bytes(&self) -> usize {
        self.queue.bytes
    }

    /// A free packet identifier for an outgoing message [MQTT-2.2.1-3]: never 0,
    /// never one in flight. `None` when all 65,535 are in use.
    ///
    /// Small windows are searched; beyond [`IDS_INDEXED`] in flight a bitmap
    /// answers, so a window of thousands (`max_inflight_messages 0`) costs
    /// O(1) per id instead of a search of the window per id (issue 10 item 8).
    pub fn allocate_packet_id(&mut self) -> Option<PacketId> {
        if self.inflight.len() > IDS_INDEXED && self.extra.ids_in_use.is_none() {
            let mut map = Box::new(IdBitmap([0; 1024]));
            for i in self.inflight.iter() {
                map.set(i.packet_id, true);
            }
            self.extra.ids_in_use = Some(map);
        }
        if let Some(w) = self.inflight.get_mut() {
            if w.free_ahead > 0 {
                w.free_ahead -= 1;
                let id = self.next_packet_id;
                self.next_packet_id = next_packet_id(id);
                return Some(id);
            }
        }
        for _ in 0..u16::MAX {
            let id = self.next_packet_id;
            self.next_packet_id = next_packet_id(id);
            let used = match &self.extra.ids_in_use {
                Some(map) => map.get(id),
                None => self.inflight.iter().any(|i| i.packet_id == id),
            };
            if !used {
                if self.extra.ids_in_use.is_none() {
                    // The free run that follows: up to the nearest id in flight.
                    let next = self.next_packet_id;
                    if let Some(w) = self.inflight.get_mut() {
                        w.free_ahead = w
                            .entries
                            .iter()
                            .map(|i| ids_between(next, i.packet_id))
                            .min()
                            .unwrap_or(0);
                    }
                }
                return Some(id);
            }
        }
        None
    }

    /// The bitmap of ids in flight, if kept (never allocates the extra box).
    fn ids_map(&mut self) -> Option<&mut IdBitmap> {
        self.extra.get_mut()?.ids_in_use.as_deref_mut()
    }

    /// Stop keeping the bitmap of ids in flight.
    fn drop_ids_map(&mut self) {
        if let Some(e) = self.extra.get_mut() {
            e.ids_in_use = None;
        }
    }

    /// Put a message in flight (after its id came from [`Self::allocate_packet_id`]).
    pub fn push_inflight(&mut self, i: Inflight) {
        if let Some(map) = self.ids_map() {
            map.set(i.packet_id, true);
        }
        let next = self.next_packet_id;
        let w = &mut *self.inflight;
        w.free_ahead = w.free_ahead.min(ids_between(next, i.packet_id));
        w.bytes += i.out.msg.payload.len();
        w.resends += usize::from(i.needs_resend);
        w.entries.push_back(i);
    }

    /// Put an entry taken out with [`Self::remove_inflight`] back at `pos`.
    pub fn insert_inflight(&mut self, pos: usize, i: Inflight) {
        if let Some(map) = self.ids_map() {
            map.set(i.packet_id, true);
        }
        let next = self.next_packet_id;
        let w = &mut *self.inflight;
        w.free_ahead = w.free_ahead.min(ids_between(next, i.packet_id));
        w.bytes += i.out.msg.payload.len();
        w.resends += usize::from(i.needs_resend);
        w.entries.insert(pos, i);
    }

    /// Take the in-flight entry at `pos` out of the window.
    pub fn remove_inflight(&mut self, pos: usize) -> Option<Inflight> {
        let w = self.inflight.get_mut()?;
        let i = w.entries.remove(pos)?;
        w.bytes = w.bytes.saturating_sub(i.out.msg.payload.len());
        w.resends -= usize::from(i.needs_resend);
        if self.inflight.len() <= IDS_INDEXED / 2 {
            self.drop_ids_map();
        } else if let Some(map) = self.ids_map() {
            map.set(i.packet_id, false);
        }
        Some(i)
    }

    /// Room for one more QoS 1/2 message in flight (entries still waiting to be
    /// re-sent count: they go first): under the message window, and under
    /// `max_bytes` payload bytes (`max_inflight_bytes`; 0 = no byte limit).
    /// As mosquitto, the byte bound is checked before the message joins, so a
    /// message larger than the bound still goes when nothing else is in flight.
    pub fn window_open(&self, max_bytes: usize) -> bool {
        self.inflight.len() < usize::from(self.send_window)
            && (max_bytes == 0 || self.inflight.bytes < max_bytes)
    }

    /// Messages sent on this connection and not yet acknowledged.
    pub fn outstanding(&self) -> usize {
        self.inflight.len() - self.inflight.resends
    }

    /// In-flight entries still to be sent again on this connection.
    pub fn resends(&self) -> usize {
        self.inflight.resends
    }

    /// A new connection: every in-flight entry is to be sent again.
    pub fn mark_all_for_resend(&mut self) {
        let Some(w) = self.inflight.get_mut() else {
            return;
        };
        for i in w.entries.iter_mut() {
            i.needs_resend = true;
        }
        w.resends = w.entries.len();
    }

    /// The in-flight entry with `id`, if any.
    pub fn inflight_position(&self, id: PacketId) -> Option<usize> {
        self.inflight.iter().position(|i| i.packet_id == id)
    }

    /// Queue a message at the back.
    pub fn push_queued(&mut self, q: Queued) {
        let queue = &mut *self.queue;
        queue.bytes += q.payload_len();
        queue.entries.push_back(q);
    }

    /// Take the next queued message.
    pub fn pop_queued(&mut self) -> Option<Queued> {
        let queue = self.queue.get_mut()?;
        let q = queue.entries.pop_front()?;
        queue.bytes -= q.payload_len();
        Some(q)
    }

    /// Return the memory of flows that are over (an idle session holds none).
    pub fn release_idle(&mut self) {
        if self.inflight.len() <= IDS_INDEXED / 2 {
            self.drop_ids_map();
        }
        self.inflight.release_if_empty();
        self.queue.release_if_empty();
        self.extra.release_if_empty();
    }

    /// The client went away: queued messages that are in the persistence log
    /// leave RAM, keeping only their index entry.
    pub fn spill(&mut self) {
        let Some(queue) = self.queue.get_mut() else {
            return;
        };
        for q in queue.entries.iter_mut() {
            if let Queued::Ram(o) = q {
                if o.id != 0 {
                    *q = Queued::Disk(Spilled {
                        id: o.id,
                        len: u32::try_from(o.msg.payload.len()).unwrap_or(u32::MAX),
                        qos: o.qos,
                        retain: o.retain,
                        subscription_ids: std::mem::take(&mut o.subscription_ids)
                            .into_boxed_slice(),
                        requested: false,
                    });
                }
            }
        }
    }
}

/// The packet id after `id` (0 is never one [MQTT-2.2.1-3]).
fn next_packet_id(id: PacketId) -> PacketId {
    if id == u16::MAX {
        1
    } else {
        id + 1
    }
}

/// How many ids the allocator hands out from `from` before it reaches `to`,
/// on the ring of ids 1 to 65,535 (0 when `to` is `from`).
fn ids_between(from: PacketId, to: PacketId) -> u16 {
    let ring = u32::from(u16::MAX);
    let d = (u32::from(to) + ring - u32::from(from)) % ring;
    // Below the ring's size: fits.
    d as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qos1_message() -> Arc<Message> {
        Arc::new(Message {
            topic: "t".into(),
            payload: Vec::new(),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: None,
            received: std::time::Instant::now(),
        })
    }

    fn in_flight(msg: &Arc<Message>, packet_id: PacketId, needs_resend: bool) -> Inflight {
        Inflight {
            packet_id,
            out: Outgoing {
                msg: Arc::clone(msg),
                qos: QoS::AtLeastOnce,
                retain: false,
                subscription_ids: Vec::new(),
                id: 0,
            },
            released: false,
            needs_resend,
        }
    }

    /// A QoS 1 flow with a small window never makes the extra box (its ids
    /// are searched, not kept in a bitmap), and a large one gives it back.
    #[test]
    fn small_windows_need_no_extra_box() {
        let mut s = Session::new("c", ProtocolVersion::V311, 1);
        let msg = qos1_message();
        let entry = |packet_id| in_flight(&msg, packet_id, false);
        for n in 1..=IDS_INDEXED + 1 {
            let id = s.allocate_packet_id().expect("id");
            s.push_inflight(entry(id));
            assert!(s.extra.0.is_none(), "{n} in flight");
        }
        let _ = s.allocate_packet_id();
        assert!(s.extra.ids_in_use.is_some(), "bitmap past the threshold");
        while s.remove_inflight(0).is_some() {}
        s.release_idle();
        assert!(s.extra.0.is_none(), "given back once idle");
    }

    /// The expiry as seconds: 0 and 0xFFFFFFFF mean what MQTT 5 says
    /// (3.1.2.11.2), a configured duration never rounds down to "ends with the
    /// connection", and the log's form (`None` = never) reads back the same.
    #[test]
    fn session_expiry_in_seconds() {
        assert!(SessionExpiry::from_secs(0).ends_with_connection());
        assert_eq!(SessionExpiry::from_secs(u32::MAX), SessionExpiry::NEVER);
        assert_eq!(SessionExpiry::NEVER.duration(), None);
        assert_eq!(
            SessionExpiry::from_secs(90).duration(),
            Some(Duration::from_secs(90))
        );
        assert_eq!(SessionExpiry::from_duration(None), SessionExpiry::NEVER);
        let short = SessionExpiry::from_duration(Some(Duration::from_millis(1)));
        assert_eq!(short.duration(), Some(Duration::from_secs(1)));
        let long = SessionExpiry::from_duration(Some(Duration::from_secs(1 << 40)));
        assert_ne!(long, SessionExpiry::NEVER, "finite stays finite");
        for e in [
            SessionExpiry::from_secs(0),
            SessionExpiry::from_secs(7),
            long,
        ] {
            assert_eq!(SessionExpiry::from_stored(e.stored()), e);
        }
        assert_eq!(SessionExpiry::NEVER.stored(), None);
    }

    #[test]
    fn filters_hold_one_inline_and_more_in_a_list() {
        use super::super::topic_index::{Subscription, SubscriptionIndex};
        // Ids from a real index: a session cannot make one up.
        let mut ix = SubscriptionIndex::new();
        let sub = Subscription {
            options: Default::default(),
            identifier: None,
        };
        let mut id = |f: &str| {
            ix.subscribe(f, 1usize, sub);
            ix.id(f).map(FilterRef::Plain)
        };
        let (Some(ab), Some(c), Some(d)) = (id("a/b"), id("c/#"), id("d")) else {
            panic!("filters held");
        };
        let mut f = Filters::default();
        assert!(f.is_empty() && f.iter().next().is_none());
        f.push(ab);
        assert!(matches!(f, Filters::One(_)));
        assert_eq!(f.iter().collect::<Vec<_>>(), [ab]);
        f.push(c);
        f.push(FilterRef::Shared("$share/g/x"));
        f.push(d);
        assert_eq!(f.len(), 4);
        let shared = FilterRef::Shared("$share/g/x");
        assert_eq!(f.iter().collect::<Vec<_>>(), [ab, c, shared, d]);
        f.retain(|x| x != c);
        assert_eq!(f.iter().collect::<Vec<_>>(), [ab, shared, d]);
        f.retain(|x| x != ab && x != shared);
        assert!(matches!(f, Filters::One(_)), "back inline");
        assert_eq!(f.iter().collect::<Vec<_>>(), [d]);
        f.retain(|_| false);
        assert!(f.is_empty() && matches!(f, Filters::None));
        // A lone shared subscription is kept in the list.
        f.push(shared);
        assert_eq!((f.len(), f.iter().next()), (1, Some(shared)));
        f.retain(|_| false);
        assert!(f.is_empty());
        assert_eq!(std::mem::size_of::<Filters>(), 16);
    }

    #[test]
    fn packet_ids_skip_zero_and_ids_in_flight() {
        let mut s = Session::new("c", ProtocolVersion::V311, 1);
        let msg = qos1_message();
        let out = Outgoing {
            msg,
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: Vec::new(),
            id: 0,
        };
        s.next_packet_id = u16::MAX;
        assert_eq!(s.allocate_packet_id(), Some(u16::MAX));
        assert_eq!(s.allocate_packet_id(), Some(1));
        s.inflight.push_back(Inflight {
            packet_id: 2,
            out,
            released: false,
            needs_resend: false,
        });
        assert_eq!(s.allocate_packet_id(), Some(3), "2 is in flight");
    }

    /// The run of free ids the allocator remembers never hands out an id in
    /// flight: against a search of the window for every id, through acks out
    /// of order, re-sends put back in place and a counter coming round to ids
    /// still held [MQTT-2.2.1-3].
    #[test]
    fn remembered_free_ids_match_a_search() {
        let mut s = Session::new("c", ProtocolVersion::V5, 1);
        let msg = qos1_message();
        let mut rng = crate::test_rng::Rng(0x2545_F491_4F6C_DD1Du64);
        let mut next = || rng.next();
        let mut searched = 0;
        for round in 0..200_000u32 {
            // The id a search of the window would find.
            let mut want = s.next_packet_id;
            while s.inflight.iter().any(|i| i.packet_id == want) {
                want = next_packet_id(want);
            }
            let fast = s.extra.ids_in_use.is_none() && s.inflight.free_ahead > 0;
            searched += usize::from(!fast);
            let id = s.allocate_packet_id().expect("a free id");
            assert_eq!(id, want, "round {round}");
            s.push_inflight(in_flight(&msg, id, false));
            // Keep 1-40 in flight; one entry stays for ~70,000 rounds, so the
            // counter comes round to it.
            while s.inflight.len() > 1 + (next() % 40) as usize {
                let len = s.inflight.len();
                let pos = if round % 70_000 < 69_000 {
                    1 + (next() as usize) % (len - 1)
                } else {
                    (next() as usize) % len
                };
                let i = s.remove_inflight(pos).expect("entry");
                if next() % 8 == 0 {
                    s.insert_inflight(pos, i);
                    break;
                }
            }
        }
        assert!(searched < 20_000, "searched the window {searched} times");
    }

    /// Issue 10 item 8: with `max_inflight_messages 0` the window can hold all
    /// 65,535 ids; filling it searched the window for every id (quadratic: ~2e9
    /// comparisons). Now ids come from a bitmap; this fills the whole window,
    /// frees ids out of order, and checks the bitmap stays exact.
    #[test]
    fn packet_ids_for_a_full_window_are_found_without_searching() {
        let mut s = Session::new("c", ProtocolVersion::V5, 1);
        let msg = qos1_message();
        let entry = |packet_id| in_flight(&msg, packet_id, false);
        let start = std::time::Instant::now();
        for n in 1..=u16::MAX {
            let id = s.allocate_packet_id().expect("a free id");
            assert_eq!(id, n);
            s.push_inflight(entry(id));
        }
        // Quadratic search took seconds here; the bitmap takes milliseconds.
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(s.allocate_packet_id(), None, "all 65,535 in use");
        // Free every third id from the middle out; exactly those come back.
        let freed: Vec<u16> = (1..=u16::MAX).filter(|id| id % 3 == 0).collect();
        for id in &freed {
            let pos = s.inflight_position(*id).expect("in flight");
            assert_eq!(s.remove_inflight(pos).map(|i| i.packet_id), Some(*id));
        }
        let mut again: Vec<u16> = (0..freed.len())
            .map(|_| s.allocate_packet_id().expect("freed id"))
            .collect();
        again.sort_unstable();
        assert_eq!(again, freed);
        // Back below the threshold the bitmap goes and the search takes over.
        while s.inflight.len() > 3 {
            s.remove_inflight(0);
        }
        assert!(s.extra.ids_in_use.is_none());
        let held: Vec<u16> = s.inflight.iter().map(|i| i.packet_id).collect();
        let id = s.allocate_packet_id().expect("free id");
        assert!(!held.contains(&id));
    }

    /// Every ack asks how many messages are really outstanding and whether any
    /// wait to be sent again; that is a count kept as entries come and go, not
    /// two walks of the window per ack. It must match a walk in every state.
    #[test]
    fn resend_count_follows_the_window() {
        let mut s = Session::new("c", ProtocolVersion::V5, 1);
        let msg = qos1_message();
        let entry = |packet_id, needs_resend| in_flight(&msg, packet_id, needs_resend);
        let walk = |s: &Session| s.inflight.iter().filter(|i| i.needs_resend).count();
        let check = |s: &Session| {
            assert_eq!(s.resends(), walk(s));
            assert_eq!(s.outstanding(), s.inflight.len() - walk(s));
        };
        // Restored from the log: to be sent again.
        s.push_inflight(entry(1, true));
        s.push_inflight(entry(2, false));
        check(&s);
        s.mark_all_for_resend();
        assert_eq!(s.resends(), 2);
        check(&s);
        // Re-sent: taken out, cleared, put back.
        let mut i = s.remove_inflight(0).expect("entry");
        check(&s);
        i.needs_resend = false;
        s.insert_inflight(0, i);
        assert_eq!(s.resends(), 1);
        check(&s);
        // Acknowledged while still marked (an ack for a message the client
        // had before the reconnect).
        s.remove_inflight(1);
        assert_eq!(s.resends(), 0);
        check(&s);
        s.push_inflight(entry(3, false));
        assert_eq!(s.outstanding(), 2);
        check(&s);
    }
}
