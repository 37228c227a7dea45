# shellcheck shell=bash
# Helpers shared by scripts/bench-peers.sh and scripts/bench-targets.sh
# (sourced, not run).

# wait_for CMD...: retries CMD for up to 60 s
wait_for() {
  for _ in $(seq 1 120); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "timed out waiting for: $*" >&2
  return 1
}

# all_running DIR: whether the three nodes scripts/cluster.sh started with
# ADMIT_CLUSTER_DIR=DIR are all still running
all_running() {
  local n
  for n in 1 2 3; do
    kill -0 "$(cat "$1/node$n.pid" 2>/dev/null)" 2>/dev/null || return 1
  done
}
