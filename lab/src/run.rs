//! `sluice lab up|down|demo`: the lab's commands.
//!
//! `demo` runs everything in this process (set-up, the daemon's workers,
//! servers, clients, teardown) and exits non-zero if a client saw anything
//! wrong. `up` sets the lab up, starts its servers and a daemon process in
//! the background, and prints how to use it; `down` stops that daemon and
//! removes every namespace of the lab, also after a crash, since it finds
//! them by name. The daemon's state (pid, log, the lab file it runs) is in
//! /run/sluice/lab-<name>/.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_dataplane::conntrack::FlowRecord;
use sluice_dataplane::worker::Idle;
use sluice_dataplane::Addr;

use super::file::{LabFile, Plan, DEFAULT};
use super::{remove, write_manifests, Lab};

use sluice_control::daemon::{Daemon, Io};
use sluice_control::state::WorkerReport;
use sluice_control::sync::FileSync;

#[derive(clap::Args)]
pub struct LabArgs {
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(clap::Subcommand)]
enum LabCommand {
    /// Set the lab up and leave it running in the background.
    Up(Options),
    /// Stop the lab's daemon and remove everything the lab created.
    Down(Which),
    /// Set the lab up, run real clients against its Services, print what
    /// happened, and tear it down.
    Demo(DemoOptions),
    /// The background daemon of `lab up` (started by it).
    #[command(hide = true)]
    Daemon(DaemonOptions),
}

#[derive(clap::Args, Clone)]
struct Which {
    /// The lab file (default: the embedded one, control/labs/default.yaml).
    #[arg(long)]
    file: Option<PathBuf>,
}

#[derive(clap::Args, Clone)]
struct Options {
    #[command(flatten)]
    which: Which,
    /// How the daemon reaches the pods: AF_XDP on veth pairs, or TAP
    /// devices as the pods' interfaces.
    #[arg(long, value_enum, default_value_t = Io::Afxdp)]
    io: Io,
    /// Cores to pin workers to, one worker each (default: the last core).
    #[arg(long, value_delimiter = ',')]
    cores: Vec<usize>,
    /// Spin when idle instead of sleeping (the worker then owns its core;
    /// on a lab that shares its cores with the pods, this slows the pods).
    #[arg(long)]
    busy_poll: bool,
    #[arg(long, default_value_t = 1 << 18)]
    conntrack_capacity: usize,
}

#[derive(clap::Args, Clone)]
struct DemoOptions {
    #[command(flatten)]
    options: Options,
    /// HTTP requests per round.
    #[arg(long, default_value_t = 60)]
    requests: usize,
}

#[derive(clap::Args, Clone)]
struct DaemonOptions {
    #[command(flatten)]
    options: Options,
    #[arg(long)]
    state: PathBuf,
}

type Result<T> = std::result::Result<T, String>;

pub fn run(args: LabArgs) -> Result<()> {
    match args.command {
        LabCommand::Up(o) => up(&o),
        LabCommand::Down(w) => down(&w),
        LabCommand::Demo(o) => demo(&o),
        LabCommand::Daemon(o) => daemon(&o),
    }
}

fn read_file(w: &Which) -> Result<(String, Plan)> {
    let yaml = match &w.file {
        Some(p) => std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?,
        None => DEFAULT.to_string(),
    };
    let plan = LabFile::parse(&yaml)
        .and_then(|f| f.plan())
        .map_err(|e| match &w.file {
            Some(p) => format!("{}: {e}", p.display()),
            None => format!("the embedded lab: {e}"),
        })?;
    Ok((yaml, plan))
}

fn cores(o: &Options) -> Vec<usize> {
    if !o.cores.is_empty() {
        return o.cores.clone();
    }
    let last = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .max();
    last.into_iter().collect()
}

fn idle(o: &Options) -> Idle {
    if o.busy_poll {
        Idle::BUSY
    } else {
        // 50 µs naps after ~1 ms without a frame: a lab's pods share the
        // cores, and a spinning worker would starve their kernels.
        Idle {
            spin_rounds: 2_000,
            sleep: Duration::from_micros(50),
        }
    }
}

fn state_dir(name: &str) -> PathBuf {
    PathBuf::from(format!("/run/sluice/lab-{name}"))
}

fn describe(plan: &Plan, io: Io) -> String {
    let mut s = String::new();
    let node = plan.node();
    s += &format!(
        "  node    {:<8} {:<12} ns {:<16} exception path: TAP {}\n",
        node.name, node.ip, node.netns, node.host_tap
    );
    for p in &node.pods {
        let labels: Vec<String> = p.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let iface = match io {
            Io::Afxdp => format!("veth host end {}", p.host_end),
            Io::Tap => "TAP eth0".into(),
        };
        s += &format!(
            "  pod     {:<8} {:<12} ns {:<16} {iface}, labels {}\n",
            p.name,
            p.ip,
            p.netns,
            labels.join(",")
        );
    }
    for svc in &plan.services {
        let ports: Vec<String> = svc
            .ports
            .iter()
            .map(|p| format!("{}/{}->{}", p.port, p.protocol, p.target_port))
            .collect();
        let backends: Vec<&str> = plan.selected(svc).iter().map(|p| p.name.as_str()).collect();
        s += &format!(
            "  service {}/{} {} {} backends {}\n",
            svc.namespace,
            svc.name,
            svc.cluster_ip,
            ports.join(" "),
            backends.join(" ")
        );
    }
    s
}

fn up(o: &Options) -> Result<()> {
    let (yaml, plan) = read_file(&o.which)?;
    let dir = state_dir(&plan.name);
    stop_daemon(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::write(dir.join("lab.yaml"), &yaml).map_err(|e| e.to_string())?;
    let manifest = write_manifests(&dir.join("manifests"), &plan, &[])?;
    let cores = cores(o);
    let mut lab = Lab::create(&plan, o.io, cores.len()).map_err(|e| format!("set-up: {e}"))?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.join("daemon.log")).map_err(|e| e.to_string())?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["lab", "daemon", "--state"])
        .arg(&dir)
        .args(["--file"])
        .arg(dir.join("lab.yaml"))
        .args(["--io", &o.io.to_string()])
        .args([
            "--cores",
            &cores
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ])
        .args(["--conntrack-capacity", &o.conntrack_capacity.to_string()]);
    if o.busy_poll {
        cmd.arg("--busy-poll");
    }
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("start the daemon: {e}"))?;
    // Until the daemon is ready, any failure stops it: its workers hold the
    // lab's interfaces, and the lab is removed on the way out.
    let mut child = KillOnDrop(Some(child));
    let pid = child.0.as_ref().map(|c| c.id()).unwrap_or_default();
    std::fs::write(dir.join("daemon.pid"), pid.to_string()).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dir.join("ready").exists() {
        if let Some(Ok(Some(status))) = child.0.as_mut().map(|c| c.try_wait()) {
            let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
            return Err(format!("the daemon exited ({status}):\n{log}"));
        }
        if Instant::now() > deadline {
            return Err("the daemon did not become ready within 30 s; stopped it".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The pods have their addresses now (the daemon wired them through
    // sluice-cni): their servers can bind.
    lab.start_servers(Some(&dir), true)
        .map_err(|e| format!("servers: {e}"))?;
    child.0 = None;
    lab.keep();
    println!(
        "lab {} is up: io {}, {} worker(s) on core(s) {:?}, daemon pid {}, log {}",
        plan.name,
        o.io,
        cores.len().max(1),
        cores,
        pid,
        dir.join("daemon.log").display()
    );
    print!("{}", describe(&plan, o.io));
    println!(
        "  the daemon's admin socket is {}: `sluice status` finds it (its counters, pods, tables)",
        crate::admin_socket(&plan).display()
    );
    println!(
        "  the Services come from {} (Kubernetes manifests, watched): edit, add or delete manifests there and the workers follow",
        manifest.display()
    );
    // The first pod no Service selects is the natural client.
    let client = plan
        .node()
        .pods
        .iter()
        .find(|p| {
            plan.services
                .iter()
                .all(|s| !plan.selected(s).iter().any(|q| q.name == p.name))
        })
        .unwrap_or(&plan.node().pods[0]);
    println!("try:");
    for svc in &plan.services {
        for p in &svc.ports {
            match p.protocol.as_str() {
                "TCP" => println!(
                    "  ip netns exec {} curl http://{}:{}/",
                    client.netns, svc.cluster_ip, p.port
                ),
                "UDP" => println!(
                    "  ip netns exec {} python3 -c \"import socket;s=socket.socket(2,2);s.sendto(b'hi',('{}',{}));print(s.recv(99))\"",
                    client.netns, svc.cluster_ip, p.port
                ),
                _ => {}
            }
        }
    }
    println!(
        "  ip netns exec {} curl http://{}:8080/   (the node, through the exception path)",
        client.netns,
        plan.node().ip
    );
    println!(
        "  sluice lab down{}",
        match &o.which.file {
            Some(p) => format!(" --file {}", p.display()),
            None => String::new(),
        }
    );
    Ok(())
}

/// A child process killed (and reaped) when dropped, unless taken out.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Stops the daemon whose pid `dir` holds, if it is still ours.
fn stop_daemon(dir: &Path) -> bool {
    let Some(pid) = std::fs::read_to_string(dir.join("daemon.pid"))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    else {
        return false;
    };
    // Only a process that is this lab's daemon: a pid can be reused.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    if !cmdline.contains("lab daemon") || !cmdline.contains(&*dir.to_string_lossy()) {
        return false;
    }
    // SAFETY: kill(2) on the daemon this lab started, checked above.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while super::alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if super::alive(pid) {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    true
}

fn down(w: &Which) -> Result<()> {
    let (_, plan) = read_file(w)?;
    let dir = state_dir(&plan.name);
    let stopped = stop_daemon(&dir);
    let removed = remove(&plan.name);
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "lab {}: {}removed {} namespace(s){}",
        plan.name,
        if stopped { "daemon stopped, " } else { "" },
        removed.len(),
        if removed.is_empty() {
            String::new()
        } else {
            format!(": {}", removed.join(" "))
        }
    );
    Ok(())
}

/// The daemon's workers on the lab, with their tables from the manifests
/// directory (the file source), kept in step while it runs.
fn start_daemon(
    plan: &Plan,
    o: &Options,
    cores: Vec<usize>,
    manifests: &Path,
) -> Result<(Daemon, FileSync)> {
    super::start_daemon(plan, o.io, cores, idle(o), o.conntrack_capacity, manifests)
}

fn daemon(o: &DaemonOptions) -> Result<()> {
    let (_, plan) = read_file(&o.options.which)?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| e.to_string())?;
    }
    // The manifests are watched: SIGHUP has nothing to reload, and must
    // not end the daemon.
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())
        .map_err(|e| e.to_string())?;
    let manifests = o.state.join("manifests");
    let (mut d, files) = start_daemon(&plan, &o.options, o.options.cores.clone(), &manifests)?;
    let st = files.status();
    println!(
        "sluice: lab {} daemon running, generation {}, {} Service(s) from {}",
        plan.name,
        d.generation(),
        st.services,
        manifests.display()
    );
    std::fs::write(o.state.join("ready"), d.generation().to_string()).map_err(|e| e.to_string())?;
    while !stop.load(Ordering::Relaxed) {
        if hup.swap(false, Ordering::Relaxed) {
            println!("sluice: SIGHUP: the manifests directory is watched; nothing to reload");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(files);
    let reports = d.stop();
    println!("sluice: stopped; XDP programs detached");
    print_reports(&reports);
    Ok(())
}

fn print_reports(reports: &[WorkerReport]) {
    for (i, r) in reports.iter().enumerate() {
        let c = &r.packets;
        let l = &r.loop_counters;
        println!(
            "  worker {i} (core {}): rx {} forwarded {} to_host {} neighbor_replies {} dropped {} | tx {} (moved {} copied {}) host_tx {} host_rx {} no_egress {}",
            r.core.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
            c.rx,
            c.forwarded,
            c.to_host,
            c.neighbor_replies,
            c.total_drops(),
            l.tx,
            r.backend.moved,
            r.backend.copied,
            l.host_tx,
            l.host_rx,
            c.dropped(sluice_dataplane::DropReason::NoEgress)
        );
        for (reason, n) in c.drop_breakdown() {
            println!("      dropped {reason}: {n}");
        }
    }
}

fn flow_str(f: &FlowRecord) -> String {
    let o = &f.original;
    let t = &f.translated;
    let at = |a: Addr, port: u16| std::net::SocketAddr::new(a.to_ip(o.family), port).to_string();
    format!(
        "{:<4} {} -> {}  =>  {}  {:?}",
        o.proto.k8s_name(),
        at(o.src, o.sport),
        at(o.dst, o.dport),
        at(t.dst, t.dport),
        f.life.state
    )
}

/// Counts the first word of each line (the backend's name).
fn tally(out: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in out.lines() {
        if let Some(w) = l.split_whitespace().next() {
            *m.entry(w.to_string()).or_insert(0) += 1;
        }
    }
    m
}

fn tally_str(m: &BTreeMap<String, usize>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn demo(o: &DemoOptions) -> Result<()> {
    let (_, plan) = read_file(&o.options.which)?;
    let svc = plan
        .services
        .iter()
        .find(|s| s.ports.iter().any(|p| p.protocol == "TCP") && plan.selected(s).len() >= 2)
        .ok_or("the demo needs a Service with a TCP port and at least two backends")?
        .clone();
    let http = svc.ports.iter().find(|p| p.protocol == "TCP").unwrap().port;
    let echo = svc
        .ports
        .iter()
        .find(|p| p.protocol == "UDP")
        .map(|p| p.port);
    let backends: Vec<String> = plan.selected(&svc).iter().map(|p| p.name.clone()).collect();
    let client = plan
        .node()
        .pods
        .iter()
        .find(|p| !backends.contains(&p.name))
        .ok_or("the demo needs a pod that no Service selects, as its client")?
        .name
        .clone();
    let vip = svc.cluster_ip.to_string();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| e.to_string())?;
    }
    let cores = cores(&o.options);
    println!(
        "== lab {}: setting up (io {}, {} worker(s) on core(s) {:?})",
        plan.name,
        o.options.io,
        cores.len().max(1),
        cores
    );
    // A `lab up` of the same lab may be running: its daemon goes first.
    if stop_daemon(&state_dir(&plan.name)) {
        println!(
            "   stopped the daemon of a running `lab up` of {}",
            plan.name
        );
    }
    let _ = std::fs::remove_dir_all(state_dir(&plan.name));
    let mut lab =
        Lab::create(&plan, o.options.io, cores.len()).map_err(|e| format!("set-up: {e}"))?;
    print!("{}", describe(&plan, o.options.io));
    // The tables come from the lab's Service manifests, through the file
    // source, as they do under `lab up`.
    let manifests = state_dir(&plan.name).join("manifests");
    let manifest = write_manifests(&manifests, &plan, &[])?;
    let (mut daemon, files) =
        start_daemon(&plan, &o.options, cores, &manifests).map_err(|e| format!("daemon: {e}"))?;
    println!(
        "   {} Service(s) from {} (the file source), tables generation {}",
        files.status().services,
        manifest.display(),
        daemon.generation()
    );
    lab.start_servers(None, false)
        .map_err(|e| format!("servers: {e}"))?;
    let mut failures = Vec::new();
    let check_stop = |stop: &AtomicBool| -> Result<()> {
        if stop.load(Ordering::Relaxed) {
            Err("interrupted; the lab was torn down".into())
        } else {
            Ok(())
        }
    };

    let curl_loop = |n: usize, url: &str| -> Result<String> {
        let script =
            format!("for i in $(seq {n}); do curl -s --max-time 5 {url} || echo FAILED; done");
        let out = lab
            .exec(&client, &["sh", "-c", &script])
            .map_err(|e| format!("curl in {client}: {e}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    };

    println!(
        "\n== {} HTTP GETs with curl from {client} to http://{vip}:{http}/",
        o.requests
    );
    let url = format!("http://{vip}:{http}/");
    let hits = tally(&curl_loop(o.requests, &url)?);
    println!("   hits per backend: {}", tally_str(&hits));
    if hits.contains_key("FAILED") || hits.values().sum::<usize>() != o.requests {
        failures.push(format!("HTTP: {}", tally_str(&hits)));
    }
    check_stop(&stop)?;

    if let Some(port) = echo {
        let n = 30;
        println!("\n== {n} UDP datagrams from {client} to {vip}:{port} (echo)");
        let py = format!(
            "import socket\nfor i in range({n}):\n  s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(3)\n  s.sendto(b'ping %d'%i,('{vip}',{port}))\n  d,a=s.recvfrom(2048)\n  print(d.decode().split()[0],a[0],a[1])\n"
        );
        let out = lab
            .exec(&client, &["python3", "-c", &py])
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let from_vip = text
            .lines()
            .filter(|l| l.ends_with(&format!("{vip} {port}")))
            .count();
        println!(
            "   answers: {} of {n}, {from_vip} from {vip}:{port} (the VIP, as the client dialled); per backend: {}",
            text.lines().count(),
            tally_str(&tally(&text))
        );
        if from_vip != n {
            failures.push(format!(
                "UDP: {from_vip} of {n} answered from the VIP: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    check_stop(&stop)?;

    if let Some(v6) = svc.v6() {
        let n = 30;
        let url6 = format!("http://[{v6}]:{http}/");
        println!("\n== {n} HTTP GETs over IPv6 from {client} to {url6} (dual-stack)");
        let hits6 = tally(&curl_loop(n, &format!("-g {url6}"))?);
        println!("   hits per backend: {}", tally_str(&hits6));
        if hits6.contains_key("FAILED") || hits6.values().sum::<usize>() != n {
            failures.push(format!("HTTP over IPv6: {}", tally_str(&hits6)));
        }
        check_stop(&stop)?;
    }

    let flows = daemon.flows(usize::MAX);
    println!(
        "\n== conntrack: {} live entries; some of them:",
        flows.len()
    );
    // A few of each kind: TCP and UDP, IPv4 and IPv6.
    let mut shown = BTreeMap::new();
    for f in &flows {
        let kind = (f.original.proto.k8s_name(), f.original.family as u8);
        let n = shown.entry(kind).or_insert(0);
        if *n < 3 {
            *n += 1;
            println!("   {}", flow_str(f));
        }
    }

    // A backend's pod shuts down while a keep-alive connection is open:
    // the EndpointSlice controller marks it terminating (ready false,
    // serving and terminating true) until the pod is gone.
    let gone = backends.last().unwrap().clone();
    println!(
        "\n== {gone} terminating in {}/{} while a keep-alive connection is open",
        svc.namespace, svc.name
    );
    let keepalive = format!(
        "import http.client,time\nc=http.client.HTTPConnection('{vip}',{http},timeout=5)\nfor i in range(12):\n  c.request('GET','/');print(c.getresponse().read().decode().strip(),flush=True);time.sleep(0.25)\n"
    );
    let held = lab
        .command(&lab.netns(&client), "python3")
        .args(["-c", &keepalive])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(700));
    // As the EndpointSlice controller would: the slices with it terminating.
    let before = daemon.generation();
    let edited = Instant::now();
    write_manifests(&manifests, &plan, &[gone.as_str()])?;
    let st = files
        .wait_for_generation(before, Duration::from_secs(10))
        .ok_or("the edited manifests did not reach the workers within 10 s")?;
    println!(
        "   {} rewritten with {gone} terminating: tables generation {} in the workers after {} ms",
        manifest.display(),
        st.generation,
        edited.elapsed().as_millis()
    );
    let after = tally(&curl_loop(o.requests, &url)?);
    println!("   {} new GETs: {}", o.requests, tally_str(&after));
    if after.contains_key(&gone)
        || after.values().sum::<usize>() != o.requests
        || after.contains_key("FAILED")
    {
        failures.push(format!("after removing {gone}: {}", tally_str(&after)));
    }
    let held = held.wait_with_output().map_err(|e| e.to_string())?;
    let held_out = String::from_utf8_lossy(&held.stdout).to_string();
    let held_by: Vec<&str> = held_out.lines().collect();
    let same = held_by.windows(2).all(|w| w[0] == w[1]);
    println!(
        "   the connection opened before: {} requests, all answered by {} ({})",
        held_by.len(),
        held_by.first().unwrap_or(&"nobody"),
        if same && held_by.len() == 12 {
            "it kept its backend"
        } else {
            "BROKEN"
        }
    );
    if !(same && held_by.len() == 12) {
        failures.push(format!(
            "keep-alive connection: {held_out:?} {}",
            String::from_utf8_lossy(&held.stderr)
        ));
    }
    check_stop(&stop)?;

    let node = plan.node();
    println!("\n== the exception path and plain routing");
    let to_node = curl_loop(1, &format!("http://{}:8080/", node.ip))?;
    println!(
        "   {client} -> the node {}:8080: {}",
        node.ip,
        to_node.trim()
    );
    let node_to_vip = lab
        .command(&node.netns, "curl")
        .args(["-s", "--max-time", "5", &url])
        .output()
        .map_err(|e| e.to_string())?;
    let node_to_vip = String::from_utf8_lossy(&node_to_vip.stdout)
        .trim()
        .to_string();
    println!("   the node -> {url}: {node_to_vip}");
    let first = plan.pod(&backends[0]).unwrap();
    let target = svc
        .ports
        .iter()
        .find(|p| p.protocol == "TCP")
        .map(|p| p.target_port)
        .unwrap_or(http);
    let direct = curl_loop(1, &format!("http://{}:{target}/", first.ip))?;
    println!(
        "   {client} -> {} by its IP {}: {}",
        first.name,
        first.ip,
        direct.trim()
    );
    if to_node.trim() != node.name
        || !backends.contains(&node_to_vip)
        || direct.trim() != first.name
    {
        failures.push(format!(
            "routing: node {to_node:?}, node to VIP {node_to_vip:?}, pod {direct:?}"
        ));
    }

    drop(files);
    let reports = daemon.stop();
    println!("\n== counters");
    print_reports(&reports);
    drop(lab);
    let _ = std::fs::remove_dir_all(state_dir(&plan.name));
    println!(
        "\n== torn down: {} namespaces of lab {} left",
        super::namespaces_of(&plan.name).len(),
        plan.name
    );
    if failures.is_empty() {
        println!("demo passed");
        Ok(())
    } else {
        Err(format!("demo failed:\n  {}", failures.join("\n  ")))
    }
}
