//! Stage 2: the pod gateway's neighbour answers.
//!
//! A pod has one route, a default via a link-local gateway that exists on
//! no wire (169.254.1.1 and fe80::1, as Calico does). Sluice answers the
//! pod's ARP and Neighbor Solicitation for it with the gateway's MAC, so
//! that the pod sends everything to the dataplane and needs nothing else
//! configured. Replies are built from the request into a caller's buffer
//! (an XDP frame has room for either), checksums computed in full: they are
//! small and rare.

use crate::flow::{Addr, Family};
use crate::wire::{arp, checksum, ethernet, ipv6};

/// The gateway a pod routes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gateway {
    pub mac: [u8; 6],
    pub v4: [u8; 4],
    pub v6: [u8; 16],
}

impl Gateway {
    /// The gateway's address in `family`.
    #[inline]
    pub fn addr(&self, family: Family) -> Addr {
        match family {
            Family::V4 => Addr::from_v4(self.v4),
            Family::V6 => Addr::from_v6(self.v6),
        }
    }

    /// 169.254.1.1 and fe80::1 with a locally administered MAC.
    pub const DEFAULT: Gateway = Gateway {
        mac: [0xee, 0xee, 0xee, 0xee, 0xee, 0xee],
        v4: [169, 254, 1, 1],
        v6: [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    };
}

const ND_SOLICIT: u8 = 135;
const ND_ADVERT: u8 = 136;
const OPT_SOURCE_LL: u8 = 1;
const OPT_TARGET_LL: u8 = 2;
/// NA flags: Router, Solicited, Override (RFC 4861 section 4.4).
const NA_FLAGS: u8 = 0x80 | 0x40 | 0x20;

/// The length of the reply written to `out`, or `None` if `frame` is no
/// question for the gateway. For tools and tests that hold one frame: the
/// burst function calls `answer_arp` and `answer_ns` on what decode found.
pub fn answer(frame: &[u8], gw: &Gateway, out: &mut [u8]) -> Option<usize> {
    let l2 = ethernet::parse(frame).ok()?;
    match l2.ethertype {
        ethernet::ETHERTYPE_ARP => answer_arp(frame, l2.payload_offset, gw, out),
        ethernet::ETHERTYPE_IPV6 => answer_ns(frame, l2.payload_offset, gw, out),
        _ => None,
    }
}

/// The ARP reply for a request for the gateway whose ARP header is at
/// `l3`, written to `out`: its length, or `None` if it is no such request.
pub fn answer_arp(frame: &[u8], l3: usize, gw: &Gateway, out: &mut [u8]) -> Option<usize> {
    let a = arp::ArpPacket::new_checked(frame.get(l3..)?)?;
    if a.operation() != arp::OP_REQUEST || a.target_ip() != gw.v4 {
        return None;
    }
    let len = l3 + arp::LEN;
    let out = out.get_mut(..len)?;
    out[..l3].copy_from_slice(&frame[..l3]); // keeps a VLAN tag
    out[0..6].copy_from_slice(&a.sender_mac());
    out[6..12].copy_from_slice(&gw.mac);
    let r = &mut out[l3..];
    r[..8].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, arp::OP_REPLY as u8]);
    r[8..14].copy_from_slice(&gw.mac);
    r[14..18].copy_from_slice(&gw.v4);
    r[18..24].copy_from_slice(&a.sender_mac());
    r[24..28].copy_from_slice(&a.sender_ip());
    Some(len)
}

/// The Neighbor Advertisement for a solicitation of the gateway whose IPv6
/// header is at `l3`, written to `out`: its length, or `None` if it is no
/// such solicitation.
pub fn answer_ns(frame: &[u8], l3: usize, gw: &Gateway, out: &mut [u8]) -> Option<usize> {
    let body = frame.get(l3..)?;
    let ip = ipv6::Ipv6Packet::new_checked(body).ok()?;
    // RFC 4861 7.1.1: hop limit 255, ICMPv6 straight after the header.
    if ip.next_header() != 58 || ip.hop_limit() != 255 {
        return None;
    }
    let end = ipv6::HEADER_LEN + ip.payload_len();
    let ns = body.get(ipv6::HEADER_LEN..end)?;
    if ns.len() < 24 || ns[0] != ND_SOLICIT || ns[1] != 0 || ns[8..24] != gw.v6 {
        return None;
    }
    // A solicitation from the unspecified address is duplicate address
    // detection: someone wants the gateway's address; not ours to answer.
    let src = ip.src();
    if src == [0; 16] {
        return None;
    }
    let mut sender_mac = None;
    let mut opts = &ns[24..];
    while opts.len() >= 8 {
        let olen = usize::from(opts[1]) * 8;
        if olen == 0 || olen > opts.len() {
            return None;
        }
        if opts[0] == OPT_SOURCE_LL && olen == 8 {
            let mut m = [0; 6];
            m.copy_from_slice(&opts[2..8]);
            sender_mac = Some(m);
        }
        opts = &opts[olen..];
    }
    // Without the option the pod's MAC is the frame's source.
    let sender_mac = sender_mac.unwrap_or_else(|| {
        let mut m = [0; 6];
        m.copy_from_slice(&frame[6..12]);
        m
    });
    let na_len = 24 + 8;
    let len = l3 + ipv6::HEADER_LEN + na_len;
    let out = out.get_mut(..len)?;
    out[..l3].copy_from_slice(&frame[..l3]);
    out[0..6].copy_from_slice(&sender_mac);
    out[6..12].copy_from_slice(&gw.mac);
    let h = &mut out[l3..l3 + ipv6::HEADER_LEN];
    h[..4].copy_from_slice(&[0x60, 0, 0, 0]);
    h[4..6].copy_from_slice(&(na_len as u16).to_be_bytes());
    h[6] = 58;
    h[7] = 255;
    h[8..24].copy_from_slice(&gw.v6);
    h[24..40].copy_from_slice(&src);
    let m = &mut out[l3 + ipv6::HEADER_LEN..len];
    m.fill(0);
    m[0] = ND_ADVERT;
    m[4] = NA_FLAGS;
    m[8..24].copy_from_slice(&gw.v6);
    m[24] = OPT_TARGET_LL;
    m[25] = 1;
    m[26..32].copy_from_slice(&gw.mac);
    let sum = checksum::pseudo_v6(gw.v6, src, 58, na_len as u32) + checksum::sum(m);
    let c = !checksum::fold(sum);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    Some(len)
}
