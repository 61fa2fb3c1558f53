//! ICMP (RFC 792) and ICMPv6 (RFC 4443): type, code, and the echo
//! identifier that conntrack treats as a port.

use super::checksum::Delta;
use super::{be16, put16};

pub const HEADER_LEN: usize = 8;

pub const V4_ECHO_REPLY: u8 = 0;
pub const V4_DEST_UNREACHABLE: u8 = 3;
pub const V4_ECHO_REQUEST: u8 = 8;
pub const V4_TIME_EXCEEDED: u8 = 11;
pub const V6_DEST_UNREACHABLE: u8 = 1;
pub const V6_PACKET_TOO_BIG: u8 = 2;
pub const V6_TIME_EXCEEDED: u8 = 3;
pub const V6_ECHO_REQUEST: u8 = 128;
pub const V6_ECHO_REPLY: u8 = 129;

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const IDENT: usize = 4;
}

pub struct IcmpPacket<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    pub fn new_checked(buf: T) -> Option<Self> {
        (buf.as_ref().len() >= HEADER_LEN).then_some(IcmpPacket { buf })
    }
    pub fn msg_type(&self) -> u8 {
        self.buf.as_ref()[field::TYPE]
    }
    pub fn code(&self) -> u8 {
        self.buf.as_ref()[field::CODE]
    }
    pub fn ident(&self) -> u16 {
        be16(self.buf.as_ref(), field::IDENT)
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), field::CHECKSUM)
    }
}

/// What kind of ICMP message, as far as flows are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpKind {
    EchoRequest,
    EchoReply,
    /// Destination unreachable, time exceeded, packet too big: they carry
    /// the head of the packet that caused them.
    Error,
    Other,
}

pub fn classify_v4(t: u8) -> IcmpKind {
    match t {
        V4_ECHO_REQUEST => IcmpKind::EchoRequest,
        V4_ECHO_REPLY => IcmpKind::EchoReply,
        V4_DEST_UNREACHABLE | V4_TIME_EXCEEDED => IcmpKind::Error,
        _ => IcmpKind::Other,
    }
}

pub fn classify_v6(t: u8) -> IcmpKind {
    match t {
        V6_ECHO_REQUEST => IcmpKind::EchoRequest,
        V6_ECHO_REPLY => IcmpKind::EchoReply,
        V6_DEST_UNREACHABLE | V6_PACKET_TOO_BIG | V6_TIME_EXCEEDED => IcmpKind::Error,
        _ => IcmpKind::Other,
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    /// Rewrites the echo identifier if given and patches the checksum once,
    /// for it and for `pseudo` (ICMPv6's checksum covers the addresses
    /// through its pseudo-header; ICMPv4's does not, and gets none).
    #[inline]
    pub fn rewrite(&mut self, ident: Option<u16>, pseudo: Delta) {
        let b = self.buf.as_mut();
        let mut d = pseudo;
        if let Some(new) = ident {
            d = d.and(Delta::word(be16(b, field::IDENT), new));
            put16(b, field::IDENT, new);
        }
        if !d.is_none() {
            let csum = d.apply(be16(b, field::CHECKSUM));
            put16(b, field::CHECKSUM, csum);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum;

    // `ping` echo request, id 0x1c2b, seq 1, 8 bytes of payload.
    fn echo() -> [u8; 16] {
        let mut m = [
            8, 0, 0, 0, 0x1c, 0x2b, 0, 1, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
        ];
        let c = checksum::checksum(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        m
    }

    #[test]
    fn reads_echo_and_patches_ident() {
        let mut m = echo();
        let v = IcmpPacket::new_checked(&m[..]).unwrap();
        assert_eq!(classify_v4(v.msg_type()), IcmpKind::EchoRequest);
        assert_eq!(v.ident(), 0x1c2b);
        IcmpPacket::new_checked(&mut m[..])
            .unwrap()
            .rewrite(Some(0x0707), Delta::NONE);
        assert_eq!(checksum::fold(checksum::sum(&m)), 0xffff);
        assert_eq!(IcmpPacket::new_checked(&m[..]).unwrap().ident(), 0x0707);
    }

    #[test]
    fn classification() {
        assert_eq!(classify_v4(3), IcmpKind::Error);
        assert_eq!(classify_v6(129), IcmpKind::EchoReply);
        assert_eq!(classify_v6(135), IcmpKind::Other); // neighbour solicitation
    }
}
