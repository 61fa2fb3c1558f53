//! `sluice-perf generate` and `sluice-perf sink`: the comparison's two
//! ends, for runs by hand against a lab (`sluice lab up`).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_dataplane::io::tap::enter_netns;
use sluice_dataplane::neighbor::Gateway;

use crate::sink;
use crate::traffic::Traffic;
use crate::xdp;

#[derive(clap::Args, Clone)]
pub struct GenerateOptions {
    /// The namespace to send from (a lab pod's, e.g. sluice-client).
    #[arg(long)]
    pub netns: Option<String>,
    #[arg(long, default_value = "eth0")]
    pub ifname: String,
    #[arg(long)]
    pub src: IpAddr,
    #[arg(long)]
    pub dst: IpAddr,
    #[arg(long, default_value_t = 9)]
    pub dport: u16,
    /// The destination MAC (default: the pods' gateway, Sluice's).
    #[arg(long, value_parser = parse_mac)]
    pub dst_mac: Option<[u8; 6]>,
    #[command(flatten)]
    pub traffic: Traffic,
    /// Frames a second (default: as fast as the socket takes them).
    #[arg(long)]
    pub rate: Option<f64>,
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
}

#[derive(clap::Args, Clone)]
pub struct SinkOptions {
    /// The namespace to receive in (a lab pod's).
    #[arg(long)]
    pub netns: Option<String>,
    #[arg(long, default_value_t = 9)]
    pub port: u16,
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// What the generator reported sending, to count loss (total frames,
    /// spread evenly over the flows it cycled).
    #[arg(long)]
    pub sent: Option<u64>,
}

pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let v: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{s}: not a MAC address (aa:bb:cc:dd:ee:ff)"))?;
    v.try_into()
        .map_err(|_| format!("{s}: not a MAC address (six bytes)"))
}

/// The MAC of `ifname` in the calling thread's namespace.
fn own_mac(ifname: &str) -> Result<[u8; 6], String> {
    let p = format!("/sys/class/net/{ifname}/address");
    let s = std::fs::read_to_string(&p).map_err(|e| format!("{p}: {e}"))?;
    parse_mac(s.trim())
}

pub fn generate(o: &GenerateOptions) -> Result<(), String> {
    if std::fs::metadata("/proc/net/pktgen").is_err() {
        eprintln!(
            "no /proc/net/pktgen on this kernel: sending with sluice-perf's AF_XDP generator"
        );
    }
    if let Some(ns) = &o.netns {
        enter_netns(ns)?;
    }
    let src_mac = own_mac(&o.ifname)?;
    let templates = o.traffic.templates(
        o.src,
        o.dst,
        o.dport,
        src_mac,
        o.dst_mac.unwrap_or(Gateway::DEFAULT.mac),
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let t = {
        let (stop, sent, ifname, rate) = (stop.clone(), sent.clone(), o.ifname.clone(), o.rate);
        std::thread::spawn(move || xdp::generate(&ifname, &templates, rate, &stop, &sent))
    };
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(o.seconds));
    stop.store(true, Ordering::Relaxed);
    let per_flow = t.join().map_err(|_| "the generator panicked")??;
    let n = sent.load(Ordering::Relaxed);
    println!(
        "sent {n} frames of {} bytes in {} flows over {:.1} s: {:.3} Mpps",
        o.traffic
            .size
            .unwrap_or(o.traffic.min_size(o.dst.is_ipv6())),
        per_flow.len(),
        start.elapsed().as_secs_f64(),
        n as f64 / start.elapsed().as_secs_f64() / 1e6
    );
    Ok(())
}

pub fn sink(o: &SinkOptions) -> Result<(), String> {
    if let Some(ns) = &o.netns {
        enter_netns(ns)?;
    }
    let socket = sink::bind(o.port)?;
    let stop = AtomicBool::new(false);
    let mut stats = std::thread::scope(|sc| {
        let h = sc.spawn(|| sink::run(&socket, &stop));
        std::thread::sleep(Duration::from_secs_f64(o.seconds));
        stop.store(true, Ordering::Relaxed);
        h.join().map_err(|_| "the sink panicked".to_string())
    })??;
    let flows = stats.flows.iter().filter(|f| f.received > 0).count();
    println!(
        "received {} probes in {flows} flows ({} other datagrams), {} reordered",
        stats.received,
        stats.foreign,
        stats.reordered()
    );
    if let Some(sent) = o.sent {
        let n = stats.flows.len().max(1) as u64;
        let per_flow: Vec<u32> = (0..n)
            .map(|i| (sent / n + u64::from(i < sent % n)) as u32)
            .collect();
        println!("lost {} of {sent}", stats.lost(&per_flow));
    }
    if let (Some(p50), Some(p99), Some(max)) = (
        stats.latency_us(0.5),
        stats.latency_us(0.99),
        stats.latency_us(1.0),
    ) {
        println!("latency p50 {p50:.1} us, p99 {p99:.1} us, max {max:.1} us");
    }
    Ok(())
}
