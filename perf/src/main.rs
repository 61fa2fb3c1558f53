//! `sluice-perf`. The AF_XDP generator, the sink and `compare` come with the
//! I/O backends; today the benchmarks are criterion's (see docs/benchmarks.md).

fn main() {
    eprintln!("sluice-perf: the generator and `compare` are not built yet; run `cargo bench -p sluice-perf`");
    std::process::exit(2);
}
