//! kube-proxy's rules for the same Services, loaded by the kernel's tools
//! in a network namespace of our own, so that a publication of Sluice's
//! can be set beside what kube-proxy's sync costs.
//!
//! The rules follow kube-proxy's generators (pkg/proxy/iptables/proxier.go
//! and pkg/proxy/nftables/proxier.go): for iptables, KUBE-SERVICES with a
//! rule per ClusterIP port jumping to KUBE-SVC-*, which picks a KUBE-SEP-*
//! per endpoint with `-m statistic --mode random --probability 1/n`, each
//! SEP marking hairpin traffic for masquerade and DNATing; for nftables,
//! the `service-ips` verdict map to a chain per Service whose `numgen
//! random` vmap jumps to a chain per endpoint. An update is written as
//! kube-proxy's partial sync writes it: iptables-restore --noflush with
//! KUBE-SERVICES rewritten whole and the changed Service's chains; for nft,
//! the changed Service's chains flushed and rewritten.

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_fixtures::bench_frontend;

/// A namespace of our own, deleted on drop: the rules never touch the
/// host's tables.
pub struct RulesNs(pub String);

impl RulesNs {
    pub fn new() -> Result<RulesNs, String> {
        let name = format!("slrules{}", std::process::id() % 100_000);
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .map_err(|e| e.to_string())?
            .success();
        if !ok {
            return Err(format!("ip netns add {name} failed (root needed)"));
        }
        Ok(RulesNs(name))
    }

    /// Runs `tool args < input` inside the namespace; its wall time.
    pub fn load(&self, tool: &[&str], input: &str) -> Result<Duration, String> {
        load_in(&self.0, tool, input)
    }
}

/// Runs `tool args < input` inside namespace `netns`; its wall time.
pub fn load_in(netns: &str, tool: &[&str], input: &str) -> Result<Duration, String> {
    use std::io::Write;
    let t = Instant::now();
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns])
        .args(tool)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e} (apt-get install iptables nftables)", tool[0]))?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let took = t.elapsed();
    if !out.status.success() {
        return Err(format!(
            "{}: {}",
            tool.join(" "),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .take(3)
                .collect::<Vec<_>>()
                .join(" | ")
        ));
    }
    Ok(took)
}

impl Drop for RulesNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// kube-proxy names chains by a hash of the Service port; any stable
/// 16-character name of that alphabet will do.
fn chain_hash(kind: &str, i: usize, extra: usize) -> String {
    let mut x = (i as u64) ^ ((extra as u64) << 40) ^ (kind.len() as u64 * 0x9e37_79b9);
    let mut s = String::with_capacity(16);
    for _ in 0..16 {
        x = x
            .wrapping_mul(0x5851_f42d_4c95_7f2d)
            .wrapping_add(0x1405_7b7e_f767_814f);
        let c = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[(x >> 59) as usize];
        s.push(c as char);
    }
    s
}

/// The Service that the benchmark's traffic goes to, among `n` others:
/// one endpoint, its protocol's own match and DNAT.
#[derive(Clone, Debug)]
pub struct Target {
    pub vip: std::net::Ipv4Addr,
    pub port: u16,
    /// "udp" or "tcp", as both tools spell it.
    pub proto: &'static str,
    pub endpoint: std::net::Ipv4Addr,
    pub target_port: u16,
}

const TARGET: usize = usize::MAX;

impl Target {
    fn svc(&self) -> String {
        format!("KUBE-SVC-{}", chain_hash("target", TARGET, 0))
    }
    fn sep(&self) -> String {
        format!("KUBE-SEP-{}", chain_hash("target", TARGET, 1))
    }

    fn declare(&self, out: &mut String) {
        let _ = writeln!(out, ":{} - [0:0]\n:{} - [0:0]", self.svc(), self.sep());
    }

    fn service_rule(&self, out: &mut String) {
        let p = self.proto;
        let _ = writeln!(
            out,
            "-A KUBE-SERVICES -d {}/32 -p {p} -m comment --comment \"perf/target cluster IP\" -m {p} --dport {} -j {}",
            self.vip,
            self.port,
            self.svc()
        );
    }

    fn rules(&self, out: &mut String) {
        let (svc, sep, ep, p) = (self.svc(), self.sep(), self.endpoint, self.proto);
        let _ = writeln!(
            out,
            "-A {svc} -m comment --comment \"perf/target -> {ep}:{}\" -j {sep}",
            self.target_port
        );
        let _ = writeln!(
            out,
            "-A {sep} -s {ep}/32 -m comment --comment perf/target -j KUBE-MARK-MASQ"
        );
        let _ = writeln!(
            out,
            "-A {sep} -p {p} -m comment --comment perf/target -m {p} -j DNAT --to-destination {ep}:{}",
            self.target_port
        );
    }

    fn nft(&self, out: &mut String) {
        let svc = format!("service-{}", chain_hash("target", TARGET, 0));
        let epc = format!("endpoint-{}", chain_hash("target", TARGET, 1));
        let (ep, p) = (self.endpoint, self.proto);
        let _ = writeln!(out, "add chain ip kube-proxy {svc}");
        let _ = writeln!(out, "add chain ip kube-proxy {epc}");
        let _ = writeln!(
            out,
            "add rule ip kube-proxy {epc} ip saddr {ep} jump mark-for-masquerade"
        );
        let _ = writeln!(
            out,
            "add rule ip kube-proxy {epc} meta l4proto {p} dnat to {ep}:{}",
            self.target_port
        );
        let _ = writeln!(
            out,
            "add rule ip kube-proxy {svc} numgen random mod 1 vmap {{ 0 : goto {epc} }}"
        );
        let _ = writeln!(
            out,
            "add element ip kube-proxy service-ips {{ {} . {p} . {} : goto {svc} }}",
            self.vip, self.port
        );
    }
}

fn endpoint(i: usize, b: usize) -> String {
    format!("198.18.{}.{}", 2 + b, i % 250 + 2)
}

fn vip(i: usize) -> (String, u16) {
    let (a, port) = bench_frontend(i);
    (std::net::Ipv4Addr::from(a.v4_octets()).to_string(), port)
}

/// Chains are declared before any rule (iptables-restore wants a jump's
/// target to exist), as kube-proxy writes them.
fn svc_declare(out: &mut String, i: usize, backends: usize) {
    let _ = writeln!(out, ":KUBE-SVC-{} - [0:0]", chain_hash("svc", i, 0));
    for b in 0..backends {
        let _ = writeln!(out, ":KUBE-SEP-{} - [0:0]", chain_hash("sep", i, b));
    }
}

fn svc_rules(out: &mut String, i: usize, backends: usize) {
    let svc = format!("KUBE-SVC-{}", chain_hash("svc", i, 0));
    for b in 0..backends {
        let sep = format!("KUBE-SEP-{}", chain_hash("sep", i, b));
        let ep = endpoint(i, b);
        let left = backends - b;
        if left > 1 {
            let _ = writeln!(
                out,
                "-A {svc} -m comment --comment \"bench/svc-{i} -> {ep}:8080\" -m statistic --mode random --probability {:.11} -j {sep}",
                1.0 / left as f64
            );
        } else {
            let _ = writeln!(
                out,
                "-A {svc} -m comment --comment \"bench/svc-{i} -> {ep}:8080\" -j {sep}"
            );
        }
        let _ = writeln!(
            out,
            "-A {sep} -s {ep}/32 -m comment --comment bench/svc-{i} -j KUBE-MARK-MASQ"
        );
        let _ = writeln!(
            out,
            "-A {sep} -p tcp -m comment --comment bench/svc-{i} -m tcp -j DNAT --to-destination {ep}:8080"
        );
    }
}

/// KUBE-SERVICES, with the target (if any) half-way down: kube-proxy
/// writes the chain in its map's order, so that is where a Service sits
/// on average, and iptables matches the chain rule by rule.
fn services_rules(out: &mut String, n: usize, target: Option<&Target>) {
    if n == 0 {
        if let Some(t) = target {
            t.service_rule(out);
        }
    }
    for i in 0..n {
        if i == n / 2 {
            if let Some(t) = target {
                t.service_rule(out);
            }
        }
        let (ip, port) = vip(i);
        let _ = writeln!(
            out,
            "-A KUBE-SERVICES -d {ip}/32 -p tcp -m comment --comment \"bench/svc-{i} cluster IP\" -m tcp --dport {port} -j KUBE-SVC-{}",
            chain_hash("svc", i, 0)
        );
    }
}

/// The nat table kube-proxy writes for `n` Services of two endpoints.
pub fn iptables_full(n: usize) -> String {
    iptables_full_with(n, None)
}

/// The same, with the benchmark's target Service among them (and `n`
/// Services besides it).
pub fn iptables_full_with(n: usize, target: Option<&Target>) -> String {
    let mut out = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-SERVICES - [0:0]\n",
    );
    for i in 0..n {
        svc_declare(&mut out, i, 2);
    }
    if let Some(t) = target {
        t.declare(&mut out);
    }
    services_rules(&mut out, n, target);
    for i in 0..n {
        svc_rules(&mut out, i, 2);
    }
    if let Some(t) = target {
        t.rules(&mut out);
    }
    out.push_str(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n",
    );
    out.push_str(
        "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n",
    );
    out.push_str("-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\nCOMMIT\n");
    out
}

/// kube-proxy's partial sync after Service `i` went to `backends`
/// endpoints: KUBE-SERVICES whole, that Service's chains.
pub fn iptables_update(n: usize, i: usize, backends: usize) -> String {
    let mut out = String::from("*nat\n:KUBE-SERVICES - [0:0]\n");
    svc_declare(&mut out, i, backends);
    services_rules(&mut out, n, None);
    svc_rules(&mut out, i, backends);
    out.push_str("COMMIT\n");
    out
}

fn nft_service(out: &mut String, i: usize, backends: usize) {
    let svc = format!("service-{}", chain_hash("svc", i, 0));
    let _ = writeln!(out, "add chain ip kube-proxy {svc}");
    let mut vmap = Vec::new();
    for b in 0..backends {
        let epc = format!("endpoint-{}", chain_hash("sep", i, b));
        let ep = endpoint(i, b);
        let _ = writeln!(out, "add chain ip kube-proxy {epc}");
        let _ = writeln!(out, "flush chain ip kube-proxy {epc}");
        let _ = writeln!(
            out,
            "add rule ip kube-proxy {epc} ip saddr {ep} jump mark-for-masquerade"
        );
        let _ = writeln!(
            out,
            "add rule ip kube-proxy {epc} meta l4proto tcp dnat to {ep}:8080"
        );
        vmap.push(format!("{b} : goto {epc}"));
    }
    let _ = writeln!(out, "flush chain ip kube-proxy {svc}");
    let _ = writeln!(
        out,
        "add rule ip kube-proxy {svc} numgen random mod {backends} vmap {{ {} }}",
        vmap.join(" , ")
    );
}

const NFT_BASE: &str =
        "add table ip kube-proxy\n\
         add chain ip kube-proxy mark-for-masquerade\n\
         add rule ip kube-proxy mark-for-masquerade meta mark set meta mark or 0x4000\n\
         add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }\n\
         add chain ip kube-proxy services\n\
         add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips\n\
         add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority dstnat ; policy accept ; }\n\
         add rule ip kube-proxy nat-prerouting jump services\n";

/// kube-proxy's nftables-mode table for `n` Services of two endpoints.
pub fn nft_full(n: usize) -> String {
    let mut out = String::from(NFT_BASE);
    nft_services(&mut out, 0..n);
    out
}

/// The same table with the target among `n` Services, in transactions of
/// `chunk` Services each. nft's time for one transaction grows faster
/// than its size (10,000 Services take a minute whole, 18 s in chunks of
/// 1,000); the rules that result are the same.
pub fn nft_chunks_with(n: usize, target: Option<&Target>, chunk: usize) -> Vec<String> {
    let mut v = vec![String::from(NFT_BASE)];
    if let Some(t) = target {
        t.nft(&mut v[0]);
    }
    let mut start = 0;
    while start < n {
        let end = (start + chunk.max(1)).min(n);
        let mut out = String::new();
        nft_services(&mut out, start..end);
        v.push(out);
        start = end;
    }
    v
}

fn nft_services(out: &mut String, range: std::ops::Range<usize>) {
    for i in range.clone() {
        nft_service(out, i, 2);
    }
    for i in range {
        let (ip, port) = vip(i);
        let _ = writeln!(
            out,
            "add element ip kube-proxy service-ips {{ {ip} . tcp . {port} : goto service-{} }}",
            chain_hash("svc", i, 0)
        );
    }
}

/// kube-proxy's nftables partial sync after Service `i` changed.
pub fn nft_update(i: usize, backends: usize) -> String {
    let mut out = String::new();
    nft_service(&mut out, i, backends);
    out
}
