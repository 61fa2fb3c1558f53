//! The interface the workers' shared UMEMs are anchored on: a veth pair in
//! the node's namespace that lives as long as the daemon, with a queue per
//! worker. Each worker binds its UMEM's first socket to its queue of it
//! (no XDP program is loaded there, and nothing is received on it), so
//! that no pod's socket owns a UMEM and pods come and go in any order
//! (dataplane::io::afxdp's module comment says why the first socket
//! matters).

use std::process::{Command, Stdio};

/// The anchor's name, and its peer's (a veth always has one; it stays
/// down and unused).
pub const ANCHOR: &str = "sluice-umem";
const PEER: &str = "sluice-umem-p";

fn ip(netns: Option<&str>) -> Command {
    let mut c = Command::new("ip");
    if let Some(ns) = netns {
        c.args(["-n", ns]);
    }
    c
}

/// The anchor's queue count, if it exists.
fn queues(netns: Option<&str>) -> Option<u32> {
    let out = ip(netns)
        .args(["-d", "link", "show", "dev", ANCHOR])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "numrxqueues" {
            return words.next()?.parse().ok();
        }
    }
    Some(1)
}

/// Makes sure the anchor exists in `netns` with at least `workers` queues:
/// one a daemon left (a crash, a restart) is reused, one with too few
/// queues is made again.
pub fn ensure(netns: Option<&str>, workers: usize) -> Result<(), String> {
    let want = workers.max(1) as u32;
    match queues(netns) {
        Some(n) if n >= want => return Ok(()),
        Some(_) => remove(netns),
        None => {}
    }
    let n = want.to_string();
    let out = ip(netns)
        .args(["link", "add", ANCHOR, "numtxqueues", &n, "numrxqueues", &n])
        .args(["type", "veth", "peer", "name", PEER])
        .args(["numtxqueues", &n, "numrxqueues", &n])
        .output()
        .map_err(|e| format!("ip link add {ANCHOR}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "the UMEM anchor {ANCHOR}: ip link add: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Removes the anchor (the daemon stopped; its sockets are closed).
pub fn remove(netns: Option<&str>) {
    let _ = ip(netns)
        .args(["link", "del", ANCHOR])
        .stderr(Stdio::null())
        .status();
}
