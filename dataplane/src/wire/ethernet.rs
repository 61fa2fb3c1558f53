//! Ethernet II with up to two 802.1Q / 802.1ad tags.

use super::be16;

pub const HEADER_LEN: usize = 14;
pub const VLAN_TAG_LEN: usize = 4;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88a8;

mod field {
    use core::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: usize = 12;
}

/// The link layer of a frame, tags walked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L2 {
    /// The innermost VLAN ID, if the frame was tagged.
    pub vlan: Option<u16>,
    /// The EtherType after the tags.
    pub ethertype: u16,
    /// Where the network header starts.
    pub payload_offset: usize,
}

/// Why the link layer could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L2Error {
    Truncated,
    VlanTruncated,
    VlanTooDeep,
}

/// A view over an Ethernet header.
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    pub fn new_checked(buf: T) -> Option<Self> {
        (buf.as_ref().len() >= HEADER_LEN).then_some(EthernetFrame { buf })
    }
    pub fn dst(&self) -> [u8; 6] {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buf.as_ref()[field::DST]);
        m
    }
    pub fn src(&self) -> [u8; 6] {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buf.as_ref()[field::SRC]);
        m
    }
    pub fn ethertype(&self) -> u16 {
        be16(self.buf.as_ref(), field::ETHERTYPE)
    }

    /// Walks up to two VLAN tags to the network header.
    #[inline]
    pub fn l2(&self) -> Result<L2, L2Error> {
        let b = self.buf.as_ref();
        let mut ethertype = self.ethertype();
        let mut at = HEADER_LEN;
        let mut vlan = None;
        let mut tags = 0;
        while ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
            if tags == 2 {
                return Err(L2Error::VlanTooDeep);
            }
            if b.len() < at + VLAN_TAG_LEN {
                return Err(L2Error::VlanTruncated);
            }
            vlan = Some(be16(b, at) & 0x0fff);
            ethertype = be16(b, at + 2);
            at += VLAN_TAG_LEN;
            tags += 1;
        }
        Ok(L2 {
            vlan,
            ethertype,
            payload_offset: at,
        })
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    pub fn set_dst(&mut self, mac: [u8; 6]) {
        self.buf.as_mut()[field::DST].copy_from_slice(&mac);
    }
    pub fn set_src(&mut self, mac: [u8; 6]) {
        self.buf.as_mut()[field::SRC].copy_from_slice(&mac);
    }
}

/// Reads the link layer of `frame`.
#[inline]
pub fn parse(frame: &[u8]) -> Result<L2, L2Error> {
    EthernetFrame::new_checked(frame)
        .ok_or(L2Error::Truncated)?
        .l2()
}

#[cfg(test)]
mod tests {
    use super::*;

    // dst 02:00:00:00:00:02, src 02:00:00:00:00:01, 802.1Q VLAN 100, IPv4.
    const TAGGED: [u8; 18] = [
        0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x81, 0x00, 0x00, 0x64, 0x08, 0x00,
    ];

    #[test]
    fn walks_one_tag() {
        let l2 = parse(&TAGGED).unwrap();
        assert_eq!(
            l2,
            L2 {
                vlan: Some(100),
                ethertype: ETHERTYPE_IPV4,
                payload_offset: 18
            }
        );
        let f = EthernetFrame::new_checked(&TAGGED[..]).unwrap();
        assert_eq!(f.src(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(f.dst(), [2, 0, 0, 0, 0, 2]);
    }

    #[test]
    fn truncated_tag_and_deep_stack_are_errors() {
        assert_eq!(parse(&TAGGED[..16]), Err(L2Error::VlanTruncated));
        assert_eq!(parse(&TAGGED[..13]), Err(L2Error::Truncated));
        let mut deep = TAGGED[..12].to_vec();
        for _ in 0..3 {
            deep.extend_from_slice(&[0x81, 0x00, 0x00, 0x01]);
        }
        deep.extend_from_slice(&[0x08, 0x00]);
        assert_eq!(parse(&deep), Err(L2Error::VlanTooDeep));
    }

    #[test]
    fn setters_write_in_place() {
        let mut b = TAGGED;
        let mut f = EthernetFrame::new_checked(&mut b[..]).unwrap();
        f.set_dst([0xaa; 6]);
        f.set_src([0xbb; 6]);
        assert_eq!(
            &b[..12],
            &[0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb]
        );
    }
}
