//! Flow hashing.
//!
//! Two keyed hashes over the same words: the conntrack index uses a seed
//! drawn at start, so that a client cannot aim flows at one probe chain;
//! backend selection uses a fixed seed, so that a restarted daemon picks
//! the same backend for a flow that Maglev still maps the same way.

use crate::flow::FlowKey;

const K: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline(always)]
fn mix(a: u64, b: u64) -> u64 {
    let p = u128::from(a ^ K).wrapping_mul(u128::from(b ^ 0xc2b2_ae3d_27d4_eb4f));
    (p as u64) ^ ((p >> 64) as u64)
}

/// Hashes a flow key under `seed`.
#[inline]
pub fn flow_hash(key: &FlowKey, seed: u64) -> u64 {
    let tail = u64::from(key.sport)
        | u64::from(key.dport) << 16
        | u64::from(key.proto.number()) << 32
        | (key.family as u64) << 40;
    let mut h = mix(seed ^ (key.src.0 as u64), (key.src.0 >> 64) as u64);
    h = mix(h ^ (key.dst.0 as u64), (key.dst.0 >> 64) as u64 ^ tail);
    mix(h, seed.rotate_left(29))
}

/// A `Hasher` for maps keyed by one address (the routes' pods): one
/// multiply, where the maps' default hasher spends several times that on
/// every packet's route lookup. The keys are the node's own pods, not
/// chosen by a client, so no seed is needed against collisions aimed at
/// the table.
#[derive(Clone, Copy, Default)]
pub struct AddrHasher(u64);

impl std::hash::Hasher for AddrHasher {
    #[inline]
    fn write_u128(&mut self, v: u128) {
        self.0 = mix(self.0 ^ v as u64, (v >> 64) as u64);
    }
    /// Other shapes than an address (not used by the route maps), folded
    /// in eight bytes at a time.
    fn write(&mut self, bytes: &[u8]) {
        self.0 = bytes_hash(bytes, self.0);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// The fixed seed of backend selection (see the module comment).
pub const SELECT_SEED: u64 = 0x5eed_51c3_0000_0001;

/// Hash of arbitrary bytes, for Maglev's per-backend permutations.
pub fn bytes_hash(data: &[u8], seed: u64) -> u64 {
    let mut h = seed;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = mix(h, u64::from_le_bytes(w));
    }
    let mut w = [0u8; 8];
    w[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    mix(h ^ data.len() as u64, u64::from_le_bytes(w))
}

/// A seed from the OS's randomness without pulling in a crate for it:
/// std's `RandomState` is keyed from getrandom.
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x51);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{Addr, Family, Proto};

    #[test]
    fn every_field_changes_the_hash() {
        let k = FlowKey {
            src: Addr::from_v4([198, 18, 1, 2]),
            dst: Addr::from_v4([198, 19, 0, 1]),
            sport: 1000,
            dport: 80,
            proto: Proto::Tcp,
            family: Family::V4,
        };
        let h = flow_hash(&k, 1);
        let variants = [
            FlowKey { sport: 1001, ..k },
            FlowKey { dport: 81, ..k },
            FlowKey {
                proto: Proto::Udp,
                ..k
            },
            FlowKey {
                src: Addr::from_v4([198, 18, 1, 3]),
                ..k
            },
            FlowKey {
                dst: Addr::from_v4([198, 19, 0, 2]),
                ..k
            },
            FlowKey {
                family: Family::V6,
                ..k
            },
        ];
        for v in variants {
            assert_ne!(flow_hash(&v, 1), h, "{v:?}");
        }
        assert_ne!(flow_hash(&k, 2), h, "the seed is part of the hash");
    }
}
