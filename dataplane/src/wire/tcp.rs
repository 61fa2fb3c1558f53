//! TCP (RFC 9293): ports, flags, data offset, checksum patching.

use super::checksum::Delta;
use super::{be16, put16};

pub const MIN_HEADER_LEN: usize = 20;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

mod field {
    pub const SPORT: usize = 0;
    pub const DPORT: usize = 2;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const CHECKSUM: usize = 16;
}

/// A view over a TCP header whose data offset lies within the buffer.
pub struct TcpSegment<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> TcpSegment<T> {
    /// The ports, flags and checksum alone (`CHECKSUM_END` bytes): what a
    /// rewrite needs, and all an IPv4 first fragment may carry.
    pub fn new_header(buf: T) -> Option<Self> {
        (buf.as_ref().len() >= CHECKSUM_END).then_some(TcpSegment { buf })
    }
    pub fn new_checked(buf: T) -> Option<Self> {
        let b = buf.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return None;
        }
        let off = usize::from(b[field::DATA_OFF] >> 4) * 4;
        (off >= MIN_HEADER_LEN && off <= b.len()).then_some(TcpSegment { buf })
    }
    pub fn sport(&self) -> u16 {
        be16(self.buf.as_ref(), field::SPORT)
    }
    pub fn dport(&self) -> u16 {
        be16(self.buf.as_ref(), field::DPORT)
    }
    pub fn flags(&self) -> u8 {
        self.buf.as_ref()[field::FLAGS]
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), field::CHECKSUM)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpSegment<T> {
    /// Rewrites the ports given (`None`: kept) and patches the checksum
    /// once, for them and for `pseudo` (the addresses' change, which the
    /// pseudo-header carries into this checksum).
    #[inline]
    pub fn rewrite(&mut self, sport: Option<u16>, dport: Option<u16>, pseudo: Delta) {
        let b = self.buf.as_mut();
        let d = super::rewrite_ports(b, sport, dport, pseudo);
        if !d.is_none() {
            let csum = d.apply(be16(b, field::CHECKSUM));
            put16(b, field::CHECKSUM, csum);
        }
    }
}

/// Offset of the checksum in the header; NAT reads it to know what bytes a
/// fragment must carry.
pub const CHECKSUM_END: usize = field::CHECKSUM + 2;

#[cfg(test)]
mod tests {
    use super::*;

    // A SYN from port 40000 to 80, data offset 10 (MSS, SACK, timestamps,
    // window scale), as Linux 6.x sends it.
    const SYN_SEGMENT: [u8; 40] = [
        0x9c, 0x40, 0x00, 0x50, 0x3a, 0x1b, 0x2c, 0x4d, 0, 0, 0, 0, 0xa0, 0x02, 0xfa, 0xf0, 0x12,
        0x34, 0, 0, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0, 0, 0, 1, 0, 0, 0, 0, 0x01,
        0x03, 0x03, 0x07,
    ];

    #[test]
    fn reads_ports_and_flags() {
        let s = TcpSegment::new_checked(&SYN_SEGMENT[..]).unwrap();
        assert_eq!((s.sport(), s.dport()), (40000, 80));
        assert_eq!(s.flags(), SYN);
        assert_eq!(s.checksum(), 0x1234);
    }

    #[test]
    fn refuses_bad_data_offset() {
        assert!(TcpSegment::new_checked(&SYN_SEGMENT[..39]).is_none());
        let mut b = SYN_SEGMENT;
        b[12] = 0x40; // 16 bytes: below the minimum
        assert!(TcpSegment::new_checked(&b[..]).is_none());
    }

    #[test]
    fn port_rewrite_is_a_pure_difference() {
        let mut b = SYN_SEGMENT;
        let mut s = TcpSegment::new_header(&mut b[..]).unwrap();
        s.rewrite(None, Some(8080), Delta::NONE);
        assert_eq!(s.dport(), 8080);
        s.rewrite(None, Some(80), Delta::NONE);
        assert_eq!(b, SYN_SEGMENT);
        assert!(TcpSegment::new_header(&SYN_SEGMENT[..17]).is_none());
    }
}
