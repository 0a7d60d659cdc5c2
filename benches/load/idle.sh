#!/usr/bin/env bash
# Resident memory of a fresh canary-proxy, then with 1,000 idle keep-alive client connections
# (each made one request, then holds the connection). The performance issue's target: < 30 MB.
#
#   benches/load/idle.sh [CONNECTIONS]        (default 1000)
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-1000}
command -v nginx >/dev/null || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; }
cargo build --release -q --bin canary-proxy
BIN=$PWD/target/release/canary-proxy
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
fp() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
U=$(fp); P=$(fp); A=$(fp)
cat > "$WORK/up.conf" <<CONF
worker_processes 1; master_process off; pid $WORK/up.pid; error_log $WORK/up.err warn;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$U backlog=4096; location / { return 200 "ok"; } } }
CONF
nginx -c "$WORK/up.conf" -g 'daemon off;' & PIDS+=($!)
cat > "$WORK/canary.toml" <<CONF
[proxy]
listen = "127.0.0.1:$P"
workers = 1
[admin]
listen = "127.0.0.1:$A"
[stable]
endpoints = ["http://127.0.0.1:$U"]
[canary]
endpoints = ["http://127.0.0.1:$U"]
traffic_percent = 50.0
[state]
path = "$WORK/state.json"
CONF
RUST_LOG=warn "$BIN" run --config "$WORK/canary.toml" >/dev/null 2>&1 & PIDS+=($!); CP=$!
sleep 1
rss() { awk '/VmRSS/ {print $2}' "/proc/$CP/status"; }
FRESH=$(rss)
python3 - "$P" "$N" <<'PY' & PIDS+=($!); HOLDER=$!
import socket, sys, time
conns = []
for i in range(int(sys.argv[2])):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    s.sendall(b"GET / HTTP/1.1\r\nHost: idle\r\nx-user-id: idle-%d\r\n\r\n" % i)
    s.recv(4096)
    conns.append(s)
time.sleep(5)
PY
sleep 4
IDLE=$(rss)
wait "$HOLDER" || true
echo "canary-proxy RSS: fresh $FRESH kB; with $N idle keep-alive connections $IDLE kB ($(( (IDLE - FRESH) * 1024 / N )) bytes per connection)"
