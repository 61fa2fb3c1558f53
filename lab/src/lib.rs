//! The veth lab: a node's namespace and one namespace per pod, each pod on
//! a veth pair whose host end the daemon opens with AF_XDP (or, with `--io
//! tap`, a TAP device as the pod's interface, which the daemon reads and
//! writes), the node's own address on a TAP (the exception path), and real
//! servers in the pods. Everything is named `<lab>-...` so that a lab can be
//! found and removed by its name alone, also after a crash.
//!
//! Pods are set up as DESIGN.md says: MTU 1450 (room for VXLAN), checksum
//! and segmentation offloads off (AF_XDP sees the bytes as sent, never a
//! 64 KiB super-frame), one /32 and a default route via the link-local
//! gateway 169.254.1.1, which the dataplane answers for. Under AF_XDP the
//! pods are wired by `sluice-cni`, called as a runtime calls it, once the
//! daemon runs (`wire_pods`); `Lab::create_with_veths` makes the same veths
//! directly, for the benchmark's kernel paths, which run with no daemon.

pub mod file;
pub mod run;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sluice_dataplane::worker::Idle;
use sluice_dataplane::Addr;

use std::path::{Path, PathBuf};

use file::{Plan, PlannedNode};
use sluice_control::daemon::{self, HostConfig, Io, PortConfig};
use sluice_control::sync::FileSync;

/// The lab's server (HTTP and UDP echo), run in each backend pod.
pub const SERVER_PY: &str = include_str!("../labs/server.py");

/// A command of the set-up that failed.
#[derive(Debug)]
pub struct SetupError {
    pub command: String,
    pub reason: String,
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.command, self.reason)
    }
}

impl std::error::Error for SetupError {}

/// Runs a command of the set-up; its stderr is the error.
pub fn sh(args: &[&str]) -> Result<String, SetupError> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| SetupError {
            command: args.join(" "),
            reason: format!("cannot run {}: {e} (scripts/setup.sh installs it)", args[0]),
        })?;
    if !out.status.success() {
        return Err(SetupError {
            command: args.join(" "),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `ip -n NS ARGS...`, the arguments split on spaces (none has one).
fn ip(ns: &str, args: &str) -> Result<String, SetupError> {
    let mut v = vec!["ip", "-n", ns];
    v.extend(args.split(' '));
    sh(&v)
}

/// No duplicate address detection in the lab's namespaces: a link-local
/// address would otherwise stay tentative for a second or two after the
/// interface comes up, and the first IPv6 packets would wait for it.
fn no_dad(ns: &str) -> Result<(), SetupError> {
    sh(&[
        "ip",
        "netns",
        "exec",
        ns,
        "sysctl",
        "-qw",
        "net.ipv6.conf.all.accept_dad=0",
        "net.ipv6.conf.default.accept_dad=0",
    ])
    .map(drop)
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The namespaces whose names start with `<lab>-`.
pub fn namespaces_of(lab: &str) -> Vec<String> {
    let prefix = format!("{lab}-");
    sh(&["ip", "netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

/// Whether process `pid` still runs: a zombie does not (on a machine whose
/// init does not reap orphans, a killed server stays one).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command's closing parenthesis.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Removes every namespace of lab `lab` and ends the processes in them
/// (servers and clients the lab started there), leaving nothing behind.
/// Deleting a namespace deletes its veths and TAPs and their XDP programs.
pub fn remove(lab: &str) -> Vec<String> {
    let spaces = namespaces_of(lab);
    let pids: Vec<i32> = spaces
        .iter()
        .flat_map(|ns| {
            sh(&["ip", "netns", "pids", ns])
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    for &p in &pids {
        // SAFETY: kill(2) on a pid inside the lab's own namespaces.
        unsafe { libc::kill(p, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    for &p in pids.iter().filter(|&&p| alive(p)) {
        // SAFETY: as above; those that ignored SIGTERM.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    for ns in &spaces {
        let _ = sh(&["ip", "netns", "del", ns]);
    }
    // The plugin's allocations went with the veths; a killed daemon's
    // admin socket is left as a file.
    let _ = std::fs::remove_dir_all(cni_data_dir().join(lab));
    let _ = std::fs::remove_file(cni_data_dir().join(format!("{lab}.sock")));
    spaces
}

/// Where the lab's sluice-cni keeps its allocations (a network per lab).
pub fn cni_data_dir() -> PathBuf {
    PathBuf::from("/run/sluice/lab-cni")
}

/// The admin socket of a lab's daemon.
pub fn admin_socket(plan: &Plan) -> PathBuf {
    cni_data_dir().join(format!("{}.sock", plan.name))
}

/// The sluice-cni binary: `SLUICE_CNI`, or beside this executable (the
/// `sluice` binary, or a test's, one directory further down).
pub fn cni_binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("SLUICE_CNI") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut tried = Vec::new();
    for dir in exe.ancestors().skip(1).take(2) {
        let p = dir.join("sluice-cni");
        if p.exists() {
            return Ok(p);
        }
        tried.push(p.display().to_string());
    }
    Err(format!(
        "sluice-cni not found (tried {}): build it (cargo build -p sluice-cni) or set SLUICE_CNI",
        tried.join(", ")
    ))
}

/// The lab's CNI network configuration: the node's pod CIDRs, the daemon's
/// admin socket.
pub fn cni_conf(plan: &Plan) -> String {
    let node = plan.node();
    serde_json::json!({
        "cniVersion": "1.1.0",
        "name": plan.name,
        "type": "sluice-cni",
        "mtu": 1450,
        "adminSocket": admin_socket(plan),
        "ipam": {
            "ranges": [
                [{"subnet": format!("198.18.{}.0/24", node.index), "rangeStart": format!("198.18.{}.1", node.index)}],
                [{"subnet": file::pod_cidr6(node.index)}],
            ],
            "dataDir": cni_data_dir(),
        },
    })
    .to_string()
}

/// Wires every pod not attached yet through sluice-cni ADD, as a runtime
/// would: in the node's namespace, the pod's namespace as CNI_NETNS, its
/// planned addresses asked for with CNI_ARGS IP= (the Services' manifests
/// name them).
pub fn wire_pods(plan: &Plan, attached: &[String]) -> Result<(), String> {
    let bin = cni_binary()?;
    let conf = cni_conf(plan);
    let node = plan.node();
    for pod in &node.pods {
        if attached.contains(&pod.host_end) {
            continue;
        }
        let mut child = Command::new("ip")
            .args(["netns", "exec", &node.netns])
            .arg(&bin)
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", &pod.netns)
            .env("CNI_NETNS", format!("/var/run/netns/{}", pod.netns))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", bin.parent().unwrap_or(Path::new("/")))
            .env("CNI_ARGS", format!("IP={},{}", pod.ip, pod.ip6))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        if let Some(mut i) = child.stdin.take() {
            use std::io::Write;
            let _ = i.write_all(conf.as_bytes());
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "sluice-cni ADD for pod {}: {}{}",
                pod.name,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}

/// A lab daemon's admin socket (`sluice status` finds it), answering
/// for `source` with `status`.
fn serve(
    d: &mut daemon::Daemon,
    plan: &Plan,
    source: String,
    status: impl Fn() -> sluice_control::sync::Status + Send + Sync + 'static,
) -> Result<(), String> {
    let admin = sluice_control::admin::serve(
        &admin_socket(plan),
        d.handles(),
        Box::new(move || {
            vec![sluice_control::admin::SourceStatus {
                source: source.clone(),
                status: status(),
            }]
        }),
    )
    .map_err(|e| e.to_string())?;
    d.hold_admin(admin);
    Ok(())
}

/// For a daemon on a lab under AF_XDP: the pods a daemon before it had
/// (re-attached from the plugin's store), and the rest wired by sluice-cni
/// through the admin socket.
fn wire(d: &mut daemon::Daemon, plan: &Plan) -> Result<(), String> {
    let (_, problems) = d.ports().reattach(&cni_data_dir(), &plan.name);
    for p in problems {
        eprintln!("sluice: could not re-attach {p}");
    }
    let attached: Vec<String> = d.ports().attached().into_iter().map(|a| a.ifname).collect();
    wire_pods(plan, &attached)
}

/// A lab's namespaces, set up; removed on drop unless kept (`lab up`).
pub struct Lab {
    pub plan: Plan,
    pub io: Io,
    keep: bool,
    children: Vec<Child>,
}

impl Lab {
    /// Removes what an earlier run of the same lab left, then creates the
    /// namespaces, interfaces, addresses and routes. `queues` is the number
    /// of workers: each owns one queue of every interface.
    pub fn create(plan: &Plan, io: Io, queues: usize) -> Result<Lab, SetupError> {
        Self::create_as(plan, io, queues, io == Io::Tap)
    }

    /// As `create`, with the pods' veths made here rather than by
    /// sluice-cni: for a lab that runs without the daemon at times.
    pub fn create_with_veths(plan: &Plan, io: Io, queues: usize) -> Result<Lab, SetupError> {
        Self::create_as(plan, io, queues, true)
    }

    fn create_as(plan: &Plan, io: Io, queues: usize, pods: bool) -> Result<Lab, SetupError> {
        remove(&plan.name);
        let lab = Lab {
            plan: plan.clone(),
            io,
            keep: false,
            children: Vec::new(),
        };
        for node in &plan.nodes {
            lab.create_node(node, queues.max(1), pods)?;
        }
        Ok(lab)
    }

    fn create_node(&self, node: &PlannedNode, queues: usize, wire: bool) -> Result<(), SetupError> {
        let nns = node.netns.as_str();
        sh(&["ip", "netns", "add", nns])?;
        no_dad(nns)?;
        ip(nns, "link set lo up")?;
        // The exception path: the node's addresses live on a TAP whose other
        // side is the dataplane, and the node reaches its pods and the
        // ClusterIPs through the gateway, as a pod does.
        let tap = node.host_tap.as_str();
        ip(nns, &format!("tuntap add dev {tap} mode tap multi_queue"))?;
        ip(
            nns,
            &format!(
                "link set {tap} address {} mtu 1450 up",
                mac_str(node.host_mac)
            ),
        )?;
        ip(nns, &format!("addr add {}/32 dev {tap}", node.ip))?;
        ip(
            nns,
            &format!("-6 addr add {}/128 dev {tap} nodad", node.ip6),
        )?;
        ip(nns, &format!("route add 169.254.1.1 dev {tap} scope link"))?;
        for dst in [
            format!("198.18.{}.0/24", node.index),
            "198.19.0.0/17".into(),
        ] {
            ip(nns, &format!("route add {dst} via 169.254.1.1 dev {tap}"))?;
        }
        for dst in [file::pod_cidr6(node.index), file::SERVICE_CIDR6.into()] {
            ip(nns, &format!("-6 route add {dst} via fe80::1 dev {tap}"))?;
        }
        let q = queues;
        for pod in &node.pods {
            let pns = pod.netns.as_str();
            sh(&["ip", "netns", "add", pns])?;
            no_dad(pns)?;
            ip(pns, "link set lo up")?;
            if !wire {
                // sluice-cni wires it once the daemon runs.
                continue;
            }
            match self.io {
                // A queue per worker on both ends: each worker owns one.
                Io::Afxdp => ip(
                    nns,
                    &format!(
                        "link add {} numtxqueues {q} numrxqueues {q} type veth peer name eth0 numtxqueues {q} numrxqueues {q} netns {pns}",
                        pod.host_end
                    ),
                )?,
                Io::Tap => ip(pns, "tuntap add dev eth0 mode tap multi_queue")?,
            };
            ip(
                pns,
                &format!("link set eth0 address {} mtu 1450 up", mac_str(pod.mac)),
            )?;
            // One /32 (/128) and a default route via the link-local
            // gateway, which Sluice answers ARP and NDP for.
            ip(pns, &format!("addr add {}/32 dev eth0", pod.ip))?;
            ip(pns, &format!("-6 addr add {}/128 dev eth0 nodad", pod.ip6))?;
            ip(pns, "route add 169.254.1.1 dev eth0 scope link")?;
            ip(pns, "route add default via 169.254.1.1 dev eth0")?;
            ip(pns, "-6 route add default via fe80::1 dev eth0")?;
            if self.io == Io::Afxdp {
                // Full checksums and no GSO/GRO: AF_XDP sees the bytes as
                // sent (a TAP without IFF_VNET_HDR has none of these).
                sh(&[
                    "ip", "netns", "exec", pns, "ethtool", "-K", "eth0", "tx", "off", "tso", "off",
                    "gso", "off", "gro", "off",
                ])?;
                ip(nns, &format!("link set {} up", pod.host_end))?;
            }
        }
        Ok(())
    }

    /// Keeps the lab when this handle is dropped (`lab up`).
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// The daemon's configuration for this lab's node.
    pub fn daemon_config(
        &self,
        cores: Vec<usize>,
        idle: Idle,
        conntrack_capacity: usize,
    ) -> daemon::Config {
        daemon_config(&self.plan, self.io, cores, idle, conntrack_capacity)
    }

    /// A command in pod (or node) namespace `ns`.
    pub fn command(&self, ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }

    /// Runs `args` in the namespace of pod `pod` and waits for it.
    pub fn exec(&self, pod: &str, args: &[&str]) -> std::io::Result<Output> {
        let ns = self.netns(pod);
        self.command(&ns, args[0]).args(&args[1..]).output()
    }

    /// The namespace of a pod or node by name.
    pub fn netns(&self, name: &str) -> String {
        format!("{}-{name}", self.plan.name)
    }

    /// Starts the lab's servers: in each pod a Service selects, HTTP on
    /// the Services' TCP target ports and an echo on their UDP ones; in the
    /// node, HTTP on 8080 (the exception path's test). Waits until every
    /// TCP port listens. With `detach`, they outlive this process.
    pub fn start_servers(
        &mut self,
        log: Option<&std::path::Path>,
        detach: bool,
    ) -> Result<(), SetupError> {
        let mut jobs: Vec<(String, String, Vec<u16>, Vec<u16>)> = Vec::new();
        for pod in self.plan.nodes.iter().flat_map(|n| &n.pods) {
            let mut tcp = Vec::new();
            let mut udp = Vec::new();
            for s in &self.plan.services {
                if !self.plan.selected(s).iter().any(|p| p.name == pod.name) {
                    continue;
                }
                // The lab's server speaks HTTP and UDP echo; an SCTP port
                // gets no server.
                for p in s.ports.iter().filter(|p| p.protocol != "SCTP") {
                    let v = if p.protocol == "UDP" {
                        &mut udp
                    } else {
                        &mut tcp
                    };
                    if !v.contains(&p.target_port) {
                        v.push(p.target_port);
                    }
                }
            }
            if !tcp.is_empty() || !udp.is_empty() {
                jobs.push((pod.netns.clone(), pod.name.clone(), tcp, udp));
            }
        }
        let node = self.plan.node();
        jobs.push((node.netns.clone(), node.name.clone(), vec![8080], vec![]));
        for (ns, name, tcp, udp) in &jobs {
            let list = |v: &Vec<u16>| v.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
            let mut c = self.command(ns, "python3");
            c.args(["-c", SERVER_PY, name, &list(tcp), &list(udp)])
                .stdin(Stdio::null());
            match log {
                Some(dir) => {
                    let f = std::fs::File::create(dir.join(format!("server-{name}.log"))).map_err(
                        |e| SetupError {
                            command: format!("create {}", dir.display()),
                            reason: e.to_string(),
                        },
                    )?;
                    c.stdout(f.try_clone().map_err(|e| SetupError {
                        command: "log".into(),
                        reason: e.to_string(),
                    })?)
                    .stderr(f);
                }
                None => {
                    c.stdout(Stdio::null()).stderr(Stdio::null());
                }
            }
            if detach {
                use std::os::unix::process::CommandExt;
                c.process_group(0);
            }
            let child = c.spawn().map_err(|e| SetupError {
                command: format!("python3 server in {ns}"),
                reason: e.to_string(),
            })?;
            if detach {
                drop(child);
            } else {
                self.children.push(child);
            }
        }
        for (ns, name, tcp, _) in &jobs {
            for port in tcp {
                wait_listening(ns, *port).map_err(|reason| SetupError {
                    command: format!("server of {name} on port {port}"),
                    reason,
                })?;
            }
        }
        Ok(())
    }
}

fn wait_listening(ns: &str, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = sh(&[
            "ip",
            "netns",
            "exec",
            ns,
            "ss",
            "-Hltn",
            &format!("sport = :{port}"),
        ])
        .unwrap_or_default();
        if !out.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("not listening after 15 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !self.keep {
            remove(&self.plan.name);
        }
    }
}

/// The daemon's configuration for a planned lab's node.
pub fn daemon_config(
    plan: &Plan,
    io: Io,
    cores: Vec<usize>,
    idle: Idle,
    conntrack_capacity: usize,
) -> daemon::Config {
    let node = plan.node();
    daemon::Config {
        io,
        node_netns: Some(node.netns.clone()),
        ports: node
            .pods
            .iter()
            .map(|p| PortConfig {
                ifname: match io {
                    Io::Afxdp => p.host_end.clone(),
                    Io::Tap => "eth0".into(),
                },
                netns: match io {
                    Io::Afxdp => None,
                    Io::Tap => Some(p.netns.clone()),
                },
                addrs: vec![Addr::from_v4(p.ip.octets()), Addr::from_v6(p.ip6.octets())],
                mac: p.mac,
            })
            .collect(),
        host: Some(HostConfig {
            ifname: node.host_tap.clone(),
            mac: node.host_mac,
            addrs: vec![
                Addr::from_v4(node.ip.octets()),
                Addr::from_v6(node.ip6.octets()),
            ],
        }),
        cores,
        conntrack_capacity,
        idle,
        services: plan.service_specs(&[]),
        max_pods: sluice_control::daemon::DEFAULT_MAX_PODS.into(),
    }
}

/// Writes the lab's Service manifests (`Plan::manifests`, the pods in
/// `terminating` marked so) into `dir`, created if missing, as
/// `services.yaml`; returns its path.
pub fn write_manifests(dir: &Path, plan: &Plan, terminating: &[&str]) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join("services.yaml");
    // Beside and renamed over, so that a scan never reads half a file.
    let tmp = dir.join(".services.yaml.tmp");
    std::fs::write(&tmp, plan.manifests(terminating))
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// Starts the daemon's workers on a planned lab with their tables from the
/// manifests in `manifests` (the file source), and the sync that keeps
/// them in step, scanning every 200 ms.
pub fn start_daemon(
    plan: &Plan,
    io: Io,
    cores: Vec<usize>,
    idle: Idle,
    conntrack_capacity: usize,
    manifests: &Path,
) -> Result<(daemon::Daemon, FileSync), String> {
    let prepared = sluice_control::sync::prepare(manifests, &plan.node().name);
    let mut config = daemon_config(plan, io, cores.clone(), idle, conntrack_capacity);
    config.services = prepared.specs.clone();
    if io == Io::Afxdp {
        config.ports.clear();
    }
    let mut d = daemon::Daemon::start(config).map_err(|e| e.to_string())?;
    sluice_control::workers::keep_off_cores(&cores);
    let files =
        sluice_control::sync::Files::start(prepared, d.publisher(), Duration::from_millis(200));
    let source = format!("file:{}", manifests.display());
    serve(&mut d, plan, source, files.status_reader())?;
    if io == Io::Afxdp {
        wire(&mut d, plan)?;
    }
    Ok((d, files))
}

/// Starts the daemon's workers on a planned lab with their tables from an
/// API server (the `kube` source), once every kind has been listed.
pub fn start_daemon_kube(
    plan: &Plan,
    io: Io,
    cores: Vec<usize>,
    idle: Idle,
    conntrack_capacity: usize,
    kube: kube::Config,
) -> Result<(daemon::Daemon, sluice_control::sync::KubeSync), String> {
    let mut config = daemon_config(plan, io, cores.clone(), idle, conntrack_capacity);
    // The workers start with no Services and serve them once the first
    // complete list is published, as kube-proxy starts with no rules.
    config.services = Vec::new();
    if io == Io::Afxdp {
        config.ports.clear();
    }
    let mut d = daemon::Daemon::start(config).map_err(|e| e.to_string())?;
    sluice_control::workers::keep_off_cores(&cores);
    let sync = sluice_control::sync::Kube::start(kube, d.publisher(), &plan.node().name);
    serve(&mut d, plan, "kube".into(), sync.status_reader())?;
    if io == Io::Afxdp {
        wire(&mut d, plan)?;
    }
    sync.wait(Duration::from_secs(30), |s| s.synced)
        .ok_or_else(|| {
            format!(
                "the API server's objects were not listed within 30 s: {:?}",
                sync.status()
            )
        })?;
    Ok((d, sync))
}
