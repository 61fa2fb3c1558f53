//! The pipeline's entry point on arbitrary frames, against a table with
//! Services in both families and a small conntrack that fills up: no input
//! may panic, every frame is accounted for, and whatever the pipeline
//! forwards after rewriting still decodes.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sluice_dataplane::conntrack::{Conntrack, Timeouts};
use sluice_dataplane::decode::decode;
use sluice_dataplane::pipeline::{process, Tables, Worker};
use sluice_dataplane::service::{Conditions, EndpointSpec, PortSpec, ServiceSpec, ServiceTable, TargetPort};
use sluice_dataplane::{Addr, Proto, Verdict};

struct World {
    services: ServiceTable,
    conntrack: Conntrack,
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
        World { services, conntrack: Conntrack::with_seed(4096, Timeouts::default(), 1) }
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
    // Keep the table from filling for good: expire everything now and then.
    if data.first() == Some(&0xff) {
        w.conntrack.sweep(u64::MAX / 4, w.conntrack.capacity());
    }
});
