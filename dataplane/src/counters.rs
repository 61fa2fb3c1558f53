//! Per-worker packet counters. Each worker owns one `Counters` and writes it
//! alone (no atomics, no shared cache line); readers sum snapshots taken off
//! the packet path.

use crate::drop::DropReason;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub rx: u64,
    pub forwarded: u64,
    pub to_host: u64,
    /// Packets of a flow already in conntrack.
    pub ct_hits: u64,
    /// Flows this worker admitted to conntrack.
    pub ct_new: u64,
    /// Packets rewritten by NAT (either direction).
    pub nat: u64,
    /// IP packets that matched no flow and no Service: forwarded as they are.
    pub untracked: u64,
    /// ICMP errors forwarded without translating the packet they quote
    /// (expected 0 in a cluster without Path MTU trouble; see `pipeline`).
    pub icmp_error_passthrough: u64,
    /// ARP and NDP answers for the pod gateway.
    pub neighbor_replies: u64,
    /// ICMP time-exceeded errors sent for packets whose TTL ran out.
    pub time_exceeded: u64,
    pub drops: [u64; DropReason::COUNT],
}

impl Counters {
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
        self.neighbor_replies += o.neighbor_replies;
        self.time_exceeded += o.time_exceeded;
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
