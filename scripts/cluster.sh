#!/usr/bin/env bash
# A 3-node admit cluster on this machine, for trying it out and benchmarks.
#
#   scripts/cluster.sh start     # build (release) and start nodes 1-3
#   scripts/cluster.sh status    # nodes and shards (admitctl)
#   scripts/cluster.sh kill N    # kill -9 node N
#   scripts/cluster.sh restart N # start node N again from its data dir
#   scripts/cluster.sh stop      # SIGTERM all (leadership handed over first)
#   scripts/cluster.sh clean     # stop and delete ./admit-cluster
#
# Node N serves its API on 127.0.0.1:5005N and Raft and forwarding on its
# peer port 127.0.0.1:5006N (plain text: loopback only), keeps its data in ./admit-cluster/nodeN and logs to
# ./admit-cluster/nodeN.log. Environment: ADMIT_SHARDS (default 16),
# ADMIT_REPLICAS (default 3), CARGO_PROFILE (release), EXTRA_ARGS, NO_BUILD=1,
# ADMITD_DIR (where admitd and admitctl are taken from; default target/PROFILE:
# another build's, to compare builds with scripts/bench-targets.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${ADMIT_CLUSTER_DIR:-./admit-cluster}
PROFILE=${CARGO_PROFILE:-release}
SHARDS=${ADMIT_SHARDS:-16}
REPLICAS=${ADMIT_REPLICAS:-3}
# API ports 5005N, peer ports (Raft, node-to-node) 5006N
PEERS="1=127.0.0.1:50051/127.0.0.1:50061,2=127.0.0.1:50052/127.0.0.1:50062,3=127.0.0.1:50053/127.0.0.1:50063"
BIN=${ADMITD_DIR:-target/$PROFILE}

# The same package set as scripts/bench-peers.sh and scripts/idle-cpu.sh, so
# that cargo unifies features alike and one script's build is the other's.
# NO_BUILD=1: use the binaries as they are.
build() {
  [ -n "${NO_BUILD:-}" ] && return 0
  if [ "$PROFILE" = release ]; then
    cargo build --release -q -p admitd -p admitctl -p admit-bench
  else
    cargo build -q -p admitd -p admitctl -p admit-bench
  fi
}

start_node() {
  local n=$1
  mkdir -p "$DIR/node$n"
  if [ -f "$DIR/node$n.pid" ] && kill -0 "$(cat "$DIR/node$n.pid")" 2>/dev/null; then
    echo "node $n already running (pid $(cat "$DIR/node$n.pid"))"
    return
  fi
  # shellcheck disable=SC2086
  nohup "$BIN/admitd" --node-id "$n" --listen "127.0.0.1:5005$n" --metrics-listen "127.0.0.1:946$n" \
    --peer-listen "127.0.0.1:5006$n" --peers "$PEERS" --shards "$SHARDS" --replicas "$REPLICAS" \
    --data-dir "$DIR/node$n" ${EXTRA_ARGS:-} >>"$DIR/node$n.log" 2>&1 &
  echo $! >"$DIR/node$n.pid"
  echo "node $n: pid $!, 127.0.0.1:5005$n, metrics http://127.0.0.1:946$n/metrics, log $DIR/node$n.log"
}

stop_node() {
  local n=$1 sig=${2:-TERM}
  local f="$DIR/node$n.pid"
  [ -f "$f" ] || return 0
  local pid
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "-$sig" "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$f"
}

case "${1:-}" in
  start)
    build
    mkdir -p "$DIR"
    for n in 1 2 3; do start_node "$n"; done
    echo "waiting for every shard to have a leader..."
    for _ in $(seq 1 60); do
      if "$BIN/admitctl" --addr 127.0.0.1:50051 shards --check >/dev/null 2>&1; then
        echo "cluster ready"; exit 0
      fi
      sleep 1
    done
    echo "not every shard has a leader yet; see '$0 status' and the logs" >&2
    exit 1
    ;;
  stop) for n in 1 2 3; do stop_node "$n"; done ;;
  kill) stop_node "${2:?node number}" KILL ;;
  restart) start_node "${2:?node number}" ;;
  status)
    "$BIN/admitctl" --addr 127.0.0.1:50051 nodes
    "$BIN/admitctl" --addr 127.0.0.1:50051 shards
    ;;
  clean)
    for n in 1 2 3; do stop_node "$n"; done
    rm -rf "$DIR"
    ;;
  *)
    sed -n '2,15p' "$0"
    exit 2
    ;;
esac
