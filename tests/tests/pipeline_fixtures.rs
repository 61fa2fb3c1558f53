//! Frames through the pipeline, table-driven: the fixture table's rows
//! (`sluice_fixtures::table`: the action and the exact bytes expected of
//! each), then properties over more frames: what goes in, the verdict, and
//! what an independent decoder sees coming out.

use std::net::IpAddr;

use sluice_dataplane::conntrack::{FlowState, Timeouts};
use sluice_dataplane::{Action, Addr, DropReason, Family, FlowKey, Proto};
use sluice_tests::frames::{self, Ip, ACK, FIN_ACK, SYN, SYN_ACK};
use sluice_tests::verify::{check, Seen};
use sluice_tests::{Node, CLIENT_V4, CLIENT_V6, FORWARD, VIP_V4, VIP_V6};

/// Every row of the fixture table, on fresh tables: its action, and the
/// exact bytes that leave (the frame, or the answer sent back).
#[test]
fn every_row_of_the_fixture_table_gives_its_action_and_its_bytes() {
    for case in sluice_fixtures::table::cases() {
        let mut node = Node::web();
        let mut f = case.frame.clone();
        let action = node.process(&mut f);
        assert_eq!(action, case.action, "{}", case.name);
        let out = match action {
            Action::Reply { len, .. } => Some(node.core.reply(0, len).to_vec()),
            Action::Drop(_) => None,
            _ => Some(f),
        };
        assert_eq!(out, case.output, "{}: the bytes that leave", case.name);
        node.assert_books_balance();
    }
}

/// The fuzz targets start from the same frames: every row is a seed
/// (`cargo run -p sluice-fixtures --example fuzz_seeds` writes them).
#[test]
fn every_row_of_the_fixture_table_is_a_fuzz_seed() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/pipeline");
    for (i, case) in sluice_fixtures::table::cases().iter().enumerate() {
        let seed = std::fs::read(dir.join(format!("table-{i:02}"))).unwrap_or_default();
        assert_eq!(
            seed, case.frame,
            "row {i} ({}) is not seed table-{i:02}",
            case.name
        );
    }
}

fn v4(a: [u8; 4]) -> IpAddr {
    IpAddr::from(a)
}
fn v6(a: [u8; 16]) -> IpAddr {
    IpAddr::from(a)
}

/// The ready backends of shop/web for each port, as (address, port).
fn ready_backends(family: Family, service_port: u16) -> Vec<(IpAddr, u16)> {
    (2u8..=4)
        .map(|i| {
            let a = match family {
                Family::V4 => v4([198, 18, 2, i]),
                Family::V6 => {
                    let mut o = [0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                    o[15] = i;
                    v6(o)
                }
            };
            let port = match service_port {
                80 if i == 4 => 9090,
                80 => 8080,
                53 => 5353,
                p => p,
            };
            (a, port)
        })
        .collect()
}

struct Case {
    what: &'static str,
    frame: Vec<u8>,
    family: Family,
    service_port: u16,
}

fn cases() -> Vec<Case> {
    let (c4, c6, s4, s6) = (
        Ip::V4(CLIENT_V4),
        Ip::V6(CLIENT_V6),
        Ip::V4(VIP_V4),
        Ip::V6(VIP_V6),
    );
    vec![
        Case {
            what: "TCP SYN, IPv4",
            frame: frames::tcp(c4, 40000, s4, 80, SYN, b""),
            family: Family::V4,
            service_port: 80,
        },
        Case {
            what: "TCP SYN, IPv6",
            frame: frames::tcp(c6, 40000, s6, 80, SYN, b""),
            family: Family::V6,
            service_port: 80,
        },
        Case {
            what: "TCP data on a VLAN",
            frame: frames::tcp_vlan(Some(100), c4, 40001, s4, 80, SYN, b"GET / HTTP/1.1\r\n\r\n"),
            family: Family::V4,
            service_port: 80,
        },
        Case {
            what: "UDP, IPv4",
            frame: frames::udp(c4, 5000, s4, 53, b"\x12\x34query"),
            family: Family::V4,
            service_port: 53,
        },
        Case {
            what: "UDP, IPv6",
            frame: frames::udp(c6, 5000, s6, 53, b"\x12\x34query"),
            family: Family::V6,
            service_port: 53,
        },
        Case {
            what: "UDP, IPv4, checksum zero",
            frame: frames::udp_v4_no_checksum(CLIENT_V4, 5001, VIP_V4, 53, b"none"),
            family: Family::V4,
            service_port: 53,
        },
        Case {
            what: "SCTP, IPv4",
            frame: frames::sctp(c4, 5000, s4, 38412),
            family: Family::V4,
            service_port: 38412,
        },
        Case {
            what: "SCTP, IPv6",
            frame: frames::sctp(c6, 5000, s6, 38412),
            family: Family::V6,
            service_port: 38412,
        },
    ]
}

#[test]
fn new_flows_to_a_clusterip_are_dnated_to_a_ready_backend_and_replies_come_back_from_the_vip() {
    for case in cases() {
        let mut node = Node::web();
        let sent = check(&case.frame);
        let mut f = case.frame.clone();
        assert_eq!(node.process(&mut f), FORWARD, "{}", case.what);
        let out = check(&f);
        let backends = ready_backends(case.family, case.service_port);
        assert!(
            backends.contains(&(out.dst, out.dport)),
            "{}: went to {}:{}",
            case.what,
            out.dst,
            out.dport
        );
        assert_eq!(
            (out.src, out.sport),
            (sent.src, sent.sport),
            "{}: source untouched",
            case.what
        );
        assert_eq!(
            out.payload, sent.payload,
            "{}: payload untouched",
            case.what
        );
        if case.what.contains("checksum zero") {
            assert_eq!(
                &f[14 + 20 + 6..14 + 20 + 8],
                &[0, 0],
                "zero UDP checksum stays zero"
            );
        }

        // The backend answers from where the packet arrived.
        let (b, c) = (to_ip(out.dst), to_ip(out.src));
        let mut reply = match out.proto {
            6 => frames::tcp(b, out.dport, c, out.sport, SYN_ACK, b""),
            17 => frames::udp(b, out.dport, c, out.sport, b"answer"),
            132 => frames::sctp(b, out.dport, c, out.sport),
            p => panic!("proto {p}"),
        };
        let backend_sent = check(&reply);
        assert_eq!(node.process(&mut reply), FORWARD, "{}: reply", case.what);
        let back = check(&reply);
        assert_eq!(
            (back.src, back.sport, back.dst, back.dport),
            (sent.dst, sent.dport, sent.src, sent.sport),
            "{}: the client sees the VIP answer",
            case.what
        );
        assert_eq!(back.payload, backend_sent.payload);
        assert_eq!(node.core.counters.ct_new, 1);
        assert_eq!(node.core.counters.ct_hits, 1);
        assert_eq!(node.core.counters.nat, 2);
    }
}

fn to_ip(a: IpAddr) -> Ip {
    match a {
        IpAddr::V4(a) => Ip::V4(a.octets()),
        IpAddr::V6(a) => Ip::V6(a.octets()),
    }
}

#[test]
fn later_packets_of_a_flow_keep_their_backend() {
    let mut node = Node::web();
    let (c, s) = (Ip::V4(CLIENT_V4), Ip::V4(VIP_V4));
    let mut first = frames::tcp(c, 41000, s, 80, SYN, b"");
    node.process(&mut first);
    let chosen = check(&first);
    for i in 0..20 {
        let mut f = frames::tcp(c, 41000, s, 80, ACK, format!("segment {i}").as_bytes());
        assert_eq!(node.process(&mut f), FORWARD);
        let seen = check(&f);
        assert_eq!((seen.dst, seen.dport), (chosen.dst, chosen.dport));
    }
    assert_eq!(node.core.counters.ct_new, 1);
    assert_eq!(node.core.counters.ct_hits, 20);
}

#[test]
fn flows_spread_over_ready_backends_only_and_named_ports_resolve_per_backend() {
    let mut node = Node::web();
    let mut hits = std::collections::HashMap::new();
    for sport in 0..3000u16 {
        let mut f = frames::tcp(
            Ip::V4(CLIENT_V4),
            10000 + sport,
            Ip::V4(VIP_V4),
            80,
            SYN,
            b"",
        );
        assert_eq!(node.process(&mut f), FORWARD);
        let s = check(&f);
        *hits.entry((s.dst, s.dport)).or_insert(0u32) += 1;
    }
    assert!(
        !hits.contains_key(&(v4([198, 18, 2, 5]), 8080)),
        "terminating backend took new flows"
    );
    assert!(
        hits.contains_key(&(v4([198, 18, 2, 4]), 9090)),
        "named port resolved to 9090 on .4"
    );
    assert_eq!(hits.len(), 3, "{hits:?}");
    for (b, n) in &hits {
        assert!((800..=1200).contains(n), "{b:?} got {n} of 3000");
    }
}

/// A frame as the route stage passes it on: TTL (hop limit) one less,
/// the IPv4 header checksum redone.
fn hopped(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    match f[12..14] {
        [0x08, 0x00] => {
            f[22] -= 1;
            f[24..26].copy_from_slice(&[0, 0]);
            let ihl = usize::from(f[14] & 0x0f) * 4;
            let c = sluice_dataplane::wire::checksum::checksum(&f[14..14 + ihl]);
            f[24..26].copy_from_slice(&c.to_be_bytes());
        }
        [0x86, 0xdd] => f[21] -= 1,
        _ => panic!("not IP"),
    }
    f
}

#[test]
fn traffic_that_is_no_services_passes_untouched() {
    let mut node = Node::web();
    let pod_to_pod = frames::tcp(
        Ip::V4(CLIENT_V4),
        40000,
        Ip::V4([198, 18, 2, 2]),
        8080,
        SYN,
        b"",
    );
    let pod_to_pod6 = frames::udp(
        Ip::V6(CLIENT_V6),
        40000,
        Ip::V6(sluice_fixtures::services::backend_v6(3)),
        5353,
        b"x",
    );
    for frame in [pod_to_pod, pod_to_pod6] {
        let mut f = frame.clone();
        assert_eq!(node.process(&mut f), FORWARD);
        assert_eq!(f, hopped(&frame), "bytes changed beyond the hop's TTL");
    }
    assert_eq!(node.core.counters.untracked, 2);
    assert!(node.conntrack.is_empty());
}

/// A ClusterIP is not routed on for what its Service does not serve: a
/// port it lacks, or its port in another protocol, is refused with ICMP
/// port-unreachable from the ClusterIP (kube-proxy's nftables mode rejects
/// these too); what has no port (ping) is dropped and counted. No flow is
/// made for any of it.
#[test]
fn a_clusterip_refuses_what_its_service_does_not_serve() {
    let mut node = Node::web();
    let other_port = frames::tcp(Ip::V4(CLIENT_V4), 40000, Ip::V4(VIP_V4), 81, SYN, b"");
    let wrong_proto = frames::udp(Ip::V4(CLIENT_V4), 40000, Ip::V4(VIP_V4), 80, b"x");
    let other_port6 = frames::tcp(Ip::V6(CLIENT_V6), 40000, Ip::V6(VIP_V6), 81, SYN, b"");
    for (frame, vip) in [
        (other_port, Ip::V4(VIP_V4)),
        (wrong_proto, Ip::V4(VIP_V4)),
        (other_port6, Ip::V6(VIP_V6)),
    ] {
        let mut f = frame.clone();
        let want = frames::port_unreachable(&frame, vip);
        assert_eq!(
            node.process(&mut f),
            Action::Reply {
                len: want.len() as u16,
                answer: sluice_dataplane::Answer::Reject
            }
        );
        assert_eq!(node.core.reply(0, want.len() as u16), &want[..]);
    }
    let mut ping = frames::echo_request(Ip::V6(CLIENT_V6), Ip::V6(VIP_V6), 7, 1);
    assert_eq!(
        node.process(&mut ping),
        Action::Drop(DropReason::ClusterIpUnserved)
    );
    assert_eq!(node.core.counters.untracked, 0);
    assert!(node.conntrack.is_empty());
    node.assert_books_balance();
}

#[test]
fn arp_goes_to_the_host_and_junk_ethertypes_are_dropped_and_counted() {
    let mut node = Node::web();
    // A question for the pods' gateway is answered; any other ARP is the
    // host's.
    let mut arp = frames::arp_request(CLIENT_V4, [169, 254, 1, 1]);
    assert!(matches!(
        node.process(&mut arp),
        Action::Reply {
            len: 42,
            answer: sluice_dataplane::Answer::Neighbor
        }
    ));
    let mut arp = frames::arp_request(CLIENT_V4, [198, 18, 0, 1]);
    assert_eq!(node.process(&mut arp), Action::ToHost);
    let mut lldp = vec![0u8; 60];
    lldp[12] = 0x88;
    lldp[13] = 0xcc;
    assert_eq!(
        node.process(&mut lldp),
        Action::Drop(DropReason::EthertypeUnsupported)
    );
    assert_eq!(
        node.core.counters.dropped(DropReason::EthertypeUnsupported),
        1
    );
}

#[test]
fn ipv4_options_and_ipv6_extension_headers_are_walked() {
    let mut node = Node::web();
    // IPv4 with a 4-byte option (NOP NOP NOP EOL): IHL 6.
    let base = frames::tcp(Ip::V4(CLIENT_V4), 42000, Ip::V4(VIP_V4), 80, SYN, b"opt");
    let mut f = base[..14].to_vec();
    let mut ip = etherparse::Ipv4HeaderSlice::from_slice(&base[14..])
        .unwrap()
        .to_header();
    ip.options = [1u8, 1, 1, 0][..].try_into().unwrap();
    ip.total_len = (ip.header_len() + base.len() - 34) as u16;
    ip.header_checksum = ip.calc_header_checksum();
    ip.write(&mut f).unwrap();
    f.extend_from_slice(&base[34..]);
    assert_eq!(node.process(&mut f), FORWARD);
    let seen = check(&f);
    assert!(ready_backends(Family::V4, 80).contains(&(seen.dst, seen.dport)));
    assert_eq!(seen.payload, b"opt");

    // IPv6 with hop-by-hop and destination options before UDP.
    let base = frames::udp(Ip::V6(CLIENT_V6), 6000, Ip::V6(VIP_V6), 53, b"ext");
    let mut f = base[..14].to_vec();
    let mut h = etherparse::Ipv6HeaderSlice::from_slice(&base[14..])
        .unwrap()
        .to_header();
    h.next_header = etherparse::IpNumber(0);
    h.payload_length += 16;
    h.write(&mut f).unwrap();
    f.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]); // hop-by-hop: PadN, next dst-opts
    f.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]); // destination options, next UDP
    f.extend_from_slice(&base[54..]);
    assert_eq!(node.process(&mut f), FORWARD);
    let seen = check(&f);
    assert!(
        ready_backends(Family::V6, 53).contains(&(seen.dst, seen.dport)),
        "{seen:?}"
    );
    assert_eq!(seen.payload, b"ext");
}

#[test]
fn fragments_follow_their_first_fragment_and_orphans_are_dropped() {
    let mut node = Node::web();
    let data: Vec<u8> = (0..120u8).collect();
    let whole = frames::udp(Ip::V4(CLIENT_V4), 7000, Ip::V4(VIP_V4), 53, &data);
    let (mut a, mut b) = frames::fragment_v4(&whole, 64);
    assert_eq!(node.process(&mut a), FORWARD);
    assert_eq!(node.process(&mut b), FORWARD);
    let dst_a = &a[30..34];
    assert_eq!(dst_a, &b[30..34], "both fragments to the same backend");
    // Reassemble and check the UDP checksum end to end.
    let mut reassembled = a[..34].to_vec();
    reassembled.extend_from_slice(&a[34..]);
    reassembled.extend_from_slice(&b[34..]);
    let total = (reassembled.len() - 14) as u16;
    let mut h = etherparse::Ipv4HeaderSlice::from_slice(&a[14..])
        .unwrap()
        .to_header();
    h.more_fragments = false;
    h.total_len = total;
    h.header_checksum = h.calc_header_checksum();
    let mut f = reassembled[..14].to_vec();
    h.write(&mut f).unwrap();
    f.extend_from_slice(&reassembled[34..]);
    let seen = check(&f);
    assert!(ready_backends(Family::V4, 53).contains(&(seen.dst, seen.dport)));
    assert_eq!(seen.payload, data);

    // A later fragment with no first fragment seen.
    let (_, mut orphan) = frames::fragment_v4(
        &frames::udp(Ip::V4(CLIENT_V4), 7001, Ip::V4(VIP_V4), 53, &data),
        64,
    );
    orphan[18] = 0x99; // another datagram id
    let csum = etherparse::Ipv4HeaderSlice::from_slice(&orphan[14..])
        .unwrap()
        .to_header()
        .calc_header_checksum();
    orphan[24..26].copy_from_slice(&csum.to_be_bytes());
    assert_eq!(
        node.process(&mut orphan),
        Action::Drop(DropReason::FragmentUnknown)
    );
}

#[test]
fn tcp_states_follow_the_handshake_and_the_close() {
    let mut node = Node::web();
    let (c, s) = (Ip::V4(CLIENT_V4), Ip::V4(VIP_V4));
    let mut syn = frames::tcp(c, 43000, s, 80, SYN, b"");
    node.process(&mut syn);
    let b = check(&syn);
    let key = FlowKey {
        src: Addr::from_v4(CLIENT_V4),
        dst: Addr::from_v4(VIP_V4),
        sport: 43000,
        dport: 80,
        proto: Proto::Tcp,
        family: Family::V4,
    };
    let state = |n: &Node| n.conntrack.lookup(&key).unwrap().record.life.state;
    assert_eq!(state(&node), FlowState::New);
    let back = to_ip(b.dst);
    let mut f = frames::tcp(back, b.dport, c, 43000, SYN_ACK, b"");
    node.process(&mut f);
    assert_eq!(state(&node), FlowState::SynReceived);
    let mut f = frames::tcp(c, 43000, s, 80, ACK, b"");
    node.process(&mut f);
    assert_eq!(state(&node), FlowState::Established);
    let mut f = frames::tcp(c, 43000, s, 80, FIN_ACK, b"");
    node.process(&mut f);
    assert_eq!(state(&node), FlowState::Closing);
    let mut f = frames::tcp(back, b.dport, c, 43000, FIN_ACK, b"");
    node.process(&mut f);
    let mut f = frames::tcp(c, 43000, s, 80, ACK, b"");
    node.process(&mut f);
    assert_eq!(state(&node), FlowState::Closed);
    // A closed flow lingers only for the short closed timeout.
    let t = Timeouts::default();
    let now = node.core.now_ms;
    assert_eq!(
        node.conntrack
            .sweep(now + t.tcp_closed_ms + 1, node.conntrack.capacity()),
        1
    );
}

/// Eight flows to the VIP, each answered by its backend.
/// A client's SYN to the ClusterIP from `sport`, the backend's SYN-ACK,
/// and the client's next segment with `then`'s flags: where it went.
fn handshake(node: &mut Node, sport: u16, then: frames::Flags) -> Seen {
    let mut f = frames::tcp(Ip::V4(CLIENT_V4), sport, Ip::V4(VIP_V4), 80, SYN, b"");
    assert_eq!(node.process(&mut f), FORWARD);
    let seen = check(&f);
    let mut r = frames::tcp(
        to_ip(seen.dst),
        seen.dport,
        Ip::V4(CLIENT_V4),
        sport,
        SYN_ACK,
        b"",
    );
    assert_eq!(node.process(&mut r), FORWARD);
    let mut c = frames::tcp(Ip::V4(CLIENT_V4), sport, Ip::V4(VIP_V4), 80, then, b"");
    assert_eq!(node.process(&mut c), FORWARD);
    seen
}

/// Eight connections past their handshake: assured.
fn eight_answered_flows(node: &mut Node) -> Vec<Seen> {
    (0..8u16).map(|i| handshake(node, 44000 + i, ACK)).collect()
}

/// A table full of flows that are not assured makes room for a new flow
/// by evicting one of them: SYNs nobody answered, and what a SYN flood
/// from a real kernel leaves (each SYN answered by the backend with a
/// SYN-ACK, which the flooder's kernel resets: answered, but never past
/// the handshake).
#[test]
fn a_full_conntrack_of_flows_not_assured_evicts_one_for_a_new_flow() {
    let rst = frames::Flags {
        syn: false,
        ack: false,
        fin: false,
        rst: true,
    };
    for reset_handshakes in [false, true] {
        let mut node = Node::new(&[sluice_tests::web_service()], 8);
        for i in 0..8u16 {
            if reset_handshakes {
                handshake(&mut node, 44000 + i, rst);
            } else {
                let mut f = frames::tcp(Ip::V4(CLIENT_V4), 44000 + i, Ip::V4(VIP_V4), 80, SYN, b"");
                assert_eq!(node.process(&mut f), FORWARD);
            }
        }
        let mut f = frames::tcp(Ip::V4([198, 18, 1, 9]), 45000, Ip::V4(VIP_V4), 80, SYN, b"");
        assert_eq!(node.process(&mut f), FORWARD);
        let evicted = &node.conntrack.stats.evicted;
        assert_eq!(evicted.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(node.conntrack.len(), 8);
    }
}

#[test]
fn full_conntrack_drops_new_flows_and_keeps_serving_established_ones() {
    let mut node = Node::new(&[sluice_tests::web_service()], 8);
    let first = eight_answered_flows(&mut node);
    let mut f = frames::tcp(Ip::V4(CLIENT_V4), 45000, Ip::V4(VIP_V4), 80, SYN, b"");
    assert_eq!(
        node.process(&mut f),
        Action::Drop(DropReason::ConntrackFull)
    );
    assert_eq!(node.core.counters.dropped(DropReason::ConntrackFull), 1);
    for (i, seen) in first.iter().enumerate() {
        let mut f = frames::tcp(
            Ip::V4(CLIENT_V4),
            44000 + i as u16,
            Ip::V4(VIP_V4),
            80,
            ACK,
            b"more",
        );
        assert_eq!(node.process(&mut f), FORWARD);
        assert_eq!(check(&f).dst, seen.dst);
    }
}

/// A Service port whose endpoints are all unready answers every client at
/// once with port-unreachable, as kube-proxy's REJECT does: several in a
/// row, then at the source's rate; the rest dropped and counted.
#[test]
fn a_service_without_usable_backends_is_refused_at_a_rate_per_source() {
    use sluice_dataplane::reject::{PER_SOURCE_BURST, PER_SOURCE_EVERY_MS};
    let mut spec = sluice_tests::web_service();
    for e in &mut spec.endpoints {
        e.conditions = sluice_dataplane::service::Conditions::NOT_READY;
    }
    let mut node = Node::new(&[spec], 64);
    node.core.now_ms = 1_000;
    let refused = |node: &mut Node, frame: Vec<u8>, vip: Ip| {
        let mut f = frame.clone();
        let want = frames::port_unreachable(&frame, vip);
        let a = node.process(&mut f);
        if a == Action::Drop(DropReason::RejectRateLimited) {
            return false;
        }
        assert_eq!(
            a,
            Action::Reply {
                len: want.len() as u16,
                answer: sluice_dataplane::Answer::Reject
            }
        );
        assert_eq!(node.core.reply(0, want.len() as u16), &want[..]);
        true
    };
    // One client retrying: its burst answered, then nothing until its
    // next token.
    let syn = |port| frames::tcp(Ip::V4(CLIENT_V4), port, Ip::V4(VIP_V4), 80, SYN, b"");
    let answered = (0..30u16)
        .filter(|i| refused(&mut node, syn(40000 + i), Ip::V4(VIP_V4)))
        .count();
    assert_eq!(answered, PER_SOURCE_BURST as usize);
    assert_eq!(
        node.core.counters.dropped(DropReason::RejectRateLimited),
        30 - u64::from(PER_SOURCE_BURST)
    );
    node.core.now_ms += PER_SOURCE_EVERY_MS;
    assert!(refused(&mut node, syn(41000), Ip::V4(VIP_V4)));
    // Another client, UDP over IPv6, is answered at once.
    let dns = frames::udp(Ip::V6(CLIENT_V6), 5000, Ip::V6(VIP_V6), 53, b"q");
    assert!(refused(&mut node, dns, Ip::V6(VIP_V6)));
    assert!(node.conntrack.is_empty(), "a refused packet makes no flow");
    node.assert_books_balance();
}

#[test]
fn icmp_echo_identifiers_are_tracked_and_translated_like_ports() {
    // A masqueraded ping (the SNAT that pod egress will use): the echo
    // identifier is rewritten on the way out and restored on the reply.
    let node_ip = [198, 18, 0, 1];
    let outside = [198, 18, 3, 9];
    for family in [Family::V4, Family::V6] {
        let mut node = Node::web();
        let (client, server, snat): (Ip, Ip, Ip) = match family {
            Family::V4 => (Ip::V4(CLIENT_V4), Ip::V4(outside), Ip::V4(node_ip)),
            Family::V6 => {
                let mut n = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
                let o = n;
                n[15] = 1;
                let mut out = o;
                out[5] = 3;
                out[15] = 9;
                (Ip::V6(CLIENT_V6), Ip::V6(out), Ip::V6(n))
            }
        };
        let addr = |i: Ip| match i {
            Ip::V4(a) => Addr::from_v4(a),
            Ip::V6(a) => Addr::from_v6(a),
        };
        let proto = if family == Family::V4 {
            Proto::Icmp
        } else {
            Proto::Icmp6
        };
        let orig = FlowKey {
            src: addr(client),
            dst: addr(server),
            sport: 7,
            dport: 0,
            proto,
            family,
        };
        let xlat = FlowKey {
            src: addr(snat),
            sport: 9000,
            ..orig
        };
        node.conntrack
            .insert(orig, xlat, u32::MAX, FlowState::New, 0, 0)
            .unwrap();

        let mut req = frames::echo_request(client, server, 7, 1);
        assert_eq!(node.process(&mut req), FORWARD);
        let out = check(&req);
        assert_eq!((out.src, out.ident), (addr(snat).to_ip(family), Some(9000)));

        // The far end answers the node: an echo reply, id 9000.
        let mut rep = req.clone();
        let seen = check(&req);
        let reply_bytes = echo_reply(server, snat, 9000, &seen.payload);
        rep.clear();
        rep.extend_from_slice(&reply_bytes);
        assert_eq!(node.process(&mut rep), FORWARD);
        let back = check(&rep);
        assert_eq!(
            (back.dst, back.ident),
            (addr(client).to_ip(family), Some(7)),
            "{family:?}"
        );
    }
}

fn echo_reply(src: Ip, dst: Ip, id: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let eth = etherparse::PacketBuilder::ethernet2(frames::GATEWAY_MAC, frames::CLIENT_MAC);
    match (src, dst) {
        (Ip::V4(s), Ip::V4(d)) => eth
            .ipv4(s, d, 64)
            .icmpv4_echo_reply(id, 1)
            .write(&mut out, payload)
            .unwrap(),
        (Ip::V6(s), Ip::V6(d)) => eth
            .ipv6(s, d, 64)
            .icmpv6_echo_reply(id, 1)
            .write(&mut out, payload)
            .unwrap(),
        _ => unreachable!(),
    }
    out
}

#[allow(dead_code)]
fn unused(_: Seen) {}
