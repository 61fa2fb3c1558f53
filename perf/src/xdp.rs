//! The AF_XDP parts of a comparison: a generator that transmits crafted
//! frames, paced or as fast as its socket takes them, and the bare
//! forwarder (the ceiling: every frame from one port out of
//! the other with its destination MAC set, nothing else), all on the
//! dataplane's own AF_XDP backend, so that Sluice and the ceiling differ
//! only in the processing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sluice_dataplane::io::afxdp::{AfXdpBackend, AfXdpConfig};
use sluice_dataplane::io::{Backend, Frame};

use crate::probe::{self, Probe};
use crate::traffic::Template;

const BURST: usize = 64;
const PACED_BURST: usize = 8;

/// The forwarder's sizes are the daemon's workers' (control's
/// `afxdp_worker`), so that the ceiling and Sluice buffer alike.
fn forwarder_config() -> AfXdpConfig {
    AfXdpConfig {
        ring: 2048,
        queue: 0,
        max_ports: 2,
    }
}

/// The generator's ring is smaller: what waits on it is the generator's
/// own queue, which would count as the path's latency.
fn generator_config() -> AfXdpConfig {
    AfXdpConfig {
        ring: 1024,
        queue: 0,
        max_ports: 1,
    }
}

/// Transmits the templates round-robin on `ifname` (in the calling
/// thread's namespace) until `stop`, each frame stamped with its flow, its
/// sequence number in the flow and the time; at `rate` frames a second, or
/// as fast as the socket takes them. Counts what the socket accepted in
/// `sent`; returns the frames sent per flow.
pub fn generate(
    ifname: &str,
    templates: &[Template],
    rate: Option<f64>,
    stop: &AtomicBool,
    sent: &AtomicU64,
) -> Result<Vec<u32>, String> {
    if templates.is_empty() {
        return Err("no frames to send".into());
    }
    let mut b =
        AfXdpBackend::open(&[ifname], generator_config(), None).map_err(|e| e.to_string())?;
    let mut seq = vec![0u32; templates.len()];
    let mut next = 0usize;
    let mut batch = Vec::with_capacity(BURST);
    let mut flows = Vec::with_capacity(BURST);
    let start = Instant::now();
    let mut total = 0u64;
    // Paced, a burst is a few frames, so that a burst's own length adds
    // little to the latency measured; flat out, a full one.
    let burst = if rate.is_some() { PACED_BURST } else { BURST };
    while !stop.load(Ordering::Relaxed) {
        if let Some(rate) = rate {
            // Paced: the next burst is due when the frames so far would
            // have taken at `rate`. Waits sleep or yield, so that a sink
            // sharing the core gets it.
            let due = Duration::from_secs_f64(total as f64 / rate);
            let now = start.elapsed();
            if now < due {
                // Frames a wake-up left on the ring (the peer dropped one,
                // which ends a copy-mode batch) go out now, not behind the
                // next burst: a generator's own queue is not the latency
                // of the path under test.
                b.flush();
                let wait = due - now;
                if wait > Duration::from_micros(200) {
                    std::thread::sleep(wait - Duration::from_micros(100));
                } else {
                    std::thread::yield_now();
                }
                continue;
            }
        }
        batch.clear();
        flows.clear();
        let sent_ns = probe::now_ns();
        while batch.len() < burst {
            let flow = next % templates.len();
            let t = &templates[flow];
            let p = Probe {
                flow: flow as u32,
                seq: seq[flow],
                sent_ns,
            };
            let Some(fr) = b.alloc_with(|buf| {
                buf[..t.bytes.len()].copy_from_slice(&t.bytes);
                p.stamp(&mut buf[..t.bytes.len()], t.slot);
                t.bytes.len()
            }) else {
                break;
            };
            seq[flow] = seq[flow].wrapping_add(1);
            next += 1;
            batch.push(fr);
            flows.push(flow);
        }
        let offered = batch.len();
        b.tx(0, &mut batch);
        let n = offered - batch.len();
        // What the ring refused is sent again, with the same numbers.
        for (f, &flow) in batch.drain(..).zip(&flows[n..]).rev() {
            b.free(f);
            seq[flow] = seq[flow].wrapping_sub(1);
            next -= 1;
        }
        b.flush();
        total += n as u64;
        sent.fetch_add(n as u64, Ordering::Relaxed);
    }
    Ok(seq)
}

/// The ceiling: frames from port `from` out of port `to` with their
/// destination MAC set to `dst_mac`, as l2fwd does, and nothing else.
pub fn forward(
    from: &str,
    to: &str,
    dst_mac: [u8; 6],
    stop: &AtomicBool,
    forwarded: &AtomicU64,
    refused: &AtomicU64,
) -> Result<(), String> {
    let mut b =
        AfXdpBackend::open(&[from, to], forwarder_config(), None).map_err(|e| e.to_string())?;
    let mut burst: Vec<Frame> = Vec::with_capacity(BURST);
    while !stop.load(Ordering::Relaxed) {
        let n = b.rx(0, &mut burst, BURST);
        if n == 0 {
            b.flush();
            continue;
        }
        for f in &burst {
            b.with_bytes(f, |bytes| {
                if bytes.len() >= 6 {
                    bytes[..6].copy_from_slice(&dst_mac);
                }
            });
        }
        b.tx(1, &mut burst);
        let sent = n - burst.len();
        for f in burst.drain(..) {
            b.free(f);
        }
        if sent < n {
            refused.fetch_add((n - sent) as u64, Ordering::Relaxed);
        }
        b.flush();
        forwarded.fetch_add(sent as u64, Ordering::Relaxed);
    }
    Ok(())
}
