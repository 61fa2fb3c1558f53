//! ICMP errors about a translated flow (destination unreachable, packet
//! too big / fragmentation needed, time exceeded), translated back as
//! netfilter's NAT does (nf_nat_icmp_reply_translation): the packet they
//! quote is given the addresses and ports its sender knows it by, and the
//! outer header follows, so that the error reaches the socket it is
//! about. A backend's port-unreachable reaches the client from the
//! ClusterIP and quoting the ClusterIP; a router's packet-too-big about a
//! backend's reply reaches the backend quoting its own address.
//!
//! The quoted packet's flow is found by its reversed tuple: the error
//! travels against the packet it quotes. Nothing is refreshed by it.

use crate::conntrack::Conntrack;
use crate::decode::Parsed;
use crate::flow::{Addr, Family, FlowKey, Proto};
use crate::wire::checksum;

/// Bytes of ICMP header before the quoted packet.
const ICMP_HEADER: usize = 8;

/// The quoted packet's offsets and tuple.
struct Quoted {
    /// Offset of its IP header in the frame, and of its transport header.
    l3: usize,
    l4: usize,
    key: FlowKey,
}

/// Reads the packet quoted by the ICMP error at `p.l4`: IPv4 with any
/// header length, or IPv6 with no extension header, carrying TCP, UDP or
/// SCTP with at least its ports quoted.
fn quoted(frame: &[u8], p: &Parsed) -> Option<Quoted> {
    let l3 = p.l4 as usize + ICMP_HEADER;
    let end = p.end as usize;
    let ip = frame.get(l3..end)?;
    let (ihl, proto, src, dst) = match p.family {
        Family::V4 => {
            let b = ip.get(..20)?;
            if b[0] >> 4 != 4 {
                return None;
            }
            let ihl = usize::from(b[0] & 0x0f) * 4;
            let a = |at: usize| Addr::from_v4([b[at], b[at + 1], b[at + 2], b[at + 3]]);
            (ihl, b[9], a(12), a(16))
        }
        Family::V6 => {
            let b = ip.get(..40)?;
            if b[0] >> 4 != 6 {
                return None;
            }
            let a = |at: usize| {
                let mut o = [0u8; 16];
                o.copy_from_slice(&b[at..at + 16]);
                Addr::from_v6(o)
            };
            (40, b[6], a(8), a(24))
        }
    };
    if ihl < 20 {
        return None;
    }
    let proto = match Proto::from_number(proto)? {
        p @ (Proto::Tcp | Proto::Udp | Proto::Sctp) => p,
        _ => return None,
    };
    let ports = ip.get(ihl..ihl + 4)?;
    Some(Quoted {
        l3,
        l4: l3 + ihl,
        key: FlowKey {
            src,
            dst,
            sport: u16::from_be_bytes([ports[0], ports[1]]),
            dport: u16::from_be_bytes([ports[2], ports[3]]),
            proto,
            family: p.family,
        },
    })
}

/// Translates the ICMP error `p` in `frame` if it quotes a packet of a
/// flow with NAT; its destination after translation. `None`: not about
/// such a flow (or not readable), left as it is.
#[cold]
#[inline(never)]
pub fn translate(frame: &mut [u8], p: &Parsed, ct: &Conntrack) -> Option<Addr> {
    let q = quoted(frame, p)?;
    let hit = ct.lookup(&q.key.reversed())?;
    // What the quoted packet's sender knows it as: the reverse of what
    // the error, travelling the other way, is rewritten to.
    let known = hit.record.rewrite_to(hit.dir).reversed();
    if known == q.key {
        return None;
    }
    let outer_src = if p.src == q.key.dst { known.dst } else { p.src };
    let outer_dst = if p.dst == q.key.src { known.src } else { p.dst };
    rewrite_quoted(frame, &q, &known);
    rewrite_outer(frame, p, outer_src, outer_dst);
    Some(outer_dst)
}

/// Writes `to`'s addresses and ports into the quoted packet, with its
/// header checksum (IPv4) and, where the quote holds it, its transport
/// checksum.
fn rewrite_quoted(frame: &mut [u8], q: &Quoted, to: &FlowKey) {
    let from = &q.key;
    let (src_at, dst_at, alen) = match from.family {
        Family::V4 => (12, 16, 4),
        Family::V6 => (8, 24, 16),
    };
    // Addresses and ports as the checksums see them, old and new.
    let (old, n) = tuple_bytes(from);
    let (new, _) = tuple_bytes(to);
    frame[q.l3 + src_at..q.l3 + src_at + alen].copy_from_slice(&new[..alen]);
    frame[q.l3 + dst_at..q.l3 + dst_at + alen].copy_from_slice(&new[alen..2 * alen]);
    frame[q.l4..q.l4 + 4].copy_from_slice(&new[2 * alen..n]);
    if from.family == Family::V4 {
        let ihl = q.l4 - q.l3;
        let h = &mut frame[q.l3..q.l4];
        h[10..12].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&h[..ihl]);
        h[10..12].copy_from_slice(&c.to_be_bytes());
    }
    // The transport checksum covers the addresses (pseudo-header) and the
    // ports: patched where the quote reaches it. SCTP's CRC32c covers the
    // whole packet, which a quote rarely holds: left alone.
    let at = match from.proto {
        Proto::Tcp => 16,
        Proto::Udp => 6,
        _ => return,
    };
    let Some(c) = frame.get_mut(q.l4 + at..q.l4 + at + 2) else {
        return;
    };
    let old_c = u16::from_be_bytes([c[0], c[1]]);
    if from.proto == Proto::Udp && from.family == Family::V4 && old_c == 0 {
        return; // sent without a checksum
    }
    let new_c = checksum::update_bytes(old_c, &old[..n], &new[..n]);
    c.copy_from_slice(&new_c.to_be_bytes());
}

/// A tuple's source and destination addresses and ports, as they sit in
/// the headers (no allocation on the packet path); and how many bytes.
fn tuple_bytes(k: &FlowKey) -> ([u8; 36], usize) {
    let mut b = [0u8; 36];
    let alen = match k.family {
        Family::V4 => {
            b[..4].copy_from_slice(&k.src.v4_octets());
            b[4..8].copy_from_slice(&k.dst.v4_octets());
            4
        }
        Family::V6 => {
            b[..16].copy_from_slice(&k.src.v6_octets());
            b[16..32].copy_from_slice(&k.dst.v6_octets());
            16
        }
    };
    b[2 * alen..2 * alen + 2].copy_from_slice(&k.sport.to_be_bytes());
    b[2 * alen + 2..2 * alen + 4].copy_from_slice(&k.dport.to_be_bytes());
    (b, 2 * alen + 4)
}

/// Writes the outer addresses, the outer IPv4 header checksum and the ICMP
/// checksum (over the whole message, and for ICMPv6 its pseudo-header).
fn rewrite_outer(frame: &mut [u8], p: &Parsed, src: Addr, dst: Addr) {
    let (l3, l4, end) = (p.l3 as usize, p.l4 as usize, p.end as usize);
    match p.family {
        Family::V4 => {
            frame[l3 + 12..l3 + 16].copy_from_slice(&src.v4_octets());
            frame[l3 + 16..l3 + 20].copy_from_slice(&dst.v4_octets());
            frame[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
            let c = checksum::checksum(&frame[l3..l4]);
            frame[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
            frame[l4 + 2..l4 + 4].copy_from_slice(&[0, 0]);
            let c = checksum::checksum(&frame[l4..end]);
            frame[l4 + 2..l4 + 4].copy_from_slice(&c.to_be_bytes());
        }
        Family::V6 => {
            frame[l3 + 8..l3 + 24].copy_from_slice(&src.v6_octets());
            frame[l3 + 24..l3 + 40].copy_from_slice(&dst.v6_octets());
            frame[l4 + 2..l4 + 4].copy_from_slice(&[0, 0]);
            let len = (end - l4) as u32;
            let sum = checksum::pseudo_v6(src.v6_octets(), dst.v6_octets(), 58, len)
                + checksum::sum(&frame[l4..end]);
            let c = !checksum::fold(sum);
            frame[l4 + 2..l4 + 4].copy_from_slice(&c.to_be_bytes());
        }
    }
}
