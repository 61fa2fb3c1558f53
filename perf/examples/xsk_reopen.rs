//! Opens an AF_XDP backend on the given interfaces, drops it, and counts
//! this process's open descriptors before and after, then opens again.
//! Usage (root, in the netns of the interfaces): xsk_reopen IF [IF...]
use sluice_dataplane::io::afxdp::{AfXdpBackend, AfXdpConfig};

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn main() {
    let names: Vec<String> = std::env::args().skip(1).collect();
    let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    let before = fds();
    for round in 0..3 {
        let b = AfXdpBackend::open(&refs, AfXdpConfig::default(), None);
        println!(
            "round {round}: open {:?}, fds {}",
            b.as_ref().map(|b| b.shared).map_err(|e| e.to_string()),
            fds()
        );
        drop(b);
        println!("round {round}: dropped, fds {} (before {before})", fds());
        for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
            if let Ok(t) = std::fs::read_link(e.path()) {
                println!("   {} -> {}", e.file_name().to_string_lossy(), t.display());
            }
        }
    }
}
