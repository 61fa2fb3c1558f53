//! Bad input: every frame is either processed or dropped under a named,
//! counted reason, and nothing panics.

use proptest::prelude::*;
use sluice_dataplane::{Action, DropReason};
use sluice_tests::frames::{self, Ip, ACK, SYN};
use sluice_tests::{Node, CLIENT_V4, CLIENT_V6, VIP_V4, VIP_V6};

fn valid_frames() -> Vec<Vec<u8>> {
    let (c4, c6, s4, s6) = (
        Ip::V4(CLIENT_V4),
        Ip::V6(CLIENT_V6),
        Ip::V4(VIP_V4),
        Ip::V6(VIP_V6),
    );
    vec![
        frames::tcp(c4, 40000, s4, 80, SYN, b""),
        frames::tcp(c6, 40000, s6, 80, ACK, b"data"),
        frames::tcp_vlan(Some(7), c4, 40000, s4, 80, SYN, b""),
        frames::udp(c4, 5000, s4, 53, b"q"),
        frames::udp(c6, 5000, s6, 53, b"q"),
        frames::sctp(c4, 5000, s4, 38412),
        frames::echo_request(c4, s4, 1, 1),
        frames::echo_request(c6, s6, 1, 1),
    ]
}

fn assert_books_balance(node: &Node) {
    node.assert_books_balance();
}

#[test]
fn every_truncation_is_dropped_with_a_reason() {
    for frame in valid_frames() {
        let mut node = Node::web();
        for n in 0..frame.len() {
            let mut f = frame[..n].to_vec();
            match node.process(&mut f) {
                Action::Drop(_) => {}
                v => panic!(
                    "a {n}-byte prefix of a {}-byte frame was {v:?}",
                    frame.len()
                ),
            }
        }
        assert_eq!(node.core.counters.total_drops(), frame.len() as u64);
        assert_books_balance(&node);
    }
}

#[test]
fn lying_headers_are_refused_by_name() {
    let base = frames::udp(Ip::V4(CLIENT_V4), 5000, Ip::V4(VIP_V4), 53, b"query");
    let fix_ip_csum = |f: &mut Vec<u8>| {
        f[24] = 0;
        f[25] = 0;
        let c = !sluice_dataplane::wire::checksum::fold(sluice_dataplane::wire::checksum::sum(
            &f[14..34],
        ));
        f[24..26].copy_from_slice(&c.to_be_bytes());
    };
    let cases: Vec<(&str, Box<dyn Fn(&mut Vec<u8>)>, DropReason)> = vec![
        (
            "version 5",
            Box::new(|f| f[14] = 0x55),
            DropReason::Ipv4BadVersion,
        ),
        (
            "IHL 4",
            Box::new(|f| f[14] = 0x44),
            DropReason::Ipv4BadHeaderLen,
        ),
        (
            "IHL 15",
            Box::new(|f| f[14] = 0x4f),
            DropReason::Ipv4BadHeaderLen,
        ),
        (
            "total length past the frame",
            Box::new(move |f| {
                f[16..18].copy_from_slice(&500u16.to_be_bytes());
                fix_ip_csum(f)
            }),
            DropReason::Ipv4BadTotalLen,
        ),
        (
            "bad header checksum",
            Box::new(|f| f[24] ^= 0xff),
            DropReason::Ipv4BadChecksum,
        ),
        (
            "UDP length past the datagram",
            Box::new(|f| f[38..40].copy_from_slice(&200u16.to_be_bytes())),
            DropReason::UdpMalformed,
        ),
        (
            "UDP length below 8",
            Box::new(|f| f[38..40].copy_from_slice(&4u16.to_be_bytes())),
            DropReason::UdpMalformed,
        ),
    ];
    for (what, mangle, reason) in cases {
        let mut node = Node::web();
        let mut f = base.clone();
        mangle(&mut f);
        assert_eq!(node.process(&mut f), Action::Drop(reason), "{what}");
        assert_eq!(node.core.counters.dropped(reason), 1, "{what}");
    }

    let tcp = frames::tcp(Ip::V4(CLIENT_V4), 40000, Ip::V4(VIP_V4), 80, SYN, b"");
    let mut node = Node::web();
    let mut f = tcp.clone();
    f[34 + 12] = 0x30; // data offset 12 bytes
    assert_eq!(node.process(&mut f), Action::Drop(DropReason::TcpMalformed));
    let mut f = tcp.clone();
    f[34 + 12] = 0xf0; // 60 bytes: past the segment
    assert_eq!(node.process(&mut f), Action::Drop(DropReason::TcpMalformed));

    let v6 = frames::udp(Ip::V6(CLIENT_V6), 5000, Ip::V6(VIP_V6), 53, b"q");
    let mut f = v6.clone();
    f[18..20].copy_from_slice(&900u16.to_be_bytes());
    assert_eq!(
        node.process(&mut f),
        Action::Drop(DropReason::Ipv6BadPayloadLen)
    );
    let mut f = v6.clone();
    f[14] = 0x40;
    assert_eq!(
        node.process(&mut f),
        Action::Drop(DropReason::Ipv6BadVersion)
    );
    assert_books_balance(&node);
}

#[test]
fn a_tiny_first_fragment_is_refused() {
    // RFC 1858: a first fragment too short for the TCP header.
    let full = frames::tcp(
        Ip::V4(CLIENT_V4),
        40000,
        Ip::V4(VIP_V4),
        80,
        SYN,
        &[0u8; 64],
    );
    let mut h = etherparse::Ipv4HeaderSlice::from_slice(&full[14..])
        .unwrap()
        .to_header();
    h.more_fragments = true;
    h.dont_fragment = false;
    h.total_len = 20 + 8;
    h.header_checksum = h.calc_header_checksum();
    let mut f = full[..14].to_vec();
    h.write(&mut f).unwrap();
    f.extend_from_slice(&full[34..42]);
    let mut node = Node::web();
    assert_eq!(
        node.process(&mut f),
        Action::Drop(DropReason::FragmentTooShort)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The straight-line decoder for plain IPv4 TCP/UDP and the general one
    /// give the same answer on every frame the fast one accepts.
    #[test]
    fn fast_and_general_decoders_agree(
        which in 0usize..8,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let mut f = valid_frames()[which].clone();
        for (at, v) in flips {
            let i = at.index(f.len());
            f[i] = v;
        }
        let general = sluice_dataplane::decode::decode_general(&f);
        let either = sluice_dataplane::decode::decode(&f);
        prop_assert_eq!(either, general);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut node = Node::web();
        let mut f = bytes;
        let _ = node.process(&mut f);
        assert_books_balance(&node);
    }

    #[test]
    fn mutated_real_frames_never_panic(
        which in 0usize..8,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut node = Node::web();
        let mut f = valid_frames()[which].clone();
        for (at, v) in flips {
            let i = at.index(f.len());
            f[i] = v;
        }
        let keep = cut.index(f.len() + 1);
        f.truncate(keep.max(f.len() - 4));
        let _ = node.process(&mut f);
        assert_books_balance(&node);
    }
}
