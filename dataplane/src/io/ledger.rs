//! Who holds each frame of a pool shared by many ports, and how many
//! frames each port's fill ring may hold: the bookkeeping of the AF_XDP
//! backend, kept apart from the sockets so that it is tested without a
//! kernel.
//!
//! A frame is always held by exactly one of: the free list, the worker
//! (between a receive and a send or free), or the kernel on behalf of one
//! port (on its fill ring, its TX ring, or in flight). A frame on a ring
//! cannot be taken back: the kernel gives it back on RX or on completion,
//! or never, if the socket closes, in which case `close_port` returns every
//! frame that port's rings held to the free list.
//!
//! Fill shares. A node attaches up to `max_ports` pods to one worker's pool,
//! most of them idle, some busy. The pool is sized (`FillPlan::frames`) so
//! that every one of `max_ports` ports can hold `fill_min` frames at once,
//! with `tx_reserve` frames in flight on TX rings and in the worker's hands,
//! plus `elastic` frames that go to the ports receiving traffic:
//!
//! - a port below `fill_min` is topped up to it whenever frames are free;
//! - a port that received frames in this round is topped up to the
//!   target, `fill_min + elastic / open ports` (at most its ring), and an
//!   idle one to at most four minimums of it (a burst that arrives while
//!   the worker is off its core finds room), but only from frames beyond
//!   what the other ports' minimums, the unopened ports' minimums and the
//!   TX reserve need;
//! - a port above the target (ports were added since it was topped up) is
//!   not refilled until traffic brings it back under: frames it receives
//!   go back to the pool. An idle port never holds more than it had when
//!   it was last busy, and the elastic frames are all that idle ports can
//!   hold beyond their minimums, so no port is ever left without one.

/// Who holds a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    Free,
    Worker,
    /// On a ring of this port (its slot): given back when the port closes,
    /// whatever its rings held.
    Kernel(u16),
}

/// How a pool is shared by its ports; `frames()` is the pool's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FillPlan {
    /// Ports the pool serves at most (a node's `--max-pods`).
    pub max_ports: usize,
    /// Frames every port's fill ring can always have: two bursts, so that
    /// a port receives a burst while the worker handles the last one.
    pub fill_min: usize,
    /// The fill ring's size: no port holds more on it.
    pub ring: usize,
    /// Frames in flight (TX rings, completions not yet read, the worker's
    /// hands) that the ports' minimums never count on.
    pub tx_reserve: usize,
    /// Frames shared by the ports that are receiving, beyond their minimums.
    pub elastic: usize,
}

/// A port's fill ring holds at least this many frames once the pool lets
/// it: two bursts of 32.
pub const FILL_MIN: usize = 64;

/// An idle port's fill ring is topped up to this many minimums (256
/// frames), spare frames permitting: a burst of a few hundred frames that
/// arrives while the worker is off its core (a loaded machine) finds room,
/// and idle ports cannot hoard the elastic frames the busy ones need.
pub const IDLE_MINIMUMS: usize = 4;

impl FillPlan {
    /// The plan of a worker's pool for `max_ports` ports with rings of
    /// `ring` entries: every port its minimum, two rings' worth in flight,
    /// and two rings' worth for the busy ports. With rings of 2048 and 250
    /// ports: 250 x 64 + 4 x 2048 = 24,192 frames of 2 KiB, 47 MiB.
    pub fn for_ports(max_ports: usize, ring: usize) -> FillPlan {
        FillPlan {
            max_ports: max_ports.max(1),
            fill_min: FILL_MIN.min(ring),
            ring,
            tx_reserve: 2 * ring,
            elastic: 2 * ring,
        }
    }

    /// Frames of the pool.
    pub fn frames(&self) -> usize {
        self.max_ports * self.fill_min + self.tx_reserve + self.elastic
    }

    /// What a port is topped up to while it receives, with `open` ports.
    pub fn target(&self, open: usize) -> usize {
        (self.fill_min + self.elastic / open.max(1)).min(self.ring)
    }
}

/// Why a port could not be opened on a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LedgerError {
    /// The pool serves `max` ports and has that many open.
    PortsFull { max: usize },
    /// The slot is open already.
    SlotTaken { slot: u16 },
}

impl std::fmt::Display for LedgerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LedgerError::PortsFull { max } => write!(
                f,
                "the worker's frame pool is sized for {max} ports (--max-pods) and all are attached"
            ),
            LedgerError::SlotTaken { slot } => write!(f, "port {slot} is open already"),
        }
    }
}

impl std::error::Error for LedgerError {}

/// A pool's state now, for `sluice status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PoolStats {
    pub frames: usize,
    pub free: usize,
    /// On the ports' fill rings.
    pub in_fill: usize,
    /// In the worker's hands.
    pub worker: usize,
    /// On TX rings or in flight.
    pub in_tx: usize,
    pub ports: usize,
    pub max_ports: usize,
    /// What a receiving port is topped up to now.
    pub fill_target: usize,
    /// Open ports whose fill ring is below the minimum (expected 0 but
    /// for a moment under load).
    pub ports_short: usize,
}

impl PoolStats {
    /// Adds another pool's (a worker with a pool per port).
    pub fn add(&mut self, o: &PoolStats) {
        self.frames += o.frames;
        self.free += o.free;
        self.in_fill += o.in_fill;
        self.worker += o.worker;
        self.in_tx += o.in_tx;
        self.ports += o.ports;
        self.max_ports += o.max_ports;
        self.fill_target = self.fill_target.max(o.fill_target);
        self.ports_short += o.ports_short;
    }
}

/// The ledger of one pool.
pub struct Ledger {
    held: Vec<Held>,
    free: Vec<u32>,
    plan: FillPlan,
    /// Frames on each slot's fill ring; `None` for a slot not open.
    fill: Vec<Option<usize>>,
    open: usize,
    /// Frames the open ports lack to reach their minimums.
    deficit: usize,
}

impl Ledger {
    /// A ledger of `frames` frames, all free, shared as `plan` says.
    pub fn new(frames: usize, plan: FillPlan) -> Ledger {
        Ledger {
            held: vec![Held::Free; frames],
            free: (0..frames as u32).rev().collect(),
            plan,
            fill: Vec::new(),
            open: 0,
            deficit: 0,
        }
    }

    pub fn plan(&self) -> FillPlan {
        self.plan
    }

    pub fn held(&self, i: u32) -> Option<Held> {
        self.held.get(i as usize).copied()
    }

    pub fn free_frames(&self) -> usize {
        self.free.len()
    }

    pub fn open_ports(&self) -> usize {
        self.open
    }

    /// Frames on `slot`'s fill ring (0 if it is not open).
    pub fn in_fill(&self, slot: u16) -> usize {
        self.fill
            .get(usize::from(slot))
            .copied()
            .flatten()
            .unwrap_or(0)
    }

    fn set_fill(&mut self, slot: u16, n: usize) {
        let min = self.plan.fill_min;
        if let Some(Some(f)) = self.fill.get_mut(usize::from(slot)) {
            self.deficit = self.deficit - min.saturating_sub(*f) + min.saturating_sub(n);
            *f = n;
        }
    }

    /// Opens `slot`: from now on it is owed its minimum.
    pub fn open_port(&mut self, slot: u16) -> Result<(), LedgerError> {
        let s = usize::from(slot);
        if self.fill.get(s).is_some_and(Option::is_some) {
            return Err(LedgerError::SlotTaken { slot });
        }
        if self.open >= self.plan.max_ports {
            return Err(LedgerError::PortsFull {
                max: self.plan.max_ports,
            });
        }
        if self.fill.len() <= s {
            self.fill.resize(s + 1, None);
        }
        self.fill[s] = Some(0);
        self.open += 1;
        self.deficit += self.plan.fill_min;
        Ok(())
    }

    /// Closes `slot` (its socket is closed): every frame its rings held is
    /// free again. Returns how many.
    pub fn close_port(&mut self, slot: u16) -> usize {
        let s = usize::from(slot);
        if let Some(Some(_)) = self.fill.get(s) {
            self.set_fill(slot, self.plan.fill_min);
            self.fill[s] = None;
            self.open -= 1;
        }
        let mut n = 0;
        for (i, h) in self.held.iter_mut().enumerate() {
            if *h == Held::Kernel(slot) {
                *h = Held::Free;
                self.free.push(i as u32);
                n += 1;
            }
        }
        n
    }

    /// A free frame, now the worker's.
    pub fn take(&mut self) -> Option<u32> {
        let i = self.free.pop()?;
        self.held[i as usize] = Held::Worker;
        Some(i)
    }

    pub fn worker_holds(&self, i: u32) -> bool {
        self.held(i) == Some(Held::Worker)
    }

    /// The worker frees a frame it holds; false (nothing changes) if it
    /// did not hold it.
    pub fn free(&mut self, i: u32) -> bool {
        if !self.worker_holds(i) {
            return false;
        }
        self.held[i as usize] = Held::Free;
        self.free.push(i);
        true
    }

    /// The worker put a frame it holds on `slot`'s TX ring.
    pub fn sent(&mut self, i: u32, slot: u16) -> bool {
        if !self.worker_holds(i) {
            return false;
        }
        self.held[i as usize] = Held::Kernel(slot);
        true
    }

    /// The kernel completed a frame on some TX ring; false if the kernel
    /// did not hold it (a bug to count, never a double free).
    pub fn completed(&mut self, i: u32) -> bool {
        match self.held.get_mut(i as usize) {
            Some(h @ Held::Kernel(_)) => {
                *h = Held::Free;
                self.free.push(i);
                true
            }
            _ => false,
        }
    }

    /// `slot` received a frame from its fill ring: now the worker's.
    pub fn received(&mut self, i: u32, slot: u16) -> bool {
        match self.held.get_mut(i as usize) {
            Some(h) if *h == Held::Kernel(slot) => {
                *h = Held::Worker;
                let n = self.in_fill(slot).saturating_sub(1);
                self.set_fill(slot, n);
                true
            }
            _ => false,
        }
    }

    /// How many frames `slot`'s fill ring gets now; `busy`: it received
    /// frames this round, so it may have its whole target, where an idle
    /// port has at most `IDLE_MINIMUMS` minimums.
    pub fn fill_grant(&mut self, slot: u16, busy: bool) -> usize {
        let Some(Some(have)) = self.fill.get(usize::from(slot)).copied() else {
            return 0;
        };
        let p = self.plan;
        let mut target = p.target(self.open);
        if !busy {
            target = target.min(IDLE_MINIMUMS * p.fill_min);
        }
        if have >= target {
            return 0;
        }
        let base = p.fill_min.saturating_sub(have);
        let others = self.deficit - base;
        let reserve = others + (p.max_ports - self.open) * p.fill_min + p.tx_reserve;
        let spare = self.free.len().saturating_sub(base + reserve);
        let want = base + (target - have - base).min(spare);
        want.min(self.free.len())
    }

    /// Takes the frames of `fill_grant(slot, busy)` off the free list into
    /// `out` (cleared first), now the kernel's on `slot`'s fill ring; those
    /// the ring does not take go back with `unfilled`.
    pub fn take_for_fill(&mut self, slot: u16, busy: bool, out: &mut Vec<u32>) {
        out.clear();
        let n = self.fill_grant(slot, busy);
        for _ in 0..n {
            let Some(i) = self.free.pop() else { break };
            self.held[i as usize] = Held::Kernel(slot);
            out.push(i);
        }
        let have = self.in_fill(slot);
        self.set_fill(slot, have + out.len());
    }

    /// Frames `take_for_fill` gave that the ring did not take.
    pub fn unfilled(&mut self, slot: u16, frames: &[u32]) {
        for &i in frames {
            if self.held.get(i as usize) == Some(&Held::Kernel(slot)) {
                self.held[i as usize] = Held::Free;
                self.free.push(i);
            }
        }
        let have = self.in_fill(slot).saturating_sub(frames.len());
        self.set_fill(slot, have);
    }

    /// The pool now (walks every frame: for `status`, not per packet).
    pub fn stats(&self) -> PoolStats {
        let in_fill: usize = self.fill.iter().flatten().sum();
        let worker = self.held.iter().filter(|h| **h == Held::Worker).count();
        let kernel = self
            .held
            .iter()
            .filter(|h| matches!(h, Held::Kernel(_)))
            .count();
        PoolStats {
            frames: self.held.len(),
            free: self.free.len(),
            in_fill,
            worker,
            in_tx: kernel.saturating_sub(in_fill),
            ports: self.open,
            max_ports: self.plan.max_ports,
            fill_target: self.plan.target(self.open),
            ports_short: self
                .fill
                .iter()
                .flatten()
                .filter(|&&f| f < self.plan.fill_min)
                .count(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(max_ports: usize) -> FillPlan {
        FillPlan::for_ports(max_ports, 256)
    }

    fn ledger(max_ports: usize) -> Ledger {
        let p = plan(max_ports);
        Ledger::new(p.frames(), p)
    }

    /// Fills `slot` as the backend does, the ring taking everything.
    fn fill(l: &mut Ledger, slot: u16, busy: bool) -> Vec<u32> {
        let mut out = Vec::new();
        l.take_for_fill(slot, busy, &mut out);
        out
    }

    /// Every frame is held by exactly one holder, and the counts add up.
    fn conserved(l: &Ledger) {
        let s = l.stats();
        assert_eq!(s.free + s.in_fill + s.worker + s.in_tx, s.frames, "{s:?}");
        let mut seen = vec![false; l.held.len()];
        for &i in &l.free {
            assert!(!seen[i as usize], "frame {i} twice on the free list");
            seen[i as usize] = true;
            assert_eq!(l.held[i as usize], Held::Free);
        }
    }

    #[test]
    fn the_plan_has_room_for_every_port_minimum() {
        let p = FillPlan::for_ports(250, 2048);
        assert_eq!(p.frames(), 250 * 64 + 4 * 2048);
        assert!(
            p.frames() * 2048 < 48 << 20,
            "a 250-pod worker's pool is under 48 MiB"
        );
        assert_eq!(p.target(1), 2048);
        assert_eq!(p.target(250), 64 + 4096 / 250);
        assert!(p.target(250) >= p.fill_min);
    }

    #[test]
    fn a_frame_has_one_holder_through_its_life() {
        let mut l = ledger(2);
        l.open_port(0).unwrap();
        l.open_port(1).unwrap();
        let filled = fill(&mut l, 0, false);
        assert_eq!(filled.len(), l.in_fill(0));
        let f = filled[0];
        assert_eq!(l.held(f), Some(Held::Kernel(0)));
        // Received on the wrong port: refused, nothing changes.
        assert!(!l.received(f, 1));
        assert!(l.received(f, 0));
        assert_eq!(l.held(f), Some(Held::Worker));
        assert_eq!(l.in_fill(0), filled.len() - 1);
        // Sent on port 1: the kernel's, for port 1.
        assert!(l.sent(f, 1));
        assert_eq!(l.held(f), Some(Held::Kernel(1)));
        assert!(l.completed(f));
        assert_eq!(l.held(f), Some(Held::Free));
        conserved(&l);
    }

    #[test]
    fn misuse_is_refused_and_changes_nothing() {
        let mut l = ledger(1);
        l.open_port(0).unwrap();
        let filled = fill(&mut l, 0, false);
        let on_ring = filled[0];
        // The worker does not hold a frame on a fill ring.
        assert!(!l.free(on_ring));
        assert!(!l.sent(on_ring, 0));
        assert_eq!(l.held(on_ring), Some(Held::Kernel(0)));
        // A double free.
        let w = l.take().unwrap();
        assert!(l.free(w));
        assert!(!l.free(w));
        // A completion of a frame the kernel did not hold.
        assert!(!l.completed(w));
        // Out of range.
        assert!(!l.free(u32::MAX));
        assert!(!l.completed(u32::MAX));
        assert_eq!(l.held(u32::MAX), None);
        conserved(&l);
    }

    #[test]
    fn closing_a_port_reclaims_its_rings_and_nothing_else() {
        let mut l = ledger(2);
        l.open_port(0).unwrap();
        l.open_port(1).unwrap();
        let a = fill(&mut l, 0, true);
        let b = fill(&mut l, 1, false);
        // One of port 0's frames goes out on port 1's TX ring; one is in
        // the worker's hands.
        assert!(l.received(a[0], 0) && l.sent(a[0], 1));
        assert!(l.received(a[1], 0));
        let free = l.free_frames();
        let reclaimed = l.close_port(0);
        assert_eq!(reclaimed, a.len() - 2, "only what port 0's rings held");
        assert_eq!(l.free_frames(), free + reclaimed);
        assert_eq!(l.held(a[0]), Some(Held::Kernel(1)));
        assert_eq!(l.held(a[1]), Some(Held::Worker));
        assert!(b.iter().all(|&i| l.held(i) == Some(Held::Kernel(1))));
        assert_eq!(l.open_ports(), 1);
        // The slot can be opened again, with nothing on its ring.
        l.open_port(0).unwrap();
        assert_eq!(l.in_fill(0), 0);
        conserved(&l);
    }

    #[test]
    fn ports_beyond_the_plan_are_refused_with_the_limit() {
        let mut l = ledger(3);
        for s in 0..3 {
            l.open_port(s).unwrap();
        }
        assert_eq!(l.open_port(3), Err(LedgerError::PortsFull { max: 3 }));
        assert_eq!(l.open_port(1), Err(LedgerError::SlotTaken { slot: 1 }));
        l.close_port(1);
        l.open_port(7).unwrap();
        assert_eq!(
            LedgerError::PortsFull { max: 250 }.to_string(),
            "the worker's frame pool is sized for 250 ports (--max-pods) and all are attached"
        );
    }

    /// The bug this ledger was written for: the first ports, alone and
    /// busy, took the whole pool, and ports attached later had nothing.
    #[test]
    fn every_port_of_a_full_node_keeps_its_minimum_after_early_ports_were_busy() {
        let max = 250;
        let mut l = ledger(max);
        // The first ten ports attach one by one and are busy: each is
        // topped up to the target of its moment.
        for s in 0..10u16 {
            l.open_port(s).unwrap();
            fill(&mut l, s, true);
        }
        assert!(
            l.in_fill(0) > l.plan().fill_min,
            "an early busy port got elastic frames"
        );
        // Then 240 more, idle.
        for s in 10..max as u16 {
            l.open_port(s).unwrap();
            fill(&mut l, s, false);
        }
        for s in 0..max as u16 {
            assert!(
                l.in_fill(s) >= l.plan().fill_min,
                "port {s}: {}",
                l.in_fill(s)
            );
        }
        assert_eq!(l.stats().ports_short, 0);
        // And the TX reserve is still free for frames in flight.
        assert!(l.free_frames() >= l.plan().tx_reserve);
        conserved(&l);
    }

    #[test]
    fn shares_shrink_as_ports_come_and_grow_as_they_go() {
        let mut l = ledger(250);
        l.open_port(0).unwrap();
        fill(&mut l, 0, true);
        assert_eq!(l.in_fill(0), 256, "alone, a busy port gets its whole ring");
        for s in 1..100u16 {
            l.open_port(s).unwrap();
            fill(&mut l, s, false);
        }
        let target = l.plan().target(100);
        assert!(target < 256);
        // Port 0 is above the target: it is not refilled, and what it
        // receives goes back to the pool until it is under.
        let on_ring: Vec<u32> = (0..l.held.len() as u32)
            .filter(|&i| l.held(i) == Some(Held::Kernel(0)))
            .collect();
        for &i in &on_ring[..200] {
            assert!(l.received(i, 0));
            if l.in_fill(0) >= target {
                assert_eq!(l.fill_grant(0, true), 0, "above the target: no refill");
            }
            assert!(l.free(i));
        }
        assert!(l.in_fill(0) <= target);
        let refill = fill(&mut l, 0, true);
        assert_eq!(
            l.in_fill(0),
            target,
            "topped up to the new target, {} given",
            refill.len()
        );
        // The others go: the target grows back, and a busy port gets it.
        for s in 1..100u16 {
            l.close_port(s);
        }
        fill(&mut l, 0, true);
        assert_eq!(l.in_fill(0), 256);
        conserved(&l);
    }

    #[test]
    fn a_port_attached_after_the_pool_ran_dry_gets_frames_as_they_come_back() {
        let mut l = ledger(2);
        l.open_port(0).unwrap();
        // The worker holds every free frame (a reply storm).
        let mut held = Vec::new();
        while let Some(i) = l.take() {
            held.push(i);
        }
        l.open_port(1).unwrap();
        assert!(fill(&mut l, 1, false).is_empty());
        assert_eq!(l.stats().ports_short, 2);
        for i in held {
            l.free(i);
        }
        assert!(fill(&mut l, 1, false).len() >= 64);
        conserved(&l);
    }

    #[test]
    fn an_idle_port_gets_four_minimums_and_a_busy_one_its_target() {
        let p = FillPlan::for_ports(250, 2048);
        let mut l = Ledger::new(p.frames(), p);
        l.open_port(0).unwrap();
        l.open_port(1).unwrap();
        fill(&mut l, 0, false);
        assert_eq!(
            l.in_fill(0),
            IDLE_MINIMUMS * FILL_MIN,
            "idle: room for a burst"
        );
        fill(&mut l, 1, true);
        assert_eq!(
            l.in_fill(1),
            p.target(2),
            "busy: its share of the elastic frames"
        );
        conserved(&l);
    }

    #[test]
    fn a_ring_that_takes_fewer_gives_the_rest_back() {
        let mut l = ledger(1);
        l.open_port(0).unwrap();
        let got = fill(&mut l, 0, true);
        let free = l.free_frames();
        l.unfilled(0, &got[10..]);
        assert_eq!(l.in_fill(0), 10);
        assert_eq!(l.free_frames(), free + got.len() - 10);
        conserved(&l);
    }
}
