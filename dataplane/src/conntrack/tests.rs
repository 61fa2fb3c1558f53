use super::*;
use crate::flow::{Addr, Family, Proto};

fn key(i: u32) -> FlowKey {
    FlowKey {
        src: Addr::from_v4([198, 18, 1, (i % 250) as u8 + 2]),
        dst: Addr::from_v4([198, 19, 0, 10]),
        sport: 1024 + (i / 250) as u16,
        dport: 80,
        proto: Proto::Tcp,
        family: Family::V4,
    }
}

fn dnat(k: FlowKey) -> FlowKey {
    FlowKey {
        dst: Addr::from_v4([198, 18, 2, 7]),
        dport: 8080,
        ..k
    }
}

#[test]
fn both_directions_find_the_flow() {
    let ct = Conntrack::with_seed(1024, Timeouts::default(), 7);
    let k = key(1);
    let hit = ct.insert(k, dnat(k), 3, FlowState::New, 0, 0).unwrap();
    assert_eq!(hit.dir, Dir::Original);
    let fwd = ct.lookup(&k).unwrap();
    assert_eq!(fwd.dir, Dir::Original);
    assert_eq!(fwd.record.rewrite_to(Dir::Original), dnat(k));
    let rep = ct.lookup(&dnat(k).reversed()).unwrap();
    assert_eq!(rep.dir, Dir::Reply);
    assert_eq!(rep.entry, fwd.entry);
    assert_eq!(rep.record.rewrite_to(Dir::Reply), k.reversed());
    assert_eq!(rep.record.service, 3);
    assert!(
        ct.lookup(&k.reversed()).is_none(),
        "the un-NATed reverse is not the flow"
    );
    assert_eq!(ct.len(), 1);
}

#[test]
fn inserting_an_existing_flow_returns_it() {
    let ct = Conntrack::with_seed(16, Timeouts::default(), 7);
    let k = key(5);
    let a = ct.insert(k, dnat(k), 1, FlowState::New, 0, 0).unwrap();
    let b = ct
        .insert(
            k,
            FlowKey {
                dport: 9999,
                ..dnat(k)
            },
            1,
            FlowState::New,
            0,
            0,
        )
        .unwrap();
    assert_eq!(a.entry, b.entry);
    assert_eq!(
        b.record.translated,
        dnat(k),
        "the first insert's NAT stands"
    );
    assert_eq!(ct.len(), 1);
}

#[test]
fn full_table_refuses_new_flows_and_keeps_established_ones() {
    let ct = Conntrack::with_seed(100, Timeouts::default(), 7);
    for i in 0..100 {
        ct.insert(
            key(i),
            dnat(key(i)),
            0,
            FlowState::Established,
            state::flags::SEEN_REPLY,
            0,
        )
        .unwrap();
    }
    assert_eq!(
        ct.insert(key(100), dnat(key(100)), 0, FlowState::New, 0, 0)
            .err(),
        Some(InsertError::Full)
    );
    for i in 0..100 {
        assert!(ct.lookup(&key(i)).is_some(), "flow {i} was evicted");
    }
}

/// A table filled with flows nobody answers (a SYN flood, spoofed ACKs
/// picked up mid-stream) still admits new flows: each evicts one of them,
/// never an answered flow.
#[test]
fn a_full_table_evicts_unanswered_flows_for_new_ones_never_answered_ones() {
    let ct = Conntrack::with_seed(1000, Timeouts::default(), 7);
    // Half answered, half a flood of SYNs and mid-stream ACKs.
    for i in 0..1000 {
        let (st, fl) = match i % 4 {
            0 | 1 => (FlowState::Established, state::flags::SEEN_REPLY),
            2 => (FlowState::New, 0),
            _ => (FlowState::Established, state::flags::PICKED_UP),
        };
        ct.insert(key(i), dnat(key(i)), 0, st, fl, 0).unwrap();
    }
    assert_eq!(ct.len(), 1000);
    let mut admitted = 0u64;
    for i in 1000..1400 {
        if ct
            .insert(key(i), dnat(key(i)), 0, FlowState::New, 0, 0)
            .is_ok()
        {
            admitted += 1;
        }
    }
    assert!(admitted >= 300, "only {admitted} of 400 new flows admitted");
    assert_eq!(ct.stats.evicted.load(Ordering::Relaxed), admitted);
    assert_eq!(ct.len(), 1000);
    for i in (0..1000).filter(|i| i % 4 < 2) {
        assert!(
            ct.lookup(&key(i)).is_some(),
            "answered flow {i} was evicted"
        );
    }
}

#[test]
fn reply_tuple_clash_is_refused() {
    let ct = Conntrack::with_seed(16, Timeouts::default(), 7);
    let k = key(1);
    ct.insert(k, dnat(k), 0, FlowState::New, 0, 0).unwrap();
    // Same client tuple to another VIP that maps to the same backend.
    let other = FlowKey {
        dst: Addr::from_v4([198, 19, 0, 11]),
        ..k
    };
    assert_eq!(
        ct.insert(other, dnat(k), 1, FlowState::New, 0, 0).err(),
        Some(InsertError::ReplyClash)
    );
    assert_eq!(ct.len(), 1);
}

#[test]
fn sweep_expires_by_age_and_state() {
    let t = Timeouts::default();
    let ct = Conntrack::with_seed(64, t, 7);
    let syn = key(1);
    let est = key(2);
    ct.insert(syn, dnat(syn), 0, FlowState::New, 0, 0).unwrap();
    ct.insert(est, dnat(est), 0, FlowState::Established, 0, 0)
        .unwrap();
    assert_eq!(ct.sweep(t.tcp_syn_ms, 64), 0, "not past the timeout yet");
    assert_eq!(ct.sweep(t.tcp_syn_ms + 1, 64), 1);
    assert!(ct.lookup(&syn).is_none());
    assert!(ct.lookup(&dnat(syn).reversed()).is_none());
    assert!(ct.lookup(&est).is_some());
    assert_eq!(ct.sweep(t.tcp_established_ms + 1, 64), 1);
    assert!(ct.is_empty());
}

#[test]
fn a_flow_picked_up_mid_stream_and_never_answered_expires_in_minutes() {
    use crate::conntrack::state::{flags, tcp_initial};
    use crate::wire::tcp::ACK;
    let t = Timeouts::default();
    let ct = Conntrack::with_seed(64, t, 7);
    // One spoofed ACK each: picked up as established, nothing answers.
    let (state, f) = tcp_initial(ACK);
    assert_ne!(f & flags::PICKED_UP, 0);
    let spoofed = key(3);
    ct.insert(spoofed, dnat(spoofed), 0, state, f, 0).unwrap();
    // A restarted daemon's real connection: picked up, then answered.
    let real = key(4);
    ct.insert(real, dnat(real), 0, state, f, 0).unwrap();
    let reply = ct.lookup(&dnat(real).reversed()).unwrap();
    assert_eq!(ct.touch(&reply, Some(ACK), 0), Some(FlowState::Established));
    assert_eq!(ct.sweep(t.tcp_unreplied_ms, 64), 0);
    assert_eq!(
        ct.sweep(t.tcp_unreplied_ms + 1, 64),
        1,
        "the unanswered one"
    );
    assert!(ct.lookup(&spoofed).is_none());
    assert!(
        ct.lookup(&real).is_some(),
        "the answered one stays established"
    );
}

#[test]
fn a_created_flow_can_be_withdrawn_and_its_entry_reused() {
    let ct = Conntrack::with_seed(4, Timeouts::default(), 7);
    let k = key(5);
    let h = ct.insert(k, dnat(k), 0, FlowState::New, 0, 0).unwrap();
    assert!(h.created);
    // Inserting it again finds it: not created by that call.
    assert!(
        !ct.insert(k, dnat(k), 0, FlowState::New, 0, 0)
            .unwrap()
            .created
    );
    assert!(ct.forget(h.entry));
    assert!(ct.lookup(&k).is_none());
    assert!(ct.lookup(&dnat(k).reversed()).is_none());
    assert!(ct.is_empty());
    assert!(!ct.forget(h.entry), "gone already");
    // The table's four entries are all usable again.
    for i in 10..14 {
        ct.insert(key(i), dnat(key(i)), 0, FlowState::New, 0, 0)
            .unwrap();
    }
    assert_eq!(ct.len(), 4);
}

/// The race a generation closes: a worker finds a flow, the sweeper
/// expires it, a new flow takes the entry (the free list is LIFO: at once),
/// and only then does the first worker's packet, a RST, reach the entry.
/// It must not close the new flow.
#[test]
fn a_stale_packet_cannot_change_the_flow_that_reused_its_entry() {
    use crate::wire::tcp::RST;
    let t = Timeouts {
        tcp_syn_ms: 5,
        ..Timeouts::default()
    };
    let ct = Conntrack::with_seed(2, t, 7);
    let old = key(1);
    ct.insert(old, dnat(old), 0, FlowState::New, 0, 0).unwrap();
    let found = ct.lookup(&old).unwrap();
    assert_eq!(ct.sweep(10, 2), 1, "the old flow expires");
    let new = key(2);
    let taken = ct.insert(new, dnat(new), 0, FlowState::New, 0, 10).unwrap();
    assert_eq!(taken.entry, found.entry, "the new flow took the same entry");
    assert_eq!(
        ct.touch(&found, Some(RST), 10),
        None,
        "the old flow is gone"
    );
    let now = ct.lookup(&new).unwrap();
    assert_eq!(
        now.record.life.state,
        FlowState::New,
        "the new flow is untouched"
    );
    // The new flow's own packets still move it.
    assert_eq!(ct.touch(&now, Some(RST), 11), Some(FlowState::Closed));
}

#[test]
fn touch_refreshes_and_tracks_tcp() {
    use crate::wire::tcp::{ACK, SYN};
    let t = Timeouts::default();
    let ct = Conntrack::with_seed(64, t, 7);
    let k = key(9);
    let h = ct.insert(k, dnat(k), 0, FlowState::New, 0, 0).unwrap();
    let reply = ct.lookup(&dnat(k).reversed()).unwrap();
    assert_eq!(
        ct.touch(&reply, Some(SYN | ACK), 10),
        Some(FlowState::SynReceived)
    );
    assert_eq!(ct.touch(&h, Some(ACK), 20), Some(FlowState::Established));
    // Refreshed at 20 ms: alive at 20 + established timeout, gone after.
    assert_eq!(ct.sweep(t.tcp_established_ms + 20, 64), 0);
    assert_eq!(ct.sweep(t.tcp_established_ms + 21, 64), 1);
    assert_eq!(
        ct.touch(&h, Some(ACK), 30),
        None,
        "a dead flow reads as a miss"
    );
}

#[test]
fn churn_keeps_every_live_flow_reachable() {
    // Many insert/expire rounds through a small table: tombstones pile up
    // and the sweeper clears them; no live flow may become unreachable.
    let t = Timeouts {
        tcp_syn_ms: 5,
        ..Timeouts::default()
    };
    let ct = Conntrack::with_seed(256, t, 99);
    let mut now = 0;
    for round in 0..200u32 {
        let base = round * 200;
        for i in 0..200 {
            let k = key(base + i);
            ct.insert(k, dnat(k), 0, FlowState::New, 0, now).unwrap();
        }
        for i in 0..200 {
            let k = key(base + i);
            assert!(ct.lookup(&k).is_some(), "round {round}: flow {i} lost");
            assert!(ct.lookup(&dnat(k).reversed()).is_some());
        }
        now += 10;
        assert_eq!(ct.sweep(now, 256), 200);
    }
    assert!(ct.stats.tombstones_cleared.load(Ordering::Relaxed) > 0);
    assert!(ct.is_empty());
}

// The budget is a property of the layout, so it is checked when compiling.
const _: () = assert!(BYTES_PER_FLOW <= 128);

fn answered(ct: &Conntrack, i: u32, cache: Option<&mut SlotCache>) -> Result<Hit, InsertError> {
    let k = key(i);
    let hashes = (ct.hash(&k), ct.hash(&dnat(k).reversed()));
    ct.insert_hashed(
        k,
        dnat(k),
        hashes,
        (0, 0),
        FlowState::Established,
        state::flags::SEEN_REPLY,
        0,
        false,
        cache,
    )
}

/// Two workers' caches share the table out between them: each entry goes
/// to one flow, every insert is counted, and what is not in a flow is in
/// a cache (at most `CACHE` entries a worker, the slack a table gives its
/// workers' caches).
#[test]
fn worker_caches_hand_out_each_entry_once_and_count_every_insert() {
    let ct = Conntrack::with_seed(100, Timeouts::default(), 7);
    let (mut a, mut b) = (SlotCache::default(), SlotCache::default());
    let mut entries = std::collections::HashSet::new();
    let mut refused = [false; 2];
    let mut i = 0;
    while refused != [true, true] {
        let w = (i % 2) as usize;
        let c = if w == 0 { &mut a } else { &mut b };
        match answered(&ct, i, Some(c)) {
            Ok(hit) => assert!(entries.insert(hit.entry), "entry {} given twice", hit.entry),
            Err(e) => {
                assert_eq!(e, InsertError::Full);
                refused[w] = true;
            }
        }
        i += 1;
    }
    assert_eq!(ct.len(), entries.len());
    assert_eq!(ct.inserted(), entries.len() as u64);
    assert_eq!(entries.len() + a.n + b.n, 100, "an entry lost");
    assert!(a.n <= CACHE && b.n <= CACHE);
    // The cached ones go back, and are used.
    ct.return_cache(&mut a);
    ct.return_cache(&mut b);
    let more = (1000..1200)
        .filter(|&i| answered(&ct, i, None).is_ok())
        .count();
    assert_eq!(entries.len() + more, 100);
}

/// Entries a worker's cache holds are not lost to the others: the table
/// takes them back when the worker is done with it.
#[test]
fn a_cache_gives_back_what_it_holds() {
    let ct = Conntrack::with_seed(64, Timeouts::default(), 7);
    let mut a = SlotCache::default();
    answered(&ct, 0, Some(&mut a)).unwrap();
    // The cache took a batch: the shared list has the rest.
    let shared = (1..64).filter(|&i| answered(&ct, i, None).is_ok()).count();
    assert_eq!(shared, 64 - REFILL);
    ct.return_cache(&mut a);
    let after = (64..128)
        .filter(|&i| answered(&ct, i, None).is_ok())
        .count();
    assert_eq!(after, REFILL - 1);
    assert_eq!(ct.len(), 64);
}
