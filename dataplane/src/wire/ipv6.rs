//! IPv6 (RFC 8200): fixed header view and the extension-header walk.

use super::be16;
use super::checksum::Delta;

pub const HEADER_LEN: usize = 40;
/// The walk stops here: real traffic has two or three at most, and each
/// costs a branch, so a long chain is a cost attack.
pub const MAX_EXT_HEADERS: usize = 8;

pub const NH_HOP_BY_HOP: u8 = 0;
pub const NH_ROUTING: u8 = 43;
pub const NH_FRAGMENT: u8 = 44;
pub const NH_ESP: u8 = 50;
pub const NH_AH: u8 = 51;
pub const NH_NONE: u8 = 59;
pub const NH_DEST_OPTS: u8 = 60;
pub const NH_MOBILITY: u8 = 135;
pub const NH_HIP: u8 = 139;
pub const NH_SHIM6: u8 = 140;

mod field {
    pub const VERSION: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: usize = 8;
    pub const DST: usize = 24;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipv6Error {
    Truncated,
    BadVersion,
    BadPayloadLen,
    ExtTruncated,
    ExtTooMany,
}

/// A fragment header met on the walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Fragment {
    pub ident: u32,
    /// Offset of this fragment's data in the datagram, in bytes.
    pub offset: usize,
    pub more: bool,
}

/// The end of the extension-header walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Upper {
    /// The upper-layer protocol (or NH_ESP / NH_NONE where the walk stops).
    pub protocol: u8,
    /// Offset of the upper-layer header from the start of the IPv6 header.
    pub offset: usize,
    pub fragment: Option<Ipv6Fragment>,
}

/// A view over an IPv6 header with `40 + payload_len <= buf.len()`.
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    pub fn new_checked(buf: T) -> Result<Self, Ipv6Error> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Ipv6Error::Truncated);
        }
        if b[field::VERSION] >> 4 != 6 {
            return Err(Ipv6Error::BadVersion);
        }
        // A payload length of zero with a Jumbo option (RFC 2675) cannot fit
        // an XDP frame; it is refused by the length check below like any
        // other lie.
        if HEADER_LEN + usize::from(be16(b, field::PAYLOAD_LEN)) > b.len() {
            return Err(Ipv6Error::BadPayloadLen);
        }
        Ok(Ipv6Packet { buf })
    }

    /// A view over the fixed header alone, payload held elsewhere.
    pub fn new_header(buf: T) -> Result<Self, Ipv6Error> {
        if buf.as_ref().len() < HEADER_LEN {
            return Err(Ipv6Error::Truncated);
        }
        Ok(Ipv6Packet { buf })
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }
    pub fn payload_len(&self) -> usize {
        usize::from(be16(self.b(), field::PAYLOAD_LEN))
    }
    pub fn next_header(&self) -> u8 {
        self.b()[field::NEXT_HEADER]
    }
    pub fn hop_limit(&self) -> u8 {
        self.b()[field::HOP_LIMIT]
    }
    pub fn src(&self) -> [u8; 16] {
        let mut a = [0; 16];
        a.copy_from_slice(&self.b()[field::SRC..field::SRC + 16]);
        a
    }
    pub fn dst(&self) -> [u8; 16] {
        let mut a = [0; 16];
        a.copy_from_slice(&self.b()[field::DST..field::DST + 16]);
        a
    }

    /// Walks the extension headers to the upper layer.
    ///
    /// Hop-by-hop, routing, destination options, mobility, HIP and shim6 use
    /// the generic (next, length in 8-octet units) layout; AH counts in
    /// 4-octet units; the fragment header is fixed at 8 bytes. ESP and "no
    /// next header" end the walk: nothing past them is readable.
    pub fn upper(&self) -> Result<Ipv6Upper, Ipv6Error> {
        let b = self.b();
        let end = HEADER_LEN + self.payload_len();
        let mut nh = self.next_header();
        let mut at = HEADER_LEN;
        let mut fragment = None;
        for _ in 0..=MAX_EXT_HEADERS {
            let len = match nh {
                NH_HOP_BY_HOP | NH_ROUTING | NH_DEST_OPTS | NH_MOBILITY | NH_HIP | NH_SHIM6 => {
                    if at + 2 > end {
                        return Err(Ipv6Error::ExtTruncated);
                    }
                    (usize::from(b[at + 1]) + 1) * 8
                }
                NH_AH => {
                    if at + 2 > end {
                        return Err(Ipv6Error::ExtTruncated);
                    }
                    (usize::from(b[at + 1]) + 2) * 4
                }
                NH_FRAGMENT => {
                    if at + 8 > end {
                        return Err(Ipv6Error::ExtTruncated);
                    }
                    let off_flags = be16(b, at + 2);
                    fragment = Some(Ipv6Fragment {
                        ident: u32::from_be_bytes([b[at + 4], b[at + 5], b[at + 6], b[at + 7]]),
                        offset: usize::from(off_flags & 0xfff8),
                        more: off_flags & 1 != 0,
                    });
                    8
                }
                _ => {
                    return Ok(Ipv6Upper {
                        protocol: nh,
                        offset: at,
                        fragment,
                    })
                }
            };
            if at + len > end {
                return Err(Ipv6Error::ExtTruncated);
            }
            nh = b[at];
            at += len;
            // Past a non-first fragment the bytes are the datagram's middle,
            // not headers.
            if let Some(f) = fragment {
                if f.offset != 0 {
                    return Ok(Ipv6Upper {
                        protocol: nh,
                        offset: at,
                        fragment,
                    });
                }
            }
        }
        Err(Ipv6Error::ExtTooMany)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    pub fn set_src(&mut self, a: [u8; 16]) {
        self.buf.as_mut()[field::SRC..field::SRC + 16].copy_from_slice(&a);
    }
    pub fn set_dst(&mut self, a: [u8; 16]) {
        self.buf.as_mut()[field::DST..field::DST + 16].copy_from_slice(&a);
    }
    /// Rewrites the addresses given (`None`: kept) and returns the change,
    /// for the transport's checksum (IPv6 has no header checksum; its
    /// upper layers' pseudo-header covers the addresses).
    #[inline]
    pub fn rewrite_addrs(&mut self, src: Option<[u8; 16]>, dst: Option<[u8; 16]>) -> Delta {
        let mut d = Delta::NONE;
        for (at, new) in [(field::SRC, src), (field::DST, dst)] {
            if let Some(new) = new {
                let b = self.buf.as_mut();
                d = d.and(Delta::bytes(&b[at..at + 16], &new));
                b[at..at + 16].copy_from_slice(&new);
            }
        }
        d
    }
    pub fn decrement_hop_limit(&mut self) {
        let b = self.buf.as_mut();
        b[field::HOP_LIMIT] = b[field::HOP_LIMIT].wrapping_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2001:db8:1::2 -> 2001:db8:ffff::a, hop-by-hop (PadN) then
    /// destination options then UDP, as `ping -6` and `ip6tables` tests send.
    fn with_exts() -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 0, NH_HOP_BY_HOP, 64];
        p.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        p.extend_from_slice(&[
            0x20, 0x01, 0x0d, 0xb8, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a,
        ]);
        p.extend_from_slice(&[NH_DEST_OPTS, 0, 1, 4, 0, 0, 0, 0]); // HbH, PadN
        p.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]); // DstOpts, PadN
        p.extend_from_slice(&[0x30, 0x39, 0x00, 0x35, 0x00, 0x08, 0x00, 0x00]); // UDP
        let plen = (p.len() - HEADER_LEN) as u16;
        p[4..6].copy_from_slice(&plen.to_be_bytes());
        p
    }

    #[test]
    fn walks_to_udp() {
        let p = with_exts();
        let v = Ipv6Packet::new_checked(&p[..]).unwrap();
        assert_eq!(
            v.upper().unwrap(),
            Ipv6Upper {
                protocol: 17,
                offset: 56,
                fragment: None
            }
        );
        assert_eq!(v.hop_limit(), 64);
    }

    #[test]
    fn truncated_and_too_long_chains() {
        let p = with_exts();
        assert_eq!(
            Ipv6Packet::new_checked(&p[..50]).err(),
            Some(Ipv6Error::BadPayloadLen)
        );
        let mut short = p.clone();
        short[4..6].copy_from_slice(&10u16.to_be_bytes());
        let v = Ipv6Packet::new_checked(&short[..]).unwrap();
        assert_eq!(v.upper().err(), Some(Ipv6Error::ExtTruncated));

        let mut long = p[..40].to_vec();
        for _ in 0..10 {
            long.extend_from_slice(&[NH_DEST_OPTS, 0, 1, 4, 0, 0, 0, 0]);
        }
        long[6] = NH_DEST_OPTS;
        let plen = (long.len() - 40) as u16;
        long[4..6].copy_from_slice(&plen.to_be_bytes());
        let v = Ipv6Packet::new_checked(&long[..]).unwrap();
        assert_eq!(v.upper().err(), Some(Ipv6Error::ExtTooMany));
    }

    #[test]
    fn fragment_header_is_read() {
        let mut p = with_exts()[..40].to_vec();
        p[6] = NH_FRAGMENT;
        // next UDP, offset 1448 bytes (181 units), more fragments, id 0xdeadbeef
        let off = (1448u16 & 0xfff8) | 1;
        p.extend_from_slice(&[17, 0]);
        p.extend_from_slice(&off.to_be_bytes());
        p.extend_from_slice(&0xdead_beefu32.to_be_bytes());
        p.extend_from_slice(&[0xab; 16]);
        let plen = (p.len() - 40) as u16;
        p[4..6].copy_from_slice(&plen.to_be_bytes());
        let u = Ipv6Packet::new_checked(&p[..]).unwrap().upper().unwrap();
        assert_eq!(u.protocol, 17);
        assert_eq!(u.offset, 48);
        assert_eq!(
            u.fragment,
            Some(Ipv6Fragment {
                ident: 0xdead_beef,
                offset: 1448,
                more: true
            })
        );
    }
}
