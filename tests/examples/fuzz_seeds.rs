//! Writes the fixture frames as a seed corpus for the fuzz targets:
//! `cargo run -p sluice-tests --example fuzz_seeds -- fuzz/seeds/pipeline`.

use sluice_tests::frames::{self, Ip, ACK, SYN, SYN_ACK};
use sluice_tests::{CLIENT_V4, CLIENT_V6, VIP_V4, VIP_V6};

fn main() {
    let dir = std::env::args().nth(1).expect("usage: fuzz_seeds DIR");
    std::fs::create_dir_all(&dir).expect("create the seed directory");
    let (c4, c6, s4, s6) = (
        Ip::V4(CLIENT_V4),
        Ip::V6(CLIENT_V6),
        Ip::V4(VIP_V4),
        Ip::V6(VIP_V6),
    );
    let b4 = Ip::V4([198, 18, 2, 2]);
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("tcp4-syn", frames::tcp(c4, 40000, s4, 80, SYN, b"")),
        (
            "tcp4-synack-reply",
            frames::tcp(b4, 8080, c4, 40000, SYN_ACK, b""),
        ),
        (
            "tcp6-ack-data",
            frames::tcp(c6, 40000, s6, 80, ACK, b"GET / HTTP/1.1\r\n\r\n"),
        ),
        (
            "tcp4-vlan",
            frames::tcp_vlan(Some(100), c4, 40001, s4, 80, SYN, b""),
        ),
        ("udp4", frames::udp(c4, 5000, s4, 53, b"query")),
        (
            "udp4-nocsum",
            frames::udp_v4_no_checksum(CLIENT_V4, 5000, VIP_V4, 53, b"query"),
        ),
        ("udp6", frames::udp(c6, 5000, s6, 53, b"query")),
        ("sctp4", frames::sctp(c4, 5000, s4, 38412)),
        ("sctp6", frames::sctp(c6, 5000, s6, 38412)),
        ("icmp4-echo", frames::echo_request(c4, s4, 7, 1)),
        ("icmp6-echo", frames::echo_request(c6, s6, 7, 1)),
        (
            "arp-gateway",
            frames::arp_request(CLIENT_V4, [169, 254, 1, 1]),
        ),
        ("udp4-ttl1", {
            let mut f = frames::udp(c4, 33434, Ip::V4([198, 18, 2, 2]), 33435, b"trace");
            f[22] = 1;
            f[24] = 0;
            f[25] = 0;
            let c = sluice_dataplane::wire::checksum::checksum(&f[14..34]);
            f[24..26].copy_from_slice(&c.to_be_bytes());
            f
        }),
    ];
    for (name, bytes) in seeds {
        std::fs::write(format!("{dir}/{name}"), bytes).expect("write a seed");
    }
}
