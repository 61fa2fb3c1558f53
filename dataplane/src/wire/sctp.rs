//! SCTP common header (RFC 9260). Its CRC32c covers the whole packet and
//! no pseudo-header, so an address change leaves it alone and a port change
//! means a full recompute: CRC32c has no incremental update.

use super::be16;

pub const HEADER_LEN: usize = 12;

mod field {
    pub const SPORT: usize = 0;
    pub const DPORT: usize = 2;
    pub const CHECKSUM: core::ops::Range<usize> = 8..12;
}

pub struct SctpPacket<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> SctpPacket<T> {
    pub fn new_checked(buf: T) -> Option<Self> {
        (buf.as_ref().len() >= HEADER_LEN).then_some(SctpPacket { buf })
    }
    pub fn sport(&self) -> u16 {
        be16(self.buf.as_ref(), field::SPORT)
    }
    pub fn dport(&self) -> u16 {
        be16(self.buf.as_ref(), field::DPORT)
    }
    pub fn checksum(&self) -> u32 {
        let b = self.buf.as_ref();
        u32::from_le_bytes([b[8], b[9], b[10], b[11]])
    }
}

/// CRC32c of an SCTP packet with its checksum field taken as zero.
pub fn compute_checksum(pkt: &[u8]) -> u32 {
    let c = crc32c::crc32c(&pkt[..field::CHECKSUM.start]);
    let c = crc32c::crc32c_append(c, &[0; 4]);
    crc32c::crc32c_append(c, &pkt[field::CHECKSUM.end..])
}

/// Rewrites ports and recomputes the checksum over `pkt` (the whole SCTP
/// packet). The CRC is stored least significant byte first, as Linux's
/// `sctp_compute_cksum` writes it.
pub fn patch_ports(pkt: &mut [u8], sport: Option<u16>, dport: Option<u16>) {
    if let Some(p) = sport {
        pkt[field::SPORT..field::SPORT + 2].copy_from_slice(&p.to_be_bytes());
    }
    if let Some(p) = dport {
        pkt[field::DPORT..field::DPORT + 2].copy_from_slice(&p.to_be_bytes());
    }
    let c = compute_checksum(pkt);
    pkt[field::CHECKSUM].copy_from_slice(&c.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        // The CRC-32C check value of "123456789" (RFC 3720 family).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn ports_and_checksum() {
        // An SCTP INIT header: 5000 -> 38412 (the NGAP port), vtag 0.
        let mut p = vec![0x13, 0x88, 0x96, 0x0c, 0, 0, 0, 0, 0, 0, 0, 0];
        p.extend_from_slice(&[
            1, 0, 0, 20, 0xde, 0xad, 0xbe, 0xef, 0, 1, 0, 0, 0, 10, 0, 10, 0, 0, 0, 1,
        ]);
        patch_ports(&mut p, None, None);
        let v = SctpPacket::new_checked(&p[..]).unwrap();
        assert_eq!((v.sport(), v.dport()), (5000, 38412));
        assert_eq!(v.checksum(), compute_checksum(&p));
        patch_ports(&mut p, None, Some(9000));
        let v = SctpPacket::new_checked(&p[..]).unwrap();
        assert_eq!(v.dport(), 9000);
        assert_eq!(v.checksum(), compute_checksum(&p));
    }
}
