//! Property: whatever the flow, a client that sends to a ClusterIP and gets
//! the backend's answer back sees exactly its own view: the VIP and the
//! Service port answering its own address and port, payload intact,
//! checksums right (checked by etherparse from scratch, both ways).

use proptest::prelude::*;
use sluice_tests::frames::{self, Ip, ACK};
use sluice_tests::verify::check;
use sluice_tests::{Node, FORWARD, VIP_V4, VIP_V6};
use std::net::IpAddr;

fn to_ip(a: IpAddr) -> Ip {
    match a {
        IpAddr::V4(a) => Ip::V4(a.octets()),
        IpAddr::V6(a) => Ip::V6(a.octets()),
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Tcp,
    Udp,
    UdpNoChecksum,
    Sctp,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn dnat_then_reverse_gives_the_client_its_own_view(
        v6 in any::<bool>(),
        kind in prop_oneof![Just(Kind::Tcp), Just(Kind::Udp), Just(Kind::UdpNoChecksum), Just(Kind::Sctp)],
        host in 2u8..250,
        host6 in any::<u64>(),
        sport in 1u16..,
        request in proptest::collection::vec(any::<u8>(), 0..300),
        answer in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut node = Node::web();
        let (client, vip) = if v6 {
            let mut c = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            c[8..].copy_from_slice(&host6.to_be_bytes());
            (Ip::V6(c), Ip::V6(VIP_V6))
        } else {
            (Ip::V4([198, 18, 1, host]), Ip::V4(VIP_V4))
        };
        let kind = if v6 && matches!(kind, Kind::UdpNoChecksum) { Kind::Udp } else { kind };
        let (port, mut f) = match (kind, client, vip) {
            (Kind::Tcp, c, s) => (80, frames::tcp(c, sport, s, 80, ACK, &request)),
            (Kind::Udp, c, s) => (53, frames::udp(c, sport, s, 53, &request)),
            (Kind::UdpNoChecksum, Ip::V4(c), Ip::V4(s)) => (53, frames::udp_v4_no_checksum(c, sport, s, 53, &request)),
            (Kind::Sctp, c, s) => (38412, frames::sctp(c, sport, s, 38412)),
            _ => unreachable!(),
        };
        let sent = check(&f);
        prop_assert_eq!(node.process(&mut f), FORWARD);
        let at_backend = check(&f);
        prop_assert_eq!((at_backend.src, at_backend.sport), (sent.src, sent.sport));
        prop_assert_ne!(at_backend.dst, sent.dst);
        prop_assert_eq!(&at_backend.payload, &sent.payload);

        let (b, c) = (to_ip(at_backend.dst), to_ip(at_backend.src));
        let mut r = match kind {
            Kind::Tcp => frames::tcp(b, at_backend.dport, c, at_backend.sport, ACK, &answer),
            Kind::Udp => frames::udp(b, at_backend.dport, c, at_backend.sport, &answer),
            Kind::UdpNoChecksum => match (b, c) {
                (Ip::V4(b), Ip::V4(c)) => frames::udp_v4_no_checksum(b, at_backend.dport, c, at_backend.sport, &answer),
                _ => unreachable!(),
            },
            Kind::Sctp => frames::sctp(b, at_backend.dport, c, at_backend.sport),
        };
        let answered = check(&r);
        prop_assert_eq!(node.process(&mut r), FORWARD);
        let at_client = check(&r);
        prop_assert_eq!((at_client.src, at_client.sport), (sent.dst, port));
        prop_assert_eq!((at_client.dst, at_client.dport), (sent.src, sent.sport));
        prop_assert_eq!(&at_client.payload, &answered.payload);
        if matches!(kind, Kind::UdpNoChecksum) {
            prop_assert_eq!(&r[40..42], &[0u8, 0][..], "an IPv4 zero checksum stays zero");
        }
    }
}
