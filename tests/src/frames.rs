//! Frames as a pod's kernel would send them, built with etherparse.

use etherparse::{PacketBuilder, VlanId};

pub const POD_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x02];
pub const GW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x00, 0x01];

/// TCP flags for `tcp`.
#[derive(Clone, Copy, Debug)]
pub struct Flags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
}

pub const SYN: Flags = Flags {
    syn: true,
    ack: false,
    fin: false,
    rst: false,
};
pub const SYN_ACK: Flags = Flags {
    syn: true,
    ack: true,
    fin: false,
    rst: false,
};
pub const ACK: Flags = Flags {
    syn: false,
    ack: true,
    fin: false,
    rst: false,
};
pub const FIN_ACK: Flags = Flags {
    syn: false,
    ack: true,
    fin: true,
    rst: false,
};

/// Either family's address for the builders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ip {
    V4([u8; 4]),
    V6([u8; 16]),
}

fn base(
    src: Ip,
    dst: Ip,
    vlan: Option<u16>,
) -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
    let eth = PacketBuilder::ethernet2(POD_MAC, GW_MAC);
    match (vlan, src, dst) {
        (None, Ip::V4(s), Ip::V4(d)) => eth.ipv4(s, d, 64),
        (None, Ip::V6(s), Ip::V6(d)) => eth.ipv6(s, d, 64),
        (Some(v), Ip::V4(s), Ip::V4(d)) => {
            eth.single_vlan(VlanId::try_new(v).unwrap()).ipv4(s, d, 64)
        }
        (Some(v), Ip::V6(s), Ip::V6(d)) => {
            eth.single_vlan(VlanId::try_new(v).unwrap()).ipv6(s, d, 64)
        }
        _ => panic!("mixed families"),
    }
}

pub fn tcp(src: Ip, sport: u16, dst: Ip, dport: u16, f: Flags, payload: &[u8]) -> Vec<u8> {
    tcp_vlan(None, src, sport, dst, dport, f, payload)
}

pub fn tcp_vlan(
    vlan: Option<u16>,
    src: Ip,
    sport: u16,
    dst: Ip,
    dport: u16,
    f: Flags,
    payload: &[u8],
) -> Vec<u8> {
    let mut b = base(src, dst, vlan).tcp(sport, dport, 0x1000_0000, 64240);
    if f.syn {
        b = b.syn();
    }
    if f.ack {
        b = b.ack(0x2000_0000);
    }
    if f.fin {
        b = b.fin();
    }
    if f.rst {
        b = b.rst();
    }
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).unwrap();
    out
}

pub fn udp(src: Ip, sport: u16, dst: Ip, dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = base(src, dst, None).udp(sport, dport);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).unwrap();
    out
}

/// An IPv4 UDP datagram sent with checksum zero ("none"), as some
/// stacks and tunnels do.
pub fn udp_v4_no_checksum(
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = udp(Ip::V4(src), sport, Ip::V4(dst), dport, payload);
    f[14 + 20 + 6] = 0;
    f[14 + 20 + 7] = 0;
    f
}

pub fn echo_request(src: Ip, dst: Ip, id: u16, seq: u16) -> Vec<u8> {
    let b = base(src, dst, None);
    let payload = b"sluice-ping-payload!";
    let mut out = Vec::new();
    match src {
        Ip::V4(_) => b
            .icmpv4_echo_request(id, seq)
            .write(&mut out, payload)
            .unwrap(),
        Ip::V6(_) => b
            .icmpv6_echo_request(id, seq)
            .write(&mut out, payload)
            .unwrap(),
    }
    out
}

/// "Who has `target`? Tell `sender`", as a pod's kernel sends it.
pub fn arp_request(sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&POD_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&POD_MAC);
    f.extend_from_slice(&sender);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f
}

/// A bit-at-a-time CRC-32C (Castagnoli, reflected 0x82F63B78): the
/// reference algorithm, independent of the crate the dataplane uses.
pub fn crc32c_reference(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// An SCTP packet carrying one DATA chunk (etherparse has no SCTP), with
/// its CRC32c from the reference algorithm.
pub fn sctp(src: Ip, sport: u16, dst: Ip, dport: u16) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(&sport.to_be_bytes());
    s.extend_from_slice(&dport.to_be_bytes());
    s.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    s.extend_from_slice(&[0; 4]);
    // DATA chunk: type 0, flags B|E, length 20, TSN 1, stream 0, seq 0, PPID 0, "ping"
    s.extend_from_slice(&[
        0, 3, 0, 20, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, b'p', b'i', b'n', b'g',
    ]);
    let crc = crc32c_reference(&s);
    s[8..12].copy_from_slice(&crc.to_le_bytes());
    // IP around it, by hand: etherparse's builder has no raw-protocol step.
    let mut f = Vec::new();
    f.extend_from_slice(&GW_MAC);
    f.extend_from_slice(&POD_MAC);
    match (src, dst) {
        (Ip::V4(a), Ip::V4(b)) => {
            f.extend_from_slice(&[0x08, 0x00]);
            let h =
                etherparse::Ipv4Header::new(s.len() as u16, 64, etherparse::IpNumber(132), a, b)
                    .unwrap();
            h.write(&mut f).unwrap();
        }
        (Ip::V6(a), Ip::V6(b)) => {
            f.extend_from_slice(&[0x86, 0xdd]);
            let h = etherparse::Ipv6Header {
                traffic_class: 0,
                flow_label: Default::default(),
                payload_length: s.len() as u16,
                next_header: etherparse::IpNumber(132),
                hop_limit: 64,
                source: a,
                destination: b,
            };
            h.write(&mut f).unwrap();
        }
        _ => panic!("mixed families"),
    }
    f.extend_from_slice(&s);
    f
}
