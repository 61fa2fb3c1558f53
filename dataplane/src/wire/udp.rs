//! UDP (RFC 768): ports, length, and the IPv4 "no checksum" zero.

use super::checksum::Delta;
use super::{be16, put16};

pub const HEADER_LEN: usize = 8;

mod field {
    pub const SPORT: usize = 0;
    pub const DPORT: usize = 2;
    pub const LEN: usize = 4;
    pub const CHECKSUM: usize = 6;
}

/// A view over a UDP header whose length field fits the buffer.
pub struct UdpDatagram<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> UdpDatagram<T> {
    /// `ip_payload_len` is what the IP header says the datagram spans; the
    /// UDP length must agree with it (RFC 768 allows less, the kernel
    /// trims; more is a lie).
    pub fn new_checked(buf: T, ip_payload_len: usize) -> Option<Self> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return None;
        }
        let len = usize::from(be16(b, field::LEN));
        (len >= HEADER_LEN && len <= ip_payload_len && len <= b.len())
            .then_some(UdpDatagram { buf })
    }
    /// For a first fragment: the UDP length covers the whole datagram,
    /// which this piece is not, so only the header's presence is checked.
    pub fn new_header_only(buf: T) -> Option<Self> {
        (buf.as_ref().len() >= HEADER_LEN).then_some(UdpDatagram { buf })
    }
    pub fn sport(&self) -> u16 {
        be16(self.buf.as_ref(), field::SPORT)
    }
    pub fn dport(&self) -> u16 {
        be16(self.buf.as_ref(), field::DPORT)
    }
    pub fn length(&self) -> usize {
        usize::from(be16(self.buf.as_ref(), field::LEN))
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), field::CHECKSUM)
    }
}

/// How a UDP checksum is treated when a field changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpChecksumMode {
    /// IPv4: a zero checksum means "none" and stays zero.
    V4,
    /// IPv6: the checksum is mandatory and always patched.
    V6,
}

fn finish(csum: u16) -> u16 {
    // A computed 0x0000 goes on the wire as 0xFFFF (RFC 768): zero is
    // reserved for "no checksum".
    if csum == 0 {
        0xffff
    } else {
        csum
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpDatagram<T> {
    /// Rewrites the ports given (`None`: kept) and patches the checksum
    /// once, for them and for `pseudo` (the addresses' change). An IPv4
    /// datagram sent without a checksum (zero) keeps none.
    #[inline]
    pub fn rewrite(
        &mut self,
        mode: UdpChecksumMode,
        sport: Option<u16>,
        dport: Option<u16>,
        pseudo: Delta,
    ) {
        let b = self.buf.as_mut();
        let d = super::rewrite_ports(b, sport, dport, pseudo);
        let csum = be16(b, field::CHECKSUM);
        if d.is_none() || (mode == UdpChecksumMode::V4 && csum == 0) {
            return;
        }
        put16(b, field::CHECKSUM, finish(d.apply(csum)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // DNS query header: 12345 -> 53, length 8+4, checksum 0xbeef.
    const DGRAM: [u8; 12] = [0x30, 0x39, 0x00, 0x35, 0x00, 0x0c, 0xbe, 0xef, 1, 2, 3, 4];

    #[test]
    fn reads_and_checks_length() {
        let d = UdpDatagram::new_checked(&DGRAM[..], 12).unwrap();
        assert_eq!((d.sport(), d.dport(), d.length()), (12345, 53, 12));
        assert!(
            UdpDatagram::new_checked(&DGRAM[..], 11).is_none(),
            "longer than the IP payload"
        );
        assert!(UdpDatagram::new_checked(&DGRAM[..7], 12).is_none());
    }

    #[test]
    fn v4_zero_checksum_stays_zero() {
        let mut b = DGRAM;
        b[6] = 0;
        b[7] = 0;
        let mut d = UdpDatagram::new_header_only(&mut b[..]).unwrap();
        d.rewrite(
            UdpChecksumMode::V4,
            None,
            Some(5353),
            Delta::bytes(&[1, 2, 3, 4], &[5, 6, 7, 8]),
        );
        assert_eq!(&b[6..8], &[0, 0]);
        assert_eq!(be16(&b, 2), 5353);
    }

    #[test]
    fn computed_zero_is_sent_as_ffff() {
        // A checksum that an update lands on zero must read 0xFFFF.
        let mut b = DGRAM;
        b[6..8].copy_from_slice(&0x0001u16.to_be_bytes());
        // Changing sport from 0x3039 to 0x303a adds one to the sum, which
        // takes the checksum from 0x0001 to 0x0000.
        UdpDatagram::new_header_only(&mut b[..]).unwrap().rewrite(
            UdpChecksumMode::V6,
            Some(0x303a),
            None,
            Delta::NONE,
        );
        assert_eq!(be16(&b, 6), 0xffff);
    }
}
