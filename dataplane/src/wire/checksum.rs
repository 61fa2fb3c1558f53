//! Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! NAT changes a handful of 16-bit words; recomputing a checksum over a whole
//! segment per packet would make the cost grow with the payload, so every
//! rewrite patches the checksum with the difference of the words it changed.

/// Ones'-complement sum of `data` as big-endian 16-bit words, folded to
/// 16 bits (returned as `u32` so that a few sums can be added before the
/// final `fold`). An odd trailing byte is padded with zero (RFC 1071).
#[inline(always)]
pub fn sum(data: &[u8]) -> u32 {
    // 32-bit words into a 64-bit accumulator: the ones'-complement sum is
    // the same whatever the word size once folded (RFC 1071 section 2), and
    // half the additions of 16-bit words.
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    acc += u64::from(u32::from_be_bytes(tail));
    u32::from(fold(fold64(acc)))
}

#[inline]
fn fold64(acc: u64) -> u32 {
    // Two end-around carries take any u64 to 32 bits: the first leaves at
    // most 0x1_FFFF_FFFE, the second at most 0xFFFF_FFFF.
    let a = (acc & 0xffff_ffff) + (acc >> 32);
    ((a & 0xffff_ffff) + (a >> 32)) as u32
}

/// Folds a 32-bit accumulator into 16 bits with end-around carry.
#[inline]
pub fn fold(acc: u32) -> u16 {
    // As in `fold64`: two carries always suffice, no loop.
    let a = (acc & 0xffff) + (acc >> 16);
    ((a & 0xffff) + (a >> 16)) as u16
}

/// Whether an option-less IPv4 header's checksum holds: its words sum to
/// 0xffff. Summed in the machine's byte order, with no swap: the
/// ones'-complement sum of byte-swapped words is the byte-swapped sum
/// (RFC 1071 section 2 (B)), and 0xffff swapped is itself.
#[inline(always)]
pub fn header_verifies(h: &[u8; 20]) -> bool {
    let w = |i: usize| u64::from(u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]));
    fold(fold64(w(0) + w(4) + w(8) + w(12) + w(16))) == 0xffff
}

/// The checksum of `data`: the complement of its folded sum.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data))
}

/// Sum of the IPv4 pseudo-header for an upper-layer checksum.
pub fn pseudo_v4(src: [u8; 4], dst: [u8; 4], proto: u8, len: u16) -> u32 {
    sum(&src) + sum(&dst) + u32::from(proto) + u32::from(len)
}

/// Sum of the IPv6 pseudo-header (RFC 8200 section 8.1).
pub fn pseudo_v6(src: [u8; 16], dst: [u8; 16], proto: u8, len: u32) -> u32 {
    sum(&src) + sum(&dst) + (len >> 16) + (len & 0xffff) + u32::from(proto)
}

/// A change to the fields a checksum covers, in progress: RFC 1624's
/// `~m + m'` terms of every 16-bit word that changed, summed, then
/// applied once to each checksum that covers those words (an address
/// change goes into the IPv4 header's checksum and into the transport's
/// through its pseudo-header). A few addresses and ports fit unfolded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delta(u32);

impl Delta {
    pub const NONE: Delta = Delta(0);

    /// One 16-bit word from `old` to `new`.
    #[inline]
    pub fn word(old: u16, new: u16) -> Delta {
        Delta(u32::from(!old) + u32::from(new))
    }

    /// Two words (an IPv4 address as a number).
    #[inline]
    pub fn word32(old: u32, new: u32) -> Delta {
        Delta::word((old >> 16) as u16, (new >> 16) as u16).and(Delta::word(old as u16, new as u16))
    }

    /// An even-length field (an address), word by word.
    #[inline]
    pub fn bytes(old: &[u8], new: &[u8]) -> Delta {
        debug_assert_eq!(old.len(), new.len());
        let mut acc = 0u32;
        for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
            acc += u32::from(!u16::from_be_bytes([o[0], o[1]]))
                + u32::from(u16::from_be_bytes([n[0], n[1]]));
        }
        Delta(acc)
    }

    /// Both changes.
    #[inline]
    #[must_use]
    pub fn and(self, o: Delta) -> Delta {
        Delta(self.0 + o.0)
    }

    pub fn is_none(self) -> bool {
        self.0 == 0
    }

    /// RFC 1624 equation 3, `HC' = ~(~HC + ~m + m')`: the checksum after
    /// the change. Equation 3 rather than 2 because it never turns a
    /// checksum into the negative zero that equation 2 produces when the
    /// sum is 0xFFFF.
    #[inline]
    pub fn apply(self, csum: u16) -> u16 {
        // The terms of a few addresses and ports stay far below 2^32 - 2^16:
        // folding once, after the add, gives the same ones'-complement sum.
        !fold(u32::from(!csum) + self.0)
    }
}

/// One 16-bit word's change applied to `csum` (`Delta::word`).
#[inline]
pub fn update16(csum: u16, old: u16, new: u16) -> u16 {
    Delta::word(old, new).apply(csum)
}

/// A change of a 4- or 16-byte address (or any even-length field) applied
/// to `csum` (`Delta::bytes`).
#[inline]
pub fn update_bytes(csum: u16, old: &[u8], new: &[u8]) -> u16 {
    Delta::bytes(old, new).apply(csum)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The IPv4 header from RFC 1071's worked examples family: a real header
    // captured from a ping, checksum 0xb861.
    const IPV4_HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    #[test]
    fn full_checksum_of_real_header_verifies() {
        assert_eq!(fold(sum(&IPV4_HEADER)), 0xffff);
        let mut h = IPV4_HEADER;
        h[10] = 0;
        h[11] = 0;
        assert_eq!(checksum(&h), 0xb861);
    }

    #[test]
    fn header_check_in_machine_order_agrees_with_the_full_sum() {
        assert!(header_verifies(&IPV4_HEADER));
        // Every single-bit corruption is caught, as the full sum catches it.
        for byte in 0..20 {
            for bit in 0..8 {
                let mut h = IPV4_HEADER;
                h[byte] ^= 1 << bit;
                assert_eq!(header_verifies(&h), fold(sum(&h)) == 0xffff);
                assert!(!header_verifies(&h), "byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn incremental_matches_full_recompute() {
        let mut h = IPV4_HEADER;
        let old_csum = u16::from_be_bytes([h[10], h[11]]);
        let old_dst = [h[16], h[17], h[18], h[19]];
        let new_dst = [198, 19, 0, 10];
        h[16..20].copy_from_slice(&new_dst);
        let inc = update_bytes(old_csum, &old_dst, &new_dst);
        h[10] = 0;
        h[11] = 0;
        assert_eq!(inc, checksum(&h));
    }

    #[test]
    fn rfc1624_edge_keeps_positive_zero_form() {
        // RFC 1624 section 3's worked example: HC = 0xDD2F, a field goes
        // from 0x5555 to 0x3285; equation 3 gives 0x0000 where equation 2
        // gave 0xFFFF.
        let hc = 0xdd2f;
        let new = update16(hc, 0x5555, 0x3285);
        assert_eq!(new, 0x0000);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum(&[0x01]), 0x0100);
        assert_eq!(sum(&[0x01, 0x02, 0x03]), 0x0102 + 0x0300);
        assert_eq!(sum(&[0xff, 0xff, 0x00, 0x01]), 0x0001, "end-around carry");
        assert_eq!(fold(0xffff_ffff), 0xffff);
        assert_eq!(fold(0x0001_fffe), 0xffff);
        assert_eq!(fold64(u64::MAX), 0xffff_ffff);
    }
}
