//! `sluice`: the node daemon's binary. `run` is the daemon; `lab` sets up
//! and runs the veth lab (the main job: `sluice lab demo`).

use sluice_lab::run::{self as lab, LabArgs};

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
    /// Also each worker's live counters, drops by reason, its frame pool,
    /// and the conntrack's occupancy. Without --admin: the daemon on
    /// /run/sluice/admin.sock, else the one lab running.
    Status {
        #[arg(long)]
        admin: Option<std::path::PathBuf>,
        /// The reply as JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
}

/// The admin socket `sluice status` asks when none is named: the
/// daemon's default one if a daemon answers there, else the one lab whose
/// daemon answers.
fn find_admin() -> Result<std::path::PathBuf, String> {
    use sluice_control::admin::{answers, DEFAULT_SOCKET};
    let default = std::path::PathBuf::from(DEFAULT_SOCKET);
    if answers(&default) {
        return Ok(default);
    }
    let dir = sluice_lab::cni_data_dir();
    let labs: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "sock") && answers(p))
                .collect()
        })
        .unwrap_or_default();
    match labs.as_slice() {
        [one] => {
            eprintln!(
                "sluice: no daemon on {DEFAULT_SOCKET}; the lab's daemon answers on {}",
                one.display()
            );
            Ok(one.clone())
        }
        [] => Err(format!(
            "no daemon answers on {DEFAULT_SOCKET} and no lab runs: start one (sluice run, sluice lab up) or name its socket with --admin"
        )),
        many => Err(format!(
            "no daemon on {DEFAULT_SOCKET}, and {} labs run: name one with --admin ({})",
            many.len(),
            many.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn status(admin: Option<&std::path::Path>, json: bool) -> Result<(), String> {
    use sluice_control::admin::{describe, request, Command};
    let admin = match admin {
        Some(a) => a.to_path_buf(),
        None => find_admin()?,
    };
    let r = request(&admin, Command::Status)?;
    match r.status {
        Some(s) if json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&s).map_err(|e| e.to_string())?
            );
            Ok(())
        }
        Some(s) => {
            print!("{}", describe(&s));
            Ok(())
        }
        None => Err("the daemon gave no status".into()),
    }
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Lab(a) => lab::run(a),
        Command::Run(a) => sluice_control::run::run(a).map_err(|e| e.to_string()),
        Command::Status { admin, json } => status(admin.as_deref(), json),
    };
    if let Err(e) = result {
        eprintln!("sluice: {e}");
        std::process::exit(1);
    }
}
