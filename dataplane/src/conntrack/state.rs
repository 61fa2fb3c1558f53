//! Flow states, their transitions from TCP flags, and their timeouts.

use crate::wire::tcp;

/// Which way a packet travels relative to the flow's first packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Dir {
    /// Same direction as the packet that created the flow.
    Original = 0,
    /// The other way: replies.
    Reply = 1,
}

/// The state of a flow, TCP states from the flags seen; every other
/// protocol is `New` until a reply is seen and `Established` after.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum FlowState {
    /// A slot that holds no flow.
    Free = 0,
    /// TCP: SYN seen, nothing back yet. Others: no reply yet.
    New = 1,
    /// TCP: SYN-ACK seen from the reply side, waiting for the final ACK.
    SynReceived = 2,
    Established = 3,
    /// TCP: a FIN seen in one direction or both.
    Closing = 4,
    /// TCP: RST seen, or both FINs seen and acknowledged.
    Closed = 5,
}

impl FlowState {
    pub fn from_u8(v: u8) -> FlowState {
        match v {
            1 => FlowState::New,
            2 => FlowState::SynReceived,
            3 => FlowState::Established,
            4 => FlowState::Closing,
            5 => FlowState::Closed,
            _ => FlowState::Free,
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            FlowState::Free => "free",
            FlowState::New => "new",
            FlowState::SynReceived => "syn_received",
            FlowState::Established => "established",
            FlowState::Closing => "closing",
            FlowState::Closed => "closed",
        }
    }
}

/// Flags kept beside the state.
pub mod flags {
    /// A packet has been seen in the reply direction.
    pub const SEEN_REPLY: u8 = 0x01;
    pub const FIN_ORIGINAL: u8 = 0x02;
    pub const FIN_REPLY: u8 = 0x04;
    /// TCP flow picked up mid-stream (no SYN seen), as after a restart.
    pub const PICKED_UP: u8 = 0x08;
    /// Not a flow: a client's ClientIP affinity to a Service port's
    /// backend (its key has source port 0), kept as long as the largest
    /// timeout Kubernetes allows; the pipeline honours the Service's own.
    pub const AFFINITY: u8 = 0x10;
}

/// Whether a flow is assured, as nf_conntrack says it: answered and, for
/// TCP, past its handshake (established or closing). A full table evicts
/// only flows that are not: half-open connections (a SYN, even one a
/// backend answered with SYN-ACK and the client's kernel then reset, as a
/// SYN flood leaves them), closed ones, flows nobody answered. So a flood
/// cannot keep a real client out, and no live connection is given up for
/// a new one.
pub fn assured(state: FlowState, f: u8) -> bool {
    f & flags::SEEN_REPLY != 0 && matches!(state, FlowState::Established | FlowState::Closing)
}

/// How long an affinity record may live: Kubernetes's largest
/// `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const AFFINITY_MAX_MS: u64 = 86_400_000;

/// The state a TCP flow starts in, given its first segment's flags.
pub fn tcp_initial(tcp_flags: u8) -> (FlowState, u8) {
    if tcp_flags & tcp::RST != 0 {
        (FlowState::Closed, flags::PICKED_UP)
    } else if tcp_flags & tcp::SYN != 0 && tcp_flags & tcp::ACK == 0 {
        (FlowState::New, 0)
    } else if tcp_flags & tcp::FIN != 0 {
        (FlowState::Closing, flags::PICKED_UP | flags::FIN_ORIGINAL)
    } else {
        // Mid-stream: a flow that was established before this daemon
        // (re)started. Loose pickup, as nf_conntrack_tcp_loose does, so
        // that it survives the restart.
        (FlowState::Established, flags::PICKED_UP)
    }
}

/// One TCP transition. Deliberately coarse: the dataplane does not check
/// sequence windows (nor does kube-proxy's path unless `be_liberal` is off);
/// states exist to pick the timeout.
pub fn tcp_next(state: FlowState, f: u8, dir: Dir, tcp_flags: u8) -> (FlowState, u8) {
    let mut f = f;
    if dir == Dir::Reply {
        f |= flags::SEEN_REPLY;
    }
    if tcp_flags & tcp::RST != 0 {
        return (FlowState::Closed, f);
    }
    let syn = tcp_flags & tcp::SYN != 0;
    let ack = tcp_flags & tcp::ACK != 0;
    if tcp_flags & tcp::FIN != 0 {
        f |= match dir {
            Dir::Original => flags::FIN_ORIGINAL,
            Dir::Reply => flags::FIN_REPLY,
        };
    }
    let both_fin =
        f & (flags::FIN_ORIGINAL | flags::FIN_REPLY) == flags::FIN_ORIGINAL | flags::FIN_REPLY;
    let next = match state {
        // A new SYN on a closed flow's tuple is a new connection reusing the
        // port (TIME_WAIT reuse); start over.
        FlowState::Closed if syn && !ack && dir == Dir::Original => {
            return (FlowState::New, 0);
        }
        FlowState::Closed => FlowState::Closed,
        _ if both_fin && ack && tcp_flags & tcp::FIN == 0 => FlowState::Closed,
        _ if f & (flags::FIN_ORIGINAL | flags::FIN_REPLY) != 0 => FlowState::Closing,
        FlowState::New if dir == Dir::Reply && syn && ack => FlowState::SynReceived,
        FlowState::SynReceived if dir == Dir::Original && ack && !syn => FlowState::Established,
        s => s,
    };
    (next, f)
}

/// State of a non-TCP flow after a packet.
pub fn datagram_next(state: FlowState, f: u8, dir: Dir) -> (FlowState, u8) {
    match dir {
        Dir::Reply => (FlowState::Established, f | flags::SEEN_REPLY),
        Dir::Original => (state, f),
    }
}

/// Timeouts, in milliseconds, by protocol and state.
///
/// Defaults follow what kube-proxy leaves a node with: established TCP 24 h
/// (kube-proxy's `--conntrack-tcp-timeout-established`), and the kernel's
/// short timers for half-open and closing flows; UDP 30 s unreplied and
/// 120 s once a reply is seen (the kernel's `udp_timeout_stream`).
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub tcp_syn_ms: u64,
    pub tcp_established_ms: u64,
    /// A TCP flow picked up mid-stream (no SYN seen) that nothing has
    /// answered yet: 5 minutes, the kernel's `tcp_timeout_unacknowledged`,
    /// not the established day, so that one spoofed ACK per tuple does not
    /// hold an entry for 24 hours. The first reply makes it established.
    pub tcp_unreplied_ms: u64,
    pub tcp_closing_ms: u64,
    pub tcp_closed_ms: u64,
    pub udp_unreplied_ms: u64,
    pub udp_replied_ms: u64,
    pub sctp_unreplied_ms: u64,
    pub sctp_replied_ms: u64,
    pub icmp_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_syn_ms: 60_000,
            tcp_established_ms: 86_400_000,
            tcp_unreplied_ms: 300_000,
            tcp_closing_ms: 60_000,
            tcp_closed_ms: 10_000,
            udp_unreplied_ms: 30_000,
            udp_replied_ms: 120_000,
            sctp_unreplied_ms: 30_000,
            sctp_replied_ms: 3_600_000,
            icmp_ms: 30_000,
        }
    }
}

impl Timeouts {
    /// The timeout of a flow of `proto` in `state` with `flow_flags`
    /// (`flags::*`).
    pub fn for_flow(&self, proto: crate::flow::Proto, state: FlowState, flow_flags: u8) -> u64 {
        use crate::flow::Proto;
        if flow_flags & flags::AFFINITY != 0 {
            return AFFINITY_MAX_MS;
        }
        match proto {
            Proto::Tcp => match state {
                FlowState::New | FlowState::SynReceived => self.tcp_syn_ms,
                FlowState::Established if flow_flags & flags::SEEN_REPLY == 0 => {
                    self.tcp_unreplied_ms.min(self.tcp_established_ms)
                }
                FlowState::Established => self.tcp_established_ms,
                FlowState::Closing => self.tcp_closing_ms,
                FlowState::Closed | FlowState::Free => self.tcp_closed_ms,
            },
            Proto::Udp => match state {
                FlowState::Established => self.udp_replied_ms,
                _ => self.udp_unreplied_ms,
            },
            Proto::Sctp => match state {
                FlowState::Established => self.sctp_replied_ms,
                _ => self.sctp_unreplied_ms,
            },
            Proto::Icmp | Proto::Icmp6 => self.icmp_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcp::{ACK, FIN, RST, SYN};

    fn run(steps: &[(Dir, u8)]) -> Vec<FlowState> {
        let (mut s, mut f) = tcp_initial(steps[0].1);
        let mut out = vec![s];
        for &(d, fl) in &steps[1..] {
            (s, f) = tcp_next(s, f, d, fl);
            out.push(s);
        }
        out
    }

    #[test]
    fn handshake_data_and_close() {
        use Dir::*;
        use FlowState::*;
        let states = run(&[
            (Original, SYN),
            (Reply, SYN | ACK),
            (Original, ACK),
            (Original, ACK | 0x08),
            (Reply, ACK),
            (Original, FIN | ACK),
            (Reply, FIN | ACK),
            (Original, ACK),
        ]);
        assert_eq!(
            states,
            [
                New,
                SynReceived,
                Established,
                Established,
                Established,
                Closing,
                Closing,
                Closed
            ]
        );
    }

    #[test]
    fn reset_closes_and_syn_reopens() {
        use Dir::*;
        let states = run(&[(Original, SYN), (Reply, RST | ACK), (Original, SYN)]);
        assert_eq!(states, [FlowState::New, FlowState::Closed, FlowState::New]);
    }

    #[test]
    fn mid_stream_pickup_is_established() {
        let (s, f) = tcp_initial(ACK);
        assert_eq!(s, FlowState::Established);
        assert_ne!(f & flags::PICKED_UP, 0);
    }

    #[test]
    fn short_timeouts_for_half_open_closing_and_unanswered() {
        let t = Timeouts::default();
        use crate::flow::Proto::Tcp;
        let established = t.for_flow(Tcp, FlowState::Established, flags::SEEN_REPLY);
        assert_eq!(established, 86_400_000);
        assert!(t.for_flow(Tcp, FlowState::New, 0) < established / 100);
        assert!(t.for_flow(Tcp, FlowState::Closing, flags::SEEN_REPLY) < established / 100);
        // Picked up mid-stream and never answered: minutes, not a day.
        let (s, f) = tcp_initial(tcp::ACK);
        assert_eq!(t.for_flow(Tcp, s, f), 300_000);
        // Answered once: established.
        let (s, f) = tcp_next(s, f, Dir::Reply, tcp::ACK);
        assert_eq!(t.for_flow(Tcp, s, f), established);
    }
}
