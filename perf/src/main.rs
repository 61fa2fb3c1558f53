//! `sluice-perf`: benchmarks that need a network. `compare` sets Sluice
//! beside the bare AF_XDP forwarder and kube-proxy's kernel rules on a
//! lab; `generate` and `sink` are its two ends, to use by hand;
//! `pipeline-demo` runs the pipeline on generated traffic with no network. The per-packet
//! micro-benchmarks are criterion's (`cargo bench -p sluice-perf`).

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sluice-perf",
    version,
    about = "Sluice's traffic generator and benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The bare AF_XDP forwarder, Sluice, and the kernel with kube-proxy's
    /// iptables and nftables rules, on one lab: rates at 1 to 100,000
    /// Services, latency at half load; a table, a CSV and a chart.
    #[cfg(feature = "afxdp")]
    Compare(sluice_perf::compare::Options),
    /// Sends crafted, probe-stamped frames from an interface with AF_XDP
    /// (a lab pod's eth0, say).
    #[cfg(feature = "afxdp")]
    Generate(sluice_perf::standalone::GenerateOptions),
    /// Counts the generator's probes on a UDP port: per flow, with loss,
    /// reordering and latency.
    #[cfg(feature = "afxdp")]
    Sink(sluice_perf::standalone::SinkOptions),
    /// What a node's pod count costs: N pods attached through sluice-cni
    /// one by one (each ADD timed), the worker's frame pool, and the rate
    /// through the first pod's port against the last's.
    #[cfg(feature = "afxdp")]
    Pods(sluice_perf::pods::PodsOptions),
    /// The pipeline on generated traffic through two workers, no network.
    PipelineDemo(sluice_perf::pipeline_demo::Options),
    /// Time from an EndpointSlice event to the new tables swapped in, at
    /// 1,000 to 100,000 Services.
    Publish(sluice_perf::publish::Options),
}

fn main() {
    let result = match Cli::parse().command {
        #[cfg(feature = "afxdp")]
        Command::Compare(o) => sluice_perf::compare::run(&o).map(|_| ()),
        #[cfg(feature = "afxdp")]
        Command::Generate(o) => sluice_perf::standalone::generate(&o),
        #[cfg(feature = "afxdp")]
        Command::Sink(o) => sluice_perf::standalone::sink(&o),
        #[cfg(feature = "afxdp")]
        Command::Pods(o) => sluice_perf::pods::run_pods(&o),
        Command::PipelineDemo(o) => sluice_perf::pipeline_demo::run(&o).map_err(|e| e.to_string()),
        Command::Publish(o) => sluice_perf::publish::run(&o),
    };
    if let Err(e) = result {
        eprintln!("sluice-perf: {e}");
        std::process::exit(1);
    }
}
