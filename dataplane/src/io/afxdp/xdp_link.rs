//! The XDP programs on an interface, found and removed through libbpf's
//! own netlink calls (`bpf_xdp_query_id`, `bpf_xdp_detach`; libxdp links
//! libbpf already), rather than by reading `ip -d link` text. In the
//! calling thread's network namespace.

use std::ffi::CString;
use std::os::raw::{c_int, c_void};

extern "C" {
    fn bpf_xdp_query_id(ifindex: c_int, flags: c_int, prog_id: *mut u32) -> c_int;
    fn bpf_xdp_detach(ifindex: c_int, flags: u32, opts: *const c_void) -> c_int;
}

/// `XDP_FLAGS_SKB_MODE` and `XDP_FLAGS_DRV_MODE` (linux/if_link.h).
const MODES: [(u32, &str); 2] = [(1 << 1, "generic"), (1 << 2, "native")];

/// Why an interface's XDP programs could not be read or removed.
#[derive(Debug, PartialEq, Eq)]
pub enum XdpLinkError {
    /// No interface of that name in this namespace.
    NoSuchInterface(String),
    /// The kernel refused the query (its errno).
    Query { ifname: String, errno: i32 },
    /// The kernel refused to detach a program (its errno).
    Detach {
        ifname: String,
        mode: &'static str,
        errno: i32,
    },
}

impl std::fmt::Display for XdpLinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            XdpLinkError::NoSuchInterface(i) => write!(f, "no interface {i}"),
            XdpLinkError::Query { ifname, errno } => write!(
                f,
                "reading the XDP programs of {ifname}: {}",
                std::io::Error::from_raw_os_error(*errno)
            ),
            XdpLinkError::Detach {
                ifname,
                mode,
                errno,
            } => write!(
                f,
                "detaching the {mode} XDP program of {ifname}: {}",
                std::io::Error::from_raw_os_error(*errno)
            ),
        }
    }
}

impl std::error::Error for XdpLinkError {}

fn ifindex(ifname: &str) -> Result<c_int, XdpLinkError> {
    let name = CString::new(ifname).map_err(|_| XdpLinkError::NoSuchInterface(ifname.into()))?;
    // SAFETY: `name` is a NUL-terminated string that outlives the call.
    let i = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if i == 0 {
        return Err(XdpLinkError::NoSuchInterface(ifname.into()));
    }
    Ok(i as c_int)
}

/// The ids of the XDP programs on `ifname`, generic and native (0: none).
pub fn attached(ifname: &str) -> Result<[u32; 2], XdpLinkError> {
    let index = ifindex(ifname)?;
    let mut ids = [0u32; 2];
    for (id, (flag, _)) in ids.iter_mut().zip(MODES) {
        // SAFETY: `id` is a valid place for the answer for the call's length.
        let r = unsafe { bpf_xdp_query_id(index, flag as c_int, id) };
        if r < 0 {
            return Err(XdpLinkError::Query {
                ifname: ifname.into(),
                errno: -r,
            });
        }
    }
    Ok(ids)
}

/// Detaches every XDP program on `ifname`; whether there was one.
pub fn detach_all(ifname: &str) -> Result<bool, XdpLinkError> {
    let ids = attached(ifname)?;
    let index = ifindex(ifname)?;
    for (&id, (flag, mode)) in ids.iter().zip(MODES) {
        if id == 0 {
            continue;
        }
        // SAFETY: no options (NULL): detach whatever program is attached
        // in this mode.
        let r = unsafe { bpf_xdp_detach(index, flag, std::ptr::null()) };
        if r < 0 {
            return Err(XdpLinkError::Detach {
                ifname: ifname.into(),
                mode,
                errno: -r,
            });
        }
    }
    Ok(ids.iter().any(|&id| id != 0))
}
