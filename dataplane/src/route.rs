//! Stage 6: where a packet goes once NAT is done, and the hop's duties on
//! the way: TTL (hop limit) decremented, ICMP time-exceeded when it runs
//! out, and the Ethernet header of the next hop.
//!
//! The node's pods are reached by their /32 (/128) route, as Calico does:
//! each pod's interface has exactly its address behind it. Other nodes' pod
//! CIDRs go to their VTEP over VXLAN; the node's own addresses to the host
//! through the exception path; anything else out of the uplink.

use std::hash::BuildHasherDefault;

use hashbrown::HashMap;

use crate::hash::AddrHasher;

use crate::action::{Action, Answer};
use crate::decode::Parsed;
use crate::drop::DropReason;
use crate::flow::{Addr, Family};
use crate::neighbor::Gateway;
use crate::wire::{checksum, ethernet, ipv4, ipv6};

pub use crate::action::{Egress, PortId};

/// An address prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: Addr,
    pub len: u8,
    pub family: Family,
}

impl Cidr {
    /// Whether `a` (of `family`) lies inside.
    pub fn contains(&self, a: Addr, family: Family) -> bool {
        if family != self.family {
            return false;
        }
        // IPv4 prefixes count from bit 96 of the mapped form.
        let bits = match family {
            Family::V4 => 96 + u32::from(self.len.min(32)),
            Family::V6 => u32::from(self.len.min(128)),
        };
        let mask = if bits == 0 {
            0
        } else {
            u128::MAX << (128 - bits)
        };
        (a.0 & mask) == (self.addr.0 & mask)
    }
}

/// The node's routes: immutable, built by the control plane.
#[derive(Default)]
pub struct Routes {
    pods: HashMap<Addr, (PortId, [u8; 6]), BuildHasherDefault<AddrHasher>>,
    tunnels: Vec<(Cidr, Addr)>,
    host: Vec<Addr>,
}

impl Routes {
    pub fn add_pod(&mut self, addr: Addr, port: PortId, mac: [u8; 6]) {
        self.pods.insert(addr, (port, mac));
    }
    pub fn add_tunnel(&mut self, cidr: Cidr, vtep: Addr) {
        self.tunnels.push((cidr, vtep));
        // Longest prefix first: a node's /24 inside a cluster /16.
        self.tunnels.sort_by_key(|t| std::cmp::Reverse(t.0.len));
    }
    pub fn add_host(&mut self, addr: Addr) {
        self.host.push(addr);
    }

    /// Pod addresses routed.
    pub fn pods(&self) -> usize {
        self.pods.len()
    }

    /// The port of the pod that `addr` belongs to, if a local pod's.
    #[inline]
    pub fn pod_port(&self, addr: Addr) -> Option<PortId> {
        self.pods.get(&addr).map(|&(port, _)| port)
    }

    #[inline]
    pub fn lookup(&self, dst: Addr, family: Family) -> Egress {
        if let Some(&(port, mac)) = self.pods.get(&dst) {
            return Egress::Pod { port, mac };
        }
        if self.host.contains(&dst) {
            return Egress::Host;
        }
        for (cidr, vtep) in &self.tunnels {
            if cidr.contains(dst, family) {
                return Egress::Tunnel { vtep: *vtep };
            }
        }
        Egress::Uplink
    }
}

/// Bytes of the offending packet an ICMPv4 error quotes, at most: RFC 1812
/// 4.3.2.3, the error no longer than 576 bytes.
const V4_QUOTE: usize = 576 - 20 - 8;
/// The same for ICMPv6 within the minimum MTU (RFC 4443 2.4 (c)).
const V6_QUOTE: usize = 1280 - 40 - 8;

/// What the route stage reads of a packet: decode's summary, with the
/// destination as NAT left it. The bytes are not read again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hop {
    /// Offset of the IP header in the frame.
    pub l3: u32,
    pub family: Family,
    /// TTL or hop limit as the packet came.
    pub ttl: u8,
    pub dst: Addr,
}

impl Hop {
    /// The hop of a packet as decoded (before any NAT).
    #[inline]
    pub fn of(p: &Parsed) -> Hop {
        Hop {
            l3: p.l3,
            family: p.family,
            ttl: p.ttl,
            dst: p.dst,
        }
    }
}

/// Routes one IP frame: decrements its TTL, rewrites its Ethernet header
/// for a local pod, or writes the ICMP time-exceeded reply into `out`
/// (`Action::Reply`). The node's own traffic is the host's (`ToHost`).
#[inline(always)]
pub fn forward(
    frame: &mut [u8],
    hop: Hop,
    routes: &Routes,
    gw: &Gateway,
    out: &mut [u8],
) -> Action {
    let (l3, family, dst) = (hop.l3 as usize, hop.family, hop.dst);
    if !routable(dst, family) {
        return Action::Drop(DropReason::NotRoutable);
    }
    let egress = routes.lookup(dst, family);
    // Traffic for the node itself is not forwarded by us: the host's stack
    // does its own TTL accounting.
    if egress == Egress::Host {
        return Action::ToHost;
    }
    if hop.ttl <= 1 {
        return match time_exceeded(frame, l3, family, gw, out) {
            Some(n) => Action::Reply {
                len: n as u16,
                answer: Answer::TimeExceeded,
            },
            None => Action::Drop(DropReason::TtlExceeded),
        };
    }
    let Some(ip) = frame.get_mut(l3..) else {
        return Action::Drop(DropReason::RewriteOutOfBounds);
    };
    match family {
        Family::V4 => match ipv4::Ipv4Packet::new_header(ip) {
            Ok(mut h) => h.decrement_ttl(),
            Err(_) => return Action::Drop(DropReason::RewriteOutOfBounds),
        },
        Family::V6 => match ipv6::Ipv6Packet::new_header(ip) {
            Ok(mut h) => h.decrement_hop_limit(),
            Err(_) => return Action::Drop(DropReason::RewriteOutOfBounds),
        },
    }
    if let Egress::Pod { mac, .. } = egress {
        match ethernet::EthernetFrame::new_checked(&mut *frame) {
            Some(mut e) => {
                e.set_dst(mac);
                e.set_src(gw.mac);
            }
            None => return Action::Drop(DropReason::RewriteOutOfBounds),
        }
    }
    Action::Transmit(egress)
}

/// Whether a destination may be routed at all: link-local, multicast and
/// broadcast addresses belong to the link they were sent on.
fn routable(dst: Addr, family: Family) -> bool {
    match family {
        Family::V4 => {
            let o = dst.v4_octets();
            !(o[0] >= 224 || (o[0] == 169 && o[1] == 254) || o == [0; 4])
        }
        Family::V6 => {
            let o = dst.v6_octets();
            !(o[0] == 0xff || (o[0] == 0xfe && o[1] & 0xc0 == 0x80) || o == [0; 16])
        }
    }
}

/// Writes the ICMP time-exceeded error for the frame into `out`; `None` when
/// none is due (RFC 1812 4.3.2.7: not for an ICMP error, a non-first
/// fragment, or a multicast or unspecified source) or `out` is too small.
#[cold]
#[inline(never)]
fn time_exceeded(
    frame: &[u8],
    l3: usize,
    family: Family,
    gw: &Gateway,
    out: &mut [u8],
) -> Option<usize> {
    let ip = &frame[l3..];
    match family {
        Family::V4 => {
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
            let h = &mut out[l3..l3 + 20];
            h.copy_from_slice(&[
                0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ]);
            h[2..4].copy_from_slice(&((20 + 8 + quote.len()) as u16).to_be_bytes());
            h[12..16].copy_from_slice(&gw.v4);
            h[16..20].copy_from_slice(&src);
            let c = checksum::checksum(h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            let m = &mut out[l3 + 20..len];
            m[..8].copy_from_slice(&[11, 0, 0, 0, 0, 0, 0, 0]);
            m[8..].copy_from_slice(quote);
            let c = checksum::checksum(m);
            m[2..4].copy_from_slice(&c.to_be_bytes());
            Some(len)
        }
        Family::V6 => {
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
            let h = &mut out[l3..l3 + 40];
            h[..8].copy_from_slice(&[0x60, 0, 0, 0, 0, 0, 58, 64]);
            h[4..6].copy_from_slice(&(plen as u16).to_be_bytes());
            h[8..24].copy_from_slice(&gw.v6);
            h[24..40].copy_from_slice(&src);
            let m = &mut out[l3 + 40..len];
            m[..8].copy_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0]);
            m[8..].copy_from_slice(quote);
            let sum = checksum::pseudo_v6(gw.v6, src, 58, plen as u32) + checksum::sum(m);
            let c = !checksum::fold(sum);
            m[2..4].copy_from_slice(&c.to_be_bytes());
            Some(len)
        }
    }
}

/// The reply's Ethernet header (and VLAN tag, if any): back to the sender,
/// from the gateway.
fn ether_reply(frame: &[u8], l3: usize, gw: &Gateway, out: &mut [u8]) {
    out[..l3].copy_from_slice(&frame[..l3]);
    out[0..6].copy_from_slice(&frame[6..12]);
    out[6..12].copy_from_slice(&gw.mac);
}
