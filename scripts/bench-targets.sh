#!/usr/bin/env bash
# Issue 14's targets for one build, or for two side by side in one run:
#
#   scripts/bench-targets.sh                 # build (release), measure, print the table
#   BEFORE=DIR SKIP_BUILD=1 scripts/bench-targets.sh
#                                            # also the admitd and admitctl in DIR
#                                            # (another build), measured the same way
#
# Per build, one part after the other, each on servers started fresh:
#   throughput  scripts/bench-peers.sh: admit beside etcd and Redis, its ratios
#   idle        scripts/idle-cpu.sh: 3 nodes, 64 shards, a minute without
#               traffic, then each node's CPU over 10 s from /proc/PID/stat
#   failover    3 nodes (scripts/cluster.sh, 16 shards) left idle for
#               FAILOVER_IDLE seconds (60) so their groups quiesce, one caller
#               sending keyed new conversations to one number through node 1
#               (admit-bench --scenarios failover), kill -9 of the number's
#               shard leader 3 s in; the longest time the caller went without
#               an answer (while the number's leader is node 1, the caller runs
#               again with another number)
#   memory      one node, nothing but its ports and data dir on the command
#               line: 100,000 numbers and 1,000,000 open service windows
#               (admit-bench --scenarios memory), resident memory per window;
#               then SIGTERM, the same command again, seconds to "admitd
#               listening" and the resident memory 3 s later
# The load generator is always target/release's admit-bench, so both builds
# meet the same callers. ROUNDS=2 measures before, after, before, after.
# Environment: BEFORE, ROUNDS (1), PARTS (throughput,idle,failover,memory),
# BENCH_DIR (/tmp/admit-bench-targets), SKIP_BUILD=1, FAILOVER_IDLE (60),
# IDLE_SECS (60); bench-peers.sh's SECONDS_PER, CONCURRENCY, CONNECTIONS and
# SHARDS pass through.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=$ROOT/target/release
DIR=${BENCH_DIR:-/tmp/admit-bench-targets}
ROUNDS=${ROUNDS:-1}
PARTS=${PARTS:-throughput,idle,failover,memory}
FAILOVER_IDLE=${FAILOVER_IDLE:-60}

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release -q -p admitd -p admitctl -p admit-bench
fi
rm -rf "$DIR"
mkdir -p "$DIR"

wants() { [[ ",$PARTS," == *",$1,"* ]]; }

# wait_for, cluster_up
# shellcheck source=scripts/bench-lib.sh
. "$ROOT/scripts/bench-lib.sh"

# what an interrupted run leaves behind is stopped: the memory part's node, a
# failover cluster
NODE=
CLUSTER=
cleanup() {
  if [ -n "$NODE" ]; then kill -TERM "$NODE" 2>/dev/null || true; fi
  if [ -n "$CLUSTER" ]; then
    ADMIT_CLUSTER_DIR=$CLUSTER "$ROOT/scripts/cluster.sh" stop >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

# put OUT KEY VALUE: one figure of a build's run
put() { printf '%s\t%s\n' "$2" "$3" >>"$1/targets.tsv"; }

throughput() {
  local srv=$1 out=$2
  SKIP_BUILD=1 ADMITD_DIR=$srv BENCH_DIR=$out/peers "$ROOT/scripts/bench-peers.sh" \
    >"$out/peers.log" 2>&1 || echo "bench-peers.sh failed: $out/peers.log"
  [ -f "$out/peers/ratios.tsv" ] && cat "$out/peers/ratios.tsv" >>"$out/targets.tsv"
  return 0
}

idle() {
  local srv=$1 out=$2
  NO_BUILD=1 ADMITD_DIR=$srv ADMIT_SHARDS=64 PORT_BASE=52000 IDLE_SECS=${IDLE_SECS:-60} \
    SAMPLE_SECS=10 "$ROOT/scripts/idle-cpu.sh" >"$out/idle.log" 2>&1 || true
  put "$out" "idle CPU per node, % of a core (3 nodes, 64 shards)" \
    "$(awk '/% of a core/ { printf "%s%s", s, $3; s = " / " }' "$out/idle.log")"
}

# one caller's run on the started cluster: prints the longest gap in ms, or
# "leader" when the number's shard leader was node 1 (the caller's entry node,
# not to be killed; the cluster is then used again with another number)
failover_once() {
  local srv=$1 out=$2 try=$3 cdir=$4
  "$BIN/admit-bench" --target http://127.0.0.1:50051 --seconds 12 --connections 3 --numbers 4 \
    --window-customers 1 --scenarios failover >"$out/failover-$try.out" 2>&1 &
  local bench=$!
  wait_for grep -q 'failover watch: number' "$out/failover-$try.out"
  local number leader
  number=$(awk '/failover watch: number/ { print $4; exit }' "$out/failover-$try.out")
  leader=$("$srv/admitctl" --addr 127.0.0.1:50051 status "$number" | awk '/shard leader/ { print $3 }')
  sleep 3
  local n=${leader##*:}
  n=${n: -1}
  if [ "$n" = 1 ] || [ -z "$leader" ]; then
    wait "$bench" || true
    echo leader
  else
    ADMIT_CLUSTER_DIR=$cdir "$ROOT/scripts/cluster.sh" kill "$n" >/dev/null
    wait "$bench" || true
    awk '/longest time without an answer/ { print $(NF-1) }' "$out/failover-$try.out"
  fi
}

failover() {
  local srv=$1 out=$2 gap='' cdir=$2/cluster
  CLUSTER=$cdir
  if ! cluster_up "$cdir" 16 "$srv"; then
    put "$out" "failover: longest time without an answer (ms)" -
    return 0
  fi
  sleep "$FAILOVER_IDLE"
  for try in 1 2 3 4 5 6; do
    gap=$(failover_once "$srv" "$out" "$try" "$cdir" | tail -n 1)
    [ "$gap" != leader ] && break
  done
  ADMITD_DIR=$srv ADMIT_CLUSTER_DIR=$cdir "$ROOT/scripts/cluster.sh" stop >/dev/null 2>&1 || true
  rm -rf "$cdir"
  CLUSTER=
  [ "$gap" = leader ] && gap=
  put "$out" "failover: longest time without an answer (ms)" "${gap:--}"
}

memory() {
  local srv=$1 out=$2
  local data=$out/memory-data
  mkdir -p "$data"
  "$srv/admitd" --data-dir "$data" --listen 127.0.0.1:50191 --metrics-listen 127.0.0.1:50192 \
    >"$out/memory-node.log" 2>&1 &
  local pid=$!
  NODE=$pid
  wait_for grep -q 'admitd listening' "$out/memory-node.log"
  "$BIN/admit-bench" --target http://127.0.0.1:50191 --scenarios memory --server-pid "$pid" \
    --concurrency 128 >"$out/memory.out" 2>&1 || true
  # "... server RSS B MiB before, A MiB after"
  put "$out" "memory: bytes per open window (1M windows)" "$(awk '/server RSS/ {
      for (i = 1; i <= NF; i++) { if ($i == "before,") b = $(i - 2); if ($i == "after") a = $(i - 2) }
      printf "%.0f", (a - b) * 1048576 / 1000000 }' "$out/memory.out")"
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
  local t0 t1
  t0=$(date +%s.%N)
  "$srv/admitd" --data-dir "$data" --listen 127.0.0.1:50191 --metrics-listen 127.0.0.1:50192 \
    >"$out/memory-restart.log" 2>&1 &
  pid=$!
  NODE=$pid
  for _ in $(seq 1 600); do
    grep -q 'admitd listening' "$out/memory-restart.log" && break
    sleep 0.05
  done
  t1=$(date +%s.%N)
  sleep 3
  put "$out" "memory: restart to listening (s)" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')"
  put "$out" "memory: RSS 3 s after the restart (MiB)" "$(awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$pid/status")"
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
  NODE=
  rm -rf "$data"
}

measure() {
  local srv=$1 out=$2
  mkdir -p "$out"
  : >"$out/targets.tsv"
  echo "== $out: admitd from $srv"
  for part in throughput idle failover memory; do
    if wants "$part"; then
      echo "   $part ($(date +%T))"
      "$part" "$srv" "$out"
    fi
  done
}

BUILDS=()
[ -n "${BEFORE:-}" ] && BUILDS+=("before=$(cd "$BEFORE" && pwd)")
BUILDS+=("after=$BIN")
COLS=()
for r in $(seq 1 "$ROUNDS"); do
  for b in "${BUILDS[@]}"; do
    name=${b%%=*}
    measure "${b#*=}" "$DIR/$name-$r"
    COLS+=("$name-$r")
  done
done

# the table: a target a line, a column a build's run (keys in the first run's order)
echo
echo "== issue 14 targets ($(date +%F))"
first=$DIR/${COLS[0]}/targets.tsv
printf '%-56s' "target"
for c in "${COLS[@]}"; do printf ' %18s' "$c"; done
printf ' %8s\n' "wanted"
while IFS=$'\t' read -r key _ want; do
  printf '%-56s' "$key"
  for c in "${COLS[@]}"; do
    printf ' %18s' "$(awk -F'\t' -v k="$key" '$1 == k { print $2; exit }' "$DIR/$c/targets.tsv")"
  done
  case $key in
    idle*) want="<= 1" ;;
    failover*) want="<= 1900" ;;
    "memory: bytes"*) want="<= 200" ;;
    "memory: restart"*) want="<= 5" ;;
    memory*) want="-" ;;
  esac
  printf ' %8s\n' "${want:--}"
done <"$first"
echo "logs and raw results in $DIR"
