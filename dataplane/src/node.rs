//! Stages 1 to 6 for one frame arriving on a node port: the gateway's
//! neighbour answers, the pipeline (decode, conntrack, Services, NAT), then
//! the route and the hop (TTL, next-hop MACs, ICMP time-exceeded). Pure like
//! the stages it strings together: every backend's worker calls it, and the
//! tests call it on bytes.

use crate::drop::{DropReason, Verdict};
use crate::neighbor::{self, Gateway};
use crate::pipeline::{count, process_ip, Tables, Worker};
use crate::route::{self, Egress, Routed, Routes};

/// Everything a node's frame is decided by.
#[derive(Clone, Copy)]
pub struct NodeTables<'a> {
    pub pipeline: Tables<'a>,
    pub routes: &'a Routes,
    pub gateway: Gateway,
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
pub fn handle(frame: &mut [u8], t: &NodeTables<'_>, w: &mut Worker, reply: &mut [u8]) -> Action {
    if let Some(n) = neighbor::answer(frame, &t.gateway, reply) {
        w.counters.rx += 1;
        w.counters.neighbor_replies += 1;
        return Action::Reply(n);
    }
    let (verdict, ip) = process_ip(frame, &t.pipeline, w);
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
                    return Action::Reply(n);
                }
                Routed::Drop(r) => (Verdict::Drop(r), Action::Drop(r)),
            }
        }
    };
    count(counted, w);
    action
}
