//! The CNI commands: ADD, DEL, CHECK, VERSION, GC, STATUS.

use std::net::IpAddr;
use std::path::PathBuf;

use serde_json::{json, Value};

use crate::conf::{Env, NetConf, SUPPORTED};
use crate::daemon::{ask, AskError};
use crate::error::{code, CniError};
use crate::ipam::{Owner, Pool, Store};
use crate::link;
use sluice_admin::{Command, ErrorCode};

/// What the plugin prints and how it exits.
#[derive(Debug, PartialEq, Eq)]
pub struct Output {
    pub stdout: String,
    pub status: i32,
}

const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// Runs one invocation.
pub fn run(env: &Env, stdin: &str) -> Output {
    // Errors are printed in the configuration's version when it has one
    // this plugin speaks, else in the newest.
    let version = serde_json::from_str::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
        .filter(|v| SUPPORTED.contains(&v.as_str()))
        .unwrap_or_else(|| SUPPORTED[SUPPORTED.len() - 1].to_string());
    let result = match env.command.as_str() {
        "VERSION" => Ok(Some(
            json!({"cniVersion": version, "supportedVersions": SUPPORTED}).to_string(),
        )),
        "ADD" => with_conf(stdin, |c| add(env, c)).map(Some),
        "DEL" => with_conf(stdin, |c| del(env, c)).map(|()| None),
        "CHECK" => with_conf(stdin, |c| check(env, c)).map(|()| None),
        "GC" => with_conf(stdin, |c| gc(env, c)).map(|()| None),
        "STATUS" => with_conf(stdin, status).map(|()| None),
        "" => Err(CniError::new(
            code::INVALID_ENVIRONMENT,
            "CNI_COMMAND is not set",
            "one of ADD, DEL, CHECK, VERSION, GC, STATUS",
        )),
        other => Err(CniError::new(
            code::INVALID_ENVIRONMENT,
            "unknown CNI_COMMAND",
            format!("{other:?}: one of ADD, DEL, CHECK, VERSION, GC, STATUS"),
        )),
    };
    match result {
        Ok(out) => Output {
            stdout: out.unwrap_or_default(),
            status: 0,
        },
        Err(e) => Output {
            stdout: e.to_json(&version),
            status: 1,
        },
    }
}

fn with_conf<T>(
    stdin: &str,
    f: impl FnOnce(&NetConf) -> Result<T, CniError>,
) -> Result<T, CniError> {
    let c = NetConf::parse(stdin)?;
    f(&c)
}

/// host-local's `IP=` in CNI_ARGS: the addresses asked for, one per
/// range set at most, comma-separated.
fn requested_ips(env: &Env) -> Result<Vec<IpAddr>, CniError> {
    let Some(a) = &env.args else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for kv in a.split(';') {
        if let Some(v) = kv.strip_prefix("IP=") {
            for ip in v.split(',').filter(|s| !s.is_empty()) {
                out.push(ip.trim().parse().map_err(|_| {
                    CniError::new(
                        code::INVALID_ENVIRONMENT,
                        "CNI_ARGS IP= is not a list of addresses",
                        format!("{ip:?}"),
                    )
                })?);
            }
        }
    }
    Ok(out)
}

fn check_args(env: &Env) -> Result<(), CniError> {
    // KEY=VALUE pairs separated by semicolons; keys this plugin does not
    // know are ignored, as runtimes pass their own (K8S_POD_NAME, ...).
    if let Some(a) = &env.args {
        for kv in a.split(';').filter(|s| !s.is_empty()) {
            if !kv.contains('=') || kv.starts_with('=') {
                return Err(CniError::new(
                    code::INVALID_ENVIRONMENT,
                    "CNI_ARGS is not KEY=VALUE;KEY=VALUE",
                    format!("{kv:?} in {a:?}"),
                ));
            }
        }
    }
    Ok(())
}

fn data_dir(c: &NetConf) -> PathBuf {
    c.ipam
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
}

fn pools(c: &NetConf) -> Vec<Vec<Pool>> {
    // Checked when the configuration was parsed.
    c.ipam
        .ranges
        .iter()
        .map(|set| {
            set.iter()
                .filter_map(|r| Pool::from_range(r).ok())
                .collect()
        })
        .collect()
}

fn daemon_error(e: AskError) -> CniError {
    match e {
        AskError::NotRunning(m) => {
            CniError::new(code::TRY_AGAIN_LATER, "the Sluice daemon is not running", m)
        }
        // CNI's "try again later": the runtime retries the ADD.
        AskError::Refused(e) if e.code == ErrorCode::Busy => CniError::new(
            code::TRY_AGAIN_LATER,
            "the Sluice daemon is still attaching this interface",
            e.message,
        ),
        AskError::Refused(e) => {
            let what = match e.code {
                ErrorCode::MaxPods => "the node has as many pods as it takes (--max-pods)",
                ErrorCode::UnsupportedVersion => {
                    "the Sluice daemon speaks another version of the admin protocol"
                }
                _ => "the Sluice daemon refused",
            };
            CniError::new(code::SETUP_FAILED, what, e.message)
        }
        AskError::Garbled(m) => CniError::new(
            code::SETUP_FAILED,
            "the Sluice daemon's answer is garbled",
            m,
        ),
    }
}

fn setup_error(what: &str) -> impl Fn(String) -> CniError + '_ {
    move |m| CniError::new(code::SETUP_FAILED, what.to_string(), m)
}

fn add(env: &Env, c: &NetConf) -> Result<String, CniError> {
    let id = env.container_id()?;
    let ifname = env.ifname()?;
    let netns = env.netns()?;
    env.path()?;
    check_args(env)?;
    let requested = requested_ips(env)?;
    if !link::netns_exists(netns) {
        return Err(CniError::new(
            code::UNKNOWN_CONTAINER,
            "the container's network namespace does not exist",
            format!("CNI_NETNS={netns}"),
        ));
    }
    // The daemon first: without it the pod would have an interface that
    // goes nowhere. Its worker count is the queues the veth needs.
    let status = ask(&c.admin_socket, Command::Status)
        .map_err(daemon_error)?
        .status
        .ok_or_else(|| {
            CniError::new(
                code::SETUP_FAILED,
                "the Sluice daemon gave no status",
                c.admin_socket.display().to_string(),
            )
        })?;
    let queues = status.workers.max(1);
    if link::exists_in(netns, ifname).map_err(setup_error("cannot look into the namespace"))? {
        return Err(CniError::new(
            code::INTERFACE_EXISTS,
            "the interface exists in the container already",
            format!("{ifname} in {netns}"),
        ));
    }
    let host = link::host_name(id, ifname);
    let owner = Owner {
        container_id: id.to_string(),
        ifname: ifname.to_string(),
    };
    let allocated = {
        let store = Store::lock(&data_dir(c), &c.name)?;
        store.allocate_with(&pools(c), &owner, &requested)?
    };
    let addrs: Vec<IpAddr> = allocated.iter().map(|(ip, _)| *ip).collect();
    let mac = link::mac_for(addrs[0]);
    let undo = |e: CniError| -> CniError {
        link::delete_host(&host);
        if let Ok(store) = Store::lock(&data_dir(c), &c.name) {
            store.release(&owner);
        }
        e
    };
    if link::host_exists(&host) {
        // A half-finished ADD of this container's interface: start over.
        link::delete_host(&host);
    }
    link::create(&link::Plan {
        netns,
        ifname,
        host: &host,
        queues,
        mtu: c.mtu,
        mac,
        addrs: &addrs,
    })
    .map_err(|m| {
        undo(CniError::new(
            code::SETUP_FAILED,
            "cannot set up the pod's interface",
            m,
        ))
    })?;
    ask(
        &c.admin_socket,
        Command::Attach {
            ifname: host.clone(),
            addrs: addrs.clone(),
            mac: link::mac_str(mac),
            owner: Some(format!("{id}/{ifname}")),
        },
    )
    .map_err(|e| undo(daemon_error(e)))?;
    Ok(result(c, env, &host, ifname, netns, mac, &allocated).to_string())
}

/// The ADD result: after the previous plugins' (when chained), the host
/// end, the pod's end, its addresses and routes.
fn result(
    c: &NetConf,
    _env: &Env,
    host: &str,
    ifname: &str,
    netns: &str,
    mac: [u8; 6],
    allocated: &[(IpAddr, Pool)],
) -> Value {
    let prev = c.prev_result.clone().unwrap_or_else(|| json!({}));
    let mut interfaces: Vec<Value> = prev
        .get("interfaces")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut ips: Vec<Value> = prev
        .get("ips")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut routes: Vec<Value> = prev
        .get("routes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut host_if = json!({"name": host});
    if let Some(m) = link::host_mac(host) {
        host_if["mac"] = json!(m);
    }
    interfaces.push(host_if);
    let mut pod_if = json!({"name": ifname, "mac": link::mac_str(mac), "sandbox": netns});
    if c.cni_version == "1.1.0" {
        pod_if["mtu"] = json!(c.mtu);
    }
    interfaces.push(pod_if);
    let pod_index = interfaces.len() - 1;
    for (ip, _pool) in allocated {
        let (len, gw) = if ip.is_ipv4() {
            (32, link::GATEWAY4)
        } else {
            (128, link::GATEWAY6)
        };
        ips.push(json!({"address": format!("{ip}/{len}"), "gateway": gw, "interface": pod_index}));
    }
    if allocated.iter().any(|(ip, _)| ip.is_ipv4()) {
        routes.push(json!({"dst": "0.0.0.0/0", "gw": link::GATEWAY4}));
    }
    if allocated.iter().any(|(ip, _)| ip.is_ipv6()) {
        routes.push(json!({"dst": "::/0", "gw": link::GATEWAY6}));
    }
    json!({
        "cniVersion": c.cni_version,
        "interfaces": interfaces,
        "ips": ips,
        "routes": routes,
        "dns": prev.get("dns").cloned().unwrap_or_else(|| json!({})),
    })
}

/// Undoes an attachment, whatever of it exists: the daemon's port, the
/// veth, the addresses. Best effort; what was already gone is fine.
fn teardown(c: &NetConf, owner: &Owner, store: &Store) -> Result<(), CniError> {
    let host = link::host_name(&owner.container_id, &owner.ifname);
    match ask(
        &c.admin_socket,
        Command::Detach {
            ifname: host.clone(),
        },
    ) {
        // A daemon that is not running has nothing attached.
        Ok(_) | Err(AskError::NotRunning(_)) => {}
        Err(e) => {
            return Err(CniError::new(
                code::TRY_AGAIN_LATER,
                "the Sluice daemon could not detach the interface",
                e.to_string(),
            ))
        }
    }
    link::delete_host(&host);
    store.release(owner);
    Ok(())
}

fn del(env: &Env, c: &NetConf) -> Result<(), CniError> {
    let id = env.container_id()?;
    let ifname = env.ifname()?;
    env.path()?;
    check_args(env)?;
    let owner = Owner {
        container_id: id.to_string(),
        ifname: ifname.to_string(),
    };
    let store = Store::lock(&data_dir(c), &c.name)?;
    teardown(c, &owner, &store)
}

fn check_failed(what: impl Into<String>, details: impl Into<String>) -> CniError {
    CniError::new(code::CHECK_FAILED, what, details)
}

fn check(env: &Env, c: &NetConf) -> Result<(), CniError> {
    let id = env.container_id()?;
    let ifname = env.ifname()?;
    let netns = env.netns()?;
    env.path()?;
    check_args(env)?;
    if c.prev_result.is_none() {
        return Err(CniError::new(
            code::INVALID_NETWORK_CONFIG,
            "CHECK needs prevResult",
            "the runtime passes the ADD result as prevResult",
        ));
    }
    let owner = Owner {
        container_id: id.to_string(),
        ifname: ifname.to_string(),
    };
    let want: Vec<IpAddr> = Store::lock(&data_dir(c), &c.name)?.of(&owner);
    if want.is_empty() {
        return Err(check_failed(
            "no address is allocated to this interface",
            format!("{id}/{ifname}"),
        ));
    }
    let (have, mtu, _mac) = link::inspect(netns, ifname)
        .map_err(|m| check_failed("the pod's interface is missing", m))?;
    for a in &want {
        if !have.contains(a) {
            return Err(check_failed(
                "the pod's interface lacks its address",
                format!("{ifname} in {netns} has {have:?}, not {a}"),
            ));
        }
    }
    if mtu != c.mtu {
        return Err(check_failed(
            "the pod's MTU changed",
            format!("{mtu}, not {}", c.mtu),
        ));
    }
    let routes = link::has_default_routes(
        netns,
        want.iter().any(IpAddr::is_ipv4),
        want.iter().any(IpAddr::is_ipv6),
    )
    .map_err(|m| check_failed("cannot read the pod's routes", m))?;
    if !routes {
        return Err(check_failed(
            "the pod's default route is gone",
            format!("in {netns}"),
        ));
    }
    let host = link::host_name(id, ifname);
    if !link::host_exists(&host) {
        return Err(check_failed("the host end of the veth is gone", host));
    }
    let status = ask(&c.admin_socket, Command::Status).map_err(daemon_error)?;
    let attached = status
        .status
        .is_some_and(|s| s.interfaces.iter().any(|i| i.ifname == host));
    if !attached {
        return Err(check_failed(
            "the dataplane has not attached the pod's interface",
            format!("{host} is not in `sluice status`"),
        ));
    }
    Ok(())
}

fn gc(env: &Env, c: &NetConf) -> Result<(), CniError> {
    env.path()?;
    let valid = c.valid_attachments.clone().unwrap_or_default();
    let store = Store::lock(&data_dir(c), &c.name)?;
    let mut owners: Vec<Owner> = Vec::new();
    for (_, o) in store.allocations() {
        let listed = valid
            .iter()
            .any(|v| v.container_id == o.container_id && v.ifname == o.ifname);
        if !listed && !owners.contains(&o) {
            owners.push(o);
        }
    }
    let mut first_error = None;
    for o in &owners {
        if let Err(e) = teardown(c, o, &store) {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn status(c: &NetConf) -> Result<(), CniError> {
    if let Err(e) = ask(&c.admin_socket, Command::Status) {
        // No dataplane: new pods cannot be wired, and the pods there are
        // have no forwarding either.
        return Err(CniError::new(
            code::LIMITED_CONNECTIVITY,
            "the Sluice daemon is not running",
            e.to_string(),
        ));
    }
    let allocations = Store::lock(&data_dir(c), &c.name)?.allocations();
    // Per set: ADD needs one address of each, so one full set is enough
    // to refuse.
    for (i, set) in pools(c).iter().enumerate() {
        let size: u128 = set.iter().map(Pool::size).sum();
        let used = allocations
            .iter()
            .filter(|(ip, _)| set.iter().any(|p| p.holds(*ip)))
            .count() as u128;
        if used >= size {
            return Err(CniError::new(
                code::NOT_AVAILABLE,
                "no free address",
                format!("range set {i}: all {size} addresses are allocated"),
            ));
        }
    }
    Ok(())
}
