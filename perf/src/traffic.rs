//! What the generator sends: one template frame per flow, crafted once,
//! with a probe slot that each transmission stamps.

use std::net::IpAddr;

use crate::craft::{self, Spec, L4};
use crate::probe::{self, Slot};
use sluice_dataplane::wire::tcp;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Udp,
    /// Connection openings: SYN, with the probe as payload.
    TcpSyn,
    /// Segments of established connections: ACK|PSH with a payload.
    TcpAck,
}

/// The traffic's shape, shared by `generate` and `compare`.
#[derive(clap::Args, Clone, Debug)]
pub struct Traffic {
    #[arg(long, value_enum, default_value_t = Proto::Udp)]
    pub proto: Proto,
    /// Frame size without the FCS (60 is a 64-byte frame on the wire);
    /// default: the smallest that carries the probe.
    #[arg(long)]
    pub size: Option<usize>,
    /// Flows (source ports from 10000 up) the generator cycles through.
    #[arg(long, default_value_t = 1)]
    pub flows: u32,
}

/// The largest frame: the lab pods' MTU of 1450 plus the Ethernet header.
pub const MAX_SIZE: usize = 1464;
const FIRST_SPORT: u32 = 10_000;
pub const MAX_FLOWS: u32 = 65_535 - FIRST_SPORT;

/// One flow's frame, ready to copy and stamp.
#[derive(Clone, Debug)]
pub struct Template {
    pub bytes: Vec<u8>,
    pub slot: Slot,
}

impl Traffic {
    fn headers(&self, v6: bool) -> (usize, usize) {
        let l3 = if v6 { 40 } else { 20 };
        let l4 = match self.proto {
            Proto::Udp => 8,
            Proto::TcpSyn | Proto::TcpAck => 20,
        };
        (14 + l3, l4)
    }

    /// The smallest frame of this traffic that carries a probe.
    pub fn min_size(&self, v6: bool) -> usize {
        let (l3, l4) = self.headers(v6);
        (l3 + l4 + probe::LEN).max(60)
    }

    /// One template per flow, from `src` to `dst:dport`, the Ethernet
    /// header already addressed.
    pub fn templates(
        &self,
        src: IpAddr,
        dst: IpAddr,
        dport: u16,
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
    ) -> Result<Vec<Template>, String> {
        let v6 = dst.is_ipv6();
        let min = self.min_size(v6);
        let size = self.size.unwrap_or(min);
        if !(min..=MAX_SIZE).contains(&size) {
            return Err(format!(
                "--size {size}: {:?} over IPv{} takes {min} to {MAX_SIZE} bytes \
                 (headers and the {}-byte probe, up to the pods' MTU of 1450)",
                self.proto,
                if v6 { 6 } else { 4 },
                probe::LEN
            ));
        }
        if self.flows == 0 || self.flows > MAX_FLOWS {
            return Err(format!(
                "--flows {}: 1 to {MAX_FLOWS} (one source port each)",
                self.flows
            ));
        }
        let (l3_end, l4_len) = self.headers(v6);
        let payload = vec![0u8; size - l3_end - l4_len];
        let l4 = match self.proto {
            Proto::Udp => L4::Udp,
            Proto::TcpSyn => L4::Tcp(tcp::SYN),
            Proto::TcpAck => L4::Tcp(tcp::ACK | tcp::PSH),
        };
        let slot = Slot {
            probe_at: l3_end + l4_len,
            csum_at: l3_end + if l4 == L4::Udp { 6 } else { 16 },
            udp: l4 == L4::Udp,
        };
        (0..self.flows)
            .map(|i| {
                let mut bytes = craft::build(&Spec {
                    src,
                    dst,
                    sport: (FIRST_SPORT + i) as u16,
                    dport,
                    l4,
                    payload: &payload,
                })
                .map_err(|e| format!("{e:?}"))?;
                bytes[..6].copy_from_slice(&dst_mac);
                bytes[6..12].copy_from_slice(&src_mac);
                Ok(Template { bytes, slot })
            })
            .collect()
    }
}

/// The flow a frame of ours belongs to, from its source port.
pub fn flow_of_sport(sport: u16) -> Option<u32> {
    u32::from(sport)
        .checked_sub(FIRST_SPORT)
        .filter(|f| *f < MAX_FLOWS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traffic(proto: Proto, size: Option<usize>, flows: u32) -> Traffic {
        Traffic { proto, size, flows }
    }

    #[test]
    fn templates_have_the_asked_size_and_one_source_port_per_flow() {
        let t = traffic(Proto::Udp, None, 3);
        let v = t
            .templates(
                "198.18.1.2".parse().unwrap(),
                "198.19.0.100".parse().unwrap(),
                9,
                [2, 0, 0, 0, 1, 2],
                [2, 0, 0, 0, 0, 1],
            )
            .unwrap();
        assert_eq!(v.len(), 3);
        for (i, t) in v.iter().enumerate() {
            assert_eq!(t.bytes.len(), 60);
            let sport = u16::from_be_bytes([t.bytes[34], t.bytes[35]]);
            assert_eq!(flow_of_sport(sport), Some(i as u32));
            assert_eq!(&t.bytes[..6], &[2, 0, 0, 0, 0, 1]);
        }
        let tcp6 = traffic(Proto::TcpAck, Some(1464), 1)
            .templates(
                "2001:db8:18:1::2".parse().unwrap(),
                "2001:db8:19::64".parse().unwrap(),
                80,
                [2; 6],
                [4; 6],
            )
            .unwrap();
        assert_eq!(tcp6[0].bytes.len(), 1464);
        assert_eq!(tcp6[0].slot.probe_at, 14 + 40 + 20);
    }

    #[test]
    fn sizes_and_flows_out_of_range_are_refused_with_the_range() {
        let dst6: IpAddr = "2001:db8:19::64".parse().unwrap();
        let src6: IpAddr = "2001:db8:18:1::2".parse().unwrap();
        let e = traffic(Proto::Udp, Some(60), 1)
            .templates(src6, dst6, 9, [2; 6], [4; 6])
            .unwrap_err();
        assert!(e.contains("80 to 1464"), "{e}");
        let e = traffic(Proto::Udp, None, 0)
            .templates(src6, dst6, 9, [2; 6], [4; 6])
            .unwrap_err();
        assert!(e.contains("--flows 0"), "{e}");
    }
}
