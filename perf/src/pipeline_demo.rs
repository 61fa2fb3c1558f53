//! `sluice-perf pipeline-demo`: the pipeline on generated traffic, with no
//! network at all (the lab demo, `sluice lab demo`, is the real one). Client pods open TCP connections and send UDP queries to the
//! ClusterIPs of `shop/web` (IPv4 and IPv6); the demo plays each backend's
//! kernel (it answers whatever the pipeline delivered to it) and checks that
//! every client sees the VIP answer. Forward packets and replies run on two
//! worker threads that share one conntrack, as RSS would spread them. Then a
//! backend is removed, as an EndpointSlice update would, and the demo shows
//! that new flows avoid it while established ones keep their backend.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Instant;

use crate::craft::{self, Spec, L4};
use sluice_dataplane::conntrack::{Conntrack, FlowState, Timeouts};
use sluice_dataplane::decode::{decode, Decoded};
use sluice_dataplane::hash::flow_hash;
use sluice_dataplane::neighbor::Gateway;
use sluice_dataplane::pipeline::{decide_one, Action, Core, Ingress, Tables};
use sluice_dataplane::route::Routes;
use sluice_dataplane::service::{ServiceSpec, ServiceTable};
use sluice_dataplane::wire::tcp::{ACK, FIN, PSH, SYN};
use sluice_dataplane::{Addr, Family, FlowKey};
use sluice_fixtures::{web_service, CLIENT_V4, CLIENT_V6, VIP_V4, VIP_V6};

#[derive(clap::Args)]
pub struct Options {
    /// TCP connections to open in each phase.
    #[arg(long, default_value_t = 1024)]
    connections: usize,
    /// UDP request/response exchanges in the first phase.
    #[arg(long, default_value_t = 256)]
    udp: usize,
    /// Conntrack capacity (flows).
    #[arg(long, default_value_t = 65_536)]
    conntrack_capacity: usize,
}

#[derive(Debug)]
pub enum DemoError {
    /// A Service fixture did not build cleanly.
    Table(String),
    /// A client saw something other than the VIP answering.
    WrongView { flow: String, saw: String },
    /// A packet the demo expected through was dropped.
    Dropped { flow: String, verdict: Action },
}

impl fmt::Display for DemoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DemoError::Table(p) => write!(f, "service table: {p}"),
            DemoError::WrongView { flow, saw } => write!(f, "flow {flow}: the client saw {saw}"),
            DemoError::Dropped { flow, verdict } => write!(f, "flow {flow}: {verdict:?}"),
        }
    }
}

/// The tuple of a frame, read with the dataplane's own decoder.
fn tuple(frame: &[u8]) -> Option<FlowKey> {
    match decode(frame) {
        Ok(Decoded::Ip(p)) => p.key(),
        _ => None,
    }
}

fn ip(a: Addr, f: Family) -> IpAddr {
    a.to_ip(f)
}

/// Two workers, each with its own counters; packets are given to one by a
/// hash of their 5-tuple, as RSS does, so a reply usually lands on the other.
struct Workers {
    w: [Core; 2],
}

/// The demo is the TX ring: a frame to transmit is handed to the backend's
/// kernel, and counted as forwarded then, as a worker counts it.
fn deliver(a: Action, core: &mut Core) -> Action {
    if let Action::Transmit(_) = a {
        core.counters.forwarded += 1;
    }
    a
}

impl Workers {
    fn run(&mut self, tables: &Tables<'_>, frames: &mut [Vec<u8>]) -> Vec<Action> {
        let now = tables.conntrack.now_ms();
        let queue: Vec<usize> = frames
            .iter()
            .map(|f| tuple(f).map_or(0, |k| (flow_hash(&k, 7) & 1) as usize))
            .collect();
        let mut verdicts = vec![Action::ToHost; frames.len()];
        let [w0, w1] = &mut self.w;
        std::thread::scope(|s| {
            let mut parts: [Vec<(usize, &mut Vec<u8>)>; 2] = [Vec::new(), Vec::new()];
            for (i, f) in frames.iter_mut().enumerate() {
                parts[queue[i]].push((i, f));
            }
            let [p0, p1] = parts;
            let h0 = s.spawn(move || {
                w0.now_ms = now;
                p0.into_iter()
                    .map(|(i, f)| (i, deliver(decide_one(f, Ingress::Uplink, tables, w0), w0)))
                    .collect::<Vec<_>>()
            });
            let h1 = s.spawn(move || {
                w1.now_ms = now;
                p1.into_iter()
                    .map(|(i, f)| (i, deliver(decide_one(f, Ingress::Uplink, tables, w1), w1)))
                    .collect::<Vec<_>>()
            });
            for (i, v) in h0
                .join()
                .expect("worker 0")
                .into_iter()
                .chain(h1.join().expect("worker 1"))
            {
                verdicts[i] = v;
            }
        });
        verdicts
    }
}

/// One client connection or exchange and what the pipeline did with it.
#[derive(Clone, Copy)]
struct Conn {
    family: Family,
    client: (Addr, u16),
    vip: (Addr, u16),
    udp: bool,
    /// Where its first packet was delivered.
    backend: Option<(Addr, u16)>,
}

impl Conn {
    fn name(&self) -> String {
        format!(
            "{} {}:{} -> {}:{}",
            if self.udp { "UDP" } else { "TCP" },
            self.client.0,
            self.client.1,
            self.vip.0,
            self.vip.1
        )
    }
    fn l4(&self, flags: u8) -> L4 {
        if self.udp {
            L4::Udp
        } else {
            L4::Tcp(flags)
        }
    }
    fn from_client(&self, flags: u8, payload: &[u8]) -> Vec<u8> {
        let s = Spec {
            src: ip(self.client.0, self.family),
            dst: ip(self.vip.0, self.family),
            sport: self.client.1,
            dport: self.vip.1,
            l4: self.l4(flags),
            payload,
        };
        craft::build(&s).expect("client frame")
    }
    fn from_backend(&self, flags: u8, payload: &[u8]) -> Vec<u8> {
        let (b, bp) = self.backend.expect("delivered");
        let s = Spec {
            src: ip(b, self.family),
            dst: ip(self.client.0, self.family),
            sport: bp,
            dport: self.client.1,
            l4: self.l4(flags),
            payload,
        };
        craft::build(&s).expect("backend frame")
    }
}

fn clients(n: usize, udp: bool, first_port: u16) -> Vec<Conn> {
    (0..n)
        .map(|i| {
            let v6 = i % 2 == 1;
            let host = (i / 2 % 64) as u8;
            let port = first_port + (i / 128) as u16;
            let (family, client, vip) = if v6 {
                let mut c = CLIENT_V6;
                c[15] = 2 + host;
                (Family::V6, Addr::from_v6(c), Addr::from_v6(VIP_V6))
            } else {
                let mut c = CLIENT_V4;
                c[3] = 2 + host;
                (Family::V4, Addr::from_v4(c), Addr::from_v4(VIP_V4))
            };
            Conn {
                family,
                client: (client, port),
                vip: (vip, if udp { 53 } else { 80 }),
                udp,
                backend: None,
            }
        })
        .collect()
}

/// Sends one packet from each client through the workers and records (first
/// time) or checks (later) the backend it reached.
fn client_step(
    ws: &mut Workers,
    t: &Tables<'_>,
    conns: &mut [Conn],
    flags: u8,
    payload: &[u8],
) -> Result<(), DemoError> {
    let mut frames: Vec<Vec<u8>> = conns
        .iter()
        .map(|c| c.from_client(flags, payload))
        .collect();
    let verdicts = ws.run(t, &mut frames);
    for ((c, f), v) in conns.iter_mut().zip(&frames).zip(verdicts) {
        if !matches!(v, Action::Transmit(_)) {
            return Err(DemoError::Dropped {
                flow: c.name(),
                verdict: v,
            });
        }
        let k = tuple(f).expect("forwarded frame decodes");
        c.backend.get_or_insert((k.dst, k.dport));
    }
    Ok(())
}

/// Each backend answers its client; every client must see the VIP.
fn backend_step(
    ws: &mut Workers,
    t: &Tables<'_>,
    conns: &[Conn],
    flags: u8,
    payload: &[u8],
) -> Result<usize, DemoError> {
    let mut frames: Vec<Vec<u8>> = conns
        .iter()
        .map(|c| c.from_backend(flags, payload))
        .collect();
    let verdicts = ws.run(t, &mut frames);
    let mut ok = 0;
    for ((c, f), v) in conns.iter().zip(&frames).zip(verdicts) {
        if !matches!(v, Action::Transmit(_)) {
            return Err(DemoError::Dropped {
                flow: c.name(),
                verdict: v,
            });
        }
        let k = tuple(f).expect("reply decodes");
        if (k.src, k.sport, k.dst, k.dport) != (c.vip.0, c.vip.1, c.client.0, c.client.1) {
            return Err(DemoError::WrongView {
                flow: c.name(),
                saw: format!("{k}"),
            });
        }
        ok += 1;
    }
    Ok(ok)
}

fn build(specs: &[ServiceSpec]) -> Result<ServiceTable, DemoError> {
    let (t, problems) = ServiceTable::build(specs);
    if let Some(p) = problems.first() {
        return Err(DemoError::Table(p.to_string()));
    }
    Ok(t)
}

fn print_services(t: &ServiceTable) {
    for p in t.ports() {
        let fe = p.frontend;
        let addr = if fe.addr.is_v4() {
            fe.addr.to_string()
        } else {
            format!("[{}]", fe.addr)
        };
        println!(
            "  {:<22} {:<28} {} ready of {} endpoints, Maglev table {} slots",
            p.name,
            format!("{addr}:{}/{}", fe.port, fe.proto.k8s_name()),
            p.eligible.len(),
            p.endpoints.len(),
            p.maglev_len()
        );
    }
}

fn hits<'a>(conns: impl Iterator<Item = &'a Conn>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for c in conns {
        if let Some((a, p)) = c.backend {
            let k = if a.is_v4() {
                format!("{a}:{p}")
            } else {
                format!("[{a}]:{p}")
            };
            *m.entry(k).or_insert(0) += 1;
        }
    }
    m
}

fn print_hits(m: &BTreeMap<String, usize>) {
    let max = m.values().copied().max().unwrap_or(1).max(1);
    for (b, n) in m {
        println!("  {b:<28} {n:>5}  {}", "#".repeat(n * 40 / max));
    }
}

pub fn run(o: &Options) -> Result<(), DemoError> {
    println!(
        "sluice-perf pipeline-demo: the packet pipeline on generated traffic, two workers, one shared conntrack"
    );
    println!("(frames in memory: the AF_XDP lab comes with the I/O backends)\n");
    let mut spec = web_service();
    let services = build(std::slice::from_ref(&spec))?;
    let conntrack = Conntrack::new(o.conntrack_capacity, Timeouts::default());
    println!("Services (from the embedded fixture shop/web):");
    print_services(&services);

    let mut ws = Workers {
        w: [Core::default(), Core::default()],
    };
    // No routes: everything leaves by the uplink, where the demo plays
    // the backends' kernels.
    let routes = Routes::default();
    let t = Tables {
        services: &services,
        conntrack: &conntrack,
        routes: &routes,
        gateway: Gateway::DEFAULT,
    };
    let started = Instant::now();

    // Phase 1: connections open, exchange data; half of them close.
    let mut tcp = clients(o.connections, false, 40_000);
    let mut udp = clients(o.udp, true, 50_000);
    client_step(&mut ws, &t, &mut tcp, SYN, b"")?;
    let mut seen = backend_step(&mut ws, &t, &tcp, SYN | ACK, b"")?;
    client_step(
        &mut ws,
        &t,
        &mut tcp,
        ACK | PSH,
        b"GET / HTTP/1.1\r\nHost: web.shop\r\n\r\n",
    )?;
    seen += backend_step(&mut ws, &t, &tcp, ACK | PSH, b"HTTP/1.1 200 OK\r\n\r\n")?;
    client_step(&mut ws, &t, &mut udp, 0, b"\x12\x34 A? web.shop")?;
    seen += backend_step(&mut ws, &t, &udp, 0, b"\x12\x34 198.19.0.10")?;
    let phase1_hits = hits(tcp.iter().chain(udp.iter()));
    let (closing, open) = tcp.split_at_mut(o.connections / 2);
    client_step(&mut ws, &t, closing, FIN | ACK, b"")?;
    seen += backend_step(&mut ws, &t, closing, FIN | ACK, b"")?;
    client_step(&mut ws, &t, closing, ACK, b"")?;
    println!(
        "\nPhase 1: {} TCP connections (handshake, request, response; {} then closed) and {} UDP exchanges",
        o.connections,
        closing.len(),
        o.udp
    );
    println!("  replies that reached their client from the VIP it dialled: {seen} of {seen}");
    println!("  new flows per backend (TCP and UDP, both families):");
    print_hits(&phase1_hits);

    // Phase 2: backend .3 leaves (an EndpointSlice update). New flows avoid
    // it; established flows stay on their backends.
    let removed = Addr::from_v4([198, 18, 2, 3]);
    spec.endpoints.retain(|e| e.addr != removed);
    let services2 = build(std::slice::from_ref(&spec))?;
    let t2 = Tables {
        services: &services2,
        conntrack: &conntrack,
        routes: &routes,
        gateway: Gateway::DEFAULT,
    };
    let open_before: Vec<_> = open.iter().map(|c| c.backend).collect();
    let on_removed = open_before
        .iter()
        .filter(|b| b.map(|b| b.0) == Some(removed))
        .count();
    let mut kept: Vec<Conn> = open
        .iter()
        .map(|c| Conn {
            backend: None,
            ..*c
        })
        .collect();
    client_step(
        &mut ws,
        &t2,
        &mut kept,
        ACK | PSH,
        b"GET /again HTTP/1.1\r\n\r\n",
    )?;
    let stayed = kept
        .iter()
        .zip(&open_before)
        .filter(|(c, b)| c.backend == **b)
        .count();
    let mut fresh = clients(o.connections, false, 45_000);
    client_step(&mut ws, &t2, &mut fresh, SYN, b"")?;
    backend_step(&mut ws, &t2, &fresh, SYN | ACK, b"")?;
    let fresh_on_removed = fresh
        .iter()
        .filter(|c| c.backend.map(|b| b.0) == Some(removed))
        .count();
    println!(
        "\nPhase 2: backend {removed} removed from shop/web, as an EndpointSlice update would"
    );
    println!("  established connections that kept their backend: {stayed} of {} ({on_removed} of them on {removed}: conntrack keeps them, as kube-proxy's does)", open.len());
    println!(
        "  new connections: {}, sent to {removed}: {fresh_on_removed}",
        fresh.len()
    );
    print_hits(&hits(fresh.iter()));

    // Bad input: each kind dropped and counted, nothing else disturbed.
    let mut bad = Vec::new();
    for (i, c) in tcp
        .iter()
        .filter(|c| c.family == Family::V4)
        .take(40)
        .enumerate()
    {
        let mut f = c.from_client(ACK, b"x");
        match i % 5 {
            0 => f.truncate(30),                           // cut inside the IPv4 header
            1 => f[24] ^= 0x5a,                            // header checksum broken
            2 => f[14] = 0x4f,                             // IHL says 60 bytes
            3 => f[14 + 20 + 12] = 0x20,                   // TCP data offset 8 bytes
            _ => f[16..18].copy_from_slice(&[0x05, 0xdc]), // total length 1500
        }
        bad.push(f);
    }
    let nbad = bad.len();
    let verdicts = ws.run(&t2, &mut bad);
    let dropped = verdicts
        .iter()
        .filter(|v| matches!(v, Action::Drop(_)))
        .count();
    println!("\nMalformed frames: {nbad} sent, {dropped} dropped and counted");

    let elapsed = started.elapsed();
    println!(
        "\nConntrack: {} live flows of {} ({} bytes a flow, allocated at start)",
        conntrack.len(),
        conntrack.capacity(),
        sluice_dataplane::conntrack::BYTES_PER_FLOW
    );
    let flows = conntrack.flows(usize::MAX);
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &flows {
        *by_state.entry(f.life.state.label()).or_default() += 1;
    }
    println!(
        "  by state: {}",
        by_state
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for state in [FlowState::Established, FlowState::Closed, FlowState::New] {
        if let Some(f) = flows
            .iter()
            .find(|f| f.life.state == state && f.original.family == Family::V4)
        {
            let svc = services.port(f.service).map_or("-", |p| p.name.as_str());
            println!(
                "  {}  =>  {}:{}  {}  ({svc})",
                f.original,
                f.translated.dst,
                f.translated.dport,
                state.label()
            );
        }
    }

    let mut total = ws.w[0].counters.clone();
    total.add(&ws.w[1].counters);
    println!("\nCounters (two workers summed):");
    println!(
        "  rx {}  forwarded {}  nat {}  conntrack hits {}  new flows {}  untracked {}  dropped {}",
        total.rx,
        total.forwarded,
        total.nat,
        total.ct_hits,
        total.ct_new,
        total.untracked,
        total.total_drops()
    );
    println!(
        "  per worker: rx {} / {} (replies land on the other worker about half the time)",
        ws.w[0].counters.rx, ws.w[1].counters.rx
    );
    for (label, n) in total.drop_breakdown() {
        println!("  drop {label:<24} {n}");
    }
    println!("\nDone in {:.1} ms (frame crafting and checks included; per-packet cost is in docs/benchmarks.md)", elapsed.as_secs_f64() * 1e3);
    Ok(())
}
