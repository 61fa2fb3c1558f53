//! The burst function: every stage in order over a burst of frames from
//! one ingress, neighbour answers, decode, the source screen, conntrack,
//! Services, NAT, route and hop, filling one `Action` per frame. The
//! daemon's workers call it once per received burst; the tests, the
//! benchmarks and the fuzz targets call the same function (a single frame
//! is a burst of one).
//!
//! A burst runs in passes, as DPDK's l3fwd does its lookups: decode every
//! frame and ask for its conntrack index line; then, those lines arriving,
//! ask for each flow's entry; then finish each packet (conntrack, Service,
//! NAT); then route each. The cache misses of a burst overlap instead of
//! adding up.
//!
//! Ethernet is parsed once (`decode`); every later stage reads its
//! `Parsed` summary. A frame is counted once here when it is dropped;
//! what leaves (`Transmit`, `ToHost`, `Reply`) is counted by the worker
//! when it is handed to a ring, since only then is it known to have left.

pub use crate::action::{Action, Answer};
use crate::conntrack::{state, Conntrack, Dir, FlowState, Found, InsertError, SlotCache};
use crate::counters::Counters;
use crate::decode::{decode_into, Frag, Layer3, Parsed, Transport};
use crate::drop::DropReason;
use crate::flow::{Addr, Family, FlowKey, Proto};
use crate::frag::FragTable;
use crate::icmp_error::{self, IcmpError};
use crate::icmp_related;

mod affinity;
use crate::nat;
use crate::neighbor::{self, Gateway};
use crate::reject::RejectLimiter;
use crate::route::{self, Egress, Hop, PortId, Routes};
use crate::service::{Backend, FrontSlot, ServiceTable};
use crate::tcp_reset;
use crate::wire::icmp::IcmpKind;

/// Frames a burst holds: the prefetch window.
pub const BURST: usize = 32;

/// Bytes an answer the burst writes may take (a neighbour advert, an ICMP
/// time-exceeded quoting 548 bytes behind up to two VLAN tags).
pub const REPLY_MAX: usize = 1600;

/// The shared tables a burst reads: a Service snapshot, conntrack, the
/// node's routes and its pods' gateway.
#[derive(Clone, Copy)]
pub struct Tables<'a> {
    pub services: &'a ServiceTable,
    pub conntrack: &'a Conntrack,
    pub routes: &'a Routes,
    pub gateway: Gateway,
}

impl<'a> Tables<'a> {
    /// The tables with the pods' default gateway (169.254.1.1, fe80::1).
    pub fn new(services: &'a ServiceTable, conntrack: &'a Conntrack, routes: &'a Routes) -> Self {
        Tables {
            services,
            conntrack,
            routes,
            gateway: Gateway::DEFAULT,
        }
    }
}

/// Where a burst came in: what its frames' source addresses may be.
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

/// What one core owns to decide packets: its counters, its fragment table,
/// its clock, the flows its frames created, and the scratch of a burst
/// (kept here so that a burst allocates and initialises nothing).
pub struct Core {
    pub counters: Counters,
    pub frags: FragTable,
    /// Milliseconds on the conntrack clock, read once per burst.
    pub now_ms: u64,
    /// Free conntrack entries of this core's own, and its insert count.
    slots: SlotCache,
    /// How often this core may answer for a Service without endpoints.
    rejects: RejectLimiter,
    /// Whether the caller holds later fragments that come before their
    /// first (`Action::Hold`).
    holds_fragments: bool,
    /// Taken out for the length of a burst so that the passes can read it
    /// by reference while they update the rest of the core.
    scratch: Option<Box<Scratch>>,
}

/// A burst's per-frame state, one array per field, each frame's decode
/// summary and flow key written once, where the later passes read them
/// (a record of them built and then copied cost more than the lookups).
struct Scratch {
    kind: [Pre; BURST],
    parsed: [Parsed; BURST],
    keys: [FlowKey; BURST],
    hashes: [u64; BURST],
    pending: [Pending; BURST],
    fate: [Fate; BURST],
    /// The conntrack entry each frame of the last burst created, until the
    /// caller knows the frame left (`Core::withdraw`).
    created: [Option<u32>; BURST],
    replies: [[u8; REPLY_MAX]; BURST],
}

impl Default for Core {
    fn default() -> Self {
        Core {
            counters: Counters::default(),
            frags: FragTable::default(),
            now_ms: 0,
            slots: SlotCache::default(),
            rejects: RejectLimiter::default(),
            holds_fragments: false,
            scratch: Some(Box::new(Scratch {
                kind: [Pre::Done(Action::ToHost); BURST],
                parsed: [Parsed::EMPTY; BURST],
                keys: [FlowKey::EMPTY; BURST],
                hashes: [0; BURST],
                pending: [Pending::EMPTY; BURST],
                fate: [Fate::Decided(Action::ToHost); BURST],
                created: [None; BURST],
                replies: [[0; REPLY_MAX]; BURST],
            })),
        }
    }
}

impl Core {
    /// Later fragments that come before their first are given back as
    /// `Action::Hold` (the worker holds them), not dropped.
    pub fn hold_fragments(&mut self) {
        self.holds_fragments = true;
    }

    /// Reads the clock; call once per burst, not per packet.
    pub fn tick(&mut self, ct: &Conntrack) {
        self.now_ms = ct.now_ms();
    }

    /// Gives the conntrack entries this core holds for its next inserts
    /// back to `ct`: for a core done with a table that lives on (a worker
    /// made per test input; the daemon's live as long as their table).
    pub fn return_slots(&mut self, ct: &Conntrack) {
        ct.return_cache(&mut self.slots);
    }

    /// The answer written for frame `i` of the last burst
    /// (`Action::Reply`).
    pub fn reply(&self, i: usize, len: u16) -> &[u8] {
        match &self.scratch {
            Some(sc) => sc
                .replies
                .get(i)
                .and_then(|r| r.get(..usize::from(len)))
                .unwrap_or(&[]),
            None => &[],
        }
    }

    /// Withdraws the flow frame `i` of the last burst created: the worker
    /// found the frame no way out (no port for its egress, no host path),
    /// and a flow that never left must hold no entry.
    pub fn withdraw(&mut self, ct: &Conntrack, i: usize) {
        if let Some(e) = self
            .scratch
            .as_mut()
            .and_then(|sc| sc.created.get_mut(i))
            .and_then(Option::take)
        {
            ct.forget(e);
        }
    }
}

/// A frame after pass 1: what the later passes do with it (its summary,
/// key and hash are in the scratch's arrays).
#[derive(Clone, Copy)]
enum Pre {
    Done(Action),
    /// Straight to the route stage, with no state made (a TTL that runs
    /// out here: the route stage answers it).
    Route,
    /// An IP packet without a flow of its own (ICMP errors, other
    /// protocols).
    Untracked,
    /// A flow: its key and hash are the frame's.
    Flow,
}

/// A frame after pass 3: decided, or to be routed towards this address
/// (its destination after NAT; the rest of its hop is its summary's).
#[derive(Clone, Copy)]
enum Fate {
    Decided(Action),
    Route(Addr),
}

/// Decides a burst of frames that came in on `ingress`, in place:
/// `actions[i]` is `frames[i]`'s. Frames past `BURST`, or past
/// `actions.len()`, are left alone (the caller's bursts are no longer).
pub fn decide(
    frames: &mut [&mut [u8]],
    ingress: Ingress,
    t: &Tables<'_>,
    c: &mut Core,
    actions: &mut [Action],
) {
    let n = frames.len().min(actions.len()).min(BURST);
    let Some(mut sc) = c.scratch.take() else {
        // Only a panic inside an earlier burst leaves it taken, and the
        // packet path has none; dropping is the safe answer if it ever did.
        for a in &mut actions[..n] {
            c.counters.rx += 1;
            c.counters.drop(DropReason::RewriteOutOfBounds);
            *a = Action::Drop(DropReason::RewriteOutOfBounds);
        }
        return;
    };
    let frames = &mut frames[..n];
    for (i, frame) in frames.iter().enumerate() {
        sc.created[i] = None;
        sc.kind[i] = prepare(
            frame,
            ingress,
            t,
            c,
            &mut sc.replies[i],
            &mut sc.parsed[i],
            &mut sc.keys[i],
        );
        if let Pre::Flow = sc.kind[i] {
            sc.hashes[i] = t.conntrack.hash(&sc.keys[i]);
            t.conntrack.prefetch_index(sc.hashes[i]);
        }
    }
    for i in 0..n {
        if let Pre::Flow = sc.kind[i] {
            // No entry in sight: most likely a new flow, which will read
            // its frontend slot next.
            if !t.conntrack.prefetch_entry(sc.hashes[i]) {
                t.services.prefetch(&sc.keys[i]);
            }
        }
    }
    finish_burst(frames, t, c, &mut sc);
    for i in 0..n {
        let a = match sc.fate[i] {
            Fate::Decided(a) => a,
            Fate::Route(dst) => {
                let hop = Hop {
                    dst,
                    ..Hop::of(&sc.parsed[i])
                };
                route::forward(frames[i], hop, t.routes, &t.gateway, &mut sc.replies[i])
            }
        };
        if matches!(a, Action::Drop(_) | Action::Reply { .. }) {
            // The frame does not leave: a flow it made is withdrawn.
            if let Some(e) = sc.created[i].take() {
                t.conntrack.forget(e);
            }
        }
        if let Action::Drop(r) = a {
            c.counters.drop(r);
        }
        actions[i] = a;
    }
    c.scratch = Some(sc);
}

/// One frame: a burst of one, through the same function.
pub fn decide_one(frame: &mut [u8], ingress: Ingress, t: &Tables<'_>, c: &mut Core) -> Action {
    let mut actions = [Action::ToHost];
    decide(&mut [frame], ingress, t, c, &mut actions);
    actions[0]
}

/// The screen before conntrack: a pod's source must be its own, and a
/// packet whose TTL runs out here is answered by the route stage with no
/// flow made for it (a flood of TTL=1 SYNs to a VIP fills nothing).
#[inline]
fn screen(routes: &Routes, ingress: Ingress, p: &Parsed) -> Option<Pre> {
    if let Ingress::Pod(port) = ingress {
        let own = routes.pod_port(p.src) == Some(port)
            // Neighbour and router discovery and MLD: from `::` or the
            // pod's link-local address, to a destination of the link.
            || (link_scoped(p.src, p.family) && for_the_link(p.dst, p.family));
        if !own {
            return Some(Pre::Done(Action::Drop(DropReason::SourceSpoofed)));
        }
    }
    if p.ttl <= 1 && routes.lookup(p.dst, p.family) != Egress::Host {
        return Some(Pre::Route);
    }
    None
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

/// Pass 1: decode into `p`; the gateway's neighbour answers; the screen;
/// the flow key into `key`.
#[inline]
fn prepare(
    frame: &[u8],
    ingress: Ingress,
    t: &Tables<'_>,
    c: &mut Core,
    reply: &mut [u8; REPLY_MAX],
    p: &mut Parsed,
    key: &mut FlowKey,
) -> Pre {
    c.counters.rx += 1;
    match decode_into(frame, p) {
        Err(r) => return Pre::Done(Action::Drop(r)),
        Ok(Layer3::Arp { offset }) => {
            // A question for the gateway is answered; the rest of ARP
            // belongs to the host.
            return match neighbor::answer_arp(frame, offset, &t.gateway, reply) {
                Some(len) => Pre::Done(Action::Reply {
                    len: len as u16,
                    answer: Answer::Neighbor,
                }),
                None => Pre::Done(Action::ToHost),
            };
        }
        Ok(Layer3::Ip) => {}
    }
    // A Neighbor Solicitation (RFC 4861 7.1.1: ICMPv6 straight after the
    // header, hop limit 255) may be for the gateway.
    if p.family == Family::V6 && p.ip_proto == 58 && p.l4 == p.l3 + 40 && p.ttl == 255 {
        if let Some(len) = neighbor::answer_ns(frame, p.l3 as usize, &t.gateway, reply) {
            return Pre::Done(Action::Reply {
                len: len as u16,
                answer: Answer::Neighbor,
            });
        }
    }
    if let Some(pre) = screen(t.routes, ingress, p) {
        return pre;
    }
    match flow_key(p, c) {
        Err(DropReason::FragmentUnknown) if c.holds_fragments => Pre::Done(Action::Hold),
        Err(r) => Pre::Done(Action::Drop(r)),
        Ok(None) => Pre::Untracked,
        Ok(Some(k)) => {
            *key = k;
            Pre::Flow
        }
    }
}

/// A frame's fate from a result of pass 3: routed towards its destination
/// after NAT, or dropped.
#[inline]
fn routed(r: Result<Addr, DropReason>) -> Fate {
    match r {
        Ok(dst) => Fate::Route(dst),
        Err(r) => Fate::Decided(Action::Drop(r)),
    }
}

/// A new flow waiting for its insert. Stage by stage it learns its Maglev
/// slot, then its backend, each asked for before it is read.
#[derive(Clone, Copy)]
struct Pending {
    live: bool,
    /// The frame's place in the burst (its summary, key and hash are
    /// there).
    at: usize,
    service: u32,
    epoch: u32,
    backends_off: u32,
    maglev_at: usize,
    to: FlowKey,
    reply_hash: u64,
}

impl Pending {
    const EMPTY: Pending = Pending {
        live: false,
        at: 0,
        service: 0,
        epoch: 0,
        backends_off: 0,
        maglev_at: 0,
        to: FlowKey::EMPTY,
        reply_hash: 0,
    };
}

/// Pass 3: conntrack, Service, NAT. Flows found in conntrack finish at
/// once; a new flow reads its frontend slot, asks for its Maglev slot and
/// waits; once the burst has been through, the waiting flows read their
/// backends (asking for what their inserts touch), then insert, so that
/// the cache misses of a burst's new flows overlap. A packet that could
/// belong to a waiting flow (a second packet of it, or in a synthetic
/// burst its reply) first finishes the waiting ones: the result is always
/// that of one frame at a time.
fn finish_burst(frames: &mut [&mut [u8]], t: &Tables<'_>, c: &mut Core, sc: &mut Scratch) {
    let mut np = 0;
    let mut client_mask = 0u64;
    for i in 0..frames.len() {
        let Pre::Flow = sc.kind[i] else {
            sc.fate[i] = finish(frames[i], i, t, c, sc);
            continue;
        };
        let (p, key) = (&sc.parsed[i], &sc.keys[i]);
        let (reply, created) = (&mut sc.replies[i], &mut sc.created[i]);
        if let Some(fate) = established(frames[i], p, key, sc.hashes[i], t, c, reply, created) {
            sc.fate[i] = fate;
            continue;
        }
        // A new flow (the rarer case). Could it belong to a waiting flow?
        // A second packet of one has its client end as source, a reply as
        // destination. A 64-bit mask of the waiting flows' client ends
        // answers "no" for almost every packet without walking the list.
        let maybe =
            client_mask & (end_bit(&key.src, key.sport) | end_bit(&key.dst, key.dport)) != 0;
        let depends = maybe
            && sc.pending[..np].iter().any(|q| {
                let qk = &sc.keys[q.at];
                qk == key || (key.dst == qk.src && key.dport == qk.sport && key.proto == qk.proto)
            });
        if depends {
            flush(frames, np, t, c, sc);
            np = 0;
            client_mask = 0;
            sc.fate[i] = finish(frames[i], i, t, c, sc);
            continue;
        }
        let Some(f) = t.services.find(key) else {
            sc.fate[i] = if t.services.is_cluster_ip(key.dst) {
                Fate::Decided(reject(frames[i], p, t, c, &mut sc.replies[i]))
            } else {
                c.counters.untracked += 1;
                routed(Ok(p.dst))
            };
            continue;
        };
        if f.affinity_s != 0 {
            // ClientIP affinity reads and writes its own record: the
            // frame goes alone (after the waiting flows, which may be its
            // client's too).
            flush(frames, np, t, c, sc);
            np = 0;
            client_mask = 0;
            // Conntrack missed it just now, and no waiting flow was its
            // (`depends` above): a new flow, straight.
            let (p, key) = (&sc.parsed[i], &sc.keys[i]);
            let created = &mut sc.created[i];
            sc.fate[i] = match new_flow(frames[i], p, key, sc.hashes[i], t, c, created) {
                NewFlow::Routed(r) => routed(r),
                NewFlow::Refused => Fate::Decided(reject(frames[i], p, t, c, &mut sc.replies[i])),
            };
            continue;
        }
        let Some(maglev_at) = t.services.maglev_index(f, key) else {
            sc.fate[i] = Fate::Decided(unserved(frames[i], p, f, t, c, &mut sc.replies[i]));
            continue;
        };
        t.services.prefetch_maglev(maglev_at);
        client_mask |= end_bit(&key.src, key.sport);
        let to = *key;
        sc.pending[np] = Pending {
            live: true,
            at: i,
            service: f.id,
            epoch: f.epoch,
            backends_off: f.backends_off(),
            maglev_at,
            to,
            reply_hash: 0,
        };
        np += 1;
    }
    flush(frames, np, t, c, sc);
}

/// One bit of 64 for an (address, port) end of a flow.
#[inline]
fn end_bit(addr: &Addr, port: u16) -> u64 {
    let h = (addr.0 as u64 ^ (addr.0 >> 64) as u64)
        .wrapping_add(u64::from(port))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    1 << (h >> 58)
}

/// Finishes the first `np` waiting new flows.
fn flush(frames: &mut [&mut [u8]], np: usize, t: &Tables<'_>, c: &mut Core, sc: &mut Scratch) {
    // The Maglev entries were asked for while the burst went on: read them
    // and ask for the backends they name; then read those.
    for q in &sc.pending[..np] {
        t.services.prefetch_backend(q.backends_off, q.maglev_at);
    }
    for k in 0..np {
        let q = &mut sc.pending[k];
        match t.services.backend_at(q.backends_off, q.maglev_at) {
            Some(b) => {
                q.to = translated(&sc.keys[q.at], b, t);
                q.reply_hash = t.conntrack.hash(&q.to.reversed());
                t.conntrack.prefetch_insert(q.reply_hash, k, &c.slots);
            }
            None => {
                q.live = false;
                sc.fate[q.at] = Fate::Decided(Action::Drop(DropReason::ServiceNoBackends));
            }
        }
    }
    for k in 0..np {
        let q = &mut sc.pending[k];
        if !q.live {
            continue;
        }
        q.live = false;
        let q = *q;
        let r = insert(
            frames[q.at],
            &sc.parsed[q.at],
            &sc.keys[q.at],
            (sc.hashes[q.at], q.reply_hash),
            q.to,
            (q.service, q.epoch),
            t,
            c,
            &mut sc.created[q.at],
        );
        sc.fate[q.at] = routed(r);
    }
}

/// Pass 3 for frame `i` of the burst, alone.
#[inline]
fn finish(frame: &mut [u8], i: usize, t: &Tables<'_>, c: &mut Core, sc: &mut Scratch) -> Fate {
    let p = &sc.parsed[i];
    match sc.kind[i] {
        Pre::Done(a) => Fate::Decided(a),
        Pre::Route => Fate::Route(p.dst),
        Pre::Untracked => {
            if let Transport::IcmpOther {
                kind: IcmpKind::Error,
            } = p.transport
            {
                // An error about a translated flow goes back translated,
                // so that it reaches the socket it is about; one about no
                // flow of ours passes as it is, counted.
                if let Some(dst) = icmp_related::translate(frame, p, t.conntrack) {
                    c.counters.icmp_translated += 1;
                    return Fate::Route(dst);
                }
                c.counters.icmp_error_passthrough += 1;
            }
            c.counters.untracked += 1;
            Fate::Route(p.dst)
        }
        Pre::Flow => {
            let (key, hash) = (&sc.keys[i], sc.hashes[i]);
            let (reply, created) = (&mut sc.replies[i], &mut sc.created[i]);
            if let Some(fate) = established(frame, p, key, hash, t, c, reply, created) {
                return fate;
            }
            match new_flow(frame, p, key, hash, t, c, created) {
                NewFlow::Routed(r) => routed(r),
                NewFlow::Refused => Fate::Decided(reject(frame, p, t, c, reply)),
            }
        }
    }
}

/// A packet of a flow conntrack knows: refresh, translate; its fate.
/// `None` when the flow is not there (or died under us). A flow whose
/// Service port changed since it last looked has its backend checked
/// first (`stale`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn established(
    frame: &mut [u8],
    p: &Parsed,
    key: &FlowKey,
    hash: u64,
    t: &Tables<'_>,
    c: &mut Core,
    reply: &mut [u8; REPLY_MAX],
    created: &mut Option<u32>,
) -> Option<Fate> {
    let found = t.conntrack.hit(key, hash, p.tcp_flags(), c.now_ms)?;
    if !t.services.current(found.service, found.epoch) {
        return Some(stale(frame, p, key, hash, &found, t, c, reply, created));
    }
    c.counters.ct_hits += 1;
    Some(routed(
        apply(frame, p, key, &found.to, c).map(|()| found.to.dst),
    ))
}

/// A flow whose Service port's endpoints changed since it last looked:
/// is its backend still the Service's? A TCP flow goes on while its
/// endpoint is listed at all (a terminating endpoint's connections run to
/// their end, KEP-1669); a UDP or SCTP flow while its endpoint is serving.
/// Otherwise the flow ends, and its packet, going the client's way, is
/// answered as the client needs: TCP with a reset from the ClusterIP
/// (the backend's address may be another pod's by now, which must see
/// nothing of it), UDP and SCTP by picking a backend again, as a new flow.
/// A packet from the backend of such a flow is dropped. No scan of the
/// table: each flow is checked by its own next packet.
#[cold]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn stale(
    frame: &mut [u8],
    p: &Parsed,
    key: &FlowKey,
    hash: u64,
    found: &Found,
    t: &Tables<'_>,
    c: &mut Core,
    reply: &mut [u8; REPLY_MAX],
    created: &mut Option<u32>,
) -> Fate {
    // The flow's frontend and backend, whichever way the packet goes.
    let (original, backend) = match found.dir {
        Dir::Original => (*key, (found.to.dst, found.to.dport)),
        Dir::Reply => (found.to.reversed(), (key.src, key.sport)),
    };
    let port = t.services.find(&original);
    let conditions = port.and_then(|f| {
        t.services
            .port(f.id)
            .and_then(|sp| sp.endpoint(backend.0, backend.1))
    });
    let keep = match key.proto {
        Proto::Tcp => conditions.is_some(),
        _ => conditions.is_some_and(|c| c.serving),
    };
    if keep {
        if let Some(f) = port {
            t.conntrack.restamp(found, f.id, f.epoch);
        }
        c.counters.ct_hits += 1;
        return routed(apply(frame, p, key, &found.to, c).map(|()| found.to.dst));
    }
    if found.dir == Dir::Reply {
        return Fate::Decided(Action::Drop(DropReason::StaleFlow));
    }
    t.conntrack.end(found.entry, found.generation);
    if key.proto == Proto::Tcp {
        return Fate::Decided(
            match tcp_reset::write(frame, p, (key.dst, key.dport), &t.gateway, reply) {
                Some(len) => Action::Reply {
                    len: len as u16,
                    answer: Answer::Reset,
                },
                None => Action::Drop(DropReason::StaleFlow),
            },
        );
    }
    match new_flow(frame, p, key, hash, t, c, created) {
        NewFlow::Routed(r) => routed(r),
        NewFlow::Refused => Fate::Decided(reject(frame, p, t, c, reply)),
    }
}

/// The tuple a new flow's packets leave with: the backend's address and
/// port as destination; and when the backend is the client itself (a pod
/// reaching itself through its own Service), a masquerade address as
/// source, so that the pod's answer goes back through the dataplane to be
/// translated, instead of straight to itself from an address it never
/// called (kube-proxy masquerades exactly this flow too). Every other flow
/// keeps its source.
#[inline]
fn translated(key: &FlowKey, b: &Backend, t: &Tables<'_>) -> FlowKey {
    let src = if b.addr == key.src {
        hairpin_source(key.family, t)
    } else {
        key.src
    };
    FlowKey {
        src,
        dst: b.addr,
        dport: b.port,
        ..*key
    }
}

/// The source a hairpin flow reaches its pod from. IPv4: the pod gateway,
/// 169.254.1.1, which no other flow has as its source, so the flow's
/// answer cannot clash with anyone's; the pod answers it from its own
/// address. IPv6: the node's address, as kube-proxy's masquerade, since a
/// pod answers fe80::1 from its link-local address (source selection,
/// RFC 6724 rule 2), which no flow knows: a UDP server would answer into
/// the void. Without a node address, fe80::1 (TCP still works: its
/// accepted socket answers from the address called).
#[cold]
fn hairpin_source(family: Family, t: &Tables<'_>) -> Addr {
    match family {
        Family::V4 => t.gateway.addr(Family::V4),
        Family::V6 => t
            .routes
            .node_addr(Family::V6)
            .unwrap_or(t.gateway.addr(Family::V6)),
    }
}

/// What became of a packet conntrack did not know.
enum NewFlow {
    /// Admitted (or untracked): routed towards this destination, or
    /// dropped.
    Routed(Result<Addr, DropReason>),
    /// For a ClusterIP with no endpoint for it: to be refused.
    Refused,
}

/// A packet conntrack does not know: a new flow if it is aimed at a
/// Service frontend, untracked otherwise.
#[inline]
fn new_flow(
    frame: &mut [u8],
    p: &Parsed,
    key: &FlowKey,
    hash: u64,
    t: &Tables<'_>,
    c: &mut Core,
    created: &mut Option<u32>,
) -> NewFlow {
    let Some(f) = t.services.find(key) else {
        if t.services.is_cluster_ip(key.dst) {
            return NewFlow::Refused;
        }
        c.counters.untracked += 1;
        return NewFlow::Routed(Ok(p.dst));
    };
    let Some(at) = t.services.maglev_index(f, key) else {
        if f.local_only {
            return NewFlow::Routed(Err(DropReason::ServiceNoLocalEndpoints));
        }
        return NewFlow::Refused;
    };
    let sticky = if f.affinity_s != 0 {
        affinity::recall(key, f, t, c)
    } else {
        None
    };
    let b = match sticky {
        Some(b) => b,
        None => {
            let Some(&b) = t.services.backend_at(f.backends_off(), at) else {
                return NewFlow::Refused;
            };
            if f.affinity_s != 0 {
                affinity::remember(key, f, &b, t, c);
            }
            b
        }
    };
    let to = translated(key, &b, t);
    let reply_hash = t.conntrack.hash(&to.reversed());
    NewFlow::Routed(insert(
        frame,
        p,
        key,
        (hash, reply_hash),
        to,
        (f.id, f.epoch),
        t,
        c,
        created,
    ))
}

/// A new flow to a Service port without a usable endpoint: refused, but
/// for `internalTrafficPolicy: Local` with none on this node, dropped, as
/// kube-proxy does.
fn unserved(
    frame: &[u8],
    p: &Parsed,
    f: &FrontSlot,
    t: &Tables<'_>,
    c: &mut Core,
    reply: &mut [u8; REPLY_MAX],
) -> Action {
    if f.local_only {
        return Action::Drop(DropReason::ServiceNoLocalEndpoints);
    }
    reject(frame, p, t, c, reply)
}

/// A packet for a ClusterIP that nothing behind it serves: a Service port
/// without a usable endpoint (none, none ready nor serving-and-terminating)
/// or a port the Service does not have. Answered as kube-proxy answers
/// it, with ICMP port-unreachable from the ClusterIP, so that the client's
/// connect() or recv() fails with ECONNREFUSED at once (an ICMP error
/// rather than a TCP RST: one answer for TCP, UDP and SCTP alike, and it
/// quotes the packet as sent, which the client's stack matches to its
/// socket). Rate-limited per source and per core (`reject`).
#[cold]
#[inline(never)]
fn reject(
    frame: &[u8],
    p: &Parsed,
    t: &Tables<'_>,
    c: &mut Core,
    reply: &mut [u8; REPLY_MAX],
) -> Action {
    if !matches!(
        p.transport,
        Transport::Tcp { .. } | Transport::Udp { .. } | Transport::Sctp { .. }
    ) {
        return Action::Drop(DropReason::ClusterIpUnserved);
    }
    if !c.rejects.allow(p.src, c.now_ms) {
        return Action::Drop(DropReason::RejectRateLimited);
    }
    match icmp_error::write(
        frame,
        p.l3 as usize,
        p.family,
        IcmpError::PortUnreachable,
        p.dst,
        &t.gateway,
        reply,
    ) {
        Some(len) => Action::Reply {
            len: len as u16,
            answer: Answer::Reject,
        },
        None => Action::Drop(DropReason::ServiceNoBackends),
    }
}

#[allow(clippy::too_many_arguments)]
#[inline]
fn insert(
    frame: &mut [u8],
    p: &Parsed,
    key: &FlowKey,
    hashes: (u64, u64),
    to: FlowKey,
    stamp: (u32, u32),
    t: &Tables<'_>,
    c: &mut Core,
    created: &mut Option<u32>,
) -> Result<Addr, DropReason> {
    let (st, flags) = match p.tcp_flags() {
        Some(f) => state::tcp_initial(f),
        None => (FlowState::New, 0),
    };
    let hit = t
        .conntrack
        .insert_hashed(
            *key,
            to,
            hashes,
            stamp,
            st,
            flags,
            c.now_ms,
            true,
            Some(&mut c.slots),
        )
        .map_err(|e| match e {
            InsertError::ReplyClash => DropReason::ConntrackReplyClash,
            InsertError::Full => DropReason::ConntrackFull,
            InsertError::WindowFull => DropReason::ConntrackWindowFull,
            InsertError::Contended => DropReason::ConntrackContended,
        })?;
    if hit.dir == Dir::Original {
        c.counters.ct_new += 1;
    }
    if hit.created {
        *created = Some(hit.entry);
    }
    let to = hit.record.rewrite_to(hit.dir);
    apply(frame, p, key, &to, c)?;
    Ok(to.dst)
}

/// The packet's flow key; a later fragment's ports come from its first.
#[inline]
fn flow_key(p: &Parsed, c: &mut Core) -> Result<Option<FlowKey>, DropReason> {
    match p.frag {
        Frag::Whole => Ok(p.key()),
        Frag::First { ident } => {
            let key = p.key();
            if let Some(k) = key {
                c.frags.record(
                    k.src, k.dst, k.family, ident, k.proto, k.sport, k.dport, c.now_ms,
                );
            }
            Ok(key)
        }
        Frag::Later { ident } => {
            if Proto::from_number(p.ip_proto).is_none() {
                return Ok(None);
            }
            match c
                .frags
                .find(p.src, p.dst, p.family, ident, p.ip_proto, c.now_ms)
            {
                Some((proto, sport, dport)) => Ok(Some(p.key_with_ports(proto, sport, dport))),
                None => Err(DropReason::FragmentUnknown),
            }
        }
    }
}

#[inline(always)]
fn apply(
    frame: &mut [u8],
    p: &Parsed,
    from: &FlowKey,
    to: &FlowKey,
    c: &mut Core,
) -> Result<(), DropReason> {
    if from != to {
        nat::rewrite(frame, p, from, to)?;
        c.counters.nat += 1;
    }
    Ok(())
}
