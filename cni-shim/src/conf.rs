//! The network configuration on stdin, and the environment the runtime
//! sets (SPEC.md, "Parameters" and "Network configuration").

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::error::{code, CniError};

/// The versions this plugin speaks.
pub const SUPPORTED: &[&str] = &["1.0.0", "1.1.0"];

/// One address range of a pool, in host-local's shape.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Range {
    /// CIDR, e.g. 198.18.1.0/24 (the node's pod CIDR).
    pub subnet: String,
    #[serde(default)]
    pub range_start: Option<IpAddr>,
    #[serde(default)]
    pub range_end: Option<IpAddr>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ipam {
    /// `sluice` (or left out): this plugin's own host-local-style IPAM.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// One address per range set: a set for IPv4, a set for IPv6.
    pub ranges: Vec<Vec<Range>>,
    /// Where allocations are kept (default /var/lib/cni/networks).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
}

/// What the runtime passes on stdin. Unknown top-level keys are allowed
/// (runtimes add `runtimeConfig`, `args`, capabilities), unknown keys in
/// this plugin's own sections are not.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The pod's MTU: the underlay's less VXLAN's 50 bytes.
    #[serde(default = "default_mtu")]
    pub mtu: u32,
    #[serde(default = "default_admin")]
    pub admin_socket: PathBuf,
    pub ipam: Ipam,
    #[serde(default)]
    pub prev_result: Option<serde_json::Value>,
    /// GC (1.1): the attachments the runtime still knows.
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

fn default_mtu() -> u32 {
    1450
}

fn default_admin() -> PathBuf {
    PathBuf::from("/run/sluice/admin.sock")
}

impl NetConf {
    /// Parses and checks a configuration: decoding failures are code 6,
    /// versions this plugin does not speak code 1, bad values code 7.
    pub fn parse(stdin: &str) -> Result<NetConf, CniError> {
        let v: serde_json::Value = serde_json::from_str(stdin).map_err(|e| {
            CniError::new(
                code::DECODING_FAILURE,
                "the network configuration is not JSON",
                e.to_string(),
            )
        })?;
        let version = v.get("cniVersion").and_then(|x| x.as_str()).unwrap_or("");
        if !version.is_empty() && !SUPPORTED.contains(&version) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                "incompatible CNI version",
                format!("cniVersion {version:?}; this plugin supports {SUPPORTED:?}"),
            ));
        }
        let c: NetConf = serde_json::from_value(v).map_err(|e| {
            CniError::new(
                code::DECODING_FAILURE,
                "the network configuration does not decode",
                e.to_string(),
            )
        })?;
        c.check()?;
        Ok(c)
    }

    fn check(&self) -> Result<(), CniError> {
        let bad = |field: &str, why: String| {
            CniError::new(
                code::INVALID_NETWORK_CONFIG,
                format!("invalid network configuration: {field}"),
                why,
            )
        };
        if self.name.is_empty() || self.name.contains('/') || self.name.starts_with('.') {
            return Err(bad(
                "name",
                format!("{:?} cannot name a directory", self.name),
            ));
        }
        if !(576..=9000).contains(&self.mtu) {
            return Err(bad(
                "mtu",
                format!("{} is not between 576 and 9000", self.mtu),
            ));
        }
        match self.ipam.kind.as_deref() {
            None | Some("sluice") | Some("") => {}
            Some(other) => {
                return Err(bad(
                    "ipam.type",
                    format!("{other:?}: sluice-cni assigns addresses itself (type \"sluice\")"),
                ))
            }
        }
        if self.ipam.ranges.is_empty() || self.ipam.ranges.iter().any(|s| s.is_empty()) {
            return Err(bad("ipam.ranges", "no range, or an empty range set".into()));
        }
        for (i, set) in self.ipam.ranges.iter().enumerate() {
            for (j, r) in set.iter().enumerate() {
                crate::ipam::Pool::from_range(r)
                    .map_err(|why| bad(&format!("ipam.ranges[{i}][{j}]"), why))?;
            }
        }
        Ok(())
    }
}

/// The CNI_* variables.
#[derive(Clone, Debug, Default)]
pub struct Env {
    pub command: String,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub args: Option<String>,
    pub path: Option<String>,
}

impl Env {
    pub fn from_process() -> Env {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Env {
            command: get("CNI_COMMAND").unwrap_or_default(),
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            ifname: get("CNI_IFNAME"),
            args: get("CNI_ARGS"),
            path: get("CNI_PATH"),
        }
    }

    fn need<'a>(&self, v: &'a Option<String>, name: &str) -> Result<&'a str, CniError> {
        v.as_deref().ok_or_else(|| {
            CniError::new(
                code::INVALID_ENVIRONMENT,
                format!("{name} is not set"),
                format!("CNI_COMMAND={} needs {name}", self.command),
            )
        })
    }

    pub fn container_id(&self) -> Result<&str, CniError> {
        let id = self.need(&self.container_id, "CNI_CONTAINERID")?;
        // The spec: alphanumerics, then alphanumerics, '_', '.', '-'.
        let ok = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !ok {
            return Err(CniError::new(
                code::INVALID_ENVIRONMENT,
                "CNI_CONTAINERID is not a valid container id",
                format!("{id:?}"),
            ));
        }
        Ok(id)
    }

    pub fn ifname(&self) -> Result<&str, CniError> {
        let n = self.need(&self.ifname, "CNI_IFNAME")?;
        // Linux: at most 15 bytes, no '/', no whitespace, not . or ..
        if n.len() > 15
            || n == "."
            || n == ".."
            || n.contains('/')
            || n.contains(char::is_whitespace)
            || n.contains(':')
        {
            return Err(CniError::new(
                code::INVALID_ENVIRONMENT,
                "CNI_IFNAME is not a valid interface name",
                format!("{n:?}"),
            ));
        }
        Ok(n)
    }

    pub fn netns(&self) -> Result<&str, CniError> {
        self.need(&self.netns, "CNI_NETNS")
    }

    pub fn path(&self) -> Result<&str, CniError> {
        self.need(&self.path, "CNI_PATH")
    }
}
