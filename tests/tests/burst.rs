//! A burst gives exactly what the same frames one at a time give: the
//! prefetch passes of the burst function change timing, never results.

use proptest::prelude::*;
use sluice_dataplane::neighbor::Gateway;
use sluice_dataplane::pipeline::{decide, Action, Ingress, Tables, BURST};
use sluice_tests::frames::{self, Ip, ACK, SYN, SYN_ACK};
use sluice_tests::{Node, CLIENT_V4, CLIENT_V6, VIP_V4, VIP_V6};

fn frame(kind: u8, port: u16) -> Vec<u8> {
    let (c4, c6, s4, s6) = (
        Ip::V4(CLIENT_V4),
        Ip::V6(CLIENT_V6),
        Ip::V4(VIP_V4),
        Ip::V6(VIP_V6),
    );
    match kind % 7 {
        0 => frames::tcp(c4, port, s4, 80, SYN, b""),
        1 => frames::tcp(c4, port, s4, 80, ACK, b"data"),
        2 => frames::tcp(c6, port, s6, 80, SYN, b""),
        3 => frames::udp(c4, port, s4, 53, b"q"),
        4 => frames::tcp(Ip::V4([198, 18, 2, 2]), 8080, c4, port, SYN_ACK, b""),
        5 => frames::udp(c6, port, s6, 53, b"q"),
        _ => frames::tcp(c4, port, s4, 80, SYN, b"")[..30].to_vec(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn burst_equals_one_by_one(spec in proptest::collection::vec((any::<u8>(), 40000u16..40040), 1..100)) {
        let frames: Vec<Vec<u8>> = spec.iter().map(|&(k, p)| frame(k, p)).collect();
        let mut one = Node::web();
        let mut single: Vec<Vec<u8>> = frames.clone();
        let v1: Vec<Action> = single.iter_mut().map(|f| one.process(f)).collect();

        let mut burst = Node::web();
        let mut batch: Vec<Vec<u8>> = frames.clone();
        let mut refs: Vec<&mut [u8]> = batch.iter_mut().map(|f| f.as_mut_slice()).collect();
        let mut v2 = vec![Action::ToHost; refs.len()];
        let t = Tables {
            services: &burst.services,
            conntrack: &burst.conntrack,
            routes: &burst.routes,
            gateway: Gateway::DEFAULT,
        };
        for (frames, actions) in refs.chunks_mut(BURST).zip(v2.chunks_mut(BURST)) {
            decide(frames, Ingress::Uplink, &t, &mut burst.core, actions);
        }
        prop_assert_eq!(&v1, &v2);
        // Backend choice is by a fixed-seed hash: the same frames, the same bytes.
        prop_assert_eq!(&single, &batch);
        prop_assert_eq!(&one.core.counters, &burst.core.counters);
    }
}
