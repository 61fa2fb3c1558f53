//! Stage 5: rewrite a packet's addresses and ports in place, checksums
//! patched incrementally (RFC 1624), never recomputed over the payload
//! (SCTP excepted: CRC32c has no incremental form).
//!
//! One entry point: the packet has tuple `from` (its flow key) and must
//! leave with tuple `to`. The writing is the `wire/` views': the network
//! header's view rewrites the addresses (patching the IPv4 header's
//! checksum) and returns their change as a checksum `Delta`; the
//! transport's view rewrites its ports or identifier and patches its
//! checksum once, for them and for that delta where its pseudo-header
//! covers the addresses (TCP, UDP, ICMPv6; not ICMPv4, and not SCTP,
//! whose CRC32c is recomputed).

use crate::decode::{Frag, Parsed, Transport};
use crate::drop::DropReason;
use crate::flow::{Addr, Family, FlowKey};
use crate::wire::checksum::Delta;
use crate::wire::icmp::IcmpPacket;
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::ipv6::Ipv6Packet;
use crate::wire::sctp;
use crate::wire::tcp::TcpSegment;
use crate::wire::udp::{UdpChecksumMode, UdpDatagram};

/// `Some(new)` where a field changes.
#[inline]
fn changed<T: PartialEq>(old: T, new: T) -> Option<T> {
    (old != new).then_some(new)
}

/// The addresses' rewrite: their change, for the transport's checksum.
#[inline]
fn rewrite_addrs(ip: &mut [u8], family: Family, from: &FlowKey, to: &FlowKey) -> Option<Delta> {
    let src = changed(from.src, to.src);
    let dst = changed(from.dst, to.dst);
    Some(match family {
        Family::V4 => Ipv4Packet::new_header(ip)
            .ok()?
            .rewrite_addrs(src.map(Addr::v4_octets), dst.map(Addr::v4_octets)),
        Family::V6 => Ipv6Packet::new_header(ip)
            .ok()?
            .rewrite_addrs(src.map(Addr::v6_octets), dst.map(Addr::v6_octets)),
    })
}

/// Rewrites `frame` from tuple `from` to tuple `to`.
#[inline]
pub fn rewrite(
    frame: &mut [u8],
    p: &Parsed,
    from: &FlowKey,
    to: &FlowKey,
) -> Result<(), DropReason> {
    const OUT: DropReason = DropReason::RewriteOutOfBounds;
    let (l3, l4, end) = (p.l3 as usize, p.l4 as usize, p.end as usize);
    if l3 > l4 || l4 > end || end > frame.len() {
        return Err(OUT);
    }
    let (ip, rest) = frame.split_at_mut(l4);
    let pseudo = rewrite_addrs(&mut ip[l3..], p.family, from, to).ok_or(OUT)?;
    // A later fragment carries no transport header: addresses were all.
    if let Frag::Later { .. } = p.frag {
        return Ok(());
    }
    let seg = &mut rest[..end - l4];
    let sport = changed(from.sport, to.sport);
    let dport = changed(from.dport, to.dport);
    match p.transport {
        Transport::Tcp { .. } => TcpSegment::new_header(seg)
            .ok_or(OUT)?
            .rewrite(sport, dport, pseudo),
        Transport::Udp { .. } => {
            let mode = match p.family {
                Family::V4 => UdpChecksumMode::V4,
                Family::V6 => UdpChecksumMode::V6,
            };
            UdpDatagram::new_header_only(seg)
                .ok_or(OUT)?
                .rewrite(mode, sport, dport, pseudo)
        }
        Transport::Sctp { .. } => {
            if sport.is_some() || dport.is_some() {
                if p.frag != Frag::Whole {
                    return Err(DropReason::SctpFragmentNat);
                }
                if seg.len() < sctp::HEADER_LEN {
                    return Err(OUT);
                }
                sctp::patch_ports(seg, sport, dport);
            }
        }
        Transport::Echo { request, .. } => {
            let ident = if request { sport } else { dport };
            let pseudo = match p.family {
                Family::V4 => Delta::NONE,
                Family::V6 => pseudo,
            };
            if ident.is_some() || !pseudo.is_none() {
                IcmpPacket::new_checked(seg)
                    .ok_or(OUT)?
                    .rewrite(ident, pseudo);
            }
        }
        Transport::IcmpOther { .. } => {
            if p.family == Family::V6 && !pseudo.is_none() {
                IcmpPacket::new_checked(seg)
                    .ok_or(OUT)?
                    .rewrite(None, pseudo);
            }
        }
        Transport::Opaque => {}
    }
    Ok(())
}
