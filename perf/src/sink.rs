//! The sink: a UDP socket in the receiving pod, read with recvmmsg, that
//! counts the generator's probes per flow, with loss, reordering and
//! latency. The kernel of the pod delivers to it, as to any server.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::probe::{self, Probe};

/// One flow as the sink saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    pub received: u64,
    /// The highest sequence number seen; a probe below it arrived late.
    pub highest: Option<u32>,
    pub reordered: u64,
}

#[derive(Clone, Debug, Default)]
pub struct SinkStats {
    pub received: u64,
    /// Datagrams without a probe (not the generator's).
    pub foreign: u64,
    pub flows: Vec<FlowStats>,
    /// One-way latency of every probe, in nanoseconds.
    pub latencies_ns: Vec<u64>,
    /// Datagrams the sink's own socket dropped (its buffer was full): the
    /// part of the loss that is the sink's, not the path's.
    pub socket_drops: u64,
}

impl SinkStats {
    fn record(&mut self, p: Probe, now_ns: u64) {
        let i = p.flow as usize;
        if i >= crate::traffic::MAX_FLOWS as usize {
            self.foreign += 1;
            return;
        }
        if i >= self.flows.len() {
            self.flows.resize(i + 1, FlowStats::default());
        }
        self.received += 1;
        let f = &mut self.flows[i];
        f.received += 1;
        match f.highest {
            Some(h) if p.seq < h => f.reordered += 1,
            _ => f.highest = Some(p.seq),
        }
        self.latencies_ns.push(now_ns.saturating_sub(p.sent_ns));
    }

    /// Probes reordered, over every flow.
    pub fn reordered(&self) -> u64 {
        self.flows.iter().map(|f| f.reordered).sum()
    }

    /// Frames sent and not received, given what the generator sent per
    /// flow.
    pub fn lost(&self, sent_per_flow: &[u32]) -> u64 {
        sent_per_flow
            .iter()
            .enumerate()
            .map(|(i, &s)| u64::from(s).saturating_sub(self.flows.get(i).map_or(0, |f| f.received)))
            .sum()
    }

    /// The `q` quantile (0 to 1) of the latencies, in microseconds.
    pub fn latency_us(&mut self, q: f64) -> Option<f64> {
        if self.latencies_ns.is_empty() {
            return None;
        }
        self.latencies_ns.sort_unstable();
        let i = ((self.latencies_ns.len() - 1) as f64 * q).round() as usize;
        Some(self.latencies_ns[i] as f64 / 1e3)
    }
}

/// A dual-stack UDP socket on `port` in the calling thread's namespace,
/// with an 8 MB receive buffer.
pub fn bind(port: u16) -> Result<UdpSocket, String> {
    let s = UdpSocket::bind(("::", port)).map_err(|e| format!("bind [::]:{port}: {e}"))?;
    let size: libc::c_int = 8 << 20;
    // FORCE (root) past net.core.rmem_max: the sink shares a core with the
    // generator, and a buffer that covers its time off the core keeps the
    // path's loss from being the sink's. Without root, the capped size.
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: setsockopt reads one c_int from a valid pointer.
        let r = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                &size as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            break;
        }
    }
    s.set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

/// The socket's drop count (SO_MEMINFO, whose number the libc crate
/// does not export for x86; 55 in asm-generic/socket.h).
fn socket_drops(socket: &UdpSocket) -> Option<u64> {
    const SO_MEMINFO: libc::c_int = 55;
    let mut info = [0u32; libc::SK_MEMINFO_DROPS as usize + 1];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`.
    let r = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_MEMINFO,
            info.as_mut_ptr() as *mut libc::c_void,
            &mut len,
        )
    };
    (r == 0).then(|| u64::from(info[libc::SK_MEMINFO_DROPS as usize]))
}

const BATCH: usize = 64;
const BUF: usize = 2048;

/// Reads `socket` until `stop`, batch by batch.
pub fn run(socket: &UdpSocket, stop: &AtomicBool) -> Result<SinkStats, String> {
    let mut stats = SinkStats::default();
    let mut bufs = vec![[0u8; BUF]; BATCH];
    let mut iov: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr() as *mut libc::c_void,
            iov_len: BUF,
        })
        .collect();
    // SAFETY: mmsghdr is plain data; zero is a valid empty header.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
        m.msg_hdr.msg_iov = v;
        m.msg_hdr.msg_iovlen = 1;
    }
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: every header points at its own live iovec and buffer.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => continue,
                _ => return Err(format!("recvmmsg: {e}")),
            }
        }
        let now = probe::now_ns();
        for (m, b) in msgs.iter().zip(&bufs).take(n as usize) {
            let len = (m.msg_len as usize).min(BUF);
            match Probe::parse(&b[..len]) {
                Some(p) => stats.record(p, now),
                None => stats.foreign += 1,
            }
        }
    }
    stats.socket_drops = socket_drops(socket).unwrap_or(0);
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(flow: u32, seq: u32) -> Probe {
        Probe {
            flow,
            seq,
            sent_ns: 1_000,
        }
    }

    #[test]
    fn loss_and_reordering_are_counted_per_flow() {
        let mut s = SinkStats::default();
        for (flow, seq) in [(0, 0), (0, 2), (0, 1), (1, 0), (0, 3)] {
            s.record(probe(flow, seq), 3_000);
        }
        assert_eq!(s.received, 5);
        assert_eq!(s.flows[0].received, 4);
        assert_eq!(s.flows[0].reordered, 1, "1 came after 2");
        assert_eq!(s.reordered(), 1);
        // Flow 0 sent 5 (seq 4 lost), flow 1 sent 2, flow 2 sent 1.
        assert_eq!(s.lost(&[5, 2, 1]), 3);
        assert_eq!(s.latency_us(0.5), Some(2.0));
    }

    #[test]
    fn datagrams_over_loopback_are_read_in_batches() {
        let sink = bind(0).unwrap();
        let port = sink.local_addr().unwrap().port();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for seq in 0..200u32 {
            let p = Probe {
                flow: seq % 2,
                seq: seq / 2,
                sent_ns: probe::now_ns(),
            };
            tx.send_to(&p.bytes(), ("127.0.0.1", port)).unwrap();
        }
        tx.send_to(b"not a probe", ("127.0.0.1", port)).unwrap();
        let stop = AtomicBool::new(false);
        let stats = std::thread::scope(|sc| {
            let h = sc.spawn(|| run(&sink, &stop));
            std::thread::sleep(Duration::from_millis(300));
            stop.store(true, Ordering::Relaxed);
            h.join().unwrap()
        })
        .unwrap();
        assert_eq!(stats.received, 200);
        assert_eq!(stats.foreign, 1);
        assert_eq!(stats.lost(&[100, 100]), 0);
        assert_eq!(stats.reordered(), 0);
    }
}
