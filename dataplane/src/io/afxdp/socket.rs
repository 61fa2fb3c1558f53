//! Opening and closing AF_XDP sockets through libxdp (xsk-rs), and what
//! libxdp needs around it: its output silenced, one open at a time, and
//! the descriptors it leaks closed.

use xsk_rs::config::{BindFlags, LibxdpFlags, QueueSize, SocketConfig, XdpFlags};
use xsk_rs::{CompQueue, FillQueue, RxQueue, TxQueue, Umem};

use super::{AfXdpConfig, AfXdpError};

/// A socket bound to one (interface, queue) over a pool's UMEM.
pub(super) struct Port {
    /// The pool this port's rings take frames from.
    pub pool: usize,
    /// Frames produced on TX since the last wake-up.
    pub tx_queued: usize,
    /// Frames on the TX ring or sent and not yet completed.
    pub in_tx: usize,
    pub fq: FillQueue,
    pub cq: CompQueue,
    pub rx: RxQueue,
    pub tx: TxQueue,
    /// The interface's MTU when the socket was opened (0: unknown).
    pub mtu: u16,
    /// Descriptors libxdp opened for this socket and will not close
    /// (`close_libxdp_leaks`).
    libxdp_fds: Vec<(i32, u64)>,
}

/// Whether libxdp loads its redirecting program on the interface: for a
/// pod's port yes; for a pool's anchor no (nothing is to be received on
/// it, and the interface keeps no program).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Program {
    Load,
    Inhibit,
}

type PrintFn = unsafe extern "C" fn(
    level: libc::c_int,
    fmt: *const libc::c_char,
    args: *mut libc::c_void,
) -> libc::c_int;

extern "C" {
    fn libbpf_set_print(f: Option<PrintFn>) -> Option<PrintFn>;
    fn libxdp_set_print(f: Option<PrintFn>) -> Option<PrintFn>;
}

unsafe extern "C" fn quiet(
    _: libc::c_int,
    _: *const libc::c_char,
    _: *mut libc::c_void,
) -> libc::c_int {
    0
}

/// libbpf and libxdp print their progress to stderr (the ELF sections
/// they skip, the dispatcher they fall back from, docs/afxdp.md), which on
/// this kernel is a screenful per socket. Their failures reach us as error
/// codes anyway, so they are silenced unless SLUICE_LIBXDP_LOG is set.
pub(super) fn quiet_libxdp() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("SLUICE_LIBXDP_LOG").is_none() {
            // SAFETY: both install a print callback (ours ignores its
            // arguments); they are called before any socket is created.
            unsafe {
                libbpf_set_print(Some(quiet));
                libxdp_set_print(Some(quiet));
            }
        }
    });
}

/// Held while libxdp opens or closes a socket: libxdp attaches its
/// program with an interface's first socket and finds it for the next (two
/// first sockets at once would both attach), and `close_libxdp_leaks`
/// tells libxdp's descriptors from others by what appeared during an open.
static LIBXDP: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// This process's BPF map descriptors and their map ids.
fn bpf_map_fds() -> Vec<(i32, u64)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let fd: i32 = e.file_name().to_str()?.parse().ok()?;
            map_id(fd).map(|id| (fd, id))
        })
        .collect()
}

/// The id of the BPF map `fd` refers to, if it refers to one.
fn map_id(fd: i32) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    if link.to_str() != Some("anon_inode:bpf-map") {
        return None;
    }
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("map_id:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Closes what libxdp left open of a closed socket's descriptors. libxdp
/// 1.6 looks up its program's reference-count map for every socket and
/// never closes that descriptor (xdp-tools #576, fixed upstream after the
/// release xsk-rs builds): one per socket, and the map keeps the
/// program's objects alive. Whatever of `opened` still refers to the same
/// map after the socket closed is that leak (libxdp closes its other
/// descriptors with the socket, and nothing else opens BPF maps while
/// `LIBXDP` is held).
fn close_libxdp_leaks(opened: &[(i32, u64)]) {
    for &(fd, id) in opened {
        if map_id(fd) == Some(id) {
            // SAFETY: the descriptor is libxdp's and libxdp no longer uses
            // it: its socket is deleted.
            unsafe {
                libc::close(fd);
            }
        }
    }
}

/// Closes a port's socket, then what libxdp left open of it.
pub(super) fn close_port(mut port: Port) {
    let fds = std::mem::take(&mut port.libxdp_fds);
    let _libxdp = LIBXDP.lock().unwrap_or_else(|p| p.into_inner());
    drop(port);
    close_libxdp_leaks(&fds);
}

/// Opens a socket on `name`'s queue `cfg.queue` over `umem` (pool `pool`
/// of its backend), in the calling thread's network namespace.
pub(super) fn open_socket(
    name: &str,
    cfg: AfXdpConfig,
    umem: &Umem,
    pool: usize,
    program: Program,
) -> Result<Port, AfXdpError> {
    let q =
        |n: u32| QueueSize::new(n).map_err(|e| AfXdpError::Config(format!("ring size {n}: {e}")));
    let mut builder = SocketConfig::builder();
    builder
        .rx_queue_size(q(cfg.ring)?)
        .tx_queue_size(q(cfg.ring)?)
        .xdp_flags(XdpFlags::XDP_FLAGS_SKB_MODE)
        .bind_flags(BindFlags::XDP_COPY | BindFlags::XDP_USE_NEED_WAKEUP);
    if program == Program::Inhibit {
        builder.libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD);
    }
    let scfg = builder.build();
    let ifname = name
        .parse()
        .map_err(|e| AfXdpError::Config(format!("interface {name}: {e}")))?;
    let socket_error = |reason: String| AfXdpError::Socket {
        port: name.to_string(),
        queue: cfg.queue,
        reason,
    };
    // The kernel unbinds a queue from a closed socket's pool in deferred
    // work, so a socket opened right after another one closed (a daemon
    // restarted, a benchmark's next phase) can find the queue still busy
    // for a moment: retried for 2 s.
    let mut attempts = 0;
    let libxdp = LIBXDP.lock().unwrap_or_else(|p| p.into_inner());
    let before = bpf_map_fds();
    let (tx, rx, fq_cq) = loop {
        // SAFETY: each (interface, queue) pair is bound once, so libxdp
        // loads its program for each (or none, for an anchor); the UMEM
        // outlives the rings (field order of `AfXdpBackend`).
        match unsafe { xsk_rs::Socket::new(scfg, umem, &ifname, cfg.queue) } {
            Ok(r) => break r,
            Err(e) => {
                use std::error::Error;
                let errno = e
                    .source()
                    .and_then(|s| s.downcast_ref::<std::io::Error>())
                    .and_then(std::io::Error::raw_os_error);
                if errno == Some(libc::EBUSY) && attempts < 40 {
                    // Opened nothing that stays open: libxdp closes what a
                    // failed create opened.
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    continue;
                }
                return Err(socket_error(match e.source() {
                    Some(cause) => format!("{e}: {cause}"),
                    None => e.to_string(),
                }));
            }
        }
    };
    let libxdp_fds: Vec<(i32, u64)> = bpf_map_fds()
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    drop(libxdp);
    let (fq, cq) = fq_cq.ok_or_else(|| {
        socket_error("no fill and completion rings (the pair is bound already)".into())
    })?;
    Ok(Port {
        pool,
        tx_queued: 0,
        in_tx: 0,
        fq,
        cq,
        rx,
        tx,
        mtu: mtu_of(name),
        libxdp_fds,
    })
}

/// An interface's MTU, asked of the kernel in this thread's network
/// namespace (SIOCGIFMTU on a throwaway socket; /sys/class/net would show
/// the namespace sysfs was mounted in). 0 if it cannot be had.
fn mtu_of(name: &str) -> u16 {
    let mut req: libc::ifreq = unsafe_zeroed_ifreq();
    let bytes = name.as_bytes();
    if bytes.len() >= req.ifr_name.len() {
        return 0;
    }
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: a datagram socket closed below; SIOCGIFMTU writes the MTU
    // into the ifreq it is given, which lives for the call.
    #[allow(unsafe_code)]
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return 0;
        }
        let r = libc::ioctl(fd, libc::SIOCGIFMTU, &mut req);
        libc::close(fd);
        if r < 0 {
            return 0;
        }
        u16::try_from(req.ifr_ifru.ifru_mtu).unwrap_or(0)
    }
}

fn unsafe_zeroed_ifreq() -> libc::ifreq {
    // SAFETY: ifreq is plain integers and arrays (a C struct): all-zero
    // is a valid value.
    #[allow(unsafe_code)]
    unsafe {
        std::mem::zeroed()
    }
}
