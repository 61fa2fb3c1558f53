//! ICMP errors about translated flows, on real frames through the burst
//! function: the error a backend's kernel sends about a packet it got
//! after DNAT reaches the client from the ClusterIP, quoting the packet
//! exactly as the client sent it (less the hop's TTL); an error the
//! client's kernel sends about a reply reaches the backend quoting what
//! the backend sent. Every checksum is checked by etherparse.

use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use sluice_dataplane::Action;
use sluice_fixtures::table::after_hop;
use sluice_tests::frames::{self, Ip};
use sluice_tests::verify::check;
use sluice_tests::{Node, CLIENT_V4, CLIENT_V6, FORWARD, VIP_V4, VIP_V6};

/// An ICMP(v6) destination-unreachable (port) from `from` to `to`,
/// quoting `quoted` (an Ethernet frame's IP packet), as a kernel sends it.
fn port_unreachable(from: Ip, to: Ip, quoted: &[u8]) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(frames::GATEWAY_MAC, frames::CLIENT_MAC);
    let mut out = Vec::new();
    match (from, to) {
        (Ip::V4(f), Ip::V4(t)) => eth
            .ipv4(f, t, 64)
            .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::Port,
            ))
            .write(&mut out, &quoted[14..])
            .unwrap(),
        (Ip::V6(f), Ip::V6(t)) => eth
            .ipv6(f, t, 64)
            .icmpv6(etherparse::Icmpv6Type::DestinationUnreachable(
                etherparse::icmpv6::DestUnreachableCode::Port,
            ))
            .write(&mut out, &quoted[14..])
            .unwrap(),
        _ => panic!("mixed families"),
    }
    out
}

fn ip_of(a: std::net::IpAddr) -> Ip {
    match a {
        std::net::IpAddr::V4(a) => Ip::V4(a.octets()),
        std::net::IpAddr::V6(a) => Ip::V6(a.octets()),
    }
}

/// The ICMP message's quoted bytes, after its checksum is checked.
fn quoted_of(frame: &[u8]) -> Vec<u8> {
    let p = SlicedPacket::from_ethernet(frame).expect("etherparse");
    match p.transport.expect("ICMP") {
        TransportSlice::Icmpv4(i) => {
            let mut h = i.header();
            let sum = h.checksum;
            h.update_checksum(i.payload());
            assert_eq!(sum, h.checksum, "ICMPv4 checksum");
            i.payload().to_vec()
        }
        TransportSlice::Icmpv6(i) => i.payload().to_vec(),
        _ => panic!("not ICMP"),
    }
}

#[test]
fn a_backends_port_unreachable_reaches_the_client_from_the_clusterip() {
    for (client, vip) in [
        (Ip::V4(CLIENT_V4), Ip::V4(VIP_V4)),
        (Ip::V6(CLIENT_V6), Ip::V6(VIP_V6)),
    ] {
        let mut node = Node::web();
        let sent = frames::udp(client, 5000, vip, 53, b"\x12\x34query");
        let mut f = sent.clone();
        assert_eq!(node.process(&mut f), FORWARD);
        let backend = check(&f).dst;
        // The backend's kernel: nothing listens; it quotes what it got.
        let mut err = port_unreachable(ip_of(backend), client, &f);
        assert_eq!(node.process(&mut err), FORWARD);
        let seen = check(&err);
        assert_eq!(seen.src, check(&sent).dst, "from the ClusterIP");
        assert_eq!(seen.dst, check(&sent).src, "to the client");
        assert_eq!(
            quoted_of(&err),
            after_hop(&sent)[14..],
            "quoting the datagram as the client sent it"
        );
        assert_eq!(node.core.counters.icmp_translated, 1);
        assert_eq!(node.core.counters.icmp_error_passthrough, 0);
    }
}

#[test]
fn a_clients_error_about_a_reply_reaches_the_backend_quoting_its_packet() {
    let (client, vip) = (Ip::V4(CLIENT_V4), Ip::V4(VIP_V4));
    let mut node = Node::web();
    let mut f = frames::udp(client, 5001, vip, 53, b"q");
    assert_eq!(node.process(&mut f), FORWARD);
    let to = check(&f);
    // The backend answers; the client gets it from the VIP...
    let reply = frames::udp(ip_of(to.dst), to.dport, client, 5001, b"answer");
    let mut r = reply.clone();
    assert_eq!(node.process(&mut r), FORWARD);
    // ...and its kernel, its socket gone, says so about what it got.
    let mut err = port_unreachable(client, vip, &r);
    assert_eq!(node.process(&mut err), FORWARD);
    let seen = check(&err);
    assert_eq!((seen.src, seen.dst), (to.src, to.dst), "client to backend");
    assert_eq!(quoted_of(&err), after_hop(&reply)[14..]);
}

#[test]
fn an_error_about_no_flow_of_ours_passes_as_it_is() {
    let mut node = Node::web();
    let stray = frames::udp(Ip::V4(CLIENT_V4), 5002, Ip::V4([198, 18, 2, 9]), 53, b"q");
    let err = port_unreachable(Ip::V4([198, 18, 2, 9]), Ip::V4(CLIENT_V4), &stray);
    let mut e = err.clone();
    assert_eq!(node.process(&mut e), FORWARD);
    assert_eq!(e, after_hop(&err));
    assert_eq!(node.core.counters.icmp_error_passthrough, 1);
    assert!(!matches!(node.process(&mut e.clone()), Action::Drop(_)));
}
