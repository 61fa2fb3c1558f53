//! The worker threads: each pinned to its core, owning one queue of every
//! port (an AF_XDP socket or a TAP queue) and a `dataplane::worker::Worker`
//! over them, loading the tables once per batch of rounds, publishing its
//! counters into its slot, and taking the control side's commands (a port
//! attached or detached) between batches.

use std::sync::atomic::Ordering;
use std::sync::mpsc;

use sluice_dataplane::conntrack::{Conntrack, Timeouts};
use sluice_dataplane::io::tap::{HostTap, TapBackend, TapQueue};
use sluice_dataplane::io::Backend;
use sluice_dataplane::pipeline::Tables;
use sluice_dataplane::route::PortId;
use sluice_dataplane::worker::{PortMap, Worker};

use crate::config::{Config, Io};
use crate::placement::Place;
use crate::ports::{WorkerCommand, WorkerControl};
use crate::state::{LiveSlot, Shared, WorkerReport, DETAIL_EVERY, PUBLISH_EVERY};

/// Keeps the calling thread, and the threads it starts from now on, off
/// `cores` (the workers'): a busy-polling worker that shares its core
/// with another thread loses it for a scheduler slice, milliseconds in
/// which its rings fill. Does nothing when no core would be left.
pub fn keep_off_cores(cores: &[usize]) {
    if cores.is_empty() {
        return;
    }
    let rest: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .filter(|c| !cores.contains(c))
        .collect();
    if rest.is_empty() {
        return;
    }
    // SAFETY: cpu_set_t is plain data; sched_setaffinity reads one.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for c in rest {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The conntrack table, every page faulted in now (not on the packet
/// path), and a line on how it is backed.
pub(crate) fn conntrack_table(capacity: usize) -> Conntrack {
    let t = std::time::Instant::now();
    let ct = Conntrack::new(capacity, Timeouts::default());
    let (bytes, backing) = ct.memory();
    let thp = sluice_dataplane::hugemem::thp_mode();
    eprintln!(
        "sluice: conntrack: {} flows, {} MiB faulted in at start in {:.0} ms ({}); transparent huge pages: {}{}",
        ct.capacity(),
        bytes >> 20,
        t.elapsed().as_secs_f64() * 1e3,
        match backing {
            sluice_dataplane::hugemem::Backing::Mapped => "its own mapping, huge pages asked for",
            sluice_dataplane::hugemem::Backing::Heap => "from the heap: the mapping failed",
        },
        thp.label(),
        if thp.gives_huge_pages() {
            ""
        } else {
            " (4 KiB pages: expect TLB misses on a big table)"
        }
    );
    ct
}

fn pin(core: Option<usize>) -> Result<(), String> {
    if let Some(id) = core {
        if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
            return Err(format!("cannot pin to core {id}"));
        }
    }
    Ok(())
}

pub(crate) fn worker_main(
    place: Place,
    config: &Config,
    shared: &Shared,
    ready: mpsc::Sender<(usize, Result<(), String>)>,
    commands: WorkerControl,
) -> WorkerReport {
    let (w, core) = (place.worker, place.core);
    if let Err(e) = pin(core) {
        let _ = ready.send((w, Err(e)));
        return WorkerReport::default();
    }
    let map = match PortMap::new(
        &(0..config.ports.len())
            .map(|i| (PortId(i as u16), i))
            .collect::<Vec<_>>(),
        None,
        config.ports.len(),
    ) {
        Ok(m) => m,
        Err(e) => {
            let _ = ready.send((w, Err(e.to_string())));
            return WorkerReport::default();
        }
    };
    let host = match &config.host {
        Some(h) => match TapQueue::open(&h.ifname) {
            Ok(q) => Some(HostTap {
                queue: q,
                mac: h.mac,
            }),
            Err(e) => {
                let _ = ready.send((w, Err(format!("the host's TAP: {e}"))));
                return WorkerReport::default();
            }
        },
        None => None,
    };
    match config.io {
        Io::Tap => {
            let mut queues = Vec::new();
            for p in &config.ports {
                let q = match &p.netns {
                    Some(ns) => TapQueue::open_in(ns, &p.ifname),
                    None => TapQueue::open(&p.ifname),
                };
                match q {
                    Ok(q) => queues.push(q),
                    Err(e) => {
                        let _ = ready.send((w, Err(e.to_string())));
                        return WorkerReport::default();
                    }
                }
            }
            let frames = 64 * (queues.len() + 2);
            let backend = TapBackend::new(queues, frames);
            run_worker(
                &mut Worker::new(backend, map),
                host,
                config,
                shared,
                ready,
                w,
                core,
                commands,
            )
        }
        Io::Afxdp => afxdp_worker(place, map, host, config, shared, ready, commands),
    }
}

#[cfg(feature = "afxdp")]
#[allow(clippy::too_many_arguments)]
fn afxdp_worker(
    place: Place,
    map: PortMap,
    host: Option<HostTap>,
    config: &Config,
    shared: &Shared,
    ready: mpsc::Sender<(usize, Result<(), String>)>,
    commands: WorkerControl,
) -> WorkerReport {
    use sluice_dataplane::io::afxdp::{AfXdpBackend, AfXdpConfig};
    let (w, core) = (place.worker, place.core);
    let names: Vec<&str> = config.ports.iter().map(|p| p.ifname.as_str()).collect();
    // A ring of 2048 holds 10 ms at 200,000 frames a second: a worker that
    // loses its core for a few milliseconds (a shared machine, a burst of
    // interrupts) loses no frame on a busy port. The pool is sized for
    // --max-pods ports (FillPlan::for_ports: 47 MiB a worker for 250).
    let cfg = AfXdpConfig {
        ring: 2048,
        queue: place.queue,
        max_ports: config.max_pods as u32,
    };
    // One at a time: libxdp attaches its program with the first socket of
    // an interface and finds it for the next; two first sockets at once
    // would both try to attach.
    static OPENING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let opened = {
        let _one = OPENING.lock().unwrap_or_else(|p| p.into_inner());
        AfXdpBackend::open(&names, cfg, Some(crate::anchor::ANCHOR))
    };
    match opened {
        Ok(b) => {
            eprintln!(
                "sluice: worker {w}: AF_XDP on {} port(s), queue {}, a pool of {} MiB for {} ports: {}",
                names.len(),
                place.queue,
                b.pool_bytes() >> 20,
                config.max_pods,
                if b.shared {
                    "one UMEM shared by the ports (forwarding moves descriptors)"
                } else {
                    "a UMEM per port (forwarding copies frames): sharing one was refused"
                },
            );
            if let Some(why) = &b.refused {
                eprintln!("sluice: worker {w}: {why}");
            }
            if let Some(o) = b.opener() {
                let mut all = commands.openers.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(slot) = all.get_mut(w) {
                    *slot = Some(Box::new(move |ifname: &str| {
                        o.open(ifname)
                            .map(|p| Box::new(p) as Box<dyn std::any::Any + Send>)
                            .map_err(|e| sluice_dataplane::io::PortError::Backend(e.to_string()))
                    }));
                }
            }
            let mut worker = Worker::new(b, map);
            run_worker(&mut worker, host, config, shared, ready, w, core, commands)
        }
        Err(e) => {
            let _ = ready.send((w, Err(e.to_string())));
            WorkerReport::default()
        }
    }
}

#[cfg(not(feature = "afxdp"))]
#[allow(clippy::too_many_arguments)]
fn afxdp_worker(
    place: Place,
    _map: PortMap,
    _host: Option<HostTap>,
    _config: &Config,
    _shared: &Shared,
    ready: mpsc::Sender<(usize, Result<(), String>)>,
    _commands: WorkerControl,
) -> WorkerReport {
    let _ = ready.send((
        place.worker,
        Err(
            "this build has no AF_XDP backend (build with --features afxdp, or use --io tap)"
                .into(),
        ),
    ));
    WorkerReport::default()
}

/// Publishes `worker`'s counters into its live slot, and its backend's
/// state when `detail`. Skipped (never waited for) if a reader holds the
/// slot; copies into the slot's own storage, so it allocates nothing.
fn publish_report<B: Backend>(
    slot: &LiveSlot,
    worker: &Worker<B>,
    core: Option<usize>,
    detail: bool,
) {
    if let Ok(mut r) = slot.0.try_lock() {
        r.core = core;
        r.packets.clone_from(worker.packet_counters());
        r.loop_counters.clone_from(&worker.counters);
        if detail {
            r.backend = worker.backend.stats();
        }
        r.at = Some(std::time::Instant::now());
    }
}

#[allow(clippy::too_many_arguments)]
fn run_worker<B: Backend>(
    worker: &mut Worker<B>,
    host: Option<HostTap>,
    config: &Config,
    shared: &Shared,
    ready: mpsc::Sender<(usize, Result<(), String>)>,
    w: usize,
    core: Option<usize>,
    commands: WorkerControl,
) -> WorkerReport {
    worker.host = host.map(|h| Box::new(h) as Box<dyn sluice_dataplane::io::HostPath>);
    let live = &shared.live[w];
    publish_report(live, worker, core, true);
    let _ = ready.send((w, Ok(())));
    drop(ready);
    let mut empty = 0u32;
    let (mut published, mut detailed) = (std::time::Instant::now(), std::time::Instant::now());
    while !shared.stop.load(Ordering::Relaxed) {
        let snap = shared.snapshot.load();
        let seen = &shared.seen[w].0;
        if seen.load(Ordering::Relaxed) != snap.generation {
            seen.store(snap.generation, Ordering::Release);
        }
        let t = Tables {
            services: &snap.services,
            conntrack: &shared.conntrack,
            routes: &snap.routes,
            gateway: snap.gateway,
        };
        worker.run_rounds(&t, 64, &mut empty, config.idle);
        drop(snap);
        let now = std::time::Instant::now();
        if now - published >= PUBLISH_EVERY {
            let detail = now - detailed >= DETAIL_EVERY;
            publish_report(live, worker, core, detail);
            published = now;
            if detail {
                detailed = now;
            }
        }
        // Between batches, holding no snapshot: a port detached now is
        // one the tables no longer route to.
        while let Ok(c) = commands.rx.try_recv() {
            match c {
                WorkerCommand::Attach {
                    slot,
                    ifname,
                    reply,
                } => {
                    // The worker polls nothing while libxdp opens the
                    // socket: logged, since its other ports wait that long.
                    let t = std::time::Instant::now();
                    let r = worker.attach(slot, &ifname);
                    eprintln!(
                        "sluice: worker {w}: opened {ifname} in {:.1} ms",
                        t.elapsed().as_secs_f64() * 1e3
                    );
                    let _ = reply.send(r);
                }
                WorkerCommand::Install { slot, port, reply } => {
                    let _ = reply.send(worker.install(slot, port));
                }
                WorkerCommand::Detach { slot, reply } => {
                    let _ = reply.send(worker.detach(slot));
                }
            }
            // The pool changed: shown at once, not a second later.
            publish_report(live, worker, core, true);
        }
    }
    publish_report(live, worker, core, true);
    WorkerReport {
        core,
        packets: worker.packet_counters().clone(),
        loop_counters: worker.counters.clone(),
        backend: worker.backend.stats(),
        at: Some(std::time::Instant::now()),
    }
}
