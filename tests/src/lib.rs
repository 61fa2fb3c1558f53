//! Shared helpers for the integration tests: a small cluster's Service
//! table, frames built with etherparse, and an independent check of every
//! frame the pipeline emits.

pub mod apiserver;
pub mod frames;
pub mod labkit;
pub mod verify;

use sluice_dataplane::conntrack::{Conntrack, Timeouts};
use sluice_dataplane::pipeline::{process, Tables, Worker};
use sluice_dataplane::service::{ServiceSpec, ServiceTable};
use sluice_dataplane::{Addr, Verdict};
use std::net::IpAddr;

pub fn ip(s: &str) -> Addr {
    Addr::from(s.parse::<IpAddr>().expect("test address"))
}

pub use sluice_perf::fixtures::{
    bench_frontend, many_services, web_service, CLIENT_V4, CLIENT_V6, VIP_V4, VIP_V6,
};

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
        Node {
            services,
            conntrack: Conntrack::new(ct_capacity, Timeouts::default()),
            worker: Worker::default(),
        }
    }

    pub fn web() -> Node {
        Node::new(&[web_service()], 4096)
    }

    pub fn process(&mut self, frame: &mut [u8]) -> Verdict {
        let t = Tables {
            services: &self.services,
            conntrack: &self.conntrack,
        };
        process(frame, &t, &mut self.worker)
    }
}

/// A node of the lab in miniature, for the node and worker tests: the
/// client pod 198.18.1.2 on node port 1, shop/web's backends .2 and .3 as
/// local pods on node ports 12 and 13, backend .4 on node 2 behind its VTEP
/// 198.18.0.2, and the node's own address 198.18.0.1.
pub struct NodeWorld {
    pub services: ServiceTable,
    pub conntrack: Conntrack,
    pub routes: sluice_dataplane::route::Routes,
}

pub fn backend_mac(i: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0x02, i]
}

impl NodeWorld {
    pub fn new() -> NodeWorld {
        use sluice_dataplane::route::{Cidr, PortId, Routes};
        let (services, problems) = ServiceTable::build(&[web_service()]);
        assert!(problems.is_empty(), "{problems:?}");
        let mut routes = Routes::default();
        routes.add_pod(Addr::from_v4(CLIENT_V4), PortId(1), frames::POD_MAC);
        for i in [2u8, 3] {
            routes.add_pod(
                Addr::from_v4([198, 18, 2, i]),
                PortId(u16::from(i) + 10),
                backend_mac(i),
            );
        }
        routes.add_tunnel(
            Cidr {
                addr: Addr::from_v4([198, 18, 2, 4]),
                len: 32,
                family: sluice_dataplane::Family::V4,
            },
            Addr::from_v4([198, 18, 0, 2]),
        );
        routes.add_host(Addr::from_v4([198, 18, 0, 1]));
        NodeWorld {
            services,
            conntrack: Conntrack::new(4096, Timeouts::default()),
            routes,
        }
    }

    pub fn tables(&self) -> sluice_dataplane::node::NodeTables<'_> {
        sluice_dataplane::node::NodeTables {
            pipeline: Tables {
                services: &self.services,
                conntrack: &self.conntrack,
            },
            routes: &self.routes,
            gateway: sluice_dataplane::neighbor::Gateway::DEFAULT,
        }
    }
}

impl Default for NodeWorld {
    fn default() -> Self {
        NodeWorld::new()
    }
}
