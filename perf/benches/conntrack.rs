//! Conntrack lookups in a table of 1,000,000 flows, from one thread and
//! from two at once (the table is shared by all workers).
//!
//! `cargo bench -p sluice-perf --bench conntrack`. The two-thread figure
//! is wall time per lookup with both threads running: half the per-thread
//! cost if lookups scale.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_perf::bench_world::World;

const FLOWS: usize = 1_000_000;

fn bench(c: &mut Criterion) {
    let world = World::new(1_000, FLOWS, 0);
    let keys: Vec<_> = (0..FLOWS)
        .map(|i| World::flow_key((i * 7919) % FLOWS, 1_000))
        .collect();
    let mut g = c.benchmark_group("conntrack_lookup");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(4));
    g.sample_size(30);
    g.bench_function("one_thread", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % FLOWS;
            world.conntrack.lookup(&keys[i]).is_some()
        })
    });
    g.bench_function("two_threads", |b| {
        b.iter_custom(|iters| {
            let per = (iters as usize).div_ceil(2);
            let t = Instant::now();
            std::thread::scope(|s| {
                for half in 0..2 {
                    let (ct, keys) = (&world.conntrack, &keys);
                    s.spawn(move || {
                        let mut found = 0usize;
                        for j in 0..per {
                            found +=
                                ct.lookup(&keys[(half * FLOWS / 2 + j) % FLOWS]).is_some() as usize;
                        }
                        assert_eq!(found, per);
                    });
                }
            });
            t.elapsed()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
