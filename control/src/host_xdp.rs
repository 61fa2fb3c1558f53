//! The host's side of AF_XDP: XDP programs on the node's interfaces
//! (found and removed), and the bpffs libxdp keeps its state in.

/// Detaches whatever XDP program is on `ifname` (in `netns`): a program a
/// killed daemon left behind would otherwise keep redirecting the
/// interface's frames to a socket that no longer exists. Returns whether
/// there was one. Through netlink (libbpf's calls), from a thread that
/// enters the namespace; a failure is logged with its reason.
#[cfg(feature = "afxdp")]
pub fn detach_xdp(netns: Option<&str>, ifname: &str) -> bool {
    use sluice_dataplane::io::afxdp::xdp_link::{self, XdpLinkError};
    let (ns, name) = (netns.map(str::to_string), ifname.to_string());
    let r = std::thread::spawn(move || {
        if let Some(ns) = &ns {
            sluice_dataplane::io::tap::enter_netns(ns)
                .map_err(|e| format!("network namespace {ns}: {e}"))?;
        }
        Ok(xdp_link::detach_all(&name))
    })
    .join()
    .unwrap_or_else(|_| Err("the netlink thread panicked".to_string()));
    match r {
        Ok(Ok(had)) => had,
        // Gone already: nothing on it.
        Ok(Err(XdpLinkError::NoSuchInterface(_))) => false,
        Ok(Err(e)) => {
            eprintln!("sluice: {e}");
            false
        }
        Err(e) => {
            eprintln!("sluice: detaching XDP from {ifname}: {e}");
            false
        }
    }
}

/// Without AF_XDP the daemon attaches no XDP program.
#[cfg(not(feature = "afxdp"))]
pub fn detach_xdp(_netns: Option<&str>, _ifname: &str) -> bool {
    false
}

/// The receive queues `ifname` (in `netns`) has, where its driver says
/// (ETHTOOL_GCHANNELS, from a thread in the namespace).
#[cfg(feature = "afxdp")]
pub fn rx_queues(netns: Option<&str>, ifname: &str) -> Option<u32> {
    let (ns, name) = (netns.map(str::to_string), ifname.to_string());
    std::thread::spawn(move || {
        if let Some(ns) = &ns {
            sluice_dataplane::io::tap::enter_netns(ns).ok()?;
        }
        sluice_dataplane::io::afxdp::xdp_link::rx_queues(&name)
    })
    .join()
    .ok()
    .flatten()
}

/// Without AF_XDP no queue is bound.
#[cfg(not(feature = "afxdp"))]
pub fn rx_queues(_netns: Option<&str>, _ifname: &str) -> Option<u32> {
    None
}

/// Mounts bpffs at /sys/fs/bpf if nothing is mounted there: libxdp keeps
/// its dispatcher's state in it. Without it (or where the kernel refuses
/// the dispatcher, as this project's does: docs/afxdp.md) libxdp loads a
/// single program per interface, which is all Sluice needs.
pub fn ensure_bpffs() {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&"/sys/fs/bpf") && f.get(2) == Some(&"bpf")
    }) {
        return;
    }
    let ok = std::process::Command::new("mount")
        .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        eprintln!("sluice: mounted bpffs at /sys/fs/bpf for libxdp");
    } else {
        eprintln!("sluice: no bpffs at /sys/fs/bpf and it could not be mounted; libxdp loads a single program per interface");
    }
}
