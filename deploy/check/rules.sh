#!/usr/bin/env bash
# The alert rules: promtool checks them, runs their unit tests, and the
# Prometheus Operator wrapper (deploy/kubernetes/components/monitoring/prometheusrule.yaml)
# must hold exactly deploy/prometheus/admit-rules.yaml.
#   deploy/check/rules.sh          check (CI)
#   deploy/check/rules.sh --write  regenerate the wrapper after editing the rules
set -euo pipefail
cd "$(dirname "$0")/../.."
rules=deploy/prometheus/admit-rules.yaml
wrapper=deploy/kubernetes/components/monitoring/prometheusrule.yaml

wrap() {
    cat <<'HEAD'
# GENERATED from deploy/prometheus/admit-rules.yaml by deploy/check/rules.sh
# --write: edit that file, not this one (CI checks they agree).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: admit
  labels:
    app.kubernetes.io/name: admit
    app.kubernetes.io/part-of: admit
spec:
HEAD
    # the rules file without its comment header, indented under spec
    sed -n '/^groups:/,$p' "$rules" | sed 's/^\(.\)/  \1/'
}

if [ "${1:-}" = --write ]; then
    wrap >"$wrapper"
    echo "wrote $wrapper"
    exit 0
fi
command -v promtool >/dev/null || { echo "rules.sh: promtool not found (Debian package prometheus)" >&2; exit 1; }
promtool check rules "$rules"
(cd deploy/prometheus && promtool test rules admit-rules.test.yaml)
if ! diff -u <(wrap) "$wrapper"; then
    echo "rules.sh: $wrapper is not $rules wrapped; run deploy/check/rules.sh --write" >&2
    exit 1
fi
echo "rules.sh: $wrapper matches $rules"
