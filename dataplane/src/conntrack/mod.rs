//! Conntrack: a fixed-capacity flow table shared by every worker.
//!
//! Layout: `capacity` entries (96 bytes each, see `entry`) and an index of
//! 8-byte slots, four per entry, in which each flow has two keys (its
//! original and its reply direction). 128 bytes a flow in all, allocated
//! once at start.
//!
//! Concurrency, with no lock anywhere:
//! - An index slot is EMPTY, a TOMBstone, a FENCE (held for an instant by
//!   the sweeper), or `tag | dir | entry`. Lookups probe linearly from the
//!   key's home slot and stop at EMPTY or after `WINDOW` slots.
//! - An insert fills its entry first, then claims, for the reply key and
//!   then for the original key, the first free slot of the window by
//!   compare-and-swap, and rescans the window after each claim. If the rescan
//!   finds the same key elsewhere (another worker inserting the same flow at
//!   the same instant), it withdraws and starts over; of any set of racing
//!   inserts at least the last to claim sees the others, so no two copies
//!   survive, and none is lost.
//! - Only the sweeper turns a tombstone back into EMPTY, and only with the
//!   next slot fenced, so that no key ever has an EMPTY slot between its
//!   home and its own slot once its insert has returned.
//! - Entries are recycled through a lock-free free list, which each worker
//!   reaches through a cache of its own (`SlotCache`, refilled 32 at a time
//!   with one CAS): a new flow writes no cache line that another worker
//!   writes, and neither does its count, kept per worker. Readers guard
//!   against recycling with the entry's sequence number, and a packet's
//!   update of the life word carries the generation it found the flow
//!   under (bumped at each reuse), so that a packet of an expired flow
//!   never changes the flow that took its entry an instant later.
//!
//! Admission: when no entry is free, a flow that is not assured (never
//! answered, or TCP that never got past its handshake: a half-open SYN,
//! a SYN answered and then reset, a closed connection) near the new
//! flow's hash is evicted for it, as nf_conntrack's early drop does; an
//! assured flow (`state::assured`) never is. With none to evict, or when the key's window
//! has no free slot, the new flow is refused (the pipeline drops and
//! counts it).

mod entry;
mod freelist;
pub mod state;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use entry::{Entry, KeyWords};
pub use entry::{FlowRecord, Life, NO_SERVICE, STAMP_BITS};
use freelist::FreeList;
pub use state::{Dir, FlowState, Timeouts};

use crate::flow::FlowKey;
use crate::hash::flow_hash;
use crate::hugemem::HugeSlice;
use crate::wire::tcp;

/// Slots a key may sit from its home; also the most a lookup reads. At a
/// load of at most one half, a window this wide is never full in practice,
/// and a miss costs at most eight cache lines.
pub const WINDOW: usize = 64;
/// Index slots per entry: two keys a flow at a load of one half.
pub const SLOTS_PER_ENTRY: usize = 4;
/// Bytes a flow costs: its entry and its share of the index.
pub const BYTES_PER_FLOW: usize = std::mem::size_of::<Entry>() + SLOTS_PER_ENTRY * 8;
/// A refresh of last-seen time is written at most this often, so that an
/// established flow's packets read the shared entry without writing it.
pub const TOUCH_GRANULARITY_MS: u64 = 1_000;

const EMPTY: u64 = 0;
const TOMB: u64 = u64::MAX;
const FENCE: u64 = u64::MAX - 1;
/// Entry indices are held in 31 bits, and the two reserved values above
/// must never be a valid slot value.
pub const MAX_CAPACITY: usize = (1 << 31) - 2;

/// A found flow: which entry, which way the packet goes, and its contents.
#[derive(Clone, Copy, Debug)]
pub struct Hit {
    pub entry: u32,
    pub dir: Dir,
    pub record: FlowRecord,
    /// This call created the flow (an insert that found it instead, made
    /// by another worker an instant before, says false).
    pub created: bool,
}

/// A packet's flow, as `hit` found it: which way the packet goes, what it
/// is rewritten to, and the flow's Service stamp (checked against the
/// Service table's by the caller).
#[derive(Clone, Copy, Debug)]
pub struct Found {
    pub dir: Dir,
    pub to: FlowKey,
    pub service: u32,
    pub epoch: u32,
    pub entry: u32,
    pub generation: u8,
}

/// Why an insert was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertError {
    /// Every entry is in use.
    Full,
    /// The key's probe window has no free slot.
    WindowFull,
    /// The reply tuple is already another flow's: two clients' flows would
    /// come back on the same tuple, so this one cannot be translated.
    ReplyClash,
    /// Racing inserts of the same flow kept withdrawing (vanishingly rare;
    /// counted so that it can be seen if it ever is not).
    Contended,
}

/// Outcome counters of the table itself (the pipeline keeps per-worker
/// ones for packets).
#[derive(Default, Debug)]
pub struct TableStats {
    pub inserted: AtomicU64,
    pub expired: AtomicU64,
    pub insert_races: AtomicU64,
    pub tombstones_cleared: AtomicU64,
    /// Flows never answered, freed to make room for a new flow in a full
    /// table (nf_conntrack's early drop).
    pub evicted: AtomicU64,
    /// Flows ended because their backend left its Service (`end`).
    pub ended: AtomicU64,
}

/// Free entries one worker holds for its next inserts: taken from the
/// shared free list `REFILL` at a time, given back to when an insert
/// withdraws. It belongs to one table (a cache met with another table
/// starts over empty). The slack it costs: up to `CACHE` (64) entries a
/// worker that no other worker can use meanwhile, so a table of N entries
/// may refuse a new flow once it holds N - 64 x workers (0.01% of a
/// million-flow table on a 2-core node).
pub struct SlotCache {
    table: u64,
    slots: [u32; CACHE],
    n: usize,
    /// The worker's counter of inserts in the table (`Conntrack::workers`).
    stat: usize,
}

/// Entries a cache holds at most, and takes at a time.
const CACHE: usize = 64;
const REFILL: usize = 32;
/// Per-worker insert counters a table keeps (more workers share them).
const STAT_SLOTS: usize = 64;

impl Default for SlotCache {
    fn default() -> Self {
        SlotCache {
            table: 0,
            slots: [0; CACHE],
            n: 0,
            stat: 0,
        }
    }
}

/// A counter on a cache line of its own.
#[repr(align(128))]
#[derive(Default)]
struct Padded(AtomicU64);

/// Tables made so far: each table's id, which caches are checked against.
static TABLES: AtomicU64 = AtomicU64::new(1);

pub struct Conntrack {
    entries: HugeSlice<Entry>,
    id: u64,
    /// Inserts per worker (each worker writes its own line).
    workers: Box<[Padded]>,
    next_stat: AtomicUsize,
    index: HugeSlice<AtomicU64>,
    mask: usize,
    free: FreeList,
    seed: u64,
    timeouts: Timeouts,
    epoch: Instant,
    sweeping: AtomicBool,
    sweep_cursor: AtomicUsize,
    pub stats: TableStats,
}

#[inline]
fn slot_value(tag: u32, dir: Dir, entry: u32) -> u64 {
    u64::from(tag) << 32 | u64::from(dir as u8) << 31 | u64::from(entry + 1)
}

#[inline]
fn slot_parts(v: u64) -> (u32, Dir, u32) {
    let dir = if v >> 31 & 1 == 1 {
        Dir::Reply
    } else {
        Dir::Original
    };
    ((v >> 32) as u32, dir, ((v as u32) & 0x7fff_ffff) - 1)
}

enum Claim {
    Done,
    Duplicate,
    NoRoom,
}

impl Conntrack {
    /// Allocates a table for `capacity` flows, with a random hash seed.
    pub fn new(capacity: usize, timeouts: Timeouts) -> Conntrack {
        Self::with_seed(capacity, timeouts, crate::hash::random_seed())
    }

    pub fn with_seed(capacity: usize, timeouts: Timeouts, seed: u64) -> Conntrack {
        let capacity = capacity.clamp(1, MAX_CAPACITY);
        let slots = (capacity * SLOTS_PER_ENTRY).next_power_of_two();
        Conntrack {
            // Zeroed memory is free entries and EMPTY slots.
            entries: HugeSlice::zeroed(capacity),
            id: TABLES.fetch_add(1, Ordering::Relaxed),
            workers: (0..STAT_SLOTS).map(|_| Padded::default()).collect(),
            next_stat: AtomicUsize::new(0),
            index: HugeSlice::zeroed(slots),
            mask: slots - 1,
            free: FreeList::full(capacity as u32),
            seed,
            timeouts,
            epoch: Instant::now(),
            sweeping: AtomicBool::new(false),
            sweep_cursor: AtomicUsize::new(0),
            stats: TableStats::default(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.entries.len()
    }
    /// The table's memory (entries, index and free list), all faulted in
    /// when it was made, and where it came from.
    pub fn memory(&self) -> (usize, crate::hugemem::Backing) {
        let bytes = self.entries.bytes() + self.index.bytes() + self.free.bytes();
        let backing = if self.entries.backing() == crate::hugemem::Backing::Heap
            || self.index.backing() == crate::hugemem::Backing::Heap
        {
            crate::hugemem::Backing::Heap
        } else {
            crate::hugemem::Backing::Mapped
        };
        (bytes, backing)
    }
    /// Live flows (approximate while inserts and expiries run).
    pub fn len(&self) -> usize {
        // Two monotonic counters rather than a live count that every
        // insert and expiry would write: one shared write per insert.
        let ins = self.inserted();
        let exp = self.stats.expired.load(Ordering::Relaxed);
        let ev = self.stats.evicted.load(Ordering::Relaxed);
        let end = self.stats.ended.load(Ordering::Relaxed);
        ins.saturating_sub(exp + ev + end) as usize
    }
    /// Flows inserted so far: the workers' counts and the rest.
    pub fn inserted(&self) -> u64 {
        self.stats.inserted.load(Ordering::Relaxed)
            + self
                .workers
                .iter()
                .map(|w| w.0.load(Ordering::Relaxed))
                .sum::<u64>()
    }

    /// A free entry for an insert: from the worker's cache (refilled from
    /// the shared list in a batch), or from the shared list.
    #[inline]
    fn take_slot(&self, cache: &mut Option<&mut SlotCache>) -> Option<u32> {
        let Some(c) = cache else {
            return self.free.pop();
        };
        if c.table != self.id {
            // A fresh cache, or one of another table: its slots are not
            // this table's.
            **c = SlotCache {
                table: self.id,
                stat: self.next_stat.fetch_add(1, Ordering::Relaxed) % STAT_SLOTS,
                ..SlotCache::default()
            };
        }
        if c.n == 0 {
            c.n = self.free.pop_batch(&mut c.slots[..REFILL]);
            // Popped in list order; taken from the end.
            c.slots[..c.n].reverse();
        }
        if c.n == 0 {
            return None;
        }
        c.n -= 1;
        Some(c.slots[c.n])
    }

    /// An entry an insert took and did not use, back where it came from.
    fn give_back(&self, cache: &mut Option<&mut SlotCache>, idx: u32) {
        match cache {
            Some(c) if c.table == self.id && c.n < CACHE => {
                c.slots[c.n] = idx;
                c.n += 1;
            }
            _ => self.free.push(idx),
        }
    }

    /// Gives a cache's entries back to the shared list: for a core that
    /// stops using this table while the table lives on.
    pub fn return_cache(&self, cache: &mut SlotCache) {
        if cache.table == self.id {
            for &idx in &cache.slots[..cache.n] {
                self.free.push(idx);
            }
        }
        cache.n = 0;
    }

    /// Counts an insert: on the worker's own line, or the shared one.
    #[inline]
    fn count_insert(&self, cache: &Option<&mut SlotCache>) {
        match cache {
            Some(c) => self.workers[c.stat].0.fetch_add(1, Ordering::Relaxed),
            None => self.stats.inserted.fetch_add(1, Ordering::Relaxed),
        };
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }
    /// Milliseconds since the table was made: the clock of `last_seen_ms`.
    /// Workers read it once per burst, not per packet.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    #[inline]
    fn home(&self, key: &FlowKey) -> (u32, usize) {
        self.split(self.hash(key))
    }

    #[inline]
    fn split(&self, h: u64) -> (u32, usize) {
        ((h >> 32) as u32, h as usize & self.mask)
    }

    /// The index hash of `key`: compute once per packet, then prefetch and
    /// look up with it.
    #[inline]
    pub fn hash(&self, key: &FlowKey) -> u64 {
        flow_hash(key, self.seed)
    }

    /// First step of a burst: ask for the key's home index slots.
    #[inline]
    pub fn prefetch_index(&self, hash: u64) {
        let (_, pos) = self.split(hash);
        crate::prefetch::read(&self.index[pos]);
    }

    /// Second step: the home slots are in cache by now; ask for the entry
    /// the first slot with the key's tag points at. Returns false when the
    /// slots show no such entry: the packet is most likely a new flow.
    #[inline]
    pub fn prefetch_entry(&self, hash: u64) -> bool {
        let (tag, mut pos) = self.split(hash);
        for _ in 0..8 {
            let v = self.index[pos].load(Ordering::Relaxed);
            if v == EMPTY {
                return false;
            }
            if v != TOMB && v != FENCE && (v >> 32) as u32 == tag {
                let (_, _, idx) = slot_parts(v);
                if let Some(e) = self.entries.get(idx as usize) {
                    let p = e as *const Entry as *const u8;
                    crate::prefetch::read(p);
                    crate::prefetch::read(p.wrapping_add(64));
                }
                return true;
            }
            pos = (pos + 1) & self.mask;
        }
        true
    }

    /// Reads slot value `v` as a reference to a live flow whose key is `key`.
    #[inline]
    fn matches(&self, v: u64, tag: u32, key: &FlowKey) -> Option<Hit> {
        if v == EMPTY || v == TOMB || v == FENCE {
            return None;
        }
        let (t, dir, idx) = slot_parts(v);
        if t != tag {
            return None;
        }
        let record = self.entries.get(idx as usize)?.read()?;
        (record.life.state != FlowState::Free && record.key(dir) == *key).then_some(Hit {
            entry: idx,
            dir,
            record,
            created: false,
        })
    }

    /// Finds the flow a packet with `key` belongs to, in either direction.
    #[inline]
    pub fn lookup(&self, key: &FlowKey) -> Option<Hit> {
        self.lookup_hashed(key, self.hash(key))
    }

    /// `lookup` with the hash already computed (`hash(key)`).
    #[inline]
    pub fn lookup_hashed(&self, key: &FlowKey, hash: u64) -> Option<Hit> {
        let (tag, mut pos) = self.split(hash);
        for _ in 0..WINDOW {
            let v = self.index[pos].load(Ordering::Acquire);
            if v == EMPTY {
                return None;
            }
            if let Some(hit) = self.matches(v, tag, key) {
                return Some(hit);
            }
            pos = (pos + 1) & self.mask;
        }
        None
    }

    /// The packet path's lookup: finds the flow of a packet with `key`,
    /// records the packet (state from `tcp_flags`, refresh), and returns
    /// what the packet must be rewritten to. Compares the entry's raw words
    /// and decodes only the answer. `None`: no live flow (a miss).
    #[inline]
    pub fn hit(
        &self,
        key: &FlowKey,
        hash: u64,
        tcp_flags: Option<u8>,
        now_ms: u64,
    ) -> Option<Found> {
        let (tag, mut pos) = self.split(hash);
        let want = KeyWords::of(key);
        for _ in 0..WINDOW {
            let v = self.index[pos].load(Ordering::Acquire);
            if v == EMPTY {
                return None;
            }
            if v != TOMB && v != FENCE && (v >> 32) as u32 == tag {
                let (_, dir, idx) = slot_parts(v);
                if let Some(e) = self.entries.get(idx as usize) {
                    if let Some((w, life)) = e.read_words() {
                        if KeyWords::from_entry(&w, dir) == want {
                            let l = Life::unpack(life);
                            if l.state == FlowState::Free {
                                return None;
                            }
                            // A TCP later fragment carries no flags: no
                            // state change, no refresh.
                            if !(key.proto == crate::flow::Proto::Tcp && tcp_flags.is_none()) {
                                self.touch_entry(e, l.generation, dir, tcp_flags, now_ms)?;
                            }
                            let (service, epoch) = entry::stamp_of(&w);
                            return Some(Found {
                                dir,
                                to: entry::rewrite_from_words(&w, dir, key),
                                service,
                                epoch,
                                entry: idx,
                                generation: l.generation,
                            });
                        }
                    }
                }
            }
            pos = (pos + 1) & self.mask;
        }
        None
    }

    /// Admits a new flow: `original` as the client sent its first packet,
    /// `translated` what that packet is rewritten to. If the flow already
    /// exists (another worker inserted it first) that flow is returned.
    pub fn insert(
        &self,
        original: FlowKey,
        translated: FlowKey,
        service: u32,
        state: FlowState,
        flags: u8,
        now_ms: u64,
    ) -> Result<Hit, InsertError> {
        let hashes = (self.hash(&original), self.hash(&translated.reversed()));
        self.insert_hashed(
            original,
            translated,
            hashes,
            (service, 0),
            state,
            flags,
            now_ms,
            false,
            None,
        )
    }

    /// Asks for what an insert of a flow whose reply key hashes to
    /// `reply_hash` will touch: the reply key's home slot and the entry on
    /// top of the free list (and the `ahead` after it, which an initial or
    /// freshly swept list holds in order).
    #[inline]
    pub fn prefetch_insert(&self, reply_hash: u64, ahead: usize, cache: &SlotCache) {
        let (_, pos) = self.split(reply_hash);
        crate::prefetch::read(&self.index[pos]);
        // The entry this insert will take: the cache's `ahead`-th from the
        // top, when it holds that many.
        if cache.table == self.id && ahead < cache.n {
            if let Some(e) = self.entries.get(cache.slots[cache.n - 1 - ahead] as usize) {
                let p = e as *const Entry as *const u8;
                crate::prefetch::read(p);
                crate::prefetch::read(p.wrapping_add(64));
            }
        }
    }

    /// `insert` with the hashes of the original and reply keys computed;
    /// `after_miss` says the caller looked the original key up an instant
    /// ago and found nothing; `cache`, the calling worker's free entries
    /// (`None`: the shared list, for callers off the packet path).
    #[allow(clippy::too_many_arguments)]
    pub fn insert_hashed(
        &self,
        original: FlowKey,
        translated: FlowKey,
        (orig_hash, reply_hash): (u64, u64),
        (service, epoch): (u32, u32),
        state: FlowState,
        flags: u8,
        now_ms: u64,
        after_miss: bool,
        mut cache: Option<&mut SlotCache>,
    ) -> Result<Hit, InsertError> {
        let reply = translated.reversed();
        for attempt in 0..16 {
            // The caller has just missed, so the first attempt goes straight
            // to claiming: a copy inserted meanwhile by another worker shows
            // in the claim's scan, and the next attempt's look finds it. The
            // reply key needs no look either: claiming it finds a clash.
            if attempt > 0 || !after_miss {
                if let Some(hit) = self.lookup_hashed(&original, orig_hash) {
                    return Ok(hit);
                }
            }
            let idx = match self.take_slot(&mut cache) {
                Some(i) => i,
                None if self.evict_unanswered(orig_hash) => {
                    self.take_slot(&mut cache).ok_or(InsertError::Full)?
                }
                None => return Err(InsertError::Full),
            };
            let before = Life::unpack(self.entries[idx as usize].life.load(Ordering::Acquire));
            let record = FlowRecord {
                original,
                translated,
                service,
                epoch,
                life: Life {
                    last_seen_ms: now_ms,
                    state,
                    flags,
                    generation: before.generation.wrapping_add(1),
                },
            };
            self.entries[idx as usize].write(&record);
            // The reply key first, so that whoever finds the original key
            // (a racing insert's loser, a lookup) finds a flow whose reply
            // is already in place.
            if original != reply {
                match self.claim(&reply, reply_hash, Dir::Reply, idx) {
                    Claim::Done => {}
                    Claim::NoRoom => {
                        self.release(idx, &mut cache);
                        return Err(InsertError::WindowFull);
                    }
                    Claim::Duplicate => {
                        self.release(idx, &mut cache);
                        // The same flow, inserted by another worker this
                        // instant (its original key is on its way): wait
                        // for it. Gone already (both inserts withdrew at
                        // once): try again. Another flow's reply: a clash.
                        match self.lookup_hashed(&reply, reply_hash) {
                            Some(o) if o.record.original == original => {
                                self.stats.insert_races.fetch_add(1, Ordering::Relaxed);
                                if let Some(hit) =
                                    self.await_original(&original, orig_hash, &reply, reply_hash)
                                {
                                    return Ok(hit);
                                }
                                continue;
                            }
                            Some(_) => return Err(InsertError::ReplyClash),
                            None => {
                                self.stats.insert_races.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                        }
                    }
                }
            }
            match self.claim(&original, orig_hash, Dir::Original, idx) {
                Claim::Done => {}
                Claim::Duplicate => {
                    if original != reply {
                        self.unlink(&reply, Dir::Reply, idx);
                    }
                    self.release(idx, &mut cache);
                    self.stats.insert_races.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Claim::NoRoom => {
                    if original != reply {
                        self.unlink(&reply, Dir::Reply, idx);
                    }
                    self.release(idx, &mut cache);
                    return Err(InsertError::WindowFull);
                }
            }
            self.count_insert(&cache);
            return Ok(Hit {
                entry: idx,
                dir: Dir::Original,
                record,
                created: true,
            });
        }
        Err(InsertError::Contended)
    }

    /// Another worker is inserting this very flow and has placed its reply
    /// key: its original key follows within nanoseconds. Waits for it, a
    /// bounded while, rather than racing it again; `None` if the other
    /// insert gave up (its reply key is gone). Only two inserts of one new
    /// flow at the same instant come here, never a lookup: readers never
    /// wait. After a short spin it yields, so that a descheduled winner
    /// (unpinned threads, as in tests) can finish.
    #[cold]
    fn await_original(
        &self,
        original: &FlowKey,
        orig_hash: u64,
        reply: &FlowKey,
        reply_hash: u64,
    ) -> Option<Hit> {
        for round in 0..10_000u32 {
            if let Some(hit) = self.lookup_hashed(original, orig_hash) {
                return Some(hit);
            }
            let pending = self
                .lookup_hashed(reply, reply_hash)
                .is_some_and(|o| o.record.original == *original);
            if !pending {
                return None;
            }
            if round % 64 == 63 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        None
    }

    /// Puts `key -> (dir, idx)` into the index (see the module comment).
    fn claim(&self, key: &FlowKey, hash: u64, dir: Dir, idx: u32) -> Claim {
        let (tag, home) = self.split(hash);
        let val = slot_value(tag, dir, idx);
        'attempt: for _ in 0..16 {
            let mut cand = None;
            let mut pos = home;
            for _ in 0..WINDOW {
                let v = self.index[pos].load(Ordering::Acquire);
                if v == EMPTY {
                    cand.get_or_insert((pos, v));
                    break;
                }
                if v == TOMB {
                    cand.get_or_insert((pos, v));
                } else if self.matches(v, tag, key).is_some() {
                    return Claim::Duplicate;
                }
                pos = (pos + 1) & self.mask;
            }
            let Some((at, seen)) = cand else {
                return Claim::NoRoom;
            };
            if self.index[at]
                .compare_exchange(seen, val, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue 'attempt;
            }
            // Rescan: an EMPTY before our slot means the sweeper cleared
            // the way between our scan and our claim, and lookups would stop
            // short of us; the same key elsewhere means a racing insert.
            let mut pos = home;
            let mut passed = false;
            for _ in 0..WINDOW {
                if pos == at {
                    passed = true;
                } else {
                    let v = self.index[pos].load(Ordering::Acquire);
                    if v == EMPTY {
                        if passed {
                            return Claim::Done;
                        }
                        self.withdraw(at, val);
                        continue 'attempt;
                    }
                    if self.matches(v, tag, key).is_some() {
                        self.withdraw(at, val);
                        return Claim::Duplicate;
                    }
                }
                pos = (pos + 1) & self.mask;
            }
            return Claim::Done;
        }
        Claim::Duplicate
    }

    fn withdraw(&self, at: usize, val: u64) {
        let _ = self.index[at].compare_exchange(val, TOMB, Ordering::AcqRel, Ordering::Relaxed);
    }

    /// Removes the slot that holds `key -> (dir, idx)`, if any.
    fn unlink(&self, key: &FlowKey, dir: Dir, idx: u32) {
        let (tag, mut pos) = self.home(key);
        let val = slot_value(tag, dir, idx);
        for _ in 0..WINDOW {
            let v = self.index[pos].load(Ordering::Acquire);
            if v == EMPTY {
                return;
            }
            if v == val {
                self.withdraw(pos, val);
                return;
            }
            pos = (pos + 1) & self.mask;
        }
    }

    /// Returns an entry to the free list; it is in no index slot.
    fn release(&self, idx: u32, cache: &mut Option<&mut SlotCache>) {
        let life = &self.entries[idx as usize].life;
        life.store(Life::freed(life.load(Ordering::Relaxed)), Ordering::Release);
        self.give_back(cache, idx);
    }

    /// Records a packet of a found flow: new state from the TCP flags (or
    /// the direction, for datagrams), and a fresh last-seen time at most
    /// once a `TOUCH_GRANULARITY_MS`. Returns the state after the packet,
    /// or `None` if the flow died under the caller (treat as a miss).
    #[inline]
    pub fn touch(&self, hit: &Hit, tcp_flags: Option<u8>, now_ms: u64) -> Option<FlowState> {
        self.touch_entry(
            &self.entries[hit.entry as usize],
            hit.record.life.generation,
            hit.dir,
            tcp_flags,
            now_ms,
        )
    }

    #[inline(always)]
    fn touch_entry(
        &self,
        e: &Entry,
        generation: u8,
        dir: Dir,
        tcp_flags: Option<u8>,
        now_ms: u64,
    ) -> Option<FlowState> {
        // The common case, checked before anything else (the state
        // machine's loop-invariant work would otherwise be hoisted ahead of
        // it): an established flow's plain segment or datagram, seen
        // recently, already marked answered.
        let l = Life::unpack(e.life.load(Ordering::Relaxed));
        if l.state == FlowState::Established
            && l.generation == generation
            && tcp_flags.is_none_or(|f| f & (tcp::SYN | tcp::FIN | tcp::RST) == 0)
            && (dir == Dir::Original || l.flags & state::flags::SEEN_REPLY != 0)
            && now_ms.saturating_sub(l.last_seen_ms) < TOUCH_GRANULARITY_MS
        {
            return Some(l.state);
        }
        self.touch_slow(e, generation, dir, tcp_flags, now_ms)
    }

    #[cold]
    #[inline(never)]
    fn touch_slow(
        &self,
        e: &Entry,
        generation: u8,
        dir: Dir,
        tcp_flags: Option<u8>,
        now_ms: u64,
    ) -> Option<FlowState> {
        let life = &e.life;
        let mut old = life.load(Ordering::Relaxed);
        loop {
            let l = Life::unpack(old);
            // Freed, or freed and taken by another flow since the caller
            // found it: this packet's flow is gone (a miss).
            if l.state == FlowState::Free || l.generation != generation {
                return None;
            }
            let (state, flags) = match tcp_flags {
                Some(f) => state::tcp_next(l.state, l.flags, dir, f),
                None => state::datagram_next(l.state, l.flags, dir),
            };
            let last_seen_ms = if now_ms.saturating_sub(l.last_seen_ms) >= TOUCH_GRANULARITY_MS
                || state != l.state
            {
                now_ms
            } else {
                l.last_seen_ms
            };
            let new = Life {
                last_seen_ms,
                state,
                flags,
                generation,
            }
            .pack();
            if new == old {
                return Some(state);
            }
            match life.compare_exchange_weak(old, new, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(state),
                Err(cur) => old = cur,
            }
        }
    }

    /// Expires flows idle past their timeout among the next `budget`
    /// entries, and clears tombstones in the matching share of the index.
    /// One sweeper at a time: a second concurrent call returns at once.
    /// Returns how many flows expired.
    pub fn sweep(&self, now_ms: u64, budget: usize) -> usize {
        if self.sweeping.swap(true, Ordering::Acquire) {
            return 0;
        }
        let cap = self.entries.len();
        let start = self.sweep_cursor.load(Ordering::Relaxed) % cap;
        let n = budget.min(cap);
        let mut expired = 0;
        for i in 0..n {
            let idx = (start + i) % cap;
            if self.expire_one(idx as u32, now_ms) {
                expired += 1;
            }
        }
        self.sweep_cursor
            .store((start + n) % cap, Ordering::Relaxed);
        // The index share of this step: slots proportional to entries.
        let slots = self.index.len();
        let per = slots.div_ceil(cap);
        let from = start * per;
        self.clear_tombstones(from, n * per);
        self.sweeping.store(false, Ordering::Release);
        self.stats
            .expired
            .fetch_add(expired as u64, Ordering::Relaxed);
        expired
    }

    /// On a full table, frees one flow that is not assured (never answered:
    /// a half-open SYN, a flow picked up mid-stream that nothing answers, a
    /// one-way datagram; or TCP that never got past its handshake or has
    /// closed), found among the flows whose keys sit in `hash`'s probe
    /// window, as nf_conntrack's early drop looks near the new flow's
    /// bucket. An assured flow is never evicted for a new one. Returns
    /// whether one was freed.
    #[cold]
    fn evict_unanswered(&self, hash: u64) -> bool {
        let (_, home) = self.split(hash);
        let mut pos = home;
        for _ in 0..WINDOW {
            let v = self.index[pos].load(Ordering::Acquire);
            pos = (pos + 1) & self.mask;
            if v == EMPTY || v == TOMB || v == FENCE {
                continue;
            }
            let (_, _, idx) = slot_parts(v);
            let Some(e) = self.entries.get(idx as usize) else {
                continue;
            };
            let old = e.life.load(Ordering::Acquire);
            let l = Life::unpack(old);
            if l.state == FlowState::Free || state::assured(l.state, l.flags) {
                continue;
            }
            let Some(rec) = e.read() else { continue };
            // A packet of the flow since `old` (a reply, say) wins.
            if self.free_flow(idx, old, &rec) {
                self.stats.evicted.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        }
        false
    }

    /// Records that `found`'s flow was checked against Service port
    /// `service` at `epoch` (its backend is still there). Lost if the flow
    /// changed meanwhile: the next packet checks again.
    pub fn restamp(&self, found: &Found, service: u32, epoch: u32) {
        let Some(e) = self.entries.get(found.entry as usize) else {
            return;
        };
        let Some((w, life)) = e.read_words() else {
            return;
        };
        if Life::unpack(life).generation == found.generation
            && entry::stamp_of(&w) == (found.service, found.epoch)
        {
            e.restamp(&w, service, epoch);
        }
    }

    /// Ends the flow in entry `idx`, found under `generation` (its backend
    /// left the Service): out of the index, its entry freed; nothing if
    /// the entry holds another flow by now. Counted as ended, not expired.
    pub fn end(&self, idx: u32, generation: u8) -> bool {
        let ended = self.free_live(idx, Some(generation));
        if ended {
            self.stats.ended.fetch_add(1, Ordering::Relaxed);
        }
        ended
    }

    /// Withdraws a flow that the caller created for a packet a later stage
    /// then dropped (its TTL ran out, it had no way out): a dropped packet
    /// leaves no state, as in the kernel, where such an entry is never
    /// confirmed. Returns whether it was there.
    pub fn forget(&self, idx: u32) -> bool {
        let forgotten = self.free_live(idx, None);
        if forgotten {
            self.stats.expired.fetch_add(1, Ordering::Relaxed);
        }
        forgotten
    }

    /// Frees the flow in entry `idx` if there is one (of `generation`, if
    /// given: not a flow that took the entry since). Gone, or touched by
    /// another packet of it this instant: false (that packet is the
    /// flow's now, and the sweeper sees to it).
    fn free_live(&self, idx: u32, generation: Option<u8>) -> bool {
        let Some(e) = self.entries.get(idx as usize) else {
            return false;
        };
        let Some(rec) = e.read() else { return false };
        let old = e.life.load(Ordering::Acquire);
        let l = Life::unpack(old);
        l.state != FlowState::Free
            && generation.is_none_or(|g| g == l.generation)
            && self.free_flow(idx, old, &rec)
    }

    /// Frees flow `rec` in entry `idx` if its life word is still `old`:
    /// out of the index, back on the free list. False if a packet changed
    /// the flow since `old` was read (it wins).
    fn free_flow(&self, idx: u32, old: u64, rec: &FlowRecord) -> bool {
        let e = &self.entries[idx as usize];
        if e.life
            .compare_exchange(old, Life::freed(old), Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        self.unlink(&rec.original, Dir::Original, idx);
        let reply = rec.translated.reversed();
        if reply != rec.original {
            self.unlink(&reply, Dir::Reply, idx);
        }
        self.free.push(idx);
        true
    }

    fn expire_one(&self, idx: u32, now_ms: u64) -> bool {
        let e = &self.entries[idx as usize];
        let old = e.life.load(Ordering::Acquire);
        let l = Life::unpack(old);
        if l.state == FlowState::Free {
            return false;
        }
        let Some(rec) = e.read() else { return false };
        let timeout = self.timeouts.for_flow(rec.original.proto, l.state, l.flags);
        if now_ms.saturating_sub(l.last_seen_ms) <= timeout {
            return false;
        }
        // A packet that refreshed the flow since we looked wins.
        self.free_flow(idx, old, &rec)
    }

    /// Turns tombstones back into EMPTY where the next slot is EMPTY,
    /// walking down so that a run of tombstones collapses in one pass.
    fn clear_tombstones(&self, from: usize, count: usize) {
        let mut cleared = 0u64;
        for k in (0..count).rev() {
            let i = (from + k) & self.mask;
            let next = (i + 1) & self.mask;
            if self.index[i].load(Ordering::Relaxed) != TOMB {
                continue;
            }
            if self.index[next]
                .compare_exchange(EMPTY, FENCE, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            if self.index[i]
                .compare_exchange(TOMB, EMPTY, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                cleared += 1;
            }
            self.index[next].store(EMPTY, Ordering::Release);
        }
        self.stats
            .tombstones_cleared
            .fetch_add(cleared, Ordering::Relaxed);
    }

    /// A consistent copy of up to `limit` live flows, for inspection. Walks
    /// the whole entry array: not for the packet path.
    pub fn flows(&self, limit: usize) -> Vec<FlowRecord> {
        self.entries
            .iter()
            .filter_map(Entry::read)
            .filter(|r| r.life.state != FlowState::Free)
            .take(limit)
            .collect()
    }
}

#[cfg(test)]
mod tests;
