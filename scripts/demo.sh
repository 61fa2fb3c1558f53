#!/usr/bin/env bash
# The main job: build Sluice and run its demo (the pipeline on generated
# traffic through two workers; the veth lab replaces it with the I/O
# backends). Usage: sudo bash scripts/demo.sh [sluice demo options]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --release --locked -p sluice-control
./target/release/sluice demo "$@"
