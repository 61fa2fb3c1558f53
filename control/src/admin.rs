//! The daemon's admin socket: a Unix socket (root only) that takes one
//! JSON request per line and answers one JSON line, in the protocol of
//! the `sluice-admin` crate (control/admin-proto), which sluice-cni shares.
//! The CNI plugin attaches and detaches pods through it; `sluice status`
//! reads the interfaces attached, the workers' counters and, for each
//! source, the generation of objects the workers' tables reflect, so that
//! scripts wait for a change to be programmed instead of sleeping.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use sluice_dataplane::Addr;

use crate::config::PortConfig;
use crate::ports::{PortError, Ports};
use crate::publish::Publisher;
use crate::state::Observer;
pub use crate::status::{describe, SourceStatus, StatusReply};
use crate::status::{worker_status, ConntrackStatus};

pub use sluice_admin::{Command, ErrorCode, Reply, Request, DEFAULT_SOCKET};

/// What the server asks of the daemon's sources when it answers `status`.
pub type Sources = Box<dyn Fn() -> Vec<SourceStatus> + Send + Sync>;

/// The server's thread; stopped (and its socket removed) when dropped.
pub struct AdminServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Why the admin socket could not be opened.
#[derive(Debug)]
pub enum AdminError {
    /// Another daemon answers on this socket.
    InUse(PathBuf),
    Io {
        path: PathBuf,
        reason: String,
    },
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminError::InUse(p) => write!(
                f,
                "admin socket {}: another daemon is listening on it",
                p.display()
            ),
            AdminError::Io { path, reason } => {
                write!(f, "admin socket {}: {reason}", path.display())
            }
        }
    }
}

impl std::error::Error for AdminError {}

/// What the server answers about: a running daemon's handles
/// (`Daemon::handles`).
#[derive(Clone)]
pub struct Handles {
    pub ports: Ports,
    pub observer: Observer,
    pub publisher: Publisher,
}

/// What the server answers about.
struct Served {
    ports: Ports,
    observer: Observer,
    publisher: Publisher,
    sources: Sources,
}

/// Listens on `path` and answers requests about a daemon (its `handles`)
/// and `sources`. A socket file left by a daemon that died is replaced;
/// one that a live daemon answers on is not.
pub fn serve(path: &Path, handles: Handles, sources: Sources) -> Result<AdminServer, AdminError> {
    let served = Served {
        ports: handles.ports,
        observer: handles.observer,
        publisher: handles.publisher,
        sources,
    };
    let io_err = |e: std::io::Error| AdminError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err)?;
    }
    if path.exists() {
        // Taken only if a daemon answers. A killed daemon's listener can
        // outlive it for a moment: its main thread is a zombie while its
        // workers still close their sockets, and connecting succeeds with
        // nobody to accept. Such a socket is replaced.
        if answers(path) {
            return Err(AdminError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(io_err)?;
    }
    let listener = UnixListener::bind(path).map_err(io_err)?;
    // Attaching interfaces is root's business.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_err)?;
    listener.set_nonblocking(true).map_err(io_err)?;
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("sluice-admin".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            // One at a time: attaches are serialised anyway.
                            answer(stream, &served);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        Err(e) => {
                            eprintln!("sluice: admin socket: {e}");
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            })
            .map_err(io_err)?
    };
    Ok(AdminServer {
        path: path.to_path_buf(),
        stop,
        thread: Some(thread),
    })
}

/// Whether a daemon answers a status request on `path` within a second.
pub fn answers(path: &Path) -> bool {
    let Ok(stream) = UnixStream::connect(path) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    if (&stream).write_all(b"{\"command\":\"status\"}\n").is_err() {
        return false;
    }
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .is_ok_and(|n| n > 0)
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `02:53:c6:12:01:02`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let b: Vec<u8> = s
        .split(':')
        .map(|x| u8::from_str_radix(x, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    b.try_into().ok()
}

fn answer(stream: UnixStream, served: &Served) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    let mut reader = BufReader::new(&stream);
    let reply = match reader.read_line(&mut line) {
        Err(e) => Reply::error(sluice_admin::Error::new(
            ErrorCode::BadRequest,
            format!("reading the request: {e}"),
        )),
        Ok(_) => match Request::parse(&line) {
            Err(e) => Reply::error(e),
            Ok(req) => handle(req.command, served),
        },
    };
    let mut out = serde_json::to_string(&reply).unwrap_or_else(|_| "{\"ok\":false}".into());
    out.push('\n');
    let _ = (&stream).write_all(out.as_bytes());
}

fn status(s: &Served) -> StatusReply {
    let (entries, capacity, evicted, ended) = s.observer.conntrack();
    StatusReply {
        io: s.ports.io(),
        workers: s.ports.workers(),
        max_pods: s.ports.max_pods(),
        tables_generation: s.observer.generation(),
        left_out: s.publisher.left_out(),
        interfaces: s.ports.attached(),
        sources: (s.sources)(),
        conntrack: ConntrackStatus {
            entries,
            capacity,
            evicted,
            ended,
        },
        counters: s
            .observer
            .workers()
            .iter()
            .enumerate()
            .map(|(w, r)| worker_status(w, r))
            .collect(),
    }
}

/// The protocol's code for a port error.
fn code_of(e: &PortError) -> ErrorCode {
    match e {
        PortError::InterfaceTaken { .. } => ErrorCode::InterfaceTaken,
        PortError::AddressTaken { .. } => ErrorCode::AddressTaken,
        PortError::Unsupported(_) => ErrorCode::Unsupported,
        PortError::Worker { .. } => ErrorCode::Worker,
        PortError::NoAnswer { .. } => ErrorCode::NoAnswer,
        PortError::Busy { .. } => ErrorCode::Busy,
        PortError::Queues(_) => ErrorCode::Queues,
        PortError::NoSlot | PortError::MaxPods { .. } => ErrorCode::MaxPods,
    }
}

fn refuse(code: ErrorCode, message: String) -> Reply {
    Reply::error(sluice_admin::Error::new(code, message))
}

fn handle(req: Command, served: &Served) -> Reply {
    let ports = &served.ports;
    match req {
        Command::Status => Reply {
            ok: true,
            status: Some(status(served)),
            ..Reply::default()
        },
        Command::Attach {
            ifname,
            addrs,
            mac,
            owner,
        } => {
            let Some(mac) = parse_mac(&mac) else {
                return refuse(
                    ErrorCode::BadRequest,
                    format!("attach: mac {mac:?} is not six hex bytes"),
                );
            };
            if addrs.is_empty() {
                return refuse(
                    ErrorCode::BadRequest,
                    "attach: no address to route to the interface".into(),
                );
            }
            let addrs = addrs.iter().map(|&a| Addr::from_ip(a)).collect();
            let port = PortConfig {
                ifname: ifname.clone(),
                netns: None,
                addrs,
                mac,
            };
            match ports.attach(port, owner) {
                Ok(n) => {
                    eprintln!("sluice: attached {ifname} as port {n}");
                    Reply {
                        ok: true,
                        port: Some(n),
                        ..Reply::default()
                    }
                }
                Err(e) => refuse(code_of(&e), format!("attach {ifname}: {e}")),
            }
        }
        Command::Detach { ifname } => match ports.detach(&ifname) {
            Ok(had) => {
                if let Some(n) = had {
                    eprintln!("sluice: detached {ifname} (port {n})");
                }
                Reply {
                    ok: true,
                    detached: Some(had.is_some()),
                    ..Reply::default()
                }
            }
            Err(e) => refuse(code_of(&e), format!("detach {ifname}: {e}")),
        },
    }
}

/// Sends one command to the daemon at `path` and returns its reply (an
/// error reply as its message, with its code's name).
pub fn request(path: &Path, command: Command) -> Result<Reply, String> {
    sluice_admin::client::ask(path, command, Duration::from_secs(60)).map_err(|e| e.to_string())
}
