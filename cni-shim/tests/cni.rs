//! sluice-cni driven as a runtime drives it: CNI_* in the environment, the
//! configuration on stdin, the result or the error on stdout, the exit
//! status. The tests that wire pods run the real daemon (AF_XDP on the
//! veths the plugin makes, its admin socket) in a node namespace of their
//! own, and need root; under CI=true they fail rather than skip without it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use sluice_control::admin::{self, AdminServer};
use sluice_control::daemon::{Config, Daemon, Io};
use sluice_dataplane::worker::Idle;

const SERVER: &str = "import http.server, socketserver, sys\nclass S(socketserver.TCPServer):\n    allow_reuse_address = True\nS((sys.argv[1], 8080), http.server.SimpleHTTPRequestHandler).serve_forever()\n";

const BIN: &str = env!("CARGO_BIN_EXE_sluice-cni");

use sluice_control::testing::root_or_skip;

mod common;
use common::{invoke_bin, must as sh, Run};

/// Runs the plugin with `env` and `stdin`, in `netns` (the node's) if given.
fn invoke(netns: Option<&str>, env: &[(&str, &str)], stdin: &str) -> Run {
    invoke_bin(BIN, netns, env, stdin)
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sluice-cni-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn conf(version: &str, name: &str, dir: &Path) -> Value {
    json!({
        "cniVersion": version,
        "name": name,
        "type": "sluice-cni",
        "mtu": 1450,
        "adminSocket": dir.join("admin.sock"),
        "ipam": {
            "ranges": [[{"subnet": "198.18.1.0/24"}], [{"subnet": "2001:db8:18:1::/64"}]],
            "dataDir": dir.join("ipam"),
        },
    })
}

#[test]
fn version_and_errors_follow_the_spec() {
    let dir = temp_dir("proto");
    let c = conf("1.1.0", "proto", &dir).to_string();
    let v = invoke(None, &[("CNI_COMMAND", "VERSION")], "");
    assert_eq!(v.status, 0, "{}", v.raw);
    let sup: Vec<&str> = v.out["supportedVersions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(sup.contains(&"1.0.0") && sup.contains(&"1.1.0"), "{sup:?}");
    let v = invoke(
        None,
        &[("CNI_COMMAND", "VERSION")],
        &conf("1.0.0", "p", &dir).to_string(),
    );
    assert_eq!(v.out["cniVersion"], "1.0.0");

    let add = |extra: &[(&str, &str)], stdin: &str| {
        let mut env = vec![
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "proto1"),
            ("CNI_NETNS", "/proc/self/ns/net"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/usr/lib/cni"),
        ];
        for &(k, val) in extra {
            env.retain(|(kk, _)| *kk != k);
            if !val.is_empty() {
                env.push((k, val));
            }
        }
        invoke(None, &env, stdin)
    };
    let cases: Vec<(&str, Run, u64)> = vec![
        ("no CNI_COMMAND", invoke(None, &[], &c), 4),
        (
            "unknown command",
            invoke(None, &[("CNI_COMMAND", "FROB")], &c),
            4,
        ),
        ("not JSON", add(&[], "{nope"), 6),
        (
            "an old version",
            add(&[], &conf("0.4.0", "p", &dir).to_string()),
            1,
        ),
        (
            "a bad subnet",
            add(&[], &c.replace("198.18.1.0/24", "198.18.1.1/24")),
            7,
        ),
        (
            "an unknown IPAM",
            add(
                &[],
                &c.replace("\"ranges\"", "\"type\":\"dhcp\",\"ranges\""),
            ),
            7,
        ),
        ("no container id", add(&[("CNI_CONTAINERID", "")], &c), 4),
        (
            "a bad container id",
            add(&[("CNI_CONTAINERID", "-x/y")], &c),
            4,
        ),
        ("no CNI_NETNS", add(&[("CNI_NETNS", "")], &c), 4),
        ("no CNI_PATH", add(&[("CNI_PATH", "")], &c), 4),
        (
            "a bad interface name",
            add(&[("CNI_IFNAME", "much-too-long-name0")], &c),
            4,
        ),
        ("bad CNI_ARGS", add(&[("CNI_ARGS", "novalue")], &c), 4),
        (
            "a namespace that is gone",
            add(&[("CNI_NETNS", "/var/run/netns/sluice-none")], &c),
            3,
        ),
        ("no daemon", add(&[], &c), 11),
        (
            "STATUS, no daemon",
            invoke(None, &[("CNI_COMMAND", "STATUS")], &c),
            51,
        ),
    ];
    for (what, r, code) in cases {
        assert_eq!(r.status, 1, "{what}: exit status: {}", r.raw);
        assert_eq!(r.out["code"].as_u64(), Some(code), "{what}: {}", r.raw);
        assert!(
            r.out["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {}",
            r.raw
        );
        assert!(r.out["cniVersion"].is_string(), "{what}: {}", r.raw);
    }
    let bad = add(&[], &c.replace("198.18.1.0/24", "198.18.1.1/24"));
    assert!(
        bad.out["msg"]
            .as_str()
            .unwrap()
            .contains("ipam.ranges[0][0]"),
        "{}",
        bad.raw
    );
    // DEL is best-effort: nothing to undo, no daemon, still success.
    let del = invoke(
        None,
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "never-added"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/usr/lib/cni"),
        ],
        &c,
    );
    assert_eq!(del.status, 0, "{}", del.raw);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A node namespace with the daemon in it, its admin socket, and the pod
/// namespaces a test makes; all removed when dropped.
struct Node {
    netns: String,
    dir: PathBuf,
    pods: Vec<String>,
    admin: Option<AdminServer>,
    daemon: Option<Daemon>,
}

impl Node {
    fn start(tag: &str) -> Node {
        let netns = format!("cni{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &netns]).output();
        sh(&["ip", "netns", "add", &netns]);
        sh(&["ip", "-n", &netns, "link", "set", "lo", "up"]);
        let dir = temp_dir(tag);
        let mut node = Node {
            netns: netns.clone(),
            dir: dir.clone(),
            pods: Vec::new(),
            admin: None,
            daemon: None,
        };
        let d = Daemon::start(Config {
            io: Io::Afxdp,
            node_netns: Some(netns),
            ports: Vec::new(),
            host: None,
            cores: Vec::new(),
            conntrack_capacity: 1 << 14,
            idle: Idle {
                spin_rounds: 1000,
                sleep: Duration::from_micros(200),
            },
            services: Vec::new(),
            max_pods: sluice_control::daemon::DEFAULT_MAX_PODS.into(),
        })
        .expect("start the daemon");
        node.admin = Some(
            admin::serve(&dir.join("admin.sock"), d.handles(), Box::new(Vec::new))
                .expect("the admin socket"),
        );
        node.daemon = Some(d);
        node
    }

    fn pod(&mut self, name: &str) -> String {
        let ns = format!("{}-{name}", self.netns);
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        sh(&["ip", "netns", "add", &ns]);
        self.pods.push(ns.clone());
        format!("/var/run/netns/{ns}")
    }

    fn conf(&self, version: &str) -> Value {
        conf(version, &self.netns, &self.dir)
    }

    fn cni(&self, command: &str, id: &str, netns: &str, stdin: &Value) -> Run {
        invoke(
            Some(&self.netns),
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", id),
                ("CNI_NETNS", netns),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/usr/lib/cni"),
                ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web"),
            ],
            &stdin.to_string(),
        )
    }

    fn status(&self) -> admin::StatusReply {
        admin::request(&self.dir.join("admin.sock"), admin::Command::Status)
            .unwrap()
            .status
            .unwrap()
    }

    /// What is left of the pods: allocated addresses, host veths.
    fn leftovers(&self) -> (Vec<String>, Vec<String>) {
        let ipam = self.dir.join("ipam").join(&self.netns);
        let addrs = std::fs::read_dir(&ipam)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default();
        let links = Command::new("ip")
            .args(["-n", &self.netns, "-o", "link"])
            .output()
            .unwrap();
        let veths = String::from_utf8_lossy(&links.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .filter(|n| n.starts_with("slc"))
            .map(|n| n.split('@').next().unwrap().to_string())
            .collect();
        (addrs, veths)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.admin.take();
        if let Some(mut d) = self.daemon.take() {
            d.stop();
        }
        for p in &self.pods {
            let _ = Command::new("ip").args(["netns", "del", p]).output();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn with_prev(conf: &Value, prev: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = prev.clone();
    c
}

fn pod_exec(netns_path: &str, args: &[&str]) -> std::process::Output {
    Command::new("nsenter")
        .arg(format!("--net={netns_path}"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn two_pods_made_by_the_plugin_talk_tcp_and_del_undoes_everything() {
    if !root_or_skip("two_pods") {
        return;
    }
    let mut node = Node::start("tcp");
    let a = node.pod("a");
    let b = node.pod("b");
    let ra = node.cni("ADD", "pod-a", &a, &node.conf("1.0.0"));
    assert_eq!(ra.status, 0, "ADD a: {}", ra.raw);
    let rb = node.cni("ADD", "pod-b", &b, &node.conf("1.1.0"));
    assert_eq!(rb.status, 0, "ADD b: {}", rb.raw);

    // The result as the spec shapes it.
    let res = &rb.out;
    assert_eq!(res["cniVersion"], "1.1.0");
    let ifs = res["interfaces"].as_array().unwrap();
    assert_eq!(ifs.len(), 2, "{res}");
    assert!(ifs[0]["sandbox"].is_null() && ifs[0]["name"].as_str().unwrap().starts_with("slc"));
    assert_eq!(ifs[1]["name"], "eth0");
    assert_eq!(ifs[1]["sandbox"], b.as_str());
    assert_eq!(ifs[1]["mtu"], 1450);
    assert!(ra.out["interfaces"][1]["mtu"].is_null(), "mtu is 1.1.0's");
    let ips = res["ips"].as_array().unwrap();
    assert_eq!(ips.len(), 2, "one IPv4 and one IPv6 address: {res}");
    assert!(ips.iter().all(|i| i["interface"] == 1));
    assert!(res["routes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["dst"] == "0.0.0.0/0"));
    let ip_b = ips[0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let ip_a = ra.out["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert_ne!(ip_a, ip_b);

    // The daemon has both, and says so.
    let st = node.status();
    assert_eq!(st.interfaces.len(), 2, "{st:?}");
    assert!(st
        .interfaces
        .iter()
        .any(|i| i.owner.as_deref() == Some("pod-a/eth0")));

    // Real TCP from a to b through the dataplane.
    let mut server = Command::new("nsenter")
        .arg(format!("--net={b}"))
        // socketserver's, not http.server's: HTTPServer looks its own name
        // up in DNS, which from a pod with no way out waits for timeouts.
        .args(["python3", "-c", SERVER, &ip_b])
        .current_dir(&node.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ok = false;
    let mut last = String::new();
    for _ in 0..50 {
        let o = pod_exec(
            &a,
            &[
                "curl",
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "2",
                &format!("http://{ip_b}:8080/"),
            ],
        );
        if String::from_utf8_lossy(&o.stdout) == "200" {
            ok = true;
            break;
        }
        last = format!(
            "{} {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let exited = server.try_wait().unwrap();
    let _ = server.kill();
    let out = server.wait_with_output().unwrap();
    assert!(
        ok,
        "curl from pod a to {ip_b}:8080 through the dataplane got no 200 (last: {last}; server exited: {exited:?}; {})",
        String::from_utf8_lossy(&out.stderr)
    );
    let ping6 = pod_exec(
        &a,
        &[
            "ping",
            "-6",
            "-c",
            "1",
            "-W",
            "2",
            ips[1]["address"]
                .as_str()
                .unwrap()
                .split('/')
                .next()
                .unwrap(),
        ],
    );
    assert!(
        ping6.status.success(),
        "IPv6 between the pods: {}",
        String::from_utf8_lossy(&ping6.stdout)
    );

    // CHECK passes on a healthy attachment; ADD again is refused.
    let chk = node.cni("CHECK", "pod-b", &b, &with_prev(&node.conf("1.1.0"), res));
    assert_eq!(chk.status, 0, "CHECK: {}", chk.raw);
    let again = node.cni("ADD", "pod-b", &b, &node.conf("1.1.0"));
    assert_eq!(again.status, 1);
    assert_eq!(again.out["code"], 103, "{}", again.raw);
    assert_eq!(
        node.status().interfaces.len(),
        2,
        "a refused ADD changes nothing"
    );

    // DEL, DEL again, CHECK after DEL; DEL after the namespace is gone.
    for _ in 0..2 {
        let d = node.cni("DEL", "pod-a", &a, &with_prev(&node.conf("1.0.0"), &ra.out));
        assert_eq!(d.status, 0, "DEL a: {}", d.raw);
    }
    let chk = node.cni(
        "CHECK",
        "pod-a",
        &a,
        &with_prev(&node.conf("1.0.0"), &ra.out),
    );
    assert_eq!(chk.out["code"], 101, "{}", chk.raw);
    sh(&["ip", "netns", "del", b.rsplit('/').next().unwrap()]);
    let d = node.cni("DEL", "pod-b", &b, &node.conf("1.1.0"));
    assert_eq!(d.status, 0, "DEL after the namespace is gone: {}", d.raw);
    assert_eq!(node.leftovers(), (vec![], vec![]));
    assert!(node.status().interfaces.is_empty());
}

/// `command` for pod `i` of `pods` (container `pari`), all at once.
fn at_once(node: &Node, command: &str, pods: &[String], conf: &Value) -> Vec<Run> {
    std::thread::scope(|s| {
        let hs: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| s.spawn(move || node.cni(command, &format!("par{i}"), p, conf)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn fifty_parallel_adds_get_distinct_addresses_and_dels_leave_nothing() {
    if !root_or_skip("fifty") {
        return;
    }
    let mut node = Node::start("par");
    let pods: Vec<String> = (0..50).map(|i| node.pod(&format!("p{i}"))).collect();
    let node = node;
    let conf = node.conf("1.1.0");
    let results = at_once(&node, "ADD", &pods, &conf);
    let mut addrs = std::collections::BTreeSet::new();
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.status, 0, "ADD {i}: {}", r.raw);
        for ip in r.out["ips"].as_array().unwrap() {
            assert!(
                addrs.insert(ip["address"].as_str().unwrap().to_string()),
                "{ip} twice"
            );
        }
    }
    assert_eq!(addrs.len(), 100, "50 IPv4 and 50 IPv6 addresses");
    assert_eq!(node.status().interfaces.len(), 50);
    assert_eq!(node.leftovers().1.len(), 50);
    let dels = at_once(&node, "DEL", &pods, &conf);
    for (i, r) in dels.iter().enumerate() {
        assert_eq!(r.status, 0, "DEL {i}: {}", r.raw);
    }
    assert_eq!(
        node.leftovers(),
        (vec![], vec![]),
        "addresses or veths left"
    );
    assert!(node.status().interfaces.is_empty());
}

#[test]
fn gc_frees_every_attachment_the_runtime_no_longer_lists() {
    if !root_or_skip("gc") {
        return;
    }
    let mut node = Node::start("gc");
    let pods: Vec<String> = (0..3).map(|i| node.pod(&format!("g{i}"))).collect();
    let conf = node.conf("1.1.0");
    for (i, p) in pods.iter().enumerate() {
        let r = node.cni("ADD", &format!("gc{i}"), p, &conf);
        assert_eq!(r.status, 0, "{}", r.raw);
    }
    // A plugin killed between allocating and replying: the address is on
    // disk, and nothing else exists.
    let store = node.dir.join("ipam").join(&node.netns);
    std::fs::write(store.join("198.18.1.200"), "crashed\neth0").unwrap();
    assert_eq!(node.leftovers().0.len(), 7);
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "gc0", "ifname": "eth0"}]);
    let r = invoke(
        Some(&node.netns),
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/usr/lib/cni")],
        &gc.to_string(),
    );
    assert_eq!(r.status, 0, "GC: {}", r.raw);
    let (addrs, veths) = node.leftovers();
    assert_eq!(addrs.len(), 2, "gc0's two addresses stay: {addrs:?}");
    assert_eq!(veths.len(), 1, "{veths:?}");
    let st = node.status();
    assert_eq!(st.interfaces.len(), 1);
    assert_eq!(st.interfaces[0].owner.as_deref(), Some("gc0/eth0"));
    let s = node.cni("STATUS", "", "", &conf);
    assert_eq!(s.status, 0, "STATUS: {}", s.raw);
}

#[test]
fn chains_with_the_reference_plugins() {
    if !root_or_skip("chain") {
        return;
    }
    let plugins = Path::new("/usr/lib/cni");
    for p in ["tuning", "bandwidth", "portmap"] {
        assert!(
            plugins.join(p).exists(),
            "{p}: install Debian's containernetworking-plugins (scripts/setup.sh does)"
        );
    }
    let mut node = Node::start("chn");
    let pod = node.pod("c");
    let base = node.conf("1.0.0");
    let r = node.cni("ADD", "chain1", &pod, &base);
    assert_eq!(r.status, 0, "{}", r.raw);
    let host = r.out["interfaces"][0]["name"].as_str().unwrap().to_string();
    let chain: Vec<Value> = vec![
        json!({"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.arp_ignore": "1"}}),
        json!({"type": "bandwidth", "ingressRate": 100_000_000, "ingressBurst": 1_000_000,
               "egressRate": 100_000_000, "egressBurst": 1_000_000}),
        json!({"type": "portmap", "capabilities": {"portMappings": true},
               "runtimeConfig": {"portMappings": [{"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"}]}}),
    ];
    let env = |cmd: &'static str| {
        vec![
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "chain1"),
            ("CNI_NETNS", pod.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/usr/lib/cni"),
        ]
    };
    let mut prev = r.out.clone();
    let mut confs = Vec::new();
    for step in &chain {
        let mut c = step.clone();
        c["cniVersion"] = json!("1.0.0");
        c["name"] = json!(node.netns);
        c["prevResult"] = prev.clone();
        let bin = plugins.join(step["type"].as_str().unwrap());
        let out = invoke_bin(
            bin.to_str().unwrap(),
            Some(&node.netns),
            &env("ADD"),
            &c.to_string(),
        );
        assert_eq!(
            out.status, 0,
            "{} ADD after sluice-cni: {}",
            step["type"], out.raw
        );
        prev = out.out;
        confs.push(c);
    }
    // Each did its job on what sluice-cni made.
    let sysctl = pod_exec(&pod, &["sysctl", "-n", "net.ipv4.conf.eth0.arp_ignore"]);
    assert_eq!(String::from_utf8_lossy(&sysctl.stdout).trim(), "1");
    let tc = Command::new("ip")
        .args([
            "netns",
            "exec",
            &node.netns,
            "tc",
            "qdisc",
            "show",
            "dev",
            &host,
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&tc.stdout).contains("tbf"),
        "bandwidth's qdisc on {host}"
    );
    let nat = Command::new("ip")
        .args(["netns", "exec", &node.netns, "iptables-save", "-t", "nat"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&nat.stdout).contains("18080"),
        "portmap's DNAT rule"
    );
    // The chain's final result still lists sluice-cni's interfaces.
    assert!(prev["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["name"] == "eth0"));
    // CHECK through the chain, then DEL in reverse.
    let chk = node.cni("CHECK", "chain1", &pod, &with_prev(&base, &prev));
    assert_eq!(chk.status, 0, "{}", chk.raw);
    for (step, c) in chain.iter().zip(&confs).rev() {
        let mut c = c.clone();
        c["prevResult"] = prev.clone();
        let bin = plugins.join(step["type"].as_str().unwrap());
        let out = invoke_bin(
            bin.to_str().unwrap(),
            Some(&node.netns),
            &env("DEL"),
            &c.to_string(),
        );
        assert_eq!(out.status, 0, "{} DEL: {}", step["type"], out.raw);
    }
    let d = node.cni("DEL", "chain1", &pod, &with_prev(&base, &prev));
    assert_eq!(d.status, 0, "{}", d.raw);
    assert_eq!(node.leftovers(), (vec![], vec![]));
}

/// Builds tests/libcni/main.go against Debian's libcni sources (GOPATH
/// mode: offline), into `dir`.
fn build_libcni_driver(dir: &Path) -> Result<PathBuf, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/libcni/main.go");
    let out = dir.join("libcni-driver");
    let libcni = Path::new("/usr/share/gocode/src/github.com/containernetworking/cni/libcni");
    if !libcni.exists() {
        return Err(format!(
            "{} missing: install golang-github-appc-cni-dev (scripts/setup.sh does)",
            libcni.display()
        ));
    }
    let o = Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg(&src)
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOCACHE", dir.join("gocache"))
        .env("GOFLAGS", "")
        .env("GOPROXY", "off")
        .output()
        .map_err(|e| format!("go: {e} (install golang-go; scripts/setup.sh does)"))?;
    if !o.status.success() {
        return Err(format!("go build: {}", String::from_utf8_lossy(&o.stderr)));
    }
    Ok(out)
}

#[test]
fn libcni_drives_the_plugin_as_containerd_does() {
    if !root_or_skip("libcni") {
        return;
    }
    let mut node = Node::start("lib");
    let driver = match build_libcni_driver(&node.dir) {
        Ok(d) => d,
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("libcni: skipped, {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    // The runtime's CNI_PATH: the plugin and a reference plugin to chain.
    let bin = node.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(BIN, bin.join("sluice-cni")).unwrap();
    std::os::unix::fs::symlink("/usr/lib/cni/tuning", bin.join("tuning")).unwrap();
    let mut sluice = node.conf("1.0.0");
    for k in ["cniVersion", "name"] {
        sluice.as_object_mut().unwrap().remove(k);
    }
    let conflist = json!({
        "cniVersion": "1.0.0",
        "name": node.netns,
        "plugins": [sluice, {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.arp_ignore": "1"}}],
    });
    let path = node.dir.join("10-sluice.conflist");
    std::fs::write(&path, conflist.to_string()).unwrap();
    let pod = node.pod("l");
    let run = |cmd: &str| {
        Command::new("ip")
            .args(["netns", "exec", &node.netns])
            .arg(&driver)
            .arg(cmd)
            .arg(&path)
            .arg(&bin)
            .arg(node.dir.join("cache"))
            .args(["ctr-libcni", &pod, "eth0"])
            .output()
            .unwrap()
    };
    let add = run("add");
    assert!(
        add.status.success(),
        "libcni ADD: {}",
        String::from_utf8_lossy(&add.stderr)
    );
    let res: Value = serde_json::from_slice(&add.stdout).unwrap();
    assert!(res["ips"].as_array().is_some_and(|a| a.len() == 2), "{res}");
    let st = node.status();
    assert_eq!(st.interfaces.len(), 1);
    assert_eq!(st.interfaces[0].owner.as_deref(), Some("ctr-libcni/eth0"));
    let sysctl = pod_exec(&pod, &["sysctl", "-n", "net.ipv4.conf.eth0.arp_ignore"]);
    assert_eq!(
        String::from_utf8_lossy(&sysctl.stdout).trim(),
        "1",
        "tuning ran after sluice-cni"
    );
    let check = run("check");
    assert!(
        check.status.success(),
        "libcni CHECK: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    for _ in 0..2 {
        let del = run("del");
        assert!(
            del.status.success(),
            "libcni DEL: {}",
            String::from_utf8_lossy(&del.stderr)
        );
    }
    assert_eq!(node.leftovers(), (vec![], vec![]));
    assert!(node.status().interfaces.is_empty());
}
