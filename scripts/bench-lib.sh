# shellcheck shell=bash
# Helpers shared by scripts/bench-peers.sh and scripts/bench-targets.sh
# (sourced, not run; ROOT is the repository).

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

# ports_free PORT...: waits (up to 60 s) until no socket but one in TIME-WAIT
# holds any of the ports on 127.0.0.1. They sit in the kernel's ephemeral range:
# the connections of a peer just stopped (etcd's between its members) can still
# hold one as their local port, and a node that binds it then fails to start.
ports_free() {
  local pat
  pat=$(printf '|%s' "$@")
  pat="127\.0\.0\.1:(${pat:1})\$"
  wait_for bash -c "! ss -Htan | awk '\$1 != \"TIME-WAIT\" {print \$4;}' | grep -Eq '$pat'"
}

# the 3-node cluster's API and peer ports (scripts/cluster.sh)
CLUSTER_PORTS=(50051 50052 50053 50061 50062 50063)

# cluster_up DIR SHARDS SRV: a fresh 3-node cluster (scripts/cluster.sh, the
# admitd and admitctl in SRV) with every node running and every shard led.
# Its ports lie in the kernel's ephemeral range, so another process's
# connection can take one between ports_free and the bind (a node then fails
# to start while the other two elect leaders): it is started again.
cluster_up() {
  local dir=$1 shards=$2 srv=$3
  for _ in 1 2 3; do
    ports_free "${CLUSTER_PORTS[@]}"
    NO_BUILD=1 ADMITD_DIR=$srv ADMIT_CLUSTER_DIR=$dir ADMIT_SHARDS=$shards CARGO_PROFILE=release \
      "$ROOT/scripts/cluster.sh" start >/dev/null
    if wait_for "$srv/admitctl" --addr 127.0.0.1:50051 shards --check && all_running "$dir"; then
      return 0
    fi
    echo "a node of $dir did not start; starting the cluster again" >&2
    local n
    for n in 1 2 3; do
      kill -0 "$(cat "$dir/node$n.pid" 2>/dev/null)" 2>/dev/null ||
        tail -n 3 "$dir/node$n.log" 2>/dev/null | sed "s/^/  node $n: /" >&2
    done
    ADMITD_DIR=$srv ADMIT_CLUSTER_DIR=$dir "$ROOT/scripts/cluster.sh" stop >/dev/null 2>&1 || true
    rm -rf "$dir"
  done
  return 1
}
