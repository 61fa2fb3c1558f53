//! `sluice`: the node daemon's binary. `lab` sets up and runs the veth lab
//! (the main job: `sluice lab demo`); `demo` runs the packet pipeline on
//! generated traffic without a network; `run` and `inspect` come with the
//! control plane.

mod demo;

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
    /// Run the pipeline on generated traffic through two workers and print
    /// what it did: backends chosen, conntrack entries, drops by reason.
    Demo(demo::Options),
    /// The veth lab: pods in network namespaces, the daemon on their
    /// interfaces, real servers and clients (up, down, demo).
    Lab(LabArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(o) => demo::run(&o).map_err(|e| e.to_string()),
        Command::Lab(a) => lab::run(a),
    };
    if let Err(e) = result {
        eprintln!("sluice: {e}");
        std::process::exit(1);
    }
}
