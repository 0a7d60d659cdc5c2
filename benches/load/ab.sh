#!/usr/bin/env bash
# A/B of two canary-proxy binaries, the way every change on the request path was judged: both
# pinned to CPU 1 in turn, wrk and two NGINX upstreams on CPU 0, alternating rounds (A B A B ...)
# so drift hits both alike. Prints req/s, p50, p99 and CPU ms per 1,000 requests per round.
#
#   benches/load/ab.sh OLD_BINARY NEW_BINARY        (env: SECS=6 ROUNDS=4 CONNS=64 PATHQ=/
#                                                   UPSTREAM_CPU=0; 1: compare.sh's shared topology)
#
# Keep a copy of the old binary first: cp target/release/canary-proxy /tmp/old
set -euo pipefail
A=${1:?usage: ab.sh OLD_BINARY NEW_BINARY}; B=${2:?usage: ab.sh OLD_BINARY NEW_BINARY}
SECS=${SECS:-6}; ROUNDS=${ROUNDS:-4}; CONNS=${CONNS:-64}; PATHQ=${PATHQ:-/}; UPSTREAM_CPU=${UPSTREAM_CPU:-0}
for p in wrk nginx; do command -v "$p" >/dev/null || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p" >/dev/null; }; done
WORK=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.3; rm -rf "$WORK"; }
trap cleanup EXIT
. "$(dirname "$0")/common.sh"
start_upstreams "$UPSTREAM_CPU"
declare -A PORT PID
start() { # name binary
  local p a; p=$(free_port); a=$(free_port)
  canary_config "$WORK/$1.toml" "$p" "$a"
  RUST_LOG=warn taskset -c 1 "$2" run --config "$WORK/$1.toml" >/dev/null 2>&1 & PIDS+=($!)
  PORT[$1]=$p; PID[$1]=$!
}
start A "$A"; start B "$B"
sleep 1
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for r in $(seq 1 "$ROUNDS"); do
  for v in A B; do
    before=$(ticks "${PID[$v]}")
    out=$(taskset -c 0 wrk -t1 -c"$CONNS" -d"${SECS}s" --latency -s "$WORK/ids.lua" "http://127.0.0.1:${PORT[$v]}$PATHQ")
    after=$(ticks "${PID[$v]}")
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}'); total=$(echo "$out" | awk '/requests in/ {print $1}')
    p50=$(echo "$out" | awk '$1=="50%" {print $2}'); p99=$(echo "$out" | awk '$1=="99%" {print $2}')
    cpu=$(python3 -c "import os; print(round(($after-$before)/os.sysconf('SC_CLK_TCK')*1e6/$total, 2))")
    echo "round $r $v: req/s $rps p50 $p50 p99 $p99 cpu_ms/1k $cpu"
  done
done
