//! The worker loop over the in-memory backend: frames in on pod ports, out
//! on the right ports, replies back where they came from, no frame of the
//! pool lost, and the loop stops on its flag.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use sluice_dataplane::io::memory::MemoryBackend;
use sluice_dataplane::route::PortId;
use sluice_dataplane::worker::{PortMap, PortMapError, Worker};
use sluice_dataplane::DropReason;
use sluice_tests::frames::{self, Ip, SYN, SYN_ACK};
use sluice_tests::verify::check;
use sluice_tests::{NodeWorld, CLIENT_V4, VIP_V4};

const POOL: usize = 512;

/// Backend ports: 0 the client pod, 1 and 2 the backend pods, 3 the uplink.
fn worker() -> Worker<MemoryBackend> {
    let map = PortMap::new(
        &[(PortId(1), 0), (PortId(12), 1), (PortId(13), 2)],
        Some(3),
        4,
    )
    .expect("a valid map");
    Worker::new(MemoryBackend::new(4, POOL), map)
}

#[test]
fn frames_go_out_of_the_right_ports_and_the_pool_loses_nothing() {
    let world = NodeWorld::new();
    let t = world.tables();
    let mut w = worker();

    w.backend.incoming[0].push_back(frames::arp_request(CLIENT_V4, [169, 254, 1, 1]));
    for sport in 40000..40100u16 {
        w.backend.incoming[0].push_back(frames::tcp(
            Ip::V4(CLIENT_V4),
            sport,
            Ip::V4(VIP_V4),
            80,
            SYN,
            b"",
        ));
    }
    while w.poll(&t) > 0 {}
    assert_eq!(
        w.backend.sent[0].len(),
        1,
        "the ARP answer goes back out of the client's port"
    );
    let to_backends = w.backend.sent[1].len() + w.backend.sent[2].len();
    assert!(
        to_backends > 40,
        "{to_backends} SYNs reached local backends"
    );
    assert_eq!(
        to_backends as u64 + w.packet_counters().dropped(DropReason::NoEgress),
        100,
        "the rest had no way out (their backend is on another node)"
    );
    assert_eq!(
        world.conntrack.len(),
        to_backends,
        "a flow whose first frame had no way out is not kept"
    );

    // The backends answer; every answer reaches the client from the VIP.
    for port in [1usize, 2] {
        let syns: Vec<_> = w.backend.sent[port].drain(..).collect();
        for syn in syns {
            let s = check(&syn);
            let IpAddr::V4(b) = s.dst else { panic!() };
            w.backend.incoming[port].push_back(frames::tcp(
                Ip::V4(b.octets()),
                s.dport,
                Ip::V4(CLIENT_V4),
                s.sport,
                SYN_ACK,
                b"",
            ));
        }
    }
    while w.poll(&t) > 0 {}
    let answers = &w.backend.sent[0][1..];
    assert_eq!(answers.len(), to_backends);
    for a in answers {
        let s = check(a);
        assert_eq!((s.src, s.sport), (IpAddr::from(VIP_V4), 80));
    }
    assert_eq!(
        w.backend.free_frames(),
        POOL,
        "every frame came back to the pool"
    );
    let c = w.packet_counters();
    assert_eq!(c.rx, c.settled(), "every frame counted once: {c:?}");
    assert_eq!(c.neighbor_replies, 1);
    assert_eq!(
        c.forwarded,
        2 * to_backends as u64,
        "forwarded: the SYNs and SYN-ACKs the TX rings took"
    );
}

#[test]
fn a_full_tx_ring_drops_and_counts_without_leaking() {
    let world = NodeWorld::new();
    let t = world.tables();
    let mut w = worker();
    w.backend.tx_ring = 2;
    for sport in 0..32u16 {
        w.backend.incoming[1].push_back(frames::tcp(
            Ip::V4([198, 18, 2, 2]),
            8080,
            Ip::V4(CLIENT_V4),
            1000 + sport,
            SYN_ACK,
            b"",
        ));
    }
    w.poll(&t);
    assert_eq!(w.backend.sent[0].len(), 2);
    let c = w.packet_counters();
    assert_eq!(c.dropped(DropReason::TxRingFull), 30);
    assert_eq!(c.forwarded, 2, "forwarded counts only what a ring took");
    assert_eq!(c.rx, c.settled());
    assert_eq!(w.backend.free_frames(), POOL);
}

#[test]
fn bad_port_maps_are_refused_with_the_reason() {
    assert_eq!(
        PortMap::new(&[(PortId(1), 5)], None, 4).unwrap_err(),
        PortMapError::NoSuchPort {
            node_port: 1,
            backend_port: 5,
            ports: 4
        }
    );
    assert_eq!(
        PortMap::new(&[(PortId(1), 0), (PortId(2), 0)], None, 4).unwrap_err(),
        PortMapError::Shared { backend_port: 0 }
    );
    assert_eq!(
        PortMap::new(&[(PortId(1), 0)], Some(0), 4).unwrap_err(),
        PortMapError::Shared { backend_port: 0 }
    );
    assert!(PortMapError::Shared { backend_port: 3 }
        .to_string()
        .contains("port 3"));
}

#[test]
fn the_loop_stops_on_its_flag() {
    let world = NodeWorld::new();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            let t = world.tables();
            let mut w = worker();
            w.backend.incoming[0].push_back(frames::arp_request(CLIENT_V4, [169, 254, 1, 1]));
            w.run(&t, &stop, sluice_dataplane::worker::Idle::BUSY);
            w.backend.sent[0].len()
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        stop.store(true, Ordering::Relaxed);
        assert_eq!(h.join().unwrap(), 1, "it answered before it stopped");
    });
}

/// The exception path through the worker: the wire's ARP for the node's
/// address reaches the host and the host's answer goes back out of the
/// uplink; a pod's TCP to the node reaches the host addressed to the host's
/// MAC, and the host's answer reaches the pod.
#[test]
fn the_host_path_carries_the_nodes_own_traffic_both_ways() {
    use sluice_dataplane::io::memory::MemoryHost;
    use sluice_dataplane::io::HostPath;
    use std::sync::{Arc, Mutex};
    /// A host whose received frames the test reads after the worker owns it.
    struct Seen(MemoryHost, Arc<Mutex<Vec<Vec<u8>>>>);
    impl HostPath for Seen {
        fn mac(&self) -> [u8; 6] {
            self.0.mac()
        }
        fn send(&mut self, frame: &[u8]) -> bool {
            self.1.lock().unwrap().push(frame.to_vec());
            true
        }
        fn recv(&mut self, buf: &mut [u8]) -> Option<usize> {
            self.0.recv(buf)
        }
    }
    let world = NodeWorld::new();
    let t = world.tables();
    let mut w = worker();
    let host_mac = [0x02, 0x53, 198, 18, 0, 1];
    let mut host = MemoryHost {
        mac: host_mac,
        ..MemoryHost::default()
    };
    // The wire asks who has the node's address.
    w.backend.incoming[3].push_back(frames::arp_request([198, 18, 0, 9], [198, 18, 0, 1]));
    // A pod opens a connection to a server on the node.
    w.backend.incoming[0].push_back(frames::tcp(
        Ip::V4(CLIENT_V4),
        40000,
        Ip::V4([198, 18, 0, 1]),
        22,
        SYN,
        b"",
    ));
    // The host's answers: its ARP reply to the wire, its SYN-ACK to the pod.
    let mut reply = frames::arp_request([198, 18, 0, 1], [198, 18, 0, 9]);
    reply[21] = 2; // ARP operation: reply
    host.incoming.push_back(reply.clone());
    let mut synack = frames::tcp(
        Ip::V4([198, 18, 0, 1]),
        22,
        Ip::V4(CLIENT_V4),
        40000,
        SYN_ACK,
        b"",
    );
    synack[..6].copy_from_slice(&sluice_dataplane::neighbor::Gateway::DEFAULT.mac);
    host.incoming.push_back(synack);
    let seen = Arc::new(Mutex::new(Vec::new()));
    w.host = Some(Box::new(Seen(host, seen.clone())));
    // The host is read every 16th round (it costs a syscall): enough rounds
    // for both of its frames.
    for _ in 0..64 {
        w.poll(&t);
    }

    let got = seen.lock().unwrap();
    assert_eq!(got.len(), 2, "the ARP request and the SYN reach the host");
    for f in got.iter() {
        assert_eq!(&f[..6], &host_mac, "addressed to the host's interface");
    }
    // Ports are polled in order: the pod's port 0 before the uplink's 3.
    assert_eq!(&got[1][12..14], &[0x08, 0x06], "the ARP request");
    let syn = check(&got[0]);
    assert_eq!((syn.dst, syn.dport), (IpAddr::from([198, 18, 0, 1]), 22));

    assert_eq!(w.counters.host_tx, 2, "{:?}", w.counters);
    assert_eq!(w.counters.host_rx, 2, "{:?}", w.counters);
    assert_eq!(
        w.backend.sent[3],
        vec![reply],
        "the host's ARP reply, out of the uplink"
    );
    let to_pod = &w.backend.sent[0];
    assert_eq!(to_pod.len(), 1, "the host's SYN-ACK reaches the pod");
    let s = check(&to_pod[0]);
    assert_eq!((s.src, s.sport), (IpAddr::from([198, 18, 0, 1]), 22));
    assert_eq!(&to_pod[0][..6], &frames::CLIENT_MAC, "addressed to the pod");
    assert_eq!(w.backend.free_frames(), POOL);
}

/// A later fragment that comes before its first is held, not dropped, and
/// follows its first out of the same port once the first has passed,
/// translated to the same backend; one whose first never comes is freed
/// after a second and counted.
#[test]
fn a_later_fragment_before_its_first_is_held_and_follows_it() {
    let world = NodeWorld::new();
    let t = world.tables();
    let mut w = worker();
    let data = [0x5au8; 600];
    // A client port whose datagrams Maglev sends to a backend on this
    // node (.2 or .3; .4 is another node's).
    let sport = (7000u16..)
        .find(|&sport| {
            let k = sluice_dataplane::FlowKey {
                src: sluice_dataplane::Addr::from_v4(CLIENT_V4),
                dst: sluice_dataplane::Addr::from_v4(VIP_V4),
                sport,
                dport: 53,
                proto: sluice_dataplane::Proto::Udp,
                family: sluice_dataplane::Family::V4,
            };
            let id = world.services.lookup(&k).expect("the frontend");
            let b = world.services.select(id, &k).expect("a backend");
            b.addr.v4_octets()[3] != 4
        })
        .unwrap();
    let dgram = frames::udp(Ip::V4(CLIENT_V4), sport, Ip::V4(VIP_V4), 53, &data);
    let (first, later) = frames::fragment_v4(&dgram, 256);
    w.backend.incoming[0].push_back(later.clone());
    while w.poll(&t) > 0 {}
    assert_eq!(w.packet_counters().held, 1);
    assert_eq!(w.packet_counters().dropped(DropReason::FragmentUnknown), 0);
    w.backend.incoming[0].push_back(first);
    while w.poll(&t) > 0 {}
    let mut out: Vec<Vec<u8>> = Vec::new();
    for p in 1..4 {
        out.extend(w.backend.sent[p].drain(..));
    }
    assert_eq!(out.len(), 2, "both fragments left, by one port");
    let (a, b) = (&out[0], &out[1]);
    assert_eq!(
        (a[20] & 0x3f, a[21]),
        (0x20, 0),
        "the first fragment first (MF, offset 0)"
    );
    assert_eq!(&a[30..34], &b[30..34], "to the same backend");
    assert_eq!(
        &b[34..],
        &later[34..],
        "the later fragment's data untouched"
    );
    let c = w.packet_counters();
    assert_eq!(c.rx, c.settled(), "every frame counted once: {c:?}");
    // An orphan: held, then freed after a second.
    let mut orphan = later.clone();
    orphan[18] = 0x77; // another datagram
    orphan[24..26].copy_from_slice(&[0, 0]);
    let csum = etherparse::Ipv4HeaderSlice::from_slice(&orphan[14..])
        .unwrap()
        .to_header()
        .calc_header_checksum();
    orphan[24..26].copy_from_slice(&csum.to_be_bytes());
    w.backend.incoming[0].push_back(orphan);
    while w.poll(&t) > 0 {}
    assert_eq!(w.packet_counters().held, 2);
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    w.poll(&t);
    assert_eq!(w.counters.held_expired, 1);
    assert_eq!(w.backend.free_frames(), POOL, "no frame of the pool lost");
}

/// A backend's segment too big for the client's port (its MTU lower)
/// is not sent; the backend gets fragmentation-needed with that MTU,
/// quoting the segment as it sent it (its own address and port), so that
/// its path-MTU discovery works through the ClusterIP.
#[test]
fn a_frame_too_big_for_its_port_is_answered_with_fragmentation_needed() {
    let world = NodeWorld::new();
    let t = world.tables();
    let mut w = worker();
    w.backend.mtus[0] = 1000;
    // A connection to a local backend (.2 or .3).
    let mut sport = 41000;
    let (b, bport, bp) = loop {
        w.backend.incoming[0].push_back(frames::tcp(
            Ip::V4(CLIENT_V4),
            sport,
            Ip::V4(VIP_V4),
            80,
            SYN,
            b"",
        ));
        while w.poll(&t) > 0 {}
        if let Some((p, syn)) = (1..3).find_map(|p| w.backend.sent[p].pop().map(|s| (p, s))) {
            let s = check(&syn);
            let IpAddr::V4(b) = s.dst else { panic!() };
            break (b.octets(), s.dport, p);
        }
        sport += 1;
    };
    let big = frames::tcp(
        Ip::V4(b),
        bport,
        Ip::V4(CLIENT_V4),
        sport,
        frames::ACK,
        &[0x42; 1400],
    );
    w.backend.incoming[bp].push_back(big.clone());
    while w.poll(&t) > 0 {}
    assert!(
        w.backend.sent[0].is_empty(),
        "nothing too big reached the client"
    );
    assert_eq!(w.packet_counters().dropped(DropReason::MtuExceeded), 1);
    let err = w.backend.sent[bp].pop().expect("an answer to the backend");
    let p = etherparse::SlicedPacket::from_ethernet(&err).expect("etherparse");
    let Some(etherparse::TransportSlice::Icmpv4(icmp)) = p.transport else {
        panic!("not ICMP")
    };
    assert_eq!(
        icmp.icmp_type(),
        etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1000 }
        )
    );
    let seen = check(&err);
    assert_eq!(seen.dst, IpAddr::from(b), "to the backend");
    // The quoted header: the backend's own tuple.
    let q = icmp.payload();
    assert_eq!(&q[12..16], &b, "quoting the backend's address");
    assert_eq!(&q[16..20], &CLIENT_V4);
    assert_eq!(u16::from_be_bytes([q[20], q[21]]), bport);
    let c = w.packet_counters();
    assert_eq!(c.rx, c.settled(), "{c:?}");
}
