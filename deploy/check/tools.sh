#!/usr/bin/env bash
# Installs what the deploy checks need, when missing: promtool (Debian
# `prometheus`), a kustomize renderer (`kubectl kustomize`; Debian's
# `kubernetes-client` when no kubectl is installed) and `kubernetes-validate`
# (PyPI, in a venv under .ci/venv). Prints what it uses.
set -euo pipefail
cd "$(dirname "$0")/../.."
updated=
apt_install() {
    if [ -z "$updated" ]; then
        apt-get update -qq
        updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
command -v promtool >/dev/null || apt_install prometheus
command -v kubectl >/dev/null || apt_install kubernetes-client
venv=.ci/venv
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check kubernetes-validate
fi
echo "tools: $(promtool --version 2>&1 | head -1)"
echo "tools: kubectl $(kubectl version --client 2>/dev/null | tr '\n' ' ')"
echo "tools: kubernetes-validate $("$venv/bin/kubernetes-validate" --version 2>&1)"
