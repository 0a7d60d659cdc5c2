#!/usr/bin/env bash
# User-space instructions per proxied request, counted by valgrind (cachegrind): the one figure
# on this shared machine that does not move with its slow phases, so a change of 1-2 % on the
# request path shows. Two runs of BINARY under cachegrind (one worker, the load scripts' config,
# wrk with 16 connections): one stopped at once, one after SECONDS of load; the difference over
# the requests served is the cost of a request. Counts, not time: valgrind's CPU has no SHA
# instructions (the cohort hash counts ~3,500 instructions here, ~100 ns on the real CPU) and it
# counts a `memcpy` by its loop. Compare binaries with it; quote time from compare.sh.
#
#   benches/load/instructions.sh BINARY [SECONDS] [BODY]   (default 8 s; BODY: POST bodies of
#                                                           BODY bytes instead of GETs)
set -euo pipefail
BIN=${1:?usage: instructions.sh BINARY [SECONDS] [BODY]}; SECS=${2:-8}; BODY=${3:-}
for p in valgrind wrk nginx curl; do
  command -v "$p" >/dev/null || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p" >/dev/null; }
done
WORK=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.3; rm -rf "$WORK"; }
trap cleanup EXIT
. "$(dirname "$0")/common.sh"
start_upstreams 0
LUA=$WORK/ids.lua
[ -n "$BODY" ] && { post_lua "$WORK/post.lua" "$BODY"; LUA=$WORK/post.lua; }
# count SECONDS: "requests instructions" of one run under cachegrind.
count() {
  local p a vg total=0
  p=$(free_port); a=$(free_port)
  canary_config "$WORK/c.toml" "$p" "$a"
  sed -i 's/^\[proxy\]/[proxy]\nworkers = 1/' "$WORK/c.toml"
  RUST_LOG=warn valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file="$WORK/cg.out" \
    "$BIN" run --config "$WORK/c.toml" >/dev/null 2>"$WORK/vg.err" &
  vg=$!
  for _ in $(seq 1 150); do curl -s -o /dev/null "http://127.0.0.1:$p/" && break; sleep 0.2; done
  if [ "$1" != 0 ]; then
    total=$(wrk -t1 -c16 -d"$1s" -s "$LUA" "http://127.0.0.1:$p/" | awk '/requests in/ {print $1}')
  fi
  kill -TERM $vg; wait $vg || true
  # CG_OUT=FILE keeps the loaded run's profile, for cg_annotate (where the instructions go).
  [ "$1" != 0 ] && [ -n "${CG_OUT:-}" ] && cp "$WORK/cg.out" "$CG_OUT"
  echo "$((total + 1)) $(awk '/^summary:/ {print $2}' "$WORK/cg.out")"
}
read -r n0 i0 < <(count 0)
read -r n1 i1 < <(count "$SECS")
echo "requests $((n1 - n0)), instructions per request $(( (i1 - i0) / (n1 - n0) ))"
