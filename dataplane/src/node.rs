//! Stages 1 to 6 for one frame arriving on a node port: the gateway's
//! neighbour answers, the pipeline (decode, conntrack, Services, NAT), then
//! the route and the hop (TTL, next-hop MACs, ICMP time-exceeded). Pure like
//! the stages it strings together: every backend's worker calls it, and the
//! tests call it on bytes.

use crate::drop::{DropReason, Verdict};
use crate::flow::{Addr, Family};
use crate::neighbor::{self, Gateway};
use crate::pipeline::{count, process_ip_from, Tables, Worker};
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

/// Whether `src` may be the source of a frame from `ingress`.
#[inline]
fn source_allowed(routes: &Routes, ingress: Ingress, src: Addr, family: Family) -> bool {
    match ingress {
        Ingress::Host | Ingress::Uplink => true,
        Ingress::Pod(port) => routes.pod_port(src) == Some(port) || link_scoped(src, family),
    }
}

/// `::` and `fe80::/10`: the IPv6 sources of a pod's neighbour and
/// router discovery and MLD, which stay on the link (their destinations
/// are multicast or the gateway). IPv4 has none a pod uses (ARP is
/// answered before this).
fn link_scoped(a: Addr, family: Family) -> bool {
    family == Family::V6 && (a.0 == 0 || a.0 >> 118 == 0x3fa)
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
    let (verdict, ip) = process_ip_from(frame, &t.pipeline, w, |src, family| {
        source_allowed(t.routes, ingress, src, family)
    });
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
