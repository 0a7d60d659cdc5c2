# Shared by the load scripts (sourced, not run): the two NGINX upstreams, canary-proxy's config
# as every benchmark runs it, and wrk's per-request user id. Expects WORK (a scratch folder) and
# PIDS (an array of started processes, stopped by the caller's trap).

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_upstreams CPU: two fast upstreams on CPU, NGINX answering from memory ("ok" on /, 64 KiB
# on /64k); sets U1 and U2.
start_upstreams() {
  U1=$(free_port); U2=$(free_port)
  head -c 65536 /dev/zero | tr '\0' 'x' > "$WORK/64k"
  cat > "$WORK/upstreams.conf" <<CONF
worker_processes 1;
master_process off;
pid $WORK/upstreams.pid;
error_log $WORK/upstreams.err warn;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$U1 backlog=4096; location / { return 200 "ok"; } location /64k { alias $WORK/64k; } }
  server { listen 127.0.0.1:$U2 backlog=4096; location / { return 200 "ok"; } location /64k { alias $WORK/64k; } }
}
CONF
  taskset -c "$1" nginx -c "$WORK/upstreams.conf" -g 'daemon off;' & PIDS+=($!)
}

# canary_config FILE PROXY_PORT ADMIN_PORT: 50 % split over U1/U2, metrics and expose_headers on,
# judged as in production but never rolled back (the contenders must keep one topology for the
# whole run: a workload switch can trip the latency trigger, see docs/PERFORMANCE.md).
canary_config() {
  cat > "$1" <<CONF
[proxy]
listen = "127.0.0.1:$2"
[admin]
listen = "127.0.0.1:$3"
[stable]
version = "v1"
endpoints = ["http://127.0.0.1:$U1"]
[canary]
version = "v2"
endpoints = ["http://127.0.0.1:$U2"]
traffic_percent = 50.0
expose_headers = true
[limits]
max_connections = 8000
[rollback]
auto = false
[state]
path = "$1.state.json"
CONF
}

# nginx_config FILE PORT: NGINX doing canary-proxy's work (SPEC: the proxy's headers), as an
# operator would set it up for a canary: a 50/50 split by a hash of the user id (split_clients),
# keep-alive to both upstreams, the cohort and the forwarded fields to the upstream (the
# client's Host kept), the cohort and version on every answer.
nginx_config() {
  cat > "$1" <<CONF
  worker_processes 1;
  master_process off;
  pid $1.pid;
  error_log $1.err warn;
  events { worker_connections 8192; }
  http {
    access_log off;
    keepalive_requests 1000000;
    split_clients "\${http_x_user_id}" \$cohort { 50% stable; * canary; }
    map \$cohort \$version { stable v1; canary v2; }
    upstream stable { server 127.0.0.1:$U1; keepalive 256; }
    upstream canary { server 127.0.0.1:$U2; keepalive 256; }
    server {
      listen 127.0.0.1:$2 backlog=4096;
      location / {
        proxy_pass http://\$cohort;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host \$http_host;
        proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto \$scheme;
        proxy_set_header X-Forwarded-Host \$http_host;
        proxy_set_header X-Deployment-Cohort \$cohort;
        add_header X-Deployment-Cohort \$cohort always;
        add_header X-Deployment-Version \$version always;
      }
    }
  }
CONF
}

# Every request carries a fresh user id, so the cohort hash runs for real.
cat > "$WORK/ids.lua" <<'LUA'
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, { ["x-user-id"] = "user-" .. n })
end
LUA
