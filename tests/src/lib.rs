//! Shared helpers for the integration tests: a small cluster's Service
//! table, frames built with etherparse, and an independent check of every
//! frame the pipeline emits.

pub mod apiserver;
pub use sluice_fixtures::frames;
pub mod labkit;
pub mod verify;

use sluice_dataplane::conntrack::{Conntrack, Timeouts};
use sluice_dataplane::pipeline::{decide_one, Action, Core, Ingress, Tables};
use sluice_dataplane::route::{Egress, Routes};
use sluice_dataplane::service::{ServiceSpec, ServiceTable};
use sluice_dataplane::Addr;
use std::net::IpAddr;

pub fn ip(s: &str) -> Addr {
    Addr::from(s.parse::<IpAddr>().expect("test address"))
}

pub use sluice_fixtures::{
    bench_frontend, many_services, web_service, CLIENT_V4, CLIENT_V6, VIP_V4, VIP_V6,
};

/// What the burst function decides for a frame of `Node`, which has no
/// local pods: forwarded out of the uplink.
pub const FORWARD: Action = Action::Transmit(Egress::Uplink);

/// A node's Service tables and one core, with no pods nor host addresses
/// (everything routes to the uplink), for driving frames through the
/// burst function from the uplink (no source screen).
pub struct Node {
    pub services: ServiceTable,
    pub conntrack: Conntrack,
    pub routes: Routes,
    pub core: Core,
    /// Frames the burst function did not drop (its caller, a worker,
    /// counts where they went).
    pub left: u64,
}

impl Node {
    pub fn new(specs: &[ServiceSpec], ct_capacity: usize) -> Node {
        let (services, problems) = ServiceTable::build(specs);
        assert!(problems.is_empty(), "{problems:?}");
        Node {
            services,
            conntrack: Conntrack::new(ct_capacity, Timeouts::default()),
            routes: Routes::default(),
            core: Core::default(),
            left: 0,
        }
    }

    pub fn tables(&self) -> Tables<'_> {
        Tables::new(&self.services, &self.conntrack, &self.routes)
    }

    pub fn web() -> Node {
        Node::new(&[web_service()], 4096)
    }

    /// One frame, a burst of one.
    pub fn process(&mut self, frame: &mut [u8]) -> Action {
        let t = Tables::new(&self.services, &self.conntrack, &self.routes);
        let a = decide_one(frame, Ingress::Uplink, &t, &mut self.core);
        if !matches!(a, Action::Drop(_)) {
            self.left += 1;
        }
        a
    }

    /// Every frame was dropped under a reason, or left.
    pub fn assert_books_balance(&self) {
        let c = &self.core.counters;
        assert_eq!(
            c.rx,
            c.total_drops() + self.left,
            "every frame is accounted for: {c:?}"
        );
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
        routes.add_pod(Addr::from_v4(CLIENT_V4), PortId(1), frames::CLIENT_MAC);
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

    pub fn tables(&self) -> Tables<'_> {
        Tables::new(&self.services, &self.conntrack, &self.routes)
    }
}

impl Default for NodeWorld {
    fn default() -> Self {
        NodeWorld::new()
    }
}
