//! Stage 6 on real frames: pods by their /32 and /128, other nodes' pod
//! CIDRs through their VTEP, the node to the host, the rest to the uplink;
//! TTL decremented with a valid checksum, and ICMP time-exceeded when it
//! runs out (read back by etherparse).

use etherparse::{Icmpv4Type, Icmpv6Type, NetSlice, SlicedPacket, TransportSlice};
use sluice_dataplane::decode::{decode, Decoded};
use sluice_dataplane::neighbor::Gateway;
use sluice_dataplane::route::{forward, Cidr, Egress, Hop, PortId, Routes};
use sluice_dataplane::{Action, Answer};
use sluice_dataplane::{Addr, DropReason, Family};
use sluice_tests::frames::{self, Ip, SYN};
use sluice_tests::verify::check;
use sluice_tests::{CLIENT_V4, CLIENT_V6};

const POD_B_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x03];

/// The route stage on a frame as the burst function calls it: on the
/// summary decode made of it.
fn route(frame: &mut [u8], r: &Routes, gw: &Gateway, out: &mut [u8]) -> Action {
    let Ok(Decoded::Ip(p)) = decode(frame) else {
        panic!("the test frame is IP");
    };
    forward(frame, Hop::of(&p), r, gw, out)
}

fn routes() -> Routes {
    let mut r = Routes::default();
    r.add_pod(Addr::from_v4([198, 18, 1, 3]), PortId(3), POD_B_MAC);
    r.add_pod(
        Addr::from_v6([0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3]),
        PortId(3),
        POD_B_MAC,
    );
    r.add_tunnel(
        Cidr {
            addr: Addr::from_v4([198, 18, 2, 0]),
            len: 24,
            family: Family::V4,
        },
        Addr::from_v4([198, 18, 0, 2]),
    );
    r.add_host(Addr::from_v4([198, 18, 0, 1]));
    r
}

fn with_ttl(mut f: Vec<u8>, ttl: u8) -> Vec<u8> {
    f[22] = ttl;
    f[24] = 0;
    f[25] = 0;
    let c = sluice_dataplane::wire::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

#[test]
fn destinations_route_by_kind() {
    let r = routes();
    let gw = Gateway::DEFAULT;
    let mut out = [0u8; 1600];
    let cases = [
        (
            [198, 18, 1, 3],
            Egress::Pod {
                port: PortId(3),
                mac: POD_B_MAC,
            },
        ),
        (
            [198, 18, 2, 9],
            Egress::Tunnel {
                vtep: Addr::from_v4([198, 18, 0, 2]),
            },
        ),
        ([198, 19, 200, 1], Egress::Uplink),
    ];
    for (dst, want) in cases {
        let mut f = frames::tcp(Ip::V4(CLIENT_V4), 40000, Ip::V4(dst), 80, SYN, b"x");
        assert_eq!(
            route(&mut f, &r, &gw, &mut out),
            Action::Transmit(want),
            "{dst:?}"
        );
    }
    let mut f = frames::tcp(
        Ip::V4(CLIENT_V4),
        40000,
        Ip::V4([198, 18, 0, 1]),
        22,
        SYN,
        b"x",
    );
    assert_eq!(
        route(&mut f, &r, &gw, &mut out),
        Action::ToHost,
        "the node's own address is the host's"
    );
}

#[test]
fn a_hop_to_a_local_pod_decrements_ttl_and_sets_the_macs() {
    let r = routes();
    let gw = Gateway::DEFAULT;
    let mut out = [0u8; 1600];
    let mut f = frames::tcp(
        Ip::V4(CLIENT_V4),
        40000,
        Ip::V4([198, 18, 1, 3]),
        80,
        SYN,
        b"x",
    );
    let before = check(&f);
    route(&mut f, &r, &gw, &mut out);
    let after = check(&f); // checksums recomputed from scratch by etherparse
    assert_eq!(after.ttl, before.ttl - 1);
    assert_eq!(&f[0..6], &POD_B_MAC);
    assert_eq!(&f[6..12], &gw.mac);

    let mut f6 = frames::udp(
        Ip::V6(CLIENT_V6),
        5000,
        Ip::V6([0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3]),
        53,
        b"q",
    );
    let before = check(&f6);
    assert_eq!(
        route(&mut f6, &r, &gw, &mut out),
        Action::Transmit(Egress::Pod {
            port: PortId(3),
            mac: POD_B_MAC
        })
    );
    assert_eq!(check(&f6).ttl, before.ttl - 1);
}

#[test]
fn ttl_one_gets_time_exceeded_from_the_gateway_quoting_the_packet() {
    let r = routes();
    let gw = Gateway::DEFAULT;
    let mut out = [0u8; 1600];
    let sent = with_ttl(
        frames::udp(
            Ip::V4(CLIENT_V4),
            33434,
            Ip::V4([198, 18, 1, 3]),
            33435,
            b"traceroute",
        ),
        1,
    );
    let mut f = sent.clone();
    let Action::Reply {
        len,
        answer: Answer::TimeExceeded,
    } = route(&mut f, &r, &gw, &mut out)
    else {
        panic!("no time exceeded")
    };
    let n = usize::from(len);
    let p = SlicedPacket::from_ethernet(&out[..n]).expect("etherparse reads the error");
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!("not IPv4")
    };
    let h = ip.header().to_header();
    assert_eq!(h.header_checksum, h.calc_header_checksum());
    assert_eq!((h.source, h.destination), (gw.v4, CLIENT_V4));
    let Some(TransportSlice::Icmpv4(icmp)) = &p.transport else {
        panic!("not ICMP")
    };
    assert!(
        matches!(icmp.icmp_type(), Icmpv4Type::TimeExceeded(_)),
        "{:?}",
        icmp.icmp_type()
    );
    assert_eq!(
        icmp.checksum(),
        icmp.icmp_type().calc_checksum(icmp.payload())
    );
    assert_eq!(
        icmp.payload(),
        &sent[14..],
        "the whole offending packet is quoted (it is short)"
    );
    assert_eq!(&out[0..6], &frames::CLIENT_MAC, "back to the sender");

    let sent6 = {
        let mut f = frames::udp(
            Ip::V6(CLIENT_V6),
            33434,
            Ip::V6([0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3]),
            33435,
            b"trace6",
        );
        f[14 + 7] = 1;
        f
    };
    let mut f = sent6.clone();
    let Action::Reply {
        len,
        answer: Answer::TimeExceeded,
    } = route(&mut f, &r, &gw, &mut out)
    else {
        panic!("no time exceeded (v6)")
    };
    let n = usize::from(len);
    let p = SlicedPacket::from_ethernet(&out[..n]).unwrap();
    let Some(NetSlice::Ipv6(ip)) = &p.net else {
        panic!("not IPv6")
    };
    let h = ip.header().to_header();
    assert_eq!((h.source, h.destination), (gw.v6, CLIENT_V6));
    let Some(TransportSlice::Icmpv6(icmp)) = &p.transport else {
        panic!("not ICMPv6")
    };
    assert!(matches!(icmp.icmp_type(), Icmpv6Type::TimeExceeded(_)));
    assert_eq!(
        icmp.checksum(),
        icmp.icmp_type()
            .calc_checksum(h.source, h.destination, icmp.payload())
            .unwrap()
    );
    assert_eq!(icmp.payload(), &sent6[14..]);
}

#[test]
fn no_time_exceeded_for_icmp_errors_and_traffic_to_the_node_is_not_aged() {
    let r = routes();
    let gw = Gateway::DEFAULT;
    let mut out = [0u8; 1600];
    // An ICMP error (destination unreachable) with TTL 1: dropped silently.
    let mut f = with_ttl(
        frames::echo_request(Ip::V4(CLIENT_V4), Ip::V4([198, 18, 1, 3]), 1, 1),
        1,
    );
    f[34] = 3;
    assert_eq!(
        route(&mut f, &r, &gw, &mut out),
        Action::Drop(DropReason::TtlExceeded)
    );
    // To the node's own address: the host's stack ages it, not us.
    let mut f = with_ttl(
        frames::tcp(Ip::V4(CLIENT_V4), 1, Ip::V4([198, 18, 0, 1]), 22, SYN, b""),
        1,
    );
    assert_eq!(route(&mut f, &r, &gw, &mut out), Action::ToHost);
}

#[test]
fn link_scoped_and_multicast_destinations_are_not_routed() {
    let r = routes();
    let gw = Gateway::DEFAULT;
    let mut out = [0u8; 1600];
    // mDNS to 224.0.0.251, and IPv6 traffic for the link (an MLD report to
    // ff02::16 with hop limit 1 must not earn a time-exceeded).
    let mut mdns = frames::udp(
        Ip::V4(CLIENT_V4),
        5353,
        Ip::V4([224, 0, 0, 251]),
        5353,
        b"q",
    );
    assert_eq!(
        route(&mut mdns, &r, &gw, &mut out),
        Action::Drop(DropReason::NotRoutable)
    );
    let mut mld = frames::udp(
        Ip::V6(CLIENT_V6),
        1,
        Ip::V6([0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x16]),
        1,
        b"x",
    );
    mld[14 + 7] = 1;
    assert_eq!(
        route(&mut mld, &r, &gw, &mut out),
        Action::Drop(DropReason::NotRoutable)
    );
    let mut ll = frames::udp(
        Ip::V6(CLIENT_V6),
        1,
        Ip::V6([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
        1,
        b"x",
    );
    assert_eq!(
        route(&mut ll, &r, &gw, &mut out),
        Action::Drop(DropReason::NotRoutable)
    );
}
