//! Quick look at established-flow cost against the hot-set size (a probe
//! for tuning, not the benchmark: that is benches/pipeline.rs).
use sluice_dataplane::pipeline::{Core, BURST};
use sluice_perf::bench_world::{decide_all, World};
use std::time::Instant;

fn main() {
    let n: usize = std::env::args().nth(1).map_or(1, |s| s.parse().unwrap());
    let live: usize = std::env::args()
        .nth(2)
        .map_or(1_000_000, |s| s.parse().unwrap());
    let world = World::new(n, live, 1024);
    let tables = world.tables();
    let mut core = Core::default();
    for hot in [32usize, 1024, 65536] {
        let stride = live / hot;
        let templates: Vec<Vec<u8>> = (0..hot)
            .map(|i| world.established_frame(i * stride))
            .collect();
        let mut scratch: Vec<Vec<u8>> = templates[..BURST].to_vec();
        let rounds: usize = std::env::var("ROUNDS").map_or(200_000, |s| s.parse().unwrap());
        let mut at = 0;
        let t = Instant::now();
        for _ in 0..rounds {
            for s in scratch.iter_mut() {
                s.copy_from_slice(&templates[at]);
                at = (at + 1) % hot;
            }
            decide_all(&mut scratch, &tables, &mut core);
        }
        let ns = t.elapsed().as_nanos() as f64 / (rounds * BURST) as f64;
        println!("services {n} live {live} hot {hot}: {ns:.1} ns/packet");
    }
    assert_eq!(core.counters.total_drops(), 0);
    if std::env::var_os("NOPARTS").is_none() {
        parts(&world);
    }
}

#[allow(dead_code)]
pub fn parts(world: &World) {
    use sluice_dataplane::decode::{decode, Decoded};
    let frames: Vec<Vec<u8>> = (0..32).map(|i| world.established_frame(i * 100)).collect();
    let rounds: usize = std::env::var("ROUNDS").map_or(1_000_000, |s| s.parse().unwrap());
    let t = Instant::now();
    let mut acc = 0u64;
    for _ in 0..rounds {
        for f in &frames {
            if let Ok(Decoded::Ip(p)) = decode(std::hint::black_box(f)) {
                acc += p.l4 as u64;
            }
        }
    }
    println!(
        "decode: {:.1} ns",
        t.elapsed().as_nanos() as f64 / (rounds * 32) as f64
    );
    let keys: Vec<_> = frames
        .iter()
        .map(|f| match decode(f) {
            Ok(Decoded::Ip(p)) => p.key().unwrap(),
            _ => panic!(),
        })
        .collect();
    let t = Instant::now();
    for _ in 0..rounds {
        for k in &keys {
            acc += world
                .conntrack
                .lookup(std::hint::black_box(k))
                .map_or(0, |h| h.entry as u64);
        }
    }
    println!(
        "lookup: {:.1} ns",
        t.elapsed().as_nanos() as f64 / (rounds * 32) as f64
    );
    let t = Instant::now();
    for _ in 0..rounds {
        for k in &keys {
            acc += world.conntrack.hash(std::hint::black_box(k));
        }
    }
    println!(
        "hash: {:.1} ns",
        t.elapsed().as_nanos() as f64 / (rounds * 32) as f64
    );
    std::hint::black_box(acc);
}
