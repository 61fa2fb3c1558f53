//! Stage 1: a frame's bytes to a `Parsed` summary, read once.
//!
//! Every later stage reads the summary (offsets, the flow key, TCP flags),
//! not the packet. Truncated or inconsistent input is refused with a
//! `DropReason`; no input makes this module panic (a fuzz target holds it to
//! that).

use crate::drop::DropReason;
use crate::flow::{Addr, Family, FlowKey, Proto};
use crate::wire::{ethernet, icmp, ipv4, ipv6, sctp, tcp, udp};

/// Where a packet stands in a fragmented datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frag {
    /// A whole datagram.
    Whole,
    /// The first fragment: it carries the transport header.
    First { ident: u32 },
    /// A later fragment: no transport header; its ports come from the first
    /// fragment's (see `frag`).
    Later { ident: u32 },
}

/// The transport header, as far as flows care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    Sctp {
        sport: u16,
        dport: u16,
    },
    /// ICMP or ICMPv6 echo: the identifier is the flow's "port".
    Echo {
        ident: u16,
        request: bool,
    },
    /// ICMP error or informational message: no flow of its own.
    IcmpOther {
        kind: icmp::IcmpKind,
    },
    /// Some other protocol, or a later fragment whose header is elsewhere.
    Opaque,
}

/// What decode learnt of an IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub vlan: Option<u16>,
    pub family: Family,
    /// Offset of the IP header in the frame. Offsets are `u32` to keep
    /// the summary small: it is copied through the passes of a burst.
    pub l3: u32,
    /// Offset of the transport header (for a later fragment, of its data).
    pub l4: u32,
    /// End of the IP packet in the frame (Ethernet padding excluded).
    pub end: u32,
    /// The IP protocol number of the transport.
    pub ip_proto: u8,
    pub src: Addr,
    pub dst: Addr,
    pub ttl: u8,
    pub frag: Frag,
    pub transport: Transport,
}

impl Parsed {
    /// A placeholder for scratch arrays.
    pub const EMPTY: Parsed = Parsed {
        vlan: None,
        family: Family::V4,
        l3: 0,
        l4: 0,
        end: 0,
        ip_proto: 0,
        src: Addr(0),
        dst: Addr(0),
        ttl: 0,
        frag: Frag::Whole,
        transport: Transport::Opaque,
    };

    /// The flow key, when the packet carries its ports. Later fragments get
    /// theirs from the fragment table.
    #[inline]
    pub fn key(&self) -> Option<FlowKey> {
        let (proto, sport, dport) = match self.transport {
            Transport::Tcp { sport, dport, .. } => (Proto::Tcp, sport, dport),
            Transport::Udp { sport, dport } => (Proto::Udp, sport, dport),
            Transport::Sctp { sport, dport } => (Proto::Sctp, sport, dport),
            Transport::Echo { ident, request } => {
                let p = match self.family {
                    Family::V4 => Proto::Icmp,
                    Family::V6 => Proto::Icmp6,
                };
                if request {
                    (p, ident, 0)
                } else {
                    (p, 0, ident)
                }
            }
            Transport::IcmpOther { .. } | Transport::Opaque => return None,
        };
        Some(self.key_with_ports(proto, sport, dport))
    }

    pub fn key_with_ports(&self, proto: Proto, sport: u16, dport: u16) -> FlowKey {
        FlowKey {
            src: self.src,
            dst: self.dst,
            sport,
            dport,
            proto,
            family: self.family,
        }
    }

    pub fn tcp_flags(&self) -> Option<u8> {
        match self.transport {
            Transport::Tcp { flags, .. } => Some(flags),
            _ => None,
        }
    }
}

/// The kinds of frame the pipeline tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    Ip(Parsed),
    /// A well-formed Ethernet/IPv4 ARP packet at this offset.
    Arp {
        offset: usize,
    },
}

/// Reads a frame. Never panics, whatever the bytes.
#[inline]
pub fn decode(frame: &[u8]) -> Result<Decoded, DropReason> {
    let mut p = Parsed::EMPTY;
    Ok(match decode_into(frame, &mut p)? {
        Layer3::Ip => Decoded::Ip(p),
        Layer3::Arp { offset } => Decoded::Arp { offset },
    })
}

/// What `decode_into` found: an IP packet (its summary written where the
/// caller asked) or ARP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer3 {
    Ip,
    Arp { offset: usize },
}

/// `decode`, writing an IP packet's summary straight into `out` (the
/// burst's array), not returning it to be copied there.
#[inline]
pub fn decode_into(frame: &[u8], out: &mut Parsed) -> Result<Layer3, DropReason> {
    if fast_v4(frame, out) {
        return Ok(Layer3::Ip);
    }
    match decode_general(frame)? {
        Decoded::Ip(p) => {
            *out = p;
            Ok(Layer3::Ip)
        }
        Decoded::Arp { offset } => Ok(Layer3::Arp { offset }),
    }
}

/// The frame most of a node's traffic is: untagged IPv4 without options or
/// fragmentation, carrying TCP or UDP. Read in a straight line; anything
/// else, or anything wrong, returns `None` and goes the general way, which
/// also names what is wrong. Checks exactly what the general path checks.
#[inline(always)]
fn fast_v4(f: &[u8], out: &mut Parsed) -> bool {
    match fast_v4_parse(f) {
        Some(p) => {
            *out = p;
            true
        }
        None => false,
    }
}

#[inline(always)]
fn fast_v4_parse(f: &[u8]) -> Option<Parsed> {
    const L3: usize = ethernet::HEADER_LEN;
    const L4: usize = L3 + ipv4::MIN_HEADER_LEN;
    if f.len() < L4 + udp::HEADER_LEN || f[12] != 0x08 || f[13] != 0x00 || f[L3] != 0x45 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([f[L3 + 2], f[L3 + 3]]));
    let end = L3 + total;
    // Fragment bits: MF or any offset sends it the general way.
    if total < ipv4::MIN_HEADER_LEN || end > f.len() || (f[L3 + 6] & 0x3f) | f[L3 + 7] != 0 {
        return None;
    }
    if !cfg!(fuzzing)
        && !f[L3..L4]
            .try_into()
            .is_ok_and(crate::wire::checksum::header_verifies)
    {
        return None;
    }
    let seg = &f[L4..end];
    let be = |at: usize| u16::from_be_bytes([seg[at], seg[at + 1]]);
    let proto = f[L3 + 9];
    let transport = match proto {
        6 => {
            if seg.len() < tcp::MIN_HEADER_LEN {
                return None;
            }
            let off = usize::from(seg[12] >> 4) * 4;
            if off < tcp::MIN_HEADER_LEN || off > seg.len() {
                return None;
            }
            Transport::Tcp {
                sport: be(0),
                dport: be(2),
                flags: seg[13],
            }
        }
        17 => {
            if seg.len() < udp::HEADER_LEN {
                return None;
            }
            let len = usize::from(be(4));
            if len < udp::HEADER_LEN || len > seg.len() {
                return None;
            }
            Transport::Udp {
                sport: be(0),
                dport: be(2),
            }
        }
        _ => return None,
    };
    Some(Parsed {
        vlan: None,
        family: Family::V4,
        l3: L3 as u32,
        l4: L4 as u32,
        end: end as u32,
        ip_proto: proto,
        src: Addr::from_v4([f[L3 + 12], f[L3 + 13], f[L3 + 14], f[L3 + 15]]),
        dst: Addr::from_v4([f[L3 + 16], f[L3 + 17], f[L3 + 18], f[L3 + 19]]),
        ttl: f[L3 + 8],
        frag: Frag::Whole,
        transport,
    })
}

/// Every frame the fast path does not take.
pub fn decode_general(frame: &[u8]) -> Result<Decoded, DropReason> {
    let l2 = ethernet::parse(frame).map_err(|e| match e {
        ethernet::L2Error::Truncated => DropReason::EthTruncated,
        ethernet::L2Error::VlanTruncated => DropReason::VlanTruncated,
        ethernet::L2Error::VlanTooDeep => DropReason::VlanTooDeep,
    })?;
    let l3 = l2.payload_offset;
    let rest = &frame[l3..];
    match l2.ethertype {
        ethernet::ETHERTYPE_IPV4 => decode_v4(rest, l3, l2.vlan).map(Decoded::Ip),
        ethernet::ETHERTYPE_IPV6 => decode_v6(rest, l3, l2.vlan).map(Decoded::Ip),
        ethernet::ETHERTYPE_ARP => match crate::wire::arp::ArpPacket::new_checked(rest) {
            Some(_) => Ok(Decoded::Arp { offset: l3 }),
            None => Err(DropReason::ArpMalformed),
        },
        _ => Err(DropReason::EthertypeUnsupported),
    }
}

#[inline]
fn decode_v4(b: &[u8], l3: usize, vlan: Option<u16>) -> Result<Parsed, DropReason> {
    use ipv4::Ipv4Error as E;
    let ip = ipv4::Ipv4Packet::new_checked(b).map_err(|e| match e {
        E::Truncated => DropReason::Ipv4Truncated,
        E::BadVersion => DropReason::Ipv4BadVersion,
        E::BadHeaderLen => DropReason::Ipv4BadHeaderLen,
        E::BadTotalLen => DropReason::Ipv4BadTotalLen,
        E::BadChecksum => DropReason::Ipv4BadChecksum,
    })?;
    let hl = ip.header_len();
    let total = ip.total_len();
    let frag = if !ip.is_fragment() {
        Frag::Whole
    } else if ip.frag_offset() == 0 {
        Frag::First {
            ident: u32::from(ip.ident()),
        }
    } else {
        Frag::Later {
            ident: u32::from(ip.ident()),
        }
    };
    let proto = ip.protocol();
    let transport = transport(&b[hl..total], proto, Family::V4, frag)?;
    Ok(Parsed {
        vlan,
        family: Family::V4,
        l3: l3 as u32,
        l4: (l3 + hl) as u32,
        end: (l3 + total) as u32,
        ip_proto: proto,
        src: Addr::from_v4(ip.src()),
        dst: Addr::from_v4(ip.dst()),
        ttl: ip.ttl(),
        frag,
        transport,
    })
}

#[inline]
fn decode_v6(b: &[u8], l3: usize, vlan: Option<u16>) -> Result<Parsed, DropReason> {
    use ipv6::Ipv6Error as E;
    let err = |e| match e {
        E::Truncated => DropReason::Ipv6Truncated,
        E::BadVersion => DropReason::Ipv6BadVersion,
        E::BadPayloadLen => DropReason::Ipv6BadPayloadLen,
        E::ExtTruncated => DropReason::Ipv6ExtTruncated,
        E::ExtTooMany => DropReason::Ipv6ExtTooMany,
    };
    let ip = ipv6::Ipv6Packet::new_checked(b).map_err(err)?;
    let upper = ip.upper().map_err(err)?;
    let end = ipv6::HEADER_LEN + ip.payload_len();
    let frag = match upper.fragment {
        None => Frag::Whole,
        // An atomic fragment (offset 0, no more) is a whole datagram.
        Some(f) if f.offset == 0 && !f.more => Frag::Whole,
        Some(f) if f.offset == 0 => Frag::First { ident: f.ident },
        Some(f) => Frag::Later { ident: f.ident },
    };
    let transport = transport(&b[upper.offset..end], upper.protocol, Family::V6, frag)?;
    Ok(Parsed {
        vlan,
        family: Family::V6,
        l3: l3 as u32,
        l4: (l3 + upper.offset) as u32,
        end: (l3 + end) as u32,
        ip_proto: upper.protocol,
        src: Addr::from_v6(ip.src()),
        dst: Addr::from_v6(ip.dst()),
        ttl: ip.hop_limit(),
        frag,
        transport,
    })
}

/// Reads the transport header from `seg` (the IP payload in this packet).
#[inline]
fn transport(seg: &[u8], proto: u8, family: Family, frag: Frag) -> Result<Transport, DropReason> {
    if let Frag::Later { .. } = frag {
        return Ok(Transport::Opaque);
    }
    let first = matches!(frag, Frag::First { .. });
    // A first fragment must carry the whole transport header, or a later
    // fragment could overwrite the ports after policy saw them (RFC 1858's
    // tiny-fragment attack).
    let short = |r| {
        if first {
            DropReason::FragmentTooShort
        } else {
            r
        }
    };
    Ok(match proto {
        6 => {
            let t = tcp::TcpSegment::new_checked(seg).ok_or(short(DropReason::TcpMalformed))?;
            Transport::Tcp {
                sport: t.sport(),
                dport: t.dport(),
                flags: t.flags(),
            }
        }
        17 => {
            // In a first fragment the UDP length covers the whole datagram,
            // not this piece; only whole datagrams can be checked.
            let u = if first {
                udp::UdpDatagram::new_header_only(seg)
            } else {
                udp::UdpDatagram::new_checked(seg, seg.len())
            };
            let u = u.ok_or(short(DropReason::UdpMalformed))?;
            Transport::Udp {
                sport: u.sport(),
                dport: u.dport(),
            }
        }
        132 => {
            let s = sctp::SctpPacket::new_checked(seg).ok_or(short(DropReason::SctpMalformed))?;
            Transport::Sctp {
                sport: s.sport(),
                dport: s.dport(),
            }
        }
        1 | 58 if (proto == 1) == (family == Family::V4) => {
            let m = icmp::IcmpPacket::new_checked(seg).ok_or(short(DropReason::IcmpMalformed))?;
            let kind = match family {
                Family::V4 => icmp::classify_v4(m.msg_type()),
                Family::V6 => icmp::classify_v6(m.msg_type()),
            };
            match kind {
                icmp::IcmpKind::EchoRequest => Transport::Echo {
                    ident: m.ident(),
                    request: true,
                },
                icmp::IcmpKind::EchoReply => Transport::Echo {
                    ident: m.ident(),
                    request: false,
                },
                kind => Transport::IcmpOther { kind },
            }
        }
        _ => Transport::Opaque,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_panics_on_prefixes_of_a_real_frame() {
        // An ARP request, and every prefix of it.
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 1, 2, 0x08, 0x06]);
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 1, 2, 198, 18, 1, 2]);
        f.extend_from_slice(&[0, 0, 0, 0, 0, 0, 169, 254, 1, 1]);
        assert_eq!(decode(&f), Ok(Decoded::Arp { offset: 14 }));
        for n in 0..f.len() {
            assert!(decode(&f[..n]).is_err());
        }
    }

    #[test]
    fn fast_path_never_reads_past_a_short_ip_payload() {
        // IPv4 total length 20 (no transport at all) with a valid header
        // checksum, padded to 60 bytes as Ethernet pads: the straight-line
        // decoder must step aside, and the general one refuses it.
        for proto in [6u8, 17] {
            let mut f = vec![0u8; 60];
            f[12] = 0x08;
            f[14] = 0x45;
            f[17] = 20;
            f[22] = 64;
            f[23] = proto;
            f[26..30].copy_from_slice(&[198, 18, 1, 2]);
            f[30..34].copy_from_slice(&[198, 19, 0, 10]);
            let c = crate::wire::checksum::checksum(&f[14..34]);
            f[24..26].copy_from_slice(&c.to_be_bytes());
            assert!(fast_v4_parse(&f).is_none());
            assert!(decode(&f).is_err());
        }
    }

    #[test]
    fn unknown_ethertype_is_counted() {
        let mut f = vec![0u8; 60];
        f[12] = 0x88;
        f[13] = 0xcc; // LLDP
        assert_eq!(decode(&f), Err(DropReason::EthertypeUnsupported));
    }
}
