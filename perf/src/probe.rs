//! The probe header that the generator writes into every frame's payload
//! and the sink reads back: which flow, which packet of it, and when it
//! was sent. Loss and reordering come from the sequence numbers per flow,
//! latency from the timestamp (CLOCK_MONOTONIC, which the generator and
//! the sink share: they run on one machine, in namespaces of one kernel).
//!
//! Layout, network byte order, at the start of the L4 payload:
//! `magic u16 = 0x534c ("SL") | flow u32 | seq u32 | sent_ns u64`.

use sluice_dataplane::wire::checksum;

pub const LEN: usize = 18;
const MAGIC: u16 = 0x534c;

/// One probe, as read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub flow: u32,
    pub seq: u32,
    pub sent_ns: u64,
}

/// Where in a frame the probe and the L4 checksum sit; built once per
/// flow's template, used for every frame sent from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub probe_at: usize,
    pub csum_at: usize,
    /// UDP, where a computed 0 is sent as 0xffff (0 means "none").
    pub udp: bool,
}

impl Probe {
    pub fn bytes(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[..2].copy_from_slice(&MAGIC.to_be_bytes());
        b[2..6].copy_from_slice(&self.flow.to_be_bytes());
        b[6..10].copy_from_slice(&self.seq.to_be_bytes());
        b[10..].copy_from_slice(&self.sent_ns.to_be_bytes());
        b
    }

    /// The probe at the start of `payload`, if it is one of ours.
    pub fn parse(payload: &[u8]) -> Option<Probe> {
        let b = payload.get(..LEN)?;
        if u16::from_be_bytes([b[0], b[1]]) != MAGIC {
            return None;
        }
        Some(Probe {
            flow: u32::from_be_bytes(b[2..6].try_into().ok()?),
            seq: u32::from_be_bytes(b[6..10].try_into().ok()?),
            sent_ns: u64::from_be_bytes(b[10..].try_into().ok()?),
        })
    }

    /// Writes the probe into `frame` at `slot`, over whatever probe was
    /// there, and mends the L4 checksum incrementally (RFC 1624), so that a
    /// frame costs 18 bytes of writes, not a checksum over its payload.
    /// Returns false, writing nothing, when the slot does not fit.
    pub fn stamp(&self, frame: &mut [u8], slot: Slot) -> bool {
        let (Some(_), Some(_)) = (
            frame.get(slot.probe_at..slot.probe_at + LEN),
            frame.get(slot.csum_at..slot.csum_at + 2),
        ) else {
            return false;
        };
        let new = self.bytes();
        let old: [u8; LEN] = frame[slot.probe_at..slot.probe_at + LEN]
            .try_into()
            .expect("length checked");
        let mut csum = u16::from_be_bytes([frame[slot.csum_at], frame[slot.csum_at + 1]]);
        if slot.udp && csum == 0xffff {
            // 0xffff stands for a computed 0: both are zero in one's
            // complement, so the update starts from the same sum.
            csum = 0;
        }
        let mut c = checksum::update_bytes(csum, &old, &new);
        if slot.udp && c == 0 {
            c = 0xffff;
        }
        frame[slot.probe_at..slot.probe_at + LEN].copy_from_slice(&new);
        frame[slot.csum_at..slot.csum_at + 2].copy_from_slice(&c.to_be_bytes());
        true
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of every probe.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::craft::{build, Spec, L4};
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    use proptest::prelude::*;

    /// Every checksum of `frame` recomputed by etherparse, from scratch.
    fn checksums_ok(frame: &[u8]) -> bool {
        let p = SlicedPacket::from_ethernet(frame).expect("etherparse reads it");
        match (&p.net, &p.transport) {
            (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Udp(u))) => {
                u.to_header()
                    .calc_checksum_ipv4(&ip.header().to_header(), u.payload())
                    .unwrap()
                    == u.checksum()
            }
            (Some(NetSlice::Ipv6(ip)), Some(TransportSlice::Udp(u))) => {
                u.to_header()
                    .calc_checksum_ipv6(&ip.header().to_header(), u.payload())
                    .unwrap()
                    == u.checksum()
            }
            (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(t))) => {
                t.to_header()
                    .calc_checksum_ipv4(&ip.header().to_header(), t.payload())
                    .unwrap()
                    == t.checksum()
            }
            (Some(NetSlice::Ipv6(ip)), Some(TransportSlice::Tcp(t))) => {
                t.to_header()
                    .calc_checksum_ipv6(&ip.header().to_header(), t.payload())
                    .unwrap()
                    == t.checksum()
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    fn template(src: &str, dst: &str, l4: L4) -> (Vec<u8>, Slot) {
        let payload = [0u8; 30];
        let f = build(&Spec {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            sport: 10_000,
            dport: 9,
            l4,
            payload: &payload,
        })
        .unwrap();
        let l3 = 14;
        let l4_at = l3 + if f[12] == 0x08 { 20 } else { 40 };
        let slot = match l4 {
            L4::Udp => Slot {
                probe_at: l4_at + 8,
                csum_at: l4_at + 6,
                udp: true,
            },
            L4::Tcp(_) => Slot {
                probe_at: l4_at + 20,
                csum_at: l4_at + 16,
                udp: false,
            },
        };
        (f, slot)
    }

    #[test]
    fn a_stamped_frame_reads_back_with_valid_checksums() {
        for (src, dst, l4) in [
            ("198.18.1.2", "198.19.0.100", L4::Udp),
            ("2001:db8:18:1::2", "2001:db8:19::64", L4::Udp),
            ("198.18.1.2", "198.19.0.100", L4::Tcp(0x02)),
            ("2001:db8:18:1::2", "2001:db8:19::64", L4::Tcp(0x18)),
        ] {
            let (mut f, slot) = template(src, dst, l4);
            for seq in [1, 2, 0xffff_ffff] {
                let p = Probe {
                    flow: 7,
                    seq,
                    sent_ns: 0x0123_4567_89ab_cdef ^ u64::from(seq),
                };
                assert!(p.stamp(&mut f, slot));
                assert!(checksums_ok(&f), "{src} {l4:?} seq {seq}");
                assert_eq!(Probe::parse(&f[slot.probe_at..]), Some(p));
            }
        }
    }

    #[test]
    fn what_is_not_a_probe_is_not_read_as_one() {
        assert_eq!(Probe::parse(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(Probe::parse(&[0x53, 0x4c, 0, 0]), None, "too short");
        let (mut f, slot) = template("198.18.1.2", "198.19.0.100", L4::Udp);
        let short = Slot {
            probe_at: f.len() - 4,
            ..slot
        };
        let before = f.clone();
        assert!(!Probe {
            flow: 1,
            seq: 1,
            sent_ns: 1
        }
        .stamp(&mut f, short));
        assert_eq!(f, before, "a slot that does not fit writes nothing");
    }

    proptest! {
        #[test]
        fn stamping_any_probe_keeps_checksums_valid(
            flow: u32, seq: u32, sent_ns: u64, v6: bool, udp: bool,
        ) {
            let (src, dst) = if v6 {
                ("2001:db8:18:1::2", "2001:db8:19::64")
            } else {
                ("198.18.1.2", "198.19.0.100")
            };
            let (mut f, slot) = template(src, dst, if udp { L4::Udp } else { L4::Tcp(0x10) });
            let p = Probe { flow, seq, sent_ns };
            prop_assert!(p.stamp(&mut f, slot));
            prop_assert!(checksums_ok(&f));
            prop_assert_eq!(Probe::parse(&f[slot.probe_at..]), Some(p));
        }

        #[test]
        fn parsing_any_bytes_never_panics(b in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = Probe::parse(&b);
        }
    }
}
