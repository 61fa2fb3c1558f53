//! sessionAffinity: ClientIP on real frames through the burst function:
//! every new connection from a client goes to the same backend until the
//! timeout, switching it off spreads again and on sticks again, and a
//! sticky backend that leaves moves its clients. The Service table is
//! changed in place as the control plane changes it.

use std::collections::BTreeSet;
use std::net::IpAddr;

use sluice_dataplane::service::{Affinity, ServiceSpec, ServiceTable};
use sluice_dataplane::Addr;
use sluice_tests::frames::{self, Ip, SYN};
use sluice_tests::verify::check;
use sluice_tests::{Node, CLIENT_V4, CLIENT_V6, FORWARD, VIP_V4, VIP_V6};

fn web(affinity: Affinity) -> ServiceSpec {
    ServiceSpec {
        affinity,
        ..sluice_tests::web_service()
    }
}

fn node(affinity: Affinity) -> Node {
    let mut node = Node::web();
    node.services = ServiceTable::build_with_room(&[web(affinity)], 16).0;
    node.core.now_ms = 1_000_000;
    node
}

/// New connections from `client` (each its own source port) to the
/// ClusterIP's http port: the backend each went to.
fn connect(node: &mut Node, client: Ip, vip: Ip, sports: std::ops::Range<u16>) -> Vec<IpAddr> {
    sports
        .map(|sport| {
            let mut syn = frames::tcp(client, sport, vip, 80, SYN, b"");
            assert_eq!(node.process(&mut syn), FORWARD);
            check(&syn).dst
        })
        .collect()
}

fn distinct(v: &[IpAddr]) -> BTreeSet<IpAddr> {
    v.iter().copied().collect()
}

const TEN_S: Affinity = Affinity::ClientIp { timeout_s: 10 };

#[test]
fn every_new_connection_from_a_client_goes_to_one_backend_until_the_timeout() {
    for (client, vip) in [
        (Ip::V4(CLIENT_V4), Ip::V4(VIP_V4)),
        (Ip::V6(CLIENT_V6), Ip::V6(VIP_V6)),
    ] {
        let mut n = node(TEN_S);
        let first = connect(&mut n, client, vip, 40000..40030);
        assert_eq!(distinct(&first).len(), 1, "{first:?}");
        // Within the timeout of the last connection, still.
        n.core.now_ms += 8_000;
        let later = connect(&mut n, client, vip, 41000..41010);
        assert_eq!(distinct(&later), distinct(&first));
        n.core.now_ms += 8_000;
        assert_eq!(
            distinct(&connect(&mut n, client, vip, 42000..42010)),
            distinct(&first)
        );
        // Past it: each connection's own pick again, until one sticks. Over
        // 30 timeouts the client lands on more than one backend.
        let mut landed = BTreeSet::new();
        for round in 0..30u16 {
            n.core.now_ms += 11_000;
            let v = connect(
                &mut n,
                client,
                vip,
                43000 + round * 10..43000 + round * 10 + 5,
            );
            assert_eq!(
                distinct(&v).len(),
                1,
                "sticks again after the timeout: {v:?}"
            );
            landed.insert(v[0]);
        }
        assert!(
            landed.len() > 1,
            "the timeout never let the client move: {landed:?}"
        );
        n.assert_books_balance();
    }
}

#[test]
fn affinity_switched_off_spreads_and_switched_on_sticks_again() {
    let (client, vip) = (Ip::V4(CLIENT_V4), Ip::V4(VIP_V4));
    let mut n = node(TEN_S);
    assert_eq!(
        distinct(&connect(&mut n, client, vip, 40000..40020)).len(),
        1
    );
    n.services
        .upsert_service(&web(Affinity::None))
        .expect("room");
    let spread = connect(&mut n, client, vip, 41000..41060);
    assert_eq!(
        distinct(&spread).len(),
        3,
        "None spreads over the three ready backends"
    );
    n.services.upsert_service(&web(TEN_S)).expect("room");
    let again = connect(&mut n, client, vip, 42000..42020);
    assert_eq!(distinct(&again).len(), 1, "{again:?}");
}

#[test]
fn a_client_moves_when_its_sticky_backend_leaves() {
    let (client, vip) = (Ip::V4(CLIENT_V4), Ip::V4(VIP_V4));
    let mut n = node(TEN_S);
    let sticky = connect(&mut n, client, vip, 40000..40010)[0];
    let mut spec = web(TEN_S);
    spec.endpoints.retain(|e| e.addr != Addr::from(sticky));
    n.services.upsert_service(&spec).expect("room");
    let moved = connect(&mut n, client, vip, 41000..41020);
    assert_eq!(distinct(&moved).len(), 1, "{moved:?}");
    assert_ne!(moved[0], sticky);
    // Another client is not held to the first one's backend.
    let other = Ip::V4([198, 18, 1, 9]);
    let theirs = connect(&mut n, other, vip, 40000..40010);
    assert_eq!(distinct(&theirs).len(), 1);
}
