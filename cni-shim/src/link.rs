//! The pod's veth pair, through iproute2 and ethtool as a node has them:
//! the host end stays in the plugin's namespace (the node's), the pod end
//! is created straight into CNI_NETNS under CNI_IFNAME. Commands inside
//! the pod's namespace run under nsenter, which takes the namespace as a
//! path (/var/run/netns/NAME or /proc/PID/ns/net alike).

use std::net::IpAddr;
use std::process::Command;

/// The link-local gateway every pod routes through; the dataplane answers
/// ARP and NDP for it (DESIGN.md, neighbor).
pub const GATEWAY4: &str = "169.254.1.1";
pub const GATEWAY6: &str = "fe80::1";

/// The host end's name: stable for a container's interface, so that DEL
/// and GC find it from the ids alone. 15 bytes, Linux's limit.
pub fn host_name(container_id: &str, ifname: &str) -> String {
    // FNV-1a, 64 bits: no dependency, and 48 of its bits make a
    // collision between two pods of one node unlikely (2^-24 at 4,000).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in container_id.bytes().chain([0]).chain(ifname.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("slc{:012x}", h >> 16)
}

/// The pod's MAC, from its first address: locally administered, unicast,
/// and readable (02:53 then the IPv4 address, as the lab's).
pub fn mac_for(ip: IpAddr) -> [u8; 6] {
    let t = match ip {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(a) => {
            let o = a.octets();
            [o[12], o[13], o[14], o[15]]
        }
    };
    [0x02, 0x53, t[0], t[1], t[2], t[3]]
}

pub fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn run(c: &mut Command) -> Result<String, String> {
    let out = c
        .output()
        .map_err(|e| format!("{:?}: {e}", c.get_program()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        Err(format!(
            "{} {}: {}",
            c.get_program().to_string_lossy(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip(args: &[&str]) -> Result<String, String> {
    run(Command::new("ip").args(args))
}

fn in_netns(netns: &str, program: &str, args: &[&str]) -> Result<String, String> {
    run(Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .arg(program)
        .args(args))
}

/// Whether the namespace file can be opened (the sandbox exists).
pub fn netns_exists(netns: &str) -> bool {
    std::fs::File::open(netns).is_ok()
}

/// Whether `ifname` exists in `netns`.
pub fn exists_in(netns: &str, ifname: &str) -> Result<bool, String> {
    let out = Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .args(["ip", "-o", "link", "show", "dev", ifname])
        .output()
        .map_err(|e| format!("nsenter: {e}"))?;
    if out.status.success() {
        return Ok(true);
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("does not exist") {
        Ok(false)
    } else {
        Err(format!(
            "nsenter --net={netns} ip link show {ifname}: {}",
            err.trim()
        ))
    }
}

/// Whether the host end exists (in the plugin's namespace).
pub fn host_exists(name: &str) -> bool {
    // Not /sys/class/net: sysfs shows the namespace it was mounted in,
    // which need not be the plugin's.
    ip(&["-o", "link", "show", "dev", name]).is_ok()
}

/// What ADD sets up.
pub struct Plan<'a> {
    pub netns: &'a str,
    pub ifname: &'a str,
    pub host: &'a str,
    /// A queue per dataplane worker, on both ends.
    pub queues: usize,
    pub mtu: u32,
    pub mac: [u8; 6],
    pub addrs: &'a [IpAddr],
}

/// Creates the pair and configures the pod's end. On an error the caller
/// deletes the host end, which takes the pod's end with it.
pub fn create(p: &Plan<'_>) -> Result<(), String> {
    let q = p.queues.max(1).to_string();
    let mtu = p.mtu.to_string();
    // A queue per worker and the MTU on both ends.
    let each = format!("mtu {mtu} numtxqueues {q} numrxqueues {q}");
    let add = format!(
        "link add {} {each} type veth peer name {} {each} netns",
        p.host, p.ifname
    );
    // The namespace's path as given, whatever it holds.
    let mut args: Vec<&str> = add.split_whitespace().collect();
    args.push(p.netns);
    ip(&args)?;
    let ns = |args: &[&str]| in_netns(p.netns, "ip", args);
    // No duplicate address detection: the addresses are the IPAM's alone,
    // and DAD would hold IPv6 back for a second.
    let _ = in_netns(
        p.netns,
        "sysctl",
        &["-qw", &format!("net.ipv6.conf.{}.accept_dad=0", p.ifname)],
    );
    ns(&["link", "set", "lo", "up"])?;
    ns(&["link", "set", p.ifname, "address", &mac_str(p.mac), "up"])?;
    let mut v4 = false;
    let mut v6 = false;
    for a in p.addrs {
        match a {
            IpAddr::V4(_) => {
                ns(&["addr", "add", &format!("{a}/32"), "dev", p.ifname])?;
                v4 = true;
            }
            IpAddr::V6(_) => {
                ns(&[
                    "-6",
                    "addr",
                    "add",
                    &format!("{a}/128"),
                    "dev",
                    p.ifname,
                    "nodad",
                ])?;
                v6 = true;
            }
        }
    }
    if v4 {
        ns(&["route", "add", GATEWAY4, "dev", p.ifname, "scope", "link"])?;
        ns(&["route", "add", "default", "via", GATEWAY4, "dev", p.ifname])?;
    }
    if v6 {
        ns(&[
            "-6", "route", "add", "default", "via", GATEWAY6, "dev", p.ifname,
        ])?;
    }
    // AF_XDP sees the bytes as sent: full checksums, and no segment larger
    // than a frame (DESIGN.md, known pitfalls on veth).
    in_netns(
        p.netns,
        "ethtool",
        &[
            "-K", p.ifname, "tx", "off", "tso", "off", "gso", "off", "gro", "off",
        ],
    )?;
    ip(&["link", "set", p.host, "up"])?;
    Ok(())
}

/// Deletes the host end (and with it the pod's end). Whether it existed.
pub fn delete_host(name: &str) -> bool {
    ip(&["link", "del", "dev", name]).is_ok()
}

/// The MAC of an interface in the plugin's namespace.
pub fn host_mac(name: &str) -> Option<String> {
    let out = ip(&["-j", "link", "show", "dev", name]).ok()?;
    let v: serde_json::Value = serde_json::from_str(&out).ok()?;
    v.get(0)?.get("address")?.as_str().map(str::to_string)
}

/// The global addresses of `ifname` in `netns`, and its MTU.
pub fn inspect(netns: &str, ifname: &str) -> Result<(Vec<IpAddr>, u32, String), String> {
    let out = in_netns(netns, "ip", &["-j", "addr", "show", "dev", ifname])?;
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    let link = v
        .get(0)
        .ok_or_else(|| format!("{ifname}: no such interface"))?;
    let mtu = link.get("mtu").and_then(|m| m.as_u64()).unwrap_or(0) as u32;
    let mac = link
        .get("address")
        .and_then(|m| m.as_str())
        .unwrap_or("")
        .to_string();
    let addrs = link
        .get("addr_info")
        .and_then(|a| a.as_array())
        .map(|a| {
            a.iter()
                .filter(|i| i.get("scope").and_then(|s| s.as_str()) == Some("global"))
                .filter_map(|i| i.get("local")?.as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    Ok((addrs, mtu, mac))
}

/// Whether `netns` has a default route via the gateway for each family
/// it has an address of.
pub fn has_default_routes(netns: &str, v4: bool, v6: bool) -> Result<bool, String> {
    let r4 = if v4 {
        in_netns(netns, "ip", &["route", "show", "default"])?.contains(GATEWAY4)
    } else {
        true
    };
    let r6 = if v6 {
        in_netns(netns, "ip", &["-6", "route", "show", "default"])?.contains(GATEWAY6)
    } else {
        true
    };
    Ok(r4 && r6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_fit_linux_and_differ_per_interface() {
        let a = host_name("0123456789abcdef", "eth0");
        let b = host_name("0123456789abcdef", "eth1");
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("slc"));
        assert_ne!(a, b);
        assert_eq!(a, host_name("0123456789abcdef", "eth0"));
    }

    #[test]
    fn macs_are_local_unicast() {
        let m = mac_for("198.18.1.7".parse().unwrap());
        assert_eq!(mac_str(m), "02:53:c6:12:01:07");
        assert_eq!(m[0] & 0x03, 0x02);
    }
}
