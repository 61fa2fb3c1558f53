//! The daemon's worker loop on arbitrary frames: the in-memory backend
//! feeds them to the burst function from a pod's port, the host's or the
//! uplink's, against tables with Services in both families, a local pod,
//! another node's CIDR, the node's address and a small conntrack that fills
//! up. No input may panic; every frame is counted once for its outcome;
//! no frame of the pool is lost; whatever leaves, rewritten or answered,
//! still decodes and is no longer than a frame.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sluice_dataplane::conntrack::{Conntrack, Timeouts};
use sluice_dataplane::decode::decode;
use sluice_dataplane::io::memory::{MemoryBackend, MemoryHost};
use sluice_dataplane::neighbor::Gateway;
use sluice_dataplane::pipeline::Tables;
use sluice_dataplane::route::{Cidr, PortId, Routes};
use sluice_dataplane::service::{
    Conditions, EndpointSpec, PortSpec, ServiceSpec, ServiceTable, TargetPort,
};
use sluice_dataplane::worker::{PortMap, Worker};
use sluice_dataplane::{Addr, Family, Proto};

const POOL: usize = 256;

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
            endpoints.push(EndpointSpec {
                addr: Addr::from_v4([198, 18, 2, i]),
                conditions: Conditions::READY,
                ports: vec![],
            });
            let mut v6 = [0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            v6[15] = i;
            endpoints.push(EndpointSpec {
                addr: Addr::from_v6(v6),
                conditions: Conditions::READY,
                ports: vec![],
            });
        }
        let ports = [
            (80, Proto::Tcp, 8080),
            (53, Proto::Udp, 5353),
            (38412, Proto::Sctp, 38412),
        ]
        .into_iter()
        .map(|(port, proto, t)| PortSpec {
            name: format!("p{port}"),
            port,
            proto,
            target: TargetPort::Number(t),
        })
        .collect();
        let spec = ServiceSpec {
            namespace: "fuzz".into(),
            name: "web".into(),
            cluster_ips: vec![
                Addr::from_v4([198, 19, 0, 10]),
                Addr::from_v6([
                    0x20, 0x01, 0x0d, 0xb8, 0, 0x19, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a,
                ]),
            ],
            ports,
            endpoints,
        };
        let (services, _) = ServiceTable::build(&[spec]);
        let mut routes = Routes::default();
        // The client pod on node port 0, a backend pod on node port 1.
        routes.add_pod(
            Addr::from_v4([198, 18, 1, 2]),
            PortId(0),
            [2, 0, 0, 0, 1, 2],
        );
        routes.add_pod(
            Addr::from_v4([198, 18, 2, 2]),
            PortId(1),
            [2, 0, 0, 0, 2, 2],
        );
        routes.add_tunnel(
            Cidr {
                addr: Addr::from_v4([198, 18, 3, 0]),
                len: 24,
                family: Family::V4,
            },
            Addr::from_v4([198, 18, 0, 3]),
        );
        routes.add_host(Addr::from_v4([198, 18, 0, 1]));
        World {
            services,
            conntrack: Conntrack::with_seed(4096, Timeouts::default(), 1),
            routes,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let t = Tables {
        services: &w.services,
        conntrack: &w.conntrack,
        routes: &w.routes,
        gateway: Gateway::DEFAULT,
    };
    // Backend ports: 0 and 1 the pods', 2 the uplink.
    let map = PortMap::new(&[(PortId(0), 0), (PortId(1), 1)], Some(2), 3).expect("map");
    let mut worker = Worker::new(MemoryBackend::new(3, POOL), map);
    worker.host = Some(Box::new(MemoryHost {
        mac: [2, 0x53, 0, 0, 0, 1],
        ..MemoryHost::default()
    }));
    // The frame's length picks where it comes from (a pod, the uplink, or
    // the host), so that the seeds stay plain frames for both targets.
    let frame = data;
    match data.len() % 4 {
        from @ (0 | 1 | 2) => worker.backend.incoming[from].push_back(frame.to_vec()),
        _ => {
            let host = MemoryHost {
                mac: [2, 0x53, 0, 0, 0, 1],
                incoming: [frame.to_vec()].into(),
                ..MemoryHost::default()
            };
            worker.host = Some(Box::new(host));
        }
    }
    // The host is read every 16th round: enough rounds for it.
    for _ in 0..16 {
        worker.poll(&t);
    }
    let c = worker.packet_counters();
    assert_eq!(c.rx, c.settled(), "every frame counted once: {c:?}");
    assert!(c.rx <= 1);
    assert_eq!(
        worker.backend.free_frames(),
        POOL,
        "a frame of the pool was lost"
    );
    for sent in worker.backend.sent.iter().flatten() {
        assert!(sent.len() <= 2048);
        if sent.as_slice() != frame {
            assert!(
                decode(sent).is_ok(),
                "what left no longer decodes: {sent:?}"
            );
        }
    }
    // The worker goes, the table stays: its spare entries go back.
    worker.core.return_slots(&w.conntrack);
    // Keep the table from filling for good: expire everything now and then.
    if data.first() == Some(&0xff) {
        w.conntrack.sweep(u64::MAX / 4, w.conntrack.capacity());
    }
});
