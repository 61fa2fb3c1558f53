//! `sluice-perf publish`: the time from an EndpointSlice event received to
//! the new tables visible to the workers, at a number of Services, p50 and
//! p99 over a series of events. The events go through the daemon's path:
//! a k8s-openapi object into the translation model, the touched Service's
//! change to the publisher, which makes it in place in the copy of the
//! tables no worker reads and swaps that copy in (left-right). A reader
//! thread loads the tables all the while, as workers do, so the wait for
//! readers to leave the spare copy is in the figures.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use sluice_control::publish::Publisher;
use sluice_control::sync::changes;
use sluice_control::translate::Model;

use sluice_fixtures::bench_frontend;

#[derive(clap::Args, Clone)]
pub struct Options {
    /// Service counts to measure at.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000usize, 10_000, 100_000])]
    pub services: Vec<usize>,
    /// Events measured at each count (the run stops a count after 60 s).
    #[arg(long, default_value_t = 1000)]
    pub events: usize,
    /// Also load kube-proxy's iptables and nftables rules for the same
    /// Services (in a namespace of our own) up to this many Services: a
    /// full load and a one-Service update each (0: not at all). iptables
    /// takes minutes past 10,000 (docs/benchmarks.md).
    #[arg(long, default_value_t = 10_000)]
    pub kernel_up_to: usize,
}

fn service(i: usize) -> Service {
    let (vip, port) = bench_frontend(i);
    let ip = std::net::Ipv4Addr::from(vip.v4_octets());
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("svc-{i}"), "namespace": "bench"},
        "spec": {"clusterIP": ip.to_string(), "ports": [{"port": port, "targetPort": 8080}]}
    }))
    .expect("a Service")
}

fn slice(i: usize, backends: usize) -> EndpointSlice {
    let eps: Vec<serde_json::Value> = (0..backends)
        .map(|b| serde_json::json!({"addresses": [format!("198.18.{}.{}", 2 + b, i % 250 + 2)]}))
        .collect();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("svc-{i}-1"), "namespace": "bench",
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4", "endpoints": eps
    }))
    .expect("an EndpointSlice")
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// kube-proxy's two programs at `n` Services: (full load, one update) for
/// iptables-restore and for nft -f.
fn kernel(n: usize) -> Result<[(Duration, Duration); 2], String> {
    use crate::kernel_rules as k;
    let ipt = k::RulesNs::new()?;
    let full = ipt.load(&["iptables-restore"], &k::iptables_full(n))?;
    let update = ipt.load(
        &["iptables-restore", "--noflush"],
        &k::iptables_update(n, n / 2, 3),
    )?;
    drop(ipt);
    let nft = k::RulesNs::new()?;
    let nfull = nft.load(&["nft", "-f", "-"], &k::nft_full(n))?;
    let nupdate = nft.load(&["nft", "-f", "-"], &k::nft_update(n / 2, 3))?;
    Ok([(full, update), (nfull, nupdate)])
}

pub fn run(o: &Options) -> Result<(), String> {
    println!("publish: EndpointSlice event -> translated -> changed in the spare copy -> swapped in (a reader loading throughout)");
    println!(
        "{:>9} {:>12} {:>10} {:>10} {:>7}",
        "services", "first build", "p50", "p99", "events"
    );
    for &n in &o.services {
        let mut model = Model::default();
        for i in 0..n {
            model.upsert_service(&service(i));
            model.upsert_slice(&slice(i, 2));
        }
        let t = Instant::now();
        let publisher = Publisher::detached(&model.specs());
        let first = t.elapsed();
        // A reader, as a worker: a load per batch of rounds.
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (p, stop) = (publisher.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut loads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    std::hint::black_box(p.read());
                    loads += 1;
                }
                loads
            })
        };
        let mut times = Vec::new();
        let budget = Instant::now();
        for e in 0..o.events {
            // Scale one Service between 2 and 3 backends.
            let i = (e * 7919) % n;
            let ev = slice(i, 2 + (e % 2));
            let t = Instant::now();
            let touched: BTreeSet<_> = model.upsert_slice(&ev).touched;
            let published = publisher.publish_changes(&changes(&model, &touched));
            times.push(t.elapsed());
            if !published.problems.is_empty() {
                return Err(published.problems.join("; "));
            }
            if budget.elapsed() > Duration::from_secs(60) {
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        let _ = reader.join();
        times.sort();
        let p99 = pct(&times, 0.99);
        println!(
            "{n:>9} {:>10.1}ms {:>8.3}ms {:>8.3}ms {:>7}",
            first.as_secs_f64() * 1e3,
            pct(&times, 0.5).as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            times.len()
        );
        if n <= o.kernel_up_to {
            let [(ifull, iupd), (nfull, nupd)] = kernel(n)?;
            let x = |d: Duration| d.as_secs_f64() / p99.as_secs_f64();
            println!(
                "{:>9}   kube-proxy iptables-restore: full {:.3} s, a one-Service update {:.3} s ({:.0}x Sluice's p99)",
                "",
                ifull.as_secs_f64(),
                iupd.as_secs_f64(),
                x(iupd)
            );
            println!(
                "{:>9}   kube-proxy nft -f:           full {:.3} s, a one-Service update {:.3} s ({:.0}x Sluice's p99)",
                "",
                nfull.as_secs_f64(),
                nupd.as_secs_f64(),
                x(nupd)
            );
        }
    }
    Ok(())
}
