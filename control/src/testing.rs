//! The one policy of every root test in the workspace (the lab, the CNI
//! plugin, the node's life, the benchmarks' smoke tests): without root a
//! test is skipped with a line saying so, except under CI (`CI=true`, as
//! `.ci/run` sets it), where it fails with the reason; with root, a set-up
//! that fails (a tool missing, a kernel that refuses) fails the test with
//! its reason, never skips it.

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether root test `test` can run here: true as root; false (after a
/// line on stderr) without it; a panic naming the reason under CI.
pub fn root_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: needs root (network namespaces, veths, AF_XDP); CI runs as root, so this is a failure");
    }
    eprintln!("{test}: skipped, needs root (network namespaces, veths, AF_XDP)");
    false
}
