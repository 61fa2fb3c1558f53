//! Shared helpers for the integration tests: a small cluster's Service
//! table, frames built with etherparse, and an independent check of every
//! frame the pipeline emits.

pub mod frames;
pub mod verify;

use sluice_dataplane::conntrack::{Conntrack, Timeouts};
use sluice_dataplane::pipeline::{process, Tables, Worker};
use sluice_dataplane::service::{Conditions, EndpointPort, EndpointSpec, PortSpec, ServiceSpec, ServiceTable, TargetPort};
use sluice_dataplane::{Addr, Proto, Verdict};
use std::net::IpAddr;

pub fn ip(s: &str) -> Addr {
    Addr::from(s.parse::<IpAddr>().expect("test address"))
}

/// Client pods live in 198.18.1.0/24 (node 1), backends in 198.18.2.0/24
/// (node 2); IPv6 the same under 2001:db8::/32.
pub const CLIENT_V4: [u8; 4] = [198, 18, 1, 2];
pub const CLIENT_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
pub const VIP_V4: [u8; 4] = [198, 19, 0, 10];
pub const VIP_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0x19, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a];

/// "shop/web": ClusterIPs 198.19.0.10 and 2001:db8:19::a; ports http 80/TCP
/// (named target "web": 8080 on two backends, 9090 on the third), dns
/// 53/UDP -> 5353, and sctp 38412/SCTP -> 38412; three ready backends per
/// family, one terminating.
pub fn web_service() -> ServiceSpec {
    let mut endpoints = Vec::new();
    for (i, c) in [(2u8, Conditions::READY), (3, Conditions::READY), (4, Conditions::READY), (5, Conditions::TERMINATING)] {
        let http = if i == 4 { 9090 } else { 8080 };
        let ports = vec![
            EndpointPort { name: "http".into(), port: http, proto: Proto::Tcp },
            EndpointPort { name: "dns".into(), port: 5353, proto: Proto::Udp },
            EndpointPort { name: "sctp".into(), port: 38412, proto: Proto::Sctp },
        ];
        endpoints.push(EndpointSpec { addr: Addr::from_v4([198, 18, 2, i]), conditions: c, ports: ports.clone() });
        let mut v6 = [0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        v6[15] = i;
        endpoints.push(EndpointSpec { addr: Addr::from_v6(v6), conditions: c, ports });
    }
    ServiceSpec {
        namespace: "shop".into(),
        name: "web".into(),
        cluster_ips: vec![Addr::from_v4(VIP_V4), Addr::from_v6(VIP_V6)],
        ports: vec![
            PortSpec { name: "http".into(), port: 80, proto: Proto::Tcp, target: TargetPort::Name("web".into()) },
            PortSpec { name: "dns".into(), port: 53, proto: Proto::Udp, target: TargetPort::Number(5353) },
            PortSpec { name: "sctp".into(), port: 38412, proto: Proto::Sctp, target: TargetPort::Number(38412) },
        ],
        endpoints,
    }
}

/// `n` single-port Services with two ready backends each, the shape the
/// benchmarks use (and kube-proxy's baseline: two endpoints per Service).
/// Service `i` is `frontend(i)`; 198.19.0.0/24 is left to `web_service`.
pub fn many_services(n: usize) -> Vec<ServiceSpec> {
    (0..n)
        .map(|i| {
            let (vip, port) = bench_frontend(i);
            let endpoints = (0..2u8)
                .map(|b| EndpointSpec {
                    addr: Addr::from_v4([198, 18, 2 + b, (i % 250) as u8 + 2]),
                    conditions: Conditions::READY,
                    ports: vec![],
                })
                .collect();
            ServiceSpec {
                namespace: "bench".into(),
                name: format!("svc-{i}"),
                cluster_ips: vec![vip],
                ports: vec![PortSpec { name: String::new(), port, proto: Proto::Tcp, target: TargetPort::Number(8080) }],
                endpoints,
            }
        })
        .collect()
}

/// The ClusterIP and port of benchmark Service `i`: addresses of
/// 198.19.1.0 - 198.19.127.255 first, then the same on the next port up,
/// so that 100,000 Services fit the ClusterIP range.
pub fn bench_frontend(i: usize) -> (Addr, u16) {
    const PER_PORT: usize = 32768 - 256;
    let a = 256 + i % PER_PORT;
    (Addr::from_v4([198, 19, (a >> 8) as u8, a as u8]), 80 + (i / PER_PORT) as u16)
}

/// A node's tables and one worker, for driving frames through.
pub struct Node {
    pub services: ServiceTable,
    pub conntrack: Conntrack,
    pub worker: Worker,
}

impl Node {
    pub fn new(specs: &[ServiceSpec], ct_capacity: usize) -> Node {
        let (services, problems) = ServiceTable::build(specs);
        assert!(problems.is_empty(), "{problems:?}");
        Node { services, conntrack: Conntrack::new(ct_capacity, Timeouts::default()), worker: Worker::default() }
    }

    pub fn web() -> Node {
        Node::new(&[web_service()], 4096)
    }

    pub fn process(&mut self, frame: &mut [u8]) -> Verdict {
        let t = Tables { services: &self.services, conntrack: &self.conntrack };
        process(frame, &t, &mut self.worker)
    }
}
