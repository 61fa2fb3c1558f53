//! Real packets: two pod namespaces on veth pairs to a node namespace, a
//! worker on the node's ends through AF_XDP, and real kernel stacks in the
//! pods: a UDP client to a ClusterIP whose backend is a UDP echo server in
//! the other pod (every answer from the VIP), and an HTTP GET and a 10 MB
//! download from python's http.server through another ClusterIP, checked by
//! SHA-256 at both ends. Root only; every namespace is this test's own and is removed on
//! drop. Run with `cargo test -p sluice-tests --features afxdp`.
#![cfg(feature = "afxdp")]

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sluice_dataplane::conntrack::{Conntrack, Timeouts};
use sluice_dataplane::io::afxdp::{AfXdpBackend, AfXdpConfig};
use sluice_dataplane::neighbor::Gateway;
use sluice_dataplane::node::NodeTables;
use sluice_dataplane::pipeline::Tables;
use sluice_dataplane::route::{PortId, Routes};
use sluice_dataplane::service::{
    Conditions, EndpointSpec, PortSpec, ServiceSpec, ServiceTable, TargetPort,
};
use sluice_dataplane::worker::{PortMap, Worker};
use sluice_dataplane::{Addr, Proto};

fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if !out.status.success() {
        return Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The namespaces and processes of one run, removed on drop.
struct Lab {
    tag: String,
    /// (name, address) of each pod; pod `i` is node port `i`.
    pods: Vec<(&'static str, &'static str)>,
    children: Vec<Child>,
}

impl Lab {
    fn ns(&self, which: &str) -> String {
        format!("{}{which}", self.tag)
    }
    /// A client pod "a" (198.18.1.2) and a server pod "b" (198.18.1.3).
    fn up() -> Result<Lab, String> {
        Lab::up_with(&[("a", "198.18.1.2"), ("b", "198.18.1.3")])
    }

    fn up_with(pods: &[(&'static str, &'static str)]) -> Result<Lab, String> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("slx{}{n}", std::process::id() % 10_000);
        let lab = Lab {
            tag,
            pods: pods.to_vec(),
            children: Vec::new(),
        };
        let node = lab.ns("n");
        sh(&["ip", "netns", "add", &node])?;
        for (pod, _) in pods {
            sh(&["ip", "netns", "add", &lab.ns(pod)])?;
        }
        for &(pod, addr) in pods {
            let ns = lab.ns(pod);
            let host_end = format!("{}{pod}0", lab.tag);
            sh(&[
                "ip", "link", "add", &host_end, "netns", &node, "type", "veth", "peer", "name",
                "eth0", "netns", &ns,
            ])?;
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            sh(&["ip", "-n", &ns, "link", "set", "eth0", "mtu", "1450", "up"])?;
            sh(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/32"),
                "dev",
                "eth0",
            ])?;
            sh(&[
                "ip",
                "-n",
                &ns,
                "route",
                "add",
                "169.254.1.1",
                "dev",
                "eth0",
                "scope",
                "link",
            ])?;
            sh(&[
                "ip",
                "-n",
                &ns,
                "route",
                "add",
                "default",
                "via",
                "169.254.1.1",
                "dev",
                "eth0",
            ])?;
            // Full checksums and no GSO/GRO: AF_XDP sees the bytes as sent.
            sh(&[
                "ip", "netns", "exec", &ns, "ethtool", "-K", "eth0", "tx", "off", "tso", "off",
                "gso", "off", "gro", "off",
            ])?;
            sh(&["ip", "-n", &node, "link", "set", &host_end, "up"])?;
        }
        Ok(lab)
    }
    fn pod_mac(&self, pod: &str) -> Result<[u8; 6], String> {
        let s = sh(&[
            "ip",
            "netns",
            "exec",
            &self.ns(pod),
            "cat",
            "/sys/class/net/eth0/address",
        ])?;
        let v: Vec<u8> = s
            .split(':')
            .filter_map(|b| u8::from_str_radix(b, 16).ok())
            .collect();
        v.try_into().map_err(|_| format!("bad MAC {s}"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for w in self.pods.iter().map(|p| p.0).chain(["n"]) {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(w)])
                .status();
        }
    }
}

fn enter_netns(name: &str) -> Result<(), String> {
    let f = std::fs::File::open(format!("/run/netns/{name}"))
        .map_err(|e| format!("open netns {name}: {e}"))?;
    use std::os::fd::AsRawFd;
    // SAFETY: setns on a valid namespace fd; it moves only this thread.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r != 0 {
        return Err(format!("setns {name}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

#[test]
fn udp_through_a_clusterip_over_af_xdp() {
    let mut lab = Lab::up().unwrap_or_else(|e| {
        panic!("cannot set up the veth lab (root, iproute2 and ethtool needed): {e}")
    });
    let spec = ServiceSpec {
        namespace: "lab".into(),
        name: "echo".into(),
        cluster_ips: vec![Addr::from_v4([198, 19, 0, 10])],
        ports: vec![PortSpec {
            name: "dns".into(),
            port: 53,
            proto: Proto::Udp,
            target: TargetPort::Number(5353),
        }],
        endpoints: vec![EndpointSpec {
            addr: Addr::from_v4([198, 18, 1, 3]),
            conditions: Conditions::READY,
            ports: vec![],
        }],
    };
    // The echo server in pod b, a real kernel UDP socket.
    let server = Command::new("ip")
        .args(["netns", "exec", &lab.ns("b"), "python3", "-c"])
        .arg("import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',5353))\ns.settimeout(20)\nwhile True:\n  d,a=s.recvfrom(2048)\n  s.sendto(b'echo:'+d,a)\n")
        .stdout(Stdio::null())
        .spawn()
        .expect("python3 in pod b");
    lab.children.push(server);
    let (client, detail) = through_sluice(&lab, spec, || {
        Command::new("ip")
            .args(["netns", "exec", &lab.ns("a"), "python3", "-c"])
            .arg("import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(3)\nfor i in range(5):\n  s.sendto(b'hello-%d'%i,('198.19.0.10',53))\n  d,a=s.recvfrom(2048)\n  print(d.decode(),a[0],a[1])\n")
            .output()
            .expect("python3 in pod a")
    });
    assert!(
        client.status.success(),
        "client failed: {}\nworker: {detail}",
        String::from_utf8_lossy(&client.stderr)
    );
    let out = String::from_utf8_lossy(&client.stdout).to_string();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(
            *l,
            format!("echo:hello-{i} 198.19.0.10 53"),
            "the answer comes from the VIP"
        );
    }
}

/// Runs a worker on the lab's node ends, with `spec` as the only Service,
/// while `client` runs; returns what `client` returned and the worker's
/// counters, for messages.
fn through_sluice<R>(lab: &Lab, spec: ServiceSpec, client: impl FnOnce() -> R) -> (R, String) {
    let (services, problems) = ServiceTable::build(&[spec]);
    assert!(problems.is_empty(), "{problems:?}");
    let conntrack = Conntrack::new(1 << 16, Timeouts::default());
    let mut routes = Routes::default();
    let mut map = Vec::new();
    for (i, (pod, addr)) in lab.pods.iter().enumerate() {
        let a: std::net::Ipv4Addr = addr.parse().unwrap();
        routes.add_pod(
            Addr::from_v4(a.octets()),
            PortId(i as u16),
            lab.pod_mac(pod).unwrap(),
        );
        map.push((PortId(i as u16), i));
    }
    let stop = AtomicBool::new(false);
    let node = lab.ns("n");
    let ends: Vec<String> = lab
        .pods
        .iter()
        .map(|(p, _)| format!("{}{p}0", lab.tag))
        .collect();
    std::thread::scope(|s| {
        let worker = s.spawn(|| -> Result<String, String> {
            enter_netns(&node)?;
            let names: Vec<&str> = ends.iter().map(|s| s.as_str()).collect();
            let backend =
                AfXdpBackend::open(&names, AfXdpConfig::default()).map_err(|e| e.to_string())?;
            let map = PortMap::new(&map, None, ends.len()).map_err(|e| e.to_string())?;
            let mut w = Worker::new(backend, map);
            let t = NodeTables {
                pipeline: Tables {
                    services: &services,
                    conntrack: &conntrack,
                },
                routes: &routes,
                gateway: Gateway::DEFAULT,
            };
            w.run(&t, &stop, sluice_dataplane::worker::Idle::BUSY);
            let c = w.packet_counters();
            Ok(format!(
                "{c:?} {:?} drops {:?}",
                w.counters,
                c.drop_breakdown().collect::<Vec<_>>()
            ))
        });
        std::thread::sleep(Duration::from_millis(300));
        let r = client();
        stop.store(true, Ordering::Relaxed);
        let detail = worker.join().expect("worker thread").expect("worker");
        (r, detail)
    })
}

fn web_spec() -> ServiceSpec {
    ServiceSpec {
        namespace: "lab".into(),
        name: "web".into(),
        cluster_ips: vec![Addr::from_v4([198, 19, 0, 20])],
        ports: vec![PortSpec {
            name: "http".into(),
            port: 80,
            proto: Proto::Tcp,
            target: TargetPort::Number(8080),
        }],
        endpoints: vec![EndpointSpec {
            addr: Addr::from_v4([198, 18, 1, 3]),
            conditions: Conditions::READY,
            ports: vec![],
        }],
    }
}

/// python's http.server in `pod`, serving `dir` on 8080, once it listens.
fn serve(lab: &mut Lab, pod: &str, dir: &std::path::Path) {
    let server = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.ns(pod),
            "python3",
            "-m",
            "http.server",
            "8080",
            "--bind",
            "0.0.0.0",
            "--directory",
        ])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 http.server");
    lab.children.push(server);
    // Until it listens (bounded).
    for _ in 0..50 {
        if sh(&[
            "ip",
            "netns",
            "exec",
            &lab.ns(pod),
            "ss",
            "-ltn",
            "sport = :8080",
        ])
        .is_ok_and(|o| o.contains("8080"))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("http.server in pod {pod} did not start listening");
}

/// A python HTTP client in pod a: fetches `url`, prints the body's length
/// and SHA-256.
fn fetch(lab: &Lab, url: &str) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", &lab.ns("a"), "python3", "-c"])
        .arg(format!(
            "import hashlib,urllib.request\nb=urllib.request.urlopen('{url}',timeout=20).read()\nprint(len(b),hashlib.sha256(b).hexdigest())\n"
        ))
        .output()
        .expect("python3 in pod a")
}

fn sha256_hex(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn http_get_and_a_10_mb_transfer_through_a_clusterip_over_af_xdp() {
    let mut lab = Lab::up().unwrap_or_else(|e| {
        panic!("cannot set up the veth lab (root, iproute2 and ethtool needed): {e}")
    });
    let dir = std::env::temp_dir().join(format!("{}-www", lab.tag));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), b"<h1>served by pod b</h1>\n").unwrap();
    // 10 MB that compress to nothing would hide nothing; these do not.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let big: Vec<u8> = (0..10 * 1024 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(dir.join("big.bin"), &big).unwrap();
    let want_small = sha256_hex(&dir.join("index.html"));
    let want_big = sha256_hex(&dir.join("big.bin"));
    serve(&mut lab, "b", &dir);

    let ((small, large, direct), detail) = through_sluice(&lab, web_spec(), || {
        (
            fetch(&lab, "http://198.19.0.20/index.html"),
            fetch(&lab, "http://198.19.0.20/big.bin"),
            // Pod to pod by IP: no Service, plain routing.
            fetch(&lab, "http://198.18.1.3:8080/index.html"),
        )
    });
    let _ = std::fs::remove_dir_all(&dir);
    for (out, len, want) in [
        (&small, 25, &want_small),
        (&large, 10 * 1024 * 1024, &want_big),
        (&direct, 25, &want_small),
    ] {
        assert!(
            out.status.success(),
            "client failed: {}\nworker: {detail}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("{len} {want}"),
            "worker: {detail}"
        );
    }
}

#[test]
fn two_hundred_concurrent_connections_spread_over_three_backends() {
    let pods = [
        ("a", "198.18.1.2"),
        ("b", "198.18.1.3"),
        ("c", "198.18.1.4"),
        ("d", "198.18.1.5"),
    ];
    let mut lab = Lab::up_with(&pods).unwrap_or_else(|e| {
        panic!("cannot set up the veth lab (root, iproute2 and ethtool needed): {e}")
    });
    let mut dirs = Vec::new();
    for (pod, _) in &pods[1..] {
        let dir = std::env::temp_dir().join(format!("{}-{pod}-www", lab.tag));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("who"), pod.as_bytes()).unwrap();
        serve(&mut lab, pod, &dir);
        dirs.push(dir);
    }
    let spec = ServiceSpec {
        namespace: "lab".into(),
        name: "spread".into(),
        cluster_ips: vec![Addr::from_v4([198, 19, 0, 30])],
        ports: vec![PortSpec {
            name: "http".into(),
            port: 80,
            proto: Proto::Tcp,
            target: TargetPort::Number(8080),
        }],
        endpoints: pods[1..]
            .iter()
            .map(|(_, a)| EndpointSpec {
                addr: Addr::from_v4(a.parse::<std::net::Ipv4Addr>().unwrap().octets()),
                conditions: Conditions::READY,
                ports: vec![],
            })
            .collect(),
    };
    let (out, detail) = through_sluice(&lab, spec, || {
        Command::new("ip")
            .args(["netns", "exec", &lab.ns("a"), "python3", "-c"])
            .arg(
                "import collections,concurrent.futures,urllib.request\n\
                 def get(_):\n  return urllib.request.urlopen('http://198.19.0.30/who',timeout=20).read().decode()\n\
                 with concurrent.futures.ThreadPoolExecutor(200) as ex:\n  c=collections.Counter(ex.map(get,range(200)))\n\
                 print(' '.join('%s=%d'%(k,c[k]) for k in 'bcd'))\n",
            )
            .output()
            .expect("python3 in pod a")
    });
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
    assert!(
        out.status.success(),
        "client failed: {}\nworker: {detail}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let counts: Vec<u32> = line
        .split(' ')
        .filter_map(|kv| kv.split('=').nth(1)?.parse().ok())
        .collect();
    assert_eq!(counts.len(), 3, "{line}");
    assert_eq!(counts.iter().sum::<u32>(), 200, "{line}");
    let even = 200.0 / 3.0;
    for c in &counts {
        assert!(
            (f64::from(*c) - even).abs() <= 0.3 * even,
            "not within 30% of even: {line}"
        );
    }
}
