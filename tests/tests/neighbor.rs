//! The pod gateway answers ARP and Neighbor Solicitation for itself, and
//! nothing else; requests and replies are built and read by smoltcp.

use sluice_dataplane::neighbor::{answer, Gateway};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, Icmpv6Packet, Icmpv6Repr, IpProtocol, Ipv4Address, Ipv6Address, Ipv6Packet,
    Ipv6Repr, NdiscNeighborFlags, NdiscRepr, RawHardwareAddress,
};

const POD_MAC: EthernetAddress = EthernetAddress(sluice_fixtures::frames::CLIENT_MAC);

fn arp_request(target: [u8; 4]) -> Vec<u8> {
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: POD_MAC,
        source_protocol_addr: Ipv4Address::new(198, 18, 1, 2),
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: Ipv4Address::from(target),
    };
    let eth = EthernetRepr {
        src_addr: POD_MAC,
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Arp,
    };
    let mut buf = vec![0u8; eth.buffer_len() + arp.buffer_len()];
    let mut f = EthernetFrame::new_unchecked(&mut buf);
    eth.emit(&mut f);
    arp.emit(&mut ArpPacket::new_unchecked(f.payload_mut()));
    buf
}

fn pod_v6() -> Ipv6Address {
    Ipv6Address::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2)
}

fn solicitation(src: Ipv6Address, target: Ipv6Address, hop_limit: u8) -> Vec<u8> {
    let ndisc = NdiscRepr::NeighborSolicit {
        target_addr: target,
        lladdr: Some(RawHardwareAddress::from(POD_MAC)),
    };
    let icmp = Icmpv6Repr::Ndisc(ndisc);
    // Solicited-node multicast of the target.
    let t = target.octets();
    let dst = Ipv6Address::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(t[13]),
        u16::from_be_bytes([t[14], t[15]]),
    );
    let ip = Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Icmpv6,
        payload_len: icmp.buffer_len(),
        hop_limit,
    };
    let eth = EthernetRepr {
        src_addr: POD_MAC,
        dst_addr: EthernetAddress([0x33, 0x33, 0xff, t[13], t[14], t[15]]),
        ethertype: EthernetProtocol::Ipv6,
    };
    let mut buf = vec![0u8; eth.buffer_len() + ip.buffer_len() + icmp.buffer_len()];
    let mut f = EthernetFrame::new_unchecked(&mut buf);
    eth.emit(&mut f);
    let mut p = Ipv6Packet::new_unchecked(f.payload_mut());
    ip.emit(&mut p);
    icmp.emit(
        &src,
        &dst,
        &mut Icmpv6Packet::new_unchecked(p.payload_mut()),
        &ChecksumCapabilities::default(),
    );
    buf
}

#[test]
fn arp_for_the_gateway_is_answered_with_its_mac() {
    let gw = Gateway::DEFAULT;
    let req = arp_request(gw.v4);
    let mut out = [0u8; 128];
    let n = answer(&req, &gw, &mut out).expect("an answer");
    let f = EthernetFrame::new_checked(&out[..n]).unwrap();
    assert_eq!(f.dst_addr(), POD_MAC);
    assert_eq!(f.src_addr(), EthernetAddress(gw.mac));
    let repr = ArpRepr::parse(&ArpPacket::new_checked(f.payload()).unwrap()).unwrap();
    assert_eq!(
        repr,
        ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr: EthernetAddress(gw.mac),
            source_protocol_addr: Ipv4Address::from(gw.v4),
            target_hardware_addr: POD_MAC,
            target_protocol_addr: Ipv4Address::new(198, 18, 1, 2),
        }
    );
}

#[test]
fn arp_for_other_addresses_and_replies_are_not_answered() {
    let gw = Gateway::DEFAULT;
    let mut out = [0u8; 128];
    assert!(answer(&arp_request([198, 18, 1, 9]), &gw, &mut out).is_none());
    let mut reply = arp_request(gw.v4);
    reply[21] = 2; // an ARP reply, not a request
    assert!(answer(&reply, &gw, &mut out).is_none());
    assert!(
        answer(&arp_request(gw.v4)[..30], &gw, &mut out).is_none(),
        "truncated"
    );
}

#[test]
fn neighbor_solicitation_for_the_gateway_gets_an_advertisement() {
    let gw = Gateway::DEFAULT;
    let target = Ipv6Address::from(gw.v6);
    let req = solicitation(pod_v6(), target, 255);
    let mut out = [0u8; 256];
    let n = answer(&req, &gw, &mut out).expect("an answer");
    let f = EthernetFrame::new_checked(&out[..n]).unwrap();
    assert_eq!(f.dst_addr(), POD_MAC);
    assert_eq!(f.ethertype(), EthernetProtocol::Ipv6);
    let ip = Ipv6Packet::new_checked(f.payload()).unwrap();
    let ipr = Ipv6Repr::parse(&ip).unwrap();
    assert_eq!(
        (ipr.src_addr, ipr.dst_addr, ipr.hop_limit),
        (target, pod_v6(), 255)
    );
    let icmp = Icmpv6Repr::parse(
        &ipr.src_addr,
        &ipr.dst_addr,
        &Icmpv6Packet::new_checked(ip.payload()).unwrap(),
        &ChecksumCapabilities::default(),
    )
    .expect("a valid ICMPv6 checksum");
    match icmp {
        Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
            flags,
            target_addr,
            lladdr,
        }) => {
            assert_eq!(target_addr, target);
            assert_eq!(
                lladdr,
                Some(RawHardwareAddress::from(EthernetAddress(gw.mac)))
            );
            assert!(flags.contains(
                NdiscNeighborFlags::SOLICITED
                    | NdiscNeighborFlags::ROUTER
                    | NdiscNeighborFlags::OVERRIDE
            ));
        }
        other => panic!("not an advertisement: {other:?}"),
    }
}

#[test]
fn dad_off_link_and_other_targets_are_not_answered() {
    let gw = Gateway::DEFAULT;
    let target = Ipv6Address::from(gw.v6);
    let mut out = [0u8; 256];
    assert!(
        answer(
            &solicitation(Ipv6Address::UNSPECIFIED, target, 255),
            &gw,
            &mut out
        )
        .is_none(),
        "DAD"
    );
    assert!(
        answer(&solicitation(pod_v6(), target, 64), &gw, &mut out).is_none(),
        "hop limit below 255: not on link"
    );
    assert!(
        answer(&solicitation(pod_v6(), pod_v6(), 255), &gw, &mut out).is_none(),
        "not the gateway"
    );
}
