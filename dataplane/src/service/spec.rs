//! The validated shape in which the control plane hands Services to the
//! dataplane: Kubernetes' Service and EndpointSlice, reduced to what the
//! packet path needs, with names kept for inspection and logs.

use crate::flow::{Addr, Proto};

/// One Service, all of its ports, and its endpoints merged from every
/// EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    pub namespace: String,
    pub name: String,
    /// `spec.clusterIPs`: one per family on a dual-stack Service.
    pub cluster_ips: Vec<Addr>,
    pub ports: Vec<PortSpec>,
    pub endpoints: Vec<EndpointSpec>,
    pub affinity: Affinity,
    /// `internalTrafficPolicy: Local`: only this node's endpoints, and
    /// traffic dropped (not refused) when it has none.
    pub internal_local: bool,
}

/// `spec.sessionAffinity`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Affinity {
    /// Every connection picks its backend.
    #[default]
    None,
    /// Every new connection from a client address goes to the backend its
    /// last one went to, if that was within `timeout_s` seconds
    /// (`sessionAffinityConfig.clientIP.timeoutSeconds`, 1 to 86,400,
    /// 10,800 by default).
    ClientIp { timeout_s: u32 },
}

impl Affinity {
    /// Kubernetes's default and largest `timeoutSeconds`.
    pub const DEFAULT_TIMEOUT_S: u32 = 10_800;
    pub const MAX_TIMEOUT_S: u32 = 86_400;

    /// The timeout in seconds, 0 for none.
    pub fn timeout_s(self) -> u32 {
        match self {
            Affinity::None => 0,
            Affinity::ClientIp { timeout_s } => timeout_s,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpec {
    /// `ports[].name`; may be empty for a single-port Service.
    pub name: String,
    pub port: u16,
    pub proto: Proto,
    pub target: TargetPort,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetPort {
    Number(u16),
    /// A container port name; each endpoint resolves it to its own number.
    Name(String),
}

/// An endpoint's conditions (discovery.k8s.io/v1). An unset `ready` or
/// `serving` counts as true, as the API documents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conditions {
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

impl Conditions {
    pub const READY: Conditions = Conditions {
        ready: true,
        serving: true,
        terminating: false,
    };
    pub const TERMINATING: Conditions = Conditions {
        ready: false,
        serving: true,
        terminating: true,
    };
    pub const NOT_READY: Conditions = Conditions {
        ready: false,
        serving: false,
        terminating: false,
    };
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSpec {
    pub addr: Addr,
    pub conditions: Conditions,
    /// Where the endpoint is, as this node sees it.
    pub topology: Topology,
    /// The EndpointSlice's ports, named as the Service's ports and carrying
    /// the number each target port resolved to for this endpoint. Empty
    /// when the endpoint was written by hand without ports: numeric target
    /// ports then apply as they are.
    pub ports: Vec<EndpointPort>,
}

/// An endpoint's place relative to this node: on it or not, and what its
/// EndpointSlice hints say (`None`: no hint of that kind; `Some(true)`:
/// the hints name this node's zone, or this node).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Topology {
    pub local: bool,
    pub zone_hint: Option<bool>,
    pub node_hint: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointPort {
    pub name: String,
    pub port: u16,
    pub proto: Proto,
}

impl EndpointSpec {
    /// The backend port of this endpoint for Service port `p`, or `None` if
    /// this endpoint does not serve it.
    pub fn port_for(&self, p: &PortSpec) -> Option<u16> {
        if self.ports.is_empty() {
            return match p.target {
                TargetPort::Number(n) => Some(n),
                TargetPort::Name(_) => None,
            };
        }
        self.ports
            .iter()
            .find(|e| e.name == p.name && e.proto == p.proto)
            .map(|e| e.port)
    }
}
