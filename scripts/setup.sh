#!/usr/bin/env bash
# Installs what building and testing Sluice needs on a fresh Debian machine.
# Sourced by demo.sh and test.sh; safe to run again.
set -euo pipefail

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found. Sluice builds with a stable Rust toolchain (1.87 or newer);" >&2
    echo "setup: install one (rustup or Debian's cargo package) and run this again." >&2
    exit 1
fi

# Build tools for the crates that compile C or C++ (libFuzzer's driver).
need=()
for pkg in build-essential pkg-config; do
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
