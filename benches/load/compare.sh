#!/usr/bin/env bash
# The whole-proxy load benchmark: canary-proxy against NGINX and HAProxy as equivalent reverse
# proxies (upstream keep-alive on), and a no-proxy baseline, on loopback.
#
#   benches/load/compare.sh [SECONDS_PER_RUN] [ROUNDS]      (defaults: 6 s, 3 rounds)
#   TOPOLOGIES=split NGINX_RR=1 benches/load/compare.sh ... (default: "shared split", no nginx-rr)
#   ONLY="post1k post1k-conns" benches/load/compare.sh ...  (some cases; default: all nine)
#
# Cases: GET (small, 64 KiB answer, 1,000 connections), POST with a 1 KiB and a 64 KiB body at
# 64 connections and 1 KiB at 1,000 (wrk), TLS 1.3 HTTP/1.1 GET (wrk), and h2c and h2 over TLS
# GETs, 64 connections x 10 streams (h2load, from Debian's nghttp2-client).
#
# Two topologies (2 cores), each the same for every contender; each proxy runs one worker on
# CPU 1, wrk runs on CPU 0.
# - shared: the two upstreams (NGINX serving from memory) on CPU 1 with the proxy. CPU 1 is the
#   bottleneck, so req/s ranks the proxies: a proxy that costs less per request leaves its
#   core's time to the upstreams.
# - split: the upstreams on CPU 0 with wrk, the proxy alone on CPU 1. Its CPU and latency come
#   without a neighbour, but CPU 0 is the bottleneck (wrk's and the upstreams' loopback work):
#   req/s there is the load side's, the same for every proxy that keeps up (docs/PERFORMANCE.md).
# Contenders run in alternating rounds (A B C A B C) so drift hits all alike; the report gives
# medians over rounds and every ratio to NGINX, and the paired ratios (each round against its
# own NGINX run, median over rounds). Installs wrk, nginx and haproxy from Debian if missing;
# stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_PER_RUN=${1:-6}
ROUNDS=${2:-3}
PROXY_CPU=1
LOAD_CPU=0
TOPOLOGIES=${TOPOLOGIES:-shared split}
for t in $TOPOLOGIES; do
  case $t in shared | split) ;; *) echo "TOPOLOGIES: shared or split, not $t" >&2; exit 2 ;; esac
done
CONTENDERS=(nginx haproxy canary)
[ "${NGINX_RR:-0}" = 1 ] && CONTENDERS=(nginx nginx-rr haproxy canary)

need=()
for p in wrk nginx haproxy h2load openssl curl; do
  command -v "$p" >/dev/null || need+=("$([ "$p" = h2load ] && echo nghttp2-client || echo "$p")")
done
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
start_upstreams $LOAD_CPU; UPSTREAM_PID=${PIDS[-1]}
P_NGINX=$(free_port); P_NGINX_RR=$(free_port); P_HAPROXY=$(free_port); P_CANARY=$(free_port); A_CANARY=$(free_port)
# TLS 1.3 (h1 and h2 by ALPN) and h2c listeners per contender; canary-proxy's TLS is a second
# process (one listener each), the others' are more listeners of the same one.
T_NGINX=$(free_port); H_NGINX=$(free_port); T_HAPROXY=$(free_port); H_HAPROXY=$(free_port)
T_CANARY=$(free_port); A_CANARY_TLS=$(free_port)
tls_cert "$WORK"
post_lua "$WORK/post1k.lua" 1024
post_lua "$WORK/post64k.lua" 65536

# The contenders do canary-proxy's work (SPEC: the proxy's headers), each the way that proxy
# would in this role: NGINX as in common.sh; HAProxy hashes the user id, adds the forwarded
# fields and names its server. "nginx-rr" is the bare reverse proxy the earlier runs measured
# (round robin, no fields): a reference row, so a reader sees what the canary work costs NGINX.
nginx_config "$WORK/nginx-proxy.conf" "$P_NGINX" "$T_NGINX" "$H_NGINX" "$WORK"
taskset -c $PROXY_CPU nginx -c "$WORK/nginx-proxy.conf" -g 'daemon off;' & PIDS+=($!); NGINX_PID=$!

if [ "${NGINX_RR:-0}" = 1 ]; then
cat > "$WORK/nginx-rr.conf" <<CONF
worker_processes 1;
master_process off;
pid $WORK/nginx-rr.pid;
error_log $WORK/nginx-rr.err warn;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream backends { server 127.0.0.1:$U1; server 127.0.0.1:$U2; keepalive 256; }
  server {
    listen 127.0.0.1:$P_NGINX_RR backlog=4096;
    location / { proxy_pass http://backends; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
taskset -c $PROXY_CPU nginx -c "$WORK/nginx-rr.conf" -g 'daemon off;' & PIDS+=($!); NGINX_RR_PID=$!
fi

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
  bind 127.0.0.1:$T_HAPROXY ssl crt $WORK/both.pem alpn h2,http/1.1 ssl-min-ver TLSv1.3
  bind 127.0.0.1:$H_HAPROXY proto h2
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  default_backend be
backend be
  balance hdr(x-user-id)
  http-send-name-header X-Deployment-Cohort
  http-response set-header X-Deployment-Cohort %[srv_name]
  http-response set-header X-Deployment-Version v1 if { srv_name stable }
  http-response set-header X-Deployment-Version v2 if { srv_name canary }
  server stable 127.0.0.1:$U1
  server canary 127.0.0.1:$U2
CONF
taskset -c $PROXY_CPU haproxy -f "$WORK/haproxy.cfg" -db & PIDS+=($!); HAPROXY_PID=$!

canary_config "$WORK/canary.toml" "$P_CANARY" "$A_CANARY"
RUST_LOG=warn taskset -c $PROXY_CPU "$BIN" run --config "$WORK/canary.toml" & PIDS+=($!); CANARY_PID=$!
canary_config "$WORK/canary-tls.toml" "$T_CANARY" "$A_CANARY_TLS"
sed -i "s#^\[proxy\]#[proxy.tls]\ncert = \"$WORK/cert.pem\"\nkey = \"$WORK/key.pem\"\n[proxy]#" "$WORK/canary-tls.toml"
RUST_LOG=warn taskset -c $PROXY_CPU "$BIN" run --config "$WORK/canary-tls.toml" & PIDS+=($!); CANARY_TLS_PID=$!
sleep 1

# Every contender must answer 200 with the cohort and version fields, or the comparison is off.
for c in nginx:$P_NGINX haproxy:$P_HAPROXY canary:$P_CANARY ${NGINX_RR_PID:+nginx-rr:$P_NGINX_RR}; do
  python3 - "${c%%:*}" "${c##*:}" <<'PY' || exit 1
import socket, sys
who, port = sys.argv[1], int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port), timeout=5)
s.sendall(b"GET / HTTP/1.1\r\nHost: preflight\r\nx-user-id: preflight\r\nConnection: close\r\n\r\n")
head = b""
while b"\r\n\r\n" not in head:
    got = s.recv(4096)
    if not got:
        break
    head += got
head = head.split(b"\r\n\r\n")[0].decode().lower()
ok = head.startswith("http/1.1 200") and (who == "nginx-rr" or (
    "x-deployment-cohort:" in head and "x-deployment-version:" in head))
if not ok:
    sys.exit(f"{who} does not answer as a canary proxy would:\n{head}")
PY
done
# The other shapes answer the same: a POST's body reaches the upstream, TLS 1.3, h2c, h2 by ALPN.
for c in nginx:$P_NGINX:$T_NGINX:$H_NGINX haproxy:$P_HAPROXY:$T_HAPROXY:$H_HAPROXY canary:$P_CANARY:$T_CANARY:$P_CANARY; do
  IFS=: read -r who p t h <<<"$c"
  for probe in "post http://127.0.0.1:$p/ --data-binary @$WORK/64k" "tls https://127.0.0.1:$t/ --tlsv1.3 --http1.1" \
      "h2c http://127.0.0.1:$h/ --http2-prior-knowledge" "h2 https://127.0.0.1:$t/ --http2"; do
    set -- $probe
    head=$(curl -sk -o /dev/null -D - -H "x-user-id: preflight" "${@:2}" | tr -d '\r' | tr 'A-Z' 'a-z')
    case $1 in h2c | h2) want="http/2 200" ;; *) want="http/1.1 200" ;; esac
    if [[ $head != "$want"* || $head != *x-deployment-cohort:* || $head != *x-deployment-version:* ]]; then
      echo "$who ($1) does not answer as a canary proxy would:"$'\n'"$head" >&2; exit 1
    fi
  done
done


cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hwm_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

# peak_rss PID SECONDS: the largest VmRSS seen every 100 ms for SECONDS (kB), in the background.
peak_rss() {
  local pid=$1 end=$((SECONDS + $2)) max=0 now
  while [ $SECONDS -lt $end ]; do
    now=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    [ "$now" -gt "$max" ] && max=$now
    sleep 0.1
  done
  echo "$max"
}

# run NAME PORT PID PATH CONNS SHAPE -> "rps p50_ms p99_ms cpu_ms_per_1k non2xx peak_rss_kb"
# SHAPE: get, post1k, post64k (wrk over http), tls (wrk over https), h2c, h2 (h2load, 10
# streams per connection; h2load gives no percentiles: p50 is its mean, p99 its max).
run() {
  local port=$2 pid=$3 path=$4 conns=$5 shape=$6 before after out rss=0 sampler=""
  before=$( [ "$pid" = - ] && echo 0 || cpu_ticks "$pid")
  [ "$pid" != - ] && { peak_rss "$pid" "$SECONDS_PER_RUN" > "$WORK/rss" & sampler=$!; }
  case $shape in
    get) out=$(taskset -c $LOAD_CPU wrk -t1 -c"$conns" -d"${SECONDS_PER_RUN}s" --latency -s "$WORK/ids.lua" "http://127.0.0.1:$port$path" 2>&1) ;;
    post*) out=$(taskset -c $LOAD_CPU wrk -t1 -c"$conns" -d"${SECONDS_PER_RUN}s" --latency -s "$WORK/$shape.lua" "http://127.0.0.1:$port$path" 2>&1) ;;
    tls) out=$(taskset -c $LOAD_CPU wrk -t1 -c"$conns" -d"${SECONDS_PER_RUN}s" --latency -s "$WORK/ids.lua" "https://127.0.0.1:$port$path" 2>&1) ;;
    h2c | h2) out=$(taskset -c $LOAD_CPU h2load -t1 -c"$conns" -m10 -D "$SECONDS_PER_RUN" -H "x-user-id: h2load" \
        "$([ "$shape" = h2 ] && echo https || echo http)://127.0.0.1:$port$path" 2>&1) ;;
  esac
  after=$( [ "$pid" = - ] && echo 0 || cpu_ticks "$pid")
  [ -n "$sampler" ] && { wait "$sampler" || true; rss=$(cat "$WORK/rss"); }
  python3 - "$out" "$before" "$after" "$rss" <<'PY'
import re, sys, os
out, before, after, rss = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def ms(v):
    n, u = re.match(r"([\d.]+)(\w+)", v).groups(); n = float(n)
    return n / 1000 if u == "us" else n * 1000 if u == "s" else n
if "Requests/sec" in out:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    # Anchored: the thread stats' "+/- Stdev" column can end in "50%" too.
    p50 = ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1)); p99 = ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = int(errors.group(1)) if errors else 0
else:
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    if not m:
        sys.exit("h2load failed:\n" + out)
    rps = float(m.group(1))
    total = int(re.search(r"requests: \d+ total, \d+ started, (\d+) done", out).group(1))
    t = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", out)
    p50, p99 = ms(t.group(3)), ms(t.group(2))
    codes = re.search(r"status codes: (\d+) 2xx", out)
    errors = total - int(codes.group(1)) if codes else total
hz = os.sysconf("SC_CLK_TCK")
cpu = (after - before) / hz * 1000 / max(total, 1) * 1000 if after else 0.0
print(f"{rps:.0f} {p50:.3f} {p99:.3f} {cpu:.3f} {errors} {rss}")
PY
}

declare -A RESULTS
# name:path:connections:shape (the first three are the GET cases earlier runs measured).
CASES=("small:/:64:get" "64k:/64k:64:get" "conns:/:1000:get" "post1k:/:64:post1k" "post64k:/:64:post64k"
  "post1k-conns:/:1000:post1k" "tls:/:64:tls" "h2c:/:64:h2c" "h2tls:/:64:h2")
[ -n "${ONLY:-}" ] && read -r -a CASES <<<"$(for c in "${CASES[@]}"; do [[ " $ONLY " == *" ${c%%:*} "* ]] && printf '%s ' "$c"; done)"
for topo in $TOPOLOGIES; do
  # Only the upstreams move; they run as one process (no master).
  taskset -p -c "$([ "$topo" = shared ] && echo $PROXY_CPU || echo $LOAD_CPU)" "$UPSTREAM_PID" >/dev/null
  echo "topology $topo: baseline (no proxy) and ${CONTENDERS[*]}, ${ROUNDS} rounds of ${SECONDS_PER_RUN}s per case" >&2
  for c in "${CASES[@]}"; do
    IFS=: read -r name path conns shape <<<"$c"
    # The baseline (no proxy) is plain HTTP/1.1 to one upstream: NGINX answering itself.
    case $shape in get | post*) base_shape=$shape ;; *) base_shape=get ;; esac
    RESULTS[$topo:baseline:$name]=$(run baseline $U1 - "$path" "$conns" "$base_shape")
    for r in $(seq 1 "$ROUNDS"); do
      for contender in "${CONTENDERS[@]}"; do
        case $contender:$shape in
          nginx:tls | nginx:h2) port=$T_NGINX; pid=$NGINX_PID ;;
          nginx:h2c) port=$H_NGINX; pid=$NGINX_PID ;;
          nginx:*) port=$P_NGINX; pid=$NGINX_PID ;;
          nginx-rr:*) port=$P_NGINX_RR; pid=$NGINX_RR_PID ;;
          haproxy:tls | haproxy:h2) port=$T_HAPROXY; pid=$HAPROXY_PID ;;
          haproxy:h2c) port=$H_HAPROXY; pid=$HAPROXY_PID ;;
          haproxy:*) port=$P_HAPROXY; pid=$HAPROXY_PID ;;
          canary:tls | canary:h2) port=$T_CANARY; pid=$CANARY_TLS_PID ;;
          canary:*) port=$P_CANARY; pid=$CANARY_PID ;;
        esac
        # nginx-rr has no TLS or h2 listener: it is a reference row for the plain cases.
        [ "$contender" = nginx-rr ] && [[ $shape != get && $shape != post* ]] && continue
        line=$(run "$contender" "$port" "$pid" "$path" "$conns" "$shape")
        RESULTS[$topo:$contender:$name]+="$line;"
        echo "  $topo $name round $r $contender: $line" >&2
      done
    done
  done
done
# Peak RSS; and RSS with 1000 idle keep-alive connections (canary-proxy).
for c in nginx:$NGINX_PID nginx-rr:${NGINX_RR_PID:-} haproxy:$HAPROXY_PID canary:$CANARY_PID; do
  [ -n "${c##*:}" ] && RESULTS[rss:${c%%:*}]=$(hwm_kb "${c##*:}")
done
# A burst's free memory goes back within a second or two of its end (src/server/memory.rs).
sleep 3
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

python3 benches/load/report.py "$(declare -p RESULTS)" "$TOPOLOGIES" "${CONTENDERS[*]}" "$IDLE_BEFORE" "$IDLE_AFTER" "$(for c in "${CASES[@]}"; do printf '%s ' "${c%%:*}"; done)"
