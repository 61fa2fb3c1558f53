//! The burst function's cost per packet (`pipeline::decide`, what the
//! daemon's workers run: neighbour, decode, screen, conntrack, Service,
//! NAT, route), new flow and established flow, at 1, 1,000 and 100,000
//! Services with 1,000,000 live conntrack entries, in bursts of 32; and
//! the worker loop around it (`worker_loop_established`).
//!
//! `cargo bench -p sluice-perf --bench pipeline`. Each measured burst is
//! copied from templates into scratch buffers first (NAT rewrites in
//! place); the copy, 60 bytes a frame, is inside the figure.
//!
//! Established flows: `established` cycles through 1,024 live flows, the
//! shape of BASELINE.md's "est" runs; `established_spread` through 65,536,
//! whose entries do not stay in cache (the worst case of a busy node).

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice_dataplane::io::memory::MemoryBackend;
use sluice_dataplane::pipeline::{Core, BURST};
use sluice_dataplane::wire::tcp;
use sluice_dataplane::worker::{PortMap, Worker};
use sluice_dataplane::FlowKey;
use sluice_fixtures::bench_frontend;
use sluice_perf::bench_world::{client, decide_all, World};

const LIVE_FLOWS: usize = 1_000_000;
/// New flows made per batch before the sweeper clears them (outside the
/// timed part).
const NEW_BATCH: usize = 65_536;

fn established(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    n: usize,
    hot: usize,
    world: &World,
    core: &mut Core,
) {
    let tables = world.tables();
    let stride = LIVE_FLOWS / hot;
    let templates: Vec<Vec<u8>> = (0..hot)
        .map(|i| world.established_frame(i * stride))
        .collect();
    let mut scratch: Vec<Vec<u8>> = templates[..BURST].to_vec();
    c.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
        let mut at = 0;
        b.iter(|| {
            for s in scratch.iter_mut() {
                s.copy_from_slice(&templates[at]);
                at = (at + 1) % hot;
            }
            decide_all(&mut scratch, &tables, core);
        })
    });
}

/// The daemon's worker loop itself (receive, the burst function, staging,
/// transmit) on one uplink port of the in-memory backend, replaying
/// established flows: what the loop adds around the burst function,
/// including the copy of each frame into the pool as a NIC's DMA would.
fn worker_loop(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    n: usize,
    world: &World,
) {
    let tables = world.tables();
    let hot = 1024;
    let stride = LIVE_FLOWS / hot;
    let mut backend = MemoryBackend::new(1, 4 * BURST);
    backend.replay(
        0,
        (0..hot)
            .map(|i| world.established_frame(i * stride))
            .collect(),
    );
    let map = PortMap::new(&[], Some(0), 1).expect("one uplink port");
    let mut w = Worker::new(backend, map);
    c.bench_with_input(
        BenchmarkId::new("worker_loop_established", n),
        &n,
        |b, _| b.iter(|| w.poll(&tables)),
    );
    let k = w.packet_counters();
    assert_eq!(k.forwarded, k.rx, "every frame out: {k:?}");
}

/// The fixture table's frames (`sluice_fixtures::table`), over and over
/// through the burst function on one node with shop/web: what the tests
/// check row by row, timed as a mix (established after the first pass,
/// drops, answers).
fn fixture_table(c: &mut Criterion) {
    use sluice_dataplane::conntrack::{Conntrack, Timeouts};
    use sluice_dataplane::route::Routes;
    use sluice_dataplane::service::ServiceTable;
    let (services, _) = ServiceTable::build(&[sluice_fixtures::web_service()]);
    let conntrack = Conntrack::with_seed(4096, Timeouts::default(), 0x5eed);
    let routes = Routes::default();
    let tables = sluice_dataplane::pipeline::Tables::new(&services, &conntrack, &routes);
    let rows: Vec<Vec<u8>> = sluice_fixtures::table::cases()
        .into_iter()
        .map(|c| c.frame)
        .collect();
    let mut core = Core::default();
    let mut g = c.benchmark_group("fixture_table");
    g.throughput(Throughput::Elements(rows.len() as u64));
    g.bench_function("all_rows", |b| {
        let mut frames = rows.clone();
        b.iter(|| {
            for (f, row) in frames.iter_mut().zip(&rows) {
                f.clear();
                f.extend_from_slice(row);
            }
            decide_all(&mut frames, &tables, &mut core)
        })
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_secs(1));
    g.sample_size(20);
    for n in [1usize, 1_000, 100_000] {
        let world = World::new(n, LIVE_FLOWS, NEW_BATCH + 1024);
        let tables = world.tables();
        let mut worker = Core::default();

        g.throughput(Throughput::Elements(BURST as u64));
        established(&mut g, "established", n, 1024, &world, &mut worker);
        if n == 100_000 {
            established(&mut g, "established_spread", n, 65_536, &world, &mut worker);
        }
        worker_loop(&mut g, n, &world);
        assert_eq!(worker.counters.total_drops(), 0);
        assert_eq!(
            worker.counters.ct_hits, worker.counters.rx,
            "every established packet hit conntrack"
        );

        // New flows: each packet a SYN on a 5-tuple never seen, to a random
        // Service. Frames are made, and afterwards expired, outside the
        // timed loop.
        g.throughput(Throughput::Elements(1));
        let mut next_client = LIVE_FLOWS;
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let before = worker.counters.ct_new;
        g.bench_with_input(BenchmarkId::new("new_flow", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters as usize;
                while left > 0 {
                    let batch = left.min(NEW_BATCH);
                    let mut frames: Vec<Vec<u8>> = (0..batch)
                        .map(|_| {
                            rng ^= rng << 13;
                            rng ^= rng >> 7;
                            rng ^= rng << 17;
                            let (src, sport) = client(next_client);
                            next_client += 1;
                            let (dst, dport) = bench_frontend(rng as usize % n);
                            World::frame(
                                &FlowKey {
                                    src,
                                    dst,
                                    sport,
                                    dport,
                                    ..World::flow_key(0, n)
                                },
                                tcp::SYN,
                            )
                        })
                        .collect();
                    worker.now_ms = 0;
                    let t = Instant::now();
                    decide_all(&mut frames, &tables, &mut worker);
                    total += t.elapsed();
                    // Expire the SYN-only flows; the preloaded established
                    // ones (24 h timeout) stay.
                    world.conntrack.sweep(
                        world.conntrack.timeouts().tcp_syn_ms + 1,
                        world.conntrack.capacity(),
                    );
                    left -= batch;
                }
                total
            })
        });
        assert!(worker.counters.ct_new > before);
        assert_eq!(
            worker.counters.total_drops(),
            0,
            "{:?}",
            worker.counters.drop_breakdown().collect::<Vec<_>>()
        );
    }
    g.finish();
}

criterion_group!(benches, fixture_table, bench);
criterion_main!(benches);
