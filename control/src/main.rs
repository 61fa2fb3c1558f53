//! `sluice`: the node daemon's binary. `lab` sets up and runs the veth lab
//! (the main job: `sluice lab demo`); `run` and `inspect` come with the
//! control plane.

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
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Lab(a) => lab::run(a),
    };
    if let Err(e) = result {
        eprintln!("sluice: {e}");
        std::process::exit(1);
    }
}
