//! The AF_XDP parts of a throughput run: a generator that transmits crafted
//! frames as fast as its socket takes them, a sink that counts what arrives,
//! and the bare forwarder (the ceiling: every frame from one port out of
//! the other with its destination MAC set, nothing else), all on the
//! dataplane's own AF_XDP backend, so that Sluice and the ceiling differ
//! only in the processing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sluice_dataplane::io::afxdp::{AfXdpBackend, AfXdpConfig};
use sluice_dataplane::io::{Backend, Frame};

const BURST: usize = 64;

fn config() -> AfXdpConfig {
    AfXdpConfig {
        frames: 4096,
        ring: 1024,
        queue: 0,
    }
}

/// Transmits `frames` round-robin on `ifname` (in the calling thread's
/// namespace) until `stop`; counts what the socket accepted in `sent`.
pub fn generate(
    ifname: &str,
    frames: &[Vec<u8>],
    stop: &AtomicBool,
    sent: &AtomicU64,
) -> Result<(), String> {
    let mut b = AfXdpBackend::open(&[ifname], config()).map_err(|e| e.to_string())?;
    let mut next = 0usize;
    let mut batch = Vec::with_capacity(BURST);
    while !stop.load(Ordering::Relaxed) {
        batch.clear();
        while batch.len() < BURST {
            let f = &frames[next % frames.len()];
            let Some(fr) = b.alloc_with(|buf| {
                buf[..f.len()].copy_from_slice(f);
                f.len()
            }) else {
                break;
            };
            next += 1;
            batch.push(fr);
        }
        let n = b.tx(0, &batch);
        for &f in &batch[n..] {
            b.free(f);
            next -= 1;
        }
        b.flush();
        sent.fetch_add(n as u64, Ordering::Relaxed);
    }
    Ok(())
}

/// Receives on `ifname` until `stop`, counting frames in `got`.
pub fn sink(ifname: &str, stop: &AtomicBool, got: &AtomicU64) -> Result<(), String> {
    let mut b = AfXdpBackend::open(&[ifname], config()).map_err(|e| e.to_string())?;
    let mut burst = [Frame { index: 0, len: 0 }; BURST];
    while !stop.load(Ordering::Relaxed) {
        let n = b.rx(0, &mut burst);
        for &f in &burst[..n] {
            b.free(f);
        }
        if n > 0 {
            got.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
    Ok(())
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
    let mut b = AfXdpBackend::open(&[from, to], config()).map_err(|e| e.to_string())?;
    let mut burst = [Frame { index: 0, len: 0 }; BURST];
    while !stop.load(Ordering::Relaxed) {
        let n = b.rx(0, &mut burst);
        if n == 0 {
            b.flush();
            continue;
        }
        for &f in &burst[..n] {
            b.with_bytes(f, |bytes| {
                if bytes.len() >= 6 {
                    bytes[..6].copy_from_slice(&dst_mac);
                }
            });
        }
        let sent = b.tx(1, &burst[..n]);
        for &f in &burst[sent..n] {
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
