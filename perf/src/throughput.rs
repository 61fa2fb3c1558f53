//! `sluice-perf throughput`: packets per second of small UDP frames between
//! two pods of a lab, through Sluice (a ClusterIP, DNAT, conntrack) and, in
//! the same run, through the bare AF_XDP forwarder (the ceiling of the
//! machine), phase after phase so that drift hits both alike.
//!
//! The generator transmits from the `gen` pod's eth0 with AF_XDP; between
//! it and the `sink` pod the node runs either the forwarder or Sluice's
//! worker on the veth host ends, on the same backend code. The sink is the
//! sink pod's kernel: a UDP socket bound to the port and never read, so
//! every frame takes the same path to its drop in both phases (no ICMP
//! unreachable either), and the count is the pod's eth0 `rx_packets`. The
//! sink needs no thread of its own, which on a 2-core machine leaves one
//! core to the generator and one to the forwarder or worker.
//!
//! Copy mode on veth puts most of each frame's cost in the kernel (an skb
//! per transmission, and the delivery into the pod, which runs in the
//! softirq of the transmitting core): the ratio, not the absolute rate, is
//! what the run is for.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_control::daemon::{Daemon, Io};
use sluice_control::lab::file::{LabFile, Plan};
use sluice_control::lab::{daemon_config, Lab};
use sluice_dataplane::io::tap::enter_netns;
use sluice_dataplane::neighbor::Gateway;
use sluice_dataplane::worker::Idle;

use crate::craft::{self, Spec, L4};
use crate::xdp;

#[derive(clap::Args, Clone)]
pub struct Options {
    /// Seconds each phase is measured (after a warm-up of half a second).
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Phases of each kind, alternated: ceiling, Sluice, ceiling, ...
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// UDP flows (source ports) the generator cycles through.
    #[arg(long, default_value_t = 1)]
    pub flows: u16,
    /// Frame size without the FCS: 60 is a 64-byte frame on the wire.
    #[arg(long, default_value_t = 60)]
    pub size: usize,
    /// The core of the forwarder or of Sluice's worker (default: the last).
    #[arg(long)]
    pub worker_core: Option<usize>,
    /// The core of the generator and the sink (default: the first).
    #[arg(long)]
    pub traffic_core: Option<usize>,
}

const LAB: &str = "
name: perf
nodes:
  - name: node1
    index: 1
    pods:
      - { name: gen }
      - { name: sink, labels: { app: sink } }
services:
  - name: sink
    clusterIP: 198.19.0.100
    selector: { app: sink }
    ports: [{ name: discard, port: 9, targetPort: 9, protocol: UDP }]
";

/// What one phase measured.
#[derive(Clone, Copy, Debug)]
pub struct Phase {
    pub received_pps: f64,
    pub offered_pps: f64,
}

pub struct Report {
    pub ceiling: Vec<Phase>,
    pub sluice: Vec<Phase>,
}

fn median(v: &[Phase]) -> f64 {
    let mut r: Vec<f64> = v.iter().map(|p| p.received_pps).collect();
    r.sort_by(|a, b| a.total_cmp(b));
    r.get(r.len() / 2).copied().unwrap_or(0.0)
}

/// The generator's frames, to `dst` (the ClusterIP for Sluice, the sink's
/// own address for the forwarder: the sink's kernel then sees the same
/// packets in both phases).
fn frames(plan: &Plan, o: &Options, dst: std::net::Ipv4Addr) -> Result<Vec<Vec<u8>>, String> {
    let gen = plan.pod("gen").ok_or("no gen pod")?;
    let payload_len = o
        .size
        .checked_sub(42)
        .filter(|_| (60..=1464).contains(&o.size))
        .ok_or("--size: 60 to 1464 bytes (a minimal Ethernet frame up to the pods' MTU of 1450)")?;
    let payload = vec![0x5a; payload_len];
    (0..o.flows.max(1))
        .map(|i| {
            let mut f = craft::build(&Spec {
                src: IpAddr::V4(gen.ip),
                dst: IpAddr::V4(dst),
                sport: 10_000 + i,
                dport: 9,
                l4: L4::Udp,
                payload: &payload,
            })
            .map_err(|e| format!("{e:?}"))?;
            f[..6].copy_from_slice(&Gateway::DEFAULT.mac);
            f[6..12].copy_from_slice(&gen.mac);
            Ok(f)
        })
        .collect()
}

/// The packets the sink pod's eth0 has received.
fn sink_rx(netns: &str) -> Result<u64, String> {
    let out = std::process::Command::new("ip")
        .args(["-n", netns, "-s", "-j", "link", "show", "dev", "eth0"])
        .output()
        .map_err(|e| e.to_string())?;
    let s = String::from_utf8_lossy(&out.stdout);
    // "stats64":{"rx":{"bytes":N,"packets":N,...
    let rx = s
        .find("\"rx\":")
        .ok_or_else(|| format!("no rx stats in {s}"))?;
    let p = s[rx..].find("\"packets\":").ok_or("no rx packets")? + rx + 10;
    s[p..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("rx packets in {s}"))
}

fn pin(core: usize) {
    let _ = core_affinity::set_for_current(core_affinity::CoreId { id: core });
}

/// Runs the generator against whatever forwards on the node, and measures
/// what the sink received.
fn phase(
    plan: &Plan,
    frames: &[Vec<u8>],
    o: &Options,
    traffic_core: usize,
) -> Result<Phase, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let gen_ns = plan.pod("gen").unwrap().netns.clone();
    let sink_ns = plan.pod("sink").unwrap().netns.clone();
    let gen = {
        let (stop, sent) = (stop.clone(), sent.clone());
        let frames = frames.to_vec();
        std::thread::spawn(move || -> Result<(), String> {
            enter_netns(&gen_ns)?;
            pin(traffic_core);
            xdp::generate("eth0", &frames, &stop, &sent)
        })
    };
    let measured = (|| -> Result<Phase, String> {
        std::thread::sleep(Duration::from_millis(500));
        let (g0, s0, t0) = (
            sink_rx(&sink_ns)?,
            sent.load(Ordering::Relaxed),
            Instant::now(),
        );
        std::thread::sleep(Duration::from_secs_f64(o.seconds));
        let (g1, s1, t1) = (
            sink_rx(&sink_ns)?,
            sent.load(Ordering::Relaxed),
            Instant::now(),
        );
        let secs = (t1 - t0).as_secs_f64();
        Ok(Phase {
            received_pps: g1.saturating_sub(g0) as f64 / secs,
            offered_pps: (s1 - s0) as f64 / secs,
        })
    })();
    // The generator stops whatever the measurement gave.
    stop.store(true, Ordering::Relaxed);
    gen.join().map_err(|_| "generator panicked")??;
    measured
}

pub fn run(o: &Options) -> Result<Report, String> {
    let plan = LabFile::parse(LAB)
        .and_then(|f| f.plan())
        .map_err(|e| e.to_string())?;
    let cores: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .iter()
        .map(|c| c.id)
        .collect();
    let worker_core = o.worker_core.or(cores.last().copied()).ok_or("no cores")?;
    let traffic_core = o
        .traffic_core
        .or(cores.first().copied())
        .ok_or("no cores")?;
    let sink_pod = plan.pod("sink").ok_or("no sink pod")?.clone();
    let to_vip = frames(&plan, o, plan.services[0].cluster_ip)?;
    let to_sink = frames(&plan, o, sink_pod.ip)?;
    let lab = Lab::create(&plan, Io::Afxdp, 1).map_err(|e| format!("set-up: {e}"))?;
    let node = plan.node();
    let gen_end = plan.pod("gen").unwrap().host_end.clone();
    // The sink: a socket on the port, never read (its buffer fills, and
    // the kernel drops the rest at the socket, in both phases alike).
    let _sink = lab
        .command(&sink_pod.netns, "python3")
        .args([
            "-c",
            "import socket,time\ns=socket.socket(2,2)\ns.bind(('0.0.0.0',9))\ntime.sleep(1e6)\n",
        ])
        .spawn()
        .map_err(|e| format!("the sink's socket: {e}"))?;
    println!(
        "throughput: {}-byte UDP frames ({} on the wire), {} flow(s), {} s per phase, {} round(s); \
         forwarder/worker on core {worker_core}, generator and sink on core {traffic_core}",
        o.size,
        o.size + 4,
        o.flows.max(1),
        o.seconds,
        o.rounds
    );
    let mut report = Report {
        ceiling: Vec::new(),
        sluice: Vec::new(),
    };
    for round in 0..o.rounds.max(1) {
        // The ceiling: the bare forwarder between the same two host ends.
        let stop = Arc::new(AtomicBool::new(false));
        let fwd = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(AtomicU64::new(0));
        let fwd_thread = {
            let (stop, fwd, refused) = (stop.clone(), fwd.clone(), refused.clone());
            let (ns, from, to, mac) = (
                node.netns.clone(),
                gen_end.clone(),
                sink_pod.host_end.clone(),
                sink_pod.mac,
            );
            std::thread::spawn(move || -> Result<(), String> {
                enter_netns(&ns)?;
                pin(worker_core);
                xdp::forward(&from, &to, mac, &stop, &fwd, &refused)
            })
        };
        std::thread::sleep(Duration::from_millis(200));
        let c = phase(&plan, &to_sink, o, traffic_core);
        stop.store(true, Ordering::Relaxed);
        fwd_thread.join().map_err(|_| "forwarder panicked")??;
        let c = c?;
        println!(
            "  round {}: bare AF_XDP forwarder  {:>6.3} Mpps received ({:.3} offered; forwarder refused by a full TX ring {})",
            round + 1,
            c.received_pps / 1e6,
            c.offered_pps / 1e6,
            refused.load(Ordering::Relaxed)
        );
        report.ceiling.push(c);

        // Sluice: the daemon's worker, the frames to the ClusterIP.
        // As the daemon runs on a node: with the exception path, whose TAP
        // the worker reads every 16th round.
        let config = daemon_config(&plan, Io::Afxdp, vec![worker_core], Idle::BUSY, 1 << 20);
        let mut d = Daemon::start(config).map_err(|e| format!("daemon: {e}"))?;
        let s = phase(&plan, &to_vip, o, traffic_core);
        let reports = d.stop();
        let s = s?;
        let drops: u64 = reports.iter().map(|r| r.packets.total_drops()).sum();
        let forwarded: u64 = reports.iter().map(|r| r.packets.forwarded).sum();
        println!(
            "  round {}: sluice (ClusterIP)     {:>6.3} Mpps received ({:.3} offered; worker forwarded {forwarded}, dropped {drops})",
            round + 1,
            s.received_pps / 1e6,
            s.offered_pps / 1e6
        );
        report.sluice.push(s);
    }
    let (c, s) = (median(&report.ceiling), median(&report.sluice));
    // Adjacent phases share the machine's state of the moment: their ratio
    // drifts less than either rate.
    let mut ratios: Vec<f64> = report
        .ceiling
        .iter()
        .zip(&report.sluice)
        .map(|(c, s)| {
            if c.received_pps > 0.0 {
                s.received_pps / c.received_pps
            } else {
                0.0
            }
        })
        .collect();
    ratios.sort_by(|a, b| a.total_cmp(b));
    println!(
        "median: ceiling {:.3} Mpps, sluice {:.3} Mpps; sluice / ceiling per round: median {:.0}%, range {:.0}% to {:.0}%",
        c / 1e6,
        s / 1e6,
        100.0 * ratios[ratios.len() / 2],
        100.0 * ratios[0],
        100.0 * ratios[ratios.len() - 1],
    );
    Ok(report)
}
