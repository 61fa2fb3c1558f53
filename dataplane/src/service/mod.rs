//! The Service table: frontends (ClusterIP:port/protocol) to the backends
//! that serve them, with a Maglev table per Service port and family.
//!
//! Immutable once built: the control plane builds a new table and swaps it
//! in; workers read a snapshot and never wait.

pub mod maglev;
pub mod spec;

use hashbrown::HashMap;

use crate::flow::{Addr, Family, FlowKey, Proto};
use crate::hash::{flow_hash, SELECT_SEED};
pub use spec::{Conditions, EndpointPort, EndpointSpec, PortSpec, ServiceSpec, TargetPort};

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
        Frontend { addr: key.dst, port: key.dport, proto: key.proto }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backend {
    pub addr: Addr,
    pub port: u16,
    pub conditions: Conditions,
}

/// One Service port in one family: what a frontend leads to.
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
    maglev: Box<[u16]>,
}

impl ServicePort {
    /// The backend for a new flow.
    #[inline]
    pub fn select(&self, key: &FlowKey) -> Option<&Backend> {
        if self.maglev.is_empty() {
            return None;
        }
        let h = flow_hash(key, SELECT_SEED);
        let slot = self.maglev[(h % self.maglev.len() as u64) as usize];
        self.eligible.get(usize::from(slot))
    }
    pub fn maglev_len(&self) -> usize {
        self.maglev.len()
    }
}

/// A problem with the specs given to `build`; the offending part is left
/// out and the rest of the table is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildProblem {
    /// Two Services claim the same frontend; the first keeps it.
    DuplicateFrontend { service: String, frontend: String, owner: String },
    /// A Service port that no endpoint could resolve a target port for.
    UnresolvedTargetPort { service: String, port: String },
}

impl std::fmt::Display for BuildProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildProblem::DuplicateFrontend { service, frontend, owner } => {
                write!(f, "Service {service}: frontend {frontend} already belongs to {owner}; ignored")
            }
            BuildProblem::UnresolvedTargetPort { service, port } => {
                write!(f, "Service {service}: port {port} has a named targetPort that no endpoint resolves")
            }
        }
    }
}

#[derive(Default)]
pub struct ServiceTable {
    frontends: HashMap<Frontend, u32>,
    ports: Vec<ServicePort>,
}

impl ServiceTable {
    /// Builds the table from validated specs.
    pub fn build(specs: &[ServiceSpec]) -> (ServiceTable, Vec<BuildProblem>) {
        let mut t = ServiceTable::default();
        let mut problems = Vec::new();
        for s in specs {
            t.add(s, &mut problems);
        }
        (t, problems)
    }

    fn add(&mut self, s: &ServiceSpec, problems: &mut Vec<BuildProblem>) {
        let svc = format!("{}/{}", s.namespace, s.name);
        for p in &s.ports {
            let mut resolved_any = false;
            for &vip in &s.cluster_ips {
                let family = if vip.is_v4() { Family::V4 } else { Family::V6 };
                let frontend = Frontend { addr: vip, port: p.port, proto: p.proto };
                let endpoints: Vec<Backend> = s
                    .endpoints
                    .iter()
                    .filter(|e| (e.addr.is_v4()) == (family == Family::V4))
                    .filter_map(|e| {
                        e.port_for(p).map(|port| Backend { addr: e.addr, port, conditions: e.conditions })
                    })
                    .collect();
                resolved_any |= !endpoints.is_empty();
                let name = if p.name.is_empty() { format!("{svc}:{}", p.port) } else { format!("{svc}:{}", p.name) };
                if let Some(&owner) = self.frontends.get(&frontend) {
                    problems.push(BuildProblem::DuplicateFrontend {
                        service: svc.clone(),
                        frontend: format!("{}:{}/{}", vip, p.port, p.proto.k8s_name()),
                        owner: self.ports[owner as usize].name.clone(),
                    });
                    continue;
                }
                let id = self.ports.len() as u32;
                self.ports.push(ServicePort::new(name, frontend, endpoints));
                self.frontends.insert(frontend, id);
            }
            if !resolved_any && matches!(p.target, TargetPort::Name(_)) && !s.endpoints.is_empty() {
                problems.push(BuildProblem::UnresolvedTargetPort { service: svc.clone(), port: p.name.clone() });
            }
        }
    }

    /// The Service port a packet's destination is a frontend of.
    #[inline]
    pub fn lookup(&self, key: &FlowKey) -> Option<u32> {
        if self.frontends.is_empty() {
            return None;
        }
        self.frontends.get(&Frontend::of(key)).copied()
    }

    pub fn port(&self, id: u32) -> Option<&ServicePort> {
        self.ports.get(id as usize)
    }

    pub fn ports(&self) -> &[ServicePort] {
        &self.ports
    }

    pub fn len(&self) -> usize {
        self.ports.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }
}

impl ServicePort {
    fn new(name: String, frontend: Frontend, endpoints: Vec<Backend>) -> ServicePort {
        let ready: Vec<Backend> = endpoints.iter().copied().filter(|b| b.conditions.ready).collect();
        let mut eligible = if ready.is_empty() {
            endpoints.iter().copied().filter(|b| b.conditions.serving && b.conditions.terminating).collect()
        } else {
            ready
        };
        // One backend per address:port even if two slices list it.
        eligible.sort_by_key(|b| (b.addr, b.port));
        eligible.dedup_by_key(|b| (b.addr, b.port));
        let ids: Vec<Vec<u8>> = eligible.iter().map(|b| format!("{}:{}", b.addr, b.port).into_bytes()).collect();
        let refs: Vec<&[u8]> = ids.iter().map(|v| v.as_slice()).collect();
        let maglev = maglev::build(&refs);
        ServicePort { name, frontend, endpoints, eligible, maglev }
    }
}

#[cfg(test)]
mod tests;
