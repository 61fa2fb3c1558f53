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
    /// What the running daemon says over its admin socket: the tables'
    /// generation, each source's, and the interfaces attached.
    Status {
        #[arg(long, default_value = sluice_control::admin::DEFAULT_SOCKET)]
        admin: std::path::PathBuf,
        /// The reply as JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
}

fn status(admin: &std::path::Path, json: bool) -> Result<(), String> {
    use sluice_control::admin::{describe, request, Request};
    let r = request(admin, &Request::Status)?;
    match (r.ok, r.status) {
        (true, Some(s)) if json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&s).map_err(|e| e.to_string())?
            );
            Ok(())
        }
        (true, Some(s)) => {
            print!("{}", describe(&s));
            Ok(())
        }
        _ => Err(r
            .error
            .unwrap_or_else(|| "the daemon gave no status".into())),
    }
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Lab(a) => lab::run(a),
        Command::Run(a) => sluice_control::run::run(a),
        Command::Status { admin, json } => status(&admin, json),
    };
    if let Err(e) = result {
        eprintln!("sluice: {e}");
        std::process::exit(1);
    }
}
