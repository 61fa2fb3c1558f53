//! The ICMP errors the dataplane answers with itself, written into a
//! buffer of the burst's: time-exceeded from the pod gateway when a TTL
//! runs out here, port-unreachable from a ClusterIP when the Service has
//! no endpoint for the packet (kube-proxy's REJECT).
//!
//! Each quotes the offending packet as it arrived, so that the sender's
//! stack can match it to its socket, and goes back to the sender's MAC
//! from the gateway's.

use crate::flow::{Addr, Family};
use crate::neighbor::Gateway;
use crate::wire::checksum;

/// Bytes of the offending packet an ICMPv4 error quotes, at most: RFC 1812
/// 4.3.2.3, the error no longer than 576 bytes.
const V4_QUOTE: usize = 576 - 20 - 8;
/// The same for ICMPv6 within the minimum MTU (RFC 4443 2.4 (c)).
const V6_QUOTE: usize = 1280 - 40 - 8;

/// Which error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpError {
    /// TTL or hop limit exceeded in transit.
    TimeExceeded,
    /// Destination port unreachable: the sender's connect() or recv()
    /// fails with ECONNREFUSED at once.
    PortUnreachable,
    /// Fragmentation needed and DF set (ICMPv4) / packet too big (ICMPv6),
    /// with the next hop's MTU: the sender's path MTU discovery.
    TooBig { mtu: u16 },
}

impl IcmpError {
    /// (type, code) in ICMPv4 (RFC 792) and ICMPv6 (RFC 4443).
    fn type_code(self, family: Family) -> (u8, u8) {
        match (self, family) {
            (IcmpError::TimeExceeded, Family::V4) => (11, 0),
            (IcmpError::TimeExceeded, Family::V6) => (3, 0),
            (IcmpError::PortUnreachable, Family::V4) => (3, 3),
            (IcmpError::PortUnreachable, Family::V6) => (1, 4),
            (IcmpError::TooBig { .. }, Family::V4) => (3, 4),
            (IcmpError::TooBig { .. }, Family::V6) => (2, 0),
        }
    }

    /// The header's second word: the MTU for `TooBig` (RFC 1191: in its
    /// low 16 bits; RFC 4443: all 32), else zero.
    fn rest(self) -> [u8; 4] {
        match self {
            IcmpError::TooBig { mtu } => u32::from(mtu).to_be_bytes(),
            _ => [0; 4],
        }
    }
}

/// Writes error `kind` about the IP packet at `l3` in `frame` into `out`,
/// sent from address `from`; its length, or `None` when none is due (RFC
/// 1812 4.3.2.7 and RFC 4443 2.4: not about an ICMP error, a non-first
/// fragment, or a multicast or unspecified source) or `out` is too small.
#[cold]
#[inline(never)]
pub fn write(
    frame: &[u8],
    l3: usize,
    family: Family,
    kind: IcmpError,
    from: Addr,
    gw: &Gateway,
    out: &mut [u8],
) -> Option<usize> {
    let ip = frame.get(l3..)?;
    let (ty, code) = kind.type_code(family);
    match family {
        Family::V4 => {
            if ip.len() < 20 {
                return None;
            }
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let frag_offset = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
            let is_icmp_error =
                ip[9] == 1 && ip.get(ihl).is_some_and(|&t| !matches!(t, 0 | 8 | 13 | 14));
            let src = [ip[12], ip[13], ip[14], ip[15]];
            if frag_offset != 0 || is_icmp_error || src[0] >= 224 || src == [0; 4] {
                return None;
            }
            let quote = &ip[..ip
                .len()
                .min(V4_QUOTE)
                .min(usize::from(u16::from_be_bytes([ip[2], ip[3]])))];
            let len = l3 + 20 + 8 + quote.len();
            let out = out.get_mut(..len)?;
            ether_reply(frame, l3, gw, out);
            let to = Addr::from_v4(src);
            ip_header(&mut out[l3..], from, to, Family::V4, 1, 8 + quote.len());
            let m = &mut out[l3 + 20..len];
            m[..8].copy_from_slice(&[ty, code, 0, 0, 0, 0, 0, 0]);
            m[4..8].copy_from_slice(&kind.rest());
            m[8..].copy_from_slice(quote);
            let c = checksum::checksum(m);
            m[2..4].copy_from_slice(&c.to_be_bytes());
            Some(len)
        }
        Family::V6 => {
            if ip.len() < 40 {
                return None;
            }
            let mut src = [0u8; 16];
            src.copy_from_slice(&ip[8..24]);
            let is_icmp_error = ip[6] == 58 && ip.get(40).is_some_and(|&t| t < 128);
            if is_icmp_error || src[0] == 0xff || src == [0; 16] {
                return None;
            }
            let quote = &ip[..ip
                .len()
                .min(V6_QUOTE)
                .min(40 + usize::from(u16::from_be_bytes([ip[4], ip[5]])))];
            let plen = 8 + quote.len();
            let len = l3 + 40 + plen;
            let out = out.get_mut(..len)?;
            ether_reply(frame, l3, gw, out);
            ip_header(
                &mut out[l3..],
                from,
                Addr::from_v6(src),
                Family::V6,
                58,
                plen,
            );
            let from = from.v6_octets();
            let m = &mut out[l3 + 40..len];
            m[..8].copy_from_slice(&[ty, code, 0, 0, 0, 0, 0, 0]);
            m[4..8].copy_from_slice(&kind.rest());
            m[8..].copy_from_slice(quote);
            let sum = checksum::pseudo_v6(from, src, 58, plen as u32) + checksum::sum(m);
            let c = !checksum::fold(sum);
            m[2..4].copy_from_slice(&c.to_be_bytes());
            Some(len)
        }
    }
}

/// The IP header of an answer the dataplane writes, at the start of
/// `out`: IPv4 with DF and TTL 64 (its checksum computed), or IPv6 with
/// hop limit 64, carrying `payload` bytes of protocol `proto`.
pub(crate) fn ip_header(
    out: &mut [u8],
    src: Addr,
    dst: Addr,
    family: Family,
    proto: u8,
    payload: usize,
) {
    match family {
        Family::V4 => {
            let h = &mut out[..20];
            h.copy_from_slice(&[
                0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ]);
            h[2..4].copy_from_slice(&((20 + payload) as u16).to_be_bytes());
            h[12..16].copy_from_slice(&src.v4_octets());
            h[16..20].copy_from_slice(&dst.v4_octets());
            let c = checksum::checksum(h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
        }
        Family::V6 => {
            let h = &mut out[..40];
            h[..8].copy_from_slice(&[0x60, 0, 0, 0, 0, 0, proto, 64]);
            h[4..6].copy_from_slice(&(payload as u16).to_be_bytes());
            h[8..24].copy_from_slice(&src.v6_octets());
            h[24..40].copy_from_slice(&dst.v6_octets());
        }
    }
}

/// The reply's Ethernet header (and VLAN tag, if any): back to the sender,
/// from the gateway.
pub(crate) fn ether_reply(frame: &[u8], l3: usize, gw: &Gateway, out: &mut [u8]) {
    out[..l3].copy_from_slice(&frame[..l3]);
    out[0..6].copy_from_slice(&frame[6..12]);
    out[6..12].copy_from_slice(&gw.mac);
}
