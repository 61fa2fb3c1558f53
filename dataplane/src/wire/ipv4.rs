//! IPv4 (RFC 791): header view, options skipped, fragments recognised.

use super::checksum::{self, Delta};
use super::{be16, put16};

pub const MIN_HEADER_LEN: usize = 20;

mod field {
    pub const VER_IHL: usize = 0;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTO: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

const MORE_FRAGMENTS: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// Why an IPv4 header was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipv4Error {
    Truncated,
    BadVersion,
    BadHeaderLen,
    BadTotalLen,
    BadChecksum,
}

/// A view over an IPv4 header whose lengths have been checked against the
/// buffer: `header_len() <= total_len() <= buf.len()`.
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Checks version, IHL, total length and the header checksum.
    ///
    /// A frame may carry Ethernet padding past `total_len`; that is allowed
    /// and ignored, as the kernel does.
    pub fn new_checked(buf: T) -> Result<Self, Ipv4Error> {
        let b = buf.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(Ipv4Error::Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(Ipv4Error::BadVersion);
        }
        let ihl = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        if ihl < MIN_HEADER_LEN || ihl > b.len() {
            return Err(Ipv4Error::BadHeaderLen);
        }
        let total = usize::from(be16(b, field::TOTAL_LEN));
        if total < ihl || total > b.len() {
            return Err(Ipv4Error::BadTotalLen);
        }
        if !cfg!(fuzzing) && checksum::fold(checksum::sum(&b[..ihl])) != 0xffff {
            return Err(Ipv4Error::BadChecksum);
        }
        Ok(Ipv4Packet { buf })
    }

    /// A view over a header alone (a rewrite holds the header apart from
    /// the payload): checks only that the header fits.
    pub fn new_header(buf: T) -> Result<Self, Ipv4Error> {
        let b = buf.as_ref();
        if b.len() < MIN_HEADER_LEN || usize::from(b[field::VER_IHL] & 0x0f) * 4 > b.len() {
            return Err(Ipv4Error::Truncated);
        }
        Ok(Ipv4Packet { buf })
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }
    pub fn header_len(&self) -> usize {
        usize::from(self.b()[field::VER_IHL] & 0x0f) * 4
    }
    pub fn total_len(&self) -> usize {
        usize::from(be16(self.b(), field::TOTAL_LEN))
    }
    pub fn ident(&self) -> u16 {
        be16(self.b(), field::IDENT)
    }
    pub fn more_fragments(&self) -> bool {
        be16(self.b(), field::FLAGS_FRAG) & MORE_FRAGMENTS != 0
    }
    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> usize {
        usize::from(be16(self.b(), field::FLAGS_FRAG) & FRAG_OFFSET_MASK) * 8
    }
    /// True for any piece of a fragmented datagram, first or not.
    pub fn is_fragment(&self) -> bool {
        self.more_fragments() || self.frag_offset() != 0
    }
    pub fn ttl(&self) -> u8 {
        self.b()[field::TTL]
    }
    pub fn protocol(&self) -> u8 {
        self.b()[field::PROTO]
    }
    pub fn checksum(&self) -> u16 {
        be16(self.b(), field::CHECKSUM)
    }
    pub fn src(&self) -> [u8; 4] {
        let b = self.b();
        [
            b[field::SRC],
            b[field::SRC + 1],
            b[field::SRC + 2],
            b[field::SRC + 3],
        ]
    }
    pub fn dst(&self) -> [u8; 4] {
        let b = self.b();
        [
            b[field::DST],
            b[field::DST + 1],
            b[field::DST + 2],
            b[field::DST + 3],
        ]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Rewrites the addresses given (`None`: kept), patches the header
    /// checksum once for both, and returns the change, which the
    /// transport's checksum also covers (its pseudo-header).
    #[inline]
    pub fn rewrite_addrs(&mut self, src: Option<[u8; 4]>, dst: Option<[u8; 4]>) -> Delta {
        // The fixed header as an array: the offsets below are checked
        // once, at compile time (the constructor checked the length).
        let Some(h) = self.fixed_mut() else {
            return Delta::NONE;
        };
        let mut d = Delta::NONE;
        for (at, new) in [(field::SRC, src), (field::DST, dst)] {
            if let Some(new) = new {
                let old = u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
                d = d.and(Delta::word32(old, u32::from_be_bytes(new)));
                h[at..at + 4].copy_from_slice(&new);
            }
        }
        if !d.is_none() {
            let csum = d.apply(be16(h, field::CHECKSUM));
            put16(h, field::CHECKSUM, csum);
        }
        d
    }
    /// Rewrites the source address and patches the header checksum.
    pub fn set_src(&mut self, new: [u8; 4]) {
        self.rewrite_addrs(Some(new), None);
    }
    /// Rewrites the destination address and patches the header checksum.
    pub fn set_dst(&mut self, new: [u8; 4]) {
        self.rewrite_addrs(None, Some(new));
    }
    /// Decrements the TTL by one and patches the checksum. The caller has
    /// checked that the TTL is above one.
    #[inline]
    pub fn decrement_ttl(&mut self) {
        let Some(h) = self.fixed_mut() else {
            return;
        };
        h[field::TTL] = h[field::TTL].wrapping_sub(1);
        // The TTL is the high byte of its 16-bit word, which falls by
        // 0x0100: the checksum rises by 0x0100, end-around carry, and
        // 0xFFFF becomes 0x0000 as RFC 1624's equation 3 gives (the
        // kernel's ip_decrease_ttl, to the bit).
        let c = u32::from(be16(h, field::CHECKSUM)) + 0x0100;
        let c = c + u32::from(c >= 0xffff);
        put16(h, field::CHECKSUM, c as u16);
    }

    /// The fixed header as an array: offsets into it are checked once, at
    /// compile time (the constructors checked the length).
    #[inline]
    fn fixed_mut(&mut self) -> Option<&mut [u8; MIN_HEADER_LEN]> {
        self.buf.as_mut().get_mut(..MIN_HEADER_LEN)?.try_into().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 198.18.1.2 -> 198.19.0.10, UDP, 28 bytes, DF, TTL 64 (checksum computed
    // by the Linux kernel for this header).
    pub(crate) const HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x1c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 198, 18, 1, 2, 198,
        19, 0, 10,
    ];

    fn header() -> [u8; 28] {
        let mut h = [0u8; 28];
        h[..20].copy_from_slice(&HEADER);
        let c = checksum::checksum(&h[..20]);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h
    }

    #[test]
    fn parses_fields() {
        let h = header();
        let p = Ipv4Packet::new_checked(&h[..]).unwrap();
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 28);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), 17);
        assert_eq!(p.src(), [198, 18, 1, 2]);
        assert_eq!(p.dst(), [198, 19, 0, 10]);
        assert!(!p.is_fragment());
    }

    #[test]
    fn refuses_inconsistent_headers() {
        let h = header();
        assert_eq!(
            Ipv4Packet::new_checked(&h[..19]).err(),
            Some(Ipv4Error::Truncated)
        );
        assert_eq!(
            Ipv4Packet::new_checked(&h[..27]).err(),
            Some(Ipv4Error::BadTotalLen)
        );
        let mut bad = h;
        bad[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]).err(),
            Some(Ipv4Error::BadHeaderLen)
        );
        bad[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]).err(),
            Some(Ipv4Error::BadVersion)
        );
        let mut bad = h;
        bad[11] ^= 1;
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]).err(),
            Some(Ipv4Error::BadChecksum)
        );
    }

    #[test]
    fn rewrites_keep_the_checksum_valid() {
        let mut h = header();
        let mut p = Ipv4Packet::new_checked(&mut h[..]).unwrap();
        p.set_dst([198, 18, 2, 7]);
        p.set_src([198, 18, 0, 1]);
        p.decrement_ttl();
        assert_eq!(p.ttl(), 63);
        assert!(Ipv4Packet::new_checked(&h[..]).is_ok());
        assert_eq!(checksum::fold(checksum::sum(&h[..20])), 0xffff);
    }

    #[test]
    fn fragment_fields() {
        let mut h = header();
        h[6] = 0x20; // MF, offset 0: the first fragment
        h[7] = 0x00;
        h[10] = 0;
        h[11] = 0;
        let c = checksum::checksum(&h[..20]);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        let p = Ipv4Packet::new_checked(&h[..]).unwrap();
        assert!(p.is_fragment() && p.more_fragments() && p.frag_offset() == 0);
    }

    /// The TTL decrement's checksum is RFC 1624's equation 3, bit for bit,
    /// for every checksum and TTL.
    #[test]
    fn ttl_decrement_is_equation_3_for_every_checksum() {
        for ttl in [2u8, 64, 255] {
            for csum in 0..=u16::MAX {
                let mut h = header();
                h[8] = ttl;
                h[10..12].copy_from_slice(&csum.to_be_bytes());
                let word = u16::from_be_bytes([ttl, h[9]]);
                let want = checksum::update16(csum, word, word - 0x0100);
                let mut p = Ipv4Packet::new_header(&mut h[..]).unwrap();
                p.decrement_ttl();
                assert_eq!((p.ttl(), p.checksum()), (ttl - 1, want), "csum {csum:#06x}");
            }
        }
    }
}
