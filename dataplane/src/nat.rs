//! Stage 5: rewrite a packet's addresses and ports in place, checksums
//! patched incrementally (RFC 1624), never recomputed over the payload
//! (SCTP excepted: CRC32c has no incremental form).
//!
//! One entry point: the packet has tuple `from` (its flow key) and must
//! leave with tuple `to`; fields that differ are rewritten and the IPv4
//! header, TCP, UDP and ICMPv6 checksums follow them (ICMPv4 has no
//! pseudo-header, SCTP none either).

use crate::decode::{Frag, Parsed, Transport};
use crate::drop::DropReason;
use crate::flow::{Family, FlowKey};
use crate::wire::udp::UdpChecksumMode;
use crate::wire::{icmp, ipv4, ipv6, sctp, tcp, udp};

/// Rewrites `frame` from tuple `from` to tuple `to`.
pub fn rewrite(frame: &mut [u8], p: &Parsed, from: &FlowKey, to: &FlowKey) -> Result<(), DropReason> {
    if p.l3 > p.l4 || p.l4 > p.end || p.end > frame.len() {
        return Err(DropReason::RewriteOutOfBounds);
    }
    let has_l4 = !matches!(p.frag, Frag::Later { .. });
    let (ip, rest) = frame.split_at_mut(p.l4);
    let ip = &mut ip[p.l3..];
    let seg = &mut rest[..p.end - p.l4];

    match p.family {
        Family::V4 => {
            let mut h = ipv4::Ipv4Packet::new_header(&mut *ip).map_err(|_| DropReason::RewriteOutOfBounds)?;
            if from.src != to.src {
                let (o, n) = (from.src.v4_octets(), to.src.v4_octets());
                h.set_src(n);
                if has_l4 {
                    pseudo(seg, p, &o, &n);
                }
            }
            if from.dst != to.dst {
                let (o, n) = (from.dst.v4_octets(), to.dst.v4_octets());
                h.set_dst(n);
                if has_l4 {
                    pseudo(seg, p, &o, &n);
                }
            }
        }
        Family::V6 => {
            let mut h = ipv6::Ipv6Packet::new_header(&mut *ip).map_err(|_| DropReason::RewriteOutOfBounds)?;
            if from.src != to.src {
                let (o, n) = (from.src.v6_octets(), to.src.v6_octets());
                h.set_src(n);
                if has_l4 {
                    pseudo(seg, p, &o, &n);
                }
            }
            if from.dst != to.dst {
                let (o, n) = (from.dst.v6_octets(), to.dst.v6_octets());
                h.set_dst(n);
                if has_l4 {
                    pseudo(seg, p, &o, &n);
                }
            }
        }
    }

    let sport = (from.sport != to.sport).then_some(to.sport);
    let dport = (from.dport != to.dport).then_some(to.dport);
    if (sport.is_none() && dport.is_none()) || !has_l4 {
        return Ok(());
    }
    let mode = match p.family {
        Family::V4 => UdpChecksumMode::V4,
        Family::V6 => UdpChecksumMode::V6,
    };
    match p.transport {
        Transport::Tcp { .. } => tcp::patch_ports(seg, sport, dport),
        Transport::Udp { .. } => udp::patch_ports(seg, mode, sport, dport),
        Transport::Sctp { .. } => {
            if p.frag != Frag::Whole {
                return Err(DropReason::SctpFragmentNat);
            }
            sctp::patch_ports(seg, sport, dport)
        }
        Transport::Echo { request, .. } => {
            let ident = if request { to.sport } else { to.dport };
            icmp::patch_ident(seg, ident)
        }
        Transport::IcmpOther { .. } | Transport::Opaque => {}
    }
    Ok(())
}

/// Folds an address change into the transport checksum where the
/// transport's checksum covers a pseudo-header.
fn pseudo(seg: &mut [u8], p: &Parsed, old: &[u8], new: &[u8]) {
    let mode = match p.family {
        Family::V4 => UdpChecksumMode::V4,
        Family::V6 => UdpChecksumMode::V6,
    };
    match p.transport {
        Transport::Tcp { .. } => tcp::patch_pseudo(seg, old, new),
        Transport::Udp { .. } => udp::patch_pseudo(seg, mode, old, new),
        Transport::Echo { .. } | Transport::IcmpOther { .. } if p.family == Family::V6 => {
            icmp::patch_pseudo(seg, old, new)
        }
        _ => {}
    }
}
