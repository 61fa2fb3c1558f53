//! Where a new flow's time goes, at a given Service count with 1M live
//! flows (a tuning probe; the benchmark is benches/pipeline.rs).
use sluice_dataplane::conntrack::FlowState;
use sluice_dataplane::pipeline::{Core, BURST};
use sluice_dataplane::service::Affinity;
use sluice_dataplane::wire::tcp;
use sluice_dataplane::FlowKey;
use sluice_fixtures::bench_frontend;
use sluice_perf::bench_world::{client, decide_all, World};
use std::time::Instant;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(100_000, |s| s.parse().unwrap());
    // AFFINITY=SECS: every Service with ClientIP affinity; each new flow
    // is its client's first (a record is looked for and made), or with
    // AGAIN=1 its second (the record found).
    let affinity = std::env::var("AFFINITY").map_or(Affinity::None, |s| Affinity::ClientIp {
        timeout_s: s.parse().unwrap(),
    });
    let again = std::env::var_os("AGAIN").is_some();
    let world = World::with_affinity(n, 1_000_000, 140_000, affinity);
    let tables = world.tables();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let count: usize = std::env::var("NEW").map_or(65_536, |s| s.parse().unwrap());
    let keys: Vec<FlowKey> = (0..count)
        .map(|i| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let (src, sport) = client(2_000_000 + i);
            let (dst, dport) = bench_frontend(rng as usize % n);
            FlowKey {
                src,
                dst,
                sport,
                dport,
                ..World::flow_key(0, n)
            }
        })
        .collect();
    let per = |t: Instant| t.elapsed().as_nanos() as f64 / keys.len() as f64;
    let only_pipeline = std::env::var_os("PIPELINE_ONLY").is_some();
    if !only_pipeline {
        let t = Instant::now();
        let mut hits = 0;
        for k in &keys {
            hits += world.conntrack.lookup(k).is_some() as usize;
        }
        println!("conntrack miss lookup: {:.0} ns ({hits} hits)", per(t));
        let t = Instant::now();
        let mut sel = Vec::with_capacity(keys.len());
        for k in &keys {
            let id = world.services.lookup(k).unwrap();
            let b = world.services.select(id, k).unwrap();
            sel.push((
                id,
                FlowKey {
                    dst: b.addr,
                    dport: b.port,
                    ..*k
                },
            ));
        }
        println!("service lookup + Maglev: {:.0} ns", per(t));
        let t = Instant::now();
        for (k, (id, to)) in keys.iter().zip(&sel) {
            world
                .conntrack
                .insert(*k, *to, *id, FlowState::New, 0, 0)
                .unwrap();
        }
        println!("conntrack insert: {:.0} ns", per(t));
        world.conntrack.sweep(
            world.conntrack.timeouts().tcp_syn_ms + 1,
            world.conntrack.capacity(),
        );
    }

    let mut core = Core::default();
    if again {
        // Each client's first connection, from another port: the records.
        let mut first: Vec<Vec<u8>> = keys
            .iter()
            .map(|k| {
                World::frame(
                    &FlowKey {
                        sport: k.sport ^ 0x8000,
                        ..*k
                    },
                    tcp::SYN,
                )
            })
            .collect();
        decide_all(&mut first, &tables, &mut core);
        core = Core::default();
    }
    let mut frames: Vec<Vec<u8>> = keys.iter().map(|k| World::frame(k, tcp::SYN)).collect();
    let t = Instant::now();
    let sent = decide_all(&mut frames, &tables, &mut core);
    println!("the burst function, bursts of {BURST}: {:.0} ns", per(t));
    assert_eq!(core.counters.ct_new as usize, keys.len());
    assert_eq!(sent, keys.len());
}
