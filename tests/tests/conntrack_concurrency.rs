//! Conntrack under two threads at once: no flow lost, none duplicated,
//! and lookups of live flows never miss while others insert and expire.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use sluice_dataplane::conntrack::{Conntrack, FlowState, Timeouts};
use sluice_dataplane::{Addr, Family, FlowKey, Proto};

fn key(i: u32) -> FlowKey {
    FlowKey {
        src: Addr::from_v4([198, 18, 1 + (i >> 16) as u8, (i >> 8) as u8]),
        dst: Addr::from_v4([198, 19, 0, 10]),
        sport: 1024 + (i & 0xff) as u16,
        dport: 80,
        proto: Proto::Tcp,
        family: Family::V4,
    }
}

fn dnat(k: FlowKey) -> FlowKey {
    FlowKey {
        dst: Addr::from_v4([198, 18, 2, 2]),
        dport: 8080,
        ..k
    }
}

#[test]
fn two_threads_inserting_the_same_flows_agree_on_one_entry_each() {
    const N: u32 = 60_000;
    let ct = Arc::new(Conntrack::new(2 * N as usize, Timeouts::default()));
    let run = |reverse: bool| {
        let ct = ct.clone();
        std::thread::spawn(move || {
            let mut got = vec![0u32; N as usize];
            let order: Vec<u32> = if reverse {
                (0..N).rev().collect()
            } else {
                (0..N).collect()
            };
            for i in order {
                let k = key(i);
                let h = ct
                    .insert(k, dnat(k), 1, FlowState::New, 0, 0)
                    .expect("insert");
                got[i as usize] = h.entry;
                // Interleave lookups of both directions of what we just got.
                assert_eq!(ct.lookup(&k).expect("own insert visible").entry, h.entry);
                assert_eq!(
                    ct.lookup(&dnat(k).reversed()).expect("reply visible").entry,
                    h.entry
                );
            }
            got
        })
    };
    let (a, b) = (run(false), run(true));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    assert_eq!(
        a, b,
        "both threads must end up with the same entry for every flow"
    );
    assert_eq!(ct.len(), N as usize);
    let flows = ct.flows(usize::MAX);
    assert_eq!(flows.len(), N as usize, "entries in use");
    let unique: HashSet<_> = flows
        .iter()
        .map(|r| (r.original.src, r.original.sport))
        .collect();
    assert_eq!(unique.len(), N as usize, "a flow is stored twice");
    assert_eq!(ct.inserted(), u64::from(N));
}

#[test]
fn lookups_never_miss_live_flows_during_churn_and_sweeps() {
    const LIVE: u32 = 20_000;
    let t = Timeouts {
        tcp_syn_ms: 1,
        ..Timeouts::default()
    };
    let ct = Arc::new(Conntrack::new(40_000, t));
    for i in 0..LIVE {
        ct.insert(
            key(i),
            dnat(key(i)),
            0,
            FlowState::Established,
            sluice_dataplane::conntrack::state::flags::SEEN_REPLY,
            0,
        )
        .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    // Churn: short-lived flows inserted and expired by the sweeper, which
    // leaves tombstones and clears them, right beside the live flows.
    let churn = {
        let (ct, stop) = (ct.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut now = 10;
            let mut round = 0u32;
            while !stop.load(Ordering::Relaxed) {
                for j in 0..5_000 {
                    let k = key(100_000 + (round % 50) * 5_000 + j);
                    let _ = ct.insert(k, dnat(k), 0, FlowState::New, 0, now);
                }
                now += 10;
                ct.sweep(now, ct.capacity());
                round += 1;
            }
            round
        })
    };
    let reader = {
        let ct = ct.clone();
        std::thread::spawn(move || {
            let mut misses = 0u32;
            for _ in 0..20 {
                for i in 0..LIVE {
                    if ct.lookup(&key(i)).is_none() || ct.lookup(&dnat(key(i)).reversed()).is_none()
                    {
                        misses += 1;
                    }
                }
            }
            misses
        })
    };
    let misses = reader.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let rounds = churn.join().unwrap();
    assert!(rounds > 0);
    assert_eq!(misses, 0, "live flows missed during {rounds} churn rounds");
    assert!(
        ct.stats.tombstones_cleared.load(Ordering::Relaxed) > 0,
        "the churn left no tombstones to clear"
    );
}
