//! Pipeline cost per packet, new flow and established flow, at 1, 1,000 and
//! 100,000 Services with 1,000,000 live conntrack entries.
//!
//! `cargo bench -p sluice-perf --bench pipeline`. Each measured packet is a
//! 60-byte TCP frame copied into a scratch buffer first (NAT rewrites in
//! place); the copy is inside the figure and costs a few nanoseconds.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice_dataplane::pipeline::{process, Tables, Worker};
use sluice_dataplane::wire::tcp;
use sluice_dataplane::{FlowKey, Verdict};
use sluice_perf::bench_world::{client, World};
use sluice_perf::fixtures::bench_frontend;

const LIVE_FLOWS: usize = 1_000_000;
/// Established flows cycled through per measurement: more than fit in
/// L2, as a node's traffic is.
const HOT_FLOWS: usize = 65_536;
/// New flows made per batch before the sweeper clears them (outside the
/// timed part).
const NEW_BATCH: usize = 65_536;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(4));
    g.warm_up_time(Duration::from_secs(1));
    g.sample_size(30);
    for n in [1usize, 1_000, 100_000] {
        let world = World::new(n, LIVE_FLOWS, NEW_BATCH + 1024);
        let tables = Tables { services: &world.services, conntrack: &world.conntrack };
        let mut worker = Worker::default();

        // Established: frames of preloaded flows, spread over the table.
        let stride = LIVE_FLOWS / HOT_FLOWS;
        let est: Vec<Vec<u8>> = (0..HOT_FLOWS).map(|i| world.established_frame(i * stride)).collect();
        let mut scratch = vec![0u8; est[0].len()];
        g.bench_with_input(BenchmarkId::new("established", n), &n, |b, _| {
            let mut i = 0;
            b.iter(|| {
                let f = &est[i % HOT_FLOWS];
                i += 1;
                scratch.copy_from_slice(f);
                let v = process(&mut scratch, &tables, &mut worker);
                debug_assert_eq!(v, Verdict::Forward);
                v
            })
        });
        assert_eq!(worker.counters.total_drops(), 0);

        // New flows: each packet a SYN on a 5-tuple never seen, to a
        // random Service. Frames are made, and afterwards expired, outside
        // the timed loop.
        let mut next_client = LIVE_FLOWS;
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        g.bench_with_input(BenchmarkId::new("new_flow", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters as usize;
                while left > 0 {
                    let batch = left.min(NEW_BATCH);
                    let frames: Vec<Vec<u8>> = (0..batch)
                        .map(|_| {
                            rng ^= rng << 13;
                            rng ^= rng >> 7;
                            rng ^= rng << 17;
                            let (src, sport) = client(next_client);
                            next_client += 1;
                            let (dst, dport) = bench_frontend(rng as usize % n);
                            World::frame(&FlowKey { src, dst, sport, dport, ..World::flow_key(0, n) }, tcp::SYN)
                        })
                        .collect();
                    let mut frames = frames;
                    worker.now_ms = 0;
                    let t = Instant::now();
                    for f in frames.iter_mut() {
                        let v = process(f, &tables, &mut worker);
                        debug_assert_eq!(v, Verdict::Forward);
                    }
                    total += t.elapsed();
                    // Expire the SYN-only flows; the preloaded established
                    // ones (24 h timeout) stay.
                    world.conntrack.sweep(world.conntrack.timeouts().tcp_syn_ms + 1, world.conntrack.capacity());
                    left -= batch;
                }
                total
            })
        });
        assert_eq!(worker.counters.total_drops(), 0, "{:?}", worker.counters.drop_breakdown().collect::<Vec<_>>());
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
