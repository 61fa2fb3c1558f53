//! Typed views over the byte buffers of packet headers.
//!
//! Each view has one contract, as smoltcp's do: once its checked constructor
//! has returned `Some`, no getter or setter panics. Field offsets are named
//! byte ranges, never scattered literals.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod sctp;
pub mod tcp;
pub mod udp;

#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Writes the ports given (`None`: kept) at offsets 0 and 2, as TCP, UDP
/// and SCTP all have them, and adds their change to `d`.
#[inline]
pub(crate) fn rewrite_ports(
    b: &mut [u8],
    sport: Option<u16>,
    dport: Option<u16>,
    d: checksum::Delta,
) -> checksum::Delta {
    let Some(Ok(p)) = b.get_mut(..4).map(<&mut [u8; 4]>::try_from) else {
        return d;
    };
    let mut d = d;
    for (at, new) in [(0, sport), (2, dport)] {
        if let Some(new) = new {
            d = d.and(checksum::Delta::word(be16(p, at), new));
            put16(p, at, new);
        }
    }
    d
}
