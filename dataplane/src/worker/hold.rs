//! Later fragments that arrive before their first: the burst function
//! cannot know their ports yet, so the worker holds a copy (a few slots,
//! for a short while) and gives each back to the burst function once its
//! first fragment has passed and the fragment table knows its flow, as a
//! kernel's reassembly would have waited for it. What does not fit, or
//! waits too long, is counted.

use super::Source;
use crate::decode::{decode, Decoded, Frag};
use crate::frag::FragTable;
use crate::pipeline::Ingress;

/// Fragments held at once, per worker.
pub const SLOTS: usize = 16;
/// The largest fragment held (a standard MTU's frames; jumbo fragments
/// are not held).
pub const BYTES: usize = 2048;
/// How long a fragment waits for its first.
pub const WAIT_MS: u64 = 1_000;

struct Slot {
    used: bool,
    from: Source,
    ingress: Ingress,
    since_ms: u64,
    len: usize,
    bytes: Box<[u8; BYTES]>,
}

/// A held fragment given back: where it came from, and its bytes.
pub struct Released<'a> {
    pub from: Source,
    pub ingress: Ingress,
    pub bytes: &'a [u8],
}

pub struct Hold {
    slots: Vec<Slot>,
    used: usize,
}

impl Default for Hold {
    fn default() -> Self {
        Hold {
            slots: (0..SLOTS)
                .map(|_| Slot {
                    used: false,
                    from: Source::Host,
                    ingress: Ingress::Host,
                    since_ms: 0,
                    len: 0,
                    bytes: Box::new([0; BYTES]),
                })
                .collect(),
            used: 0,
        }
    }
}

impl Hold {
    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// Holds a copy of `bytes`; false if no slot is free or it is too big.
    pub fn put(&mut self, from: Source, ingress: Ingress, now_ms: u64, bytes: &[u8]) -> bool {
        if bytes.len() > BYTES {
            return false;
        }
        let Some(s) = self.slots.iter_mut().find(|s| !s.used) else {
            return false;
        };
        s.bytes[..bytes.len()].copy_from_slice(bytes);
        (s.used, s.from, s.ingress, s.since_ms, s.len) = (true, from, ingress, now_ms, bytes.len());
        self.used += 1;
        true
    }

    /// Frees the fragments that waited past `WAIT_MS`; how many.
    pub fn expire(&mut self, now_ms: u64) -> u64 {
        let mut n = 0;
        for s in self.slots.iter_mut().filter(|s| s.used) {
            if now_ms.saturating_sub(s.since_ms) > WAIT_MS {
                s.used = false;
                n += 1;
            }
        }
        self.used -= n as usize;
        n
    }

    /// The first held fragment whose first fragment the table now knows,
    /// taken out of its slot (read it before the next call).
    pub fn next_ready(&mut self, frags: &FragTable, now_ms: u64) -> Option<Released<'_>> {
        let k = self.slots.iter().position(|s| {
            s.used
                && match decode(&s.bytes[..s.len]) {
                    Ok(Decoded::Ip(p)) => match p.frag {
                        Frag::Later { ident } => frags
                            .find(p.src, p.dst, p.family, ident, p.ip_proto, now_ms)
                            .is_some(),
                        _ => true,
                    },
                    _ => true,
                }
        })?;
        self.used -= 1;
        let s = &mut self.slots[k];
        s.used = false;
        Some(Released {
            from: s.from,
            ingress: s.ingress,
            bytes: &s.bytes[..s.len],
        })
    }
}
