//! The benchmark's world: a Service table of `n` Services and a conntrack
//! preloaded with live established flows, as on a busy node.

use std::net::{IpAddr, Ipv4Addr};

use sluice_dataplane::conntrack::{Conntrack, FlowState, Timeouts};
use sluice_dataplane::pipeline::{decide, Action, Core, Ingress, Tables, BURST};
use sluice_dataplane::route::Routes;
use sluice_dataplane::service::{Affinity, ServiceTable};
use sluice_dataplane::wire::tcp;
use sluice_dataplane::{Addr, Family, FlowKey, Proto};

use crate::craft::{self, Spec, L4};
use sluice_fixtures::{bench_frontend, many_services};

pub struct World {
    pub services: ServiceTable,
    pub conntrack: Conntrack,
    /// No pods, no host addresses: every backend is reached by the
    /// uplink, as a node's that forwards to other nodes.
    pub routes: Routes,
    pub n_services: usize,
}

/// Runs `frames` through the burst function in bursts of `BURST`, as a
/// worker runs what one port received from the uplink; returns how many
/// it would transmit.
pub fn decide_all(frames: &mut [Vec<u8>], t: &Tables<'_>, core: &mut Core) -> usize {
    let mut actions = [Action::ToHost; BURST];
    let mut sent = 0;
    for chunk in frames.chunks_mut(BURST) {
        let mut refs: [&mut [u8]; BURST] = Default::default();
        let n = chunk.len();
        for (r, f) in refs.iter_mut().zip(chunk.iter_mut()) {
            *r = f.as_mut_slice();
        }
        decide(&mut refs[..n], Ingress::Uplink, t, core, &mut actions[..n]);
        sent += actions[..n]
            .iter()
            .filter(|a| matches!(a, Action::Transmit(_)))
            .count();
    }
    sent
}

/// Client `i`'s address and port: 198.18.1.0 - 198.18.1.255 and up through
/// node 1's share of the underlay range, 65,000 ports each.
pub fn client(i: usize) -> (Addr, u16) {
    let host = (i / 64_000) as u32;
    let a = u32::from_be_bytes([198, 18, 1, 0]) + host;
    (Addr::from_v4(a.to_be_bytes()), 1024 + (i % 64_000) as u16)
}

impl World {
    pub fn tables(&self) -> Tables<'_> {
        Tables::new(&self.services, &self.conntrack, &self.routes)
    }

    /// `n_services` Services and `flows` established flows spread over
    /// them, in a conntrack with room for `flows + headroom`.
    pub fn new(n_services: usize, flows: usize, headroom: usize) -> World {
        Self::with_affinity(n_services, flows, headroom, Affinity::None)
    }

    /// `new`, every Service with `affinity`.
    pub fn with_affinity(
        n_services: usize,
        flows: usize,
        headroom: usize,
        affinity: Affinity,
    ) -> World {
        let mut specs = many_services(n_services);
        for s in &mut specs {
            s.affinity = affinity;
        }
        let (services, problems) = ServiceTable::build(&specs);
        assert!(problems.is_empty(), "{problems:?}");
        // A fixed seed: the same probe sequences every run, so that instruction
        // counts (callgrind) repeat exactly.
        let conntrack = Conntrack::with_seed(flows + headroom, Timeouts::default(), 0x5eed);
        for i in 0..flows {
            let k = Self::flow_key(i, n_services);
            let f = services.find(&k).expect("frontend");
            let b = services.select(f.id, &k).unwrap();
            let to = FlowKey {
                dst: b.addr,
                dport: b.port,
                ..k
            };
            // Stamped with the Service port's epoch, as the pipeline's
            // inserts are: no first packet goes the way of a changed
            // Service.
            let hashes = (conntrack.hash(&k), conntrack.hash(&to.reversed()));
            conntrack
                .insert_hashed(
                    k,
                    to,
                    hashes,
                    (f.id, f.epoch),
                    FlowState::Established,
                    0,
                    0,
                    false,
                    None,
                )
                .expect("preload");
        }
        World {
            routes: Routes::default(),
            services,
            conntrack,
            n_services,
        }
    }

    /// Flow `i`: client `i` to Service `i % n`.
    pub fn flow_key(i: usize, n_services: usize) -> FlowKey {
        let (src, sport) = client(i);
        let (dst, dport) = bench_frontend(i % n_services);
        FlowKey {
            src,
            dst,
            sport,
            dport,
            proto: Proto::Tcp,
            family: Family::V4,
        }
    }

    /// The 64-byte-class frame a client sends on flow `key`.
    pub fn frame(key: &FlowKey, flags: u8) -> Vec<u8> {
        let v4 = |a: Addr| IpAddr::V4(Ipv4Addr::from(a.v4_octets()));
        craft::build(&Spec {
            src: v4(key.src),
            dst: v4(key.dst),
            sport: key.sport,
            dport: key.dport,
            l4: L4::Tcp(flags),
            payload: &[0u8; 6],
        })
        .expect("frame")
    }

    pub fn established_frame(&self, i: usize) -> Vec<u8> {
        Self::frame(&Self::flow_key(i, self.n_services), tcp::ACK)
    }
}
