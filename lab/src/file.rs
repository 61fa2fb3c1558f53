//! The lab file: nodes, their pods with labels, and Services that select
//! pods by label, as a Kubernetes Service selects its endpoints. Parsed
//! strictly (an unknown field is an error, so a typo is not silently
//! ignored) and validated into a `Plan` with every name and address the
//! lab will create, so that set-up either has everything it needs or fails
//! before it touches the machine, naming the object and field at fault.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Deserialize;
use sluice_dataplane::service::{Conditions, EndpointSpec, PortSpec, ServiceSpec, TargetPort};
use sluice_dataplane::{Addr, Proto};

/// The lab `sluice lab` runs without `--file`.
pub const DEFAULT: &str = include_str!("../labs/default.yaml");

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabFile {
    pub name: String,
    pub nodes: Vec<NodeSpec>,
    #[serde(default)]
    pub services: Vec<LabService>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub name: String,
    pub index: u8,
    #[serde(default)]
    pub pods: Vec<PodSpec>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodSpec {
    pub name: String,
    /// The pod's Kubernetes namespace: a Service selects only pods of its
    /// own namespace.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Defaults to the next free address of the node's pod CIDR.
    pub ip: Option<Ipv4Addr>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabService {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Ipv4Addr,
    /// Dual-stack, as Kubernetes spells it: `clusterIPs[0]` is `clusterIP`,
    /// the second an IPv6 ClusterIP. Empty for an IPv4-only Service.
    #[serde(default, rename = "clusterIPs")]
    pub cluster_ips: Vec<IpAddr>,
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<LabPort>,
}

fn default_namespace() -> String {
    "default".into()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabPort {
    #[serde(default)]
    pub name: String,
    pub port: u16,
    pub target_port: u16,
    #[serde(default = "default_protocol")]
    pub protocol: String,
}

fn default_protocol() -> String {
    "TCP".into()
}

/// A lab file that cannot be run, with the object and field at fault.
#[derive(Debug, PartialEq, Eq)]
pub struct LabError {
    /// Which object: `lab`, `node node1`, `pod web-1`, `service default/web`.
    pub object: String,
    pub field: String,
    pub reason: String,
}

impl std::fmt::Display for LabError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: field {}: {}", self.object, self.field, self.reason)
    }
}

impl std::error::Error for LabError {}

fn err(object: impl Into<String>, field: &str, reason: impl Into<String>) -> LabError {
    LabError {
        object: object.into(),
        field: field.into(),
        reason: reason.into(),
    }
}

/// A pod with everything set-up needs.
#[derive(Clone, Debug)]
pub struct PlannedPod {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub ip: Ipv4Addr,
    /// The IPv6 address: 2001:db8:18:N::H for 198.18.N.H.
    pub ip6: Ipv6Addr,
    pub mac: [u8; 6],
    /// The pod's network namespace.
    pub netns: String,
    /// The veth's end in the node's namespace (AF_XDP opens it).
    pub host_end: String,
}

#[derive(Clone, Debug)]
pub struct PlannedNode {
    pub name: String,
    pub index: u8,
    pub netns: String,
    /// The node's own addresses, on its TAP: 198.18.0.N, 2001:db8:18::N.
    pub ip: Ipv4Addr,
    pub ip6: Ipv6Addr,
    pub host_tap: String,
    pub host_mac: [u8; 6],
    pub pods: Vec<PlannedPod>,
}

/// A validated lab.
#[derive(Clone, Debug)]
pub struct Plan {
    pub name: String,
    pub nodes: Vec<PlannedNode>,
    pub services: Vec<LabService>,
}

/// The IPv6 twin of a lab IPv4 address: 198.18.N.H is 2001:db8:18:N::H,
/// the node 198.18.0.N is 2001:db8:18::N.
pub fn v6_for(ip: Ipv4Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::new(
        0x2001,
        0xdb8,
        0x18,
        u16::from(o[2]),
        0,
        0,
        0,
        u16::from(o[3]),
    )
}

/// The pods of node N in IPv6.
pub fn pod_cidr6(node: u8) -> String {
    format!("2001:db8:18:{node:x}::/64")
}

/// The IPv6 ClusterIP range of the lab.
pub const SERVICE_CIDR6: &str = "2001:db8:19::/48";

/// A locally administered MAC that spells the address it belongs to, so
/// that a capture reads itself: 02:53:c6:12:01:02 is 198.18.1.2.
/// sluice-cni's, which sets it on the pods it wires.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    sluice_cni::link::mac_for(ip.into())
}

fn check_name(object: &str, field: &str, name: &str, max: usize) -> Result<(), LabError> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(err(
            object,
            field,
            format!("{name:?}: 1 to {max} of a-z, 0-9 and '-', not starting with '-'"),
        ))
    }
}

impl LabFile {
    pub fn parse(yaml: &str) -> Result<LabFile, LabError> {
        serde_yaml::from_str(yaml).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!("line {} column {}", l.line(), l.column()))
                .unwrap_or_else(|| "?".into());
            err("lab file", &at, e.to_string())
        })
    }

    /// Validates and assigns every name and address.
    pub fn plan(&self) -> Result<Plan, LabError> {
        // No '-' in the lab's name: every namespace of the lab is named
        // "<lab>-...", and `down` finds them by that prefix alone.
        if self.name.is_empty()
            || self.name.len() > 8
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(err(
                "lab",
                "name",
                format!("{:?}: 1 to 8 of a-z and 0-9", self.name),
            ));
        }
        if self.nodes.len() != 1 {
            return Err(err(
                "lab",
                "nodes",
                format!(
                    "{} nodes: a lab has one node until VXLAN between nodes exists",
                    self.nodes.len()
                ),
            ));
        }
        let mut nodes = Vec::new();
        let mut pod_names = std::collections::HashSet::new();
        for n in &self.nodes {
            let obj = format!("node {}", n.name);
            check_name(&obj, "name", &n.name, 16)?;
            if n.index == 0 || n.index == 255 {
                return Err(err(&obj, "index", "1 to 254 (node N is 198.18.0.N)"));
            }
            if n.pods.is_empty() || n.pods.len() > 200 {
                return Err(err(&obj, "pods", "1 to 200 pods a node"));
            }
            let mut used = std::collections::HashSet::new();
            let mut next = 2u8;
            let mut pods = Vec::new();
            for p in n.pods.iter() {
                let pobj = format!("pod {}", p.name);
                // The namespace is "<lab>-<pod>"; names under 15 keep it
                // short enough to type.
                check_name(&pobj, "name", &p.name, 20)?;
                check_name(&pobj, "namespace", &p.namespace, 63)?;
                // Pods and nodes share the lab's namespaces ("<lab>-<name>").
                if self.nodes.iter().any(|n| n.name == p.name) {
                    return Err(err(&pobj, "name", "a node has this name"));
                }
                if !pod_names.insert(p.name.clone()) {
                    return Err(err(&pobj, "name", "two pods with this name"));
                }
                let ip = match p.ip {
                    Some(ip) => {
                        let o = ip.octets();
                        if o[..3] != [198, 18, n.index] || o[3] < 2 || o[3] == 255 {
                            return Err(err(
                                &pobj,
                                "ip",
                                format!(
                                    "{ip} is outside the node's pods, 198.18.{}.2 to 198.18.{}.254",
                                    n.index, n.index
                                ),
                            ));
                        }
                        ip
                    }
                    None => {
                        while used.contains(&next) || self.explicit(n, next) {
                            next += 1;
                        }
                        Ipv4Addr::new(198, 18, n.index, next)
                    }
                };
                if !used.insert(ip.octets()[3]) {
                    return Err(err(&pobj, "ip", format!("{ip} is another pod's")));
                }
                pods.push(PlannedPod {
                    name: p.name.clone(),
                    namespace: p.namespace.clone(),
                    labels: p.labels.clone(),
                    ip,
                    ip6: v6_for(ip),
                    mac: mac_for(ip),
                    netns: format!("{}-{}", self.name, p.name),
                    // sluice-cni's name for the pod's eth0, the container
                    // id being the pod's namespace.
                    host_end: sluice_cni::link::host_name(
                        &format!("{}-{}", self.name, p.name),
                        "eth0",
                    ),
                });
            }
            let ip = Ipv4Addr::new(198, 18, 0, n.index);
            nodes.push(PlannedNode {
                name: n.name.clone(),
                index: n.index,
                netns: format!("{}-{}", self.name, n.name),
                ip,
                ip6: v6_for(ip),
                host_tap: format!("{}-host", self.name),
                host_mac: mac_for(ip),
                pods,
            });
        }
        let mut seen = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        for s in &self.services {
            let obj = format!("service {}/{}", s.namespace, s.name);
            check_name(&obj, "name", &s.name, 63)?;
            check_name(&obj, "namespace", &s.namespace, 63)?;
            if !names.insert((&s.namespace, &s.name)) {
                return Err(err(
                    &obj,
                    "name",
                    "two Services with this namespace and name",
                ));
            }
            let o = s.cluster_ip.octets();
            if o[0] != 198 || o[1] != 19 || o[2] >= 128 {
                return Err(err(
                    &obj,
                    "clusterIP",
                    format!(
                        "{} is outside the lab's ClusterIPs, 198.19.0.0/17",
                        s.cluster_ip
                    ),
                ));
            }
            if !seen.insert(IpAddr::V4(s.cluster_ip)) {
                return Err(err(&obj, "clusterIP", "another Service has it"));
            }
            if !s.cluster_ips.is_empty() {
                if s.cluster_ips[0] != IpAddr::V4(s.cluster_ip) {
                    return Err(err(&obj, "clusterIPs[0]", "must equal clusterIP"));
                }
                if s.cluster_ips.len() > 2 {
                    return Err(err(&obj, "clusterIPs", "at most one address per family"));
                }
            }
            for (i, ip) in s.cluster_ips.iter().enumerate().skip(1) {
                let field = format!("clusterIPs[{i}]");
                let IpAddr::V6(v6) = ip else {
                    return Err(err(&obj, &field, "the second ClusterIP is the IPv6 one"));
                };
                let seg = v6.segments();
                if seg[..3] != [0x2001, 0xdb8, 0x19] {
                    return Err(err(
                        &obj,
                        &field,
                        format!("{v6} is outside the lab's IPv6 ClusterIPs, {SERVICE_CIDR6}"),
                    ));
                }
                if !seen.insert(*ip) {
                    return Err(err(&obj, &field, "another Service has it"));
                }
            }
            if s.ports.is_empty() {
                return Err(err(&obj, "ports", "a Service needs at least one port"));
            }
            for (i, p) in s.ports.iter().enumerate() {
                let field = format!("ports[{i}]");
                if p.port == 0 || p.target_port == 0 {
                    return Err(err(&obj, &field, "port and targetPort are 1 to 65535"));
                }
                proto(&p.protocol).ok_or_else(|| {
                    err(
                        &obj,
                        &format!("{field}.protocol"),
                        format!("{:?}: TCP, UDP or SCTP", p.protocol),
                    )
                })?;
                if s.ports[..i]
                    .iter()
                    .any(|q| q.port == p.port && q.protocol == p.protocol)
                {
                    return Err(err(
                        &obj,
                        &field,
                        format!("{}/{} is listed twice", p.port, p.protocol),
                    ));
                }
                if !p.name.is_empty() && s.ports[..i].iter().any(|q| q.name == p.name) {
                    return Err(err(
                        &obj,
                        &format!("{field}.name"),
                        "two ports with this name",
                    ));
                }
            }
        }
        Ok(Plan {
            name: self.name.clone(),
            nodes,
            services: self.services.clone(),
        })
    }

    fn explicit(&self, n: &NodeSpec, last: u8) -> bool {
        n.pods
            .iter()
            .any(|p| p.ip.is_some_and(|ip| ip.octets()[3] == last))
    }
}

fn proto(p: &str) -> Option<Proto> {
    match p {
        "TCP" => Some(Proto::Tcp),
        "UDP" => Some(Proto::Udp),
        "SCTP" => Some(Proto::Sctp),
        _ => None,
    }
}

impl LabService {
    /// The IPv6 ClusterIP of a dual-stack Service.
    pub fn v6(&self) -> Option<Ipv6Addr> {
        self.cluster_ips.iter().find_map(|ip| match ip {
            IpAddr::V6(v6) => Some(*v6),
            IpAddr::V4(_) => None,
        })
    }
}

impl Plan {
    pub fn node(&self) -> &PlannedNode {
        &self.nodes[0]
    }

    pub fn pod(&self, name: &str) -> Option<&PlannedPod> {
        self.nodes
            .iter()
            .flat_map(|n| &n.pods)
            .find(|p| p.name == name)
    }

    /// The pods a Service selects, as its endpoints would list them. An
    /// empty selector selects nothing, as in Kubernetes (such a Service's
    /// endpoints are managed by hand).
    pub fn selected(&self, s: &LabService) -> Vec<&PlannedPod> {
        if s.selector.is_empty() {
            return Vec::new();
        }
        self.nodes
            .iter()
            .flat_map(|n| &n.pods)
            .filter(|p| p.namespace == s.namespace)
            .filter(|p| s.selector.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
            .collect()
    }

    /// The lab's Services as Kubernetes manifests: each Service and one
    /// EndpointSlice per family listing the pods it selects, ready, or
    /// terminating for those in `terminating` (ready false, serving and
    /// terminating true: a pod in its graceful shutdown), as the API
    /// server's EndpointSlice controller would write them. The daemon
    /// reads them through its file source.
    pub fn manifests(&self, terminating: &[&str]) -> String {
        let mut out = String::from(
            "# Written by `sluice lab` from the lab file: the lab's Services and\n\
             # their EndpointSlices. The daemon watches this directory: edit,\n\
             # add or delete manifests here and the workers follow.\n",
        );
        for s in &self.services {
            let mut ips = vec![s.cluster_ip.to_string()];
            ips.extend(s.v6().map(|v6| format!("\"{v6}\"")));
            // A port's name, if it has one, as a flow-map entry.
            let named = |p: &LabPort| {
                if p.name.is_empty() {
                    String::new()
                } else {
                    format!("name: {}, ", p.name)
                }
            };
            let port_list: Vec<String> = s
                .ports
                .iter()
                .map(|p| {
                    format!(
                        "{{ {}port: {}, targetPort: {}, protocol: {} }}",
                        named(p),
                        p.port,
                        p.target_port,
                        p.protocol
                    )
                })
                .collect();
            out += &format!(
                "---\napiVersion: v1\nkind: Service\nmetadata: {{ name: {}, namespace: {} }}\nspec:\n  type: ClusterIP\n  clusterIP: {}\n  clusterIPs: [{}]\n  ports: [{}]\n",
                s.name,
                s.namespace,
                s.cluster_ip,
                ips.join(", "),
                port_list.join(", ")
            );
            let slice_ports: Vec<String> = s
                .ports
                .iter()
                .map(|p| {
                    format!(
                        "{{ {}port: {}, protocol: {} }}",
                        named(p),
                        p.target_port,
                        p.protocol
                    )
                })
                .collect();
            let pods: Vec<&PlannedPod> = self.selected(s);
            let families: Vec<(&str, bool)> = if s.v6().is_some() {
                vec![("IPv4", true), ("IPv6", false)]
            } else {
                vec![("IPv4", true)]
            };
            for (family, v4) in families {
                let endpoints: String = pods
                    .iter()
                    .map(|p| {
                        let a = if v4 { p.ip.to_string() } else { format!("\"{}\"", p.ip6) };
                        let conditions = if terminating.contains(&p.name.as_str()) {
                            "ready: false, serving: true, terminating: true"
                        } else {
                            "ready: true"
                        };
                        format!(
                            "  - {{ addresses: [{a}], conditions: {{ {conditions} }}, nodeName: {} }}\n",
                            self.node().name
                        )
                    })
                    .collect();
                out += &format!(
                    "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {}-{}\n  namespace: {}\n  labels: {{ kubernetes.io/service-name: {} }}\naddressType: {family}\nports: [{}]\nendpoints:{}\n",
                    s.name,
                    family.to_lowercase(),
                    s.namespace,
                    s.name,
                    slice_ports.join(", "),
                    if endpoints.is_empty() { " []".to_string() } else { format!("\n{}", endpoints.trim_end()) }
                );
            }
        }
        out
    }

    /// The dataplane's Services, every selected pod a ready endpoint, or a
    /// terminating one for those in `terminating`.
    pub fn service_specs(&self, terminating: &[&str]) -> Vec<ServiceSpec> {
        self.services
            .iter()
            .map(|s| ServiceSpec {
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                cluster_ips: std::iter::once(Addr::from_v4(s.cluster_ip.octets()))
                    .chain(s.v6().map(|v6| Addr::from_v6(v6.octets())))
                    .collect(),
                ports: s
                    .ports
                    .iter()
                    .map(|p| PortSpec {
                        name: p.name.clone(),
                        port: p.port,
                        proto: proto(&p.protocol).unwrap_or(Proto::Tcp),
                        target: TargetPort::Number(p.target_port),
                    })
                    .collect(),
                // One endpoint per pod and family, as the two EndpointSlices
                // of a dual-stack Service list them.
                endpoints: self
                    .selected(s)
                    .into_iter()
                    .flat_map(|p| {
                        let conditions = if terminating.contains(&p.name.as_str()) {
                            Conditions::TERMINATING
                        } else {
                            Conditions::READY
                        };
                        std::iter::once(Addr::from_v4(p.ip.octets()))
                            .chain(s.v6().map(|_| Addr::from_v6(p.ip6.octets())))
                            .map(move |addr| (addr, conditions))
                    })
                    .map(|(addr, conditions)| EndpointSpec {
                        addr,
                        conditions,
                        ports: vec![],
                        topology: Default::default(),
                    })
                    .collect(),
                affinity: Default::default(),
                internal_local: false,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_lab_plans_four_pods_and_one_service_of_three_backends() {
        let plan = LabFile::parse(DEFAULT).unwrap().plan().unwrap();
        let n = plan.node();
        assert_eq!(n.netns, "sluice-node1");
        assert_eq!(n.ip, Ipv4Addr::new(198, 18, 0, 1));
        let ips: Vec<String> = n.pods.iter().map(|p| p.ip.to_string()).collect();
        assert_eq!(
            ips,
            ["198.18.1.2", "198.18.1.3", "198.18.1.4", "198.18.1.5"]
        );
        assert_eq!(n.pods[1].netns, "sluice-web-1");
        assert_eq!(
            n.pods[1].host_end,
            sluice_cni::link::host_name(&n.pods[1].netns, "eth0")
        );
        assert_eq!(n.pods[1].mac, [0x02, 0x53, 198, 18, 1, 3]);
        let web = &plan.services[0];
        let selected: Vec<&str> = plan.selected(web).iter().map(|p| p.name.as_str()).collect();
        assert_eq!(selected, ["web-1", "web-2", "web-3"]);
        assert_eq!(n.pods[1].ip6.to_string(), "2001:db8:18:1::3");
        assert_eq!(n.ip6.to_string(), "2001:db8:18::1");
        let specs = plan.service_specs(&["web-2"]);
        assert_eq!(specs[0].cluster_ips.len(), 2, "dual-stack");
        assert_eq!(specs[0].endpoints.len(), 6, "three pods, two families");
        let web2 = Addr::from_v4(n.pods[2].ip.octets());
        let e = specs[0].endpoints.iter().find(|e| e.addr == web2).unwrap();
        assert_eq!(e.conditions, Conditions::TERMINATING, "web-2 terminating");
        assert_eq!(specs[0].ports[1].proto, Proto::Udp);
    }

    #[test]
    fn bad_lab_files_name_the_object_and_field() {
        let cases = [
            ("name: sluice\nnodes: []\n", "lab", "nodes"),
            ("name: Sluice!\nnodes: []\n", "lab", "name"),
            (
                "name: l\nnodes: [{name: n, index: 1, pods: [{name: a, ip: 198.18.2.9}]}]\n",
                "pod a",
                "ip",
            ),
            (
                "name: l\nnodes: [{name: n, index: 1, pods: [{name: a}, {name: a}]}]\n",
                "pod a",
                "name",
            ),
            (
                "name: l\nnodes: [{name: n, index: 1, pods: [{name: a}]}]\nservices: [{name: s, clusterIP: 10.0.0.1, ports: [{port: 80, targetPort: 80}]}]\n",
                "service default/s",
                "clusterIP",
            ),
            (
                "name: l\nnodes: [{name: n, index: 1, pods: [{name: a}]}]\nservices: [{name: s, clusterIP: 198.19.0.1, clusterIPs: [198.19.0.1, 2001:db8:1::1], ports: [{port: 80, targetPort: 80}]}]\n",
                "service default/s",
                "clusterIPs[1]",
            ),
            (
                "name: l\nnodes: [{name: n, index: 1, pods: [{name: a}]}]\nservices: [{name: s, clusterIP: 198.19.0.1, clusterIPs: [198.19.0.2], ports: [{port: 80, targetPort: 80}]}]\n",
                "service default/s",
                "clusterIPs[0]",
            ),
            (
                "name: l\nnodes: [{name: n, index: 1, pods: [{name: a}]}]\nservices: [{name: s, clusterIP: 198.19.0.1, ports: [{port: 80, targetPort: 80, protocol: tcp}]}]\n",
                "service default/s",
                "ports[0].protocol",
            ),
            ("name: l\nnodes: [{name: n, index: 1, pods: []}]\n", "node n", "pods"),
            ("name: l\nnodes: [{name: n, index: 1, pods: [{name: n}]}]\n", "pod n", "name"),
            (
                "name: l\nnodes: [{name: n, index: 1, pods: [{name: a}]}]\nservices: [{name: s, clusterIP: 198.19.0.1, ports: [{port: 80, targetPort: 80}, {port: 80, targetPort: 81}]}]\n",
                "service default/s",
                "ports[1]",
            ),
            (
                "name: l\nnodes: [{name: n, index: 1, pods: [{name: a}]}]\nservices: [{name: s, clusterIP: 198.19.0.1, ports: [{port: 80, targetPort: 80}]}, {name: s, clusterIP: 198.19.0.2, ports: [{port: 80, targetPort: 80}]}]\n",
                "service default/s",
                "name",
            ),
        ];
        for (yaml, object, field) in cases {
            let e = LabFile::parse(yaml).unwrap().plan().unwrap_err();
            assert_eq!(
                (e.object.as_str(), e.field.as_str()),
                (object, field),
                "{e}"
            );
        }
        let e = LabFile::parse("name: l\nnodes: []\nservics: []\n").unwrap_err();
        assert!(e.reason.contains("unknown field `servics`"), "{e}");
        assert!(e.field.starts_with("line 3"), "{e}");
    }

    #[test]
    fn the_manifests_translate_to_the_same_specs_as_the_plan() {
        let plan = LabFile::parse(DEFAULT).unwrap().plan().unwrap();
        for terminating in [&[][..], &["web-2"][..], &["web-1", "web-2", "web-3"][..]] {
            let (objects, ignored) =
                sluice_control::source::file::parse(&plan.manifests(terminating))
                    .expect("manifests parse");
            assert_eq!(ignored, 0);
            let mut m = sluice_control::translate::Model::default();
            for o in objects {
                let a = sluice_control::source::apply(
                    &mut m,
                    &sluice_control::source::file::Event::Apply(o),
                );
                assert!(a.rejected.is_none(), "{:?}", a.rejected);
            }
            let mut want = plan.service_specs(terminating);
            let mut got = m.specs();
            // Endpoint order differs (per family in the slices).
            for s in want.iter_mut().chain(got.iter_mut()) {
                s.endpoints.sort_by_key(|e| e.addr.0);
                for e in &mut s.endpoints {
                    e.ports.clear();
                }
            }
            assert_eq!(got, want, "terminating {terminating:?}");
        }
    }

    #[test]
    fn a_service_selects_only_pods_of_its_namespace() {
        let yaml = "name: l\nnodes: [{name: n, index: 1, pods: [{name: a, labels: {app: x}}, {name: b, namespace: other, labels: {app: x}}]}]\nservices: [{name: s, clusterIP: 198.19.0.1, selector: {app: x}, ports: [{port: 80, targetPort: 80}]}]\n";
        let plan = LabFile::parse(yaml).unwrap().plan().unwrap();
        let names: Vec<&str> = plan
            .selected(&plan.services[0])
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, ["a"]);
    }

    #[test]
    fn explicit_addresses_are_skipped_by_the_automatic_ones() {
        let yaml = "name: l\nnodes: [{name: n, index: 3, pods: [{name: a}, {name: b, ip: 198.18.3.3}, {name: c}]}]\n";
        let plan = LabFile::parse(yaml).unwrap().plan().unwrap();
        let ips: Vec<String> = plan.node().pods.iter().map(|p| p.ip.to_string()).collect();
        assert_eq!(ips, ["198.18.3.2", "198.18.3.3", "198.18.3.4"]);
    }
}
