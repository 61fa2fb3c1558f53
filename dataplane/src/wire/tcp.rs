//! TCP (RFC 9293): ports, flags, data offset, checksum patching.

use super::{be16, checksum, put16};

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

/// Only the first bytes that hold the ports and the checksum are needed to
/// rewrite a segment, so the setters take any buffer of 18 bytes or more
/// (an IPv4 first fragment may carry no more than that).
pub fn patch_ports(seg: &mut [u8], new_sport: Option<u16>, new_dport: Option<u16>) {
    let mut csum = be16(seg, field::CHECKSUM);
    if let Some(p) = new_sport {
        csum = checksum::update16(csum, be16(seg, field::SPORT), p);
        put16(seg, field::SPORT, p);
    }
    if let Some(p) = new_dport {
        csum = checksum::update16(csum, be16(seg, field::DPORT), p);
        put16(seg, field::DPORT, p);
    }
    put16(seg, field::CHECKSUM, csum);
}

/// Folds an address change into the checksum (the pseudo-header covers it).
pub fn patch_pseudo(seg: &mut [u8], old: &[u8], new: &[u8]) {
    let csum = checksum::update_bytes(be16(seg, field::CHECKSUM), old, new);
    put16(seg, field::CHECKSUM, csum);
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
    fn port_patch_is_a_pure_difference() {
        let mut b = SYN_SEGMENT;
        patch_ports(&mut b, None, Some(8080));
        patch_ports(&mut b, None, Some(80));
        assert_eq!(b, SYN_SEGMENT);
    }
}
