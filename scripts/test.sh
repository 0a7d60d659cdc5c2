#!/usr/bin/env bash
# Runs every test. Installs what the tests need first (idempotent, quiet), so this one command
# works on a fresh machine; .ci/run calls it too. A test never skips what it cannot find.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# Outside programs the tests use, by command and Debian package.
for pair in "promtool:prometheus" "chromium:chromium" "chromedriver:chromium-driver" \
  "redis-server:redis-server"; do
  cmd=${pair%%:*}; pkg=${pair##*:}
  command -v "$cmd" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ] && [ "${NO_TEST_INSTALL:-}" != 1 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing: ${need_apt[*]}" >&2
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null 2>&1 || {
      echo "error: could not install ${need_apt[*]} (the tests need them)" >&2; exit 1; }
  else
    echo "error: missing ${need_apt[*]}; install them (Debian: apt-get install ${need_apt[*]})" >&2
    exit 1
  fi
fi

# Every test target (the benches are compiled by clippy in .ci/run, and run by hand).
log=$(mktemp)
cargo test "$@" 2>&1 | tee "$log"
# One closing line over every test binary, for people and for CI's reader.
# What can be checked of deploy/ here (YAML/JSON, promtool, systemd-analyze, the chart).
./scripts/check-deploy.sh >&2
summary=$(awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed", p, f }' "$log")
rm -f "$log"
mkdir -p target
echo "$summary" > target/test-summary.txt
echo
echo "$summary"
