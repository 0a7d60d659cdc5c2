#!/usr/bin/env bash
# Checks what can be checked of deploy/ here: every YAML and JSON parses, the Prometheus rules
# pass promtool, the systemd unit passes systemd-analyze (where systemd can analyse it), the
# Helm chart renders with a real Helm in the cases an operator meets (and refuses what it must),
# every config it renders passes `canary-proxy check`, and every metric the dashboard and the
# rules query is one the proxy exports.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import yaml' 2>/dev/null || pip install -q pyyaml
command -v promtool >/dev/null || { echo "error: promtool is needed (Debian package prometheus)" >&2; exit 1; }

helm=${HELM:-$PWD/target/tools/helm}
[ -x "$helm" ] || command -v helm >/dev/null || { echo "error: helm is needed (scripts/test.sh installs it into target/tools)" >&2; exit 1; }
[ -x "$helm" ] || helm=$(command -v helm)

python3 - "$helm" <<'PY'
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

# The chart, rendered by a real Helm (scripts/test.sh installs one) in the cases an operator
# meets; each rendered config is checked by canary-proxy itself below.
import subprocess
helm = sys.argv[1]
chart = "deploy/helm/canary-proxy"
def helm_template(*args):
    r = subprocess.run([helm, "template", "t", chart, *args], capture_output=True, text=True)
    return r.returncode, r.stdout, r.stderr
def objects(out):
    return [d for d in yaml.safe_load_all(out) if d]
TOKEN = ["--set", "adminToken=0123456789abcdef01234567"]
code, _, err = helm_template()
check(code != 0 and "adminToken" in err, f"chart: renders without an admin token: {err}")
code, _, err = helm_template("--set", "adminToken=change-me")
check(code != 0 and "placeholder" in err, "chart: accepts the placeholder token change-me")
code, _, err = helm_template(*TOKEN, "--set", "replicas=3")
check(code != 0 and "fleet.redis" in err, "chart: renders replicas without a fleet")
cases = {
    "default": TOKEN,
    "endpoints": TOKEN + ["--set-json", 'trustedProxies=["10.0.0.0/8","192.168.0.0/16"]',
                          "--set-json", 'stable.endpoints=["http://s1:8080","http://s2:8080"]',
                          "--set-json", 'canary.endpoints=["http://c1:8080","http://c2:8080"]',
                          "--set", "canary.salt=spring", "--set-json", 'canary.identity=["cookie:sid","ip"]',
                          "--set-json", 'rollback={"min_requests":500,"max_latency":"300ms","error_statuses":["5xx",429]}'],
    "fleet": TOKEN + ["--set", "replicas=3", "--set", "fleet.redis=redis://redis:6379/0",
                      "--set", "fleet.passwordSecret=redis"],
    "rollout": TOKEN + ["--set-json", 'rollout={"steps":[1,5,25,50,100],"bake":"10m","max_bake":"2h"}'],
    "ephemeral": TOKEN + ["--set", "persistence.enabled=false", "--set", "adminExistingSecret=mine"],
}
for name, args in cases.items():
    code, out, err = helm_template(*args)
    check(code == 0, f"chart ({name}): helm template failed: {err}")
    if code != 0:
        continue
    docs = objects(out)
    kinds = sorted(d["kind"] for d in docs)
    for d in docs:
        for key in ("apiVersion", "kind", "metadata"):
            check(key in d, f"chart ({name}): {d.get('kind')} has no {key}")
    sts = [d for d in docs if d["kind"] == "StatefulSet"]
    check(len(sts) == 1 and "Deployment" not in kinds, f"chart ({name}): not one StatefulSet: {kinds}")
    spec = sts[0]["spec"]
    c = spec["template"]["spec"]["containers"][0]
    check(c["readinessProbe"]["httpGet"]["path"] == "/readyz", f"chart ({name}): readiness probe")
    check(c["livenessProbe"]["httpGet"]["path"] == "/healthz", f"chart ({name}): liveness probe")
    check(spec["updateStrategy"]["type"] == "RollingUpdate", f"chart ({name}): not a rolling update")
    persistent = name != "ephemeral"
    check(("volumeClaimTemplates" in spec) == persistent, f"chart ({name}): the state volume is wrong")
    check(any("emptyDir" in v for v in spec["template"]["spec"]["volumes"]) == (not persistent),
          f"chart ({name}): emptyDir when persistence is {persistent}")
    check(("Secret" in kinds) == (name != "ephemeral"), f"chart ({name}): the Secret")
    toml_text = [d for d in docs if d["kind"] == "ConfigMap"][0]["data"]["canary.toml"]
    open(f"target/helm-{name}.toml", "w").write(toml_text)
    if name == "endpoints":
        check('trusted_proxies = ["10.0.0.0/8","192.168.0.0/16"]' in toml_text, f"chart: trustedProxies: {toml_text}")
        check('"http://c2:8080"' in toml_text and 'salt = "spring"' in toml_text, "chart: canary values")
        check("min_requests = 500" in toml_text, "chart: rollback values")
    if name == "fleet":
        check(spec["replicas"] == 3 and "[fleet]" in toml_text, "chart: fleet replicas")
        check(c["env"][0]["name"] == "CANARY_FLEET_REDIS_PASSWORD", "chart: the Redis password")
    if name == "rollout":
        check("[rollout]" in toml_text and "traffic_percent" not in toml_text, "chart: rollout")

# Every metric queried is one the proxy exports (names from the spec's table).
exported = {"canary_requests_total", "canary_errors_total", "canary_latency_seconds_bucket", "canary_active",
            "canary_traffic_percent", "canary_rollbacks_total", "canary_upstream_failures_total",
            "canary_rejected_total", "canary_judge_evidence", "canary_judge_threshold",
            "canary_fleet_replicas", "canary_fleet_redis_up", "canary_fleet_latch_propagation_seconds_bucket",
            "canary_info", "canary_reloads_total", "canary_notify_failures_total"}
# The dashboard keeps proxies apart: job and instance variables in every query.
board = json.load(open("deploy/grafana/canary-proxy.json"))
names = [v["name"] for v in board["templating"]["list"]]
check({"job", "instance"} <= set(names), f"grafana: job and instance variables ({names})")
for panel in board["panels"]:
    for t in panel.get("targets", []):
        check('instance=~"$instance"' in t["expr"], f"grafana: {panel['title']}: {t['expr']} ignores $instance")
check(any("canary_rollbacks_total" in a["expr"] for a in board["annotations"]["list"]), "grafana: rollback annotations")
text = open("deploy/grafana/canary-proxy.json").read() + open("deploy/prometheus/alerts.yml").read()
used = set(re.findall(r"\bcanary_[a-z_]+", text)) - {"canary_proxy", "canary_version"}
check(used <= exported, f"queries use metrics the proxy does not export: {sorted(used - exported)}")
if failed:
    print("\n".join("deploy check failed: " + f for f in failed), file=sys.stderr)
    sys.exit(1)
print("deploy/: YAML, JSON, chart and metric names ok")
PY

promtool check rules deploy/prometheus/alerts.yml
# The alerts' behaviour: the near-threshold warning stops once the canary is rolled back.
promtool test rules deploy/prometheus/alerts.test.yml
# The rendered chart's config and the Kubernetes one are valid canary-proxy configs (the token
# file is replaced by a token: it only exists inside the pod).
for f in target/helm-*.toml; do
  sed -e 's#^token_file = .*#token = "t"#' -e 's#^path = "/var/lib/.*#path = "deploy-state/state.json"#' "$f" > target/deploy-check.toml
  cargo run -q -- check --config target/deploy-check.toml >/dev/null
done
for m in deploy/kubernetes/*.yaml; do
  python3 -c "import sys, yaml; d=[x for x in yaml.safe_load_all(open(sys.argv[1])) if x and x['kind']=='ConfigMap'][0]; open('target/k8s.toml','w').write(d['data']['canary.toml'])" "$m"
  sed -e 's#^token_file = .*#token = "t"#' -e 's#^path = "/var/lib/.*#path = "deploy-state/state.json"#' target/k8s.toml > target/deploy-check.toml
  cargo run -q -- check --config target/deploy-check.toml >/dev/null || { echo "error: $m: its config is refused" >&2; exit 1; }
done
# The systemd unit's install steps, followed into a scratch root and then checked as the
# service's (dynamic, unprivileged) user would meet them: the config readable, the credential
# handed over, the state folder its own. The steps as they once were (a 0640 root config) fail.
sim=$(mktemp -d); chmod 0755 "$sim"
install -m 0755 target/debug/canary-proxy "$sim/canary-proxy"
install -d -m 0755 "$sim/etc/canary-proxy"
install -m 0644 deploy/systemd/canary.toml "$sim/etc/canary-proxy/canary.toml"
(umask 077 && python3 -c "import secrets; print(secrets.token_hex(16))" > "$sim/etc/canary-proxy/admin-token")
grep -q "LoadCredential=admin-token:/etc/canary-proxy/admin-token" deploy/systemd/canary-proxy.service
# What systemd does at start for the service's user (here: nobody).
install -d -m 0700 -o 65534 "$sim/run/credentials/canary-proxy.service"
install -m 0400 -o 65534 "$sim/etc/canary-proxy/admin-token" "$sim/run/credentials/canary-proxy.service/admin-token"
install -d -m 0700 -o 65534 "$sim/var/lib/canary-proxy"
sed -e "s#\"/run/#\"$sim/run/#" -e "s#\"/var/lib/#\"$sim/var/lib/#" "$sim/etc/canary-proxy/canary.toml" > "$sim/etc/canary-proxy/service.toml"
chmod 0644 "$sim/etc/canary-proxy/service.toml"
as_service() { setpriv --reuid=65534 --regid=65534 --clear-groups -- "$sim/canary-proxy" "$@"; }
as_service check --config "$sim/etc/canary-proxy/service.toml" >/dev/null 2>"$sim/err" || {
  echo "error: the systemd unit's install steps leave a config its user cannot use:" >&2; cat "$sim/err" >&2; exit 1; }
chmod 0640 "$sim/etc/canary-proxy/service.toml"
if as_service check --config "$sim/etc/canary-proxy/service.toml" >/dev/null 2>&1; then
  echo "error: the service user check cannot tell an unreadable config" >&2; exit 1
fi
rm -rf "$sim"

# The container image: its config passes check as the image's numeric user, with the latch in
# the volume that user owns; hadolint finds nothing; the build context leaves target/ out.
hadolint=$(command -v hadolint || echo "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/hadolint")
[ -x "$hadolint" ] || { echo "error: hadolint is needed (scripts/test.sh installs it from PyPI)" >&2; exit 1; }
"$hadolint" deploy/Dockerfile
grep -qx "target/" .dockerignore
grep -q "^USER 10001:10001" deploy/Dockerfile
grep -q "COPY deploy/container.toml /etc/canary-proxy/canary.toml" deploy/Dockerfile
sim=$(mktemp -d); chmod 0755 "$sim"
install -m 0755 target/debug/canary-proxy "$sim/canary-proxy"
install -d -m 0700 -o 10001 -g 10001 "$sim/var/lib/canary-proxy"
sed -e "s#\"/var/lib/#\"$sim/var/lib/#" deploy/container.toml > "$sim/canary.toml"
chmod 0644 "$sim/canary.toml"
CANARY_ADMIN_TOKEN=t setpriv --reuid=10001 --regid=10001 --clear-groups -- "$sim/canary-proxy" check --config "$sim/canary.toml" >/dev/null 2>"$sim/err" || {
  echo "error: deploy/container.toml does not start as the image's user:" >&2; cat "$sim/err" >&2; exit 1; }
rm -rf "$sim"

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
