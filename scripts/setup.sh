#!/usr/bin/env bash
# Installs what building and testing Sluice needs on a fresh Debian machine.
# Sourced by demo.sh and test.sh; safe to run again.
set -euo pipefail

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found. Sluice builds with a stable Rust toolchain (1.87 or newer);" >&2
    echo "setup: install one (rustup or Debian's cargo package) and run this again." >&2
    exit 1
fi

# Build tools for the crates that compile C or C++ (libFuzzer's driver,
# libxdp for the AF_XDP backend), and what the lab runs: iproute2 for
# namespaces, veth pairs and TAPs, ethtool for pod offloads, python3 for
# the pods' servers and clients, curl and ping as clients; iptables and
# nftables for the kube-proxy comparisons (only ever inside our namespaces),
# conntrack to forget their connections between measurements; the CNI
# reference plugins (portmap, bandwidth, tuning) to chain after sluice-cni,
# util-linux's nsenter, which the plugin runs commands in pods with,
# procps' sysctl, and Go with Debian's libcni sources, for the test that
# drives the plugin through libcni as containerd does.
need=()
for pkg in build-essential pkg-config clang llvm libelf-dev zlib1g-dev libpcap-dev m4 iproute2 ethtool python3 curl iputils-ping iptables nftables conntrack containernetworking-plugins util-linux procps golang-go golang-github-appc-cni-dev; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "setup: missing packages ${need[*]}; run as root (or sudo) so that apt-get can install them" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}"
fi

# libxdp looks for bpffs for its dispatcher; this kernel refuses the
# dispatcher anyway (docs/afxdp.md), but a mounted bpffs is what libxdp
# expects and costs nothing.
if [[ $(id -u) -eq 0 ]] && ! mountpoint -q /sys/fs/bpf 2>/dev/null; then
    mount -t bpf bpf /sys/fs/bpf 2>/dev/null || echo "setup: could not mount bpffs at /sys/fs/bpf (libxdp will load a single program)" >&2
fi

# The TAP backend and the exception path open /dev/net/tun (TUN is built
# into the kernel; a minimal image may lack the device node).
if [[ $(id -u) -eq 0 ]] && [[ ! -c /dev/net/tun ]]; then
    mkdir -p /dev/net && mknod /dev/net/tun c 10 200 && chmod 0666 /dev/net/tun
fi
