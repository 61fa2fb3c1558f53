//! ARP for Ethernet and IPv4 (RFC 826), the only kind a pod sends.

use super::be16;

pub const LEN: usize = 28;
pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;

mod field {
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const SHA: usize = 8;
    pub const SPA: usize = 14;
    pub const THA: usize = 18;
    pub const TPA: usize = 24;
}

/// A validated view of an Ethernet/IPv4 ARP packet.
pub struct ArpPacket<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Accepts only hardware type 1 (Ethernet), protocol 0x0800, lengths 6/4.
    pub fn new_checked(buf: T) -> Option<Self> {
        let b = buf.as_ref();
        let ok = b.len() >= LEN
            && be16(b, field::HTYPE) == 1
            && be16(b, field::PTYPE) == 0x0800
            && b[field::HLEN] == 6
            && b[field::PLEN] == 4;
        ok.then_some(ArpPacket { buf })
    }
    pub fn operation(&self) -> u16 {
        be16(self.buf.as_ref(), field::OPER)
    }
    pub fn sender_mac(&self) -> [u8; 6] {
        self.six(field::SHA)
    }
    pub fn target_mac(&self) -> [u8; 6] {
        self.six(field::THA)
    }
    pub fn sender_ip(&self) -> [u8; 4] {
        self.four(field::SPA)
    }
    pub fn target_ip(&self) -> [u8; 4] {
        self.four(field::TPA)
    }
    fn six(&self, at: usize) -> [u8; 6] {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buf.as_ref()[at..at + 6]);
        m
    }
    fn four(&self, at: usize) -> [u8; 4] {
        let mut m = [0; 4];
        m.copy_from_slice(&self.buf.as_ref()[at..at + 4]);
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Who has 169.254.1.1? Tell 198.18.1.2 (02:00:00:00:01:02).
    const REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x01, 0x02, 198,
        18, 1, 2, 0, 0, 0, 0, 0, 0, 169, 254, 1, 1,
    ];

    #[test]
    fn reads_a_request() {
        let a = ArpPacket::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(a.operation(), OP_REQUEST);
        assert_eq!(a.sender_ip(), [198, 18, 1, 2]);
        assert_eq!(a.target_ip(), [169, 254, 1, 1]);
        assert_eq!(a.sender_mac(), [2, 0, 0, 0, 1, 2]);
        assert_eq!(a.target_mac(), [0; 6]);
    }

    #[test]
    fn rejects_short_and_foreign() {
        assert!(ArpPacket::new_checked(&REQUEST[..27]).is_none());
        let mut b = REQUEST;
        b[5] = 16; // an IPv6-sized protocol address is not ARP for IPv4
        assert!(ArpPacket::new_checked(&b[..]).is_none());
    }
}
