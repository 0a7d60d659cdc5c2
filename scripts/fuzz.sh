#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 10 s each): `scripts/fuzz.sh [SECONDS]`.
# cargo-fuzz needs nightly compiler flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain take them.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "installing cargo-fuzz (needed by the fuzz targets)" >&2
  cargo install cargo-fuzz --locked --quiet
fi
cd fuzz
for target in $(RUSTC_BOOTSTRAP=1 cargo fuzz list); do
  echo "fuzzing $target for ${seconds}s" >&2
  log=$(mktemp)
  if ! RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- -max_total_time="$seconds" >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "error: fuzz target $target failed (a crash leaves its input in fuzz/artifacts/$target)" >&2
    exit 1
  fi
  grep -E "^Done" "$log" >&2 || true
  rm -f "$log"
done
