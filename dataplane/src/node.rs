//! Stages 1 to 6 for one frame arriving on a node port: the gateway's
//! neighbour answers, the pipeline (decode, conntrack, Services, NAT), then
//! the route and the hop (TTL, next-hop MACs, ICMP time-exceeded). Pure like
//! the stages it strings together: every backend's worker calls it, and the
//! tests call it on bytes.

use crate::drop::{DropReason, Verdict};
use crate::flow::{Addr, Family};
use crate::neighbor::{self, Gateway};
use crate::pipeline::{count, process_ip_screened, Header, Screened, Tables, Worker};
use crate::route::{self, Egress, PortId, Routed, Routes};

/// Everything a node's frame is decided by.
#[derive(Clone, Copy)]
pub struct NodeTables<'a> {
    pub pipeline: Tables<'a>,
    pub routes: &'a Routes,
    pub gateway: Gateway,
}

/// Where a frame came in: what its source address may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ingress {
    /// A pod's port: only that pod's own addresses (and link-local or
    /// unspecified ones, for its neighbour and router discovery, which
    /// are never routed) may be its source.
    Pod(PortId),
    /// The host's exception path: the node sends from any of its
    /// addresses.
    Host,
    /// The uplink: the world's addresses.
    Uplink,
}

/// The screen before conntrack: a pod's source must be its own, and a
/// packet whose TTL runs out here is answered by the route stage with no
/// flow made for it (a flood of TTL=1 SYNs to a VIP fills nothing).
#[inline]
fn screen(routes: &Routes, ingress: Ingress, h: &Header) -> Screened {
    if let Ingress::Pod(port) = ingress {
        let own = routes.pod_port(h.src) == Some(port)
            // Neighbour and router discovery and MLD: from `::` or the
            // pod's link-local address, to a destination of the link.
            || (link_scoped(h.src, h.family) && for_the_link(h.dst, h.family));
        if !own {
            return Screened::Drop(DropReason::SourceSpoofed);
        }
    }
    if h.ttl <= 1 && routes.lookup(h.dst, h.family) != Egress::Host {
        return Screened::Route;
    }
    Screened::Pass
}

/// `::` and `fe80::/10`: the IPv6 sources a pod's neighbour and router
/// discovery and MLD use. IPv4 has none a pod uses (ARP is answered
/// before this).
fn link_scoped(a: Addr, family: Family) -> bool {
    family == Family::V6 && (a.0 == 0 || a.0 >> 118 == 0x3fa)
}

/// Link-local and multicast IPv6 destinations: they stay on the link (the
/// route stage drops them as not routable).
fn for_the_link(a: Addr, family: Family) -> bool {
    family == Family::V6 && (a.0 >> 118 == 0x3fa || a.0 >> 120 == 0xff)
}

/// The flow this frame created, withdrawn: the frame does not leave.
#[inline]
fn withdraw(t: &NodeTables<'_>, w: &mut Worker) {
    if let Some(e) = w.created.take() {
        t.pipeline.conntrack.forget(e);
    }
}

/// What the worker does with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send the frame (rewritten in place) out of this egress.
    Transmit(Egress),
    /// Send the first `n` bytes of the reply buffer back out of the port the
    /// frame came in on (an ARP/NDP answer, an ICMP time-exceeded); the
    /// frame itself is done with.
    Reply(usize),
    /// The host's: hand the frame to the exception path unchanged.
    ToHost,
    Drop(DropReason),
}

/// Decides one frame. `reply` must hold an answer: 1,600 bytes is enough
/// for every reply this writes.
///
/// Every frame is counted once, for its final outcome: `rx` = `forwarded`
/// + `to_host` + drops + `neighbor_replies` + `time_exceeded`.
pub fn handle(
    frame: &mut [u8],
    ingress: Ingress,
    t: &NodeTables<'_>,
    w: &mut Worker,
    reply: &mut [u8],
) -> Action {
    if let Some(n) = neighbor::answer(frame, &t.gateway, reply) {
        w.counters.rx += 1;
        w.counters.neighbor_replies += 1;
        return Action::Reply(n);
    }
    let (verdict, ip) =
        process_ip_screened(frame, &t.pipeline, w, |h| screen(t.routes, ingress, h));
    let (counted, action) = match (verdict, ip) {
        (Verdict::Drop(r), _) => (verdict, Action::Drop(r)),
        (Verdict::ToHost, _) => (verdict, Action::ToHost),
        (Verdict::Forward, None) => {
            let r = DropReason::RewriteOutOfBounds;
            (Verdict::Drop(r), Action::Drop(r))
        }
        (Verdict::Forward, Some((l3, family))) => {
            match route::forward(frame, l3, family, t.routes, &t.gateway, reply) {
                Routed::Transmit(Egress::Host) => (Verdict::ToHost, Action::ToHost),
                Routed::Transmit(e) => (Verdict::Forward, Action::Transmit(e)),
                Routed::TimeExceeded(n) => {
                    w.counters.time_exceeded += 1;
                    withdraw(t, w);
                    return Action::Reply(n);
                }
                Routed::Drop(r) => (Verdict::Drop(r), Action::Drop(r)),
            }
        }
    };
    if matches!(action, Action::Drop(_)) {
        withdraw(t, w);
    }
    count(counted, w);
    action
}
