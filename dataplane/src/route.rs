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
use crate::icmp_error::{self, IcmpError};
use crate::neighbor::Gateway;
use crate::wire::{ethernet, ipv4, ipv6};

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

    /// The node's first address of `family` that is not link-local.
    pub fn node_addr(&self, family: Family) -> Option<Addr> {
        self.host.iter().copied().find(|&a| {
            a.is_v4() == (family == Family::V4)
                && match family {
                    Family::V4 => a.v4_octets()[..2] != [169, 254],
                    Family::V6 => a.v6_octets()[..2] != [0xfe, 0x80],
                }
        })
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
        let from = gw.addr(family);
        return match icmp_error::write(frame, l3, family, IcmpError::TimeExceeded, from, gw, out) {
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
