//! Real packets: two pod namespaces on veth pairs to a node namespace, a
//! worker on the node's ends through AF_XDP, and a UDP client in one pod
//! talking to a ClusterIP whose backend is a UDP echo server in the other.
//! Real kernel stacks on both ends; the client must get its answer from the
//! VIP. Root only; every namespace is this test's own and is removed on
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
    children: Vec<Child>,
}

impl Lab {
    fn ns(&self, which: &str) -> String {
        format!("{}{which}", self.tag)
    }
    fn up() -> Result<Lab, String> {
        let tag = format!("slx{}", std::process::id() % 100_000);
        let lab = Lab {
            tag,
            children: Vec::new(),
        };
        let node = lab.ns("n");
        sh(&["ip", "netns", "add", &node])?;
        sh(&["ip", "netns", "add", &lab.ns("a")])?;
        sh(&["ip", "netns", "add", &lab.ns("b")])?;
        for (pod, addr) in [("a", "198.18.1.2"), ("b", "198.18.1.3")] {
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
        for w in ["a", "b", "n"] {
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
    let lab = match Lab::up() {
        Ok(l) => l,
        Err(e) => panic!("cannot set up the veth lab (root, iproute2 and ethtool needed): {e}"),
    };
    let mut lab = lab;
    let (mac_a, mac_b) = (lab.pod_mac("a").unwrap(), lab.pod_mac("b").unwrap());

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
    let (services, _) = ServiceTable::build(&[spec]);
    let conntrack = Conntrack::new(4096, Timeouts::default());
    let mut routes = Routes::default();
    routes.add_pod(Addr::from_v4([198, 18, 1, 2]), PortId(0), mac_a);
    routes.add_pod(Addr::from_v4([198, 18, 1, 3]), PortId(1), mac_b);

    // The tables decide a crafted datagram as the lab's will be decided.
    {
        let t = NodeTables {
            pipeline: Tables {
                services: &services,
                conntrack: &conntrack,
            },
            routes: &routes,
            gateway: Gateway::DEFAULT,
        };
        let mut f = sluice_tests::frames::udp(
            sluice_tests::frames::Ip::V4([198, 18, 1, 2]),
            1,
            sluice_tests::frames::Ip::V4([198, 19, 0, 10]),
            53,
            b"probe",
        );
        let mut w = sluice_dataplane::pipeline::Worker::default();
        let mut reply = [0u8; 1600];
        let a = sluice_dataplane::node::handle(&mut f, &t, &mut w, &mut reply);
        assert_eq!(
            a,
            sluice_dataplane::node::Action::Transmit(sluice_dataplane::route::Egress::Pod {
                port: PortId(1),
                mac: mac_b
            }),
            "{:?}",
            w.counters
        );
    }

    // The echo server in pod b, a real kernel UDP socket.
    let server = Command::new("ip")
        .args(["netns", "exec", &lab.ns("b"), "python3", "-c"])
        .arg("import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',5353))\ns.settimeout(20)\nwhile True:\n  d,a=s.recvfrom(2048)\n  s.sendto(b'echo:'+d,a)\n")
        .stdout(Stdio::null())
        .spawn()
        .expect("python3 in pod b");
    lab.children.push(server);

    let stop = AtomicBool::new(false);
    let node = lab.ns("n");
    let ends = [format!("{}a0", lab.tag), format!("{}b0", lab.tag)];
    std::thread::scope(|s| {
        let worker = s.spawn(|| -> Result<(u64, u64, String), String> {
            enter_netns(&node)?;
            let names: Vec<&str> = ends.iter().map(|s| s.as_str()).collect();
            let backend =
                AfXdpBackend::open(&names, AfXdpConfig::default()).map_err(|e| e.to_string())?;
            let map = PortMap::new(&[(PortId(0), 0), (PortId(1), 1)], None, 2)
                .map_err(|e| e.to_string())?;
            let mut w = Worker::new(backend, map);
            let t = NodeTables {
                pipeline: Tables {
                    services: &services,
                    conntrack: &conntrack,
                },
                routes: &routes,
                gateway: Gateway::DEFAULT,
            };
            w.run(&t, &stop);
            let c = w.packet_counters();
            let detail = format!(
                "{c:?} {:?} drops {:?}",
                w.counters,
                c.drop_breakdown().collect::<Vec<_>>()
            );
            Ok((c.nat, c.neighbor_replies, detail))
        });
        std::thread::sleep(Duration::from_millis(500));
        let client = Command::new("ip")
            .args(["netns", "exec", &lab.ns("a"), "python3", "-c"])
            .arg("import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(3)\nfor i in range(5):\n  s.sendto(b'hello-%d'%i,('198.19.0.10',53))\n  d,a=s.recvfrom(2048)\n  print(d.decode(),a[0],a[1])\n")
            .output()
            .expect("python3 in pod a");
        stop.store(true, Ordering::Relaxed);
        let counters = worker.join().expect("worker thread");
        let out = String::from_utf8_lossy(&client.stdout).to_string();
        let err = String::from_utf8_lossy(&client.stderr).to_string();
        let (nat, neigh, detail) = counters.expect("worker");
        assert!(
            client.status.success(),
            "client failed: {err}\nworker: {detail}"
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 5, "{out}");
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(
                *l,
                format!("echo:hello-{i} 198.19.0.10 53"),
                "the answer comes from the VIP"
            );
        }
        assert!(nat >= 10, "both ways NATed: {nat}");
        assert!(neigh >= 2, "both pods asked for their gateway: {neigh}");
    });
}
