//! The pipeline's entry point on arbitrary frames, against a table with
//! Services in both families and a small conntrack that fills up: no input
//! may panic, every frame is accounted for, and whatever the pipeline
//! forwards after rewriting still decodes. The same input then goes through
//! the neighbour stage and, if it is IP, the route stage (TTL, MAC rewrite,
//! ICMP time-exceeded): neither may panic, and a reply fits its buffer.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sluice_dataplane::conntrack::{Conntrack, Timeouts};
use sluice_dataplane::decode::{decode, Decoded};
use sluice_dataplane::neighbor::{answer, Gateway};
use sluice_dataplane::route::{forward, Cidr, PortId, Routed, Routes};
use sluice_dataplane::Family;
use sluice_dataplane::pipeline::{process, Tables, Worker};
use sluice_dataplane::service::{Conditions, EndpointSpec, PortSpec, ServiceSpec, ServiceTable, TargetPort};
use sluice_dataplane::{Addr, Proto, Verdict};

struct World {
    services: ServiceTable,
    conntrack: Conntrack,
    routes: Routes,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let mut endpoints = Vec::new();
        for i in 2..5u8 {
            endpoints.push(EndpointSpec { addr: Addr::from_v4([198, 18, 2, i]), conditions: Conditions::READY, ports: vec![] });
            let mut v6 = [0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            v6[15] = i;
            endpoints.push(EndpointSpec { addr: Addr::from_v6(v6), conditions: Conditions::READY, ports: vec![] });
        }
        let ports = [(80, Proto::Tcp, 8080), (53, Proto::Udp, 5353), (38412, Proto::Sctp, 38412)]
            .into_iter()
            .map(|(port, proto, t)| PortSpec { name: format!("p{port}"), port, proto, target: TargetPort::Number(t) })
            .collect();
        let spec = ServiceSpec {
            namespace: "fuzz".into(),
            name: "web".into(),
            cluster_ips: vec![
                Addr::from_v4([198, 19, 0, 10]),
                Addr::from_v6([0x20, 0x01, 0x0d, 0xb8, 0, 0x19, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a]),
            ],
            ports,
            endpoints,
        };
        let (services, _) = ServiceTable::build(&[spec]);
        let mut routes = Routes::default();
        routes.add_pod(Addr::from_v4([198, 18, 2, 2]), PortId(2), [2, 0, 0, 0, 2, 2]);
        routes.add_tunnel(Cidr { addr: Addr::from_v4([198, 18, 3, 0]), len: 24, family: Family::V4 }, Addr::from_v4([198, 18, 0, 3]));
        routes.add_host(Addr::from_v4([198, 18, 0, 1]));
        World { services, conntrack: Conntrack::with_seed(4096, Timeouts::default(), 1), routes }
    })
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let t = Tables { services: &w.services, conntrack: &w.conntrack };
    let mut worker = Worker::default();
    let mut frame = data.to_vec();
    let v = process(&mut frame, &t, &mut worker);
    let c = &worker.counters;
    assert_eq!(c.rx, c.forwarded + c.to_host + c.total_drops());
    assert_eq!(frame.len(), data.len(), "the pipeline never changes a frame's length");
    if v == Verdict::Forward && frame != data {
        assert!(decode(&frame).is_ok(), "a rewritten frame no longer decodes");
    }
    let mut out = [0u8; 1600];
    if let Some(n) = answer(data, &Gateway::DEFAULT, &mut out) {
        assert!(n <= out.len());
        assert!(decode(&out[..n]).is_ok(), "a neighbour reply that does not decode");
    }
    if v == Verdict::Forward {
        if let Ok(Decoded::Ip(p)) = decode(&frame) {
            if let Routed::TimeExceeded(n) = forward(&mut frame, p.l3 as usize, p.family, &w.routes, &Gateway::DEFAULT, &mut out) {
                assert!(decode(&out[..n]).is_ok(), "a time-exceeded that does not decode");
            }
        }
    }
    // Keep the table from filling for good: expire everything now and then.
    if data.first() == Some(&0xff) {
        w.conntrack.sweep(u64::MAX / 4, w.conntrack.capacity());
    }
});
