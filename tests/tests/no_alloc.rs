//! The packet path allocates nothing: new flows, established flows and
//! replies, counted by a global allocator that tallies every allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use sluice_dataplane::Verdict;
use sluice_tests::frames::{self, Ip, ACK, SYN, SYN_ACK};
use sluice_tests::verify::check;
use sluice_tests::{Node, CLIENT_V4, CLIENT_V6, VIP_V4, VIP_V6};

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

#[test]
fn the_packet_path_allocates_nothing() {
    let mut node = Node::new(
        &sluice_tests::many_services(1000)
            .into_iter()
            .chain([sluice_tests::web_service()])
            .collect::<Vec<_>>(),
        1 << 16,
    );
    // Frames are made before counting starts: a NIC hands them over ready.
    let mut batch = Vec::new();
    for i in 0..2000u16 {
        let (c, s) = if i % 2 == 0 {
            (Ip::V4(CLIENT_V4), Ip::V4(VIP_V4))
        } else {
            (Ip::V6(CLIENT_V6), Ip::V6(VIP_V6))
        };
        batch.push(frames::tcp(c, 20000 + i, s, 80, SYN, b""));
        batch.push(frames::tcp(c, 20000 + i, s, 80, ACK, b"hello"));
        batch.push(frames::udp(c, 20000 + i, s, 53, b"q"));
    }
    let mut bad = vec![0u8; 20];
    COUNTING.store(true, Ordering::SeqCst);
    let mut forwarded = 0;
    for f in batch.iter_mut() {
        if node.process(f) == Verdict::Forward {
            forwarded += 1;
        }
    }
    let _ = node.process(&mut bad);
    COUNTING.store(false, Ordering::SeqCst);
    assert_eq!(forwarded, 6000);
    assert_eq!(
        ALLOCS.load(Ordering::SeqCst),
        0,
        "allocations on the packet path"
    );

    // Replies too.
    let mut replies = Vec::new();
    for f in batch.iter().step_by(3).take(200) {
        let s = check(f);
        let to = |a: std::net::IpAddr| match a {
            std::net::IpAddr::V4(a) => Ip::V4(a.octets()),
            std::net::IpAddr::V6(a) => Ip::V6(a.octets()),
        };
        replies.push(frames::tcp(
            to(s.dst),
            s.dport,
            to(s.src),
            s.sport,
            SYN_ACK,
            b"",
        ));
    }
    COUNTING.store(true, Ordering::SeqCst);
    for f in replies.iter_mut() {
        assert_eq!(node.process(f), Verdict::Forward);
    }
    COUNTING.store(false, Ordering::SeqCst);
    assert_eq!(
        ALLOCS.load(Ordering::SeqCst),
        0,
        "allocations on the reply path"
    );
}
