use super::*;
use sluice_dataplane::service::ServiceTable;

fn svc(yaml: &str) -> Service {
    serde_yaml::from_str(yaml).expect("a Service fixture")
}
fn slice(yaml: &str) -> EndpointSlice {
    serde_yaml::from_str(yaml).expect("an EndpointSlice fixture")
}

const WEB: &str = "
apiVersion: v1
kind: Service
metadata: { name: web, namespace: shop }
spec:
  type: ClusterIP
  clusterIP: 198.19.0.10
  clusterIPs: [198.19.0.10, 2001:db8:19::a]
  ipFamilies: [IPv4, IPv6]
  ports:
    - { name: http, port: 80, targetPort: http-alt, protocol: TCP }
    - { name: dns, port: 53, targetPort: 5353, protocol: UDP }
";

const WEB_V4: &str = "
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc12
  namespace: shop
  labels: { kubernetes.io/service-name: web }
addressType: IPv4
ports:
  - { name: http, port: 8080, protocol: TCP }
  - { name: dns, port: 5353, protocol: UDP }
endpoints:
  - addresses: [198.18.1.3]
  - addresses: [198.18.1.4]
    conditions: { ready: false, serving: true, terminating: true }
  - addresses: [198.18.1.5]
    conditions: { ready: false }
";

const WEB_V6: &str = "
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-def34
  namespace: shop
  labels: { kubernetes.io/service-name: web }
addressType: IPv6
ports:
  - { name: http, port: 8080, protocol: TCP }
endpoints:
  - addresses: [2001:db8:18:1::3]
    conditions: { ready: true }
";

fn key(ns: &str, n: &str) -> ServiceKey {
    (ns.into(), n.into())
}

#[test]
fn a_dual_stack_service_and_its_slices_become_one_spec() {
    let mut m = Model::default();
    m.upsert_service(&svc(WEB));
    m.upsert_slice(&slice(WEB_V4));
    m.upsert_slice(&slice(WEB_V6));
    let s = m.spec(&key("shop", "web")).expect("a spec");
    assert_eq!(
        s.cluster_ips,
        [
            Addr::from_v4([198, 19, 0, 10]),
            Addr::from_v6(
                "2001:db8:19::a"
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets()
            )
        ]
    );
    assert_eq!(s.ports[0].target, TargetPort::Name("http-alt".into()));
    assert_eq!(s.ports[1].proto, Proto::Udp);
    assert_eq!(s.endpoints.len(), 4, "three IPv4 and one IPv6");
    // Unset conditions: ready, and serving follows ready.
    assert_eq!(s.endpoints[0].conditions, Conditions::READY);
    assert_eq!(s.endpoints[1].conditions, Conditions::TERMINATING);
    assert_eq!(s.endpoints[2].conditions, Conditions::NOT_READY);
    assert_eq!(s.endpoints[0].ports[0].port, 8080);
    // The dataplane takes it: the named target port resolves per endpoint.
    let (table, problems) = ServiceTable::build(&m.specs());
    assert!(problems.is_empty(), "{problems:?}");
    let _ = table;
}

#[test]
fn one_slice_change_touches_one_service() {
    let mut m = Model::default();
    m.upsert_service(&svc(WEB));
    m.upsert_service(&svc(&WEB
        .replace("name: web,", "name: api,")
        .replace("198.19.0.10", "198.19.0.11")
        .replace("2001:db8:19::a", "2001:db8:19::b")));
    m.upsert_slice(&slice(WEB_V4));
    let a = m.upsert_slice(&slice(&WEB_V4.replace("198.18.1.5", "198.18.1.6")));
    assert_eq!(a.touched, [key("shop", "web")].into());
    // The same object again changes nothing.
    let a = m.upsert_slice(&slice(&WEB_V4.replace("198.18.1.5", "198.18.1.6")));
    assert!(a.touched.is_empty());
    // Relabelled to another Service: both are touched.
    let a = m.upsert_slice(&slice(
        &WEB_V4.replace("service-name: web", "service-name: api"),
    ));
    assert_eq!(a.touched, [key("shop", "api"), key("shop", "web")].into());
    assert!(m.spec(&key("shop", "web")).unwrap().endpoints.is_empty());
    assert_eq!(m.spec(&key("shop", "api")).unwrap().endpoints.len(), 3);
    let a = m.delete_slice("shop", "web-abc12");
    assert_eq!(a.touched, [key("shop", "api")].into());
    assert!(m.spec(&key("shop", "api")).unwrap().endpoints.is_empty());
}

#[test]
fn bad_objects_are_rejected_by_field_and_the_last_good_version_stays() {
    let mut m = Model::default();
    m.upsert_service(&svc(WEB));
    m.upsert_slice(&slice(WEB_V4));
    let good = m.spec(&key("shop", "web"));
    let cases: Vec<(Applied, &str, &str)> = vec![
        (
            m.upsert_service(&svc(&WEB.replace("port: 80,", "port: 0,"))),
            "Service shop/web",
            "spec.ports[0].port",
        ),
        (
            m.upsert_service(&svc(&WEB.replace("protocol: UDP", "protocol: udp"))),
            "Service shop/web",
            "spec.ports[1].protocol",
        ),
        (
            m.upsert_service(&svc(&WEB.replace("2001:db8:19::a]", "2001:db8:19::zz]"))),
            "Service shop/web",
            "spec.clusterIPs[1]",
        ),
        (
            m.upsert_service(&svc(&WEB.replace("name: dns, ", ""))),
            "Service shop/web",
            "spec.ports[1].name",
        ),
        (
            m.upsert_slice(&slice(&WEB_V4.replace("[198.18.1.4]", "[2001:db8::4]"))),
            "EndpointSlice shop/web-abc12",
            "endpoints[1].addresses[0]",
        ),
        (
            m.upsert_slice(&slice(
                &WEB_V4.replace("  labels: { kubernetes.io/service-name: web }\n", ""),
            )),
            "EndpointSlice shop/web-abc12",
            "metadata.labels[kubernetes.io/service-name]",
        ),
        (
            m.upsert_slice(&slice(
                &WEB_V4.replace("addressType: IPv4", "addressType: IPv5"),
            )),
            "EndpointSlice shop/web-abc12",
            "addressType",
        ),
        (
            m.upsert_slice(&slice(&WEB_V4.replace("port: 8080,", "port: 70000,"))),
            "EndpointSlice shop/web-abc12",
            "ports[0].port",
        ),
    ];
    for (applied, object, field) in &cases {
        let r = applied.rejected.as_ref().expect("rejected");
        assert_eq!(
            (r.object.to_string().as_str(), r.field.as_str()),
            (*object, *field),
            "{r}"
        );
        assert!(applied.touched.is_empty());
    }
    assert_eq!(m.rejections, cases.len() as u64);
    assert_eq!(
        m.spec(&key("shop", "web")),
        good,
        "the last good versions serve"
    );
    assert_eq!(m.rejected().count(), 2, "one per object, the latest");
    // A good version clears the rejection.
    m.upsert_slice(&slice(WEB_V4));
    m.upsert_service(&svc(WEB));
    assert_eq!(m.rejected().count(), 0);
}

#[test]
fn headless_and_external_name_services_are_not_balanced() {
    let mut m = Model::default();
    let a = m.upsert_service(&svc(&WEB.replace(
        "clusterIPs: [198.19.0.10, 2001:db8:19::a]",
        "clusterIPs: [None]",
    )));
    assert!(a.rejected.is_none() && a.touched.is_empty());
    let ext = "apiVersion: v1\nkind: Service\nmetadata: {name: out, namespace: shop}\nspec: {type: ExternalName, externalName: example.org}\n";
    let a = m.upsert_service(&svc(ext));
    assert!(a.rejected.is_none());
    assert!(m.specs().is_empty());
    assert_eq!(
        m.skipped(),
        [
            "shop/out: type ExternalName: DNS only",
            "shop/web: headless (clusterIP None): DNS only"
        ]
    );
    // A Service that turns headless stops being balanced.
    m.upsert_service(&svc(WEB));
    let a = m.upsert_service(&svc(&WEB.replace(
        "clusterIPs: [198.19.0.10, 2001:db8:19::a]",
        "clusterIPs: [None]",
    )));
    assert_eq!(a.touched, [key("shop", "web")].into());
    assert!(m.specs().is_empty());
}

#[test]
fn a_numeric_target_port_in_a_string_is_a_number_and_an_unset_one_is_the_port() {
    let s = service(&svc(&WEB
        .replace("targetPort: http-alt", "targetPort: \"8080\"")
        .replace(", targetPort: 5353", "")))
    .unwrap()
    .unwrap();
    assert_eq!(s.ports[0].target, TargetPort::Number(8080));
    assert_eq!(s.ports[1].target, TargetPort::Number(53));
}

#[test]
fn nodes_give_their_pod_cidrs_and_internal_addresses() {
    let n: Node = serde_yaml::from_str(
        "apiVersion: v1\nkind: Node\nmetadata: {name: node2}\nspec: {podCIDR: 198.18.2.0/24, podCIDRs: [198.18.2.0/24, 2001:db8:18:2::/64]}\nstatus: {addresses: [{type: InternalIP, address: 198.18.0.2}, {type: Hostname, address: node2}]}\n",
    )
    .unwrap();
    let info = node(&n).unwrap();
    assert_eq!(info.pod_cidrs.len(), 2);
    assert_eq!(info.internal_ips, ["198.18.0.2".parse::<IpAddr>().unwrap()]);
    let bad: Node = serde_yaml::from_str(
        "apiVersion: v1\nkind: Node\nmetadata: {name: n}\nspec: {podCIDRs: [198.18.2.0/33]}\n",
    )
    .unwrap();
    assert_eq!(node(&bad).unwrap_err().field, "spec.podCIDRs[0]");
}

/// A Service labelled for another proxy is not programmed, whatever the
/// label's value, and is listed as left alone; once the label goes, it is
/// programmed, and when it comes back, it leaves the tables again.
#[test]
fn a_service_labelled_for_another_proxy_is_left_alone_until_the_label_goes() {
    let labelled = WEB.replace(
        "metadata: { name: web, namespace: shop }",
        "metadata: { name: web, namespace: shop, labels: { service.kubernetes.io/service-proxy-name: other-proxy } }",
    );
    let mut m = Model::default();
    m.upsert_slice(&slice(WEB_V4));
    let a = m.upsert_service(&svc(&labelled));
    assert!(a.rejected.is_none());
    assert!(a.touched.is_empty());
    assert!(m.specs().is_empty());
    assert!(m.programmed().is_empty());
    assert_eq!(
        m.skipped(),
        [format!(
            "shop/web: labelled {SERVICE_PROXY_NAME_LABEL}=\"other-proxy\": another proxy's"
        )]
    );
    let a = m.upsert_service(&svc(WEB));
    assert_eq!(a.touched, [key("shop", "web")].into());
    assert_eq!(m.programmed(), ["shop/web"]);
    assert!(m.skipped().is_empty());
    assert_eq!(m.specs()[0].endpoints.len(), 3);
    let a = m.upsert_service(&svc(&labelled));
    assert_eq!(a.touched, [key("shop", "web")].into());
    assert!(m.specs().is_empty());
    // Deleted, it is neither.
    m.delete_service("shop", "web");
    assert!(m.skipped().is_empty() && m.programmed().is_empty());
}

#[test]
fn client_ip_affinity_and_its_timeout_are_read_and_checked() {
    let with = |extra: &str| {
        svc(&WEB.replace(
            "  type: ClusterIP\n",
            &format!("  type: ClusterIP\n{extra}"),
        ))
    };
    let f = service(&with("  sessionAffinity: ClientIP\n"))
        .unwrap()
        .unwrap();
    assert_eq!(f.affinity, Affinity::ClientIp { timeout_s: 10_800 });
    let f = service(&with(
        "  sessionAffinity: ClientIP\n  sessionAffinityConfig: { clientIP: { timeoutSeconds: 10 } }\n",
    ))
    .unwrap()
    .unwrap();
    assert_eq!(f.affinity, Affinity::ClientIp { timeout_s: 10 });
    let f = service(&with("  sessionAffinity: None\n"))
        .unwrap()
        .unwrap();
    assert_eq!(f.affinity, Affinity::None);
    let r = service(&with(
        "  sessionAffinity: ClientIP\n  sessionAffinityConfig: { clientIP: { timeoutSeconds: 86401 } }\n",
    ))
    .unwrap_err();
    assert_eq!(
        r.field,
        "spec.sessionAffinityConfig.clientIP.timeoutSeconds"
    );
    let r = service(&with("  sessionAffinity: Cookie\n")).unwrap_err();
    assert_eq!(r.field, "spec.sessionAffinity");
}

/// An EndpointSlice's nodeName and hints become each endpoint's topology
/// as this node sees them: local or not, and whether the hints name this
/// node's zone (from its Node's label) or this node; a change of this
/// node's zone re-translates every Service.
#[test]
fn endpoints_are_placed_relative_to_this_node_and_its_zone() {
    let zoned = "
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: web-z, namespace: shop, labels: { kubernetes.io/service-name: web } }
addressType: IPv4
ports: [{ name: http, port: 8080, protocol: TCP }]
endpoints:
  - { addresses: [198.18.1.3], nodeName: node1, hints: { forZones: [{ name: zone-a }] } }
  - { addresses: [198.18.1.4], nodeName: node2, hints: { forZones: [{ name: zone-b }], forNodes: [{ name: node1 }] } }
  - { addresses: [198.18.1.5], nodeName: node2 }
";
    let node = |z: &str| -> Node {
        serde_yaml::from_str(&format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: node1, labels: {{topology.kubernetes.io/zone: {z}}}}}\n"
        ))
        .unwrap()
    };
    let mut m = Model::for_node("node1");
    m.upsert_service(&svc(&WEB.replace(
        "  type: ClusterIP\n",
        "  type: ClusterIP\n  internalTrafficPolicy: Local\n",
    )));
    m.upsert_slice(&slice(zoned));
    let topo = |m: &Model| -> Vec<Topology> {
        m.spec(&key("shop", "web"))
            .unwrap()
            .endpoints
            .iter()
            .map(|e| e.topology)
            .collect()
    };
    assert!(m.spec(&key("shop", "web")).unwrap().internal_local);
    // No zone known yet: zone hints unusable.
    let t = topo(&m);
    assert_eq!(
        t.iter()
            .map(|t| (t.local, t.zone_hint, t.node_hint))
            .collect::<Vec<_>>(),
        [
            (true, None, None),
            (false, None, Some(true)),
            (false, None, None)
        ]
    );
    let a = m.upsert_node(&node("zone-a"));
    assert_eq!(
        a.touched,
        [key("shop", "web")].into(),
        "the zone became known"
    );
    let t = topo(&m);
    assert_eq!(
        t.iter().map(|t| t.zone_hint).collect::<Vec<_>>(),
        [Some(true), Some(false), None]
    );
    assert!(
        m.upsert_node(&node("zone-a")).touched.is_empty(),
        "no change"
    );
    // Another node's zone is not ours.
    let other: Node = serde_yaml::from_str(
        "apiVersion: v1\nkind: Node\nmetadata: {name: node2, labels: {topology.kubernetes.io/zone: zone-b}}\n",
    )
    .unwrap();
    assert!(m.upsert_node(&other).touched.is_empty());
    let r = service(&svc(&WEB.replace(
        "  type: ClusterIP\n",
        "  type: ClusterIP\n  internalTrafficPolicy: Nearby\n",
    )))
    .unwrap_err();
    assert_eq!(r.field, "spec.internalTrafficPolicy");
}
