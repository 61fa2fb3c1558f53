//! Crafting frames for the generator, the demo and the benchmarks: Ethernet,
//! IPv4 or IPv6, and TCP or UDP, with every checksum computed in full.
//!
//! The tests do not use this module to check the pipeline (they build and
//! re-read frames with etherparse, an independent implementation); it exists
//! so that the generator and the benchmarks need no test-only crate.

use std::net::IpAddr;

use sluice_dataplane::wire::checksum;

pub use sluice_fixtures::frames::{CLIENT_MAC, GATEWAY_MAC};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    /// TCP with these flags (see `sluice_dataplane::wire::tcp`).
    Tcp(u8),
    Udp,
}

/// One frame to craft.
#[derive(Clone, Copy, Debug)]
pub struct Spec<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub l4: L4,
    pub payload: &'a [u8],
}

/// Why a frame could not be crafted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CraftError {
    MixedFamilies,
    TooLong,
}

/// Appends the frame described by `s` to `out`.
pub fn frame(s: &Spec<'_>, out: &mut Vec<u8>) -> Result<(), CraftError> {
    let l4_len = match s.l4 {
        L4::Tcp(_) => 20,
        L4::Udp => 8,
    } + s.payload.len();
    if l4_len > 9000 {
        return Err(CraftError::TooLong);
    }
    out.extend_from_slice(&GATEWAY_MAC);
    out.extend_from_slice(&CLIENT_MAC);
    let proto = match s.l4 {
        L4::Tcp(_) => 6u8,
        L4::Udp => 17u8,
    };
    let pseudo = match (s.src, s.dst) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            out.extend_from_slice(&[0x08, 0x00]);
            let start = out.len();
            let total = (20 + l4_len) as u16;
            out.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0]);
            out[start + 2..start + 4].copy_from_slice(&total.to_be_bytes());
            out.extend_from_slice(&a.octets());
            out.extend_from_slice(&b.octets());
            let c = checksum::checksum(&out[start..start + 20]);
            out[start + 10..start + 12].copy_from_slice(&c.to_be_bytes());
            checksum::pseudo_v4(a.octets(), b.octets(), proto, l4_len as u16)
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            out.extend_from_slice(&[0x86, 0xdd]);
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&(l4_len as u16).to_be_bytes());
            out.extend_from_slice(&[proto, 64]);
            out.extend_from_slice(&a.octets());
            out.extend_from_slice(&b.octets());
            checksum::pseudo_v6(a.octets(), b.octets(), proto, l4_len as u32)
        }
        _ => return Err(CraftError::MixedFamilies),
    };
    let l4 = out.len();
    out.extend_from_slice(&s.sport.to_be_bytes());
    out.extend_from_slice(&s.dport.to_be_bytes());
    let csum_at = match s.l4 {
        L4::Tcp(flags) => {
            out.extend_from_slice(&0x0100_0000u32.to_be_bytes());
            let ack = if flags & sluice_dataplane::wire::tcp::ACK != 0 {
                0x0200_0000u32
            } else {
                0
            };
            out.extend_from_slice(&ack.to_be_bytes());
            out.extend_from_slice(&[0x50, flags, 0xfa, 0xf0, 0, 0, 0, 0]);
            l4 + 16
        }
        L4::Udp => {
            out.extend_from_slice(&(l4_len as u16).to_be_bytes());
            out.extend_from_slice(&[0, 0]);
            l4 + 6
        }
    };
    out.extend_from_slice(s.payload);
    let sum = pseudo + checksum::sum(&out[l4..]);
    let mut c = !checksum::fold(sum);
    if c == 0 && s.l4 == L4::Udp {
        c = 0xffff;
    }
    out[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// A fresh frame.
pub fn build(s: &Spec<'_>) -> Result<Vec<u8>, CraftError> {
    let mut v = Vec::with_capacity(96 + s.payload.len());
    frame(s, &mut v)?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_dataplane::decode::{decode, Decoded, Transport};

    #[test]
    fn crafted_frames_decode_with_valid_checksums() {
        let cases = [
            Spec {
                src: "198.18.1.2".parse().unwrap(),
                dst: "198.19.0.10".parse().unwrap(),
                sport: 1,
                dport: 80,
                l4: L4::Tcp(2),
                payload: b"",
            },
            Spec {
                src: "2001:db8:1::2".parse().unwrap(),
                dst: "2001:db8:19::a".parse().unwrap(),
                sport: 1,
                dport: 53,
                l4: L4::Udp,
                payload: b"odd",
            },
        ];
        for s in cases {
            let f = build(&s).unwrap();
            let Ok(Decoded::Ip(p)) = decode(&f) else {
                panic!("{s:?}")
            };
            assert!(matches!(
                p.transport,
                Transport::Tcp { .. } | Transport::Udp { .. }
            ));
            let sum = match s.src {
                IpAddr::V4(a) => checksum::pseudo_v4(
                    a.octets(),
                    match s.dst {
                        IpAddr::V4(b) => b.octets(),
                        _ => unreachable!(),
                    },
                    p.ip_proto,
                    (p.end - p.l4) as u16,
                ),
                IpAddr::V6(a) => checksum::pseudo_v6(
                    a.octets(),
                    match s.dst {
                        IpAddr::V6(b) => b.octets(),
                        _ => unreachable!(),
                    },
                    p.ip_proto,
                    p.end - p.l4,
                ),
            };
            assert_eq!(
                checksum::fold(sum + checksum::sum(&f[p.l4 as usize..p.end as usize])),
                0xffff
            );
        }
    }

    #[test]
    fn mixed_families_are_refused() {
        let s = Spec {
            src: "198.18.1.2".parse().unwrap(),
            dst: "2001:db8::1".parse().unwrap(),
            sport: 1,
            dport: 1,
            l4: L4::Udp,
            payload: b"",
        };
        assert_eq!(build(&s), Err(CraftError::MixedFamilies));
    }
}
