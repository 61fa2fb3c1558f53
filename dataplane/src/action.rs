//! What becomes of a frame, the one verdict from decode to the worker
//! (`Action`), and where a frame leaves (`Egress`): the burst function and
//! the route stage both answer in it, so nothing is translated on the way.

use crate::drop::DropReason;
use crate::flow::Addr;

/// An interface the dataplane owns (a pod's host-side veth, the uplink).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortId(pub u16);

/// Where a packet leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Egress {
    /// A local pod, on this port, with this MAC.
    Pod { port: PortId, mac: [u8; 6] },
    /// Another node's pod: VXLAN to that node's tunnel endpoint.
    Tunnel { vtep: Addr },
    /// The node itself: the exception path to the host kernel.
    Host,
    /// Everything else: out of the uplink.
    Uplink,
}

/// An answer the burst wrote for a frame, in place of forwarding it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// ARP or NDP for the pod gateway.
    Neighbor,
    /// ICMP time-exceeded: the frame's TTL ran out here.
    TimeExceeded,
    /// ICMP port-unreachable from a ClusterIP: the Service has no
    /// endpoint for the packet's port.
    Reject,
    /// TCP reset from a ClusterIP: the connection's backend was deleted
    /// from its Service.
    Reset,
}

/// What becomes of a frame: the one verdict from decode to the worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send the frame (rewritten in place, ready for its next hop) out of
    /// this egress.
    Transmit(Egress),
    /// Send the answer written for this frame (`pipeline::Core::reply`, `len`
    /// bytes) back out of the port the frame came in on; the frame itself
    /// is done with.
    Reply { len: u16, answer: Answer },
    /// The host's: hand the frame to the exception path unchanged.
    ToHost,
    /// Dropped (already counted under its reason).
    Drop(DropReason),
    /// A later fragment whose first has not passed yet: the caller holds
    /// it and gives it again once it has (only for a caller that said it
    /// holds: `Core::hold_fragments`; others get `fragment_unknown`).
    Hold,
}
