//! Stage 5: rewrite a packet's addresses and ports in place, checksums
//! patched incrementally (RFC 1624), never recomputed over the payload
//! (SCTP excepted: CRC32c has no incremental form).
//!
//! One entry point: the packet has tuple `from` (its flow key) and must
//! leave with tuple `to`. The ones'-complement difference of the changed
//! address words and of the changed ports is computed once and applied to
//! each checksum that covers them: the IPv4 header's (addresses), TCP's and
//! UDP's (pseudo-header and ports), ICMPv6's (pseudo-header and identifier),
//! ICMPv4's (identifier only: no pseudo-header). SCTP's has neither.

use crate::decode::{Frag, Parsed, Transport};
use crate::drop::DropReason;
use crate::flow::{Family, FlowKey};
use crate::wire::{checksum, sctp};

/// Header offsets the rewrite writes at.
mod at {
    pub const V4_CHECKSUM: usize = 10;
    pub const V4_SRC: usize = 12;
    pub const V4_DST: usize = 16;
    pub const V6_SRC: usize = 8;
    pub const V6_DST: usize = 24;
    pub const L4_SPORT: usize = 0;
    pub const L4_DPORT: usize = 2;
    pub const TCP_CHECKSUM: usize = 16;
    pub const UDP_CHECKSUM: usize = 6;
    pub const ICMP_CHECKSUM: usize = 2;
    pub const ICMP_IDENT: usize = 4;
}

/// Σ(~old) + Σ(new) over the 16-bit words of two equal-length fields: the
/// term RFC 1624's equation 3 adds to `~HC`. At most 16 words, so a `u32`
/// holds it unfolded.
#[inline]
fn delta(old: &[u8], new: &[u8]) -> u32 {
    let mut acc = 0u32;
    for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
        acc += u32::from(!u16::from_be_bytes([o[0], o[1]]))
            + u32::from(u16::from_be_bytes([n[0], n[1]]));
    }
    acc
}

#[inline]
fn delta16(old: u16, new: u16) -> u32 {
    u32::from(!old) + u32::from(new)
}

/// `HC' = ~(~HC + delta)`.
#[inline]
fn patch(buf: &mut [u8], at: usize, delta: u32) -> u16 {
    let hc = u16::from_be_bytes([buf[at], buf[at + 1]]);
    let new = !checksum::fold(u32::from(!hc) + checksum::fold(delta) as u32);
    buf[at..at + 2].copy_from_slice(&new.to_be_bytes());
    new
}

#[inline]
fn put16(buf: &mut [u8], at: usize, v: u16) {
    buf[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
fn delta32(old: u32, new: u32) -> u32 {
    u32::from(!(old >> 16) as u16) + u32::from(!(old as u16)) + (new >> 16) + (new & 0xffff)
}

/// The common case in a straight line: a whole IPv4 TCP or UDP packet.
/// Returns false, having written nothing, for anything else.
#[inline(always)]
fn rewrite_v4_fast(frame: &mut [u8], p: &Parsed, from: &FlowKey, to: &FlowKey) -> bool {
    let tcp = matches!(p.transport, Transport::Tcp { .. });
    let udp = matches!(p.transport, Transport::Udp { .. });
    if p.family != Family::V4 || p.frag != Frag::Whole || !(tcp || udp) {
        return false;
    }
    let (l3, l4, end) = (p.l3 as usize, p.l4 as usize, p.end as usize);
    if l3 + 20 > l4 || l4 + 8 > end || end > frame.len() || (tcp && l4 + 20 > end) {
        return false;
    }
    let (ip, seg) = frame.split_at_mut(l4);
    let ip = &mut ip[l3..];
    let mut addr = 0u32;
    let (os, ns) = (from.src.0 as u32, to.src.0 as u32);
    if os != ns {
        addr += delta32(os, ns);
        ip[at::V4_SRC..at::V4_SRC + 4].copy_from_slice(&ns.to_be_bytes());
    }
    let (od, nd) = (from.dst.0 as u32, to.dst.0 as u32);
    if od != nd {
        addr += delta32(od, nd);
        ip[at::V4_DST..at::V4_DST + 4].copy_from_slice(&nd.to_be_bytes());
    }
    if addr != 0 {
        patch(ip, at::V4_CHECKSUM, addr);
    }
    let mut d = addr;
    if from.sport != to.sport {
        d += delta16(from.sport, to.sport);
        put16(seg, at::L4_SPORT, to.sport);
    }
    if from.dport != to.dport {
        d += delta16(from.dport, to.dport);
        put16(seg, at::L4_DPORT, to.dport);
    }
    if tcp {
        patch(seg, at::TCP_CHECKSUM, d);
    } else {
        // IPv4's zero means "no checksum" and stays zero; a computed zero
        // goes out as 0xFFFF (RFC 768).
        let hc = u16::from_be_bytes([seg[at::UDP_CHECKSUM], seg[at::UDP_CHECKSUM + 1]]);
        if hc != 0 && patch(seg, at::UDP_CHECKSUM, d) == 0 {
            put16(seg, at::UDP_CHECKSUM, 0xffff);
        }
    }
    true
}

/// Rewrites `frame` from tuple `from` to tuple `to`.
pub fn rewrite(
    frame: &mut [u8],
    p: &Parsed,
    from: &FlowKey,
    to: &FlowKey,
) -> Result<(), DropReason> {
    if rewrite_v4_fast(frame, p, from, to) {
        return Ok(());
    }
    let min_ip = match p.family {
        Family::V4 => 20,
        Family::V6 => 40,
    };
    let (l3, l4, end) = (p.l3 as usize, p.l4 as usize, p.end as usize);
    if l3 + min_ip > l4 || l4 > end || end > frame.len() {
        return Err(DropReason::RewriteOutOfBounds);
    }
    let (ip, rest) = frame.split_at_mut(l4);
    let ip = &mut ip[l3..];
    let seg = &mut rest[..end - l4];

    // Addresses, and what they change in a pseudo-header.
    let mut addr = 0u32;
    match p.family {
        Family::V4 => {
            if from.src != to.src {
                let (o, n) = (from.src.v4_octets(), to.src.v4_octets());
                addr += delta(&o, &n);
                ip[at::V4_SRC..at::V4_SRC + 4].copy_from_slice(&n);
            }
            if from.dst != to.dst {
                let (o, n) = (from.dst.v4_octets(), to.dst.v4_octets());
                addr += delta(&o, &n);
                ip[at::V4_DST..at::V4_DST + 4].copy_from_slice(&n);
            }
            if addr != 0 {
                patch(ip, at::V4_CHECKSUM, addr);
            }
        }
        Family::V6 => {
            if from.src != to.src {
                let (o, n) = (from.src.v6_octets(), to.src.v6_octets());
                addr += delta(&o, &n);
                ip[at::V6_SRC..at::V6_SRC + 16].copy_from_slice(&n);
            }
            if from.dst != to.dst {
                let (o, n) = (from.dst.v6_octets(), to.dst.v6_octets());
                addr += delta(&o, &n);
                ip[at::V6_DST..at::V6_DST + 16].copy_from_slice(&n);
            }
        }
    }
    // A later fragment carries no transport header: addresses were all.
    if let Frag::Later { .. } = p.frag {
        return Ok(());
    }

    let sport = from.sport != to.sport;
    let dport = from.dport != to.dport;
    match p.transport {
        Transport::Tcp { .. } | Transport::Udp { .. } => {
            let mut d = addr;
            if sport {
                d += delta16(from.sport, to.sport);
                put16(seg, at::L4_SPORT, to.sport);
            }
            if dport {
                d += delta16(from.dport, to.dport);
                put16(seg, at::L4_DPORT, to.dport);
            }
            if let Transport::Tcp { .. } = p.transport {
                patch(seg, at::TCP_CHECKSUM, d);
            } else {
                let hc = u16::from_be_bytes([seg[at::UDP_CHECKSUM], seg[at::UDP_CHECKSUM + 1]]);
                // IPv4's zero means "no checksum" and stays zero; a computed
                // zero goes out as 0xFFFF (RFC 768).
                if !(p.family == Family::V4 && hc == 0) && patch(seg, at::UDP_CHECKSUM, d) == 0 {
                    put16(seg, at::UDP_CHECKSUM, 0xffff);
                }
            }
        }
        Transport::Sctp { .. } => {
            if sport || dport {
                if p.frag != Frag::Whole {
                    return Err(DropReason::SctpFragmentNat);
                }
                sctp::patch_ports(seg, sport.then_some(to.sport), dport.then_some(to.dport));
            }
        }
        Transport::Echo { request, .. } => {
            let (old, new) = if request {
                (from.sport, to.sport)
            } else {
                (from.dport, to.dport)
            };
            let mut d = if p.family == Family::V6 { addr } else { 0 };
            if old != new {
                d += delta16(old, new);
                put16(seg, at::ICMP_IDENT, new);
            }
            if d != 0 {
                patch(seg, at::ICMP_CHECKSUM, d);
            }
        }
        Transport::IcmpOther { .. } => {
            if p.family == Family::V6 && addr != 0 {
                patch(seg, at::ICMP_CHECKSUM, addr);
            }
        }
        Transport::Opaque => {}
    }
    Ok(())
}
