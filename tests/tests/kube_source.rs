//! The `kube` source: the real kube-rs client and watcher against the
//! test API server (list, watch, bookmarks, 410 Gone, dropped connections,
//! the server away and back), publishing into a recorder. What a user
//! checks: the tables follow the API, and nothing that was serving is
//! ever flushed while the API misbehaves.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_control::publish::{Change, Published};
use sluice_control::source::kube::load_config;
use sluice_control::sync::{Kube, KubeSync, Publish, Status};
use sluice_dataplane::service::ServiceSpec;
use sluice_tests::apiserver::ApiServer;

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Vec<ServiceSpec>>>>);

impl Publish for Recorder {
    fn publish(&self, specs: &[ServiceSpec]) -> Published {
        let mut v = self.0.lock().unwrap();
        v.push(specs.to_vec());
        Published {
            generation: v.len() as u64,
            problems: Vec::new(),
        }
    }
    fn publish_changes(&self, changes: &[Change]) -> Published {
        let mut now = self.last();
        for c in changes {
            match c {
                Change::Upsert(s) => {
                    now.retain(|x| (&x.namespace, &x.name) != (&s.namespace, &s.name));
                    now.push(s.clone());
                }
                Change::Remove { namespace, name } => {
                    now.retain(|x| (&x.namespace, &x.name) != (namespace, name));
                }
            }
        }
        now.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        self.publish(&now)
    }
    fn generation(&self) -> u64 {
        self.0.lock().unwrap().len() as u64
    }
}

impl Recorder {
    fn last(&self) -> Vec<ServiceSpec> {
        self.0.lock().unwrap().last().cloned().unwrap_or_default()
    }
    fn all(&self) -> Vec<Vec<ServiceSpec>> {
        self.0.lock().unwrap().clone()
    }
    /// Waits until the last publication satisfies `f`.
    fn wait(&self, what: &str, f: impl Fn(&[ServiceSpec]) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if f(&self.last()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "{what}: not published within 20 s; last: {:?}",
            summary(&self.last())
        );
    }
}

fn summary(specs: &[ServiceSpec]) -> Vec<(String, usize)> {
    specs
        .iter()
        .map(|s| (s.name.clone(), s.endpoints.len()))
        .collect()
}

fn endpoints(specs: &[ServiceSpec], name: &str) -> Option<usize> {
    specs
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.endpoints.len())
}

fn service(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\nspec: {{clusterIP: {ip}, ports: [{{port: 80, targetPort: 8080}}]}}\n"
    )
}

fn slice(name: &str, service: &str, addrs: &[&str]) -> String {
    let eps: Vec<String> = addrs
        .iter()
        .map(|a| format!("{{addresses: [{a}]}}"))
        .collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}, namespace: shop, labels: {{kubernetes.io/service-name: {service}}}}}\naddressType: IPv4\nendpoints: [{}]\n",
        eps.join(", ")
    )
}

/// The API server with two Services, a sync on it, synced.
fn synced() -> (ApiServer, Recorder, KubeSync) {
    let api = ApiServer::start();
    api.apply(&service("a", "198.19.0.10"));
    api.apply(&slice("a-1", "a", &["198.18.1.3", "198.18.1.4"]));
    api.apply(&service("b", "198.19.0.11"));
    api.apply(&slice("b-1", "b", &["198.18.1.5"]));
    api.apply(
        "apiVersion: v1\nkind: Node\nmetadata: {name: node1}\nspec: {podCIDRs: [198.18.1.0/24]}\n",
    );
    let dir = std::env::temp_dir().join(format!(
        "sluice-kubeconfig-{}-{}",
        std::process::id(),
        api.port
    ));
    std::fs::write(&dir, api.kubeconfig()).unwrap();
    let config = load_config(Some(&dir)).expect("the kubeconfig");
    let _ = std::fs::remove_file(&dir);
    let rec = Recorder::default();
    let sync = Kube::start(config, rec.clone(), "node1");
    let st = sync
        .wait(Duration::from_secs(20), |s: &Status| s.synced)
        .unwrap_or_else(|| panic!("not synced: {:?}", sync.status()));
    assert_eq!(st.services, 2);
    assert_eq!(
        rec.all().len(),
        1,
        "one publication for the whole first list"
    );
    assert_eq!(summary(&rec.last()), [("a".into(), 2), ("b".into(), 1)]);
    (api, rec, sync)
}

#[test]
fn lists_then_follows_adds_changes_and_deletes() {
    let (api, rec, _sync) = synced();
    api.apply(&slice("a-1", "a", &["198.18.1.3"]));
    rec.wait("a scaled to one endpoint", |s| endpoints(s, "a") == Some(1));
    api.apply(&slice("a-2", "a", &["198.18.1.6", "198.18.1.7"]));
    rec.wait("a second slice merged", |s| endpoints(s, "a") == Some(3));
    api.apply(&service("c", "198.19.0.12"));
    rec.wait("a new Service", |s| s.len() == 3);
    api.delete("Service", "shop", "b");
    rec.wait("b deleted", |s| endpoints(s, "b").is_none());
    // A bad object is rejected, and what was there stays.
    api.apply(&slice("a-2", "a", &["198.18.1.999"]));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(endpoints(&rec.last(), "a"), Some(3));
    let (lists, watches) = api.requests();
    assert_eq!(lists, 3, "one list per kind, no more");
    assert!(watches >= 3);
}

#[test]
fn a_410_gone_relists_and_diffs_and_flushes_nothing() {
    let (api, rec, sync) = synced();
    let lists_before = api.requests().0;
    // The watches dropped, changes made (b goes, a changes), and the
    // history compacted past them before anyone resumes: the watches'
    // versions are gone, and only a new list can see what happened.
    api.drop_connections();
    api.delete("Service", "shop", "b");
    api.delete("EndpointSlice", "shop", "b-1");
    api.apply(&slice(
        "a-1",
        "a",
        &["198.18.1.3", "198.18.1.4", "198.18.1.8"],
    ));
    api.compact();
    rec.wait("the relist's diff", |s| {
        endpoints(s, "a") == Some(3) && endpoints(s, "b").is_none()
    });
    assert!(api.requests().0 > lists_before, "a relist after 410 Gone");
    for (i, p) in rec.all().iter().enumerate() {
        assert!(
            endpoints(p, "a").is_some_and(|n| n >= 2),
            "publication {i} lost Service a: {:?}",
            summary(p)
        );
    }
    assert!(sync.status().lists >= 4, "{:?}", sync.status());
}

#[test]
fn dropped_watches_resume_from_their_version_without_a_list() {
    let (api, rec, _sync) = synced();
    let lists = api.requests().0;
    for round in 0..3 {
        api.drop_connections();
        api.apply(&slice(
            "b-1",
            "b",
            &["198.18.1.5", "198.18.1.9"][..=(round % 2)],
        ));
        let want = round % 2 + 1;
        rec.wait("a change after a dropped watch", |s| {
            endpoints(s, "b") == Some(want)
        });
    }
    assert_eq!(
        api.requests().0,
        lists,
        "resumed from the resourceVersion: no list"
    );
    // A watch open for over a second got bookmarks and kept going.
    std::thread::sleep(Duration::from_millis(1500));
    api.apply(&service("d", "198.19.0.13"));
    rec.wait("a change after bookmarks", |s| {
        s.iter().any(|x| x.name == "d")
    });
}

#[test]
fn the_api_server_away_and_back() {
    let (mut api, rec, sync) = synced();
    api.stop();
    let st = sync
        .wait(Duration::from_secs(20), |s| {
            !s.connected && s.last_error.is_some()
        })
        .unwrap_or_else(|| panic!("no error seen: {:?}", sync.status()));
    assert!(st.synced);
    // Changes while it is away, then it comes back.
    api.delete("Service", "shop", "b");
    api.apply(&slice("a-1", "a", &["198.18.1.3"]));
    std::thread::sleep(Duration::from_secs(3));
    let published_while_away = rec.all().len();
    api.restart();
    rec.wait("the changes made while away", |s| {
        endpoints(s, "a") == Some(1) && endpoints(s, "b").is_none()
    });
    assert!(rec.all().len() > published_while_away);
    sync.wait(Duration::from_secs(5), |s| s.connected)
        .expect("connected again");
    for p in rec.all() {
        assert!(
            endpoints(&p, "a").is_some(),
            "Service a flushed: {:?}",
            summary(&p)
        );
    }
}
