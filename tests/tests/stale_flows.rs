//! Flows whose backend leaves its Service, on real frames through the
//! burst function, the Service table changed in place as the control
//! plane changes it: UDP is picked again, TCP to a deleted endpoint is
//! reset from the ClusterIP, TCP to a terminating endpoint carries on. No
//! scan of the table: each flow finds out with its own next packet.

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use etherparse::{SlicedPacket, TransportSlice};
use sluice_dataplane::service::{Conditions, ServiceSpec};
use sluice_dataplane::{Action, Addr, Answer, DropReason};
use sluice_tests::frames::{self, Ip, ACK, SYN};
use sluice_tests::verify::check;
use sluice_tests::{Node, CLIENT_V4, CLIENT_V6, FORWARD, VIP_V4, VIP_V6};

/// shop/web with the endpoint at `addr` removed, or with its conditions.
fn web_with(addr: IpAddr, conditions: Option<Conditions>) -> ServiceSpec {
    let mut spec = sluice_tests::web_service();
    let a = Addr::from(addr);
    match conditions {
        None => spec.endpoints.retain(|e| e.addr != a),
        Some(c) => spec
            .endpoints
            .iter_mut()
            .filter(|e| e.addr == a)
            .for_each(|e| e.conditions = c),
    }
    spec
}

/// shop/web's node, its table with room to change in place (as the
/// daemon builds it).
fn web_node() -> Node {
    let mut node = Node::web();
    node.services = sluice_dataplane::service::ServiceTable::build_with_room(
        &[sluice_tests::web_service()],
        16,
    )
    .0;
    node
}

fn change(node: &mut Node, spec: &ServiceSpec) {
    node.services
        .upsert_service(spec)
        .expect("room in the table");
}

/// A client's datagram to the ClusterIP's DNS port: where it went.
fn dns(node: &mut Node, client: Ip, vip: Ip) -> IpAddr {
    let mut f = frames::udp(client, 5000, vip, 53, b"q");
    assert_eq!(node.process(&mut f), FORWARD);
    check(&f).dst
}

#[test]
fn a_udp_flow_whose_backend_left_is_picked_again_with_its_next_datagram() {
    for (client, vip) in [
        (Ip::V4(CLIENT_V4), Ip::V4(VIP_V4)),
        (Ip::V6(CLIENT_V6), Ip::V6(VIP_V6)),
    ] {
        let mut node = web_node();
        let first = dns(&mut node, client, vip);
        assert_eq!(dns(&mut node, client, vip), first, "the flow sticks");
        change(&mut node, &web_with(first, None));
        let next = dns(&mut node, client, vip);
        assert_ne!(next, first, "still sent to the endpoint that left");
        assert_eq!(dns(&mut node, client, vip), next, "the new flow sticks");
        assert_eq!(node.conntrack.stats.ended.load(Ordering::Relaxed), 1);
        assert_eq!(node.conntrack.len(), 1, "one flow, the new one");
        node.assert_books_balance();
    }
}

#[test]
fn a_udp_flow_stays_while_its_endpoint_serves_and_moves_when_it_stops() {
    let (client, vip) = (Ip::V4(CLIENT_V4), Ip::V4(VIP_V4));
    let mut node = web_node();
    let first = dns(&mut node, client, vip);
    // Terminating but still serving: the flow stays.
    change(&mut node, &web_with(first, Some(Conditions::TERMINATING)));
    assert_eq!(dns(&mut node, client, vip), first);
    assert_eq!(node.conntrack.stats.ended.load(Ordering::Relaxed), 0);
    // No longer serving: picked again.
    change(&mut node, &web_with(first, Some(Conditions::NOT_READY)));
    assert_ne!(dns(&mut node, client, vip), first);
    assert_eq!(node.conntrack.stats.ended.load(Ordering::Relaxed), 1);
}

/// An open connection: the SYN, and the backend it went to.
fn connect(node: &mut Node, client: Ip, vip: Ip, sport: u16) -> (IpAddr, u16) {
    let mut syn = frames::tcp(client, sport, vip, 80, SYN, b"");
    assert_eq!(node.process(&mut syn), FORWARD);
    let seen = check(&syn);
    (seen.dst, seen.dport)
}

#[test]
fn a_connection_to_a_deleted_endpoint_is_reset_from_the_clusterip() {
    for (client, vip, vip_addr) in [
        (Ip::V4(CLIENT_V4), Ip::V4(VIP_V4), IpAddr::from(VIP_V4)),
        (Ip::V6(CLIENT_V6), Ip::V6(VIP_V6), IpAddr::from(VIP_V6)),
    ] {
        let mut node = web_node();
        let (backend, bport) = connect(&mut node, client, vip, 41000);
        let to_ip = |a: IpAddr| match a {
            IpAddr::V4(a) => Ip::V4(a.octets()),
            IpAddr::V6(a) => Ip::V6(a.octets()),
        };
        change(&mut node, &web_with(backend, None));
        // The backend's late answer goes nowhere.
        let mut late = frames::tcp(to_ip(backend), bport, client, 41000, ACK, b"late");
        assert_eq!(node.process(&mut late), Action::Drop(DropReason::StaleFlow));
        // The client's next segment (frames::tcp acks 0x2000_0000) is
        // answered with a reset from the ClusterIP, seq = that ack.
        let mut data = frames::tcp(client, 41000, vip, 80, ACK, b"GET /");
        let a = node.process(&mut data);
        let Action::Reply {
            len,
            answer: Answer::Reset,
        } = a
        else {
            panic!("{a:?}")
        };
        let rst = node.core.reply(0, len).to_vec();
        let seen = check(&rst);
        assert_eq!(
            (seen.src, seen.sport, seen.dport),
            (vip_addr, 80, 41000),
            "from the ClusterIP the client called"
        );
        assert_eq!(&rst[0..6], &frames::CLIENT_MAC, "back to the client");
        let p = SlicedPacket::from_ethernet(&rst).expect("etherparse");
        let Some(TransportSlice::Tcp(t)) = p.transport else {
            panic!("not TCP")
        };
        assert!(t.rst() && !t.syn() && !t.fin());
        assert_eq!(t.sequence_number(), 0x2000_0000);
        // The flow is gone: nothing more of it reaches the old address.
        assert_eq!(node.conntrack.len(), 0);
        assert_eq!(node.conntrack.stats.ended.load(Ordering::Relaxed), 1);
        node.assert_books_balance();
    }
}

#[test]
fn a_segment_without_ack_is_reset_with_rst_ack_over_its_length() {
    let (client, vip) = (Ip::V4(CLIENT_V4), Ip::V4(VIP_V4));
    let mut node = web_node();
    let (backend, _) = connect(&mut node, client, vip, 41001);
    change(&mut node, &web_with(backend, None));
    // A retransmitted SYN (no ACK): RST|ACK, ack = its seq + 1.
    let mut syn = frames::tcp(client, 41001, vip, 80, SYN, b"");
    let Action::Reply { len, .. } = node.process(&mut syn) else {
        panic!("not answered")
    };
    let rst = node.core.reply(0, len).to_vec();
    check(&rst);
    let p = SlicedPacket::from_ethernet(&rst).expect("etherparse");
    let Some(TransportSlice::Tcp(t)) = p.transport else {
        panic!("not TCP")
    };
    assert!(t.rst() && t.ack());
    assert_eq!(
        (t.sequence_number(), t.acknowledgment_number()),
        (0, 0x1000_0001)
    );
}

#[test]
fn a_connection_to_a_terminating_endpoint_carries_on_and_is_checked_once() {
    let (client, vip) = (Ip::V4(CLIENT_V4), Ip::V4(VIP_V4));
    let mut node = web_node();
    let (backend, _) = connect(&mut node, client, vip, 41002);
    change(&mut node, &web_with(backend, Some(Conditions::TERMINATING)));
    let stamp = |node: &Node| node.conntrack.flows(8)[0].epoch;
    let before = stamp(&node);
    for _ in 0..3 {
        let mut data = frames::tcp(client, 41002, vip, 80, ACK, b"more");
        assert_eq!(node.process(&mut data), FORWARD);
        assert_eq!(check(&data).dst, backend);
    }
    // The first packet after the change checked the backend and stamped
    // the flow with the new epoch: the next ones are not checked again.
    assert_ne!(stamp(&node), before);
    assert!(node
        .services
        .current(node.conntrack.flows(8)[0].service, stamp(&node)));
    // Not ready nor serving, but listed (a failing readiness probe): TCP
    // still carries on, as kube-proxy leaves such connections alone.
    change(&mut node, &web_with(backend, Some(Conditions::NOT_READY)));
    let mut data = frames::tcp(client, 41002, vip, 80, ACK, b"still");
    assert_eq!(node.process(&mut data), FORWARD);
    assert_eq!(check(&data).dst, backend);
    assert_eq!(node.conntrack.stats.ended.load(Ordering::Relaxed), 0);
}

#[test]
fn other_changes_to_the_service_leave_its_flows_alone() {
    let (client, vip) = (Ip::V4(CLIENT_V4), Ip::V4(VIP_V4));
    let mut node = web_node();
    let (backend, _) = connect(&mut node, client, vip, 41003);
    let udp_first = dns(&mut node, client, vip);
    // Another endpoint leaves: neither flow moves.
    let other = (2u8..=4)
        .map(|i| IpAddr::from([198, 18, 2, i]))
        .find(|a| *a != backend && *a != udp_first)
        .expect("a third backend");
    change(&mut node, &web_with(other, None));
    let mut data = frames::tcp(client, 41003, vip, 80, ACK, b"x");
    assert_eq!(node.process(&mut data), FORWARD);
    assert_eq!(check(&data).dst, backend);
    assert_eq!(dns(&mut node, client, vip), udp_first);
    assert_eq!(node.conntrack.stats.ended.load(Ordering::Relaxed), 0);
}

#[test]
fn an_sctp_association_whose_backend_left_is_picked_again() {
    let (client, vip) = (Ip::V4(CLIENT_V4), Ip::V4(VIP_V4));
    let mut node = web_node();
    let send = |node: &mut Node| {
        let mut f = frames::sctp(client, 5000, vip, 38412);
        assert_eq!(node.process(&mut f), FORWARD);
        check(&f).dst
    };
    let first = send(&mut node);
    assert_eq!(send(&mut node), first);
    change(&mut node, &web_with(first, None));
    let next = send(&mut node);
    assert_ne!(next, first);
    assert_eq!(send(&mut node), next);
    assert_eq!(node.conntrack.stats.ended.load(Ordering::Relaxed), 1);
}
