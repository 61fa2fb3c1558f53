//! xsk_probe: a minimal AF_XDP probe on xsk-rs 0.11.0, kept as the working
//! reference for the AF_XDP backend (docs/afxdp.md). Run by
//! scripts/xsk-probe.sh, which builds the namespaces around it.
//!
//! Usage (as root, inside the netns that owns the interface):
//!   xskprobe <ifname> <rx_seconds> [<peer_mac> [<src_ip> <dst_ip> <dst_port>]]
//!
//! * Opens an AF_XDP socket on <ifname> queue 0 in generic/SKB XDP mode,
//!   copy bind mode, with XDP_USE_NEED_WAKEUP.
//! * Keeps the fill ring stocked and prints every frame received for
//!   <rx_seconds> (length + first 42 bytes in hex).
//! * If <peer_mac> is given, then transmits ONE crafted Ethernet/IPv4/UDP
//!   frame (src MAC = own MAC, src_ip -> dst_ip:dst_port, defaults
//!   198.18.250.2 -> 198.18.250.1:5000) and waits for its completion.
//! * Prints which XDP program libxdp attached (dispatcher or single/legacy),
//!   then drops everything (which is what detaches the XDP program).

use std::{
    convert::TryInto,
    ffi::{CStr, CString},
    io::Write,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use xsk_rs::{
    config::{BindFlags, FrameSize, QueueSize, SocketConfig, UmemConfig, XdpFlags},
    CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem,
};

const FRAME_COUNT: u32 = 64; // 32 for RX (fill ring), 32 for TX
const RX_FRAMES: usize = 32;

fn parse_mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).expect("bad MAC byte"))
        .collect();
    v.try_into().expect("MAC must have 6 bytes")
}

fn own_mac(ifname: &str) -> [u8; 6] {
    let s = std::fs::read_to_string(format!("/sys/class/net/{ifname}/address"))
        .expect("read own MAC from sysfs");
    parse_mac(s.trim())
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn ip_checksum(hdr: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in hdr.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Ethernet + IPv4 + UDP (UDP checksum 0 = none, legal for IPv4).
fn build_udp_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let ip_len = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + ip_len);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let ip_start = f.len();
    f.extend_from_slice(&[0x45, 0x00]);
    f.extend_from_slice(&(ip_len as u16).to_be_bytes());
    f.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, 17, 0, 0]); // id, DF, ttl, proto=UDP, csum=0
    f.extend_from_slice(&src_ip.octets());
    f.extend_from_slice(&dst_ip.octets());
    let csum = ip_checksum(&f[ip_start..ip_start + 20]);
    f[ip_start + 10..ip_start + 12].copy_from_slice(&csum.to_be_bytes());
    f.extend_from_slice(&src_port.to_be_bytes());
    f.extend_from_slice(&dst_port.to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// Ask libxdp what is attached to the interface right now.
fn report_attached_prog(ifname: &str) {
    let c = CString::new(ifname).unwrap();
    let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) } as i32;
    unsafe {
        let mp = libxdp_sys::xdp_multiprog__get_from_ifindex(ifindex);
        let err = libxdp_sys::libxdp_get_error(mp as *const _);
        if err != 0 || mp.is_null() {
            println!("[prog] xdp_multiprog__get_from_ifindex({ifindex}) failed: err={err}");
            return;
        }
        let legacy = libxdp_sys::xdp_multiprog__is_legacy(mp);
        let mode = libxdp_sys::xdp_multiprog__attach_mode(mp);
        let main = libxdp_sys::xdp_multiprog__main_prog(mp);
        let name = |p: *mut libxdp_sys::xdp_program| -> String {
            if p.is_null() {
                return "<none>".into();
            }
            let n = libxdp_sys::xdp_program__name(p);
            let n = if n.is_null() {
                "<?>".into()
            } else {
                CStr::from_ptr(n).to_string_lossy().into_owned()
            };
            format!("{n} (id {})", libxdp_sys::xdp_program__id(p))
        };
        println!(
            "[prog] ifindex {ifindex}: legacy(single prog, no dispatcher)={legacy} attach_mode={mode} (2=SKB) main_prog={} count={}",
            name(main),
            libxdp_sys::xdp_multiprog__program_count(mp)
        );
        let mut p = libxdp_sys::xdp_multiprog__next_prog(std::ptr::null(), mp);
        while !p.is_null() {
            println!("[prog]   component prog: {}", name(p));
            p = libxdp_sys::xdp_multiprog__next_prog(p, mp);
        }
        libxdp_sys::xdp_multiprog__close(mp);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!(
            "usage: {} <ifname> <rx_seconds> [<peer_mac> [<src_ip> <dst_ip> <dst_port>]]",
            args[0]
        );
        std::process::exit(2);
    }
    let ifname = args[1].clone();
    let rx_secs: f64 = args[2].parse().expect("rx_seconds");
    let peer_mac = args.get(3).map(|s| parse_mac(s));
    let src_ip: Ipv4Addr = args
        .get(4)
        .map(|s| s.parse().unwrap())
        .unwrap_or(Ipv4Addr::new(198, 18, 250, 2));
    let dst_ip: Ipv4Addr = args
        .get(5)
        .map(|s| s.parse().unwrap())
        .unwrap_or(Ipv4Addr::new(198, 18, 250, 1));
    let dst_port: u16 = args.get(6).map(|s| s.parse().unwrap()).unwrap_or(5000);

    // ---- UMEM ----
    let umem_cfg = UmemConfig::builder()
        .frame_size(FrameSize::new(2048).unwrap())
        .fill_queue_size(QueueSize::new(64).unwrap())
        .comp_queue_size(QueueSize::new(64).unwrap())
        .build()
        .expect("umem config");
    let (umem, mut descs) =
        Umem::new(umem_cfg, FRAME_COUNT.try_into().unwrap(), false).expect("Umem::new failed");
    let mut tx_descs: Vec<FrameDesc> = descs.split_off(RX_FRAMES);
    let rx_descs: Vec<FrameDesc> = descs; // the RX half

    // ---- Socket: generic (SKB) XDP + copy mode + need_wakeup ----
    // XSKPROBE_MODE (optional, for experiments): "skb" (default) = generic XDP
    // + XDP_COPY; "drv" = native XDP + XDP_COPY; "zc" = native + XDP_ZEROCOPY;
    // "auto" = no XDP/bind mode flags at all.
    let mode = std::env::var("XSKPROBE_MODE").unwrap_or_else(|_| "skb".into());
    let (xdp_flags, bind_flags) = match mode.as_str() {
        "skb" => (
            XdpFlags::XDP_FLAGS_SKB_MODE,
            BindFlags::XDP_COPY | BindFlags::XDP_USE_NEED_WAKEUP,
        ),
        "drv" => (
            XdpFlags::XDP_FLAGS_DRV_MODE,
            BindFlags::XDP_COPY | BindFlags::XDP_USE_NEED_WAKEUP,
        ),
        "zc" => (
            XdpFlags::XDP_FLAGS_DRV_MODE,
            BindFlags::XDP_ZEROCOPY | BindFlags::XDP_USE_NEED_WAKEUP,
        ),
        "auto" => (XdpFlags::empty(), BindFlags::XDP_USE_NEED_WAKEUP),
        m => panic!("unknown XSKPROBE_MODE {m}"),
    };
    println!("[xsk] mode={mode} xdp_flags={xdp_flags:?} bind_flags={bind_flags:?}");
    let sock_cfg = SocketConfig::builder()
        .rx_queue_size(QueueSize::new(64).unwrap())
        .tx_queue_size(QueueSize::new(64).unwrap())
        .xdp_flags(xdp_flags)
        .bind_flags(bind_flags)
        .build();
    let (mut tx_q, mut rx_q, fq_cq): (TxQueue, RxQueue, Option<(FillQueue, CompQueue)>) =
        match unsafe { Socket::new(sock_cfg, &umem, &ifname.parse().unwrap(), 0) } {
            Ok(v) => v,
            Err(e) => {
                eprintln!(
                    "Socket::new failed: {e}: {:?}",
                    std::error::Error::source(&e)
                );
                std::process::exit(1);
            }
        };
    let (mut fq, mut cq) = fq_cq.expect("fill/comp queues missing (UMEM not fresh?)");
    println!("[xsk] socket bound to {ifname} queue 0");
    report_attached_prog(&ifname);

    // Stock the fill ring with all RX frames.
    let n = unsafe { fq.produce(&rx_descs) };
    println!("[xsk] fill ring stocked with {n} frames");

    // ---- RX loop ----
    let deadline = Instant::now() + Duration::from_secs_f64(rx_secs);
    let mut got = 0usize;
    let mut batch: Vec<FrameDesc> = vec![FrameDesc::default(); RX_FRAMES];
    while Instant::now() < deadline {
        // poll() on the socket fd with a 100 ms timeout, then consume.
        let cnt = unsafe { rx_q.poll_and_consume(&mut batch, 100) }.expect("rx poll");
        if cnt == 0 {
            // With XDP_USE_NEED_WAKEUP the kernel may want a kick via poll().
            if fq.needs_wakeup() {
                fq.wakeup(rx_q.fd_mut(), 0).expect("fq wakeup");
            }
            continue;
        }
        for d in &batch[..cnt] {
            let data = unsafe { umem.data(d) };
            let c = data.contents();
            got += 1;
            println!(
                "[rx] frame #{got}: addr={:#x} len={} first42: {}",
                d.addr(),
                c.len(),
                hex(&c[..c.len().min(42)])
            );
        }
        // Give the frames straight back to the kernel via the fill ring.
        let mut put = 0;
        while put < cnt {
            put += unsafe { fq.produce_and_wakeup(&batch[put..cnt], rx_q.fd_mut(), 0) }
                .expect("fq produce");
        }
    }
    println!("[rx] total frames received via XSK: {got}");

    // ---- TX one frame ----
    if let Some(dst_mac) = peer_mac {
        let src_mac = own_mac(&ifname);
        let frame = build_udp_frame(
            dst_mac,
            src_mac,
            src_ip,
            dst_ip,
            4000,
            dst_port,
            b"hello from xsk-rs tx",
        );
        unsafe {
            umem.data_mut(&mut tx_descs[0])
                .cursor()
                .write_all(&frame)
                .expect("write frame to umem");
        }
        println!(
            "[tx] sending {} byte frame: {}",
            frame.len(),
            hex(&frame[..42])
        );
        let sent = unsafe { tx_q.produce_and_wakeup(&tx_descs[..1]) }.expect("tx produce");
        println!(
            "[tx] produced {sent} desc(s) on tx ring; needs_wakeup={}",
            tx_q.needs_wakeup()
        );
        // Wait for completion.
        let mut comp = vec![FrameDesc::default(); 4];
        let t0 = Instant::now();
        let mut done = 0;
        while done == 0 && t0.elapsed() < Duration::from_secs(2) {
            if tx_q.needs_wakeup() {
                tx_q.wakeup().expect("tx wakeup");
            }
            done = unsafe { cq.consume(&mut comp) };
            if done == 0 {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        println!(
            "[tx] completions: {done} (addr {:#x}) after {:?}",
            comp[0].addr(),
            t0.elapsed()
        );
    }

    match rx_q.fd().xdp_statistics() {
        Ok(s) => println!(
            "[stats] rx_dropped={} rx_invalid={} tx_invalid={} rx_ring_full={} fill_ring_empty={} tx_ring_empty={}",
            s.rx_dropped(),
            s.rx_invalid_descs(),
            s.tx_invalid_descs(),
            s.rx_ring_full(),
            s.rx_fill_ring_empty_descs(),
            s.tx_ring_empty_descs()
        ),
        Err(e) => println!("[stats] error: {e}"),
    }

    // ---- Teardown: dropping every queue deletes the socket, which makes
    // libxdp decrement its refcount and detach the XDP program. ----
    drop(tx_q);
    drop(rx_q);
    drop(fq);
    drop(cq);
    println!("[xsk] queues dropped (socket deleted)");
    report_attached_prog(&ifname);
    drop(umem);
    println!("[xsk] umem dropped; exiting cleanly");
}
