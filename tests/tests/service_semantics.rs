//! What kube-proxy's users rely on inside the cluster, tried as they would
//! try it: real kernels in the pods (python sockets, curl), the daemon's
//! workers over AF_XDP (TAP without the feature), Services and
//! EndpointSlices given as manifests in the directory the daemon watches
//! and edited there while it runs. Root only; each test's lab is its own.

use std::time::Duration;

use sluice_control::daemon::Io;
use sluice_tests::labkit::{self, assert_ok, Running};

const IO: Io = if cfg!(feature = "afxdp") {
    Io::Afxdp
} else {
    Io::Tap
};

/// `web` (three pods, dual-stack) as in the lab suite; `empty`, whose
/// selector matches no pod (its EndpointSlices list no endpoint); and
/// `solo`, whose one endpoint is web-1.
fn lab_file(name: &str) -> String {
    format!(
        "
name: {name}
nodes:
  - name: node1
    index: 1
    pods:
      - {{ name: client, labels: {{ app: client }} }}
      - {{ name: web-1, labels: {{ app: web, solo: one }} }}
      - {{ name: web-2, labels: {{ app: web }} }}
      - {{ name: web-3, labels: {{ app: web }} }}
services:
  - name: web
    clusterIP: 198.19.0.10
    clusterIPs: [198.19.0.10, 2001:db8:19::a]
    selector: {{ app: web }}
    ports:
      - {{ name: http, port: 80, targetPort: 8080, protocol: TCP }}
      - {{ name: echo, port: 7, targetPort: 7007, protocol: UDP }}
  - name: empty
    clusterIP: 198.19.0.11
    clusterIPs: [198.19.0.11, 2001:db8:19::b]
    selector: {{ app: nobody }}
    ports:
      - {{ name: http, port: 80, targetPort: 8080, protocol: TCP }}
      - {{ name: echo, port: 7, targetPort: 7007, protocol: UDP }}
  - name: solo
    clusterIP: 198.19.0.13
    clusterIPs: [198.19.0.13, 2001:db8:19::d]
    selector: {{ solo: one }}
    ports:
      - {{ name: http, port: 80, targetPort: 8080, protocol: TCP }}
      - {{ name: echo, port: 7, targetPort: 7007, protocol: UDP }}
"
    )
}

/// The number of Services in `lab_file`.
const SERVICES: usize = 3;

/// A Service manifest as a user writes one: Service `name` on ClusterIP
/// `vip` (`meta` added to its metadata, `spec` lines to its spec), ports
/// http 80 to 8080/TCP and echo 7 to 7007/UDP, and one IPv4 EndpointSlice
/// of `endpoints` (YAML flow maps without their braces).
fn manifest(name: &str, vip: &str, meta: &str, spec: &str, endpoints: &[String]) -> String {
    let list: String = if endpoints.is_empty() {
        " []".into()
    } else {
        endpoints
            .iter()
            .map(|e| format!("\n  - {{ {e} }}"))
            .collect()
    };
    format!(
        "apiVersion: v1
kind: Service
metadata: {{ name: {name}, namespace: default{meta} }}
spec:
  type: ClusterIP
  clusterIP: {vip}
{spec}  ports: [{{ name: http, port: 80, targetPort: 8080, protocol: TCP }}, {{ name: echo, port: 7, targetPort: 7007, protocol: UDP }}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{ name: {name}-ipv4, namespace: default, labels: {{ kubernetes.io/service-name: {name} }} }}
addressType: IPv4
ports: [{{ name: http, port: 8080, protocol: TCP }}, {{ name: echo, port: 7007, protocol: UDP }}]
endpoints:{list}
"
    )
}

/// An endpoint at `addr` with these conditions.
fn at(addr: &str, conditions: &str) -> String {
    format!("addresses: [{addr}], conditions: {{ {conditions} }}")
}

/// Service `unready` (198.19.0.12) with one endpoint, `addr`, ready or
/// not, as the EndpointSlice controller writes a pod whose readiness
/// probe fails (ready and serving false).
fn unready_manifest(addr: &str, ready: bool) -> String {
    let c = format!("ready: {ready}, serving: {ready}");
    manifest("unready", "198.19.0.12", "", "", &[at(addr, &c)])
}

/// Writes `text` as manifest `file` and waits for the workers to have it.
fn edit(r: &Running, file: &str, text: &str) {
    let before = r.daemon.generation();
    std::fs::write(r.manifests.join(file), text).expect("write a manifest");
    r.files
        .wait_for_generation(before, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{file} did not reach the workers: {:?}", r.files.status()));
}

/// Tries each (protocol, address, port) five times in a row from the
/// client pod: a TCP connect, or a datagram on a connected UDP socket and
/// a wait for its answer. Prints one line an attempt: what happened and
/// how long it took.
const PROBE: &str = "
import socket,sys,time
def tcp(host,port,fam):
  s=socket.socket(fam,socket.SOCK_STREAM);s.settimeout(5)
  try: s.connect((host,port)); return 'connected'
  except ConnectionRefusedError: return 'refused'
  except socket.timeout: return 'timeout'
  finally: s.close()
def udp(host,port,fam):
  s=socket.socket(fam,socket.SOCK_DGRAM);s.settimeout(5);s.connect((host,port))
  try: s.send(b'x'); s.recv(100); return 'answered'
  except ConnectionRefusedError: return 'refused'
  except socket.timeout: return 'timeout'
  finally: s.close()
for case in sys.argv[1:]:
  kind,host,port=case.split(',')
  fam=socket.AF_INET6 if ':' in host else socket.AF_INET
  for i in range(5):
    t=time.monotonic()
    r=(tcp if kind=='tcp' else udp)(host,int(port),fam)
    print(kind,host,port,r,'%.3f'%(time.monotonic()-t),flush=True)
  time.sleep(0.3)
";

/// Runs `PROBE` over `cases` ("tcp,198.19.0.11,80"); its lines.
fn probe(r: &Running, cases: &[&str]) -> Vec<String> {
    let mut args = vec!["python3", "-c", PROBE];
    args.extend_from_slice(cases);
    let out = r.lab.exec("client", &args).expect("python3 in the client");
    assert_ok(&out, "the probe");
    Running::stdout(&out).lines().map(str::to_string).collect()
}

/// A packet counter summed over the workers.
fn counted(r: &Running, what: impl Fn(&sluice_dataplane::counters::Counters) -> u64) -> u64 {
    r.daemon
        .observer()
        .workers()
        .iter()
        .map(|w| what(&w.packets))
        .sum()
}

fn rejected(r: &Running) -> u64 {
    counted(r, |c| c.rejected)
}

/// A Service port without a usable endpoint is refused at once, never
/// left to time out: a Service with no endpoints, one whose only endpoint
/// is not ready, and a port the Service does not have, over TCP and UDP,
/// IPv4 and IPv6. The refusals are counted; the Service starts serving as
/// soon as its endpoint turns ready.
fn no_endpoints_means_connection_refused_at_once(io: Io) {
    let r = labkit::start(io, vec![], lab_file, SERVICES);
    let web2 = r.lab.plan.pod("web-2").expect("web-2").ip.to_string();
    edit(&r, "unready.yaml", &unready_manifest(&web2, false));
    let cases = [
        "tcp,198.19.0.11,80",
        "udp,198.19.0.11,7",
        "tcp,2001:db8:19::b,80",
        "udp,2001:db8:19::b,7",
        "tcp,198.19.0.10,81",
        "udp,198.19.0.10,8",
        "tcp,198.19.0.12,80",
        "udp,198.19.0.12,7",
    ];
    let before = rejected(&r);
    let lines = probe(&r, &cases);
    assert_eq!(lines.len(), cases.len() * 5, "{lines:#?}");
    for l in &lines {
        let f: Vec<&str> = l.split(' ').collect();
        assert_eq!(f[3], "refused", "{l}");
        let secs: f64 = f[4].parse().expect("a duration");
        assert!(secs < 0.5, "refused, but only after {secs} s: {l}");
    }
    // Every attempt was one packet refused by one answer, handed to a
    // ring (the worker publishes its counters every 10 ms).
    let want = before + lines.len() as u64;
    let mut got = 0;
    for _ in 0..100 {
        got = rejected(&r);
        if got >= want {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(got, want, "rejects counted");
    let vips = ["198.19.0.11", "198.19.0.12", "2001:db8:19::b"];
    let opened: Vec<_> = r
        .daemon
        .flows(usize::MAX)
        .into_iter()
        .filter(|f| vips.contains(&f.original.dst.to_string().as_str()))
        .collect();
    assert!(
        opened.is_empty(),
        "a refused packet opened a flow: {opened:?}"
    );
    // The endpoint turns ready: the same Service now serves.
    edit(&r, "unready.yaml", &unready_manifest(&web2, true));
    assert_eq!(r.curl("client", "http://198.19.0.12/"), "web-2");
    let lines = probe(&r, &["udp,198.19.0.12,7"]);
    assert!(lines.iter().all(|l| l.contains(" answered ")), "{lines:#?}");
}

/// A client retrying against an empty Service gets its refusals in a row,
/// then no more than its rate: a flood from one pod is not answered in
/// full.
fn refusals_are_rate_limited_per_source(io: Io) {
    use sluice_dataplane::reject::PER_SOURCE_BURST;
    let r = labkit::start(io, vec![], lab_file, SERVICES);
    // 200 datagrams at once from one socket, as fast as python sends.
    let out = r.python(
        "client",
        "import socket,time\n\
         s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         t=time.monotonic()\n\
         for i in range(200): s.sendto(b'x',('198.19.0.11',7))\n\
         print('%.3f'%(time.monotonic()-t))\n",
    );
    assert_ok(&out, "the flood");
    let took: f64 = Running::stdout(&out).parse().expect("a duration");
    std::thread::sleep(Duration::from_millis(200));
    let answered = rejected(&r);
    let limited: u64 = counted(&r, |c| {
        c.dropped(sluice_dataplane::DropReason::RejectRateLimited)
    });
    // The burst, and at most one more every 20 ms the flood lasted.
    let most = u64::from(PER_SOURCE_BURST) + (took * 50.0).ceil() as u64 + 1;
    assert!(
        answered >= u64::from(PER_SOURCE_BURST) && answered <= most,
        "{answered} answered in {took} s (at most {most})"
    );
    assert_eq!(answered + limited, 200, "every datagram counted once");
}

/// A pod reaches itself through its own Service, as the only endpoint and
/// as one of three, over TCP and UDP, IPv4 and IPv6: the hairpin flow
/// reaches the pod from the gateway's address (IPv4) or the node's (IPv6),
/// masqueraded so that the answer comes back to be translated, and the
/// answer from the ClusterIP;
/// every other flow keeps its client's address.
fn a_pod_reaches_itself_through_its_service(io: Io) {
    let r = labkit::start(io, vec![], lab_file, SERVICES);
    let web1 = r.lab.plan.pod("web-1").expect("web-1").ip.to_string();
    let client = r.lab.plan.pod("client").expect("client").ip.to_string();
    let get = |pod: &str, url: &str, n: usize| r.gets(pod, url, n);
    // The only endpoint: every connection is a hairpin.
    for (url, gw) in [
        ("http://198.19.0.13/peer", "169.254.1.1"),
        // IPv6 masquerades to the node's address (a pod would answer
        // fe80::1 from its link-local address, which no flow knows).
        ("http://[2001:db8:19::d]/peer", "2001:db8:18::1"),
    ] {
        let lines = get("web-1", url, 10);
        assert_eq!(lines, vec![format!("web-1 {gw}"); 10], "{url}");
    }
    // One endpoint of three: a third of the connections come back to the
    // pod, from the gateway; the others reach web-2 and web-3 from the
    // pod's own address.
    let lines = get("web-1", "http://198.19.0.10/peer", 30);
    assert_eq!(lines.len(), 30);
    let mut selves = 0;
    for l in &lines {
        match l.split_once(' ') {
            Some(("web-1", peer)) => {
                assert_eq!(peer, "169.254.1.1", "{l}");
                selves += 1;
            }
            Some((_, peer)) => assert_eq!(peer, web1, "an ordinary flow keeps its source: {l}"),
            None => panic!("{l}"),
        }
    }
    assert!(selves > 0 && selves < 30, "{lines:#?}");
    // Another pod's connections are not masqueraded.
    for l in get("client", "http://198.19.0.10/peer", 10) {
        assert!(l.ends_with(&format!(" {client}")), "{l}");
    }
    // UDP, both families: the answer comes from the ClusterIP.
    let out = r.python(
        "web-1",
        "import socket\n\
         for fam,vip in ((socket.AF_INET,'198.19.0.13'),(socket.AF_INET6,'2001:db8:19::d')):\n  \
         s=socket.socket(fam,socket.SOCK_DGRAM);s.settimeout(3)\n  \
         for i in range(5):\n    s.sendto(b'me-%d'%i,(vip,7));d,a=s.recvfrom(2048);print(d.decode(),a[0],a[1])\n",
    );
    assert_ok(&out, "UDP to itself");
    let text = Running::stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 10, "{text}");
    for (i, l) in lines.iter().enumerate() {
        let vip = if i < 5 {
            "198.19.0.13"
        } else {
            "2001:db8:19::d"
        };
        assert_eq!(*l, format!("web-1 me-{} {vip} 7", i % 5), "{text}");
    }
}

/// Service `other` (198.19.0.14, web-2), labelled for another proxy or
/// not.
fn other_proxy_manifest(web2: &str, labelled: bool) -> String {
    let meta = if labelled {
        ", labels: { service.kubernetes.io/service-proxy-name: other-proxy }"
    } else {
        ""
    };
    manifest("other", "198.19.0.14", meta, "", &[at(web2, "ready: true")])
}

/// Polls `cond` for up to 10 s.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("not within 10 s: {what}");
}

/// A Service labelled service.kubernetes.io/service-proxy-name belongs to
/// another proxy: its ClusterIP gets no frontend here, and the status
/// says so; once the label is removed the Service is programmed and
/// serves, and when it is put back the Service leaves the tables again.
fn a_service_of_another_proxy_is_not_programmed(io: Io) {
    let r = labkit::start(io, vec![], lab_file, SERVICES);
    let web2 = r.lab.plan.pod("web-2").expect("web-2").ip.to_string();
    let manifest = r.manifests.join("other.yaml");
    std::fs::write(&manifest, other_proxy_manifest(&web2, true)).expect("write");
    wait_until("the labelled Service listed as left alone", || {
        r.files
            .status()
            .skipped
            .iter()
            .any(|s| s.starts_with("default/other: labelled"))
    });
    let st = r.files.status();
    assert!(
        !st.programmed.iter().any(|s| s == "default/other"),
        "{st:?}"
    );
    assert!(st.programmed.iter().any(|s| s == "default/web"), "{st:?}");
    let out = r.curl_within("client", "http://198.19.0.14/", 2);
    assert!(!out.status.success(), "another proxy's Service answered");
    let vip = sluice_dataplane::Addr::from_v4([198, 19, 0, 14]);
    assert!(
        r.daemon
            .flows(usize::MAX)
            .iter()
            .all(|f| f.original.dst != vip),
        "a flow to another proxy's Service was translated"
    );
    edit(&r, "other.yaml", &other_proxy_manifest(&web2, false));
    let st = r.files.status();
    assert!(st.programmed.iter().any(|s| s == "default/other"), "{st:?}");
    assert!(st.skipped.is_empty(), "{st:?}");
    assert_eq!(r.curl("client", "http://198.19.0.14/"), "web-2");
    edit(&r, "other.yaml", &other_proxy_manifest(&web2, true));
    assert!(!r
        .files
        .status()
        .programmed
        .iter()
        .any(|s| s == "default/other"));
}

/// Service `pair` (198.19.0.15) with these endpoints, each with its
/// conditions ("ready: true", or a terminating pod's "ready: false,
/// serving: true, terminating: true").
fn pair_manifest(endpoints: &[(&str, &str)]) -> String {
    let list: Vec<String> = endpoints.iter().map(|(a, c)| at(a, c)).collect();
    manifest("pair", "198.19.0.15", "", "", &list)
}

const READY: &str = "ready: true";
const TERMINATING: &str = "ready: false, serving: true, terminating: true";

/// Seconds since the Unix epoch, as python's time.time() in the pods.
fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// The backend (address) conntrack sends the client's flow to
/// 198.19.0.15:`port` to.
fn backend_of(r: &Running, client: &str, port: u16) -> String {
    let client: sluice_dataplane::Addr = client.parse::<std::net::IpAddr>().expect("ip").into();
    let vip = sluice_dataplane::Addr::from_v4([198, 19, 0, 15]);
    let flows = r.daemon.flows(usize::MAX);
    let f = flows
        .iter()
        .find(|f| f.original.src == client && f.original.dst == vip && f.original.dport == port)
        .unwrap_or_else(|| panic!("no flow to the pair's port {port}: {flows:?}"));
    f.translated.dst.to_string()
}

/// A UDP client on a fixed source port, sending every 100 ms, keeps
/// reaching the ClusterIP when its backend leaves: within a second of the
/// EndpointSlice change its datagrams reach the other endpoint, and every
/// answer comes from the ClusterIP.
fn a_udp_client_moves_when_its_backend_leaves(io: Io) {
    let r = labkit::start(io, vec![], lab_file, SERVICES);
    let ip = |p: &str| r.lab.plan.pod(p).expect("pod").ip.to_string();
    let (web2, web3) = (ip("web-2"), ip("web-3"));
    edit(
        &r,
        "pair.yaml",
        &pair_manifest(&[(&web2, READY), (&web3, READY)]),
    );
    let client = r
        .lab
        .command(&r.lab.netns("client"), "python3")
        .args([
            "-c",
            "import socket,time\n\
             s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(('',40500));s.settimeout(0.5)\n\
             end=time.time()+4\n\
             while time.time()<end:\n  t=time.time();s.sendto(b'x',('198.19.0.15',7))\n  \
             try:\n    d,a=s.recvfrom(2048);print('%.3f'%t,d.split()[0].decode(),a[0],a[1],flush=True)\n  \
             except socket.timeout: print('%.3f'%t,'timeout',flush=True)\n  time.sleep(0.1)\n",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the UDP client");
    std::thread::sleep(Duration::from_millis(1200));
    let was = backend_of(&r, &ip("client"), 7);
    let stays = if was == web2 { &web3 } else { &web2 };
    edit(&r, "pair.yaml", &pair_manifest(&[(stays.as_str(), READY)]));
    let changed = now();
    let out = client.wait_with_output().expect("the UDP client");
    assert_ok(&out, "the UDP client");
    let text = Running::stdout(&out);
    let name_of = |a: &str| if a == web2 { "web-2" } else { "web-3" };
    let mut moved_at = None;
    for l in text.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        let t: f64 = f[0].parse().expect("a time");
        if f[1] == "timeout" {
            panic!("a datagram went unanswered:\n{text}");
        }
        assert_eq!(
            &f[2..],
            ["198.19.0.15", "7"],
            "answered from the ClusterIP:\n{text}"
        );
        if t > changed && f[1] == name_of(stays) && moved_at.is_none() {
            moved_at = Some(t);
        }
        if t > changed + 1.0 {
            assert_eq!(
                f[1],
                name_of(stays),
                "still reaching {was} a second later:\n{text}"
            );
        }
    }
    let moved_at = moved_at.unwrap_or_else(|| panic!("never moved:\n{text}"));
    assert!(
        moved_at - changed < 1.0,
        "moved {} s after the change",
        moved_at - changed
    );
}

/// Counts, in pod `pod`'s namespace, the TCP packets from `from` that its
/// interface receives during `secs` seconds; prints each one's time.
const SNIFF: &str = "
import socket,struct,sys,time
src=socket.inet_aton(sys.argv[1]);secs=float(sys.argv[2])
s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW,socket.htons(0x0800));s.bind(('eth0',0));s.settimeout(0.1)
print('ready',flush=True)
end=time.time()+secs
while time.time()<end:
  try: f,a=s.recvfrom(65535)
  except socket.timeout: continue
  if a[2]==socket.PACKET_OUTGOING: continue
  ip=f[14:]
  if ip[9]==6 and ip[12:16]==src: print('%.3f'%time.time(),flush=True)
";

/// A connection whose endpoint is deleted outright is reset within a
/// second, and the endpoint's address, where a new pod may live by now,
/// sees none of its packets. A connection to an endpoint that is only
/// terminating carries on to its end (KEP-1669).
fn connections_to_deleted_and_terminating_endpoints(io: Io) {
    use std::io::{BufRead, BufReader};
    let r = labkit::start(io, vec![], lab_file, SERVICES);
    let ip = |p: &str| r.lab.plan.pod(p).expect("pod").ip.to_string();
    let (web2, web3, client_ip) = (ip("web-2"), ip("web-3"), ip("client"));
    edit(
        &r,
        "pair.yaml",
        &pair_manifest(&[(&web2, READY), (&web3, READY)]),
    );
    // A keep-alive connection asking every 100 ms, for 3 s.
    let keepalive = |secs: u32| {
        r.lab
            .command(&r.lab.netns("client"), "python3")
            .args([
                "-c",
                &format!(
                    "import http.client,time\n\
                     c=http.client.HTTPConnection('198.19.0.15',80,timeout=5)\n\
                     end=time.time()+{secs}\n\
                     while time.time()<end:\n  t=time.time()\n  \
                     try:\n    c.request('GET','/');print('%.3f'%t,c.getresponse().read().decode().strip(),flush=True)\n  \
                     except Exception as e:\n    print('%.3f'%time.time(),type(e).__name__,flush=True);break\n  \
                     time.sleep(0.1)\n"
                ),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the keep-alive client")
    };
    // Terminating: the connection carries on, on its backend.
    let held = keepalive(3);
    std::thread::sleep(Duration::from_millis(800));
    let first = backend_of(&r, &client_ip, 80);
    let other = if first == web2 { &web3 } else { &web2 };
    edit(
        &r,
        "pair.yaml",
        &pair_manifest(&[(first.as_str(), TERMINATING), (other.as_str(), READY)]),
    );
    let out = held.wait_with_output().expect("the keep-alive client");
    let text = Running::stdout(&out);
    let names: Vec<&str> = text
        .lines()
        .map(|l| l.split(' ').nth(1).unwrap_or(""))
        .collect();
    assert!(names.len() >= 20, "{text}");
    assert!(
        names
            .iter()
            .all(|n| *n == names[0] && n.starts_with("web-")),
        "a connection to a terminating endpoint broke or moved:\n{text}"
    );
    // Deleted outright: reset, and nothing reaches its address.
    edit(
        &r,
        "pair.yaml",
        &pair_manifest(&[(&web2, READY), (&web3, READY)]),
    );
    // Its backend, from its first answer (the last connection's flow may
    // still be in conntrack, closing).
    let mut doomed = keepalive(4);
    let mut answers = BufReader::new(doomed.stdout.take().expect("stdout")).lines();
    let first_answer = answers.next().and_then(Result::ok).unwrap_or_default();
    let gone_pod = first_answer
        .split(' ')
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let gone = match gone_pod.as_str() {
        "web-2" => web2.clone(),
        "web-3" => web3.clone(),
        _ => panic!("the first answer: {first_answer:?}"),
    };
    let stays = if gone == web2 { &web3 } else { &web2 };
    let gone_pod = gone_pod.as_str();
    let mut sniffer = r
        .lab
        .command(&r.lab.netns(gone_pod), "python3")
        .args(["-c", SNIFF, &client_ip, "2.5"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the sniffer");
    let mut lines = BufReader::new(sniffer.stdout.take().expect("stdout")).lines();
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("ready"));
    edit(&r, "pair.yaml", &pair_manifest(&[(stays.as_str(), READY)]));
    let changed = now();
    let text = answers.map_while(Result::ok).collect::<Vec<_>>().join("\n");
    let _ = doomed.wait();
    let last = text.lines().last().unwrap_or_default().to_string();
    let f: Vec<&str> = last.split(' ').collect();
    assert_eq!(f.get(1).copied(), Some("ConnectionResetError"), "{text}");
    let t: f64 = f[0].parse().expect("a time");
    assert!(
        t - changed < 1.0,
        "reset {} s after the change:\n{text}",
        t - changed
    );
    let seen: Vec<f64> = lines
        .map_while(Result::ok)
        .filter_map(|l| l.parse().ok())
        .filter(|t| *t > changed + 0.05)
        .collect();
    let _ = sniffer.wait();
    assert!(
        seen.is_empty(),
        "{gone} got {} packets of the old connection after its deletion",
        seen.len()
    );
    let resets: u64 = counted(&r, |c| c.resets);
    assert!(resets >= 1, "the reset was not counted");
}

/// Service `sticky` (198.19.0.16, these pods) with ClientIP affinity of
/// `timeout` seconds, or none.
fn sticky_manifest(pods: &[String], timeout: Option<u32>) -> String {
    let affinity = match timeout {
        Some(t) => format!(
            "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {{ clientIP: {{ timeoutSeconds: {t} }} }}\n"
        ),
        None => "  sessionAffinity: None\n".to_string(),
    };
    let list: Vec<String> = pods.iter().map(|a| at(a, "ready: true")).collect();
    manifest("sticky", "198.19.0.16", "", &affinity, &list)
}

/// sessionAffinity: ClientIP from a real client: every connection to one
/// backend; switched to None while the client keeps connecting, they
/// spread; back to ClientIP, they stick again; the sticky pod removed,
/// the client moves to another and sticks there.
fn client_ip_affinity(io: Io) {
    let r = labkit::start(io, vec![], lab_file, SERVICES);
    let pods: Vec<String> = ["web-1", "web-2", "web-3"]
        .iter()
        .map(|p| r.lab.plan.pod(p).expect("pod").ip.to_string())
        .collect();
    let hits = |n: usize| r.gets("client", "http://198.19.0.16/", n);
    let distinct = |v: &[String]| v.iter().collect::<std::collections::BTreeSet<_>>().len();
    edit(&r, "sticky.yaml", &sticky_manifest(&pods, Some(60)));
    let first = hits(20);
    assert_eq!(distinct(&first), 1, "{first:?}");
    edit(&r, "sticky.yaml", &sticky_manifest(&pods, None));
    let spread = hits(30);
    assert!(distinct(&spread) > 1, "None still sticks: {spread:?}");
    edit(&r, "sticky.yaml", &sticky_manifest(&pods, Some(60)));
    let again = hits(20);
    assert_eq!(distinct(&again), 1, "{again:?}");
    let gone = &again[0];
    let rest: Vec<String> = ["web-1", "web-2", "web-3"]
        .iter()
        .zip(&pods)
        .filter(|(name, _)| *name != gone)
        .map(|(_, a)| a.clone())
        .collect();
    edit(&r, "sticky.yaml", &sticky_manifest(&rest, Some(60)));
    let moved = hits(20);
    assert_eq!(distinct(&moved), 1, "{moved:?}");
    assert_ne!(&moved[0], gone);
}

/// Raw TCP SYNs from this pod's address (argv 1) to 198.19.0.15:80 for
/// argv 2 seconds, source ports cycling through 50,000, as fast as python
/// sends; prints how many. The backends answer each with a SYN-ACK, which
/// this pod's kernel resets: what a SYN flood leaves in conntrack.
const FLOOD: &str = "
import socket,struct,sys,time
S=socket.inet_aton(sys.argv[1]);D=socket.inet_aton('198.19.0.15');secs=float(sys.argv[2])
s=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_RAW)
def csum(b):
  t=sum(struct.unpack('!%dH'%(len(b)//2),b));t=(t>>16)+(t&0xffff);t+=t>>16;return ~t&0xffff
end=time.time()+secs;n=0
while time.time()<end:
  for k in range(200):
    port=10000+n%50000
    tcp=struct.pack('!HHIIBBHHH',port,80,n,0,5<<4,2,64240,0,0)
    c=csum(S+D+struct.pack('!BBH',0,6,20)+tcp)
    tcp=tcp[:16]+struct.pack('!H',c)+tcp[18:]
    ip=struct.pack('!BBHHHBBH4s4s',0x45,0,40,0,0,64,6,0,S,D)
    s.sendto(ip+tcp,('198.19.0.15',0));n+=1
print(n)
";

/// A SYN flood from one pod fills the conntrack table (4,096 flows here)
/// with handshakes it resets; a real client in another pod still
/// connects to the same Service, every time but at most one in a hundred,
/// because a full table evicts what is not assured; the flood's entries
/// are counted as evicted.
fn a_syn_flood_does_not_keep_a_client_out(io: Io) {
    let r = labkit::start_sized(io, vec![], lab_file, SERVICES, 4096);
    let ip = |p: &str| r.lab.plan.pod(p).expect("pod").ip.to_string();
    edit(
        &r,
        "pair.yaml",
        &pair_manifest(&[(&ip("web-2"), READY), (&ip("web-3"), READY)]),
    );
    let flooder = r
        .lab
        .command(&r.lab.netns("web-1"), "python3")
        .args(["-c", FLOOD, &ip("web-1"), "6"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the flood");
    // Until the table is full.
    wait_until("the flood fills the table", || {
        let (entries, capacity, _, _) = r.daemon.observer().conntrack();
        entries + 256 >= capacity
    });
    let out = r.python(
        "client",
        "import urllib.request\n\
         ok=0\n\
         for i in range(100):\n  \
         try: urllib.request.urlopen('http://198.19.0.15/',timeout=3).read();ok+=1\n  \
         except Exception as e: print(type(e).__name__)\n\
         print(ok)\n",
    );
    assert_ok(&out, "the client during the flood");
    let text = Running::stdout(&out);
    let ok: u32 = text.lines().last().unwrap_or("0").parse().unwrap_or(0);
    let flood = flooder.wait_with_output().expect("the flood");
    assert_ok(&flood, "the flood");
    let (_, _, evicted, _) = r.daemon.observer().conntrack();
    assert!(
        ok >= 99,
        "{ok} of 100 connections during the flood:\n{text}"
    );
    assert!(
        evicted > 0,
        "the flood's entries were not evicted (sent {})",
        Running::stdout(&flood)
    );
    eprintln!(
        "flood: {} SYNs sent, {evicted} evicted, {ok} of 100 client connections",
        Running::stdout(&flood)
    );
}

/// Service `near` (198.19.0.17) with `spec` lines added, and these
/// endpoints (YAML flow maps without their braces).
fn near_manifest(spec: &str, endpoints: &[String]) -> String {
    manifest("near", "198.19.0.17", "", spec, endpoints)
}

/// internalTrafficPolicy: Local keeps a real client's connections on this
/// node's endpoints (the slices say web-3 is on node2), and with none
/// here they are dropped, not refused (curl times out); topology hints
/// keep them in this node's zone (its Node object's label), and a
/// missing hint brings every endpoint back.
fn traffic_policy_and_topology(io: Io) {
    let r = labkit::start(io, vec![], lab_file, SERVICES);
    let ip = |p: &str| r.lab.plan.pod(p).expect("pod").ip.to_string();
    let hits = |n: usize| -> std::collections::BTreeSet<String> {
        r.gets("client", "http://198.19.0.17/", n)
            .into_iter()
            .collect()
    };
    let ep = |pod: &str, extra: &str| format!("addresses: [{}], nodeName: {extra}", ip(pod));
    let local = "  internalTrafficPolicy: Local\n";
    edit(
        &r,
        "near.yaml",
        &near_manifest(local, &[ep("web-2", "node1"), ep("web-3", "node2")]),
    );
    assert_eq!(hits(20), ["web-2".to_string()].into());
    edit(
        &r,
        "near.yaml",
        &near_manifest(local, &[ep("web-3", "node2")]),
    );
    let out = r.curl_within("client", "http://198.19.0.17/", 2);
    assert_eq!(
        out.status.code(),
        Some(28),
        "no local endpoint: dropped (a timeout), not refused (exit 7)"
    );
    let dropped: u64 = counted(&r, |c| {
        c.dropped(sluice_dataplane::DropReason::ServiceNoLocalEndpoints)
    });
    assert!(dropped > 0);
    // Zones: this node is in zone-a; web-1 is hinted for it.
    std::fs::write(
        r.manifests.join("node.yaml"),
        "apiVersion: v1\nkind: Node\nmetadata: { name: node1, labels: { topology.kubernetes.io/zone: zone-a } }\n",
    )
    .expect("the Node");
    let hinted = |pod: &str, zone: &str| {
        format!(
            "{}, hints: {{ forZones: [{{ name: {zone} }}] }}",
            ep(pod, "node1")
        )
    };
    let close = "  trafficDistribution: PreferClose\n";
    // web-3's hint for zone-b, or none.
    let zoned = |web3: String| {
        let eps = [hinted("web-1", "zone-a"), hinted("web-2", "zone-b"), web3];
        edit(&r, "near.yaml", &near_manifest(close, &eps));
    };
    zoned(hinted("web-3", "zone-b"));
    assert_eq!(hits(20), ["web-1".to_string()].into());
    zoned(ep("web-3", "node1"));
    assert_eq!(
        hits(40).len(),
        3,
        "a ready endpoint without hints: all of them"
    );
}

/// A backend's ICMP error about a translated flow reaches the client's
/// socket: UDP to a ClusterIP whose backend has nothing listening on the
/// target port fails at once with ECONNREFUSED, over IPv4 and IPv6, since
/// the backend kernel's port-unreachable comes back from the ClusterIP
/// quoting what the client sent (untranslated, the client's kernel would
/// match it to no socket, and the client would wait for its timeout).
fn icmp_errors_reach_the_clients_socket(io: Io) {
    let r = labkit::start(io, vec![], lab_file, SERVICES);
    let web2 = r.lab.plan.pod("web-2").expect("web-2");
    let text = format!(
        "apiVersion: v1
kind: Service
metadata: {{ name: closed, namespace: default }}
spec:
  type: ClusterIP
  clusterIP: 198.19.0.18
  clusterIPs: [198.19.0.18, 2001:db8:19::12]
  ports: [{{ name: dns, port: 53, targetPort: 9999, protocol: UDP }}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{ name: closed-ipv4, namespace: default, labels: {{ kubernetes.io/service-name: closed }} }}
addressType: IPv4
ports: [{{ name: dns, port: 9999, protocol: UDP }}]
endpoints: [{{ addresses: [{}] }}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{ name: closed-ipv6, namespace: default, labels: {{ kubernetes.io/service-name: closed }} }}
addressType: IPv6
ports: [{{ name: dns, port: 9999, protocol: UDP }}]
endpoints: [{{ addresses: [\"{}\"] }}]
",
        web2.ip, web2.ip6
    );
    edit(&r, "closed.yaml", &text);
    let lines = probe(&r, &["udp,198.19.0.18,53", "udp,2001:db8:19::12,53"]);
    assert_eq!(lines.len(), 10, "{lines:#?}");
    for l in &lines {
        let f: Vec<&str> = l.split(' ').collect();
        assert_eq!(f[3], "refused", "{l}");
        let secs: f64 = f[4].parse().expect("a duration");
        assert!(secs < 0.5, "{l}");
    }
    assert!(counted(&r, |c| c.icmp_translated) >= 10);
    assert_eq!(
        counted(&r, |c| c.rejected),
        0,
        "the backend's refusals, not ours"
    );
    // traceroute -T's way to a ClusterIP: a SYN with TTL 1 gets the
    // gateway's time-exceeded, quoting the ClusterIP so that the kernel
    // gives it to the socket (its error queue names the hop); with TTL 2
    // the connection is made.
    let out = r.python("client", TRACE_TCP);
    assert_ok(&out, "the TCP trace");
    assert_eq!(
        Running::stdout(&out).lines().collect::<Vec<_>>(),
        ["1 icmp 11 169.254.1.1", "2 connected"],
    );
}

/// Connects to 198.19.0.10:80 with TTL 1, then 2, as `traceroute -T`
/// does, reading ICMP errors from the socket's error queue
/// (IP_RECVERR); prints each hop: the ICMP type and who sent it, or that
/// the connection was made.
const TRACE_TCP: &str = "
import socket,struct,time
IP_RECVERR=11
def hop(ttl):
  s=socket.socket(socket.AF_INET,socket.SOCK_STREAM)
  s.setsockopt(socket.IPPROTO_IP,IP_RECVERR,1)
  s.setsockopt(socket.IPPROTO_IP,socket.IP_TTL,ttl)
  s.setblocking(False)
  s.connect_ex(('198.19.0.10',80))
  end=time.time()+3
  while time.time()<end:
    try:
      _,anc,_,_=s.recvmsg(512,512,socket.MSG_ERRQUEUE)
      for lvl,typ,d in anc:
        if lvl==socket.IPPROTO_IP and typ==IP_RECVERR:
          return 'icmp %d %s'%(d[5],socket.inet_ntoa(d[20:24]))
    except BlockingIOError: pass
    try:
      s.getpeername();return 'connected'
    except OSError: pass
    time.sleep(0.01)
  return 'timeout'
for ttl in (1,2): print(ttl,hop(ttl),flush=True)
";

/// A 2,000-byte UDP request through the ClusterIP and its 2,000-byte
/// answer, both fragmented by the kernels (MTU 1500), over IPv4 and IPv6:
/// every fragment of the request reaches the backend translated, and
/// every fragment of the answer the client, from the ClusterIP.
fn fragmented_udp_both_ways(io: Io) {
    let r = labkit::start(io, vec![], lab_file, SERVICES);
    let out = r.python(
        "client",
        "import socket\n\
         for fam,vip in ((socket.AF_INET,'198.19.0.10'),(socket.AF_INET6,'2001:db8:19::a')):\n  \
         s=socket.socket(fam,socket.SOCK_DGRAM);s.settimeout(3)\n  \
         for i in range(10):\n    \
         body=bytes([65+i])*2000\n    \
         s.sendto(body,(vip,7));d,a=s.recvfrom(65535)\n    \
         print(len(d),d.endswith(body),a[0],a[1])\n",
    );
    assert_ok(&out, "2,000-byte datagrams");
    let text = Running::stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 20, "{text}");
    for (i, l) in lines.iter().enumerate() {
        let f: Vec<&str> = l.split(' ').collect();
        let vip = if i < 10 {
            "198.19.0.10"
        } else {
            "2001:db8:19::a"
        };
        assert_eq!(f[1..], ["True", vip, "7"], "{text}");
        let len: usize = f[0].parse().expect("a length");
        assert!(
            len > 2000,
            "the echo names its pod before the 2,000 bytes: {l}"
        );
    }
}

/// Sends a 2,000-byte UDP datagram from this pod (argv 1) to the
/// ClusterIP's echo port in two IPv4 fragments, the later one first, by a
/// raw socket, ten times; prints what the echo answered each time on the
/// datagram's own port.
const REORDERED: &str = "
import socket,struct,time
S=socket.inet_aton(__import__('sys').argv[1]);D=socket.inet_aton('198.19.0.10')
raw=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_RAW)
rx=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);rx.bind(('',45000));rx.settimeout(3)
for i in range(10):
  body=bytes([97+i])*2000
  udp=struct.pack('!HHHH',45000,7,8+len(body),0)+body
  def ip(off,mf,part):
    return struct.pack('!BBHHHBBH4s4s',0x45,0,20+len(part),0x3000+i,(mf<<13)|(off//8),64,17,0,S,D)+part
  raw.sendto(ip(1424,0,udp[1424:]),('198.19.0.10',0))
  time.sleep(0.02)
  raw.sendto(ip(0,1,udp[:1424]),('198.19.0.10',0))
  try:
    d,a=rx.recvfrom(65535);print(len(d),d.endswith(body),a[0],a[1],flush=True)
  except socket.timeout: print('timeout',flush=True)
";

/// A datagram whose later fragment reaches the node before its first (as
/// reordering on a path does) still gets through the ClusterIP: the
/// worker holds the later fragment until the first has passed.
fn reordered_fragments_get_through(io: Io) {
    let r = labkit::start(io, vec![], lab_file, SERVICES);
    let client = r.lab.plan.pod("client").expect("client").ip.to_string();
    let out = r
        .lab
        .exec("client", &["python3", "-c", REORDERED, &client])
        .expect("python3");
    assert_ok(&out, "the reordered fragments");
    let text = Running::stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 10, "{text}");
    for l in &lines {
        let f: Vec<&str> = l.split(' ').collect();
        assert_eq!(
            f.get(1..),
            Some(&["True", "198.19.0.10", "7"][..]),
            "{text}"
        );
    }
    assert!(counted(&r, |c| c.held) >= 10);
}

/// Path-MTU discovery through a ClusterIP, for a real TCP transfer: the
/// client and a backend run MTU 1500, but the client's port on the node
/// (its veth's host end) keeps 1450. The client's SYN asks for 1460-byte
/// segments, the backend sends them, and the dataplane, as a router
/// would, answers each too big with fragmentation-needed (MTU 1450),
/// translated back so that the backend's kernel lowers its path MTU; the
/// 10 MB download completes with its SHA-256 right.
fn path_mtu_discovery_through_the_clusterip(io: Io) {
    let r = labkit::start(io, vec![], lab_file, SERVICES);
    let web2 = r.lab.plan.pod("web-2").expect("web-2").clone();
    let node = r.lab.plan.node().netns.clone();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(args[0])
            .args(&args[1..])
            .output()
            .expect("ip");
        assert_ok(&out, &args.join(" "));
    };
    run(&[
        "ip",
        "-n",
        &node,
        "link",
        "set",
        &web2.host_end,
        "mtu",
        "1500",
    ]);
    run(&[
        "ip",
        "-n",
        &web2.netns,
        "link",
        "set",
        "eth0",
        "mtu",
        "1500",
    ]);
    let client_ns = r.lab.netns("client");
    run(&["ip", "-n", &client_ns, "link", "set", "eth0", "mtu", "1500"]);
    edit(
        &r,
        "pair.yaml",
        &pair_manifest(&[(&web2.ip.to_string(), READY)]),
    );
    let out = r.python(
        "client",
        "import hashlib,urllib.request\n\
         r=urllib.request.urlopen('http://198.19.0.15/bytes/10485760',timeout=20)\n\
         b=r.read()\n\
         print(len(b),hashlib.sha256(b).hexdigest()==r.headers['X-Content-SHA256'])\n",
    );
    assert_ok(&out, "the download");
    assert_eq!(Running::stdout(&out), "10485760 True");
    assert!(counted(&r, |c| c.dropped(sluice_dataplane::DropReason::MtuExceeded)) > 0);
    assert!(counted(&r, |c| c.icmp_translated) > 0);
    // The backend's kernel took the error as its own: it caches the path
    // MTU towards the client (an error quoting the ClusterIP, or to an
    // address it does not have, it would have ignored).
    let client = r.lab.plan.pod("client").expect("client").ip.to_string();
    let route = std::process::Command::new("ip")
        .args(["-n", &web2.netns, "route", "get", &client])
        .output()
        .expect("ip route get");
    let route = String::from_utf8_lossy(&route.stdout).to_string();
    assert!(route.contains("mtu 1450"), "no path MTU learnt: {route}");
}

macro_rules! root_test {
    ($name:ident, $body:expr) => {
        #[test]
        fn $name() {
            if !sluice_control::testing::root_or_skip(stringify!($name)) {
                return;
            }
            $body(IO);
        }
    };
}

root_test!(
    no_endpoints_unready_endpoints_and_missing_ports_are_refused_at_once,
    no_endpoints_means_connection_refused_at_once
);
root_test!(
    a_pod_reaches_itself_through_its_own_service,
    a_pod_reaches_itself_through_its_service
);
root_test!(
    a_service_labelled_for_another_proxy_is_not_programmed_until_the_label_goes,
    a_service_of_another_proxy_is_not_programmed
);
root_test!(
    a_udp_client_on_a_fixed_port_moves_within_a_second_when_its_backend_leaves,
    a_udp_client_moves_when_its_backend_leaves
);
root_test!(
    tcp_to_a_deleted_endpoint_is_reset_and_to_a_terminating_one_carries_on,
    connections_to_deleted_and_terminating_endpoints
);
root_test!(
    client_ip_affinity_sticks_switches_off_and_on_and_follows_a_leaving_backend,
    client_ip_affinity
);
root_test!(
    a_syn_flood_from_one_pod_does_not_keep_a_client_in_another_out,
    a_syn_flood_does_not_keep_a_client_out
);
root_test!(
    internal_traffic_policy_local_and_zone_hints_from_a_real_client,
    traffic_policy_and_topology
);
root_test!(
    an_icmp_error_from_a_backend_reaches_the_clients_socket_through_the_clusterip,
    icmp_errors_reach_the_clients_socket
);
root_test!(
    a_fragmented_udp_request_and_its_fragmented_answer_through_the_clusterip,
    fragmented_udp_both_ways
);
root_test!(
    a_later_fragment_that_arrives_first_is_held_until_its_first_passes,
    reordered_fragments_get_through
);
root_test!(
    path_mtu_discovery_works_through_a_clusterip_for_a_real_tcp_transfer,
    path_mtu_discovery_through_the_clusterip
);
root_test!(
    refusals_are_rate_limited_per_source_and_counted,
    refusals_are_rate_limited_per_source
);
