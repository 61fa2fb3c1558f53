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

/// `ethtool_channels` (linux/ethtool.h).
#[repr(C)]
#[derive(Default)]
struct Channels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

/// `struct ifreq` with its data pointer, as SIOCETHTOOL takes it.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: *mut Channels,
    _pad: [u8; 16],
}

/// The receive queues `ifname` has now (ETHTOOL_GCHANNELS), in the calling
/// thread's namespace; `None` where the driver does not say.
pub fn rx_queues(ifname: &str) -> Option<u32> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GCHANNELS: u32 = 0x3c;
    if ifname.len() >= libc::IFNAMSIZ {
        return None;
    }
    let mut ch = Channels {
        cmd: ETHTOOL_GCHANNELS,
        ..Channels::default()
    };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: &mut ch,
        _pad: [0; 16],
    };
    req.name[..ifname.len()].copy_from_slice(ifname.as_bytes());
    // SAFETY: a plain datagram socket, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `req` names the interface and points at `ch`, both alive for
    // the call; the kernel writes no more than `ethtool_channels`.
    let r = unsafe { libc::ioctl(fd, SIOCETHTOOL as _, &mut req as *mut IfReq) };
    // SAFETY: `fd` is ours.
    unsafe { libc::close(fd) };
    if r < 0 {
        return None;
    }
    let n = ch.rx_count.max(ch.combined_count);
    (n > 0).then_some(n)
}
