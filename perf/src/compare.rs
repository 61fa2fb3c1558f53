//! `sluice-perf compare`: the same lab, the same generator and the same
//! sink, with four dataplanes on the node in turn:
//!
//! - `ceiling`: the bare AF_XDP forwarder (set the MAC, transmit), the
//!   most this machine's AF_XDP path carries;
//! - `sluice`: Sluice's daemon, the traffic sent to a ClusterIP;
//! - `iptables`: the kernel routing, with the rules kube-proxy's iptables
//!   mode writes (`kernel_rules`), loaded with iptables-restore;
//! - `nftables`: the same with kube-proxy's nftables-mode table.
//!
//! Each at every Service count and flow count asked for: the peak rate
//! (the generator as fast as it goes, what the sink pod's eth0 received),
//! then the latency at half of that path's own peak, from the probes the
//! sink reads. The table goes to stdout, every figure to a CSV, the rates
//! to an SVG chart.
//!
//! Cores: the generator and the sink on one (the traffic core), the
//! forwarder, Sluice's worker or the kernel's routing on the other. The
//! kernel's routing is put there with RPS on the node's end of the
//! generator's veth, as a NIC's queue would; without it the kernel would
//! route in the generator's own softirq, on the generator's core
//! (`--kernel-on-one-core`). The AF_XDP paths are left without RPS: their
//! generic-XDP receive then runs in the generator's softirq, and the
//! worker has its core to itself. Steered to the worker's core as well,
//! that receive and the busy-polling worker share one core and both
//! AF_XDP paths fall to a third of their rate (tried, docs/benchmarks.md).

use std::fmt::Write as _;
use std::net::{IpAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_control::daemon::{Daemon, Io};
use sluice_dataplane::io::tap::enter_netns;
use sluice_dataplane::neighbor::Gateway;
use sluice_dataplane::worker::Idle;
use sluice_lab::file::{LabFile, Plan};
use sluice_lab::{daemon_config, Lab};

use crate::chart;
use crate::kernel_path;
use crate::kernel_rules::{self, Target};
use crate::sink::{self, SinkStats};
use crate::traffic::{Proto, Template, Traffic};
use crate::xdp;
use sluice_fixtures::many_services;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Path {
    Ceiling,
    Sluice,
    Iptables,
    Nftables,
}

impl Path {
    pub fn name(self) -> &'static str {
        match self {
            Path::Ceiling => "ceiling",
            Path::Sluice => "sluice",
            Path::Iptables => "iptables",
            Path::Nftables => "nftables",
        }
    }
}

#[derive(clap::Args, Clone)]
pub struct Options {
    /// Seconds each measurement runs (after half a second of warm-up).
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// Service counts (the target Service and the rest, two endpoints
    /// each, as kube-proxy's baseline).
    #[arg(long, value_delimiter = ',', default_value = "1,1000,10000,100000")]
    pub services: Vec<usize>,
    /// Flow counts.
    #[arg(long, value_delimiter = ',', default_value = "1,10000")]
    pub flows: Vec<u32>,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ceiling,sluice,iptables,nftables"
    )]
    pub paths: Vec<Path>,
    #[arg(long, value_enum, default_value_t = Proto::Udp)]
    pub proto: Proto,
    /// Frame size without the FCS (default: the smallest, 60 for UDP).
    #[arg(long)]
    pub size: Option<usize>,
    /// The largest Service count loaded into iptables: iptables-restore
    /// takes about two minutes for 100,000.
    #[arg(long, default_value_t = 100_000)]
    pub iptables_max_services: usize,
    /// The largest loaded into nftables: nft takes 18 s for 10,000 and
    /// grows faster than the count (about half an hour for 100,000).
    #[arg(long, default_value_t = 10_000)]
    pub nftables_max_services: usize,
    /// Skip the latency measurements at half load.
    #[arg(long)]
    pub no_latency: bool,
    /// Let the kernel route in the generator's own softirq, on the
    /// traffic core, instead of steering it to the dataplane core with
    /// RPS: about the same rate here, and a shorter tail, since nothing
    /// crosses cores.
    #[arg(long)]
    pub kernel_on_one_core: bool,
    /// Where the CSV and the chart go.
    #[arg(long, default_value = "compare-out")]
    pub out: PathBuf,
    /// The core of the forwarder, Sluice's worker or the kernel's routing
    /// (default: the last).
    #[arg(long)]
    pub worker_core: Option<usize>,
    /// The core of the generator and the sink (default: the first).
    #[arg(long)]
    pub traffic_core: Option<usize>,
}

const LAB: &str = "
name: cmp
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
    ports:
      - { name: udp, port: 9, targetPort: 9, protocol: UDP }
      - { name: tcp, port: 9, targetPort: 9, protocol: TCP }
";
const PORT: u16 = 9;

/// One path at one Service and flow count.
#[derive(Clone, Debug)]
pub struct Row {
    pub path: Path,
    pub services: usize,
    pub flows: u32,
    /// Why it was not measured.
    pub skipped: Option<String>,
    /// Seconds to load the rules or build the tables.
    pub setup_s: f64,
    pub peak_pps: f64,
    pub offered_pps: f64,
    pub latency: Option<Latency>,
    /// What the dataplane itself counted: where frames went missing.
    pub note: String,
}

#[derive(Clone, Copy, Debug)]
pub struct Latency {
    pub rate_pps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Probes the generator sent, and the sink received.
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    /// Of those lost, dropped by the sink's own socket.
    pub sink_dropped: u64,
    pub reordered: u64,
}

struct Bench<'a> {
    o: &'a Options,
    plan: Plan,
    lab: Lab,
    worker_core: usize,
    traffic_core: usize,
    to_vip: Vec<Template>,
    to_sink: Vec<Template>,
}

/// The dataplane worker's core (default: the last) and the traffic's
/// (default: the first).
pub(crate) fn cores(
    worker: Option<usize>,
    traffic: Option<usize>,
) -> Result<(usize, usize), String> {
    let cores: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .iter()
        .map(|c| c.id)
        .collect();
    let worker = worker.or(cores.last().copied()).ok_or("no cores")?;
    let traffic = traffic.or(cores.first().copied()).ok_or("no cores")?;
    Ok((worker, traffic))
}

pub(crate) fn pin(core: usize) {
    let _ = core_affinity::set_for_current(core_affinity::CoreId { id: core });
}

/// `f` run in a thread inside namespace `ns`.
pub(crate) fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter_netns(&ns)?;
        f()
    })
    .join()
    .map_err(|_| "a set-up thread panicked".to_string())?
}

/// The packets a pod's eth0 has received, read from the namespace's
/// /proc/net/dev by a thread inside it: no process to start, none to land
/// on the dataplane's core in the middle of a measurement.
pub(crate) fn rx_packets(netns: &str) -> Result<u64, String> {
    in_netns(netns, || {
        let dev =
            std::fs::read_to_string("/proc/thread-self/net/dev").map_err(|e| e.to_string())?;
        // "  eth0: rx_bytes rx_packets ..."
        dev.lines()
            .find_map(|l| l.trim_start().strip_prefix("eth0:"))
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| "no eth0 in /proc/net/dev".to_string())
    })
}

struct Measured {
    received_pps: f64,
    offered_pps: f64,
    sink: Option<SinkStats>,
    sent_per_flow: Vec<u32>,
}

impl Bench<'_> {
    /// One measurement: the generator at `rate` (or flat out) for the
    /// phase; with `read`, the sink reads and times every probe, else its
    /// socket is left unread and the kernel drops at its full buffer,
    /// which costs the same for every path.
    fn measure(
        &self,
        templates: &[Template],
        rate: Option<f64>,
        read: bool,
    ) -> Result<Measured, String> {
        let sink_ns = self.plan.pod("sink").unwrap().netns.clone();
        let gen_ns = self.plan.pod("gen").unwrap().netns.clone();
        let socket: Arc<UdpSocket> = Arc::new(in_netns(&sink_ns, || sink::bind(PORT))?);
        let stop_sink = Arc::new(AtomicBool::new(false));
        let reader = read.then(|| {
            let (socket, stop, core) = (socket.clone(), stop_sink.clone(), self.traffic_core);
            std::thread::spawn(move || {
                pin(core);
                sink::run(&socket, &stop)
            })
        });
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let gen = {
            let (stop, sent, core) = (stop.clone(), sent.clone(), self.traffic_core);
            let templates = templates.to_vec();
            std::thread::spawn(move || -> Result<Vec<u32>, String> {
                enter_netns(&gen_ns)?;
                pin(core);
                xdp::generate("eth0", &templates, rate, &stop, &sent)
            })
        };
        let window = (|| -> Result<(f64, f64), String> {
            std::thread::sleep(Duration::from_millis(500));
            let (r0, s0, t0) = (
                rx_packets(&sink_ns)?,
                sent.load(Ordering::Relaxed),
                Instant::now(),
            );
            std::thread::sleep(Duration::from_secs_f64(self.o.seconds));
            let (r1, s1, t1) = (
                rx_packets(&sink_ns)?,
                sent.load(Ordering::Relaxed),
                Instant::now(),
            );
            let secs = (t1 - t0).as_secs_f64();
            Ok((r1.saturating_sub(r0) as f64 / secs, (s1 - s0) as f64 / secs))
        })();
        stop.store(true, Ordering::Relaxed);
        let sent_per_flow = gen.join().map_err(|_| "the generator panicked")?;
        // What is in flight lands before the sink stops counting.
        std::thread::sleep(Duration::from_millis(200));
        stop_sink.store(true, Ordering::Relaxed);
        let sink = match reader {
            Some(h) => Some(h.join().map_err(|_| "the sink panicked")??),
            None => None,
        };
        let (received_pps, offered_pps) = window?;
        Ok(Measured {
            received_pps,
            offered_pps,
            sink,
            sent_per_flow: sent_per_flow?,
        })
    }

    /// Peak, then latency at half the peak, while `path` forwards.
    fn row(&self, path: Path, services: usize, flows: u32, setup_s: f64) -> Result<Row, String> {
        let templates: Vec<Template> = match path {
            Path::Ceiling => &self.to_sink,
            _ => &self.to_vip,
        }
        .iter()
        .take(flows as usize)
        .cloned()
        .collect();
        let peak = self.measure(&templates, None, false)?;
        let latency = if self.o.no_latency || peak.received_pps < 1.0 {
            None
        } else {
            let rate = peak.received_pps / 2.0;
            let m = self.measure(&templates, Some(rate), true)?;
            let mut s = m.sink.expect("read");
            Some(Latency {
                rate_pps: m.received_pps,
                p50_us: s.latency_us(0.5).unwrap_or(f64::NAN),
                p99_us: s.latency_us(0.99).unwrap_or(f64::NAN),
                sent: m.sent_per_flow.iter().map(|&n| u64::from(n)).sum(),
                received: s.received,
                lost: s.lost(&m.sent_per_flow),
                sink_dropped: s.socket_drops,
                reordered: s.reordered(),
            })
        };
        let r = Row {
            path,
            services,
            flows,
            skipped: None,
            setup_s,
            peak_pps: peak.received_pps,
            offered_pps: peak.offered_pps,
            latency,
            note: String::new(),
        };
        Ok(r)
    }

    /// Every flow count through the bare forwarder.
    fn ceiling(&self, services: usize, rows: &mut Vec<Row>) -> Result<(), String> {
        let node = self.plan.node();
        let gen_end = self.plan.pod("gen").unwrap().host_end.clone();
        let sink = self.plan.pod("sink").unwrap().clone();
        for &flows in &self.o.flows {
            let stop = Arc::new(AtomicBool::new(false));
            let fwd = Arc::new(AtomicU64::new(0));
            let refused = Arc::new(AtomicU64::new(0));
            let t = {
                let (stop, fwd, refused) = (stop.clone(), fwd.clone(), refused.clone());
                let (ns, from, to, mac, core) = (
                    node.netns.clone(),
                    gen_end.clone(),
                    sink.host_end.clone(),
                    sink.mac,
                    self.worker_core,
                );
                std::thread::spawn(move || -> Result<(), String> {
                    enter_netns(&ns)?;
                    pin(core);
                    xdp::forward(&from, &to, mac, &stop, &fwd, &refused)
                })
            };
            std::thread::sleep(Duration::from_millis(200));
            let r = self.row(Path::Ceiling, services, flows, 0.0);
            stop.store(true, Ordering::Relaxed);
            t.join().map_err(|_| "the forwarder panicked")??;
            let mut r = r?;
            r.note = format!(
                "forwarded {}, refused by a full TX ring {}",
                fwd.load(Ordering::Relaxed),
                refused.load(Ordering::Relaxed)
            );
            print_row(&r);
            rows.push(r);
        }
        Ok(())
    }

    fn sluice(&self, services: usize, rows: &mut Vec<Row>) -> Result<(), String> {
        for &flows in &self.o.flows {
            let mut config = daemon_config(
                &self.plan,
                Io::Afxdp,
                vec![self.worker_core],
                Idle::BUSY,
                1 << 20,
            );
            config
                .services
                .extend(many_services(services.saturating_sub(1)));
            let t = Instant::now();
            // A fresh daemon for each flow count: every phase starts with
            // no flows, as the kernel's do after conntrack -F.
            let mut d = Daemon::start(config).map_err(|e| format!("daemon: {e}"))?;
            let setup = t.elapsed().as_secs_f64();
            let r = self.row(Path::Sluice, services, flows, setup);
            let reports = d.stop();
            let mut r = r?;
            let mut sockets = sluice_dataplane::io::afxdp::SocketStats::default();
            let (mut forwarded, mut drops) = (0, Vec::new());
            let (mut longest, mut slow) = (0, 0);
            for w in &reports {
                longest = longest.max(w.loop_counters.longest_gap_ns);
                slow += w.loop_counters.slow_rounds;
                sockets.add(&w.backend.sockets.unwrap_or_default());
                forwarded += w.packets.forwarded;
                drops.extend(w.packets.drop_breakdown().filter(|(_, n)| *n > 0));
            }
            r.note = format!(
                "worker forwarded {forwarded}, dropped {drops:?}, longest gap between rounds {:.1} ms, \
                 {slow} over 1 ms; kernel at the sockets: RX ring full {}, fill ring empty {}, other {}",
                longest as f64 / 1e6,
                sockets.rx_ring_full,
                sockets.rx_fill_ring_empty,
                sockets.rx_dropped + sockets.rx_invalid + sockets.tx_invalid
            );
            print_row(&r);
            rows.push(r);
        }
        Ok(())
    }

    fn kernel(&self, path: Path, services: usize, rows: &mut Vec<Row>) -> Result<(), String> {
        let max = match path {
            Path::Iptables => self.o.iptables_max_services,
            _ => self.o.nftables_max_services,
        };
        if services > max {
            for &flows in &self.o.flows {
                let r = Row {
                    path,
                    services,
                    flows,
                    skipped: Some(format!(
                        "over --{}-max-services {max} (loading takes too long)",
                        path.name()
                    )),
                    setup_s: 0.0,
                    peak_pps: 0.0,
                    offered_pps: 0.0,
                    latency: None,
                    note: String::new(),
                };
                print_row(&r);
                rows.push(r);
            }
            return Ok(());
        }
        let node_ns = self.plan.node().netns.clone();
        let sink = self.plan.pod("sink").unwrap();
        let target = Target {
            vip: self.plan.services[0].cluster_ip,
            port: PORT,
            proto: match self.o.proto {
                Proto::Udp => "udp",
                _ => "tcp",
            },
            endpoint: sink.ip,
            target_port: PORT,
        };
        let filler = services.saturating_sub(1);
        kernel_path::clear(&node_ns)?;
        let setup = match path {
            Path::Iptables => kernel_rules::load_in(
                &node_ns,
                &["iptables-restore"],
                &kernel_rules::iptables_full_with(filler, Some(&target)),
            )?,
            _ => {
                let mut total = Duration::ZERO;
                for chunk in kernel_rules::nft_chunks_with(filler, Some(&target), 1000) {
                    total += kernel_rules::load_in(&node_ns, &["nft", "-f", "-"], &chunk)?;
                }
                total
            }
        }
        .as_secs_f64();
        let gen_end = self.plan.pod("gen").unwrap().host_end.clone();
        if !self.o.kernel_on_one_core {
            kernel_path::steer(&node_ns, &gen_end, Some(self.worker_core))?;
        }
        let mut result = Ok(());
        for &flows in &self.o.flows {
            if let Err(e) = kernel_path::clear_connections(&node_ns) {
                result = Err(e);
                break;
            }
            match self.row(path, services, flows, setup) {
                Ok(r) => {
                    print_row(&r);
                    rows.push(r)
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        kernel_path::steer(&node_ns, &gen_end, None)?;
        kernel_path::clear(&node_ns)?;
        result
    }
}

fn mpps(pps: f64) -> String {
    format!("{:.3}", pps / 1e6)
}

fn print_row(r: &Row) {
    if let Some(why) = &r.skipped {
        println!(
            "  {:<9} {:>7} Services {:>6} flows: not run, {why}",
            r.path.name(),
            r.services,
            r.flows
        );
        return;
    }
    let lat = r.latency.map_or(String::new(), |l| {
        format!(
            "; at {} Mpps p50 {:.1} us p99 {:.1} us, lost {} (by the sink's socket {}), reordered {}",
            mpps(l.rate_pps),
            l.p50_us,
            l.p99_us,
            l.lost,
            l.sink_dropped,
            l.reordered
        )
    });
    println!(
        "  {:<9} {:>7} Services {:>6} flows: {} Mpps ({} offered){lat}",
        r.path.name(),
        r.services,
        r.flows,
        mpps(r.peak_pps),
        mpps(r.offered_pps)
    );
    if !r.note.is_empty() {
        println!("            {}", r.note);
    }
}

/// The rows as a table: rates, ratios to iptables, latencies.
pub fn table(rows: &[Row], paths: &[Path]) -> String {
    let mut keys: Vec<(usize, u32)> = rows.iter().map(|r| (r.services, r.flows)).collect();
    keys.sort();
    keys.dedup();
    let find = |p: Path, k: (usize, u32)| {
        rows.iter()
            .find(|r| r.path == p && (r.services, r.flows) == k && r.skipped.is_none())
    };
    let mut out = String::new();
    let _ = write!(out, "| Services | flows |");
    for p in paths {
        let _ = write!(out, " {} Mpps |", p.name());
    }
    for p in paths.iter().filter(|p| **p != Path::Iptables) {
        let _ = write!(out, " {} / iptables |", p.name());
    }
    for p in paths {
        let _ = write!(out, " {} p50 / p99 us |", p.name());
    }
    out.push('\n');
    let cols = paths.len() * 2 + paths.iter().filter(|p| **p != Path::Iptables).count();
    let _ = writeln!(out, "|---|---|{}", "---|".repeat(cols));
    for k in keys {
        let _ = write!(out, "| {} | {} |", k.0, k.1);
        for p in paths {
            let _ = write!(
                out,
                " {} |",
                find(*p, k).map_or("-".into(), |r| mpps(r.peak_pps))
            );
        }
        let base = find(Path::Iptables, k)
            .map(|r| r.peak_pps)
            .filter(|b| *b > 0.0);
        for p in paths.iter().filter(|p| **p != Path::Iptables) {
            let v = match (find(*p, k), base) {
                (Some(r), Some(b)) => format!("{:.2}x", r.peak_pps / b),
                _ => "-".into(),
            };
            let _ = write!(out, " {v} |");
        }
        for p in paths {
            let v = find(*p, k)
                .and_then(|r| r.latency)
                .map_or("-".into(), |l| format!("{:.0} / {:.0}", l.p50_us, l.p99_us));
            let _ = write!(out, " {v} |");
        }
        out.push('\n');
    }
    out
}

pub fn csv(rows: &[Row]) -> String {
    let mut out = String::from(
        "path,services,flows,skipped,setup_s,peak_pps,offered_pps,latency_rate_pps,p50_us,p99_us,received,lost,sink_dropped,reordered,note\n",
    );
    for r in rows {
        let l = r.latency;
        let _ = writeln!(
            out,
            "{},{},{},{},{:.3},{:.0},{:.0},{},{},{},{},{},{},{},{}",
            r.path.name(),
            r.services,
            r.flows,
            r.skipped.as_deref().unwrap_or("").replace(',', ";"),
            r.setup_s,
            r.peak_pps,
            r.offered_pps,
            l.map_or(String::new(), |l| format!("{:.0}", l.rate_pps)),
            l.map_or(String::new(), |l| format!("{:.1}", l.p50_us)),
            l.map_or(String::new(), |l| format!("{:.1}", l.p99_us)),
            l.map_or(String::new(), |l| l.received.to_string()),
            l.map_or(String::new(), |l| l.lost.to_string()),
            l.map_or(String::new(), |l| l.sink_dropped.to_string()),
            l.map_or(String::new(), |l| l.reordered.to_string()),
            r.note.replace(',', ";"),
        );
    }
    out
}

pub fn run(o: &Options) -> Result<Vec<Row>, String> {
    let plan = LabFile::parse(LAB)
        .and_then(|f| f.plan())
        .map_err(|e| e.to_string())?;
    let (worker_core, traffic_core) = cores(o.worker_core, o.traffic_core)?;
    let gen = plan.pod("gen").ok_or("no gen pod")?.clone();
    let sink = plan.pod("sink").ok_or("no sink pod")?.clone();
    let most = o.flows.iter().copied().max().unwrap_or(1);
    let traffic = Traffic {
        proto: o.proto,
        size: o.size,
        flows: most,
    };
    let vip = IpAddr::V4(plan.services[0].cluster_ip);
    let to_vip = traffic.templates(IpAddr::V4(gen.ip), vip, PORT, gen.mac, Gateway::DEFAULT.mac)?;
    let to_sink = traffic.templates(
        IpAddr::V4(gen.ip),
        IpAddr::V4(sink.ip),
        PORT,
        gen.mac,
        Gateway::DEFAULT.mac,
    )?;
    std::fs::create_dir_all(&o.out).map_err(|e| format!("{}: {e}", o.out.display()))?;
    match std::fs::metadata("/proc/net/pktgen") {
        Ok(_) => println!("this kernel has pktgen; compare uses sluice-perf's AF_XDP generator so that every path gets the same frames"),
        Err(_) => println!("no /proc/net/pktgen on this kernel: the generator is sluice-perf's own, over AF_XDP"),
    }
    // Its veths made directly: the kernel's paths run with no daemon.
    let lab = Lab::create_with_veths(&plan, Io::Afxdp, 1).map_err(|e| format!("set-up: {e}"))?;
    kernel_path::make_router(plan.node(), &[&gen, &sink], Gateway::DEFAULT.mac)?;
    let bench = Bench {
        o,
        plan: plan.clone(),
        lab,
        worker_core,
        traffic_core,
        to_vip,
        to_sink,
    };
    let _ = &bench.lab;
    println!(
        "compare: {:?}, {} bytes a frame, {} s a measurement; generator and sink on core {traffic_core}, \
         the dataplane on core {worker_core}",
        o.proto,
        bench.to_vip[0].bytes.len(),
        o.seconds
    );
    let mut paths = o.paths.clone();
    paths.sort();
    paths.dedup();
    let mut rows = Vec::new();
    for &services in &o.services {
        for &p in &paths {
            match p {
                Path::Ceiling => bench.ceiling(services, &mut rows)?,
                Path::Sluice => bench.sluice(services, &mut rows)?,
                Path::Iptables | Path::Nftables => bench.kernel(p, services, &mut rows)?,
            }
        }
    }
    let t = table(&rows, &paths);
    println!("\n{t}");
    let csv_path = o.out.join("compare.csv");
    let svg_path = o.out.join("compare.svg");
    std::fs::write(&csv_path, csv(&rows)).map_err(|e| format!("{}: {e}", csv_path.display()))?;
    std::fs::write(&svg_path, chart::rates(&rows, &paths))
        .map_err(|e| format!("{}: {e}", svg_path.display()))?;
    println!("wrote {} and {}", csv_path.display(), svg_path.display());
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn row(path: Path, services: usize, flows: u32, pps: f64) -> Row {
        Row {
            path,
            services,
            flows,
            skipped: None,
            setup_s: 0.0,
            peak_pps: pps,
            offered_pps: pps,
            latency: None,
            note: String::new(),
        }
    }

    #[test]
    fn the_table_gives_ratios_to_iptables() {
        let rows = vec![
            row(Path::Sluice, 10, 1, 800_000.0),
            row(Path::Iptables, 10, 1, 400_000.0),
        ];
        let t = table(&rows, &[Path::Sluice, Path::Iptables]);
        assert!(t.contains("| 10 | 1 | 0.800 | 0.400 | 2.00x |"), "{t}");
        let c = csv(&rows);
        assert_eq!(c.lines().count(), 3);
        assert!(c.lines().nth(1).unwrap().starts_with("sluice,10,1,,"));
    }

    #[test]
    fn the_lab_plans() {
        let plan = LabFile::parse(LAB).and_then(|f| f.plan()).unwrap();
        assert_eq!(plan.services[0].cluster_ip, Ipv4Addr::new(198, 19, 0, 100));
    }
}
