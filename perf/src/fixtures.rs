//! Service fixtures shared by the tests, the benchmarks and the demo, so
//! that a benchmark measures the same tables a test checks.

use sluice_dataplane::service::{
    Conditions, EndpointPort, EndpointSpec, PortSpec, ServiceSpec, TargetPort,
};
use sluice_dataplane::{Addr, Proto};

/// Client pods live in 198.18.1.0/24 (node 1), backends in 198.18.2.0/24
/// (node 2); IPv6 the same under 2001:db8::/32.
pub const CLIENT_V4: [u8; 4] = [198, 18, 1, 2];
pub const CLIENT_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
pub const VIP_V4: [u8; 4] = [198, 19, 0, 10];
pub const VIP_V6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0x19, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a,
];

/// The IPv6 address of backend `i` on node 2.
pub fn backend_v6(i: u8) -> [u8; 16] {
    let mut v6 = [0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    v6[15] = i;
    v6
}

/// "shop/web": ClusterIPs 198.19.0.10 and 2001:db8:19::a; ports http 80/TCP
/// (named target "web": 8080 on backends .2 and .3, 9090 on .4), dns
/// 53/UDP -> 5353, and sctp 38412/SCTP -> 38412; three ready backends per
/// family and a fourth (.5) terminating.
pub fn web_service() -> ServiceSpec {
    let mut endpoints = Vec::new();
    for (i, c) in [
        (2u8, Conditions::READY),
        (3, Conditions::READY),
        (4, Conditions::READY),
        (5, Conditions::TERMINATING),
    ] {
        let http = if i == 4 { 9090 } else { 8080 };
        let ports = vec![
            EndpointPort {
                name: "http".into(),
                port: http,
                proto: Proto::Tcp,
            },
            EndpointPort {
                name: "dns".into(),
                port: 5353,
                proto: Proto::Udp,
            },
            EndpointPort {
                name: "sctp".into(),
                port: 38412,
                proto: Proto::Sctp,
            },
        ];
        endpoints.push(EndpointSpec {
            addr: Addr::from_v4([198, 18, 2, i]),
            conditions: c,
            ports: ports.clone(),
        });
        endpoints.push(EndpointSpec {
            addr: Addr::from_v6(backend_v6(i)),
            conditions: c,
            ports,
        });
    }
    ServiceSpec {
        namespace: "shop".into(),
        name: "web".into(),
        cluster_ips: vec![Addr::from_v4(VIP_V4), Addr::from_v6(VIP_V6)],
        ports: vec![
            PortSpec {
                name: "http".into(),
                port: 80,
                proto: Proto::Tcp,
                target: TargetPort::Name("web".into()),
            },
            PortSpec {
                name: "dns".into(),
                port: 53,
                proto: Proto::Udp,
                target: TargetPort::Number(5353),
            },
            PortSpec {
                name: "sctp".into(),
                port: 38412,
                proto: Proto::Sctp,
                target: TargetPort::Number(38412),
            },
        ],
        endpoints,
    }
}

/// `n` single-port TCP Services with two ready backends each, the shape
/// the benchmarks use (and kube-proxy's baseline: two endpoints per
/// Service). Service `i` answers on `bench_frontend(i)`.
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
                ports: vec![PortSpec {
                    name: String::new(),
                    port,
                    proto: Proto::Tcp,
                    target: TargetPort::Number(8080),
                }],
                endpoints,
            }
        })
        .collect()
}

/// The ClusterIP and port of benchmark Service `i`: 198.19.1.0 to
/// 198.19.127.255 (198.19.0.0/24 is `web_service`'s), then the same
/// addresses on the next port up, so that 100,000 Services fit the
/// ClusterIP range of DESIGN.md.
pub fn bench_frontend(i: usize) -> (Addr, u16) {
    const PER_PORT: usize = 32768 - 256;
    let a = 256 + i % PER_PORT;
    (
        Addr::from_v4([198, 19, (a >> 8) as u8, a as u8]),
        80 + (i / PER_PORT) as u16,
    )
}
