//! The lab with its tables from an API server (the test API server, the
//! real kube client), while real connections run: Services scaled, added
//! and deleted under traffic, then the API server stopped for 30 seconds:
//! no connection breaks, and the changes made while it was away are
//! applied once it returns. Root only (namespaces, AF_XDP).
#![cfg(feature = "afxdp")]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sluice_control::daemon::Io;
use sluice_control::source::kube::load_config;
use sluice_dataplane::worker::Idle;
use sluice_lab::file::LabFile;
use sluice_lab::{start_daemon_kube, Lab};
use sluice_tests::apiserver::ApiServer;
use sluice_tests::labkit::{check_held, keepalive, FOUR_PODS};

fn curl(lab: &Lab, url: &str) -> String {
    let out = lab
        .exec("client", &["curl", "-s", "--max-time", "5", url])
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Polls `url` from the client until `f` holds for its answer.
fn until(lab: &Lab, url: &str, what: &str, f: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    while Instant::now() < deadline {
        last = curl(lab, url);
        if f(&last) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: last answer {last:?}");
}

#[test]
fn services_follow_the_api_server_under_traffic_and_survive_its_absence() {
    if !sluice_control::testing::root_or_skip(
        "services_follow_the_api_server_under_traffic_and_survive_its_absence",
    ) {
        return;
    }
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "k{}{}",
        std::process::id() % 10_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let plan = LabFile::parse(&FOUR_PODS.replace("NAME", &name).replace("EXTRA", ""))
        .and_then(|f| f.plan())
        .expect("the lab file");
    let mut lab = Lab::create(&plan, Io::Afxdp, 1).unwrap_or_else(|e| {
        panic!("cannot set up the lab (root, iproute2, ethtool, python3): {e}")
    });
    // The API server holds what the lab's EndpointSlice controller would.
    let mut api = ApiServer::start();
    for doc in plan
        .manifests(&[])
        .split("\n---\n")
        .filter(|d| d.contains("kind:"))
    {
        api.apply(doc);
    }
    let kubeconfig = std::env::temp_dir().join(format!("{name}-kubeconfig"));
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    let config = load_config(Some(&kubeconfig)).expect("the kubeconfig");
    let _ = std::fs::remove_file(&kubeconfig);
    let idle = Idle {
        spin_rounds: 2_000,
        sleep: Duration::from_micros(50),
    };
    let (_daemon, sync) = start_daemon_kube(&plan, Io::Afxdp, vec![], idle, 1 << 16, config)
        .unwrap_or_else(|e| panic!("the daemon: {e}"));
    lab.start_servers(None, false).expect("servers");
    assert!(curl(&lab, "http://198.19.0.10/").starts_with("web-"));

    // Under traffic: web scaled down to web-1 (web-2 and web-3
    // terminating), a Service added, one deleted.
    let held = keepalive(&lab, "198.19.0.10", 8, 40, 200);
    std::thread::sleep(Duration::from_millis(800));
    // The slice as the EndpointSlice controller writes it: `ready` pods,
    // and `terminating` ones in their graceful shutdown (a scale-down's
    // pods are terminating first, and their open connections go on).
    let slice = |ready: &[&str], terminating: &[&str]| {
        let eps: Vec<String> = ready
            .iter()
            .map(|a| format!("{{addresses: [{a}]}}"))
            .chain(terminating.iter().map(|a| {
                format!("{{addresses: [{a}], conditions: {{ready: false, serving: true, terminating: true}}}}")
            }))
            .collect();
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-ipv4, namespace: default, labels: {{kubernetes.io/service-name: web}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints: [{}]\n",
            eps.join(", ")
        )
    };
    api.apply(&slice(&["198.18.1.3"], &["198.18.1.4", "198.18.1.5"]));
    api.apply("apiVersion: v1\nkind: Service\nmetadata: {name: extra, namespace: default}\nspec: {clusterIP: 198.19.0.20, ports: [{port: 81, targetPort: 8080}]}\n");
    api.apply("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: extra-1, namespace: default, labels: {kubernetes.io/service-name: extra}}\naddressType: IPv4\nendpoints: [{addresses: [198.18.1.4]}]\n");
    until(&lab, "http://198.19.0.20:81/", "the added Service", |a| {
        a == "web-2"
    });
    for _ in 0..10 {
        assert_eq!(
            curl(&lab, "http://198.19.0.10/"),
            "web-1",
            "scaled to web-1"
        );
    }
    api.delete("Service", "default", "extra");
    until(&lab, "http://198.19.0.20:81/", "the deleted Service", |a| {
        a.is_empty()
    });
    check_held(held, 8, 40);

    // The API server goes away for 30 s under traffic.
    let held = keepalive(&lab, "198.19.0.10", 8, 180, 200);
    std::thread::sleep(Duration::from_millis(500));
    api.stop();
    sync.wait(Duration::from_secs(15), |s| !s.connected)
        .unwrap_or_else(|| panic!("the sync did not notice: {:?}", sync.status()));
    // While it is away: the tables keep serving, and changes pile up.
    api.apply(&slice(&["198.18.1.3", "198.18.1.5"], &[]));
    api.apply("apiVersion: v1\nkind: Service\nmetadata: {name: later, namespace: default}\nspec: {clusterIP: 198.19.0.30, ports: [{port: 82, targetPort: 8080}]}\n");
    api.apply("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: later-1, namespace: default, labels: {kubernetes.io/service-name: later}}\naddressType: IPv4\nendpoints: [{addresses: [198.18.1.5]}]\n");
    let away = Instant::now();
    while away.elapsed() < Duration::from_secs(30) {
        assert_eq!(
            curl(&lab, "http://198.19.0.10/"),
            "web-1",
            "the last tables serve"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    assert!(
        curl(&lab, "http://198.19.0.30:82/").is_empty(),
        "not before it returns"
    );
    api.restart();
    until(
        &lab,
        "http://198.19.0.30:82/",
        "a Service added while away",
        |a| a == "web-3",
    );
    until(
        &lab,
        "http://198.19.0.10/",
        "web scaled up while away",
        |a| a == "web-3",
    );
    check_held(held, 8, 180);
    let st = sync.status();
    assert!(st.connected && st.synced, "{st:?}");
}
