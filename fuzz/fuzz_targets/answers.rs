//! The answers the dataplane writes about a frame (ICMP time-exceeded and
//! port-unreachable, the TCP reset) on arbitrary bytes: never panic, stay
//! inside their buffer, and what they write decodes as an IP packet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_dataplane::decode::{decode, Decoded, Transport};
use sluice_dataplane::icmp_error::{self, IcmpError};
use sluice_dataplane::neighbor::Gateway;
use sluice_dataplane::pipeline::REPLY_MAX;
use sluice_dataplane::tcp_reset;

fuzz_target!(|data: &[u8]| {
    let Ok(Decoded::Ip(p)) = decode(data) else {
        return;
    };
    let gw = Gateway::DEFAULT;
    let mut out = [0u8; REPLY_MAX];
    for kind in [IcmpError::TimeExceeded, IcmpError::PortUnreachable] {
        if let Some(n) =
            icmp_error::write(data, p.l3 as usize, p.family, kind, p.dst, &gw, &mut out)
        {
            assert!(n <= REPLY_MAX);
            assert!(matches!(decode(&out[..n]), Ok(Decoded::Ip(_))), "{kind:?}");
        }
    }
    if let Transport::Tcp { sport, .. } = p.transport {
        if let Some(n) = tcp_reset::write(data, &p, (p.dst, sport), &gw, &mut out) {
            assert!(n <= REPLY_MAX);
            assert!(matches!(decode(&out[..n]), Ok(Decoded::Ip(_))));
        }
    }
});
