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
  local extra=""
  if [ -n "${3:-}" ]; then
    # TLS 1.3 (h1 and h2 by ALPN) on $3, h2c (prior knowledge) on $4; certificate in $5.
    extra="
    server { listen 127.0.0.1:$3 ssl http2 backlog=4096; ssl_certificate $5/cert.pem; ssl_certificate_key $5/key.pem;
      ssl_protocols TLSv1.3; ssl_session_cache shared:tls:10m; http2_max_concurrent_streams 128; location / { include $1.location; } }
    server { listen 127.0.0.1:$4 http2 backlog=4096; http2_max_concurrent_streams 128; location / { include $1.location; } }"
  fi
  cat > "$1.location" <<CONF
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
CONF
  cat > "$1" <<CONF
  worker_processes 1;
  master_process off;
  pid $1.pid;
  error_log $1.err warn;
  events { worker_connections 8192; }
  http {
    access_log off;
    keepalive_requests 1000000;
    # A request body is streamed to the upstream as it comes, as canary-proxy does.
    proxy_request_buffering off;
    client_body_buffer_size 128k;
    client_max_body_size 0;
    split_clients "\${http_x_user_id}" \$cohort { 50% stable; * canary; }
    map \$cohort \$version { stable v1; canary v2; }
    upstream stable { server 127.0.0.1:$U1; keepalive 1024; }
    upstream canary { server 127.0.0.1:$U2; keepalive 1024; }
    server {
      listen 127.0.0.1:$2 backlog=4096;
      location / { include $1.location; }
    }$extra
  }
CONF
}

# tls_cert DIR: a throw-away P-256 certificate for 127.0.0.1 (cert.pem, key.pem, and both in
# one file for HAProxy).
tls_cert() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$1/key.pem" -out "$1/cert.pem" 2>/dev/null
  cat "$1/cert.pem" "$1/key.pem" > "$1/both.pem"
}

# post_lua FILE BYTES: wrk POSTs a body of BYTES, each request with a fresh user id.
post_lua() {
  cat > "$1" <<LUA
local n = 0
local body = string.rep("x", $2)
request = function()
  n = n + 1
  return wrk.format("POST", nil, { ["x-user-id"] = "user-" .. n, ["content-type"] = "application/octet-stream" }, body)
end
LUA
}

# Every request carries a fresh user id, so the cohort hash runs for real.
cat > "$WORK/ids.lua" <<'LUA'
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, { ["x-user-id"] = "user-" .. n })
end
LUA
