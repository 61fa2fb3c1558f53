use super::*;

fn v4(a: [u8; 4]) -> Addr {
    Addr::from_v4(a)
}

fn web(endpoints: Vec<EndpointSpec>) -> ServiceSpec {
    ServiceSpec {
        namespace: "shop".into(),
        name: "web".into(),
        cluster_ips: vec![
            v4([198, 19, 0, 10]),
            Addr::from_v6([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10]),
        ],
        ports: vec![
            PortSpec {
                name: "http".into(),
                port: 80,
                proto: Proto::Tcp,
                target: TargetPort::Name("web".into()),
            },
            PortSpec {
                name: "dns".into(),
                port: 53,
                proto: Proto::Udp,
                target: TargetPort::Number(5353),
            },
        ],
        endpoints,
        affinity: Default::default(),
        internal_local: false,
    }
}

fn ep(a: [u8; 4], c: Conditions, http_port: u16) -> EndpointSpec {
    EndpointSpec {
        addr: v4(a),
        conditions: c,
        ports: vec![
            EndpointPort {
                name: "http".into(),
                port: http_port,
                proto: Proto::Tcp,
            },
            EndpointPort {
                name: "dns".into(),
                port: 5353,
                proto: Proto::Udp,
            },
        ],
        topology: Default::default(),
    }
}

fn flow(dst: Addr, dport: u16, proto: Proto, sport: u16) -> FlowKey {
    let family = if dst.is_v4() { Family::V4 } else { Family::V6 };
    let src = if dst.is_v4() {
        v4([198, 18, 1, 2])
    } else {
        Addr::from_v6([0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2])
    };
    FlowKey {
        src,
        dst,
        sport,
        dport,
        proto,
        family,
    }
}

#[test]
fn frontends_per_port_protocol_and_family() {
    let (t, problems) =
        ServiceTable::build(&[web(vec![ep([198, 18, 2, 2], Conditions::READY, 8080)])]);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(t.len(), 4, "2 ports x 2 families");
    let vip = v4([198, 19, 0, 10]);
    assert!(t.lookup(&flow(vip, 80, Proto::Tcp, 1)).is_some());
    assert!(t.lookup(&flow(vip, 53, Proto::Udp, 1)).is_some());
    assert!(
        t.lookup(&flow(vip, 80, Proto::Udp, 1)).is_none(),
        "protocol is part of the frontend"
    );
    assert!(t.lookup(&flow(vip, 81, Proto::Tcp, 1)).is_none());
    let v6 = t
        .lookup(&flow(t.ports()[1].frontend.addr, 80, Proto::Tcp, 1))
        .unwrap();
    assert!(
        t.port(v6).unwrap().eligible.is_empty(),
        "no IPv6 endpoint: the v6 frontend has no backend"
    );
}

#[test]
fn named_target_port_resolves_per_endpoint() {
    let eps = vec![
        ep([198, 18, 2, 2], Conditions::READY, 8080),
        ep([198, 18, 2, 3], Conditions::READY, 9090),
    ];
    let (t, _) = ServiceTable::build(&[web(eps)]);
    let id = t
        .lookup(&flow(v4([198, 19, 0, 10]), 80, Proto::Tcp, 1))
        .unwrap();
    let p = t.port(id).unwrap();
    let mut got: Vec<(Addr, u16)> = p.eligible.iter().map(|b| (b.addr, b.port)).collect();
    got.sort();
    assert_eq!(
        got,
        [(v4([198, 18, 2, 2]), 8080), (v4([198, 18, 2, 3]), 9090)]
    );
}

#[test]
fn hand_written_endpoints_take_numeric_targets_only() {
    let mut e = ep([198, 18, 2, 2], Conditions::READY, 0);
    e.ports.clear();
    let (t, problems) = ServiceTable::build(&[web(vec![e])]);
    let dns = t
        .lookup(&flow(v4([198, 19, 0, 10]), 53, Proto::Udp, 1))
        .unwrap();
    assert_eq!(t.port(dns).unwrap().eligible[0].port, 5353);
    let http = t
        .lookup(&flow(v4([198, 19, 0, 10]), 80, Proto::Tcp, 1))
        .unwrap();
    assert!(t.port(http).unwrap().eligible.is_empty());
    assert_eq!(
        problems,
        [BuildProblem::UnresolvedTargetPort {
            service: "shop/web".into(),
            port: "http".into()
        }]
    );
}

#[test]
fn ready_first_then_serving_terminating_fallback() {
    let eps = vec![
        ep([198, 18, 2, 2], Conditions::READY, 8080),
        ep([198, 18, 2, 3], Conditions::TERMINATING, 8080),
        ep([198, 18, 2, 4], Conditions::NOT_READY, 8080),
    ];
    let (t, _) = ServiceTable::build(&[web(eps.clone())]);
    let id = t
        .lookup(&flow(v4([198, 19, 0, 10]), 80, Proto::Tcp, 1))
        .unwrap();
    assert_eq!(t.port(id).unwrap().eligible.len(), 1);
    assert_eq!(t.port(id).unwrap().endpoints.len(), 3);

    let (t, _) = ServiceTable::build(&[web(eps[1..].to_vec())]);
    let id = t
        .lookup(&flow(v4([198, 19, 0, 10]), 80, Proto::Tcp, 1))
        .unwrap();
    let p = t.port(id).unwrap();
    assert_eq!(p.eligible.len(), 1);
    assert_eq!(
        p.eligible[0].addr,
        v4([198, 18, 2, 3]),
        "terminating but serving takes over"
    );

    let (t, _) = ServiceTable::build(&[web(eps[2..].to_vec())]);
    let id = t
        .lookup(&flow(v4([198, 19, 0, 10]), 80, Proto::Tcp, 1))
        .unwrap();
    assert!(t
        .select(id, &flow(v4([198, 19, 0, 10]), 80, Proto::Tcp, 1))
        .is_none());
}

#[test]
fn duplicate_frontend_keeps_the_first_owner() {
    let a = web(vec![ep([198, 18, 2, 2], Conditions::READY, 8080)]);
    let mut b = a.clone();
    b.name = "web-copy".into();
    let (t, problems) = ServiceTable::build(&[a, b]);
    assert_eq!(t.len(), 4);
    assert_eq!(problems.len(), 4);
    assert!(problems[0].to_string().contains("shop/web-copy"));
}

/// Removing one backend of N moves the flows it had and few others.
#[test]
fn maglev_disruption_is_about_one_nth() {
    for n in [3usize, 10, 50] {
        let eps: Vec<EndpointSpec> = (0..n)
            .map(|i| {
                ep(
                    [198, 18, 2 + (i / 200) as u8, (i % 200) as u8 + 2],
                    Conditions::READY,
                    8080,
                )
            })
            .collect();
        let (before, _) = ServiceTable::build(&[web(eps.clone())]);
        let mut fewer = eps.clone();
        let removed = fewer.remove(n / 2).addr;
        let (after, _) = ServiceTable::build(&[web(fewer)]);
        let vip = v4([198, 19, 0, 10]);
        let (pb, pa) = {
            let k = flow(vip, 80, Proto::Tcp, 1);
            (before.lookup(&k).unwrap(), after.lookup(&k).unwrap())
        };
        let flows = 50_000u32;
        let (mut moved, mut on_removed) = (0u32, 0u32);
        for i in 0..flows {
            let mut k = flow(vip, 80, Proto::Tcp, (i % 60000) as u16);
            k.src = Addr::from_v4([198, 18, 1 + (i / 60000) as u8, 2 + (i % 7) as u8]);
            let b = before.select(pb, &k).unwrap().addr;
            let a = after.select(pa, &k).unwrap().addr;
            if b == removed {
                on_removed += 1;
            }
            if a != b {
                moved += 1;
            }
        }
        let frac = f64::from(moved) / f64::from(flows);
        let bound = 1.0 / n as f64;
        assert!(
            moved >= on_removed,
            "the removed backend's flows must all move"
        );
        // About 1/N: the removed backend's share, plus Maglev's small
        // reshuffle (under 1.1% of flows, see maglev.rs), plus sampling noise.
        assert!(
            frac <= bound + 0.015,
            "n={n}: {:.4} of flows moved, 1/n = {bound:.4}",
            frac
        );
    }
}

/// A Service of the incremental test: `i` picks its ClusterIP, `n` its
/// backends.
fn small(i: u8, n: u8) -> ServiceSpec {
    ServiceSpec {
        namespace: "inc".into(),
        name: format!("s{i}"),
        cluster_ips: vec![v4([198, 19, 1, i])],
        ports: vec![PortSpec {
            name: String::new(),
            port: 80,
            proto: Proto::Tcp,
            target: TargetPort::Number(8080),
        }],
        endpoints: (0..n)
            .map(|b| EndpointSpec {
                addr: v4([198, 18, 2, b + 2]),
                conditions: Conditions::READY,
                ports: vec![],
                topology: Default::default(),
            })
            .collect(),
        affinity: Default::default(),
        internal_local: false,
    }
}

/// What a table answers for every Service's frontend and a spread of
/// flows: the backend each flow goes to, or that there is none.
fn answers(t: &ServiceTable, services: u8) -> Vec<Option<(Addr, u16)>> {
    let mut out = Vec::new();
    for i in 0..services {
        for sport in 0..40u16 {
            let key = flow(v4([198, 19, 1, i]), 80, Proto::Tcp, 1000 + sport);
            out.push(t.find(&key).and_then(|s| {
                let at = t.maglev_index(s, &key)?;
                t.backend_at(s.backends_off(), at).map(|b| (b.addr, b.port))
            }));
        }
    }
    out
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
    /// Any sequence of upserts and removals, applied in place, leaves a
    /// table that answers every flow as a table built from scratch from
    /// the same Services does.
    #[test]
    fn incremental_updates_answer_as_a_rebuild(ops in proptest::collection::vec((0u8..24, 0u8..6, proptest::bool::ANY), 1..80)) {
        let (mut t, _) = ServiceTable::build_with_room(&[], 16);
        let mut live: std::collections::BTreeMap<u8, u8> = Default::default();
        for (i, n, remove) in ops {
            if remove {
                t.remove_service("inc", &format!("s{i}"));
                live.remove(&i);
            } else if t.upsert_service(&small(i, n)).is_ok() {
                live.insert(i, n);
            } else {
                // Full: as the daemon does, rebuild with room.
                live.insert(i, n);
                let specs: Vec<ServiceSpec> = live.iter().map(|(&i, &n)| small(i, n)).collect();
                t = ServiceTable::build_with_room(&specs, 16).0;
            }
            let specs: Vec<ServiceSpec> = live.iter().map(|(&i, &n)| small(i, n)).collect();
            let (fresh, _) = ServiceTable::build(&specs);
            proptest::prop_assert_eq!(answers(&t, 24), answers(&fresh, 24));
            proptest::prop_assert_eq!(t.len(), fresh.len());
        }
    }
}

#[test]
fn a_duplicate_frontend_in_an_update_is_refused_and_the_owner_keeps_it() {
    let (mut t, _) = ServiceTable::build_with_room(&[small(1, 2)], 4);
    let mut other = small(1, 3);
    other.name = "other".into();
    let problems = t.upsert_service(&other).unwrap();
    assert!(
        matches!(problems[0], BuildProblem::DuplicateFrontend { ref owner, .. } if owner == "inc/s1:80"),
        "{problems:?}"
    );
    assert_eq!(t.len(), 1);
}
