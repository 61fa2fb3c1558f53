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
use crate::flow::{FlowKey, Proto};
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

/// What one worker owns: its counters, its fragment table and its clock.
#[derive(Default)]
pub struct Worker {
    pub counters: Counters,
    pub frags: FragTable,
    /// Milliseconds on the conntrack clock, read once per burst.
    pub now_ms: u64,
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
    Untracked(Transport),
    Flow { p: Parsed, key: FlowKey, hash: u64 },
}

/// Processes one frame in place and says what to do with it.
#[inline]
pub fn process(frame: &mut [u8], t: &Tables<'_>, w: &mut Worker) -> Verdict {
    let pre = prepare(frame, t, w);
    finish(frame, pre, t, w)
}

/// Processes a burst in place; `verdicts[i]` is `frames[i]`'s. Extra
/// frames past `verdicts.len()` are left alone.
pub fn process_burst(frames: &mut [&mut [u8]], verdicts: &mut [Verdict], t: &Tables<'_>, w: &mut Worker) {
    let n = frames.len().min(verdicts.len());
    let mut start = 0;
    while start < n {
        let end = (start + BURST).min(n);
        let mut pre = [Pre::Done(Verdict::Forward); BURST];
        for (i, f) in frames[start..end].iter().enumerate() {
            pre[i] = prepare(f, t, w);
            if let Pre::Flow { hash, .. } = pre[i] {
                t.conntrack.prefetch_index(hash);
            }
        }
        for p in &pre[..end - start] {
            if let Pre::Flow { hash, .. } = *p {
                t.conntrack.prefetch_entry(hash);
            }
        }
        for (i, f) in frames[start..end].iter_mut().enumerate() {
            verdicts[start + i] = finish(f, pre[i], t, w);
        }
        start = end;
    }
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
        Ok(None) => Pre::Untracked(p.transport),
        Ok(Some(key)) => Pre::Flow { p, key, hash: t.conntrack.hash(&key) },
    }
}

/// Pass 3: conntrack, Service, NAT, and the counters.
#[inline]
fn finish(frame: &mut [u8], pre: Pre, t: &Tables<'_>, w: &mut Worker) -> Verdict {
    let v = match pre {
        Pre::Done(v) => v,
        Pre::Untracked(transport) => {
            if let Transport::IcmpOther { kind: IcmpKind::Error } = transport {
                // The quoted packet inside is not translated yet: a PMTU or
                // unreachable error about a NATed flow reaches the client
                // with the backend's address inside. Counted so it shows.
                w.counters.icmp_error_passthrough += 1;
            }
            w.counters.untracked += 1;
            Verdict::Forward
        }
        Pre::Flow { p, key, hash } => match flow(frame, &p, &key, hash, t, w) {
            Ok(v) => v,
            Err(r) => Verdict::Drop(r),
        },
    };
    match v {
        Verdict::Forward => w.counters.forwarded += 1,
        Verdict::ToHost => w.counters.to_host += 1,
        Verdict::Drop(r) => w.counters.drop(r),
    }
    v
}

#[inline]
fn flow(frame: &mut [u8], p: &Parsed, key: &FlowKey, hash: u64, t: &Tables<'_>, w: &mut Worker) -> Result<Verdict, DropReason> {
    if let Some(hit) = t.conntrack.lookup_hashed(key, hash) {
        // A TCP later fragment carries no flags: no state change, no refresh.
        let alive = match (key.proto, p.tcp_flags()) {
            (Proto::Tcp, None) => Some(hit.record.life.state),
            (_, flags) => t.conntrack.touch(&hit, flags, w.now_ms),
        };
        if alive.is_some() {
            w.counters.ct_hits += 1;
            apply(frame, p, key, &hit.record.rewrite_to(hit.dir), w)?;
            return Ok(Verdict::Forward);
        }
    }

    let Some(id) = t.services.lookup(key) else {
        w.counters.untracked += 1;
        return Ok(Verdict::Forward);
    };
    let port = t.services.port(id).ok_or(DropReason::ServiceNoBackends)?;
    let backend = port.select(key).ok_or(DropReason::ServiceNoBackends)?;
    let to = FlowKey { dst: backend.addr, dport: backend.port, ..*key };
    let (st, flags) = match p.tcp_flags() {
        Some(f) => state::tcp_initial(f),
        None => (FlowState::New, 0),
    };
    let hit = t.conntrack.insert(*key, to, id, st, flags, w.now_ms).map_err(|e| match e {
        InsertError::ReplyClash => DropReason::ConntrackReplyClash,
        InsertError::Full | InsertError::WindowFull | InsertError::Contended => DropReason::ConntrackFull,
    })?;
    if hit.dir == Dir::Original {
        w.counters.ct_new += 1;
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
                w.frags.record(k.src, k.dst, k.family, ident, k.proto, k.sport, k.dport, w.now_ms);
            }
            Ok(key)
        }
        Frag::Later { ident } => {
            if Proto::from_number(p.ip_proto).is_none() {
                return Ok(None);
            }
            match w.frags.find(p.src, p.dst, p.family, ident, p.ip_proto, w.now_ms) {
                Some((proto, sport, dport)) => Ok(Some(p.key_with_ports(proto, sport, dport))),
                None => Err(DropReason::FragmentUnknown),
            }
        }
    }
}

#[inline]
fn apply(frame: &mut [u8], p: &Parsed, from: &FlowKey, to: &FlowKey, w: &mut Worker) -> Result<(), DropReason> {
    if from != to {
        nat::rewrite(frame, p, from, to)?;
        w.counters.nat += 1;
    }
    Ok(())
}
