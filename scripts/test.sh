#!/usr/bin/env bash
# The test suite: unit and integration tests of the whole workspace (the
# veth ones, through AF_XDP, need root), then each fuzz target for
# FUZZ_SECONDS (default 30) from the committed seeds.
# Usage: sudo bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

# The veth tests (AF_XDP between pod namespaces) need root, as CI has.
cargo test --workspace --locked --features sluice-tests/afxdp

FUZZ_SECONDS=${FUZZ_SECONDS:-30}
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --version 0.13.2
fi
corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
for target in pipeline decode answers; do
    mkdir -p "$corpus/$target"
    echo "fuzz: $target for ${FUZZ_SECONDS}s"
    # RUSTC_BOOTSTRAP: cargo-fuzz passes -Zsanitizer=address, which a stable
    # toolchain accepts only so; the stable toolchain ships the ASan runtime.
    log="$corpus/$target.log"
    if ! RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz "$target" "$corpus/$target" fuzz/seeds/pipeline \
        -- -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "fuzz: $target failed; the crashing input is under fuzz/artifacts/$target" >&2
        exit 1
    fi
    grep -E "^Done|stat::number_of_executed_units" "$log" || tail -n 3 "$log"
done
echo "fuzz: no crash in ${FUZZ_SECONDS}s per target"
