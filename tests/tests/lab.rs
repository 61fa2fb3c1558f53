//! The veth lab with real kernels on both ends, through the daemon's
//! workers, once over AF_XDP and once over TAP: the same lab code that
//! `sluice lab` runs (control's `lab` and `daemon`), the lab's own servers
//! (python's http.server and a UDP echo) in backend pods, and real clients
//! (curl, python) in a client pod. Root only; each test's lab has its own
//! name, and its namespaces are removed on drop, also when it fails.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use sluice_control::daemon::Io;
use sluice_lab::{namespaces_of, write_manifests};
use sluice_tests::labkit::{assert_ok, check_held, keepalive, Running, FOUR_PODS};

fn lab_file(name: &str) -> String {
    FOUR_PODS
        .replace("NAME", name)
        .replace("EXTRA", "    clusterIPs: [198.19.0.10, 2001:db8:19::a]\n")
        + "      - { name: echo, port: 7, targetPort: 7007, protocol: UDP }\n"
}

const VIP: &str = "198.19.0.10";
const VIP6: &str = "2001:db8:19::a";

fn start(io: Io, cores: Vec<usize>) -> Running {
    sluice_tests::labkit::start(io, cores, lab_file, 1)
}

fn http_get_and_a_10_mb_transfer(io: Io) {
    let mut r = start(io, vec![]);
    let who = r.curl("client", &format!("http://{VIP}/"));
    assert!(
        who.starts_with("web-"),
        "GET through the ClusterIP: {who:?}"
    );
    // The server hashes what it sends (a header), the client what it got.
    let out = r.python(
        "client",
        &format!(
            "import hashlib,urllib.request\n\
             r=urllib.request.urlopen('http://{VIP}/bytes/10485760',timeout=60)\n\
             b=r.read()\n\
             print(len(b),hashlib.sha256(b).hexdigest(),r.headers['X-Content-SHA256'])\n"
        ),
    );
    assert_ok(&out, "the 10 MB download");
    let line = Running::stdout(&out);
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!(f.len(), 3, "{line}");
    assert_eq!(f[0], "10485760", "{line} ({})", r.detail());
    assert_eq!(f[1], f[2], "SHA-256 at the client vs at the server");
}

fn two_hundred_concurrent_connections_over_three_backends(io: Io) {
    let r = start(io, vec![]);
    let out = r.python(
        "client",
        &format!(
            "import collections,concurrent.futures,urllib.request\n\
             def get(_):\n  return urllib.request.urlopen('http://{VIP}/',timeout=30).read().decode().strip()\n\
             with concurrent.futures.ThreadPoolExecutor(200) as ex:\n  c=collections.Counter(ex.map(get,range(200)))\n\
             print(' '.join('%s=%d'%(k,c[k]) for k in sorted(c)))\n"
        ),
    );
    assert_ok(&out, "200 concurrent GETs");
    let line = Running::stdout(&out);
    let counts: BTreeMap<&str, u32> = line
        .split(' ')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k, v.parse().ok()?))
        })
        .collect();
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        ["web-1", "web-2", "web-3"],
        "{line}"
    );
    assert_eq!(counts.values().sum::<u32>(), 200, "{line}");
    let even = 200.0 / 3.0;
    for c in counts.values() {
        assert!(
            (f64::from(*c) - even).abs() <= 0.3 * even,
            "not within 30% of even: {line}"
        );
    }
}

fn udp_request_and_response(io: Io) {
    let r = start(io, vec![]);
    let out = r.python(
        "client",
        &format!(
            "import socket\n\
             for i in range(20):\n  s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(3)\n  \
             s.sendto(b'hello-%d'%i,('{VIP}',7))\n  d,a=s.recvfrom(2048)\n  print(d.decode(),a[0],a[1])\n"
        ),
    );
    assert_ok(&out, "the UDP client");
    let text = Running::stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 20, "{text}");
    for (i, l) in lines.iter().enumerate() {
        let f: Vec<&str> = l.split(' ').collect();
        assert!(f[0].starts_with("web-"), "echoed by a backend: {l}");
        assert_eq!(
            &f[1..],
            [format!("hello-{i}").as_str(), VIP, "7"],
            "the answer comes from the VIP the client dialled"
        );
    }
    // A burst: 100 datagrams at once, so that more than one TX wake-up's
    // worth (32 in copy mode) waits for the client's port in one round;
    // every answer must arrive, the last ones too.
    let out = r.python(
        "client",
        &format!(
            "import socket\n\
             s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(3)\n\
             s.setsockopt(socket.SOL_SOCKET,socket.SO_RCVBUF,1<<20)\n\
             for i in range(100): s.sendto(b'burst-%d'%i,('{VIP}',7))\n\
             got=set()\n\
             try:\n  while len(got)<100:\n    d,a=s.recvfrom(2048);got.add(d.split()[1])\n\
             except socket.timeout: pass\n\
             print(len(got))\n"
        ),
    );
    assert_ok(&out, "the UDP burst");
    assert_eq!(Running::stdout(&out), "100", "answers to a burst of 100");
}

fn pod_to_pod_the_node_and_the_gateway(io: Io) {
    let r = start(io, vec![]);
    let direct = r.curl("client", "http://198.18.1.3:8080/");
    assert_eq!(direct, "web-1", "pod to pod by IP");
    // The exception path, both ways: a pod to a server on the node, and
    // the node to a ClusterIP.
    let node = r.curl("client", "http://198.18.0.1:8080/");
    assert_eq!(node, "node1", "a pod to the node's own server");
    let out = r
        .lab
        .command(&r.lab.netns("node1"), "curl")
        .args(["-s", "--max-time", "10", &format!("http://{VIP}/")])
        .output()
        .expect("curl in the node");
    let from_node = Running::stdout(&out);
    assert!(
        from_node.starts_with("web-"),
        "the node to the ClusterIP: {from_node:?}"
    );
    // The gateway: its MAC came from Sluice's ARP answer, and a TTL that
    // runs out comes back as time-exceeded from it.
    let neigh = Running::stdout(
        &r.lab
            .exec("client", &["ip", "neigh", "show", "169.254.1.1"])
            .expect("ip neigh"),
    );
    assert!(neigh.contains("ee:ee:ee:ee:ee:ee"), "{neigh}");
    let ping = r
        .lab
        .exec(
            "client",
            &["ping", "-c", "1", "-t", "1", "-W", "3", "198.18.1.4"],
        )
        .expect("ping");
    let ping = String::from_utf8_lossy(&ping.stdout).to_string();
    assert!(
        ping.contains("169.254.1.1") && ping.to_lowercase().contains("time to live exceeded"),
        "{ping}"
    );
    // Anti-spoofing: the client takes web-2's address and sends from it.
    // Nothing gets through, to a pod or to the ClusterIP, and the worker
    // counts it; from its own address it still gets through.
    let add = r
        .lab
        .exec(
            "client",
            &["ip", "addr", "add", "198.18.1.4/32", "dev", "eth0"],
        )
        .expect("ip addr add");
    assert_ok(&add, "a second address in the client");
    for url in ["http://198.18.1.3:8080/", &format!("http://{VIP}/")] {
        let out = r
            .lab
            .exec(
                "client",
                &[
                    "curl",
                    "-s",
                    "--max-time",
                    "2",
                    "--interface",
                    "198.18.1.4",
                    url,
                ],
            )
            .expect("curl");
        assert!(
            !out.status.success() && out.stdout.is_empty(),
            "{url} answered a pod sending from web-2's address: {}",
            Running::stdout(&out)
        );
    }
    let spoofed = (0..100)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(20));
            r.daemon
                .observer()
                .workers()
                .iter()
                .map(|w| {
                    w.packets
                        .dropped(sluice_dataplane::DropReason::SourceSpoofed)
                })
                .sum::<u64>()
        })
        .find(|&n| n > 0)
        .unwrap_or(0);
    assert!(spoofed > 0, "the worker counts the spoofed frames");
    let stolen = sluice_dataplane::Addr::from_v4([198, 18, 1, 4]);
    let opened: Vec<_> = r
        .daemon
        .flows(usize::MAX)
        .into_iter()
        .filter(|f| f.original.src == stolen)
        .collect();
    assert!(opened.is_empty(), "a spoofed SYN opened a flow: {opened:?}");
    assert_eq!(r.curl("client", "http://198.18.1.3:8080/"), "web-1");
}

/// The same Service over IPv6 (dual-stack): HTTP from all three backends,
/// UDP answered from the IPv6 VIP, pod to pod and to the node by IPv6, the
/// gateway found by NDP, and hop-limit-exceeded from fe80::1.
fn ipv6_through_the_same_service(io: Io) {
    let r = start(io, vec![]);
    let out = r.python(
        "client",
        &format!(
            "import collections,urllib.request\n\
             c=collections.Counter(urllib.request.urlopen('http://[{VIP6}]/',timeout=10).read().decode().strip() for _ in range(30))\n\
             print(' '.join(sorted(c)))\n\
             import socket\n\
             s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM);s.settimeout(3)\n\
             s.sendto(b'six',('{VIP6}',7))\n\
             d,a=s.recvfrom(2048)\n\
             print(d.decode().split()[1],a[0],a[1])\n"
        ),
    );
    assert_ok(&out, "the IPv6 clients");
    let text = Running::stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        ["web-1 web-2 web-3", &format!("six {VIP6} 7")],
        "{text}"
    );
    assert_eq!(r.curl("client", "http://[2001:db8:18:1::3]:8080/"), "web-1");
    assert_eq!(r.curl("client", "http://[2001:db8:18::1]:8080/"), "node1");
    let neigh = Running::stdout(
        &r.lab
            .exec("client", &["ip", "-6", "neigh", "show", "fe80::1"])
            .expect("ip neigh"),
    );
    assert!(
        neigh.contains("ee:ee:ee:ee:ee:ee"),
        "NDP for fe80::1: {neigh}"
    );
    let ping = r
        .lab
        .exec(
            "client",
            &[
                "ping",
                "-6",
                "-c",
                "1",
                "-t",
                "1",
                "-W",
                "3",
                "2001:db8:18:1::4",
            ],
        )
        .expect("ping");
    let ping = String::from_utf8_lossy(&ping.stdout).to_string();
    assert!(
        ping.contains("fe80::1") && ping.contains("Time exceeded"),
        "{ping}"
    );
}

/// A backend's pod shuts down while traffic runs: the EndpointSlice
/// controller marks it terminating. New connections avoid it; open ones,
/// including those on it, run to their end (KEP-1669). (A backend deleted
/// outright resets its connections: service_semantics.rs.)
fn a_backend_terminating_while_traffic_runs(io: Io, cores: Vec<usize>) {
    let r = start(io, cores);
    // Eight keep-alive connections, each asking every 100 ms for 4 s;
    // they must all run to the end.
    let held = keepalive(&r.lab, VIP, 8, 40, 100);
    std::thread::sleep(Duration::from_millis(1000));
    // The EndpointSlices with web-3 terminating, as the API's controller
    // would write them: through the file source to the workers.
    let plan = r.lab.plan.clone();
    let before = r.daemon.generation();
    write_manifests(&r.manifests, &plan, &["web-3"]).expect("the edit");
    let st = r
        .files
        .wait_for_generation(before, Duration::from_secs(10))
        .expect("the edited manifests reach the workers");
    assert_eq!(r.daemon.generation(), st.generation);
    // New connections while the old ones run: none reaches web-3.
    let out = r.python(
        "client",
        &format!(
            "import urllib.request\n\
             for i in range(60):\n  print(urllib.request.urlopen('http://{VIP}/',timeout=10).read().decode().strip())\n"
        ),
    );
    assert_ok(&out, "new connections after the removal");
    let fresh = Running::stdout(&out);
    assert_eq!(fresh.lines().count(), 60, "{fresh}");
    assert!(
        !fresh.contains("web-3"),
        "a new connection reached the terminating backend: {fresh}"
    );
    assert!(
        fresh.contains("web-1") && fresh.contains("web-2"),
        "{fresh}"
    );
    check_held(held, 8, 40);
}

/// The lab leaves nothing behind, and the workers detach every XDP
/// program when they stop.
fn a_clean_stop_leaves_nothing(io: Io) {
    let mut r = start(io, vec![]);
    assert_eq!(r.curl("client", "http://198.18.1.3:8080/"), "web-1");
    let name = r.lab.plan.name.clone();
    let ends: Vec<String> = r
        .lab
        .plan
        .node()
        .pods
        .iter()
        .map(|p| p.host_end.clone())
        .collect();
    let node = r.lab.plan.node().netns.clone();
    let reports = r.daemon.stop();
    assert_eq!(reports.len(), 1);
    assert!(reports[0].packets.forwarded > 0);
    if io == Io::Afxdp {
        // One UMEM shared by the ports: forwarding moved descriptors and
        // copied nothing (this kernel shares across devices).
        assert!(reports[0].backend.moved > 0, "{:?}", reports[0]);
        assert_eq!(reports[0].backend.copied, 0, "{:?}", reports[0]);
        for e in &ends {
            let out = Command::new("ip")
                .args(["-n", &node, "-d", "link", "show", "dev", e])
                .output()
                .expect("ip link");
            let s = String::from_utf8_lossy(&out.stdout);
            assert!(
                !s.contains("prog/xdp"),
                "an XDP program is left on {e}: {s}"
            );
        }
    }
    drop(r);
    assert_eq!(namespaces_of(&name), Vec::<String>::new());
}

macro_rules! suite {
    ($io:ident, $mod:ident) => {
        mod $mod {
            use super::*;
            #[test]
            fn http_get_and_a_10_mb_transfer_with_its_sha256_checked() {
                if !sluice_control::testing::root_or_skip(
                    "http_get_and_a_10_mb_transfer_with_its_sha256_checked",
                ) {
                    return;
                }
                http_get_and_a_10_mb_transfer(Io::$io);
            }
            #[test]
            fn two_hundred_concurrent_connections_within_30_percent_of_even() {
                if !sluice_control::testing::root_or_skip(
                    "two_hundred_concurrent_connections_within_30_percent_of_even",
                ) {
                    return;
                }
                two_hundred_concurrent_connections_over_three_backends(Io::$io);
            }
            #[test]
            fn udp_request_and_response_from_the_vip() {
                if !sluice_control::testing::root_or_skip("udp_request_and_response_from_the_vip") {
                    return;
                }
                udp_request_and_response(Io::$io);
            }
            #[test]
            fn pod_to_pod_the_node_both_ways_arp_and_ttl() {
                if !sluice_control::testing::root_or_skip(
                    "pod_to_pod_the_node_both_ways_arp_and_ttl",
                ) {
                    return;
                }
                pod_to_pod_the_node_and_the_gateway(Io::$io);
            }
            #[test]
            fn ipv6_through_the_same_service_ndp_and_hop_limit() {
                if !sluice_control::testing::root_or_skip(
                    "ipv6_through_the_same_service_ndp_and_hop_limit",
                ) {
                    return;
                }
                ipv6_through_the_same_service(Io::$io);
            }
            #[test]
            fn a_backend_terminating_while_traffic_runs() {
                if !sluice_control::testing::root_or_skip(
                    "a_backend_terminating_while_traffic_runs",
                ) {
                    return;
                }
                super::a_backend_terminating_while_traffic_runs(Io::$io, vec![]);
            }
            #[test]
            fn a_clean_stop_leaves_no_program_and_no_namespace() {
                if !sluice_control::testing::root_or_skip(
                    "a_clean_stop_leaves_no_program_and_no_namespace",
                ) {
                    return;
                }
                a_clean_stop_leaves_nothing(Io::$io);
            }
        }
    };
}

#[cfg(feature = "afxdp")]
suite!(Afxdp, afxdp);
suite!(Tap, tap);

/// Two workers pinned to the machine's first two cores, each with its own
/// queue of every interface (its own AF_XDP sockets), sharing conntrack.
#[cfg(feature = "afxdp")]
#[test]
fn two_pinned_workers_share_the_lab() {
    if !sluice_control::testing::root_or_skip("two_pinned_workers_share_the_lab") {
        return;
    }
    let cores: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .iter()
        .map(|c| c.id)
        .take(2)
        .collect();
    assert!(!cores.is_empty(), "no cores to pin to");
    a_backend_terminating_while_traffic_runs(Io::Afxdp, cores);
}
