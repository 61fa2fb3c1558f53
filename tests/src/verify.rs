//! An independent reading of a frame the pipeline emitted: etherparse
//! decodes it and recomputes every checksum from scratch, and the result is
//! compared with what is in the frame. Nothing here calls Sluice's code.

use etherparse::{NetSlice, SlicedPacket, TransportSlice};

use crate::frames::crc32c_reference;

/// What a receiving kernel would see of a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub src: std::net::IpAddr,
    pub dst: std::net::IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    /// Echo identifier for ICMP echo.
    pub ident: Option<u16>,
    pub ttl: u8,
    pub payload: Vec<u8>,
}

/// The Internet checksum treats 0x0000 and 0xFFFF as the same number; an
/// incremental update may land on either where a full computation gives
/// the other, and a receiver accepts both.
fn same_csum(a: u16, b: u16) -> bool {
    a == b || (a == 0 || a == 0xffff) && (b == 0 || b == 0xffff)
}

/// Decodes `frame` with etherparse and checks every checksum; panics with
/// the reason if one is wrong (this is test code).
pub fn check(frame: &[u8]) -> Seen {
    let p = SlicedPacket::from_ethernet(frame).expect("etherparse refuses the emitted frame");
    let net = p.net.as_ref().expect("no IP layer");
    let (src, dst, ttl, proto, ip_payload): (std::net::IpAddr, std::net::IpAddr, u8, u8, &[u8]) =
        match net {
            NetSlice::Ipv4(v4) => {
                let h = v4.header().to_header();
                assert_eq!(
                    h.header_checksum,
                    h.calc_header_checksum(),
                    "IPv4 header checksum"
                );
                (
                    h.source.into(),
                    h.destination.into(),
                    h.time_to_live,
                    h.protocol.0,
                    v4.payload().payload,
                )
            }
            NetSlice::Ipv6(v6) => {
                let h = v6.header().to_header();
                (
                    h.source.into(),
                    h.destination.into(),
                    h.hop_limit,
                    v6.payload().ip_number.0,
                    v6.payload().payload,
                )
            }
        };
    let (s4, d4) = match (src, dst) {
        (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => (Some(s.octets()), Some(d.octets())),
        _ => (None, None),
    };
    let (s6, d6) = match (src, dst) {
        (std::net::IpAddr::V6(s), std::net::IpAddr::V6(d)) => (Some(s.octets()), Some(d.octets())),
        _ => (None, None),
    };
    let mut seen = Seen {
        src,
        dst,
        proto,
        sport: 0,
        dport: 0,
        ident: None,
        ttl,
        payload: Vec::new(),
    };
    match &p.transport {
        Some(TransportSlice::Tcp(t)) => {
            let want = match (s4, s6) {
                (Some(_), _) => t.calc_checksum_ipv4(s4.unwrap(), d4.unwrap()).unwrap(),
                _ => t.calc_checksum_ipv6(s6.unwrap(), d6.unwrap()).unwrap(),
            };
            assert!(
                same_csum(t.checksum(), want),
                "TCP checksum {:#06x}, recomputed {:#06x}",
                t.checksum(),
                want
            );
            seen.sport = t.source_port();
            seen.dport = t.destination_port();
            seen.payload = t.payload().to_vec();
        }
        Some(TransportSlice::Udp(u)) => {
            let h = u.to_header();
            if s4.is_some() && h.checksum == 0 {
                // IPv4 "no checksum": must have stayed so.
            } else {
                let want = match (s4, s6) {
                    (Some(_), _) => h
                        .calc_checksum_ipv4_raw(s4.unwrap(), d4.unwrap(), u.payload())
                        .unwrap(),
                    _ => h
                        .calc_checksum_ipv6_raw(s6.unwrap(), d6.unwrap(), u.payload())
                        .unwrap(),
                };
                assert_ne!(
                    h.checksum, 0,
                    "a computed UDP checksum of zero must go out as 0xFFFF"
                );
                assert!(
                    same_csum(h.checksum, want),
                    "UDP checksum {:#06x}, recomputed {want:#06x}",
                    h.checksum
                );
            }
            seen.sport = h.source_port;
            seen.dport = h.destination_port;
            seen.payload = u.payload().to_vec();
        }
        Some(TransportSlice::Icmpv4(i)) => {
            let want = i.icmp_type().calc_checksum(i.payload());
            assert!(same_csum(i.checksum(), want), "ICMP checksum");
            if let etherparse::Icmpv4Type::EchoRequest(e) | etherparse::Icmpv4Type::EchoReply(e) =
                i.icmp_type()
            {
                seen.ident = Some(e.id);
            }
            seen.payload = i.payload().to_vec();
        }
        Some(TransportSlice::Icmpv6(i)) => {
            let want = i
                .icmp_type()
                .calc_checksum(s6.unwrap(), d6.unwrap(), i.payload())
                .unwrap();
            assert!(same_csum(i.checksum(), want), "ICMPv6 checksum");
            if let etherparse::Icmpv6Type::EchoRequest(e) | etherparse::Icmpv6Type::EchoReply(e) =
                i.icmp_type()
            {
                seen.ident = Some(e.id);
            }
            seen.payload = i.payload().to_vec();
        }
        None if proto == 132 => {
            let s = ip_payload;
            assert!(s.len() >= 12, "SCTP header");
            let mut z = s.to_vec();
            z[8..12].fill(0);
            let want = crc32c_reference(&z);
            let got = u32::from_le_bytes([s[8], s[9], s[10], s[11]]);
            assert_eq!(got, want, "SCTP CRC32c");
            seen.sport = u16::from_be_bytes([s[0], s[1]]);
            seen.dport = u16::from_be_bytes([s[2], s[3]]);
            seen.payload = s[12..].to_vec();
        }
        None => seen.payload = ip_payload.to_vec(),
    }
    seen
}
