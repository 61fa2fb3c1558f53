//! `sluice-perf`: benchmarks that need a network. `throughput` measures
//! Sluice against the bare AF_XDP forwarder on a lab; `pipeline-demo` runs
//! the pipeline on generated traffic with no network. The per-packet
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
    /// Mpps of small UDP frames between two lab pods: the bare AF_XDP
    /// forwarder (the ceiling) and Sluice through a ClusterIP, alternated.
    #[cfg(feature = "afxdp")]
    Throughput(sluice_perf::throughput::Options),
    /// The pipeline on generated traffic through two workers, no network.
    PipelineDemo(sluice_perf::pipeline_demo::Options),
    /// Time from an EndpointSlice event to the new tables swapped in, at
    /// 1,000 to 100,000 Services.
    Publish(sluice_perf::publish::Options),
}

fn main() {
    let result = match Cli::parse().command {
        #[cfg(feature = "afxdp")]
        Command::Throughput(o) => sluice_perf::throughput::run(&o).map(|_| ()),
        Command::PipelineDemo(o) => sluice_perf::pipeline_demo::run(&o).map_err(|e| e.to_string()),
        Command::Publish(o) => sluice_perf::publish::run(&o),
    };
    if let Err(e) = result {
        eprintln!("sluice-perf: {e}");
        std::process::exit(1);
    }
}
