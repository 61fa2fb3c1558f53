//! A node's life, as its container runtime lives it: one `sluice run`
//! daemon that starts with no pods, and pods created and deleted through
//! sluice-cni in every order, at the node's scale, for a long sequence.
//! Every pod that exists is checked with traffic through the dataplane
//! (a ping to another pod, which crosses both pods' AF_XDP sockets), not
//! a sample. Root only (control/src/testing.rs: the one policy).
//!
//! One test, so that one daemon lives through all of it:
//! 1. orders: the first pod deleted first, every pod deleted then one
//!    created, creations and deletions interleaved;
//! 2. 250 pods at once (the default --max-pods), every one pinged, and
//!    the 251st refused with the limit named;
//! 3. 1,000 ADD/DEL cycles with at most 50 pods alive, every ADD
//!    succeeding and every new pod passing traffic; the daemon's open
//!    descriptors and resident memory compared before and after.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_control::admin::{self, StatusReply};
use sluice_control::testing::root_or_skip;

mod common;
use common::{invoke_bin, must, Run};

const CNI: &str = env!("CARGO_BIN_EXE_sluice-cni");
const MAX_PODS: usize = 250;

/// The daemon's binary, built beside the plugin's by `cargo test
/// --workspace` (or `cargo build -p sluice-cli`).
fn sluice_bin() -> PathBuf {
    let p = Path::new(CNI).with_file_name("sluice");
    assert!(
        p.exists(),
        "{} not found: build the daemon (cargo build -p sluice-cli) or run the workspace's tests",
        p.display()
    );
    p
}

fn sh(args: &[&str]) -> std::process::Output {
    Command::new(args[0]).args(&args[1..]).output().unwrap()
}

/// A pod as the runtime knows it: its container id, namespace and
/// IPv4 address.
#[derive(Clone, Debug)]
struct Pod {
    id: String,
    netns: String,
    ip: String,
}

/// The node: its namespace, the daemon's process, the pods alive.
struct Node {
    netns: String,
    dir: PathBuf,
    daemon: Child,
    conf: String,
    next: AtomicUsize,
    pods: Mutex<BTreeMap<String, Pod>>,
}

impl Node {
    fn start(tag: &str) -> Node {
        let netns = format!("nl{tag}{}", std::process::id() % 100_000);
        cleanup_namespaces(&netns);
        must(&["ip", "netns", "add", &netns]);
        must(&["ip", "-n", &netns, "link", "set", "lo", "up"]);
        let dir = std::env::temp_dir().join(format!("sluice-{netns}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("manifests")).unwrap();
        let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
        let daemon = Command::new(sluice_bin())
            .args(["run", "--source"])
            .arg(format!("file:{}", dir.join("manifests").display()))
            .args(["--netns", &netns, "--admin"])
            .arg(dir.join("admin.sock"))
            .arg("--cni-data-dir")
            .arg(dir.join("ipam"))
            .args(["--cni-network", &netns])
            .args(["--max-pods", &MAX_PODS.to_string()])
            // The test's processes share the machine's two cores with
            // the worker: it naps when idle rather than spin.
            .args(["--idle-nap-us", "100", "--conntrack-capacity", "65536"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start sluice run");
        let conf = json!({
            "cniVersion": "1.1.0",
            "name": netns,
            "type": "sluice-cni",
            "mtu": 1450,
            "adminSocket": dir.join("admin.sock"),
            "ipam": {
                "ranges": [[{"subnet": "198.18.1.0/24"}], [{"subnet": "2001:db8:18:1::/64"}]],
                "dataDir": dir.join("ipam"),
            },
        })
        .to_string();
        let node = Node {
            netns,
            dir,
            daemon,
            conf,
            next: AtomicUsize::new(0),
            pods: Mutex::new(BTreeMap::new()),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while admin::request(&node.dir.join("admin.sock"), admin::Command::Status).is_err() {
            assert!(
                Instant::now() < deadline,
                "the daemon did not answer within 30 s:\n{}",
                node.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        node
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    fn status(&self) -> StatusReply {
        admin::request(&self.dir.join("admin.sock"), admin::Command::Status)
            .unwrap()
            .status
            .unwrap()
    }

    fn cni(&self, command: &str, id: &str, netns: &str) -> Run {
        let netns = format!("/var/run/netns/{netns}");
        let env = [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", id),
            ("CNI_NETNS", netns.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/usr/lib/cni"),
        ];
        invoke_bin(CNI, Some(&self.netns), &env, &self.conf)
    }

    /// A new pod: its namespace made, then ADD. Err: the ADD's output.
    fn add(&self) -> Result<Pod, String> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("pod{n}");
        let netns = format!("{}-{n}", self.netns);
        let _ = sh(&["ip", "netns", "del", &netns]);
        must(&["ip", "netns", "add", &netns]);
        let Run { status, out, raw } = self.cni("ADD", &id, &netns);
        if status != 0 {
            let _ = sh(&["ip", "netns", "del", &netns]);
            return Err(raw);
        }
        let ip = out["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .unwrap_or_else(|| panic!("ADD {id}: no address in {raw}"))
            .to_string();
        let pod = Pod { id, netns, ip };
        self.pods
            .lock()
            .unwrap()
            .insert(pod.id.clone(), pod.clone());
        Ok(pod)
    }

    /// DEL, then the namespace removed, as a runtime tears a pod down.
    fn del(&self, pod: &Pod) {
        let Run { status, raw, .. } = self.cni("DEL", &pod.id, &pod.netns);
        assert_eq!(status, 0, "DEL {}: {raw}", pod.id);
        must(&["ip", "netns", "del", &pod.netns]);
        self.pods.lock().unwrap().remove(&pod.id);
    }

    fn alive(&self) -> Vec<Pod> {
        self.pods.lock().unwrap().values().cloned().collect()
    }

    /// Whether `from` reaches `to` through the dataplane (a ping, a
    /// second one if the first is lost).
    fn ping(&self, from: &Pod, to: &Pod) -> bool {
        (0..2).any(|_| {
            sh(&[
                "ip",
                "netns",
                "exec",
                &from.netns,
                "ping",
                "-c",
                "1",
                "-W",
                "2",
                &to.ip,
            ])
            .status
            .success()
        })
    }

    /// Every pod alive pings the next (in a ring, the last the first):
    /// each pod's port both sends and receives. Returns the pods that got
    /// no answer.
    fn ping_ring(&self) -> Vec<String> {
        let pods = self.alive();
        if pods.len() < 2 {
            return Vec::new();
        }
        let failed = Mutex::new(Vec::new());
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= pods.len() {
                        break;
                    }
                    let to = &pods[(i + 1) % pods.len()];
                    if !self.ping(&pods[i], to) {
                        failed
                            .lock()
                            .unwrap()
                            .push(format!("{} -> {}", pods[i].ip, to.ip));
                    }
                });
            }
        });
        failed.into_inner().unwrap()
    }

    /// `n` pods at once, `threads` ADDs at a time.
    fn add_many(&self, n: usize, threads: usize) -> Vec<String> {
        let errors = Mutex::new(Vec::new());
        let left = AtomicUsize::new(n);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    while left
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| l.checked_sub(1))
                        .is_ok()
                    {
                        if let Err(e) = self.add() {
                            errors.lock().unwrap().push(e);
                        }
                    }
                });
            }
        });
        errors.into_inner().unwrap()
    }

    fn del_all(&self, threads: usize) {
        let pods = Mutex::new(self.alive());
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| loop {
                    let Some(p) = pods.lock().unwrap().pop() else {
                        break;
                    };
                    self.del(&p);
                });
            }
        });
    }

    fn pid(&self) -> u32 {
        self.daemon.id()
    }

    /// The daemon's open descriptors.
    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// The daemon's resident memory, KiB.
    fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// Asserts that the daemon attaches exactly the pods alive, every one
    /// with a working fill ring.
    fn check_status(&self, when: &str) {
        // The pool is published every second, or at once after a change.
        std::thread::sleep(Duration::from_millis(50));
        let st = self.status();
        let alive = self.alive();
        assert_eq!(
            st.interfaces.len(),
            alive.len(),
            "{when}: the daemon's ports against the pods alive"
        );
        for p in &alive {
            let owner = format!("{}/eth0", p.id);
            assert!(
                st.interfaces
                    .iter()
                    .any(|i| i.owner.as_deref() == Some(owner.as_str())),
                "{when}: {owner} is not attached"
            );
        }
        let pool = st.counters[0]
            .backend
            .pool
            .expect("the AF_XDP pool's state");
        assert_eq!(pool.ports, alive.len(), "{when}: {pool:?}");
        assert_eq!(pool.max_ports, MAX_PODS, "{when}: {pool:?}");
        assert_eq!(
            pool.ports_short, 0,
            "{when}: a port's fill ring is short: {pool:?}"
        );
        assert_eq!(st.counters[0].backend.misuse, 0, "{when}");
    }
}

/// Removes the node's namespaces and its pods', left by this test or by
/// an earlier run that was killed.
fn cleanup_namespaces(prefix: &str) {
    let out = sh(&["ip", "netns", "list"]);
    for ns in String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n == prefix || n.starts_with(&format!("{prefix}-")))
    {
        let _ = sh(&["ip", "netns", "del", ns]);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the daemon this test started, by its pid.
        unsafe { libc::kill(self.daemon.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.daemon.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        cleanup_namespaces(&self.netns);
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("the daemon's log is kept in {}", self.dir.display());
        }
    }
}

fn orders(node: &Node) {
    let ok = |what: &str| {
        let failed = node.ping_ring();
        assert!(
            failed.is_empty(),
            "{what}: no answer: {failed:?}\n{}",
            node.log()
        );
        node.check_status(what);
    };
    // The bug this test was written for: create one, delete it, create
    // another (the first pod's socket owned the UMEM).
    let a = node.add().expect("ADD the first pod");
    node.del(&a);
    let b = node.add().expect("ADD after the first pod was deleted");
    let c = node.add().expect("ADD a second pod");
    assert!(node.ping(&b, &c), "b to c:\n{}", node.log());
    ok("a pod created after the first was deleted");

    // The first pod attached deleted first, others still attached.
    let d = node.add().expect("ADD d");
    node.del(&b);
    ok("the first of three deleted");
    let e = node
        .add()
        .expect("ADD after the first of three was deleted");
    assert!(node.ping(&e, &c) && node.ping(&e, &d), "e:\n{}", node.log());
    ok("one created after the first of three was deleted");

    // All deleted, then one created.
    node.del_all(2);
    node.check_status("all deleted");
    let f = node.add().expect("ADD after all were deleted");
    let g = node.add().expect("ADD a second after all were deleted");
    assert!(node.ping(&f, &g), "f to g:\n{}", node.log());
    ok("created after all were deleted");

    // Interleaved: created and deleted in a shuffled order, the ring
    // pinged after every step.
    let mut order = 7u64;
    for step in 0..24 {
        order = order
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let alive = node.alive();
        if alive.len() > 2 && (order >> 33).is_multiple_of(3) {
            node.del(&alive[(order >> 40) as usize % alive.len()]);
        } else {
            node.add()
                .unwrap_or_else(|e| panic!("interleaved step {step}: ADD: {e}"));
        }
        ok(&format!("interleaved step {step}"));
    }
    node.del_all(4);
    node.check_status("orders done");
    drop((c, d, e, f, g));
}

fn full_node(node: &Node) {
    let t = Instant::now();
    let errors = node.add_many(MAX_PODS, 4);
    assert!(errors.is_empty(), "ADDs of 250 pods failed: {errors:?}");
    let attach_s = t.elapsed().as_secs_f64();
    node.check_status("250 pods attached");
    let t = Instant::now();
    let failed = node.ping_ring();
    assert!(
        failed.is_empty(),
        "{} of 250 pods got no answer: {failed:?}",
        failed.len()
    );
    node.check_status("250 pods pinged");
    let st = node.status();
    let pool = st.counters[0].backend.pool.unwrap();
    eprintln!(
        "node_life: 250 pods attached in {attach_s:.1} s (4 ADDs at a time) and pinged in {:.1} s; pool {} frames ({} MiB), {} free, fill target {}; daemon RSS {} MiB, {} fds",
        t.elapsed().as_secs_f64(),
        pool.frames,
        (pool.frames * 2048) >> 20,
        pool.free,
        pool.fill_target,
        node.rss_kib() >> 10,
        node.fds()
    );

    // The 251st: refused with the limit named, as the CNI error format
    // says, and nothing of it left behind.
    let extra = node
        .add()
        .expect_err("a 251st pod on a node of --max-pods 250");
    let out: Value = serde_json::Deserializer::from_str(&extra)
        .into_iter::<Value>()
        .next()
        .and_then(Result::ok)
        .unwrap_or(Value::Null);
    assert_eq!(out["code"], 102, "the 251st pod's error: {extra}");
    let said = format!("{} {}", out["msg"], out["details"]);
    assert!(
        said.contains("250 pods attached") && said.contains("--max-pods 250"),
        "the 251st pod's error names the limit: {extra}"
    );
    assert!(
        !extra.contains("Cannot allocate memory"),
        "the limit, not ENOMEM: {extra}"
    );
    node.check_status("the 251st refused");
    let links = sh(&["ip", "-n", &node.netns, "-o", "link"]);
    let veths = String::from_utf8_lossy(&links.stdout)
        .lines()
        .filter(|l| l.contains(": slc"))
        .count();
    assert_eq!(veths, MAX_PODS, "the refused pod's veth is removed");
    node.del_all(4);
    node.check_status("250 pods deleted");
}

fn cycles(node: &Node) {
    // A pod that lives through the cycles: every new pod pings it.
    let probe = node.add().expect("ADD the probe pod");
    // Warm: the allocator's and libxdp's first-use growth is not a leak.
    for _ in 0..20 {
        let p = node.add().expect("ADD a warm-up pod");
        node.del(&p);
    }
    std::thread::sleep(Duration::from_millis(200));
    let (fds_before, rss_before) = (node.fds(), node.rss_kib());
    let t = Instant::now();
    let adds = AtomicUsize::new(0);
    const THREADS: usize = 4;
    const ALIVE_PER_THREAD: usize = 12; // 48 + the probe: at most 49 alive
    std::thread::scope(|s| {
        for th in 0..THREADS {
            let (adds, probe) = (&adds, &probe);
            s.spawn(move || {
                let mut mine: Vec<Pod> = Vec::new();
                let mut r = 0x9e37_79b9_7f4a_7c15u64 ^ th as u64;
                while adds.fetch_add(1, Ordering::Relaxed) < 1000 {
                    // Each thread keeps between 0 and 12 of its own pods,
                    // deleting a random one of them when it has to.
                    r = r
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    while mine.len() >= ALIVE_PER_THREAD
                        || (!mine.is_empty() && (r >> 33).is_multiple_of(2))
                    {
                        let i = (r >> 40) as usize % mine.len();
                        node.del(&mine.swap_remove(i));
                        r = r.rotate_left(7);
                    }
                    let p = node
                        .add()
                        .unwrap_or_else(|e| panic!("ADD in the cycles: {e}"));
                    assert!(
                        node.ping(&p, probe),
                        "a new pod {} got no answer from the probe {}",
                        p.ip,
                        probe.ip
                    );
                    mine.push(p);
                }
                for p in mine {
                    node.del(&p);
                }
            });
        }
    });
    let elapsed = t.elapsed().as_secs_f64();
    node.check_status("after 1,000 cycles");
    std::thread::sleep(Duration::from_millis(200));
    let (fds_after, rss_after) = (node.fds(), node.rss_kib());
    eprintln!(
        "node_life: 1,000 ADD/DEL cycles in {elapsed:.1} s; daemon fds {fds_before} -> {fds_after}, RSS {rss_before} -> {rss_after} KiB"
    );
    // Bounds: no descriptor kept per pod (the allowance is for the admin
    // socket's connection being served), and memory within 8 MiB (the
    // allocator keeps freed pages; a leak of a socket's rings, 96 KiB,
    // would pass it within 100 cycles). Frames live in the pool, allocated
    // at start: a leak of those shows as frames that never come back.
    assert!(
        fds_after <= fds_before + 1,
        "descriptors leak: {fds_before} before 1,000 cycles, {fds_after} after"
    );
    assert!(
        rss_after <= rss_before + 8 * 1024,
        "memory grows: {rss_before} KiB before 1,000 cycles, {rss_after} KiB after"
    );
    // At rest, every frame of the pool is free or on the probe's fill ring:
    // none stuck in flight or in the worker's hands after 1,000 pods.
    std::thread::sleep(Duration::from_millis(1100));
    let pool = node.status().counters[0].backend.pool.unwrap();
    assert_eq!(
        (pool.worker, pool.in_tx, pool.free + pool.in_fill),
        (0, 0, pool.frames),
        "{pool:?}"
    );
    node.del(&probe);
}

#[test]
fn a_node_lives_through_pods_coming_and_going() {
    if !root_or_skip("a_node_lives_through_pods_coming_and_going") {
        return;
    }
    let node = Node::start("a");
    assert!(
        node.status().interfaces.is_empty(),
        "the daemon starts with no pods"
    );
    orders(&node);
    full_node(&node);
    cycles(&node);
    let st = node.status();
    assert!(st.interfaces.is_empty());
    let w = &st.counters[0];
    assert_eq!(w.backend.misuse, 0);
    eprintln!(
        "node_life: worker counters: rx {} forwarded {} drops {:?} loop {:?} sockets {:?}",
        w.packets["rx"],
        w.packets["forwarded"],
        w.drops.iter().filter(|(_, n)| **n > 0).collect::<Vec<_>>(),
        w.loop_counters,
        w.backend.sockets
    );
}
