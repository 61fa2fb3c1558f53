#!/usr/bin/env bash
# The main job: build Sluice and run the lab demo: pods in network
# namespaces on veth pairs, the daemon's worker on their interfaces through
# AF_XDP, real HTTP and UDP servers in three backend pods, curl and python
# clients in a client pod against the ClusterIP, then teardown.
# Usage: sudo bash scripts/demo.sh [sluice lab demo options, e.g. --io tap]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
# The lab wires its pods through sluice-cni, found beside the sluice binary.
cargo build --release --locked -p sluice-cli -p sluice-cni
./target/release/sluice lab demo "$@"
