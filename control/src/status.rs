//! What `sluice status` shows of a running daemon: its tables and sources,
//! what the tables leave out, the pods attached, and each worker's live
//! counters (published by the worker every 10 ms; its pool and sockets
//! every second), as JSON for scripts and as text for people.

use std::collections::BTreeMap;

use sluice_dataplane::counters::Counters;
use sluice_dataplane::DropReason;

pub use sluice_admin::{ConntrackStatus, SourceStatus, StatusReply, WorkerStatus};

use crate::state::WorkerReport;

/// A worker's report as the status shows it.
pub fn worker_status(worker: usize, r: &WorkerReport) -> WorkerStatus {
    WorkerStatus {
        worker,
        core: r.core,
        age_ms: r.at.map(|t| t.elapsed().as_millis() as u64),
        packets: packet_counts(&r.packets),
        drops: DropReason::ALL
            .iter()
            .map(|&d| (d.label().to_string(), r.packets.dropped(d)))
            .collect(),
        loop_counters: r.loop_counters.clone(),
        backend: r.backend,
    }
}

fn packet_counts(c: &Counters) -> BTreeMap<String, u64> {
    [
        ("rx", c.rx),
        ("forwarded", c.forwarded),
        ("to_host", c.to_host),
        ("ct_hits", c.ct_hits),
        ("ct_new", c.ct_new),
        ("nat", c.nat),
        ("untracked", c.untracked),
        ("icmp_error_passthrough", c.icmp_error_passthrough),
        ("icmp_translated", c.icmp_translated),
        ("neighbor_replies", c.neighbor_replies),
        ("time_exceeded", c.time_exceeded),
        ("rejected", c.rejected),
        ("resets", c.resets),
        ("held", c.held),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// `sluice status`, for people.
pub fn describe(s: &StatusReply) -> String {
    let mut out = format!(
        "io {}, {} worker(s), tables generation {}, conntrack {} of {} flows ({} unanswered evicted, {} ended as their backend left)\n",
        s.io,
        s.workers,
        s.tables_generation,
        s.conntrack.entries,
        s.conntrack.capacity,
        s.conntrack.evicted,
        s.conntrack.ended
    );
    for src in &s.sources {
        let st = &src.status;
        out += &format!(
            "source {}: generation {}, {} Service(s), {} rejected now{}\n",
            src.source,
            st.generation,
            st.services,
            st.rejected.len(),
            match &st.last_error {
                Some(e) => format!(", last error: {e}"),
                None => String::new(),
            }
        );
        for r in &st.rejected {
            out += &format!("  rejected: {r}\n");
        }
        for r in &st.file_problems {
            out += &format!("  refused file: {r}\n");
        }
        // The names, a few in text (JSON has them all).
        const SHOWN: usize = 20;
        if !st.programmed.is_empty() {
            let more = st.programmed.len().saturating_sub(SHOWN);
            out += &format!(
                "  programmed: {}{}\n",
                st.programmed[..st.programmed.len().min(SHOWN)].join(", "),
                if more > 0 {
                    format!(" and {more} more (--json lists all)")
                } else {
                    String::new()
                }
            );
        }
        for r in &st.skipped {
            out += &format!("  not programmed: {r}\n");
        }
    }
    if !s.left_out.is_empty() {
        out += &format!("{} left out of the tables:\n", s.left_out.len());
        for l in &s.left_out {
            out += &format!("  left out: {l}\n");
        }
    }
    out += &format!(
        "{} interface(s) attached, of at most {}\n",
        s.interfaces.len(),
        s.max_pods
    );
    for i in &s.interfaces {
        let addrs: Vec<String> = i.addrs.iter().map(|a| a.to_string()).collect();
        out += &format!(
            "  port {:>3}  {:<16} {}  {}  {}\n",
            i.port,
            i.ifname,
            i.mac,
            addrs.join(","),
            i.owner.as_deref().unwrap_or("(command line)")
        );
    }
    for w in &s.counters {
        out += &describe_worker(w);
    }
    out
}

fn describe_worker(w: &WorkerStatus) -> String {
    let p = |k: &str| w.packets.get(k).copied().unwrap_or(0);
    let l = &w.loop_counters;
    let mut out = format!(
        "worker {} (core {}, {}):\n",
        w.worker,
        w.core
            .map(|c| c.to_string())
            .unwrap_or_else(|| "any".into()),
        match w.age_ms {
            Some(ms) => format!("counters {ms} ms old"),
            None => "no counters yet".into(),
        }
    );
    out += &format!(
        "  rx {} forwarded {} to_host {} ct_new {} ct_hits {} nat {} neighbor_replies {} dropped {}\n",
        p("rx"),
        p("forwarded"),
        p("to_host"),
        p("ct_new"),
        p("ct_hits"),
        p("nat"),
        p("neighbor_replies"),
        w.total_drops()
    );
    out += &format!(
        "  tx {} time_exceeded {} rejected {} host_tx {} host_rx {} | moved {} copied {} misuse {}\n",
        l.tx,
        p("time_exceeded"),
        p("rejected"),
        l.host_tx,
        l.host_rx,
        w.backend.moved,
        w.backend.copied,
        w.backend.misuse
    );
    for (reason, n) in w.drops.iter().filter(|(_, n)| **n > 0) {
        out += &format!("  dropped {reason}: {n}\n");
    }
    if let Some(pool) = &w.backend.pool {
        out += &format!(
            "  pool: {} frames ({} MiB), {} free, {} on fill rings, {} in flight, {} in hand; {} of {} ports, fill target {}, {} short\n",
            pool.frames,
            (pool.frames * 2048) >> 20,
            pool.free,
            pool.in_fill,
            pool.in_tx,
            pool.worker,
            pool.ports,
            pool.max_ports,
            pool.fill_target,
            pool.ports_short
        );
    }
    if let Some(k) = &w.backend.sockets {
        out += &format!(
            "  sockets (kernel drops): rx_ring_full {} rx_fill_ring_empty {} rx_dropped {} rx_invalid {} tx_invalid {}\n",
            k.rx_ring_full, k.rx_fill_ring_empty, k.rx_dropped, k.rx_invalid, k.tx_invalid
        );
    }
    out
}
