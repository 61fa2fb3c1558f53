//! `sluice run`: the node daemon. Its tables come from a source (the API
//! server, or a directory of manifests); its pod ports are given on the
//! command line or registered by the CNI plugin over the admin socket.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_dataplane::worker::Idle;
use sluice_dataplane::Addr;

use crate::daemon::{Config, Daemon, HostConfig, Io, PortConfig};
use crate::sync::{self, Files, Kube};

#[derive(clap::Args)]
pub struct RunArgs {
    /// Where the Services come from: `kube` (kubeconfig as kubectl finds
    /// it, or the in-cluster service account), `kube:PATH` (that
    /// kubeconfig), or `file:DIR` (a directory of manifests, watched).
    #[arg(long)]
    source: String,
    /// This node's name, as the API server knows it: which endpoints are
    /// local (internalTrafficPolicy) and whose zone topology hints are
    /// read against. Default: $NODE_NAME, else the host name (as
    /// kube-proxy's --hostname-override).
    #[arg(long)]
    node_name: Option<String>,
    #[arg(long, value_enum, default_value_t = Io::Afxdp)]
    io: Io,
    /// A pod's port: IFNAME=ADDR[,ADDR6]@MAC (repeatable).
    #[arg(long = "pod")]
    pods: Vec<String>,
    /// The host's TAP for the node's own traffic, and the node's
    /// addresses: IFNAME=ADDR[,ADDR6]@MAC.
    #[arg(long)]
    host: Option<String>,
    /// The network namespace the workers run in (default: this one).
    #[arg(long)]
    netns: Option<String>,
    /// Cores to pin workers to, one worker each.
    #[arg(long, value_delimiter = ',')]
    cores: Vec<usize>,
    #[arg(long, default_value_t = 1 << 20)]
    conntrack_capacity: usize,
    /// The most pods attached at once, as kubelet's maxPods: each worker's
    /// frame pool is sized for them (128 KiB of frames a pod, plus 16 MiB for
    /// frames in flight and busy pods: 47 MiB for 250), and the CNI
    /// plugin's ADD of one more is refused with this limit named.
    #[arg(long, default_value_t = crate::daemon::DEFAULT_MAX_PODS,
          value_parser = clap::value_parser!(u16).range(1..=crate::daemon::MOST_PODS as i64))]
    max_pods: u16,
    /// 0 (the default): workers busy-poll, each owning its core. N: a
    /// worker naps N microseconds after 1,000 empty rounds, for a node
    /// (or a test) whose cores the workers share with others.
    #[arg(long, default_value_t = 0)]
    idle_nap_us: u64,
    /// The admin socket: the CNI plugin attaches pods through it, and
    /// `sluice status` reads it.
    #[arg(long, default_value = crate::admin::DEFAULT_SOCKET)]
    admin: PathBuf,
    /// The CNI network (the `name` of its configuration) and the plugin's
    /// IPAM directory: on start the daemon re-attaches the pods sluice-cni
    /// wired there whose veths still exist (a restart loses no pod).
    #[arg(long, default_value = "sluice")]
    cni_network: String,
    #[arg(long, default_value = "/var/lib/cni/networks")]
    cni_data_dir: PathBuf,
}

/// Why `sluice run` stopped before it served, by what went wrong.
#[derive(Debug)]
pub enum RunError {
    /// A `--pod` or `--host` value that does not parse (the flag and why).
    Flag {
        flag: &'static str,
        reason: String,
    },
    /// `--source` is none of kube, kube:PATH, file:DIR.
    Source(String),
    /// The kubeconfig could not be read.
    Kube(String),
    /// The signal handlers could not be installed.
    Signals(std::io::Error),
    Start(crate::config::StartError),
    Admin(crate::admin::AdminError),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Flag { flag, reason } => write!(f, "{flag} {reason}"),
            RunError::Source(s) => write!(f, "--source {s:?}: kube, kube:PATH or file:DIR"),
            RunError::Kube(e) => write!(f, "kubeconfig: {e}"),
            RunError::Signals(e) => write!(f, "signal handlers: {e}"),
            RunError::Start(e) => write!(f, "{e}"),
            RunError::Admin(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for RunError {}

/// `IFNAME=ADDR[,ADDR6]@MAC`.
fn port(s: &str) -> Result<(String, Vec<Addr>, [u8; 6]), String> {
    let bad = || {
        format!("{s:?}: IFNAME=ADDR[,ADDR6]@MAC, e.g. sl1p0=198.18.1.2,2001:db8:18:1::2@02:53:c6:12:01:02")
    };
    let (ifname, rest) = s.split_once('=').ok_or_else(bad)?;
    let (addrs, mac) = rest.split_once('@').ok_or_else(bad)?;
    let addrs = addrs
        .split(',')
        .map(|a| a.parse().map(Addr::from_ip).map_err(|_| bad()))
        .collect::<Result<Vec<_>, _>>()?;
    let mac = crate::admin::parse_mac(mac).ok_or_else(bad)?;
    Ok((ifname.to_string(), addrs, mac))
}

pub fn run(a: RunArgs) -> Result<(), RunError> {
    let ports = a
        .pods
        .iter()
        .map(|p| {
            port(p).map(|(ifname, addrs, mac)| PortConfig {
                ifname,
                netns: None,
                addrs,
                mac,
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|reason| RunError::Flag {
            flag: "--pod",
            reason,
        })?;
    let host = a
        .host
        .as_deref()
        .map(port)
        .transpose()
        .map_err(|reason| RunError::Flag {
            flag: "--host",
            reason,
        })?
        .map(|(ifname, addrs, mac)| HostConfig { ifname, mac, addrs });
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).map_err(RunError::Signals)?;
    }
    let mut config = Config {
        io: a.io,
        node_netns: a.netns.clone(),
        ports,
        host,
        cores: a.cores.clone(),
        conntrack_capacity: a.conntrack_capacity,
        idle: if a.idle_nap_us == 0 {
            Idle::BUSY
        } else {
            Idle {
                spin_rounds: 1000,
                sleep: Duration::from_micros(a.idle_nap_us),
            }
        },
        services: Vec::new(),
        max_pods: a.max_pods.into(),
    };
    let node = node_name(a.node_name.as_deref());
    let (mut daemon, sync) = if let Some(dir) = a.source.strip_prefix("file:") {
        let prepared = sync::prepare(PathBuf::from(dir), &node);
        config.services = prepared.specs.clone();
        let d = Daemon::start(config).map_err(RunError::Start)?;
        crate::workers::keep_off_cores(&a.cores);
        let s = Files::start(prepared, d.publisher(), Duration::from_millis(200));
        (d, s)
    } else if a.source == "kube" || a.source.starts_with("kube:") {
        let path = a.source.strip_prefix("kube:").map(PathBuf::from);
        let kube = crate::source::kube::load_config(path.as_deref()).map_err(RunError::Kube)?;
        let d = Daemon::start(config).map_err(RunError::Start)?;
        crate::workers::keep_off_cores(&a.cores);
        let s = Kube::start(kube, d.publisher(), &node);
        if s.wait(Duration::from_secs(60), |s| s.synced).is_none() {
            eprintln!(
                "sluice: the API server's objects are not listed yet ({:?}); serving none until they are",
                s.status().last_error
            );
        }
        (d, s)
    } else {
        return Err(RunError::Source(a.source.clone()));
    };
    let source_name = a.source.clone();
    let reader = sync.status_reader();
    let admin = crate::admin::serve(
        &a.admin,
        daemon.handles(),
        Box::new(move || {
            vec![crate::admin::SourceStatus {
                source: source_name.clone(),
                status: reader(),
            }]
        }),
    )
    .map_err(RunError::Admin)?;
    let st = sync.status();
    let (reattached, problems) = daemon.ports().reattach(&a.cni_data_dir, &a.cni_network);
    for p in &problems {
        eprintln!("sluice: could not re-attach {p}");
    }
    println!(
        "sluice: admin socket {}, {reattached} pod interface(s) re-attached from {}",
        a.admin.display(),
        a.cni_data_dir.join(&a.cni_network).display()
    );
    println!(
        "sluice: running, {} Service(s), tables generation {}",
        st.services,
        daemon.generation()
    );
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(admin);
    drop(sync);
    daemon.stop();
    println!("sluice: stopped; XDP programs detached");
    Ok(())
}

/// This node's name: the option, else $NODE_NAME, else the host name,
/// lower-cased as Kubernetes names nodes.
fn node_name(option: Option<&str>) -> String {
    option
        .map(str::to_string)
        .or_else(|| std::env::var("NODE_NAME").ok())
        .filter(|n| !n.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_default()
        .to_lowercase()
}
