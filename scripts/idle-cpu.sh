#!/usr/bin/env bash
# Idle CPU of a 3-node admit cluster (issue 14's idle target).
#
#   scripts/idle-cpu.sh            # build admitd (release), measure, stop, clean up
#
# Starts three admitd on loopback with --peers (64 shards, 3 replicas), waits
# until every shard has a leader, leaves the cluster without traffic for
# IDLE_SECS (default 60), then reads utime+stime of each process from
# /proc/<pid>/stat twice, SAMPLE_SECS (default 10) apart, and prints the CPU
# used per node in % of one core: (delta ticks / CLK_TCK) / SAMPLE_SECS.
# The cluster is stopped and its data dir removed afterwards.
#
# Environment: ADMIT_SHARDS (64), ADMIT_REPLICAS (3), IDLE_SECS (60),
# SAMPLE_SECS (10), PORT_BASE (51000: API ports PORT_BASE+N, peer ports
# PORT_BASE+10+N, metrics ports PORT_BASE+20+N), CARGO_PROFILE (release),
# NO_BUILD=1 to skip the build, ADMITD_DIR (admitd and admitctl from there,
# another build's; default target/PROFILE), EXTRA_ARGS (passed to every admitd), PERF_OUT=FILE
# to record node 1 with `perf record -g` over the sample window (where its time goes).
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${CARGO_PROFILE:-release}
SHARDS=${ADMIT_SHARDS:-64}
REPLICAS=${ADMIT_REPLICAS:-3}
IDLE=${IDLE_SECS:-60}
SAMPLE=${SAMPLE_SECS:-10}
BASE=${PORT_BASE:-51000}
BIN=${ADMITD_DIR:-target/$PROFILE}
DIR=$(mktemp -d /tmp/admit-idle.XXXXXX)

if [ -z "${NO_BUILD:-}" ]; then
  if [ "$PROFILE" = release ]; then
    cargo build --release -q -p admitd -p admitctl -p admit-bench
  else
    cargo build -q -p admitd -p admitctl -p admit-bench
  fi
fi

api() { echo "127.0.0.1:$((BASE + $1))"; }
peer() { echo "127.0.0.1:$((BASE + 10 + $1))"; }
PEERS="1=$(api 1)/$(peer 1),2=$(api 2)/$(peer 2),3=$(api 3)/$(peer 3)"

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  rm -rf "$DIR"
}
trap cleanup EXIT
trap "exit 130" INT TERM

for n in 1 2 3; do
  mkdir -p "$DIR/node$n"
  # shellcheck disable=SC2086
  "$BIN/admitd" --node-id "$n" --listen "$(api $n)" --peer-listen "$(peer $n)" \
    --metrics-listen "127.0.0.1:$((BASE + 20 + n))" --peers "$PEERS" \
    --shards "$SHARDS" --replicas "$REPLICAS" --data-dir "$DIR/node$n" ${EXTRA_ARGS:-} \
    >"$DIR/node$n.log" 2>&1 &
  PIDS+=($!)
done

ready=
for _ in $(seq 1 120); do
  if "$BIN/admitctl" --addr "$(api 1)" shards --check >/dev/null 2>&1; then
    ready=1
    break
  fi
  sleep 1
done
if [ -z "$ready" ]; then
  echo "not every shard got a leader in 120 s; logs in $DIR" >&2
  tail -n 20 "$DIR"/node*.log >&2
  trap - EXIT
  exit 1
fi
echo "cluster ready ($SHARDS shards, $REPLICAS replicas); idle for ${IDLE}s"
sleep "$IDLE"

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
declare -A before
for p in "${PIDS[@]}"; do before[$p]=$(ticks "$p"); done
if [ -n "${PERF_OUT:-}" ]; then
  perf record -q -F 999 -g -p "${PIDS[0]}" -o "$PERF_OUT" -- sleep "$SAMPLE" >/dev/null 2>&1 &
  PERF_PID=$!
fi
sleep "$SAMPLE"
[ -n "${PERF_PID:-}" ] && wait "$PERF_PID"
n=0
for p in "${PIDS[@]}"; do
  n=$((n + 1))
  after=$(ticks "$p")
  awk -v d=$((after - before[$p])) -v hz="$HZ" -v s="$SAMPLE" -v n="$n" \
    'BEGIN { printf "node %d: %.2f %% of a core (%d ticks in %d s)\n", n, 100 * d / hz / s, d, s }'
done
