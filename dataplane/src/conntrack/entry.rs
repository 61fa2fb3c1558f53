//! One flow's slot: 96 bytes of atomics behind a sequence lock.
//!
//! Any worker may read any entry (a reply can arrive on another worker's
//! interface), and the sweeper may recycle an entry while a reader holds its
//! index, so every field is an atomic word and a reader checks the sequence
//! number around its reads: it sees one whole version of the entry or
//! retries, and never waits for a writer. Only the worker that took the entry
//! from the free list writes its addresses; the `life` word (state, flags,
//! last-seen time) is updated by compare-and-swap from any thread.

use std::sync::atomic::{fence, AtomicU64, Ordering};

use super::state::FlowState;
use crate::flow::{Addr, Family, FlowKey, Proto};

/// Bits 0..40 of the life word: last-seen time in milliseconds since the
/// table's epoch (about 35 years).
const TS_BITS: u32 = 40;
const TS_MASK: u64 = (1 << TS_BITS) - 1;

/// A decoded life word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Life {
    pub last_seen_ms: u64,
    pub state: FlowState,
    pub flags: u8,
    /// Counts the entry's reuses (bits 56..64): a reader that found one
    /// flow here updates the life word only while it is that flow's, never
    /// the next flow's that took the entry meanwhile.
    pub generation: u8,
}

impl Life {
    /// A never-used entry's life word.
    pub const FREE: u64 = 0;

    /// The life word of a freed entry whose life word was `w`: no flow,
    /// the generation kept.
    pub const fn freed(w: u64) -> u64 {
        w & (0xff << 56)
    }

    pub fn pack(self) -> u64 {
        (self.last_seen_ms & TS_MASK)
            | u64::from(self.state as u8) << 40
            | u64::from(self.flags) << 48
            | u64::from(self.generation) << 56
    }
    pub fn unpack(w: u64) -> Life {
        Life {
            last_seen_ms: w & TS_MASK,
            state: FlowState::from_u8((w >> 40) as u8),
            flags: (w >> 48) as u8,
            generation: (w >> 56) as u8,
        }
    }
}

/// A consistent copy of one flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowRecord {
    /// The first packet's 5-tuple, as the client sent it.
    pub original: FlowKey,
    /// What original-direction packets are rewritten to. Equal to
    /// `original` for a flow without NAT.
    pub translated: FlowKey,
    /// The Service port that admitted the flow, `NO_SERVICE` for none (24
    /// bits in the entry).
    pub service: u32,
    /// The Service port's endpoints as the flow last found them
    /// (`ServiceTable::epoch`, 24 bits): when the table's differs, the
    /// flow's backend is checked again (it may have left).
    pub epoch: u32,
    pub life: Life,
}

/// `FlowRecord::service` of a flow no Service admitted.
pub const NO_SERVICE: u32 = u32::MAX;
/// Bits an entry keeps of a Service port's id and of its epoch.
pub const STAMP_BITS: u32 = 24;
const STAMP_MASK: u64 = (1 << STAMP_BITS) - 1;

/// The word of an entry that holds its protocol, family, Service port and
/// epoch (the Service port and epoch change in place: `Entry::restamp`).
const STAMP_WORD: usize = 9;

/// The Service port and epoch in an entry's stamp word.
#[inline]
pub fn stamp_of(w: &[u64; WORDS]) -> (u32, u32) {
    let s = ((w[STAMP_WORD] >> 16) & STAMP_MASK) as u32;
    let service = if u64::from(s) == STAMP_MASK {
        NO_SERVICE
    } else {
        s
    };
    (service, ((w[STAMP_WORD] >> 40) & STAMP_MASK) as u32)
}

#[inline]
fn stamp_bits(service: u32, epoch: u32) -> u64 {
    (u64::from(service) & STAMP_MASK) << 16 | (u64::from(epoch) & STAMP_MASK) << 40
}

impl FlowRecord {
    /// The key a packet has when it travels in `dir`.
    #[inline]
    pub fn key(&self, dir: super::Dir) -> FlowKey {
        match dir {
            super::Dir::Original => self.original,
            super::Dir::Reply => self.translated.reversed(),
        }
    }
    /// What a packet travelling in `dir` must be rewritten to.
    #[inline]
    pub fn rewrite_to(&self, dir: super::Dir) -> FlowKey {
        match dir {
            super::Dir::Original => self.translated,
            super::Dir::Reply => self.original.reversed(),
        }
    }
}

pub const WORDS: usize = 10;

#[repr(C, align(32))]
pub struct Entry {
    seq: AtomicU64,
    pub(super) life: AtomicU64,
    words: [AtomicU64; WORDS],
}

// The figure docs/architecture.md states: 96 bytes of entry plus four
// 8-byte index slots is 128 bytes a flow.
const _: () = assert!(std::mem::size_of::<Entry>() == 96);

// SAFETY: every field is an AtomicU64, valid as zero; an all-zero entry is
// a free one (sequence 0, life FREE).
#[allow(unsafe_code)]
unsafe impl crate::hugemem::ZeroValid for Entry {}

impl Entry {
    #[cfg(test)]
    pub fn new() -> Entry {
        Entry {
            seq: AtomicU64::new(0),
            life: AtomicU64::new(Life::FREE),
            words: Default::default(),
        }
    }

    /// Writes a whole record. The caller owns the entry (it came off the
    /// free list and is in no index slot yet).
    pub fn write(&self, rec: &FlowRecord) {
        let w = encode(rec);
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        for (slot, v) in self.words.iter().zip(w) {
            slot.store(v, Ordering::Relaxed);
        }
        self.life.store(rec.life.pack(), Ordering::Relaxed);
        self.seq.store(s.wrapping_add(2), Ordering::Release);
    }

    /// Reads a consistent record, or `None` if a writer kept it busy for
    /// every one of a few tries (the entry is being recycled: no live flow
    /// is lost by calling that a miss).
    #[inline]
    pub fn read(&self) -> Option<FlowRecord> {
        let (w, life) = self.read_words()?;
        decode(&w, life)
    }

    /// Sets the flow's Service port and epoch, if its stamp word is still
    /// `old`'s: one atomic word, alone, so readers see either stamp with
    /// the rest of the entry unchanged.
    pub fn restamp(&self, old: &[u64; WORDS], service: u32, epoch: u32) -> bool {
        let was = old[STAMP_WORD];
        let now = (was & 0xffff) | stamp_bits(service, epoch);
        self.words[STAMP_WORD]
            .compare_exchange(was, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// The raw words and life word of one consistent version.
    #[inline(always)]
    pub fn read_words(&self) -> Option<([u64; WORDS], u64)> {
        for _ in 0..4 {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 == 0 {
                let mut w = [0u64; WORDS];
                for (v, slot) in w.iter_mut().zip(&self.words) {
                    *v = slot.load(Ordering::Relaxed);
                }
                let life = self.life.load(Ordering::Relaxed);
                fence(Ordering::Acquire);
                if self.seq.load(Ordering::Relaxed) == s1 {
                    return Some((w, life));
                }
            }
            std::hint::spin_loop();
        }
        None
    }
}

/// A flow key as the words an entry stores, for comparing without decoding.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyWords {
    src: [u64; 2],
    dst: [u64; 2],
    /// sport | dport << 16
    ports: u32,
    /// proto | family << 8
    kind: u16,
}

impl KeyWords {
    #[inline]
    pub fn of(k: &FlowKey) -> KeyWords {
        KeyWords {
            src: [k.src.0 as u64, (k.src.0 >> 64) as u64],
            dst: [k.dst.0 as u64, (k.dst.0 >> 64) as u64],
            ports: u32::from(k.sport) | u32::from(k.dport) << 16,
            kind: u16::from(k.proto.number()) | (k.family as u16) << 8,
        }
    }

    /// The key a packet has in `dir`, straight from an entry's words.
    #[inline]
    pub fn from_entry(w: &[u64; WORDS], dir: super::Dir) -> KeyWords {
        let kind = w[9] as u16;
        match dir {
            super::Dir::Original => KeyWords {
                src: [w[0], w[1]],
                dst: [w[2], w[3]],
                ports: w[8] as u32,
                kind,
            },
            // The reply comes from the translated destination to the
            // translated source, ports swapped.
            super::Dir::Reply => KeyWords {
                src: [w[6], w[7]],
                dst: [w[4], w[5]],
                ports: (w[8] >> 48) as u32 | ((w[8] >> 32) as u32 & 0xffff) << 16,
                kind,
            },
        }
    }
}

/// What a packet travelling in `dir` is rewritten to, from an entry's
/// words: the translated tuple forwards, the original reversed backwards.
#[inline]
pub fn rewrite_from_words(w: &[u64; WORDS], dir: super::Dir, key: &FlowKey) -> FlowKey {
    let addr = |lo: u64, hi: u64| Addr(u128::from(lo) | u128::from(hi) << 64);
    match dir {
        super::Dir::Original => FlowKey {
            src: addr(w[4], w[5]),
            dst: addr(w[6], w[7]),
            sport: (w[8] >> 32) as u16,
            dport: (w[8] >> 48) as u16,
            ..*key
        },
        super::Dir::Reply => FlowKey {
            src: addr(w[2], w[3]),
            dst: addr(w[0], w[1]),
            sport: (w[8] >> 16) as u16,
            dport: w[8] as u16,
            ..*key
        },
    }
}

fn encode(r: &FlowRecord) -> [u64; WORDS] {
    let o = &r.original;
    let t = &r.translated;
    [
        o.src.0 as u64,
        (o.src.0 >> 64) as u64,
        o.dst.0 as u64,
        (o.dst.0 >> 64) as u64,
        t.src.0 as u64,
        (t.src.0 >> 64) as u64,
        t.dst.0 as u64,
        (t.dst.0 >> 64) as u64,
        u64::from(o.sport)
            | u64::from(o.dport) << 16
            | u64::from(t.sport) << 32
            | u64::from(t.dport) << 48,
        u64::from(o.proto.number()) | (o.family as u64) << 8 | stamp_bits(r.service, r.epoch),
    ]
}

fn decode(w: &[u64; WORDS], life: u64) -> Option<FlowRecord> {
    let addr = |lo: u64, hi: u64| Addr(u128::from(lo) | u128::from(hi) << 64);
    let proto = Proto::from_number(w[9] as u8)?;
    let family = match (w[9] >> 8) as u8 {
        4 => Family::V4,
        6 => Family::V6,
        _ => return None,
    };
    let p = w[8];
    Some(FlowRecord {
        original: FlowKey {
            src: addr(w[0], w[1]),
            dst: addr(w[2], w[3]),
            sport: p as u16,
            dport: (p >> 16) as u16,
            proto,
            family,
        },
        translated: FlowKey {
            src: addr(w[4], w[5]),
            dst: addr(w[6], w[7]),
            sport: (p >> 32) as u16,
            dport: (p >> 48) as u16,
            proto,
            family,
        },
        service: stamp_of(w).0,
        epoch: stamp_of(w).1,
        life: Life::unpack(life),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_round_trips() {
        let e = Entry::new();
        let k = FlowKey {
            src: Addr::from_v6([0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]),
            dst: Addr::from_v6([
                0x20, 0x01, 0x0d, 0xb8, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10,
            ]),
            sport: 40000,
            dport: 443,
            proto: Proto::Sctp,
            family: Family::V6,
        };
        let rec = FlowRecord {
            original: k,
            translated: FlowKey { dport: 8443, ..k },
            service: 77,
            epoch: 0xab_cdef,
            life: Life {
                last_seen_ms: 123_456,
                state: FlowState::Established,
                flags: 5,
                generation: 200,
            },
        };
        e.write(&rec);
        assert_eq!(e.read(), Some(rec));
        assert_eq!(Life::unpack(rec.life.pack()), rec.life);
    }
}
