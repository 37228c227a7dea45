#!/usr/bin/env bash
# The alert rules and the dashboard's queries: promtool checks the rules,
# runs their unit tests, and parses every query of the Grafana dashboard
# (deploy/grafana/admit.json, Grafana's variables filled in); the
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
# the dashboard's queries, as recording rules promtool can parse
dash_rules=$(mktemp --suffix=.yaml)
trap 'rm -f "$dash_rules"' EXIT
python3 - deploy/grafana/admit.json "$dash_rules" <<'PY'
import json, sys
dash = json.load(open(sys.argv[1]))
exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
exprs += [v["definition"].replace("label_values(", "group by (scope) (").replace(", scope)", ")")
          for v in dash["templating"]["list"] if v.get("type") == "query"]
fill = {"$__rate_interval": "5m", "$__range": "1h", "$scope": ".*"}
with open(sys.argv[2], "w") as out:
    out.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, e in enumerate(exprs):
        for k, v in fill.items():
            e = e.replace(k, v)
        out.write(f"      - record: dashboard:query{i}\n        expr: {json.dumps(e)}\n")
print(f"rules.sh: {len(exprs)} dashboard queries")
PY
promtool check rules "$dash_rules"
if ! diff -u <(wrap) "$wrapper"; then
    echo "rules.sh: $wrapper is not $rules wrapped; run deploy/check/rules.sh --write" >&2
    exit 1
fi
echo "rules.sh: $wrapper matches $rules"
