//! The packet path allocates nothing: the daemon's worker loop (receive,
//! the burst function, staging, transmit) over the in-memory backend, on
//! new flows, established flows, replies, neighbour answers, ICMP
//! time-exceeded and malformed frames, counted by a global allocator that
//! tallies every allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use sluice_dataplane::io::memory::MemoryBackend;
use sluice_dataplane::route::PortId;
use sluice_dataplane::worker::{PortMap, Worker};
use sluice_tests::frames::{self, Ip, ACK, SYN, SYN_ACK};
use sluice_tests::{NodeWorld, CLIENT_V4, VIP_V4};
struct Counting;
static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwards the caller's layout to the system allocator.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `alloc` above with this layout.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Client frames from its port: per flow a SYN, data, a UDP query, with
/// a neighbour question, a TTL that runs out and a malformed frame mixed in.
fn client_frames(first_port: u16, flows: u16) -> Vec<Vec<u8>> {
    let (c, s) = (Ip::V4(CLIENT_V4), Ip::V4(VIP_V4));
    let mut out = vec![frames::arp_request(CLIENT_V4, [169, 254, 1, 1])];
    for p in first_port..first_port + flows {
        out.push(frames::tcp(c, p, s, 80, SYN, b""));
        out.push(frames::tcp(c, p, s, 80, ACK, b"hello"));
        out.push(frames::udp(c, p, s, 53, b"q"));
    }
    let mut ttl1 = frames::tcp(c, first_port, s, 80, SYN, b"");
    ttl1[22] = 1;
    ttl1[24..26].copy_from_slice(&[0, 0]);
    let sum = sluice_dataplane::wire::checksum::checksum(&ttl1[14..34]);
    ttl1[24..26].copy_from_slice(&sum.to_be_bytes());
    out.push(ttl1);
    out.push(vec![0u8; 20]);
    out
}

/// A local backend's answers to the client's flows (whether or not the
/// flow chose it: the others are forwarded untracked).
fn backend_frames(first_port: u16, flows: u16) -> Vec<Vec<u8>> {
    (first_port..first_port + flows)
        .map(|p| {
            frames::tcp(
                Ip::V4([198, 18, 2, 2]),
                8080,
                Ip::V4(CLIENT_V4),
                p,
                SYN_ACK,
                b"",
            )
        })
        .collect()
}

#[test]
fn the_worker_loop_allocates_nothing() {
    let world = NodeWorld::new();
    let t = world.tables();
    // Backend ports: 0 the client pod, 1 and 2 the local backends.
    let map = PortMap::new(&[(PortId(1), 0), (PortId(12), 1), (PortId(13), 2)], None, 3)
        .expect("a valid map");
    let mut w = Worker::new(MemoryBackend::new(3, 4096), map);
    // A first round of traffic outside the count: the backend's TX queues
    // reach their size once.
    w.backend.replay(0, client_frames(10_000, 500));
    w.backend.replay(1, backend_frames(10_000, 500));
    for _ in 0..200 {
        w.poll(&t);
    }
    // Fresh flows under the count: made before it starts, as a NIC hands
    // frames over ready.
    w.backend.replay(0, client_frames(20_000, 2000));
    w.backend.replay(1, backend_frames(20_000, 2000));
    let before = w.packet_counters().clone();
    COUNTING.store(true, Ordering::SeqCst);
    for _ in 0..1000 {
        w.poll(&t);
    }
    COUNTING.store(false, Ordering::SeqCst);
    let allocs = ALLOCS.load(Ordering::SeqCst);
    let c = w.packet_counters();
    assert_eq!(allocs, 0, "allocations on the packet path: {c:?}");
    // What ran under the count: every kind of frame, each to its end.
    assert!(c.rx - before.rx >= 30_000, "{c:?}");
    assert!(c.ct_new - before.ct_new >= 2000, "new flows: {c:?}");
    assert!(c.ct_hits > before.ct_hits, "established flows: {c:?}");
    assert!(c.forwarded > before.forwarded, "{c:?}");
    assert!(c.neighbor_replies > before.neighbor_replies, "{c:?}");
    assert!(c.time_exceeded > before.time_exceeded, "{c:?}");
    assert!(c.total_drops() > before.total_drops(), "{c:?}");
    assert_eq!(c.rx, c.settled());
}
