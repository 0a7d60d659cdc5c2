#!/usr/bin/env bash
# The whole-proxy load benchmark: canary-proxy against NGINX and HAProxy as equivalent reverse
# proxies (upstream keep-alive on), and a no-proxy baseline, on loopback.
#
#   benches/load/compare.sh [SECONDS_PER_RUN] [ROUNDS]      (defaults: 10 s, 3 rounds)
#
# Topology (2 cores): every proxy is pinned to CPU 1 with one worker; wrk and the two upstreams
# (NGINX serving from memory) share CPU 0. Contenders run in alternating rounds (A B C A B C) so
# drift hits all alike; the table reports medians over rounds and every ratio to NGINX, and a
# second table the paired ratios (each round against its own NGINX run, median over rounds).
# Installs wrk, nginx and haproxy from Debian if missing; stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_PER_RUN=${1:-10}
ROUNDS=${2:-3}
PROXY_CPU=1
LOAD_CPU=0

need=()
for p in wrk nginx haproxy; do command -v "$p" >/dev/null || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release -q --bin canary-proxy
BIN=$PWD/target/release/canary-proxy

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

. benches/load/common.sh
start_upstreams $LOAD_CPU
P_NGINX=$(free_port); P_HAPROXY=$(free_port); P_CANARY=$(free_port); A_CANARY=$(free_port)

# NGINX as the reverse proxy: 50/50 split with keep-alive to both upstreams.
cat > "$WORK/nginx-proxy.conf" <<CONF
worker_processes 1;
master_process off;
pid $WORK/nginx-proxy.pid;
error_log $WORK/nginx-proxy.err warn;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream backends { server 127.0.0.1:$U1; server 127.0.0.1:$U2; keepalive 256; }
  server {
    listen 127.0.0.1:$P_NGINX backlog=4096;
    location / { proxy_pass http://backends; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
taskset -c $PROXY_CPU nginx -c "$WORK/nginx-proxy.conf" -g 'daemon off;' & PIDS+=($!); NGINX_PID=$!

cat > "$WORK/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 8000
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:$P_HAPROXY
  default_backend be
backend be
  balance roundrobin
  server s1 127.0.0.1:$U1
  server s2 127.0.0.1:$U2
CONF
taskset -c $PROXY_CPU haproxy -f "$WORK/haproxy.cfg" -db & PIDS+=($!); HAPROXY_PID=$!

canary_config "$WORK/canary.toml" "$P_CANARY" "$A_CANARY"
RUST_LOG=warn taskset -c $PROXY_CPU "$BIN" run --config "$WORK/canary.toml" & PIDS+=($!); CANARY_PID=$!
sleep 1


cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hwm_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

# run NAME PORT PID PATH CONNS -> "rps p50_ms p99_ms cpu_ms_per_1k"
run() {
  local port=$2 pid=$3 path=$4 conns=$5 before after out
  before=$( [ "$pid" = - ] && echo 0 || cpu_ticks "$pid")
  out=$(taskset -c $LOAD_CPU wrk -t1 -c"$conns" -d"${SECONDS_PER_RUN}s" --latency -s "$WORK/ids.lua" "http://127.0.0.1:$port$path" 2>&1)
  after=$( [ "$pid" = - ] && echo 0 || cpu_ticks "$pid")
  python3 - "$out" "$before" "$after" <<'PY'
import re, sys, os
out, before, after = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def ms(v):
    n, u = re.match(r"([\d.]+)(\w+)", v).groups(); n = float(n)
    return n / 1000 if u == "us" else n * 1000 if u == "s" else n
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
total = int(re.search(r"(\d+) requests in", out).group(1))
# Anchored: the thread stats' "+/- Stdev" column can end in "50%" too.
p50 = ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1)); p99 = ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
hz = os.sysconf("SC_CLK_TCK")
cpu = (after - before) / hz * 1000 / max(total, 1) * 1000 if after else 0.0
print(f"{rps:.0f} {p50:.3f} {p99:.3f} {cpu:.3f} {errors.group(1) if errors else 0}")
PY
}

declare -A RESULTS
CASES=("small:/:64" "64k:/64k:64" "conns:/:1000")
echo "baseline (no proxy) and three contenders, ${ROUNDS} rounds of ${SECONDS_PER_RUN}s per case" >&2
for c in "${CASES[@]}"; do
  IFS=: read -r name path conns <<<"$c"
  RESULTS[baseline:$name]=$(run baseline $U1 - "$path" "$conns")
  for r in $(seq 1 "$ROUNDS"); do
    for contender in nginx haproxy canary; do
      case $contender in
        nginx) port=$P_NGINX; pid=$NGINX_PID ;;
        haproxy) port=$P_HAPROXY; pid=$HAPROXY_PID ;;
        canary) port=$P_CANARY; pid=$CANARY_PID ;;
      esac
      line=$(run "$contender" "$port" "$pid" "$path" "$conns")
      RESULTS[$contender:$name]+="$line;"
      echo "  $name round $r $contender: $line" >&2
    done
  done
done
# Peak RSS; and RSS with 1000 idle keep-alive connections (canary-proxy).
for c in nginx:$NGINX_PID haproxy:$HAPROXY_PID canary:$CANARY_PID; do RESULTS[rss:${c%%:*}]=$(hwm_kb "${c##*:}"); done
IDLE_BEFORE=$(awk '/VmRSS/ {print $2}' "/proc/$CANARY_PID/status")
python3 - "$P_CANARY" <<'PY' &
import socket, sys, time
conns = []
for i in range(1000):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    s.sendall(b"GET / HTTP/1.1\r\nHost: idle\r\nx-user-id: idle-%d\r\n\r\n" % i)
    s.recv(4096)
    conns.append(s)
time.sleep(4)
PY
IDLE_HOLDER=$!
sleep 3
IDLE_AFTER=$(awk '/VmRSS/ {print $2}' "/proc/$CANARY_PID/status")
wait $IDLE_HOLDER || true

python3 - "$(declare -p RESULTS)" "$IDLE_BEFORE" "$IDLE_AFTER" <<'PY'
import re, statistics, sys
decl, idle_before, idle_after = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
res = dict(re.findall(r'\[([^\]]+)\]="([^"]*)"', decl))
def rows(key):
    return [list(map(float, r.split())) for r in res.get(key, "").split(";") if r.strip()]
def med(key, i):
    v = [r[i] for r in rows(key)]
    return statistics.median(v) if v else float("nan")
print("| case | contender | req/s | p50 ms | p99 ms | CPU ms / 1k req | non-2xx | req/s vs NGINX | CPU vs NGINX | p99 vs NGINX |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for case in ["small", "64k", "conns"]:
    n = {i: med(f"nginx:{case}", i) for i in range(5)}
    for who in ["baseline", "nginx", "haproxy", "canary"]:
        key = f"{who}:{case}"
        v = {i: med(key, i) for i in range(5)}
        ratio = lambda i: f"{v[i] / n[i]:.2f}x" if who != "baseline" and n[i] else "-"
        cpu = f"{v[3]:.3f}" if who != "baseline" else "-"
        print(f"| {case} | {who} | {v[0]:.0f} | {v[1]:.3f} | {v[2]:.3f} | {cpu} | {v[4]:.0f} | {ratio(0)} | {ratio(3)} | {ratio(2)} |")
print()
# Each round runs the contenders back to back: a slow phase of a shared machine that spans a
# round moves them alike, and cancels in that round's ratio; one that starts mid-round shows as
# one odd round, which the median over rounds passes over.
print("Paired: the median over rounds of each round's ratio to that round's NGINX run.")
print()
print("| case | contender | req/s vs NGINX | CPU vs NGINX | p99 vs NGINX |")
print("| --- | --- | ---: | ---: | ---: |")
for case in ["small", "64k", "conns"]:
    base = rows(f"nginx:{case}")
    for who in ["haproxy", "canary"]:
        pairs = list(zip(rows(f"{who}:{case}"), base))
        def paired(i):
            v = [w[i] / n[i] for w, n in pairs if n[i]]
            return f"{statistics.median(v):.2f}x" if v else "-"
        print(f"| {case} | {who} | {paired(0)} | {paired(3)} | {paired(2)} |")
print()
print("peak RSS (kB): " + ", ".join(f"{w} {res.get('rss:' + w, '?')}" for w in ["nginx", "haproxy", "canary"]))
print(f"canary-proxy RSS with 1000 idle keep-alive connections: {idle_after} kB (before opening them: {idle_before} kB)")
PY
