//! What the tables leave out when two Services want one frontend, as the
//! publisher keeps it: told once, shown until it changes, and tried again
//! with every publication, so that a Service is served as soon as the
//! frontend it wants is free, whatever the order of the changes in a
//! batch. No root: the publisher alone, no worker.

use sluice_control::publish::{Change, Publisher};
use sluice_dataplane::service::{Conditions, EndpointSpec, PortSpec, ServiceSpec, TargetPort};
use sluice_dataplane::{Addr, Proto};

fn svc(name: &str, ip: [u8; 4], port: u16) -> ServiceSpec {
    ServiceSpec {
        namespace: "default".into(),
        name: name.into(),
        cluster_ips: vec![Addr::from_v4(ip)],
        ports: vec![PortSpec {
            name: String::new(),
            port,
            proto: Proto::Tcp,
            target: TargetPort::Number(8080),
        }],
        endpoints: vec![EndpointSpec {
            addr: Addr::from_v4([198, 18, 1, 2]),
            conditions: Conditions::READY,
            ports: vec![],
            topology: Default::default(),
        }],
        affinity: Default::default(),
        internal_local: false,
    }
}

fn remove(name: &str) -> Change {
    Change::Remove {
        namespace: "default".into(),
        name: name.into(),
    }
}

const F: [u8; 4] = [198, 19, 0, 50];

#[test]
fn a_service_left_out_is_shown_with_its_reason_and_served_once_the_frontend_is_free() {
    let p = Publisher::detached(&[svc("a", F, 80), svc("b", F, 80)]);
    let left = p.left_out();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0].contains("default/b")
            && left[0].contains("198.19.0.50:80/TCP")
            && left[0].contains("default/a"),
        "{left:?}"
    );

    // An unrelated change: b is tried again and still left out, and not
    // told again.
    let out = p.publish_changes(&[Change::Upsert(svc("c", [198, 19, 0, 51], 80))]);
    assert!(out.problems.is_empty(), "told once: {:?}", out.problems);
    assert_eq!(p.left_out(), left);

    // a goes: b has the frontend in the same publication.
    let out = p.publish_changes(&[remove("a")]);
    assert!(out.problems.is_empty(), "{:?}", out.problems);
    assert!(p.left_out().is_empty(), "{:?}", p.left_out());

    // a comes back: b keeps it, a is left out and told.
    let out = p.publish_changes(&[Change::Upsert(svc("a", F, 80))]);
    assert_eq!(out.problems.len(), 1, "{:?}", out.problems);
    assert!(out.problems[0].contains("default/a") && out.problems[0].contains("default/b"));

    // b moves to another port: a, left out, gets the frontend with that
    // same change.
    let out = p.publish_changes(&[Change::Upsert(svc("b", F, 81))]);
    assert!(out.problems.is_empty(), "{:?}", out.problems);
    assert!(p.left_out().is_empty(), "{:?}", p.left_out());
}

#[test]
fn a_batch_that_frees_a_frontend_and_claims_it_leaves_nothing_out_in_any_order() {
    // x (first by name) wants y's frontend; y goes in the same batch.
    let p = Publisher::detached(&[svc("y", F, 80)]);
    p.publish_changes(&[Change::Upsert(svc("x", F, 80)), remove("y")]);
    assert!(p.left_out().is_empty(), "{:?}", p.left_out());

    // The same when y gives the frontend up by changing its port, after
    // x's upsert in the batch.
    let p = Publisher::detached(&[svc("y", F, 80)]);
    p.publish_changes(&[
        Change::Upsert(svc("x", F, 80)),
        Change::Upsert(svc("y", F, 81)),
    ]);
    assert!(p.left_out().is_empty(), "{:?}", p.left_out());

    // A Service upserted with a conflict and removed in one batch is not
    // left out.
    let p = Publisher::detached(&[svc("y", F, 80)]);
    p.publish_changes(&[Change::Upsert(svc("x", F, 80)), remove("x")]);
    assert!(p.left_out().is_empty(), "{:?}", p.left_out());
}

#[test]
fn both_copies_of_the_tables_agree_after_retries() {
    // Left-right: the copy the workers left gets the same changes (the
    // retries included) at the next publication; an empty publication
    // (a pod attached) swaps it in and must not change what is served.
    let p = Publisher::detached(&[svc("a", F, 80), svc("b", F, 80)]);
    p.publish_changes(&[remove("a")]);
    let (ports, _) = p.read();
    p.publish_pods(Vec::new(), 1);
    assert_eq!(p.read().0, ports, "the other copy serves the same ports");
    p.publish_pods(Vec::new(), 2);
    assert_eq!(p.read().0, ports);
    assert!(p.left_out().is_empty());
}

/// Two attaches finishing at once publish their registries in either
/// order: the older never replaces the newer's routes.
#[test]
fn an_older_registry_never_replaces_a_newer_one() {
    use sluice_dataplane::route::PortId;
    let p = Publisher::detached(&[svc("a", F, 80)]);
    let pod = |i: u8| {
        (
            sluice_dataplane::Addr::from_v4([198, 18, 1, i]),
            PortId(u16::from(i)),
            [2, 0, 0, 0, 1, i],
        )
    };
    p.publish_pods(vec![pod(2), pod(3)], 2);
    p.publish_pods(vec![pod(2)], 1);
    assert_eq!(p.routed_pods(), 2, "version 2's two pods stay routed");
    p.publish_pods(vec![pod(3)], 3);
    assert_eq!(p.routed_pods(), 1);
}
