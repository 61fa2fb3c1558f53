//! The kernel as the node's dataplane, for the comparison: the lab's node
//! namespace routes between the pods' veths with ip_forward, and
//! kube-proxy's rules (iptables or nftables) do the Service's DNAT. Only
//! the lab's own namespaces are touched.

use std::process::{Command, Stdio};

use sluice_lab::file::{PlannedNode, PlannedPod};

/// Runs `script` with sh inside `netns`, through the lab's own set-up
/// runner (its errors name the command and carry its stderr).
fn sh(netns: &str, script: &str) -> Result<(), String> {
    sluice_lab::sh(&["ip", "netns", "exec", netns, "sh", "-ec", script])
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Makes the node a router for `pods`: forwarding on, reverse-path
/// filtering off (the generator's frames need no route back), a /32 and a
/// permanent neighbour per pod, and the gateway's MAC on every host end,
/// so that frames the pods address to their gateway are the node's own.
pub fn make_router(
    node: &PlannedNode,
    pods: &[&PlannedPod],
    gateway_mac: [u8; 6],
) -> Result<(), String> {
    let mac = |m: [u8; 6]| {
        m.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    let mut script = String::from(
        "sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
         net.ipv4.conf.default.rp_filter=0\n",
    );
    for p in pods {
        let d = &p.host_end;
        script.push_str(&format!(
            "sysctl -qw net.ipv4.conf.{d}.rp_filter=0\n\
             ip link set dev {d} address {}\n\
             ip route replace {}/32 dev {d}\n\
             ip neigh replace {} lladdr {} dev {d} nud permanent\n",
            mac(gateway_mac),
            p.ip,
            p.ip,
            mac(p.mac)
        ));
    }
    sh(&node.netns, &script)
}

/// Steers the receive processing of `dev` (in `netns`) to `core` with
/// RPS, or back to the receiving core with `None`.
pub fn steer(netns: &str, dev: &str, core: Option<usize>) -> Result<(), String> {
    let mask = core.map_or(0u64, |c| 1 << c);
    sh(
        netns,
        &format!("echo {mask:x} > /sys/class/net/{dev}/queues/rx-0/rps_cpus"),
    )
}

/// Removes every rule of the namespace (kube-proxy's tables in both
/// modes: iptables-nft writes nftables tables too) and its connections.
pub fn clear(netns: &str) -> Result<(), String> {
    sh(netns, "nft flush ruleset")?;
    clear_connections(netns)
}

/// Forgets the namespace's connections, so that the next phase starts
/// from new flows and their first packets cross the rules again.
pub fn clear_connections(netns: &str) -> Result<(), String> {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "conntrack", "-F"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("conntrack -F: {e} (apt-get install conntrack)"))?;
    // conntrack -F exits 1 when the table was already empty.
    if out.code().is_none_or(|c| c > 1) {
        return Err(format!(
            "conntrack -F in {netns}: {out} (is the conntrack package installed?)"
        ));
    }
    Ok(())
}
