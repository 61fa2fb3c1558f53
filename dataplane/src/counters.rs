//! Per-worker packet counters. Each worker owns one `Counters` and writes it
//! alone (no atomics, no shared cache line); readers sum snapshots taken off
//! the packet path.
//!
//! Every frame received is counted once for what finally became of it:
//! `forwarded` (handed to a TX ring), `to_host` (taken by the host's
//! exception path), `neighbor_replies`, `time_exceeded`, `rejected` or `resets` (answered, the
//! answer handed to a ring), or one drop reason. So `rx` = `settled()`.

use crate::drop::DropReason;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counters {
    pub rx: u64,
    /// Handed to a TX ring.
    pub forwarded: u64,
    /// Taken by the host's exception path.
    pub to_host: u64,
    /// Packets of a flow already in conntrack.
    pub ct_hits: u64,
    /// Flows this worker admitted to conntrack.
    pub ct_new: u64,
    /// Packets rewritten by NAT (either direction).
    pub nat: u64,
    /// IP packets that matched no flow and no Service: forwarded as they are.
    pub untracked: u64,
    /// ICMP errors about no translated flow, forwarded as they are.
    pub icmp_error_passthrough: u64,
    /// ICMP errors about a translated flow, translated back (the packet
    /// they quote and their outer header: `icmp_related`).
    pub icmp_translated: u64,
    /// ARP and NDP questions for the pod gateway, answered (the answer
    /// handed to a ring).
    pub neighbor_replies: u64,
    /// Packets whose TTL ran out, answered with an ICMP time-exceeded
    /// (handed to a ring).
    pub time_exceeded: u64,
    /// Packets for a Service port without endpoints (or a ClusterIP's port
    /// no Service serves), answered with ICMP port-unreachable (handed to
    /// a ring).
    pub rejected: u64,
    /// Packets of a connection whose backend was deleted from its
    /// Service, answered with a TCP reset from the ClusterIP (handed to a
    /// ring).
    pub resets: u64,
    /// Later fragments that came before their first, held by the worker
    /// (given back, they count again as received).
    pub held: u64,
    pub drops: [u64; DropReason::COUNT],
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            rx: 0,
            forwarded: 0,
            to_host: 0,
            ct_hits: 0,
            ct_new: 0,
            nat: 0,
            untracked: 0,
            icmp_error_passthrough: 0,
            icmp_translated: 0,
            neighbor_replies: 0,
            time_exceeded: 0,
            rejected: 0,
            resets: 0,
            held: 0,
            drops: [0; DropReason::COUNT],
        }
    }
}

impl Counters {
    /// Frames whose outcome is counted: every frame received, once it is
    /// handed to a ring, to the host, answered or dropped. Equal to `rx`
    /// between bursts.
    pub fn settled(&self) -> u64 {
        self.forwarded
            + self.to_host
            + self.neighbor_replies
            + self.time_exceeded
            + self.rejected
            + self.resets
            + self.held
            + self.total_drops()
    }

    #[inline]
    pub fn drop(&mut self, r: DropReason) {
        self.drops[r as usize] += 1;
    }
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.drops[r as usize]
    }
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }
    /// Adds another worker's counters into this one.
    pub fn add(&mut self, o: &Counters) {
        self.rx += o.rx;
        self.forwarded += o.forwarded;
        self.to_host += o.to_host;
        self.ct_hits += o.ct_hits;
        self.ct_new += o.ct_new;
        self.nat += o.nat;
        self.untracked += o.untracked;
        self.icmp_error_passthrough += o.icmp_error_passthrough;
        self.icmp_translated += o.icmp_translated;
        self.neighbor_replies += o.neighbor_replies;
        self.time_exceeded += o.time_exceeded;
        self.rejected += o.rejected;
        self.resets += o.resets;
        self.held += o.held;
        for (a, b) in self.drops.iter_mut().zip(o.drops.iter()) {
            *a += b;
        }
    }
    /// Non-zero drop counters with their labels.
    pub fn drop_breakdown(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        DropReason::ALL
            .iter()
            .filter(|r| self.drops[**r as usize] != 0)
            .map(|r| (r.label(), self.drops[*r as usize]))
    }
}
