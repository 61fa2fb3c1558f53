//! ClientIP session affinity: every new connection from a client address
//! to a Service port goes to the backend its last one went to, if that was
//! within the Service's `timeoutSeconds`, as kube-proxy's `recent` match
//! does (the timeout counts from the last new connection).
//!
//! The record is a conntrack entry of its own, so that every worker shares
//! it with no lock: key (client, port 0, ClusterIP, port, protocol),
//! translated to the backend, flagged `AFFINITY` (the sweeper keeps it as
//! long as Kubernetes's largest timeout; the Service's own is checked
//! here, so that a change to it applies at once). It is stamped with the
//! Service port's epoch like a flow: a backend that is no longer eligible
//! (gone, or not ready while others are) is forgotten, and the client
//! moves.

use super::{Core, Tables};
use crate::conntrack::{state, Dir, FlowState, Found};
use crate::flow::FlowKey;
use crate::service::{Backend, FrontSlot};

/// The affinity record's key for a client's packet.
fn record_key(key: &FlowKey) -> FlowKey {
    FlowKey { sport: 0, ..*key }
}

/// The backend the client's last connection to `f` went to, if within
/// the timeout and still eligible; refreshes the record. `None`: pick one
/// (and `remember` it).
#[cold]
#[inline(never)]
pub(super) fn recall(
    key: &FlowKey,
    f: &FrontSlot,
    t: &Tables<'_>,
    c: &mut Core,
) -> Option<Backend> {
    let rkey = record_key(key);
    let hit = t.conntrack.lookup(&rkey)?;
    let r = &hit.record;
    let generation = r.life.generation;
    if hit.dir != Dir::Original || r.life.flags & state::flags::AFFINITY == 0 {
        return None;
    }
    let fresh = c.now_ms.saturating_sub(r.life.last_seen_ms) <= u64::from(f.affinity_s) * 1000;
    let port = t.services.port(f.id)?;
    let b = port
        .eligible
        .iter()
        .find(|b| b.addr == r.translated.dst && b.port == r.translated.dport)
        .copied();
    match b {
        Some(b) if fresh => {
            if !t.services.current(r.service, r.epoch) || r.service != f.id {
                let found = Found {
                    dir: hit.dir,
                    to: r.translated,
                    service: r.service,
                    epoch: r.epoch,
                    entry: hit.entry,
                    generation,
                };
                t.conntrack.restamp(&found, f.id, f.epoch);
            }
            t.conntrack.touch(&hit, None, c.now_ms);
            Some(b)
        }
        _ => {
            // Timed out, or the backend left: the client moves.
            t.conntrack.end(hit.entry, generation);
            None
        }
    }
}

/// Records that the client's connections to `f` go to `b`. A full table
/// keeps no record: the next connection picks again.
#[cold]
#[inline(never)]
pub(super) fn remember(key: &FlowKey, f: &FrontSlot, b: &Backend, t: &Tables<'_>, c: &mut Core) {
    let rkey = record_key(key);
    let to = FlowKey {
        dst: b.addr,
        dport: b.port,
        ..rkey
    };
    let hashes = (t.conntrack.hash(&rkey), t.conntrack.hash(&to.reversed()));
    let _ = t.conntrack.insert_hashed(
        rkey,
        to,
        hashes,
        (f.id, f.epoch),
        FlowState::Established,
        state::flags::AFFINITY | state::flags::SEEN_REPLY,
        c.now_ms,
        false,
        Some(&mut c.slots),
    );
}
