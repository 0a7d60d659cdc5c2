#!/usr/bin/env bash
# Where a request's CPU goes on each core, NGINX (as compare.sh sets it up) against
# canary-proxy, in the split topology (proxy alone on CPU 1; wrk and the upstreams on CPU 0):
# per request, wrk's and the upstream's CPU, the proxy's, each core's idle share, and the TCP
# segments sent. It shows whether a req/s difference there can come from the proxy at all
# (docs/PERFORMANCE.md: "Two topologies, and why").
#
#   benches/load/load_side.sh [SECONDS] [ROUNDS]        (defaults: 6 s, 4 rounds)
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-6}; ROUNDS=${2:-4}
for p in wrk nginx nstat; do
  command -v "$p" >/dev/null || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx iproute2 >/dev/null; break; }
done
cargo build --release -q --bin canary-proxy
BIN=$PWD/target/release/canary-proxy
WORK=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.3; rm -rf "$WORK"; }
trap cleanup EXIT
. benches/load/common.sh
start_upstreams 0; UPSTREAM_PID=${PIDS[-1]}
P_NGINX=$(free_port); nginx_config "$WORK/nginx.conf" "$P_NGINX"
taskset -c 1 nginx -c "$WORK/nginx.conf" -g 'daemon off;' & PIDS+=($!); NGINX_PID=$!
P_CANARY=$(free_port); A_CANARY=$(free_port)
canary_config "$WORK/canary.toml" "$P_CANARY" "$A_CANARY"
RUST_LOG=warn taskset -c 1 "$BIN" run --config "$WORK/canary.toml" >/dev/null 2>&1 & PIDS+=($!); CANARY_PID=$!
sleep 1

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# idle and total jiffies of one CPU
cpu() { awk -v c="cpu$1" '$1 == c {print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
HZ=$(getconf CLK_TCK)
echo "| round | proxy | req/s | wrk µs/req | upstream µs/req | proxy µs/req | CPU 0 idle | CPU 1 idle | TCP segments/req |"
echo "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for r in $(seq 1 "$ROUNDS"); do
  for who in nginx canary; do
    if [ $who = nginx ]; then pid=$NGINX_PID; port=$P_NGINX; else pid=$CANARY_PID; port=$P_CANARY; fi
    c0=$(cpu 0); c1=$(cpu 1); p0=$(ticks "$pid"); u0=$(ticks "$UPSTREAM_PID"); nstat -n >/dev/null
    # wrk's own CPU from its rusage, as the child of a small Python.
    read -r total wrk_s < <(python3 - "$port" "$WORK/ids.lua" "$SECS" <<'PY'
import re, resource, subprocess, sys
port, lua, secs = sys.argv[1:]
out = subprocess.run(["taskset", "-c", "0", "wrk", "-t1", "-c64", f"-d{secs}s", "-s", lua,
                      f"http://127.0.0.1:{port}/"], capture_output=True, text=True).stdout
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(re.search(r"(\d+) requests in", out).group(1), ru.ru_utime + ru.ru_stime)
PY
)
    segs=$(nstat -z TcpOutSegs 2>/dev/null | awk '$1 == "TcpOutSegs" {print $2}')
    python3 - "$r" "$who" "$SECS" "$HZ" "$total" "$wrk_s" "$p0" "$(ticks "$pid")" "$u0" \
      "$(ticks "$UPSTREAM_PID")" "$c0" "$(cpu 0)" "$c1" "$(cpu 1)" "$segs" <<'PY'
import sys
r, who, secs, hz, total, wrk_s, p0, p1, u0, u1 = sys.argv[1:11]
c0, c0b, c1, c1b, segs = sys.argv[11:16]
secs, hz, total = float(secs), float(hz), int(total)
us = lambda a, b: (int(b) - int(a)) / hz * 1e6 / total
def idle(a, b):
    (ia, ta), (ib, tb) = map(int, a.split()), map(int, b.split())
    return 100 * (ib - ia) / (tb - ta)
print(f"| {r} | {who} | {total / secs:.0f} | {float(wrk_s) * 1e6 / total:.2f} | {us(u0, u1):.2f} | "
      f"{us(p0, p1):.2f} | {idle(c0, c0b):.1f} % | {idle(c1, c1b):.1f} % | {int(segs) / total:.2f} |")
PY
  done
done
