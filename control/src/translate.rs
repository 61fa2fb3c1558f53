//! From Kubernetes objects to the dataplane's Service specs: a pure
//! translation, kept incremental by a model of the objects seen so far.
//!
//! A Service gives the frontends (its ClusterIPs and ports); every
//! EndpointSlice labelled `kubernetes.io/service-name` with its name gives
//! endpoints, merged across slices and families. A change to one slice
//! re-translates one Service. An object that cannot be translated is
//! rejected with its kind, namespace, name and the field at fault, counted,
//! and the last good version of it keeps serving.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sluice_dataplane::service::{
    Affinity, Conditions, EndpointPort, EndpointSpec, PortSpec, ServiceSpec, TargetPort, Topology,
};
use sluice_dataplane::{Addr, Proto};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The label that gives a Service to another proxy: kube-proxy, and
/// Sluice in its place, leave a Service that carries it, whatever its
/// value, to the proxy it names.
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";

/// Why a valid Service gets no frontend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skipped {
    /// Labelled for another proxy (`SERVICE_PROXY_NAME_LABEL`'s value).
    ProxyName(String),
    /// `clusterIP: None`: DNS only.
    Headless,
    /// `type: ExternalName`: a DNS alias.
    ExternalName,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skipped::ProxyName(p) => {
                write!(
                    f,
                    "labelled {SERVICE_PROXY_NAME_LABEL}={p:?}: another proxy's"
                )
            }
            Skipped::Headless => f.write_str("headless (clusterIP None): DNS only"),
            Skipped::ExternalName => f.write_str("type ExternalName: DNS only"),
        }
    }
}

/// Whether Service `svc` is one Sluice leaves alone, and why.
pub fn skipped(svc: &Service) -> Option<Skipped> {
    if let Some(p) = svc
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_PROXY_NAME_LABEL))
    {
        return Some(Skipped::ProxyName(p.clone()));
    }
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return Some(Skipped::ExternalName);
    }
    let headless = |ip: &String| ip == "None";
    if spec.cluster_ip.as_ref().is_some_and(headless)
        || spec.cluster_ips.iter().flatten().any(headless)
    {
        return Some(Skipped::Headless);
    }
    None
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Service,
    EndpointSlice,
    Node,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Node => "Node",
        }
    }
}

/// An object's identity. Nodes have an empty namespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind.as_str(), self.name)
        } else {
            write!(f, "{} {}/{}", self.kind.as_str(), self.namespace, self.name)
        }
    }
}

/// An object that could not be translated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub object: ObjectRef,
    pub field: String,
    pub reason: String,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: field {}: {}", self.object, self.field, self.reason)
    }
}

impl std::error::Error for Rejection {}

/// What a Service contributes: its frontends. `None` from `service()` for
/// a Service Sluice does not load-balance (`skipped`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frontends {
    pub cluster_ips: Vec<Addr>,
    pub ports: Vec<PortSpec>,
    pub affinity: Affinity,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
}

/// What an EndpointSlice contributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceEndpoints {
    /// The Service it belongs to, in the slice's namespace.
    pub service: String,
    pub endpoints: Vec<EndpointSpec>,
    /// Where each endpoint is (`endpoints[i]`'s), as the slice says: read
    /// against this node when the Service's spec is made.
    pub placement: Vec<Placement>,
}

/// An endpoint's `nodeName` and `hints`, as its EndpointSlice gives them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    pub node: Option<String>,
    /// `hints.forZones` names (`None`: no zone hints).
    pub for_zones: Option<Vec<String>>,
    /// `hints.forNodes` names (`None`: no node hints).
    pub for_nodes: Option<Vec<String>>,
}

impl Placement {
    /// The endpoint's topology from node `node` in zone `zone`.
    pub fn seen_from(&self, node: &str, zone: Option<&str>) -> Topology {
        Topology {
            local: !node.is_empty() && self.node.as_deref() == Some(node),
            zone_hint: match (&self.for_zones, zone) {
                (Some(z), Some(ours)) => Some(z.iter().any(|n| n == ours)),
                _ => None,
            },
            node_hint: self
                .for_nodes
                .as_ref()
                .map(|n| !node.is_empty() && n.iter().any(|x| x == node)),
        }
    }
}

/// What a Node contributes (its pod CIDRs and addresses, for the routes
/// to other nodes that VXLAN will use; its zone, for topology).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub pod_cidrs: Vec<(IpAddr, u8)>,
    pub internal_ips: Vec<IpAddr>,
    /// Its `topology.kubernetes.io/zone` label.
    pub zone: Option<String>,
}

/// The label that names a node's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

fn object(
    kind: Kind,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> ObjectRef {
    ObjectRef {
        kind,
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
    }
}

fn reject(object: &ObjectRef, field: impl Into<String>, reason: impl Into<String>) -> Rejection {
    Rejection {
        object: object.clone(),
        field: field.into(),
        reason: reason.into(),
    }
}

fn proto(p: Option<&str>) -> Option<Proto> {
    match p.unwrap_or("TCP") {
        "TCP" => Some(Proto::Tcp),
        "UDP" => Some(Proto::Udp),
        "SCTP" => Some(Proto::Sctp),
        _ => None,
    }
}

fn port_number(n: i32) -> Option<u16> {
    u16::try_from(n).ok().filter(|&p| p != 0)
}

fn addr(s: &str) -> Option<(Addr, bool)> {
    match s.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => Some((Addr::from_v4(v4.octets()), true)),
        IpAddr::V6(v6) => Some((Addr::from_v6(v6.octets()), false)),
    }
}

/// A Service's frontends.
pub fn service(svc: &Service) -> Result<Option<Frontends>, Rejection> {
    let obj = object(Kind::Service, &svc.metadata);
    if obj.name.is_empty() {
        return Err(reject(&obj, "metadata.name", "missing"));
    }
    let spec = svc
        .spec
        .as_ref()
        .ok_or_else(|| reject(&obj, "spec", "missing"))?;
    if skipped(svc).is_some() {
        return Ok(None);
    }
    let ips: Vec<String> = match (&spec.cluster_ips, &spec.cluster_ip) {
        (Some(ips), _) if !ips.is_empty() => ips.clone(),
        (_, Some(ip)) if !ip.is_empty() => vec![ip.clone()],
        _ => {
            return Err(reject(
                &obj,
                "spec.clusterIP",
                "no ClusterIP (a manifest must set one: nothing allocates it)",
            ))
        }
    };
    let mut cluster_ips = Vec::new();
    let mut families = BTreeSet::new();
    for (i, ip) in ips.iter().enumerate() {
        let (a, v4) = addr(ip).ok_or_else(|| {
            reject(
                &obj,
                format!("spec.clusterIPs[{i}]"),
                format!("{ip:?} is not an IP address"),
            )
        })?;
        if !families.insert(v4) {
            return Err(reject(
                &obj,
                format!("spec.clusterIPs[{i}]"),
                "a second ClusterIP of the same family",
            ));
        }
        cluster_ips.push(a);
    }
    let mut ports = Vec::new();
    let svc_ports = spec.ports.as_deref().unwrap_or_default();
    for (i, p) in svc_ports.iter().enumerate() {
        let field = |f: &str| format!("spec.ports[{i}].{f}");
        let port = port_number(p.port)
            .ok_or_else(|| reject(&obj, field("port"), format!("{}: 1 to 65535", p.port)))?;
        let proto = proto(p.protocol.as_deref()).ok_or_else(|| {
            reject(
                &obj,
                field("protocol"),
                format!(
                    "{:?}: TCP, UDP or SCTP",
                    p.protocol.as_deref().unwrap_or_default()
                ),
            )
        })?;
        let target = match &p.target_port {
            None => TargetPort::Number(port),
            Some(IntOrString::Int(n)) => TargetPort::Number(
                port_number(*n)
                    .ok_or_else(|| reject(&obj, field("targetPort"), format!("{n}: 1 to 65535")))?,
            ),
            Some(IntOrString::String(s)) => match s.parse::<i32>() {
                // A number written as a string is a number.
                Ok(n) => TargetPort::Number(port_number(n).ok_or_else(|| {
                    reject(&obj, field("targetPort"), format!("{n}: 1 to 65535"))
                })?),
                Err(_) if !s.is_empty() => TargetPort::Name(s.clone()),
                Err(_) => return Err(reject(&obj, field("targetPort"), "empty")),
            },
        };
        let name = p.name.clone().unwrap_or_default();
        if svc_ports.len() > 1 && name.is_empty() {
            return Err(reject(
                &obj,
                field("name"),
                "a Service with several ports names each",
            ));
        }
        if ports.iter().any(|q: &PortSpec| q.name == name) {
            return Err(reject(
                &obj,
                field("name"),
                format!("{name:?} is another port's"),
            ));
        }
        if ports
            .iter()
            .any(|q: &PortSpec| q.port == port && q.proto == proto)
        {
            return Err(reject(
                &obj,
                field("port"),
                format!("{port}/{proto:?} is listed twice"),
            ));
        }
        ports.push(PortSpec {
            name,
            port,
            proto,
            target,
        });
    }
    let affinity = match spec.session_affinity.as_deref() {
        None | Some("None") => Affinity::None,
        Some("ClientIP") => {
            let t = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            let timeout_s = match t {
                None => Affinity::DEFAULT_TIMEOUT_S,
                Some(s) if (1..=i64::from(Affinity::MAX_TIMEOUT_S)).contains(&i64::from(s)) => {
                    s as u32
                }
                Some(s) => {
                    return Err(reject(
                        &obj,
                        "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                        format!("{s}: 1 to {}", Affinity::MAX_TIMEOUT_S),
                    ))
                }
            };
            Affinity::ClientIp { timeout_s }
        }
        Some(other) => {
            return Err(reject(
                &obj,
                "spec.sessionAffinity",
                format!("{other:?}: None or ClientIP"),
            ))
        }
    };
    let internal_local = match spec.internal_traffic_policy.as_deref() {
        None | Some("Cluster") => false,
        Some("Local") => true,
        Some(other) => {
            return Err(reject(
                &obj,
                "spec.internalTrafficPolicy",
                format!("{other:?}: Cluster or Local"),
            ))
        }
    };
    Ok(Some(Frontends {
        cluster_ips,
        ports,
        affinity,
        internal_local,
    }))
}

/// An EndpointSlice's endpoints. FQDN slices have none Sluice can use.
pub fn endpoint_slice(es: &EndpointSlice) -> Result<SliceEndpoints, Rejection> {
    let obj = object(Kind::EndpointSlice, &es.metadata);
    if obj.name.is_empty() {
        return Err(reject(&obj, "metadata.name", "missing"));
    }
    let service = es
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .filter(|s| !s.is_empty())
        .cloned()
        .ok_or_else(|| {
            reject(
                &obj,
                format!("metadata.labels[{SERVICE_NAME_LABEL}]"),
                "missing: the slice belongs to no Service",
            )
        })?;
    let want_v4 = match es.address_type.as_str() {
        "IPv4" => true,
        "IPv6" => false,
        "FQDN" => {
            return Ok(SliceEndpoints {
                service,
                endpoints: Vec::new(),
                placement: Vec::new(),
            })
        }
        other => {
            return Err(reject(
                &obj,
                "addressType",
                format!("{other:?}: IPv4, IPv6 or FQDN"),
            ))
        }
    };
    let mut ports = Vec::new();
    for (j, p) in es.ports.iter().flatten().enumerate() {
        // A port without a number serves nothing a Service port can name.
        let Some(n) = p.port else { continue };
        let port = port_number(n)
            .ok_or_else(|| reject(&obj, format!("ports[{j}].port"), format!("{n}: 1 to 65535")))?;
        let proto = proto(p.protocol.as_deref()).ok_or_else(|| {
            reject(
                &obj,
                format!("ports[{j}].protocol"),
                format!(
                    "{:?}: TCP, UDP or SCTP",
                    p.protocol.as_deref().unwrap_or_default()
                ),
            )
        })?;
        ports.push(EndpointPort {
            name: p.name.clone().unwrap_or_default(),
            port,
            proto,
        });
    }
    let mut endpoints = Vec::new();
    let mut placement = Vec::new();
    for (i, e) in es.endpoints.iter().enumerate() {
        // The API allows one address (more are reserved); the first counts.
        let Some(first) = e.addresses.first() else {
            return Err(reject(&obj, format!("endpoints[{i}].addresses"), "empty"));
        };
        let field = format!("endpoints[{i}].addresses[0]");
        let (a, v4) = addr(first)
            .ok_or_else(|| reject(&obj, &field, format!("{first:?} is not an IP address")))?;
        if v4 != want_v4 {
            return Err(reject(
                &obj,
                &field,
                format!(
                    "{first} is not of the slice's addressType {}",
                    es.address_type
                ),
            ));
        }
        // Unset conditions: ready counts as true, serving follows ready,
        // terminating is false (discovery.k8s.io/v1's documentation).
        let c = e.conditions.as_ref();
        let ready = c.and_then(|c| c.ready).unwrap_or(true);
        let conditions = Conditions {
            ready,
            serving: c.and_then(|c| c.serving).unwrap_or(ready),
            terminating: c.and_then(|c| c.terminating).unwrap_or(false),
        };
        endpoints.push(EndpointSpec {
            addr: a,
            conditions,
            ports: ports.clone(),
            topology: Default::default(),
        });
        let hints = e.hints.as_ref();
        placement.push(Placement {
            node: e.node_name.clone(),
            for_zones: hints
                .and_then(|h| h.for_zones.as_ref())
                .map(|z| z.iter().map(|z| z.name.clone()).collect()),
            for_nodes: hints
                .and_then(|h| h.for_nodes.as_ref())
                .map(|n| n.iter().map(|n| n.name.clone()).collect()),
        });
    }
    Ok(SliceEndpoints {
        service,
        endpoints,
        placement,
    })
}

/// A Node's pod CIDRs and internal addresses.
pub fn node(n: &Node) -> Result<NodeInfo, Rejection> {
    let obj = object(Kind::Node, &n.metadata);
    if obj.name.is_empty() {
        return Err(reject(&obj, "metadata.name", "missing"));
    }
    let mut pod_cidrs = Vec::new();
    let spec = n.spec.as_ref();
    let cidrs: Vec<String> = match spec.and_then(|s| s.pod_cidrs.clone()) {
        Some(v) if !v.is_empty() => v,
        _ => spec.and_then(|s| s.pod_cidr.clone()).into_iter().collect(),
    };
    for (i, c) in cidrs.iter().enumerate() {
        let parsed = c.split_once('/').and_then(|(a, l)| {
            let ip: IpAddr = a.parse().ok()?;
            let len: u8 = l.parse().ok()?;
            (len <= if ip.is_ipv4() { 32 } else { 128 }).then_some((ip, len))
        });
        pod_cidrs.push(parsed.ok_or_else(|| {
            reject(
                &obj,
                format!("spec.podCIDRs[{i}]"),
                format!("{c:?} is not a CIDR"),
            )
        })?);
    }
    let internal_ips = n
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect();
    let zone = n
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(ZONE_LABEL))
        .filter(|z| !z.is_empty())
        .cloned();
    Ok(NodeInfo {
        pod_cidrs,
        internal_ips,
        zone,
    })
}

/// A Service's identity: namespace and name.
pub type ServiceKey = (String, String);

/// The objects seen so far, and the specs they translate to.
#[derive(Default)]
pub struct Model {
    services: BTreeMap<ServiceKey, Frontends>,
    /// Valid Services left alone, and why.
    skipped: BTreeMap<ServiceKey, Skipped>,
    /// Slices by (namespace, slice name).
    slices: BTreeMap<ServiceKey, SliceEndpoints>,
    /// Slice names by Service.
    slices_of: BTreeMap<ServiceKey, BTreeSet<String>>,
    nodes: BTreeMap<String, NodeInfo>,
    /// This node's name: which endpoints are local, and whose zone the
    /// topology hints are read against. Empty: unknown (none is local).
    node: String,
    rejected: BTreeMap<ObjectRef, Rejection>,
    /// Rejections since the start, for a counter.
    pub rejections: u64,
}

/// What a change did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Services whose spec may have changed.
    pub touched: BTreeSet<ServiceKey>,
    pub rejected: Option<Rejection>,
}

impl Applied {
    fn touching(key: ServiceKey, changed: bool) -> Applied {
        Applied {
            touched: if changed {
                [key].into()
            } else {
                BTreeSet::new()
            },
            rejected: None,
        }
    }
}

impl Model {
    /// A model for the node named `node`.
    pub fn for_node(node: &str) -> Model {
        Model {
            node: node.to_string(),
            ..Model::default()
        }
    }

    /// This node's zone, from its Node object's label.
    fn zone(&self) -> Option<&str> {
        self.nodes.get(&self.node).and_then(|n| n.zone.as_deref())
    }

    /// A deleted object is no longer a rejected one.
    fn forget(&mut self, kind: Kind, namespace: &str, name: &str) {
        self.rejected.remove(&ObjectRef {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        });
    }

    fn record(&mut self, r: Rejection) -> Applied {
        self.rejections += 1;
        self.rejected.insert(r.object.clone(), r.clone());
        Applied {
            touched: BTreeSet::new(),
            rejected: Some(r),
        }
    }

    /// A Service added or changed. A bad one leaves its last good version.
    pub fn upsert_service(&mut self, svc: &Service) -> Applied {
        let obj = object(Kind::Service, &svc.metadata);
        let key = (obj.namespace.clone(), obj.name.clone());
        match service(svc) {
            Err(r) => self.record(r),
            Ok(f) => {
                self.rejected.remove(&obj);
                match skipped(svc) {
                    Some(why) => self.skipped.insert(key.clone(), why),
                    None => self.skipped.remove(&key),
                };
                let changed = match f {
                    Some(f) => self.services.insert(key.clone(), f.clone()) != Some(f),
                    None => self.services.remove(&key).is_some(),
                };
                Applied::touching(key, changed)
            }
        }
    }

    pub fn delete_service(&mut self, namespace: &str, name: &str) -> Applied {
        self.forget(Kind::Service, namespace, name);
        let key = (namespace.to_string(), name.to_string());
        self.skipped.remove(&key);
        let changed = self.services.remove(&key).is_some();
        Applied::touching(key, changed)
    }

    /// An EndpointSlice added or changed. A bad one leaves its last good
    /// version.
    pub fn upsert_slice(&mut self, es: &EndpointSlice) -> Applied {
        let obj = object(Kind::EndpointSlice, &es.metadata);
        match endpoint_slice(es) {
            Err(r) => self.record(r),
            Ok(s) => {
                self.rejected.remove(&obj);
                let key = (obj.namespace.clone(), obj.name.clone());
                let mut touched = BTreeSet::new();
                let svc = (obj.namespace.clone(), s.service.clone());
                if let Some(old) = self.slices.get(&key) {
                    if *old == s {
                        return Applied::default();
                    }
                    // A slice relabelled to another Service leaves the first.
                    let was = (obj.namespace.clone(), old.service.clone());
                    if was != svc {
                        if let Some(set) = self.slices_of.get_mut(&was) {
                            set.remove(&obj.name);
                        }
                        touched.insert(was);
                    }
                }
                self.slices_of
                    .entry(svc.clone())
                    .or_default()
                    .insert(obj.name.clone());
                self.slices.insert(key, s);
                touched.insert(svc);
                Applied {
                    touched,
                    rejected: None,
                }
            }
        }
    }

    pub fn delete_slice(&mut self, namespace: &str, name: &str) -> Applied {
        self.forget(Kind::EndpointSlice, namespace, name);
        let key = (namespace.to_string(), name.to_string());
        let Some(old) = self.slices.remove(&key) else {
            return Applied::default();
        };
        let svc = (namespace.to_string(), old.service);
        if let Some(set) = self.slices_of.get_mut(&svc) {
            set.remove(name);
            if set.is_empty() {
                self.slices_of.remove(&svc);
            }
        }
        Applied {
            touched: [svc].into(),
            rejected: None,
        }
    }

    pub fn upsert_node(&mut self, n: &Node) -> Applied {
        let obj = object(Kind::Node, &n.metadata);
        match node(n) {
            Err(r) => self.record(r),
            Ok(info) => {
                self.rejected.remove(&obj);
                let before = self.zone().map(str::to_string);
                let ours = obj.name == self.node;
                self.nodes.insert(obj.name, info);
                self.after_zone(ours, before)
            }
        }
    }

    pub fn delete_node(&mut self, name: &str) -> Applied {
        self.forget(Kind::Node, "", name);
        let before = self.zone().map(str::to_string);
        self.nodes.remove(name);
        self.after_zone(name == self.node, before)
    }

    /// When this node's zone changed, every Service may pick other
    /// endpoints by their hints.
    fn after_zone(&self, ours: bool, before: Option<String>) -> Applied {
        if !ours || self.zone() == before.as_deref() {
            return Applied::default();
        }
        Applied {
            touched: self.services.keys().cloned().collect(),
            rejected: None,
        }
    }

    /// The spec of one Service: its frontends and the endpoints of every
    /// slice that names it, each (address, ports) once.
    pub fn spec(&self, key: &ServiceKey) -> Option<ServiceSpec> {
        let f = self.services.get(key)?;
        let mut endpoints: Vec<EndpointSpec> = Vec::new();
        for slice in self.slices_of.get(key).into_iter().flatten() {
            let Some(s) = self.slices.get(&(key.0.clone(), slice.clone())) else {
                continue;
            };
            let zone = self.zone();
            for (i, e) in s.endpoints.iter().enumerate() {
                if !endpoints
                    .iter()
                    .any(|x| x.addr == e.addr && x.ports == e.ports)
                {
                    let topology = s
                        .placement
                        .get(i)
                        .map(|p| p.seen_from(&self.node, zone))
                        .unwrap_or_default();
                    endpoints.push(EndpointSpec {
                        topology,
                        ..e.clone()
                    });
                }
            }
        }
        Some(ServiceSpec {
            namespace: key.0.clone(),
            name: key.1.clone(),
            cluster_ips: f.cluster_ips.clone(),
            ports: f.ports.clone(),
            endpoints,
            affinity: f.affinity,
            internal_local: f.internal_local,
        })
    }

    /// Services with frontends.
    pub fn services(&self) -> usize {
        self.services.len()
    }

    /// The Services with frontends, "namespace/name", in that order.
    pub fn programmed(&self) -> Vec<String> {
        self.services
            .keys()
            .map(|(ns, n)| format!("{ns}/{n}"))
            .collect()
    }

    /// The valid Services left alone, "namespace/name: why".
    pub fn skipped(&self) -> Vec<String> {
        self.skipped
            .iter()
            .map(|((ns, n), why)| format!("{ns}/{n}: {why}"))
            .collect()
    }

    /// Every Service's spec, in namespace and name order.
    pub fn specs(&self) -> Vec<ServiceSpec> {
        self.services.keys().filter_map(|k| self.spec(k)).collect()
    }

    /// The objects rejected now (a later good version clears one).
    pub fn rejected(&self) -> impl Iterator<Item = &Rejection> {
        self.rejected.values()
    }

    pub fn nodes(&self) -> &BTreeMap<String, NodeInfo> {
        &self.nodes
    }
}

#[cfg(test)]
mod tests;
