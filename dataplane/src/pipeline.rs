//! Stages 1 to 5 in order, as one pure function over a frame and the
//! tables: decode, conntrack, Service load-balancing, NAT. Every I/O
//! backend calls `process_burst` on each burst it receives (or `process`
//! on one frame); tests call them on bytes.
//!
//! A burst runs in three passes, as DPDK's l3fwd does its lookups: decode
//! every frame and ask for its conntrack index line; then, those lines
//! arriving, ask for each flow's entry; then finish each packet. The cache
//! misses of a burst overlap instead of adding up.
//!
//! Routing (stage 6) and the neighbour stage (ARP/NDP for the pod gateway)
//! sit around this function in the worker; the verdict tells the worker
//! what to do with the frame.

use crate::conntrack::{state, Conntrack, Dir, FlowState, InsertError};
use crate::counters::Counters;
use crate::decode::{decode, Decoded, Frag, Parsed, Transport};
use crate::drop::{DropReason, Verdict};
use crate::flow::{Addr, Family, FlowKey, Proto};
use crate::frag::FragTable;
use crate::nat;
use crate::service::ServiceTable;
use crate::wire::icmp::IcmpKind;

/// Frames a burst holds: the prefetch window.
pub const BURST: usize = 32;

/// The shared tables a worker reads: a Service snapshot and conntrack.
#[derive(Clone, Copy)]
pub struct Tables<'a> {
    pub services: &'a ServiceTable,
    pub conntrack: &'a Conntrack,
}

/// What one worker owns: its counters, its fragment table, its clock, and
/// the scratch of a burst (kept here so that a burst initialises nothing).
pub struct Worker {
    pub counters: Counters,
    pub frags: FragTable,
    /// Milliseconds on the conntrack clock, read once per burst.
    pub now_ms: u64,
    /// The flow the frame being decided created, until its caller knows
    /// the frame left (`node::handle` and the worker withdraw it from
    /// conntrack when a later stage drops the frame).
    pub created: Option<u32>,
    /// Taken out for the length of a burst so that the passes can read it
    /// by reference while they update the rest of the worker.
    scratch: Option<Box<Scratch>>,
}

struct Scratch {
    pre: [Pre; BURST],
    pending: [Pending; BURST],
}

impl Default for Worker {
    fn default() -> Self {
        Worker {
            counters: Counters::default(),
            frags: FragTable::default(),
            now_ms: 0,
            created: None,
            scratch: Some(Box::new(Scratch {
                pre: [Pre::Done(Verdict::Forward); BURST],
                pending: [Pending::EMPTY; BURST],
            })),
        }
    }
}

impl Worker {
    /// Reads the clock; call once per burst, not per packet.
    pub fn tick(&mut self, ct: &Conntrack) {
        self.now_ms = ct.now_ms();
    }
}

/// A frame after decode: what the later passes need.
#[derive(Clone, Copy)]
enum Pre {
    Done(Verdict),
    /// An IP packet without a flow of its own (ICMP errors, other protocols).
    Untracked {
        transport: Transport,
        l3: u32,
        family: Family,
    },
    Flow {
        p: Parsed,
        key: FlowKey,
        hash: u64,
    },
}

/// Processes one frame in place and says what to do with it.
#[inline]
pub fn process(frame: &mut [u8], t: &Tables<'_>, w: &mut Worker) -> Verdict {
    let pre = prepare(frame, t, w);
    let v = finish(frame, pre, t, w);
    // Only `node::handle` withdraws a flow its frame made: here the
    // caller has the verdict, and nothing reads this after.
    w.created = None;
    v
}

/// `process`, also saying where the IP header is and its family, which the
/// route stage needs for a forwarded frame (`None` when there is no IP).
/// The verdict is not counted yet: the caller decides the frame's final
/// outcome and counts it once with `count`.
pub fn process_ip(
    frame: &mut [u8],
    t: &Tables<'_>,
    w: &mut Worker,
) -> (Verdict, Option<(usize, Family)>) {
    process_ip_screened(frame, t, w, |_| Screened::Pass)
}

/// An IP packet's header as the screen before conntrack sees it.
#[derive(Clone, Copy, Debug)]
pub struct Header {
    pub src: Addr,
    pub dst: Addr,
    pub family: Family,
    /// TTL or hop limit.
    pub ttl: u8,
}

/// What the screen before conntrack decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Screened {
    /// On to conntrack, Services and NAT.
    Pass,
    /// Straight to the route stage as it is, with no state made (a packet
    /// whose TTL runs out here: the route stage answers it).
    Route,
    /// Dropped, counted under this reason, with no state made.
    Drop(DropReason),
}

/// `process_ip` with a `screen` of each IP packet's header after decode and
/// before conntrack: a packet it drops or routes as is leaves no state
/// (a pod's spoofed source, a TTL that runs out).
#[inline]
pub fn process_ip_screened(
    frame: &mut [u8],
    t: &Tables<'_>,
    w: &mut Worker,
    screen: impl Fn(&Header) -> Screened,
) -> (Verdict, Option<(usize, Family)>) {
    w.created = None;
    let pre = prepare(frame, t, w);
    let ip = match &pre {
        Pre::Flow { p, .. } => Some((p.l3 as usize, p.family)),
        Pre::Untracked { l3, family, .. } => Some((*l3 as usize, *family)),
        Pre::Done(_) => None,
    };
    // A flow's addresses are in its key already; only the TTL is read.
    let header = match &pre {
        Pre::Flow { p, key, .. } => ttl_of(frame, p.l3 as usize, p.family).map(|ttl| Header {
            src: key.src,
            dst: key.dst,
            family: key.family,
            ttl,
        }),
        Pre::Untracked { l3, family, .. } => header_of(frame, *l3 as usize, *family),
        Pre::Done(_) => None,
    };
    if let Some(h) = header {
        match screen(&h) {
            Screened::Pass => {}
            Screened::Route => return (Verdict::Forward, ip),
            Screened::Drop(r) => return (Verdict::Drop(r), ip),
        }
    }
    (decide(frame, pre, t, w), ip)
}

/// The TTL (hop limit) of the IP header at `l3`.
#[inline]
fn ttl_of(frame: &[u8], l3: usize, family: Family) -> Option<u8> {
    match family {
        Family::V4 => frame.get(l3 + 8).copied(),
        Family::V6 => frame.get(l3 + 7).copied(),
    }
}

/// The addresses and TTL of the IP header at `l3` (decode checked its
/// length), for a packet without a flow key.
fn header_of(frame: &[u8], l3: usize, family: Family) -> Option<Header> {
    let ip = frame.get(l3..)?;
    let (src, dst) = match family {
        Family::V4 => (
            Addr::from_v4(ip.get(12..16)?.try_into().ok()?),
            Addr::from_v4(ip.get(16..20)?.try_into().ok()?),
        ),
        Family::V6 => (
            Addr::from_v6(ip.get(8..24)?.try_into().ok()?),
            Addr::from_v6(ip.get(24..40)?.try_into().ok()?),
        ),
    };
    Some(Header {
        src,
        dst,
        family,
        ttl: ttl_of(frame, l3, family)?,
    })
}

/// Processes a burst in place; `verdicts[i]` is `frames[i]`'s. Extra
/// frames past `verdicts.len()` are left alone.
pub fn process_burst(
    frames: &mut [&mut [u8]],
    verdicts: &mut [Verdict],
    t: &Tables<'_>,
    w: &mut Worker,
) {
    let n = frames.len().min(verdicts.len());
    let Some(mut sc) = w.scratch.take() else {
        // Only a panic inside an earlier burst leaves it taken; the packet
        // path has none, but a frame-at-a-time fallback costs nothing here.
        for (f, v) in frames.iter_mut().zip(verdicts.iter_mut()) {
            *v = process(f, t, w);
        }
        return;
    };
    let mut start = 0;
    while start < n {
        let end = (start + BURST).min(n);
        for (i, f) in frames[start..end].iter().enumerate() {
            sc.pre[i] = prepare(f, t, w);
            if let Pre::Flow { hash, .. } = &sc.pre[i] {
                t.conntrack.prefetch_index(*hash);
            }
        }
        for p in &sc.pre[..end - start] {
            if let Pre::Flow { key, hash, .. } = p {
                // No entry in sight: most likely a new flow, which will
                // read its frontend slot next.
                if !t.conntrack.prefetch_entry(*hash) {
                    t.services.prefetch(key);
                }
            }
        }
        finish_burst(
            &mut frames[start..end],
            &mut verdicts[start..end],
            t,
            w,
            &mut sc,
        );
        start = end;
    }
    w.scratch = Some(sc);
    w.created = None;
}

/// A new flow waiting for its insert. Stage by stage it learns its Maglev
/// slot, then its backend, each asked for before it is read.
#[derive(Clone, Copy)]
struct Pending {
    live: bool,
    at: usize,
    p: Parsed,
    key: FlowKey,
    hash: u64,
    service: u32,
    backends_off: u32,
    maglev_at: usize,
    to: FlowKey,
    reply_hash: u64,
}

/// Pass 3 of a burst. Flows found in conntrack finish at once; a new flow
/// reads its frontend slot, asks for its Maglev slot and waits; once the
/// burst has been through, the waiting flows read their backends (asking
/// for what their inserts touch), then insert, so that the cache misses of
/// a burst's new flows overlap. A packet that could belong to a waiting flow
/// (a second packet of it, or in a synthetic burst its reply) first
/// finishes the waiting ones: the result is always that of one frame at a
/// time.
fn finish_burst(
    frames: &mut [&mut [u8]],
    verdicts: &mut [Verdict],
    t: &Tables<'_>,
    w: &mut Worker,
    sc: &mut Scratch,
) {
    let mut np = 0;
    let mut client_mask = 0u64;
    for i in 0..frames.len() {
        let Pre::Flow { p, key, hash } = &sc.pre[i] else {
            verdicts[i] = finish(frames[i], sc.pre[i], t, w);
            continue;
        };
        let hash = *hash;
        if let Some(v) = established(frames[i], p, key, hash, t, w) {
            verdicts[i] = count(v, w);
            continue;
        }
        // A new flow (the rarer case): copied out of the scratch.
        let (p, key) = (*p, *key);
        // Could it belong to a waiting flow? A second packet of one has its
        // client end as source, a reply as destination. A 64-bit mask of
        // the waiting flows' client ends answers "no" for almost every
        // packet without walking the list.
        let maybe =
            client_mask & (end_bit(&key.src, key.sport) | end_bit(&key.dst, key.dport)) != 0;
        let depends = maybe
            && sc.pending[..np].iter().any(|q| {
                q.key == key
                    || (key.dst == q.key.src
                        && key.dport == q.key.sport
                        && key.proto == q.key.proto)
            });
        if depends {
            flush(frames, np, verdicts, t, w, sc);
            np = 0;
            client_mask = 0;
            verdicts[i] = finish(frames[i], sc.pre[i], t, w);
            continue;
        }
        let Some(f) = t.services.find(&key) else {
            w.counters.untracked += 1;
            verdicts[i] = count(Verdict::Forward, w);
            continue;
        };
        let Some(maglev_at) = t.services.maglev_index(f, &key) else {
            verdicts[i] = count(Verdict::Drop(DropReason::ServiceNoBackends), w);
            continue;
        };
        t.services.prefetch_maglev(maglev_at);
        sc.pending[np] = Pending {
            live: true,
            at: i,
            p,
            key,
            hash,
            service: f.id,
            backends_off: f.backends_off(),
            maglev_at,
            to: key,
            reply_hash: 0,
        };
        np += 1;
        client_mask |= end_bit(&key.src, key.sport);
    }
    flush(frames, np, verdicts, t, w, sc);
}

/// One bit of 64 for an (address, port) end of a flow.
#[inline]
fn end_bit(addr: &crate::flow::Addr, port: u16) -> u64 {
    let h = (addr.0 as u64 ^ (addr.0 >> 64) as u64)
        .wrapping_add(u64::from(port))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    1 << (h >> 58)
}

/// Finishes the first `np` waiting new flows.
fn flush(
    frames: &mut [&mut [u8]],
    np: usize,
    verdicts: &mut [Verdict],
    t: &Tables<'_>,
    w: &mut Worker,
    sc: &mut Scratch,
) {
    // The Maglev entries were asked for while the burst went on: read them
    // and ask for the backends they name; then read those.
    for q in &sc.pending[..np] {
        t.services.prefetch_backend(q.backends_off, q.maglev_at);
    }
    for k in 0..np {
        let q = &mut sc.pending[k];
        match t.services.backend_at(q.backends_off, q.maglev_at) {
            Some(b) => {
                q.to = FlowKey {
                    dst: b.addr,
                    dport: b.port,
                    ..q.key
                };
                q.reply_hash = t.conntrack.hash(&q.to.reversed());
                t.conntrack.prefetch_insert(q.reply_hash, k);
            }
            None => {
                q.live = false;
                let at = q.at;
                verdicts[at] = count(Verdict::Drop(DropReason::ServiceNoBackends), w);
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
        let v = insert(
            frames[q.at],
            &q.p,
            &q.key,
            q.hash,
            q.to,
            q.reply_hash,
            q.service,
            t,
            w,
        )
        .unwrap_or_else(Verdict::Drop);
        verdicts[q.at] = count(v, w);
    }
}

impl Pending {
    const EMPTY: Pending = Pending {
        live: false,
        at: 0,
        p: Parsed::EMPTY,
        key: FlowKey::EMPTY,
        hash: 0,
        service: 0,
        backends_off: 0,
        maglev_at: 0,
        to: FlowKey::EMPTY,
        reply_hash: 0,
    };
}

/// Pass 1: decode and find the flow key.
#[inline]
fn prepare(frame: &[u8], t: &Tables<'_>, w: &mut Worker) -> Pre {
    w.counters.rx += 1;
    let p = match decode(frame) {
        Err(r) => return Pre::Done(Verdict::Drop(r)),
        // The gateway's ARP replies are the neighbour stage's; the rest
        // belongs to the host.
        Ok(Decoded::Arp { .. }) => return Pre::Done(Verdict::ToHost),
        Ok(Decoded::Ip(p)) => p,
    };
    match flow_key(&p, w) {
        Err(r) => Pre::Done(Verdict::Drop(r)),
        Ok(None) => Pre::Untracked {
            transport: p.transport,
            l3: p.l3,
            family: p.family,
        },
        Ok(Some(key)) => Pre::Flow {
            p,
            key,
            hash: t.conntrack.hash(&key),
        },
    }
}

/// Pass 3 for one frame: conntrack, Service, NAT, and the counters.
#[inline]
fn finish(frame: &mut [u8], pre: Pre, t: &Tables<'_>, w: &mut Worker) -> Verdict {
    let v = decide(frame, pre, t, w);
    count(v, w)
}

/// Pass 3 without the verdict's count, for callers that decide more after
/// the pipeline (the route stage) and count the final outcome once.
#[inline]
fn decide(frame: &mut [u8], pre: Pre, t: &Tables<'_>, w: &mut Worker) -> Verdict {
    match pre {
        Pre::Done(v) => v,
        Pre::Untracked { transport, .. } => {
            if let Transport::IcmpOther {
                kind: IcmpKind::Error,
            } = transport
            {
                // The quoted packet inside is not translated yet: a PMTU or
                // unreachable error about a NATed flow reaches the client
                // with the backend's address inside. Counted so it shows.
                w.counters.icmp_error_passthrough += 1;
            }
            w.counters.untracked += 1;
            Verdict::Forward
        }
        Pre::Flow { p, key, hash } => match established(frame, &p, &key, hash, t, w) {
            Some(v) => v,
            None => new_flow(frame, &p, &key, hash, t, w).unwrap_or_else(Verdict::Drop),
        },
    }
}

/// Counts a frame's final verdict (forwarded, to the host, or the drop
/// reason); `process_ip`'s callers call it once they know the outcome.
#[inline]
pub fn count(v: Verdict, w: &mut Worker) -> Verdict {
    match v {
        Verdict::Forward => w.counters.forwarded += 1,
        Verdict::ToHost => w.counters.to_host += 1,
        Verdict::Drop(r) => w.counters.drop(r),
    }
    v
}

/// A packet of a flow conntrack knows: refresh, translate. `None` when the
/// flow is not there (or died under us).
#[inline]
fn established(
    frame: &mut [u8],
    p: &Parsed,
    key: &FlowKey,
    hash: u64,
    t: &Tables<'_>,
    w: &mut Worker,
) -> Option<Verdict> {
    let (_dir, to) = t.conntrack.hit(key, hash, p.tcp_flags(), w.now_ms)?;
    w.counters.ct_hits += 1;
    Some(match apply(frame, p, key, &to, w) {
        Ok(()) => Verdict::Forward,
        Err(r) => Verdict::Drop(r),
    })
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
    w: &mut Worker,
) -> Result<Verdict, DropReason> {
    let Some(f) = t.services.find(key) else {
        w.counters.untracked += 1;
        return Ok(Verdict::Forward);
    };
    let at = t
        .services
        .maglev_index(f, key)
        .ok_or(DropReason::ServiceNoBackends)?;
    let b = t
        .services
        .backend_at(f.backends_off(), at)
        .ok_or(DropReason::ServiceNoBackends)?;
    let to = FlowKey {
        dst: b.addr,
        dport: b.port,
        ..*key
    };
    let reply_hash = t.conntrack.hash(&to.reversed());
    insert(frame, p, key, hash, to, reply_hash, f.id, t, w)
}

#[allow(clippy::too_many_arguments)]
#[inline]
fn insert(
    frame: &mut [u8],
    p: &Parsed,
    key: &FlowKey,
    hash: u64,
    to: FlowKey,
    reply_hash: u64,
    service: u32,
    t: &Tables<'_>,
    w: &mut Worker,
) -> Result<Verdict, DropReason> {
    let (st, flags) = match p.tcp_flags() {
        Some(f) => state::tcp_initial(f),
        None => (FlowState::New, 0),
    };
    let hit = t
        .conntrack
        .insert_hashed(
            *key,
            to,
            (hash, reply_hash),
            service,
            st,
            flags,
            w.now_ms,
            true,
        )
        .map_err(|e| match e {
            InsertError::ReplyClash => DropReason::ConntrackReplyClash,
            InsertError::Full | InsertError::WindowFull | InsertError::Contended => {
                DropReason::ConntrackFull
            }
        })?;
    if hit.dir == Dir::Original {
        w.counters.ct_new += 1;
    }
    if hit.created {
        w.created = Some(hit.entry);
    }
    apply(frame, p, key, &hit.record.rewrite_to(hit.dir), w)?;
    Ok(Verdict::Forward)
}

/// The packet's flow key; a later fragment's ports come from its first.
#[inline]
fn flow_key(p: &Parsed, w: &mut Worker) -> Result<Option<FlowKey>, DropReason> {
    match p.frag {
        Frag::Whole => Ok(p.key()),
        Frag::First { ident } => {
            let key = p.key();
            if let Some(k) = key {
                w.frags.record(
                    k.src, k.dst, k.family, ident, k.proto, k.sport, k.dport, w.now_ms,
                );
            }
            Ok(key)
        }
        Frag::Later { ident } => {
            if Proto::from_number(p.ip_proto).is_none() {
                return Ok(None);
            }
            match w
                .frags
                .find(p.src, p.dst, p.family, ident, p.ip_proto, w.now_ms)
            {
                Some((proto, sport, dport)) => Ok(Some(p.key_with_ports(proto, sport, dport))),
                None => Err(DropReason::FragmentUnknown),
            }
        }
    }
}

#[inline]
fn apply(
    frame: &mut [u8],
    p: &Parsed,
    from: &FlowKey,
    to: &FlowKey,
    w: &mut Worker,
) -> Result<(), DropReason> {
    if from != to {
        nat::rewrite(frame, p, from, to)?;
        w.counters.nat += 1;
    }
    Ok(())
}
