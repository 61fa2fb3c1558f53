//! The TCP reset the dataplane answers a segment with itself: for a
//! connection whose backend was deleted from its Service, so that the
//! client learns at once that the connection is gone instead of sending
//! into an address that may belong to another pod by now.
//!
//! Built as RFC 793 (3.4, "Reset Generation") and Linux's tcp_v4_send_reset
//! build it, so that the client's stack accepts it: a segment carrying an
//! ACK is answered with RST and SEQ = its ACK; one without, with RST|ACK,
//! SEQ 0 and ACK = its SEQ plus its length (SYN and FIN counting one each).
//! It comes from the address and port the client called (the ClusterIP),
//! back to the client's MAC from the gateway's.

use crate::decode::Parsed;
use crate::flow::{Addr, Family};
use crate::icmp_error::{ether_reply, ip_header};
use crate::neighbor::Gateway;
use crate::wire::checksum;
use crate::wire::tcp;

/// Writes the reset for the TCP segment `p` of `frame` into `out`, from
/// `from` (address and port); its length, or `None` if the segment is
/// itself a reset (never answered, RFC 793), cut short, or `out` too
/// small.
#[cold]
#[inline(never)]
pub fn write(
    frame: &[u8],
    p: &Parsed,
    from: (Addr, u16),
    gw: &Gateway,
    out: &mut [u8],
) -> Option<usize> {
    let (l3, l4, end) = (p.l3 as usize, p.l4 as usize, p.end as usize);
    let seg = frame.get(l4..end)?;
    if seg.len() < tcp::MIN_HEADER_LEN {
        return None;
    }
    let flags = seg[13];
    if flags & tcp::RST != 0 {
        return None;
    }
    let be32 = |at: usize| u32::from_be_bytes([seg[at], seg[at + 1], seg[at + 2], seg[at + 3]]);
    let data_off = usize::from(seg[12] >> 4) * 4;
    let payload = seg.len().checked_sub(data_off)? as u32;
    let (seq, ack, out_flags) = if flags & tcp::ACK != 0 {
        (be32(8), 0, tcp::RST)
    } else {
        let mut len = payload;
        len += u32::from(flags & tcp::SYN != 0);
        len += u32::from(flags & tcp::FIN != 0);
        (0, be32(4).wrapping_add(len), tcp::RST | tcp::ACK)
    };
    let client_port = u16::from_be_bytes([seg[0], seg[1]]);
    let ip_len = match p.family {
        Family::V4 => 20,
        Family::V6 => 40,
    };
    let len = l3 + ip_len + tcp::MIN_HEADER_LEN;
    let out = out.get_mut(..len)?;
    ether_reply(frame, l3, gw, out);
    let mut t = [0u8; tcp::MIN_HEADER_LEN];
    t[0..2].copy_from_slice(&from.1.to_be_bytes());
    t[2..4].copy_from_slice(&client_port.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = out_flags;
    let tcp_len = tcp::MIN_HEADER_LEN as u32;
    ip_header(
        &mut out[l3..],
        from.0,
        p.src,
        p.family,
        6,
        tcp::MIN_HEADER_LEN,
    );
    match p.family {
        Family::V4 => {
            let (src, dst) = (from.0.v4_octets(), p.src.v4_octets());
            let sum = checksum::pseudo_v4(src, dst, 6, tcp_len as u16) + checksum::sum(&t);
            t[16..18].copy_from_slice(&(!checksum::fold(sum)).to_be_bytes());
        }
        Family::V6 => {
            let (src, dst) = (from.0.v6_octets(), p.src.v6_octets());
            let sum = checksum::pseudo_v6(src, dst, 6, tcp_len) + checksum::sum(&t);
            t[16..18].copy_from_slice(&(!checksum::fold(sum)).to_be_bytes());
        }
    }
    out[l3 + ip_len..].copy_from_slice(&t);
    Some(len)
}
