//! `sluice`: the node daemon's binary. Today it has `demo`, which runs the
//! packet pipeline on generated traffic; `run`, `lab` and `inspect` come with
//! the I/O backends and the control plane.

mod demo;

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
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(o) => demo::run(&o),
    };
    if let Err(e) = result {
        eprintln!("sluice: {e}");
        std::process::exit(1);
    }
}
