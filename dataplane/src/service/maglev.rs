//! Maglev consistent hashing (Eisenbud et al., NSDI 2016, section 3.4).
//!
//! Each backend fills the lookup table along its own permutation of the
//! slots, in turns, until the table is full. Removing one backend of N
//! moves about 1/N of the flows (the removed backend's) and very few others,
//! provided the table is much larger than N: it is at least 100 N and prime,
//! so that every skip generates a full permutation.

use crate::hash::bytes_hash;

/// Table sizes by class. A Service's table is the first class with at
/// least `SLOTS_PER_BACKEND` slots per backend. Classes, not a size per backend count,
/// because Maglev's consistency holds only between tables of the same size:
/// a Service scaled from 4 to 3 backends keeps its table size and moves only
/// the removed backend's flows; crossing a class (10 to 11 backends, 163 to
/// 164, ...) rebuilds the table at the new size. Conntrack keeps existing
/// flows where they are either way; the size matters for flows that have no
/// entry (after a restart, or on another node).
pub const SIZE_CLASSES: [usize; 6] = [1021, 16381, 65521, 262139, 1048573, 4194301];
/// Slots per backend, at least. Maglev's paper asks for 100; at 100 the
/// flows that move besides the removed backend's reach 1.4% of all flows
/// (100 backends in 16381 slots), at 300 they stay under 1.1% (measured by
/// `removal_moves_little_more_than_the_removed_share`). 300 costs 2 KiB a
/// Service with up to 3 backends.
pub const SLOTS_PER_BACKEND: usize = 300;

const SEED_OFFSET: u64 = 0x6d61_676c_6576_3031;
const SEED_SKIP: u64 = 0x6d61_676c_6576_3032;

fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// The table size for `backends` backends: the first size class with room
/// for `SLOTS_PER_BACKEND` each; past the last class, the first prime there.
pub fn table_size(backends: usize) -> usize {
    let want = SLOTS_PER_BACKEND.saturating_mul(backends.max(1));
    if let Some(&m) = SIZE_CLASSES.iter().find(|&&m| m >= want) {
        return m;
    }
    let mut m = want;
    while !is_prime(m) {
        m += 1;
    }
    m
}

/// Builds the lookup table for backends named by `ids` (any stable bytes:
/// the control plane uses "address:port"). Slot values index `ids`.
///
/// The table depends on the set of ids, not on their order: ties in the
/// filling turns are broken by a sort on the ids' hashes, so two daemons
/// (or one daemon before and after a restart) build the same table.
pub fn build(ids: &[&[u8]]) -> Box<[u16]> {
    let n = ids.len();
    if n == 0 {
        return Box::new([]);
    }
    assert!(
        n <= usize::from(u16::MAX),
        "more backends than a u16 slot can name"
    );
    build_sized(ids, table_size(n))
}

fn build_sized(ids: &[&[u8]], m: usize) -> Box<[u16]> {
    let n = ids.len();
    // (offset, skip, original index), ordered by a hash of the id.
    let mut perms: Vec<(u64, usize, usize, usize)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let offset = (bytes_hash(id, SEED_OFFSET) % m as u64) as usize;
            let skip = (bytes_hash(id, SEED_SKIP) % (m as u64 - 1)) as usize + 1;
            (bytes_hash(id, SEED_OFFSET ^ SEED_SKIP), offset, skip, i)
        })
        .collect();
    perms.sort_unstable();
    let mut table = vec![u16::MAX; m];
    let mut next = vec![0usize; n];
    let mut filled = 0;
    'fill: loop {
        for (turn, &(_, offset, skip, idx)) in perms.iter().enumerate() {
            let mut c = (offset + next[turn] * skip) % m;
            while table[c] != u16::MAX {
                next[turn] += 1;
                c = (offset + next[turn] * skip) % m;
            }
            table[c] = idx as u16;
            next[turn] += 1;
            filled += 1;
            if filled == m {
                break 'fill;
            }
        }
    }
    table.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| format!("198.18.2.{}:8080", i + 2).into_bytes())
            .collect()
    }

    #[test]
    fn sizes_are_prime_and_large_enough() {
        for &m in &SIZE_CLASSES {
            assert!(is_prime(m), "{m}");
        }
        for n in [1, 2, 3, 10, 11, 100, 1000, 50_000] {
            let m = table_size(n);
            assert!(is_prime(m) && m >= SLOTS_PER_BACKEND * n, "{n} -> {m}");
        }
    }

    #[test]
    fn shares_are_even() {
        let ids = ids(7);
        let refs: Vec<&[u8]> = ids.iter().map(|v| v.as_slice()).collect();
        let t = build(&refs);
        let mut count = [0usize; 7];
        for &s in t.iter() {
            count[s as usize] += 1;
        }
        let (lo, hi) = (count.iter().min().unwrap(), count.iter().max().unwrap());
        assert!(hi - lo <= 1, "{count:?}");
    }

    #[test]
    fn order_of_backends_does_not_matter() {
        let ids = ids(5);
        let a: Vec<&[u8]> = ids.iter().map(|v| v.as_slice()).collect();
        let b: Vec<&[u8]> = ids.iter().rev().map(|v| v.as_slice()).collect();
        let (ta, tb) = (build(&a), build(&b));
        for (x, y) in ta.iter().zip(tb.iter()) {
            assert_eq!(a[*x as usize], b[*y as usize]);
        }
    }

    /// Exact, over the table: the slots that change owner when one backend
    /// goes are the removed one's (1/N) plus a small extra, for backend
    /// counts at the top of each size class (the worst case).
    #[test]
    fn removal_moves_little_more_than_the_removed_share() {
        for n in [2usize, 3, 10, 54, 218] {
            let ids = ids(n);
            let all: Vec<&[u8]> = ids.iter().map(|v| v.as_slice()).collect();
            let mut fewer = all.clone();
            let removed = fewer.remove(n / 2);
            let (a, b) = (build(&all), build(&fewer));
            assert_eq!(a.len(), b.len(), "n={n}: same size class");
            let moved = (0..a.len())
                .filter(|&i| all[a[i] as usize] != fewer[b[i] as usize])
                .count();
            let was_removed = (0..a.len())
                .filter(|&i| all[a[i] as usize] == removed)
                .count();
            let extra = (moved - was_removed) as f64 / a.len() as f64;
            assert!(
                extra < 0.011,
                "n={n}: {extra:.4} of flows moved besides the removed backend's"
            );
        }
    }
}
