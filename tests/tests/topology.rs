//! Traffic policies and topology on real frames through the burst
//! function: internalTrafficPolicy Local keeps traffic on this node's
//! endpoints and drops it (not refuses it) when there are none; topology
//! hints keep it in this node's zone, or on this node, and fall back to
//! every endpoint as kube-proxy does when hints are missing or partial.

use std::collections::BTreeSet;
use std::net::IpAddr;

use sluice_dataplane::service::{ServiceSpec, ServiceTable, Topology};
use sluice_dataplane::{Action, Addr, DropReason};
use sluice_tests::frames::{self, Ip, SYN};
use sluice_tests::verify::check;
use sluice_tests::{Node, CLIENT_V4, FORWARD, VIP_V4};

/// shop/web, each IPv4 backend .2, .3, .4 placed by `place(i)`.
fn web(internal_local: bool, place: impl Fn(u8) -> Topology) -> ServiceSpec {
    let mut spec = sluice_tests::web_service();
    spec.internal_local = internal_local;
    for e in &mut spec.endpoints {
        if e.addr.is_v4() {
            e.topology = place(e.addr.v4_octets()[3]);
        }
    }
    spec
}

fn node(spec: ServiceSpec) -> Node {
    let mut n = Node::web();
    n.services = ServiceTable::build_with_room(&[spec], 16).0;
    n
}

/// Where 60 new connections from the client went (each call from ports
/// of its own: the last call's connections are established flows).
fn backends(n: &mut Node) -> BTreeSet<IpAddr> {
    let base = 40000 + 100 * n.conntrack.len() as u16;
    (0..60u16)
        .map(|i| {
            let mut syn = frames::tcp(Ip::V4(CLIENT_V4), base + i, Ip::V4(VIP_V4), 80, SYN, b"");
            assert_eq!(n.process(&mut syn), FORWARD);
            check(&syn).dst
        })
        .collect()
}

fn b(i: u8) -> IpAddr {
    IpAddr::from([198, 18, 2, i])
}

fn local(yes: bool) -> Topology {
    Topology {
        local: yes,
        ..Topology::default()
    }
}

#[test]
fn internal_traffic_policy_local_uses_only_this_nodes_endpoints() {
    let mut n = node(web(true, |i| local(i == 3)));
    assert_eq!(backends(&mut n), [b(3)].into());
    // The policy Cluster: every endpoint again.
    n.services
        .upsert_service(&web(false, |i| local(i == 3)))
        .expect("room");
    assert_eq!(backends(&mut n), [b(2), b(3), b(4)].into());
}

#[test]
fn internal_traffic_policy_local_without_a_local_endpoint_drops_and_does_not_refuse() {
    let mut n = node(web(true, |_| local(false)));
    let mut syn = frames::tcp(Ip::V4(CLIENT_V4), 40000, Ip::V4(VIP_V4), 80, SYN, b"");
    assert_eq!(
        n.process(&mut syn),
        Action::Drop(DropReason::ServiceNoLocalEndpoints)
    );
    // A local endpoint that is terminating still serves (the fallback).
    let mut spec = web(true, |i| local(i == 5));
    spec.endpoints
        .retain(|e| e.addr != Addr::from_v4([198, 18, 2, 2]) || e.conditions.ready);
    n.services.upsert_service(&spec).expect("room");
    assert_eq!(backends(&mut n), [b(5)].into());
    assert!(!n.conntrack.is_empty());
}

fn zone(hint: Option<bool>) -> Topology {
    Topology {
        zone_hint: hint,
        ..Topology::default()
    }
}

#[test]
fn zone_hints_keep_traffic_in_this_zone_and_fall_back_when_incomplete() {
    // .2 hinted for this node's zone, .3 and .4 for another.
    let mut n = node(web(false, |i| zone(Some(i == 2))));
    assert_eq!(backends(&mut n), [b(2)].into());
    // A ready endpoint without hints: hints are not used at all.
    n.services
        .upsert_service(&web(false, |i| {
            zone(if i == 4 { None } else { Some(i == 2) })
        }))
        .expect("room");
    assert_eq!(backends(&mut n), [b(2), b(3), b(4)].into());
    // Hints, none for this zone: every endpoint.
    n.services
        .upsert_service(&web(false, |_| zone(Some(false))))
        .expect("room");
    assert_eq!(backends(&mut n), [b(2), b(3), b(4)].into());
}

#[test]
fn node_hints_come_before_zone_hints() {
    let mut n = node(web(false, |i| Topology {
        local: i == 4,
        zone_hint: Some(i == 2),
        node_hint: Some(i == 4),
    }));
    assert_eq!(backends(&mut n), [b(4)].into());
}
