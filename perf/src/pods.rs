//! `sluice-perf pods`: what a node's pod count costs. A daemon (one
//! worker, pinned) starts with no pods; N pods are created one after the
//! other through the sluice-cni binary, as a runtime would, each ADD
//! timed; then the generator's frames go through the first pod's port and
//! through the last pod's, alternately, so that a port attached 250th is
//! compared with the first in one run.
//!
//! Reported: each ADD's time (first, median, p90, last), the worker's
//! frame pool (frames, bytes), and the rate delivered from pod 1 to pod 2
//! and from pod N to pod N-1.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_control::daemon::{Config, Daemon, Io};
use sluice_dataplane::io::tap::enter_netns;
use sluice_dataplane::neighbor::Gateway;
use sluice_dataplane::worker::Idle;

use crate::compare::{cores, in_netns, pin, rx_packets};
use crate::traffic::Traffic;
use crate::{sink, xdp};

#[derive(clap::Args, Clone, Debug)]
pub struct PodsOptions {
    /// Pods to create (and the daemon's --max-pods).
    #[arg(long, default_value_t = 250)]
    pub pods: usize,
    /// Seconds of each rate measurement.
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// Measurements of each port, alternating first and last.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// The worker's core (default: the last), and the generator's
    /// (default: the first).
    #[arg(long)]
    pub worker_core: Option<usize>,
    #[arg(long)]
    pub traffic_core: Option<usize>,
}

/// A pod made by the plugin: its namespace, address and MAC.
struct Pod {
    netns: String,
    ip: std::net::Ipv4Addr,
}

struct Bench {
    node: String,
    conf: String,
    cni: std::path::PathBuf,
    pods: Vec<Pod>,
}

impl Bench {
    fn add(&mut self, n: usize) -> Result<Duration, String> {
        let netns = format!("{}-{n}", self.node);
        run(&["ip", "netns", "add", &netns])?;
        let t = Instant::now();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.node])
            .arg(&self.cni)
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", format!("bench{n}"))
            .env("CNI_NETNS", format!("/var/run/netns/{netns}"))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("sluice-cni: {e}"))?;
        child
            .stdin
            .take()
            .ok_or("no stdin")?
            .write_all(self.conf.as_bytes())
            .map_err(|e| e.to_string())?;
        let o = child.wait_with_output().map_err(|e| e.to_string())?;
        let took = t.elapsed();
        let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if !o.status.success() {
            return Err(format!(
                "ADD of pod {n}: {}",
                String::from_utf8_lossy(&o.stdout)
            ));
        }
        let ip = out["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("ADD of pod {n}: no IPv4 address in {out}"))?;
        self.pods.push(Pod { netns, ip });
        Ok(took)
    }

    /// Frames a second delivered from pod `from` to pod `to`'s eth0.
    fn rate(&self, from: usize, to: usize, o: &PodsOptions, core: usize) -> Result<f64, String> {
        let (src, dst) = (&self.pods[from], &self.pods[to]);
        let _socket = in_netns(&dst.netns, || sink::bind(9))?;
        let src_mac = in_netns(&src.netns, || {
            let s = std::fs::read_to_string("/sys/class/net/eth0/address")
                .map_err(|e| e.to_string())?;
            crate::standalone::parse_mac(s.trim())
        })?;
        let templates = Traffic {
            proto: crate::traffic::Proto::Udp,
            size: None,
            flows: 1,
        }
        .templates(
            src.ip.into(),
            dst.ip.into(),
            9,
            src_mac,
            Gateway::DEFAULT.mac,
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let gen = {
            let (stop, sent, ns) = (stop.clone(), sent.clone(), src.netns.clone());
            std::thread::spawn(move || -> Result<Vec<u32>, String> {
                enter_netns(&ns)?;
                pin(core);
                xdp::generate("eth0", &templates, None, &stop, &sent)
            })
        };
        let window = (|| -> Result<f64, String> {
            std::thread::sleep(Duration::from_millis(300));
            let (r0, t0) = (rx_packets(&dst.netns)?, Instant::now());
            std::thread::sleep(Duration::from_secs_f64(o.seconds));
            let (r1, t1) = (rx_packets(&dst.netns)?, Instant::now());
            Ok(r1.saturating_sub(r0) as f64 / (t1 - t0).as_secs_f64())
        })();
        stop.store(true, Ordering::Relaxed);
        gen.join().map_err(|_| "the generator panicked")??;
        window
    }
}

fn run(args: &[&str]) -> Result<(), String> {
    let o = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if !o.status.success() {
        return Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok(())
}

/// Removes the node's namespace and its pods'.
fn cleanup(node: &str) {
    let mut spaces = sluice_lab::namespaces_of(node);
    spaces.push(node.to_string());
    for ns in spaces {
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

pub fn run_pods(o: &PodsOptions) -> Result<(), String> {
    if o.pods < 4 {
        return Err("--pods: at least 4 (two pairs)".into());
    }
    let (worker_core, traffic_core) = cores(o.worker_core, o.traffic_core)?;
    let node = format!("spods{}", std::process::id() % 100_000);
    cleanup(&node);
    run(&["ip", "netns", "add", &node])?;
    let dir = std::env::temp_dir().join(format!("sluice-{node}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let result = (|| -> Result<(), String> {
        let mut d = Daemon::start(Config {
            io: Io::Afxdp,
            node_netns: Some(node.clone()),
            ports: Vec::new(),
            host: None,
            cores: vec![worker_core],
            conntrack_capacity: 1 << 16,
            idle: Idle::BUSY,
            services: Vec::new(),
            max_pods: o.pods,
        })
        .map_err(|e| format!("daemon: {e}"))?;
        sluice_control::workers::keep_off_cores(&[worker_core]);
        let sock = dir.join("admin.sock");
        let admin = sluice_control::admin::serve(&sock, d.handles(), Box::new(Vec::new))
            .map_err(|e| e.to_string())?;
        d.hold_admin(admin);
        let mut b = Bench {
            conf: serde_json::json!({
                "cniVersion": "1.1.0",
                "name": node,
                "type": "sluice-cni",
                "mtu": 1450,
                "adminSocket": sock,
                "ipam": {"ranges": [[{"subnet": "198.18.1.0/24"}]], "dataDir": dir.join("ipam")},
            })
            .to_string(),
            node: node.clone(),
            cni: sluice_lab::cni_binary()?,
            pods: Vec::new(),
        };
        let mut adds = Vec::new();
        for n in 0..o.pods {
            adds.push(b.add(n)?.as_secs_f64() * 1e3);
        }
        let pool = d.observer().workers()[0]
            .backend
            .pool
            .ok_or("the worker has no shared pool")?;
        let (first_add, last_add) = (adds[0], adds[adds.len() - 1]);
        let mut sorted = adds.clone();
        sorted.sort_by(f64::total_cmp);
        println!(
            "{} pods attached through sluice-cni, one at a time: ADD first {first_add:.1} ms, median {:.1} ms, p90 {:.1} ms, last (pod {}) {last_add:.1} ms",
            o.pods,
            sorted[sorted.len() / 2],
            sorted[sorted.len() * 9 / 10],
            o.pods
        );
        println!(
            "the worker's frame pool: {} frames of 2 KiB ({} MiB) for --max-pods {}; {} on fill rings, fill target {}",
            pool.frames,
            (pool.frames * 2048) >> 20,
            o.pods,
            pool.in_fill,
            pool.fill_target
        );
        let n = o.pods;
        let (mut first, mut last) = (Vec::new(), Vec::new());
        for _ in 0..o.rounds {
            first.push(b.rate(0, 1, o, traffic_core)?);
            last.push(b.rate(n - 1, n - 2, o, traffic_core)?);
        }
        let (f, l) = (median(&mut first), median(&mut last));
        println!(
            "UDP 60-byte frames, flat out, {} rounds of {} s each, alternating: pod 1 -> pod 2 median {:.3} Mpps, pod {n} -> pod {} median {:.3} Mpps: last/first {:.2}",
            o.rounds,
            o.seconds,
            f / 1e6,
            n - 1,
            l / 1e6,
            l / f.max(1.0)
        );
        d.stop();
        Ok(())
    })();
    cleanup(&node);
    let _ = std::fs::remove_dir_all(&dir);
    result
}
