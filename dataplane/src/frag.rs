//! Fragments: the first fragment of a datagram carries the ports; later
//! ones carry only the IP header. Each worker remembers the ports of the
//! first fragments it has seen, keyed by (src, dst, protocol, ident), so
//! that later fragments follow their datagram's flow and NAT.
//!
//! A later fragment that arrives before its first is held by the worker
//! (`worker::hold`: a few slots, a second at most) and given back once its
//! first has passed; the burst function alone drops it
//! (`fragment_unknown`). The table is per worker because RSS
//! hashes every fragment of a datagram on its addresses alone, so all of them
//! reach the same queue. Slots are direct-mapped and overwritten: a datagram
//! whose slot was taken by another loses its later fragments, counted.

use crate::flow::{Addr, Family, Proto};

/// Slots per worker: datagrams in flight at once, per worker.
pub const SLOTS: usize = 1024;
/// A first fragment's ports are kept this long (the kernel's
/// `ipfrag_time` is 30 s; real fragments trail by microseconds).
pub const TTL_MS: u64 = 2_000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct FragKey {
    src: Addr,
    dst: Addr,
    ident: u32,
    proto: u8,
    family: Family,
}

#[derive(Clone, Copy)]
struct Slot {
    key: FragKey,
    sport: u16,
    dport: u16,
    proto: Proto,
    seen_ms: u64,
}

pub struct FragTable {
    slots: Box<[Option<Slot>]>,
}

impl Default for FragTable {
    fn default() -> Self {
        FragTable {
            slots: vec![None; SLOTS].into_boxed_slice(),
        }
    }
}

fn index(k: &FragKey) -> usize {
    let h = (k.src.0 ^ k.dst.0.rotate_left(17)) as u64
        ^ u64::from(k.ident).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h ^ (h >> 29)) as usize % SLOTS
}

impl FragTable {
    /// Remembers a first fragment's ports.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &mut self,
        src: Addr,
        dst: Addr,
        family: Family,
        ident: u32,
        proto: Proto,
        sport: u16,
        dport: u16,
        now_ms: u64,
    ) {
        let key = FragKey {
            src,
            dst,
            ident,
            proto: proto.number(),
            family,
        };
        let i = index(&key);
        self.slots[i] = Some(Slot {
            key,
            sport,
            dport,
            proto,
            seen_ms: now_ms,
        });
    }

    /// The transport protocol and ports of a later fragment's datagram.
    pub fn find(
        &self,
        src: Addr,
        dst: Addr,
        family: Family,
        ident: u32,
        ip_proto: u8,
        now_ms: u64,
    ) -> Option<(Proto, u16, u16)> {
        let key = FragKey {
            src,
            dst,
            ident,
            proto: ip_proto,
            family,
        };
        match self.slots[index(&key)] {
            Some(s) if s.key == key && now_ms.saturating_sub(s.seen_ms) <= TTL_MS => {
                Some((s.proto, s.sport, s.dport))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_fragment_finds_first_and_expires() {
        let mut t = FragTable::default();
        let (s, d) = (
            Addr::from_v4([198, 18, 1, 2]),
            Addr::from_v4([198, 19, 0, 10]),
        );
        t.record(s, d, Family::V4, 77, Proto::Udp, 5000, 53, 0);
        assert_eq!(
            t.find(s, d, Family::V4, 77, 17, 1),
            Some((Proto::Udp, 5000, 53))
        );
        assert_eq!(t.find(s, d, Family::V4, 78, 17, 1), None);
        assert_eq!(t.find(d, s, Family::V4, 77, 17, 1), None);
        assert_eq!(t.find(s, d, Family::V4, 77, 17, TTL_MS + 1), None);
    }
}
