//! Shared helpers for the integration tests: a small cluster's Service
//! table, frames built with etherparse, and an independent check of every
//! frame the pipeline emits.

pub mod frames;
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
