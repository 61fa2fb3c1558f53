//! `sluice`: the node daemon's binary. `run` is the daemon; `lab` sets up
//! and runs the veth lab (the main job: `sluice lab demo`).

use sluice_control::lab::run::{self as lab, LabArgs};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "A userspace Kubernetes node dataplane"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The veth lab: pods in network namespaces, the daemon on their
    /// interfaces, real servers and clients (up, down, demo).
    Lab(LabArgs),
    /// The node daemon: tables from the API server or manifests, workers
    /// on the given pod ports.
    Run(sluice_control::run::RunArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Lab(a) => lab::run(a),
        Command::Run(a) => sluice_control::run::run(a),
    };
    if let Err(e) = result {
        eprintln!("sluice: {e}");
        std::process::exit(1);
    }
}
