//! The daemon's worker loop on arbitrary frames: the in-memory backend
//! feeds them to the burst function from a pod's port, the host's or the
//! uplink's, against the fixtures' Services (both families), a local pod,
//! another node's CIDR, the node's address and a small conntrack that fills
//! up. No input may panic; every frame is counted once for its outcome;
//! no frame of the pool is lost; whatever leaves, rewritten or answered,
//! still decodes and is no longer than a frame.
#![no_main]

use std::cell::RefCell;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sluice_dataplane::conntrack::{Conntrack, Timeouts};
use sluice_dataplane::decode::decode;
use sluice_dataplane::io::memory::{MemoryBackend, MemoryHost};
use sluice_dataplane::pipeline::Tables;
use sluice_dataplane::route::{Cidr, PortId, Routes};
use sluice_dataplane::service::ServiceTable;
use sluice_dataplane::worker::{PortMap, Worker, HOLD_SLOTS};
use sluice_dataplane::{Addr, Family};

const POOL: usize = 256;

struct World {
    services: ServiceTable,
    conntrack: Conntrack,
    routes: Routes,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        // The fixtures' shop/web: TCP, UDP and SCTP ports in both
        // families, ready and terminating endpoints.
        let (services, _) = ServiceTable::build(&[sluice_fixtures::web_service()]);
        let mut routes = Routes::default();
        // The client pod on node port 0, a backend pod on node port 1.
        routes.add_pod(
            Addr::from_v4(sluice_fixtures::CLIENT_V4),
            PortId(0),
            sluice_fixtures::frames::CLIENT_MAC,
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

thread_local! {
    /// One worker for the whole run, as the daemon has: inputs follow one
    /// another through the same loop, pool and conntrack.
    static WORKER: RefCell<Worker<MemoryBackend>> = RefCell::new({
        // Backend ports: 0 and 1 the pods', 2 the uplink.
        let map = PortMap::new(&[(PortId(0), 0), (PortId(1), 1)], Some(2), 3).expect("map");
        Worker::new(MemoryBackend::new(3, POOL), map)
    });
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let t = Tables::new(&w.services, &w.conntrack, &w.routes);
    WORKER.with_borrow_mut(|worker| {
        let before = worker.packet_counters().clone();
        // The frame's length picks where it comes from (a pod, the uplink,
        // or the host), so that the seeds stay plain frames for both
        // targets.
        let frame = data;
        let mut host = MemoryHost {
            mac: [2, 0x53, 0, 0, 0, 1],
            ..MemoryHost::default()
        };
        match data.len() % 4 {
            from @ (0 | 1 | 2) => worker.backend.incoming[from].push_back(frame.to_vec()),
            _ => host.incoming.push_back(frame.to_vec()),
        }
        worker.host = Some(Box::new(host));
        // The host is read every 16th round: enough rounds for it.
        for _ in 0..16 {
            worker.poll(&t);
        }
        let c = worker.packet_counters();
        assert_eq!(c.rx, c.settled(), "every frame counted once: {c:?}");
        // This input's frame, and the held fragments given back (they
        // count again as received).
        assert!(c.rx - before.rx <= 1 + HOLD_SLOTS as u64);
        assert_eq!(
            worker.backend.free_frames(),
            POOL,
            "a frame of the pool was lost"
        );
        for sent in worker.backend.sent.iter_mut().flat_map(|s| s.drain(..)) {
            assert!(sent.len() <= 2048);
            if sent.as_slice() != frame {
                assert!(
                    decode(&sent).is_ok(),
                    "what left no longer decodes: {sent:?}"
                );
            }
        }
    });
    // Keep the table from filling for good: expire everything now and then.
    if data.first() == Some(&0xff) {
        w.conntrack.sweep(u64::MAX / 4, w.conntrack.capacity());
    }
});
