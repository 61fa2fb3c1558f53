//! A node's whole decision for a frame, stages 1 to 6, on real frames: the
//! pod asks for its gateway, opens a connection to a ClusterIP, the backend
//! pod on the same node answers, a backend on another node is reached by
//! its VTEP, and an expiring TTL comes back as ICMP.

use sluice_dataplane::neighbor::Gateway;
use sluice_dataplane::pipeline::{decide_one, Action, Answer, Core, Ingress};
use sluice_dataplane::route::{Egress, PortId};
use sluice_dataplane::Addr;
use sluice_tests::frames::{self, Ip, SYN, SYN_ACK};
use sluice_tests::verify::check;
use sluice_tests::{backend_mac, NodeWorld, CLIENT_V4, VIP_V4};
use std::net::IpAddr;

const CLIENT_PORT: PortId = PortId(1);

struct Node {
    world: NodeWorld,
    core: Core,
    /// Frames the burst function did not drop: sent, answered, or for the
    /// host.
    left: u64,
}

impl Node {
    fn new() -> Node {
        Node {
            world: NodeWorld::new(),
            core: Core::default(),
            left: 0,
        }
    }
    /// A frame from the client pod's port.
    fn handle(&mut self, frame: &mut [u8], reply: &mut [u8]) -> Action {
        self.handle_from(Ingress::Pod(CLIENT_PORT), frame, reply)
    }
    /// A burst of one; an answer's bytes are copied to `reply`.
    fn handle_from(&mut self, ingress: Ingress, frame: &mut [u8], reply: &mut [u8]) -> Action {
        let a = decide_one(frame, ingress, &self.world.tables(), &mut self.core);
        if let Action::Reply { len, .. } = a {
            let r = self.core.reply(0, len);
            reply[..r.len()].copy_from_slice(r);
        }
        if !matches!(a, Action::Drop(_)) {
            self.left += 1;
        }
        a
    }
    /// Every frame was dropped under a reason, or left.
    fn books_balance(&self) {
        let c = &self.core.counters;
        assert_eq!(c.rx, c.total_drops() + self.left, "{c:?}");
    }
}

fn to_ip(a: IpAddr) -> Ip {
    match a {
        IpAddr::V4(a) => Ip::V4(a.octets()),
        IpAddr::V6(a) => Ip::V6(a.octets()),
    }
}

#[test]
fn a_pod_reaches_a_clusterip_and_the_answer_comes_back_through_the_gateway() {
    let mut node = Node::new();
    let mut reply = [0u8; 1600];

    // 1. The pod asks who 169.254.1.1 is, and is told.
    let mut arp = frames::arp_request(CLIENT_V4, [169, 254, 1, 1]);
    let Action::Reply {
        len,
        answer: Answer::Neighbor,
    } = node.handle(&mut arp, &mut reply)
    else {
        panic!("no ARP answer")
    };
    assert_eq!(
        &reply[22..28],
        &Gateway::DEFAULT.mac,
        "sender MAC of the answer is the gateway's"
    );
    assert_eq!(len, 42);

    // 2. Many connections to the ClusterIP: each leaves toward its backend.
    let mut seen_local = 0;
    let mut seen_tunnel = 0;
    for sport in 40000..40300u16 {
        let mut syn = frames::tcp(Ip::V4(CLIENT_V4), sport, Ip::V4(VIP_V4), 80, SYN, b"");
        let action = node.handle(&mut syn, &mut reply);
        let out = check(&syn);
        assert_eq!(out.ttl, 63, "one hop");
        match action {
            Action::Transmit(Egress::Pod { port, mac }) => {
                let IpAddr::V4(b) = out.dst else { panic!() };
                let i = b.octets()[3];
                assert_eq!((port, mac), (PortId(u16::from(i) + 10), backend_mac(i)));
                assert_eq!(&syn[0..6], &mac, "to the backend pod's MAC");
                assert_eq!(&syn[6..12], &Gateway::DEFAULT.mac, "from the gateway's");
                seen_local += 1;

                // 3. The backend pod answers; the client sees the VIP.
                let mut back = frames::tcp(
                    to_ip(out.dst),
                    out.dport,
                    Ip::V4(CLIENT_V4),
                    sport,
                    SYN_ACK,
                    b"",
                );
                assert_eq!(
                    node.handle_from(Ingress::Pod(port), &mut back, &mut reply),
                    Action::Transmit(Egress::Pod {
                        port: CLIENT_PORT,
                        mac: frames::CLIENT_MAC
                    })
                );
                let seen = check(&back);
                assert_eq!((seen.src, seen.sport), (IpAddr::from(VIP_V4), 80));
            }
            Action::Transmit(Egress::Tunnel { vtep }) => {
                assert_eq!(vtep, Addr::from_v4([198, 18, 0, 2]));
                assert_eq!((out.dst, out.dport), (IpAddr::from([198, 18, 2, 4]), 9090));
                seen_tunnel += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(
        seen_local > 150 && seen_tunnel > 60,
        "{seen_local} local, {seen_tunnel} by tunnel"
    );
    node.books_balance();
}

#[test]
fn an_expiring_ttl_comes_back_as_time_exceeded_and_node_traffic_goes_to_the_host() {
    let mut node = Node::new();
    let mut reply = [0u8; 1600];
    let mut f = frames::udp(
        Ip::V4(CLIENT_V4),
        33434,
        Ip::V4([198, 18, 2, 3]),
        33435,
        b"trace",
    );
    f[22] = 1;
    f[24] = 0;
    f[25] = 0;
    let c = sluice_dataplane::wire::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    let Action::Reply {
        len,
        answer: Answer::TimeExceeded,
    } = node.handle(&mut f, &mut reply)
    else {
        panic!("no time exceeded")
    };
    let err = check(&reply[..usize::from(len)]);
    assert_eq!(
        (err.src, err.dst),
        (IpAddr::from(Gateway::DEFAULT.v4), IpAddr::from(CLIENT_V4))
    );

    let mut ssh = frames::tcp(
        Ip::V4(CLIENT_V4),
        40000,
        Ip::V4([198, 18, 0, 1]),
        22,
        SYN,
        b"",
    );
    assert_eq!(node.handle(&mut ssh, &mut reply), Action::ToHost);
    node.books_balance();
}

/// A pod may send only from its own addresses. From another pod's, the
/// node's or any address, the frame is dropped before conntrack (no flow
/// is opened, no reply steered to the victim) and counted; link-local
/// sources (neighbour and router discovery) are the pod's too.
#[test]
fn a_pod_sending_from_an_address_not_its_own_is_dropped_before_conntrack() {
    use sluice_dataplane::DropReason;
    let mut node = Node::new();
    let mut reply = [0u8; 1600];
    let victim = [198, 18, 2, 2]; // a backend pod's, on port 12
    let flows = node.world.conntrack.len();
    for (what, src) in [
        ("another pod's address", victim),
        ("the node's", [198, 18, 0, 1]),
        ("an address of nobody's", [203, 0, 113, 9]),
        ("0.0.0.0", [0, 0, 0, 0]),
    ] {
        // To the ClusterIP: a flow would be opened, DNATed, and its
        // replies sent to the victim.
        let mut syn = frames::tcp(Ip::V4(src), 40000, Ip::V4(VIP_V4), 80, SYN, b"");
        assert_eq!(
            node.handle(&mut syn, &mut reply),
            Action::Drop(DropReason::SourceSpoofed),
            "{what}"
        );
        // To a pod directly, and as plain UDP.
        let mut udp = frames::udp(Ip::V4(src), 5353, Ip::V4([198, 18, 2, 3]), 53, b"q");
        assert_eq!(
            node.handle(&mut udp, &mut reply),
            Action::Drop(DropReason::SourceSpoofed),
            "{what}"
        );
    }
    assert_eq!(
        node.world.conntrack.len(),
        flows,
        "a spoofed packet opens no flow"
    );
    assert_eq!(node.core.counters.dropped(DropReason::SourceSpoofed), 8);
    // A link-local source is the pod's own only on the link: to a router
    // solicitation's multicast it passes the screen (and is not routed),
    // to anywhere else it is spoofed.
    let ll = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x53, 0, 0, 0, 0, 0, 9];
    let mut out = frames::udp(
        Ip::V6(ll),
        5353,
        Ip::V6([
            0x20, 0x01, 0x0d, 0xb8, 0, 0x18, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3,
        ]),
        53,
        b"q",
    );
    assert_eq!(
        node.handle(&mut out, &mut reply),
        Action::Drop(DropReason::SourceSpoofed),
        "a link-local source off the link"
    );
    let mut mcast = frames::udp(
        Ip::V6(ll),
        5353,
        Ip::V6([0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfb]),
        5353,
        b"q",
    );
    assert_eq!(
        node.handle(&mut mcast, &mut reply),
        Action::Drop(DropReason::NotRoutable),
        "mDNS from a link-local source: the link's, not spoofed"
    );
    assert_eq!(node.world.conntrack.len(), flows);
    // The same frame from the victim's own port passes.
    let mut syn = frames::tcp(Ip::V4(victim), 40000, Ip::V4(VIP_V4), 80, SYN, b"");
    assert!(matches!(
        node.handle_from(Ingress::Pod(PortId(12)), &mut syn, &mut reply),
        Action::Transmit(_)
    ));
    // The client's own address from its own port passes; the node sends
    // from any of its addresses.
    let mut own = frames::udp(Ip::V4(CLIENT_V4), 5353, Ip::V4([198, 18, 2, 3]), 53, b"q");
    assert!(matches!(
        node.handle(&mut own, &mut reply),
        Action::Transmit(_)
    ));
    let mut host = frames::udp(
        Ip::V4([198, 18, 0, 1]),
        5353,
        Ip::V4([198, 18, 2, 3]),
        53,
        b"q",
    );
    assert!(matches!(
        node.handle_from(Ingress::Host, &mut host, &mut reply),
        Action::Transmit(_)
    ));
    node.books_balance();
}

/// A packet that a later stage drops leaves no flow behind: a flood of
/// TTL=1 SYNs to a ClusterIP is answered with time-exceeded, and the
/// conntrack holds none of them (as the kernel never confirms the entry
/// of a packet it dropped).
#[test]
fn a_flood_of_expiring_syns_to_a_clusterip_leaves_no_flow() {
    let mut node = Node::new();
    let mut reply = [0u8; 1600];
    let before = node.world.conntrack.len();
    for sport in 20000..21000u16 {
        let mut syn = frames::tcp(Ip::V4(CLIENT_V4), sport, Ip::V4(VIP_V4), 80, SYN, b"");
        // TTL 1, header checksum redone.
        syn[22] = 1;
        syn[24] = 0;
        syn[25] = 0;
        let c = sluice_dataplane::wire::checksum::checksum(&syn[14..34]);
        syn[24..26].copy_from_slice(&c.to_be_bytes());
        assert!(
            matches!(
                node.handle(&mut syn, &mut reply),
                Action::Reply {
                    answer: Answer::TimeExceeded,
                    ..
                }
            ),
            "time exceeded for port {sport}"
        );
    }
    assert_eq!(node.world.conntrack.len(), before, "no flow was kept");
    // A SYN that lives on is kept as ever.
    let mut syn = frames::tcp(Ip::V4(CLIENT_V4), 21000, Ip::V4(VIP_V4), 80, SYN, b"");
    assert!(matches!(
        node.handle(&mut syn, &mut reply),
        Action::Transmit(_)
    ));
    assert_eq!(node.world.conntrack.len(), before + 1);
    node.books_balance();
}

/// A backend pod reaching its own Service: when Maglev picks the pod
/// itself, the flow leaves with the gateway's address as source (and only
/// that flow: a pick of another pod keeps the pod's address), so the pod's
/// answer comes back through the dataplane and reaches it from the VIP.
#[test]
fn a_pod_reaches_itself_through_its_own_service() {
    let mut node = Node::new();
    let mut reply = [0u8; 1600];
    let me = [198, 18, 2, 2];
    let my_port = PortId(12);
    let (mut hairpins, mut others) = (0, 0);
    for sport in 50000..50060u16 {
        let mut syn = frames::tcp(Ip::V4(me), sport, Ip::V4(VIP_V4), 80, SYN, b"");
        let a = node.handle_from(Ingress::Pod(my_port), &mut syn, &mut reply);
        let out = check(&syn);
        if out.dst != IpAddr::from(me) {
            assert_eq!(
                out.src,
                IpAddr::from(me),
                "an ordinary flow keeps its source"
            );
            others += 1;
            continue;
        }
        hairpins += 1;
        assert_eq!(
            a,
            Action::Transmit(Egress::Pod {
                port: my_port,
                mac: backend_mac(2)
            })
        );
        assert_eq!(
            (out.src, out.sport, out.dport),
            (IpAddr::from([169, 254, 1, 1]), sport, 8080),
            "the hairpin flow leaves from the gateway"
        );
        // The pod answers the gateway; the answer reaches it from the VIP.
        let mut back = frames::tcp(
            Ip::V4(me),
            8080,
            Ip::V4([169, 254, 1, 1]),
            sport,
            SYN_ACK,
            b"",
        );
        let a = node.handle_from(Ingress::Pod(my_port), &mut back, &mut reply);
        assert_eq!(
            a,
            Action::Transmit(Egress::Pod {
                port: my_port,
                mac: backend_mac(2)
            })
        );
        let seen = check(&back);
        assert_eq!(
            (seen.src, seen.sport, seen.dst, seen.dport),
            (IpAddr::from(VIP_V4), 80, IpAddr::from(me), sport)
        );
    }
    assert!(
        hairpins > 0 && others > 0,
        "{hairpins} hairpins, {others} others"
    );
    node.books_balance();
}
