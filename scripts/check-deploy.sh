#!/usr/bin/env bash
# Checks what can be checked of deploy/ here: every YAML and JSON parses, the Prometheus rules
# pass promtool, the systemd unit passes systemd-analyze (where systemd can analyse it), the
# Helm chart renders (a small renderer for the template forms it uses; helm is not in Debian)
# into Kubernetes objects with their required fields, and every metric the dashboard and the
# rules query is one the proxy exports.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import yaml' 2>/dev/null || pip install -q pyyaml
command -v promtool >/dev/null || { echo "error: promtool is needed (Debian package prometheus)" >&2; exit 1; }

python3 - <<'PY'
import glob, json, re, sys, yaml
failed = []
def check(ok, what):
    if not ok:
        failed.append(what)

# Plain YAML and JSON.
for f in glob.glob("deploy/**/*.y*ml", recursive=True):
    if "/templates/" in f:
        continue
    try:
        docs = [d for d in yaml.safe_load_all(open(f)) if d is not None]
        check(docs, f"{f}: empty")
    except Exception as e:
        failed.append(f"{f}: {e}")
for f in glob.glob("deploy/**/*.json", recursive=True):
    try:
        json.load(open(f))
    except Exception as e:
        failed.append(f"{f}: {e}")

# The chart: render the forms it uses, then check the objects.
chart = "deploy/helm/canary-proxy"
values = yaml.safe_load(open(f"{chart}/values.yaml"))
def lookup(path):
    v = {"Values": values, "Release": {"Name": "test"}, "Chart": yaml.safe_load(open(f"{chart}/Chart.yaml"))}
    for part in path.split("."):
        v = v[part[0].upper() + part[1:] if part in ("values", "release", "chart") else part]
    return v
def render(text):
    def block(m):
        return m.group(2) if lookup(m.group(1)) else ""
    text = re.sub(r"\{\{-? if \.([A-Za-z.]+) \}\}(.*?)\{\{-? end \}\}", block, text, flags=re.S)
    text = re.sub(r"\{\{ \.([A-Za-z.]+) \}\}", lambda m: str(lookup(m.group(1))), text)
    unrendered = re.findall(r"\{\{.*?\}\}", text)
    check(not unrendered, f"chart: forms the check cannot render: {unrendered}")
    return text
for f in sorted(glob.glob(f"{chart}/templates/*.yaml")):
    out = render(open(f).read())
    for doc in yaml.safe_load_all(out):
        if doc is None:
            continue
        for key in ("apiVersion", "kind", "metadata"):
            check(key in doc, f"{f}: no {key}")
        check(doc.get("metadata", {}).get("name"), f"{f}: no metadata.name")
        if doc.get("kind") == "Deployment":
            c = doc["spec"]["template"]["spec"]["containers"][0]
            check(c["readinessProbe"]["httpGet"]["path"] == "/readyz", f"{f}: readiness probe")
            check(c["livenessProbe"]["httpGet"]["path"] == "/healthz", f"{f}: liveness probe")
        if doc.get("kind") == "ConfigMap":
            toml_text = doc["data"]["canary.toml"]
            open("target/helm-rendered.toml", "w").write(toml_text)
# The fleet branch of the chart renders to a valid config too.
values["fleet"]["redis"] = "redis://redis:6379/0"
for doc in yaml.safe_load_all(render(open(f"{chart}/templates/configmap.yaml").read())):
    open("target/helm-rendered-fleet.toml", "w").write(doc["data"]["canary.toml"])
    check("[fleet]" in doc["data"]["canary.toml"], "chart: fleet.redis does not add [fleet]")

# Every metric queried is one the proxy exports (names from the spec's table).
exported = {"canary_requests_total", "canary_errors_total", "canary_latency_seconds_bucket", "canary_active",
            "canary_traffic_percent", "canary_rollbacks_total", "canary_upstream_failures_total",
            "canary_rejected_total", "canary_judge_evidence", "canary_judge_threshold",
            "canary_fleet_replicas", "canary_fleet_redis_up", "canary_fleet_latch_propagation_seconds_bucket"}
text = open("deploy/grafana/canary-proxy.json").read() + open("deploy/prometheus/alerts.yml").read()
used = set(re.findall(r"\bcanary_[a-z_]+", text)) - {"canary_proxy", "canary_version"}
check(used <= exported, f"queries use metrics the proxy does not export: {sorted(used - exported)}")
if failed:
    print("\n".join("deploy check failed: " + f for f in failed), file=sys.stderr)
    sys.exit(1)
print("deploy/: YAML, JSON, chart and metric names ok")
PY

promtool check rules deploy/prometheus/alerts.yml
# The rendered chart's config and the Kubernetes one are valid canary-proxy configs (the token
# file is replaced by a token: it only exists inside the pod).
for f in target/helm-rendered.toml target/helm-rendered-fleet.toml; do
  sed 's#^token_file = .*#token = "t"#' "$f" > target/deploy-check.toml
  cargo run -q -- check --config target/deploy-check.toml >/dev/null
done
for m in deploy/kubernetes/*.yaml; do
  python3 -c "import sys, yaml; d=[x for x in yaml.safe_load_all(open(sys.argv[1])) if x and x['kind']=='ConfigMap'][0]; open('target/k8s.toml','w').write(d['data']['canary.toml'])" "$m"
  sed 's#^token_file = .*#token = "t"#' target/k8s.toml > target/deploy-check.toml
  cargo run -q -- check --config target/deploy-check.toml >/dev/null || { echo "error: $m: its config is refused" >&2; exit 1; }
done
if systemd-analyze --version >/dev/null 2>&1; then
  # The unit names a binary that is not installed here: point it at the one just built.
  sed "s#/usr/local/bin/canary-proxy#$PWD/target/debug/canary-proxy#" deploy/systemd/canary-proxy.service > target/canary-proxy.service
  out=$(systemd-analyze verify target/canary-proxy.service 2>&1 || true)
  if echo "$out" | grep -v -E "Failed to connect|System has not been booted|Cannot determine|not a systemd|Failed to setup" | grep -iE "error|unknown|invalid|bad" ; then
    echo "error: systemd-analyze verify: $out" >&2
    exit 1
  fi
fi
echo "deploy/: all checks passed"
