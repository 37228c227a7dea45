#!/usr/bin/env bash
# admit beside etcd and Redis, one run, the same load generator (admit-bench)
# with the same callers against each (issue 14, item 4):
#
#   scripts/bench-peers.sh            # build (release), run, print the table
#
# Runs, one after another, each server started fresh and stopped after:
#   admit, 1 node     open, new, campaign, with the floors (the empty call,
#                     AdmitBatch deciding nothing) served by a process of
#                     their own and measured before and after
#   etcd, 1 member    etcd-put (unique key per call, fsync per commit: default)
#   etcd, 3 members   etcd-put, callers spread over the members
#   Redis             redis-lua (the window-and-limit rule as a Lua script,
#                     appendonly yes, appendfsync always)
#   admit, 3 nodes    the floors, open, new, campaign, callers spread
#                     over the nodes round-robin (scripts/cluster.sh); then
#                     open, new, campaign again with each number's calls sent
#                     to its shard's leader (admit-bench --route leader, as
#                     admit-client routes)
#   admit, 3 nodes,   new conversations both ways again on a cluster with
#   a shard a node    one shard a node (--shards 3): every shard is a Raft
#                     group, and concurrent commands share a log entry only
#                     within one, so fewer groups carry more commands per
#                     entry (docs/design.md, "Choosing the count")
# The ratios to a floor use the mean of the floors measured before and after
# each admit run (the machine's speed drifts over a run); the table shows both.
# Around the 3-node runs the floors are also measured over three floor
# processes, the callers' connections spread over them as over the nodes: a
# load generator spreading its calls over three servers costs itself more a
# call, which the one-process floor does not show; the ratios to it are
# printed as information beside the issue's.
# It prints the rates side by side with the ratios the issue's targets name.
# Everything listens on 127.0.0.1; installs etcd-server and redis-server from
# Debian when missing. Environment: SECONDS_PER (default 5), CONCURRENCY
# (128), CONNECTIONS (6), SHARDS (16), BENCH_DIR (/tmp/admit-bench-peers),
# SKIP_BUILD=1 to use the binaries in target/release as they are, ADMITD_DIR to
# take admitd and admitctl from another build (the load generator stays
# target/release's, so two builds are measured by the same callers).
# The ratios are also written to $BENCH_DIR/ratios.tsv (name, value, target).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SECS=${SECONDS_PER:-5}
CONC=${CONCURRENCY:-128}
CONNS=${CONNECTIONS:-6}
SHARDS=${SHARDS:-16}
DIR=${BENCH_DIR:-/tmp/admit-bench-peers}
BIN=$ROOT/target/release
SRV=${ADMITD_DIR:-$BIN}
RESULTS=$DIR/results.tsv

need() {
  local missing=()
  command -v etcd >/dev/null || missing+=(etcd-server)
  command -v redis-server >/dev/null || missing+=(redis-server)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

PIDS=()
stop_all() {
  for p in "${PIDS[@]}"; do
    kill "$p" 2>/dev/null || true
  done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  PIDS=()
  for c in cluster cluster-per-node; do
    ADMITD_DIR=$SRV ADMIT_CLUSTER_DIR=$DIR/$c CARGO_PROFILE=release "$ROOT/scripts/cluster.sh" stop >/dev/null 2>&1 || true
  done
}
trap stop_all EXIT

# wait_for, ports_free, cluster_up
# shellcheck source=scripts/bench-lib.sh
. "$ROOT/scripts/bench-lib.sh"

bench() {
  local label=$1
  shift
  echo "== $label"
  # a failed run leaves its rates out (printed as "-") rather than the table
  "$BIN/admit-bench" --seconds "$SECS" --concurrency "$CONC" --connections "$CONNS" \
    --label "$label" "$@" | tee "$DIR/$label.out" || echo "== $label: admit-bench failed"
  grep '^result' "$DIR/$label.out" >>"$RESULTS" || true
}

# floors LABEL: the empty-call and AdmitBatch floors, served by an admit-bench
# process of their own (admitd is a process of its own too; served inside the
# load generator, on its threads, a floor can be beaten), then stopped
# floors LABEL [PORT...]: one floor process per port (default one, 50190),
# the callers' connections spread over them as over a cluster's nodes
floors() {
  local label=$1
  shift
  local ports=("$@")
  [ ${#ports[@]} -gt 0 ] || ports=(50190)
  local targets=()
  for port in "${ports[@]}"; do
    "$BIN/admit-bench" --serve-floor "127.0.0.1:$port" 2>"$DIR/$label-server-$port.log" &
    PIDS+=($!)
    wait_for bash -c "echo >/dev/tcp/127.0.0.1/$port"
    targets+=("http://127.0.0.1:$port")
  done
  bench "$label" --scenarios floor,batch-floor --floor-target "$(IFS=,; echo "${targets[*]}")"
  stop_all
}

admit_single() {
  floors floor-1
  mkdir -p "$DIR/admit1"
  ports_free 50151 50161
  "$SRV/admitd" --node-id 1 --listen 127.0.0.1:50151 --peer-listen 127.0.0.1:50161 \
    --shards "$SHARDS" --data-dir "$DIR/admit1" >"$DIR/admit1.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  # this node's own log, not only an answer on the port: a server left
  # running there would answer in its place
  if ! wait_for grep -q 'admitd listening' "$DIR/admit1.log" || ! kill -0 "$pid" 2>/dev/null; then
    echo "admitd did not start; see $DIR/admit1.log" >&2
    exit 1
  fi
  wait_for "$SRV/admitctl" --addr 127.0.0.1:50151 shards --check
  bench admit-1 --target http://127.0.0.1:50151 --scenarios open,new,campaign
  stop_all
  # the floors again once the node is gone: the machine's speed drifts over a
  # run, so the ratios use the mean of the floors measured before and after
  floors floor-1f
}

admit_cluster() {
  floors floor-3
  # the floors in the cluster's shape too: three server processes
  floors floor-3p 50190 50191 50192
  cluster_up "$DIR/cluster" "$SHARDS" "$SRV"
  bench admit-3 --target http://127.0.0.1:50051,http://127.0.0.1:50052,http://127.0.0.1:50053 \
    --scenarios open,new,campaign
  bench admit-3r --target http://127.0.0.1:50051,http://127.0.0.1:50052,http://127.0.0.1:50053 \
    --scenarios open,new,campaign --route leader
  stop_all
  floors floor-3f
  floors floor-3pf 50190 50191 50192
}

# the same cluster sized one shard a node, new conversations only
admit_cluster_per_node() {
  local dir=$DIR/cluster-per-node
  cluster_up "$dir" 3 "$SRV"
  bench admit-3s --target http://127.0.0.1:50051,http://127.0.0.1:50052,http://127.0.0.1:50053 \
    --scenarios new
  bench admit-3sr --target http://127.0.0.1:50051,http://127.0.0.1:50052,http://127.0.0.1:50053 \
    --scenarios new --route leader
  stop_all
}

# etcd_start NAME CLIENT PEER CLUSTER
etcd_start() {
  local name=$1 client=$2 peer=$3 cluster=$4
  mkdir -p "$DIR/etcd"
  etcd --name "$name" --data-dir "$DIR/etcd/$name" \
    --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token bench \
    --log-level error >"$DIR/etcd-$name.log" 2>&1 &
  PIDS+=($!)
}

etcd_single() {
  etcd_start e1 2379 2380 "e1=http://127.0.0.1:2380"
  wait_for curl -sf http://127.0.0.1:2379/health
  bench etcd-1 --scenarios etcd-put --etcd http://127.0.0.1:2379
  stop_all
}

etcd_three() {
  local c="e1=http://127.0.0.1:2380,e2=http://127.0.0.1:22380,e3=http://127.0.0.1:32380"
  etcd_start e1 2379 2380 "$c"
  etcd_start e2 22379 22380 "$c"
  etcd_start e3 32379 32380 "$c"
  for p in 2379 22379 32379; do wait_for curl -sf "http://127.0.0.1:$p/health"; done
  bench etcd-3 --scenarios etcd-put --etcd http://127.0.0.1:2379,http://127.0.0.1:22379,http://127.0.0.1:32379
  stop_all
}

redis_lua() {
  mkdir -p "$DIR/redis"
  redis-server --bind 127.0.0.1 --port 6379 --dir "$DIR/redis" --save '' \
    --appendonly yes --appendfsync always --daemonize no >"$DIR/redis.log" 2>&1 &
  PIDS+=($!)
  wait_for redis-cli -p 6379 ping
  bench redis --scenarios redis-lua --redis 127.0.0.1:6379
  stop_all
}

# rate LABEL SCENARIO-PREFIX
rate() {
  awk -F'\t' -v l="$1" -v s="$2" '$2 == l && index($3, s) == 1 { print $4; exit }' "$RESULTS"
}
# floor SCENARIO-PREFIX LABEL...: the mean of a floor's measurements
floor() {
  local s=$1
  shift
  for l in "$@"; do rate "$l" "$s"; done | awk '{ t += $1; n++ } END { if (n) printf "%d", t / n }'
}
# both LABEL LABEL SCENARIO-PREFIX: "before / after"
both() {
  echo "$(rate "$1" "$3") / $(rate "$2" "$3")"
}
ratio() {
  if [ -n "$1" ] && [ -n "$2" ] && [ "$2" != 0 ]; then
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'
  else
    echo "-"
  fi
}

need
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release -q -p admitd -p admitctl -p admit-bench
fi
rm -rf "$DIR"
mkdir -p "$DIR"
: >"$RESULTS"
admit_single
etcd_single
etcd_three
redis_lua
admit_cluster
admit_cluster_per_node

new1=$(rate admit-1 new-conversation)
new3=$(rate admit-3 new-conversation)
new3r=$(rate admit-3r new-conversation)
new3s=$(rate admit-3s new-conversation)
new3sr=$(rate admit-3sr new-conversation)
etcd1=$(rate etcd-1 "etcd Put")
etcd3=$(rate etcd-3 "etcd Put")
redis=$(rate redis "Redis+Lua")
floor1=$(floor floor: floor-1 floor-1f)
floor3=$(floor floor: floor-3 floor-3f)
bfloor1=$(floor "batch floor" floor-1 floor-1f)
bfloor3=$(floor "batch floor" floor-3 floor-3f)
floor3p=$(floor floor: floor-3p floor-3pf)
bfloor3p=$(floor "batch floor" floor-3p floor-3pf)
echo
echo "== side by side ($CONC in flight, $SECS s each, $SHARDS shards)"
printf '%-44s %14s %14s %14s\n' "system, scenario" "1 node/member" "3 nodes/members" "3, to leader"
printf '%-44s %14s %14s %14s\n' "admit: floor (empty unary), mean" "$floor1" "$floor3" "-"
printf '%-44s %14s %14s %14s\n' "  before / after the admit runs" "$(both floor-1 floor-1f floor:)" "$(both floor-3 floor-3f floor:)" "-"
printf '%-44s %14s %14s %14s\n' "admit: batch floor (decisions/s), mean" "$bfloor1" "$bfloor3" "-"
printf '%-44s %14s %14s %14s\n' "  before / after the admit runs" "$(both floor-1 floor-1f "batch floor")" "$(both floor-3 floor-3f "batch floor")" "-"
printf '%-44s %14s %14s %14s\n' "  over 3 floor processes (cluster's shape)" "-" "$floor3p" "-"
printf '%-44s %14s %14s %14s\n' "  batch floor over 3 processes" "-" "$bfloor3p" "-"
printf '%-44s %14s %14s %14s\n' "admit: open-window admits" "$(rate admit-1 open-window)" "$(rate admit-3 open-window)" "$(rate admit-3r open-window)"
printf '%-44s %14s %14s %14s\n' "admit: new conversations" "$new1" "$new3" "$new3r"
printf '%-44s %14s %14s %14s\n' "  the same, 3 shards (one a node)" "-" "$new3s" "$new3sr"
printf '%-44s %14s %14s %14s\n' "admit: AdmitBatch of 100, 1 number (dec./s)" "$(rate admit-1 "AdmitBatch")" "$(rate admit-3 "AdmitBatch")" "$(rate admit-3r "AdmitBatch")"
printf '%-44s %14s %14s %14s\n' "etcd: Put, unique keys" "$etcd1" "$etcd3" "-"
printf '%-44s %14s %14s %14s\n' "Redis+Lua: new conversations (AOF always)" "$redis" "-" "-"
echo
# show NAME VALUE TARGET: a line of the ratio table, also kept in ratios.tsv
show() {
  printf '%-52s %8s %8s\n' "$1" "$2" "$3"
  printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$DIR/ratios.tsv"
}
echo "== ratios (issue 14 targets)"
printf '%-52s %8s %8s\n' "ratio" "run" "target"
: >"$DIR/ratios.tsv"
show "new conversations 3 nodes / etcd Put 3 members" "$(ratio "$new3" "$etcd3")" ">= 1.5"
show "  new conversations to the leader / etcd 3 members" "$(ratio "$new3r" "$etcd3")" ">= 1.5"
show "  3 shards (one a node), spread / etcd 3 members" "$(ratio "$new3s" "$etcd3")" ">= 1.5"
show "  3 shards (one a node), to the leader / etcd 3" "$(ratio "$new3sr" "$etcd3")" ">= 1.5"
show "new conversations 1 node / etcd Put 1 member" "$(ratio "$new1" "$etcd1")" ">= 1.5"
show "new conversations 1 node / Redis+Lua" "$(ratio "$new1" "$redis")" ">= 0.7"
show "open-window admits 3 nodes / floor" "$(ratio "$(rate admit-3 open-window)" "$floor3")" ">= 0.8"
show "  open-window to the leader / floor" "$(ratio "$(rate admit-3r open-window)" "$floor3")" ">= 0.8"
show "  open-window spread / floor over 3 processes" "$(ratio "$(rate admit-3 open-window)" "$floor3p")" "-"
show "  open-window to the leader / floor over 3 processes" "$(ratio "$(rate admit-3r open-window)" "$floor3p")" "-"
show "open-window admits 1 node / floor" "$(ratio "$(rate admit-1 open-window)" "$floor1")" "-"
show "AdmitBatch of 100 1 node / batch floor" "$(ratio "$(rate admit-1 AdmitBatch)" "$bfloor1")" ">= 0.6"
show "AdmitBatch of 100 3 nodes / batch floor" "$(ratio "$(rate admit-3 AdmitBatch)" "$bfloor3")" ">= 0.6"
show "  AdmitBatch to the leader / batch floor" "$(ratio "$(rate admit-3r AdmitBatch)" "$bfloor3")" ">= 0.6"
show "  AdmitBatch to the leader / batch floor, 3 processes" "$(ratio "$(rate admit-3r AdmitBatch)" "$bfloor3p")" "-"
echo "raw results: $RESULTS; logs in $DIR"
