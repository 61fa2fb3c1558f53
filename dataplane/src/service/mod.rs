//! The Service table: frontends (ClusterIP:port/protocol) to the backends
//! that serve them, with a Maglev table per Service port and family.
//!
//! Read-only to the workers: the control plane changes a copy no worker
//! reads (`update.rs`, one Service at a time) and swaps it in; workers
//! read a snapshot and never wait.
//!
//! Laid out for the first packet of a flow, which must find its backend in
//! as few cache misses as possible, and ask for them early: a frontend slot
//! (one cache line, open addressing) holds where its Maglev table and its
//! backends sit in two shared arenas, so a new flow costs three reads
//! (slot, Maglev entry, backend) that a burst can prefetch. The arenas live
//! on huge pages: 100,000 Services' tables are some 200 MB.

pub mod maglev;
pub mod spec;
mod update;

use std::hash::BuildHasherDefault;

use hashbrown::HashMap;

use crate::flow::{Addr, Family, FlowKey, Proto};
use crate::hash::{flow_hash, AddrHasher, SELECT_SEED};
use crate::hugemem::{HugeSlice, ZeroValid};
pub use spec::{
    Affinity, Conditions, EndpointPort, EndpointSpec, PortSpec, ServiceSpec, TargetPort, Topology,
};

/// What a packet must match to be a Service's: destination address, port
/// and protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Frontend {
    pub addr: Addr,
    pub port: u16,
    pub proto: Proto,
}

impl Frontend {
    pub fn of(key: &FlowKey) -> Frontend {
        Frontend {
            addr: key.dst,
            port: key.dport,
            proto: key.proto,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Backend {
    pub addr: Addr,
    pub port: u16,
    pub conditions: Conditions,
}

/// One Service port in one family: what a frontend leads to. For
/// inspection and the control plane; the packet path reads `FrontSlot`s.
#[derive(Debug)]
pub struct ServicePort {
    /// "namespace/name:port" for logs and inspection.
    pub name: String,
    pub frontend: Frontend,
    /// Every endpoint of the family that serves this port.
    pub endpoints: Vec<Backend>,
    /// The ones new flows may go to: the ready endpoints, or when none is
    /// ready, the serving-and-terminating ones (kube-proxy's fallback since
    /// Kubernetes 1.26), so that a rollout's last pod still takes traffic.
    pub eligible: Vec<Backend>,
    maglev_off: u32,
    maglev_len: u32,
    backends_off: u32,
    /// `epoch_of` its frontend and endpoints.
    epoch: u32,
    /// ClientIP affinity's timeout in seconds, 0 for none.
    pub affinity_s: u32,
    /// `internalTrafficPolicy: Local`.
    pub local_only: bool,
}

impl ServicePort {
    /// The endpoint at `addr:port`, with its conditions, if this port has
    /// it (ready or not).
    pub fn endpoint(&self, addr: Addr, port: u16) -> Option<Conditions> {
        self.endpoints
            .iter()
            .find(|b| b.addr == addr && b.port == port)
            .map(|b| b.conditions)
    }

    pub fn maglev_len(&self) -> usize {
        self.maglev_len as usize
    }
}

/// A frontend's slot: the key and where its tables are, in one line.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
pub struct FrontSlot {
    addr: u128,
    port: u16,
    proto: u8,
    /// 0 for an unused slot, else the frontend's family (4 or 6).
    used: u8,
    /// The Service port's id (`ServiceTable::port`).
    pub id: u32,
    /// Its epoch (`ServiceTable::epoch`), for the flows it admits.
    pub epoch: u32,
    /// ClientIP affinity's timeout in seconds, 0 for none.
    pub affinity_s: u32,
    /// `internalTrafficPolicy: Local`: with no endpoint here, traffic is
    /// dropped, not refused.
    pub local_only: bool,
    maglev_off: u32,
    maglev_len: u32,
    backends_off: u32,
}

// SAFETY: plain integers; the all-zero slot is an unused one.
#[allow(unsafe_code)]
unsafe impl ZeroValid for FrontSlot {}

// SAFETY: an integer address, an integer port and three bools: all-zero is
// 0.0.0.0:0 with every condition false, a valid (if useless) value, and
// every backend is written before it is read.
#[allow(unsafe_code)]
unsafe impl ZeroValid for Backend {}

/// A problem with the specs given to `build`; the offending part is left
/// out and the rest of the table is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildProblem {
    /// Two Services claim the same frontend; the first keeps it.
    DuplicateFrontend {
        service: String,
        frontend: String,
        owner: String,
    },
    /// A Service port that no endpoint could resolve a target port for.
    UnresolvedTargetPort { service: String, port: String },
}

impl std::fmt::Display for BuildProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildProblem::DuplicateFrontend {
                service,
                frontend,
                owner,
            } => {
                write!(
                    f,
                    "Service {service}: frontend {frontend} already belongs to {owner}; ignored"
                )
            }
            BuildProblem::UnresolvedTargetPort { service, port } => {
                write!(f, "Service {service}: port {port} has a named targetPort that no endpoint resolves")
            }
        }
    }
}

const FRONT_SEED: u64 = 0xf407_7e4d_0000_0001;

/// The epoch of a port id no Service port has: no flow's stamp equals it
/// (a flow keeps 24 bits).
const NO_EPOCH: u32 = u32::MAX;

/// A Service port's epoch: 24 bits of a hash of its frontend and of every
/// endpoint with its conditions, in address order. Any change that could
/// leave a flow without its backend (an endpoint gone, or no longer
/// serving) changes it; so does any other change to the endpoints, which
/// costs a flow one check of its backend. It depends on the content only,
/// so both copies of the tables and a rebuild agree on it.
fn epoch_of(frontend: &Frontend, endpoints: &[Backend]) -> u32 {
    use std::hash::{Hash, Hasher};
    let mut sorted: Vec<&Backend> = endpoints.iter().collect();
    sorted.sort_by_key(|b| (b.addr, b.port));
    let mut h = std::collections::hash_map::DefaultHasher::new();
    frontend.hash(&mut h);
    sorted.hash(&mut h);
    (h.finish() & ((1 << 24) - 1)) as u32
}

#[inline]
fn front_hash(addr: Addr, port: u16, proto: Proto) -> u64 {
    // Frontends are chosen by the control plane, not by clients, so a
    // multiply-shift mix is enough (no seed against flooding needed).
    let x = (addr.0 as u64)
        ^ ((addr.0 >> 64) as u64).rotate_left(17)
        ^ (u64::from(port) << 48)
        ^ (u64::from(proto.number()) << 40);
    let h = (x ^ FRONT_SEED).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^ (h >> 29)
}

pub struct ServiceTable {
    slots: HugeSlice<FrontSlot>,
    mask: usize,
    maglev: HugeSlice<u16>,
    backends: HugeSlice<Backend>,
    ports: Vec<ServicePort>,
    /// Each port id's epoch (`NO_EPOCH` for an id no port has now): what
    /// an established flow's stamp is checked against.
    epochs: Vec<u32>,
    /// Every ClusterIP, with how many Service ports it fronts: a packet to
    /// one on a port no Service serves is refused, not routed on.
    vips: HashMap<Addr, u32, BuildHasherDefault<AddrHasher>>,
    /// What incremental updates (`update.rs`) need: each Service's port
    /// ids, each frontend's owner, the ids and arena regions free for
    /// reuse, and where each arena's unused tail starts.
    by_service: HashMap<(String, String), Vec<u32>>,
    owners: HashMap<Frontend, u32>,
    free_ids: Vec<u32>,
    maglev_top: usize,
    maglev_free: HashMap<u32, Vec<u32>>,
    backends_top: usize,
    backends_free: HashMap<u32, Vec<u32>>,
}

/// The backend arena's region for `n` eligible backends: a power of two,
/// so that a freed region fits the next Service port of its class.
fn backend_class(n: usize) -> usize {
    n.next_power_of_two().max(1)
}

impl Default for ServiceTable {
    fn default() -> Self {
        ServiceTable::build(&[]).0
    }
}

/// A Service port before the arenas exist.
struct Draft {
    service: (String, String),
    name: String,
    frontend: Frontend,
    endpoints: Vec<Backend>,
    eligible: Vec<Backend>,
    maglev: Box<[u16]>,
    affinity_s: u32,
    local_only: bool,
}

/// The endpoints a Service port's traffic from this node may go to, as
/// kube-proxy reads topology (pkg/proxy/topology.go): when every ready
/// endpoint carries node hints and one names this node, those named so
/// (trafficDistribution: PreferSameNode); else when every ready endpoint
/// carries zone hints and one names this node's zone, those (PreferClose,
/// PreferSameZone, topology-aware hints); else all of them. Missing or
/// partial hints, or a node without a zone, fall back to all.
fn by_topology(placed: &[(Backend, Topology)]) -> Vec<Backend> {
    let ready: Vec<&Topology> = placed
        .iter()
        .filter(|(b, _)| b.conditions.ready)
        .map(|(_, t)| t)
        .collect();
    let usable = |hint: fn(&Topology) -> Option<bool>| {
        !ready.is_empty()
            && ready.iter().all(|t| hint(t).is_some())
            && ready.iter().any(|t| hint(t) == Some(true))
    };
    let pick = |hint: fn(&Topology) -> Option<bool>| {
        placed
            .iter()
            .filter(|(_, t)| hint(t) == Some(true))
            .map(|(b, _)| *b)
            .collect()
    };
    if usable(|t| t.node_hint) {
        pick(|t| t.node_hint)
    } else if usable(|t| t.zone_hint) {
        pick(|t| t.zone_hint)
    } else {
        placed.iter().map(|(b, _)| *b).collect()
    }
}

impl ServiceTable {
    /// Builds the table from validated specs.
    pub fn build(specs: &[ServiceSpec]) -> (ServiceTable, Vec<BuildProblem>) {
        Self::build_with_room(specs, 0)
    }

    /// Builds the table with room for `extra` more Service ports than the
    /// specs have, so that incremental updates can add them in place.
    pub fn build_with_room(
        specs: &[ServiceSpec],
        extra: usize,
    ) -> (ServiceTable, Vec<BuildProblem>) {
        let mut problems = Vec::new();
        let mut owners: HashMap<Frontend, usize> = HashMap::new();
        let mut drafts: Vec<Draft> = Vec::new();
        for s in specs {
            draft(s, &mut owners, &mut drafts, &mut problems);
        }
        let want = drafts.len() + extra;
        let slots_len = (want * 2).next_power_of_two().max(64);
        let mut slots: HugeSlice<FrontSlot> = HugeSlice::zeroed(slots_len);
        // Room in the arenas in proportion: the average port's share each.
        let maglev_used: usize = drafts.iter().map(|d| d.maglev.len()).sum();
        let backends_used: usize = drafts.iter().map(|d| backend_class(d.eligible.len())).sum();
        let per = |used: usize, floor: usize| {
            if drafts.is_empty() {
                floor
            } else {
                used.div_ceil(drafts.len()).max(floor)
            }
        };
        let maglev_room = maglev_used + extra * per(maglev_used, maglev::SIZE_CLASSES[0]);
        let backends_room = backends_used + extra * per(backends_used, 4);
        let mut maglev: HugeSlice<u16> = HugeSlice::zeroed(maglev_room.max(1));
        let mut backends: HugeSlice<Backend> = HugeSlice::zeroed(backends_room.max(1));
        let mut by_service: HashMap<(String, String), Vec<u32>> = HashMap::new();
        let mut owner_ids: HashMap<Frontend, u32> = HashMap::new();
        let mut boff = 0usize;
        let mut ports = Vec::with_capacity(drafts.len());
        let mask = slots_len - 1;
        let mut moff = 0usize;
        let mut vips: HashMap<Addr, u32, BuildHasherDefault<AddrHasher>> = HashMap::default();
        let mut epochs = Vec::with_capacity(drafts.len());
        for (id, d) in drafts.into_iter().enumerate() {
            *vips.entry(d.frontend.addr).or_default() += 1;
            let epoch = epoch_of(&d.frontend, &d.endpoints);
            epochs.push(epoch);
            maglev[moff..moff + d.maglev.len()].copy_from_slice(&d.maglev);
            by_service.entry(d.service).or_default().push(id as u32);
            owner_ids.insert(d.frontend, id as u32);
            let p = ServicePort {
                name: d.name,
                frontend: d.frontend,
                endpoints: d.endpoints,
                maglev_off: moff as u32,
                maglev_len: d.maglev.len() as u32,
                backends_off: boff as u32,
                eligible: d.eligible,
                epoch,
                affinity_s: d.affinity_s,
                local_only: d.local_only,
            };
            backends[boff..boff + p.eligible.len()].copy_from_slice(&p.eligible);
            boff += backend_class(p.eligible.len());
            moff += d.maglev.len();
            place(&mut slots, mask, &p, id as u32);
            ports.push(p);
        }
        (
            ServiceTable {
                slots,
                mask,
                maglev,
                backends,
                ports,
                epochs,
                vips,
                by_service,
                owners: owner_ids,
                free_ids: Vec::new(),
                maglev_top: moff,
                maglev_free: HashMap::new(),
                backends_top: boff,
                backends_free: HashMap::new(),
            },
            problems,
        )
    }

    /// Asks for the frontend slot a new flow's packet will read.
    #[inline]
    pub fn prefetch(&self, key: &FlowKey) {
        let pos = front_hash(key.dst, key.dport, key.proto) as usize & self.mask;
        crate::prefetch::read(&self.slots[pos]);
    }

    /// The frontend slot a packet's destination matches.
    #[inline]
    pub fn find(&self, key: &FlowKey) -> Option<&FrontSlot> {
        let mut pos = front_hash(key.dst, key.dport, key.proto) as usize & self.mask;
        loop {
            let s = &self.slots[pos];
            if s.used == 0 {
                return None;
            }
            if s.addr == key.dst.0
                && s.port == key.dport
                && s.proto == key.proto.number()
                && s.used == key.family as u8
            {
                return Some(s);
            }
            pos = (pos + 1) & self.mask;
        }
    }

    /// Whether a flow stamped with Service port `service` at `epoch` may
    /// go on unchecked: the port's endpoints are as they were when the
    /// flow last checked its backend (flows of no Service always may).
    #[inline]
    pub fn current(&self, service: u32, epoch: u32) -> bool {
        service == u32::MAX || self.epochs.get(service as usize) == Some(&epoch)
    }

    /// Whether `a` is a ClusterIP of a Service in the table.
    #[inline]
    pub fn is_cluster_ip(&self, a: Addr) -> bool {
        self.vips.contains_key(&a)
    }

    /// Where in the Maglev arena a new flow's slot is (`None` without
    /// backends); read it with `backend_at`.
    #[inline]
    pub fn maglev_index(&self, f: &FrontSlot, key: &FlowKey) -> Option<usize> {
        if f.maglev_len == 0 {
            return None;
        }
        let h = flow_hash(key, SELECT_SEED);
        Some(f.maglev_off as usize + (h % u64::from(f.maglev_len)) as usize)
    }

    #[inline]
    pub fn prefetch_maglev(&self, at: usize) {
        if let Some(m) = self.maglev.get(at) {
            crate::prefetch::read(m);
        }
    }

    /// Asks for the backend that Maglev slot `at` names (the slot itself
    /// has been read into cache by now).
    #[inline]
    pub fn prefetch_backend(&self, f_backends_off: u32, at: usize) {
        if let Some(&i) = self.maglev.get(at) {
            if let Some(b) = self.backends.get(f_backends_off as usize + usize::from(i)) {
                crate::prefetch::read(b);
            }
        }
    }

    /// The backend that Maglev slot `at` of frontend `f` names.
    #[inline]
    pub fn backend_at(&self, f_backends_off: u32, at: usize) -> Option<&Backend> {
        let i = *self.maglev.get(at)? as usize;
        self.backends.get(f_backends_off as usize + i)
    }

    /// The Service port a packet's destination is a frontend of.
    #[inline]
    pub fn lookup(&self, key: &FlowKey) -> Option<u32> {
        self.find(key).map(|s| s.id)
    }

    /// The backend for a new flow of Service port `id` (inspection and
    /// tests; the pipeline goes through `find` and `maglev_index`).
    pub fn select(&self, id: u32, key: &FlowKey) -> Option<&Backend> {
        let p = self.ports.get(id as usize)?;
        if p.maglev_len == 0 {
            return None;
        }
        let h = flow_hash(key, SELECT_SEED);
        self.backend_at(
            p.backends_off,
            p.maglev_off as usize + (h % u64::from(p.maglev_len)) as usize,
        )
    }

    pub fn port(&self, id: u32) -> Option<&ServicePort> {
        self.ports.get(id as usize)
    }

    pub fn ports(&self) -> &[ServicePort] {
        &self.ports
    }

    /// Service ports in the table (frontends, one per port and family).
    pub fn len(&self) -> usize {
        self.ports.len() - self.free_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Puts Service port `p`'s slot (id `id`) at the first free place of its
/// probe sequence.
fn place(slots: &mut [FrontSlot], mask: usize, p: &ServicePort, id: u32) {
    let fe = p.frontend;
    let mut pos = front_hash(fe.addr, fe.port, fe.proto) as usize & mask;
    while slots[pos].used != 0 {
        pos = (pos + 1) & mask;
    }
    slots[pos] = FrontSlot {
        addr: fe.addr.0,
        port: fe.port,
        proto: fe.proto.number(),
        used: if fe.addr.is_v4() {
            Family::V4 as u8
        } else {
            Family::V6 as u8
        },
        id,
        epoch: p.epoch,
        affinity_s: p.affinity_s,
        local_only: p.local_only,
        maglev_off: p.maglev_off,
        maglev_len: p.maglev_len,
        backends_off: p.backends_off,
    };
}

impl FrontSlot {
    pub fn backends_off(&self) -> u32 {
        self.backends_off
    }
}

fn draft(
    s: &ServiceSpec,
    owners: &mut HashMap<Frontend, usize>,
    drafts: &mut Vec<Draft>,
    problems: &mut Vec<BuildProblem>,
) {
    let svc = format!("{}/{}", s.namespace, s.name);
    for p in &s.ports {
        let mut resolved_any = false;
        for &vip in &s.cluster_ips {
            let family = if vip.is_v4() { Family::V4 } else { Family::V6 };
            let frontend = Frontend {
                addr: vip,
                port: p.port,
                proto: p.proto,
            };
            let placed: Vec<(Backend, Topology)> = s
                .endpoints
                .iter()
                .filter(|e| e.addr.is_v4() == (family == Family::V4))
                .filter_map(|e| {
                    e.port_for(p).map(|port| {
                        let b = Backend {
                            addr: e.addr,
                            port,
                            conditions: e.conditions,
                        };
                        (b, e.topology)
                    })
                })
                .collect();
            let endpoints: Vec<Backend> = placed.iter().map(|(b, _)| *b).collect();
            resolved_any |= !endpoints.is_empty();
            let name = if p.name.is_empty() {
                format!("{svc}:{}", p.port)
            } else {
                format!("{svc}:{}", p.name)
            };
            if let Some(&owner) = owners.get(&frontend) {
                problems.push(BuildProblem::DuplicateFrontend {
                    service: svc.clone(),
                    frontend: format!("{}:{}/{}", vip, p.port, p.proto.k8s_name()),
                    owner: drafts[owner].name.clone(),
                });
                continue;
            }
            owners.insert(frontend, drafts.len());
            let pool = if s.internal_local {
                placed
                    .iter()
                    .filter(|(_, t)| t.local)
                    .map(|(b, _)| *b)
                    .collect()
            } else {
                by_topology(&placed)
            };
            let ready: Vec<Backend> = pool
                .iter()
                .copied()
                .filter(|b| b.conditions.ready)
                .collect();
            let mut eligible = if ready.is_empty() {
                pool.iter()
                    .copied()
                    .filter(|b| b.conditions.serving && b.conditions.terminating)
                    .collect()
            } else {
                ready
            };
            // One backend per address:port even if two slices list it.
            eligible.sort_by_key(|b| (b.addr, b.port));
            eligible.dedup_by_key(|b| (b.addr, b.port));
            let ids: Vec<Vec<u8>> = eligible
                .iter()
                .map(|b| format!("{}:{}", b.addr, b.port).into_bytes())
                .collect();
            let refs: Vec<&[u8]> = ids.iter().map(|v| v.as_slice()).collect();
            let maglev = maglev::build(&refs);
            drafts.push(Draft {
                service: (s.namespace.clone(), s.name.clone()),
                name,
                frontend,
                endpoints,
                eligible,
                maglev,
                affinity_s: s.affinity.timeout_s(),
                local_only: s.internal_local,
            });
        }
        if !resolved_any && matches!(p.target, TargetPort::Name(_)) && !s.endpoints.is_empty() {
            problems.push(BuildProblem::UnresolvedTargetPort {
                service: svc.clone(),
                port: p.name.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests;
