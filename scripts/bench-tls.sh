#!/usr/bin/env bash
# The cost of TLS on the API port, as a ratio to plain text in one run
# (issue 12):
#
#   scripts/bench-tls.sh              # build (release), run, print the pairs
#
# Two single nodes run side by side for the whole run, one plain and one
# with TLS (development certificates from `admitctl certs`), both pinned to
# core 0 when there are two cores or more. The load generator (pinned to
# core 1) then alternates between them in short runs: plain, TLS, plain,
# TLS, ... A slow drift of this shared machine's speed (which moved a
# 9-second run by up to 25 % between rounds) then hits both sides of a
# pair alike, and the ratio of the sums over all pairs is what is left of
# TLS. Connections are long-lived (one handshake per connection per run),
# as a sender service keeps them.
#
# Environment: PAIRS (12), SECONDS_PER (3), SCENARIOS ("open new"),
# CONCURRENCY (128), CONNECTIONS (6), BENCH_DIR (/tmp/admit-bench-tls),
# SKIP_BUILD=1 to use the binaries in target/release as they are.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PAIRS=${PAIRS:-12}
SECS=${SECONDS_PER:-3}
SCENARIOS=${SCENARIOS:-open new}
CONC=${CONCURRENCY:-128}
CONNS=${CONNECTIONS:-6}
DIR=${BENCH_DIR:-/tmp/admit-bench-tls}
BIN=$ROOT/target/release
PLAIN=127.0.0.1:50171
TLS=127.0.0.1:50172

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release --locked -p admitd -p admit-bench -p admitctl
fi
server_cpu="" bench_cpu=""
if [ "$(nproc)" -ge 2 ]; then
  server_cpu="taskset -c 0"
  bench_cpu="taskset -c 1"
fi

rm -rf "$DIR"
mkdir -p "$DIR"
"$BIN/admitctl" certs --out "$DIR/certs" --nodes 1 >/dev/null
pids=()
stop() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop EXIT
$server_cpu "$BIN/admitd" --node-id 1 --listen $PLAIN --metrics-listen off \
  --data-dir "$DIR/plain" >"$DIR/plain.log" 2>&1 &
pids+=($!)
$server_cpu "$BIN/admitd" --node-id 1 --listen $TLS --metrics-listen off \
  --data-dir "$DIR/tls" --tls-cert "$DIR/certs/node-1.pem" \
  --tls-key "$DIR/certs/node-1.key" >"$DIR/tls.log" 2>&1 &
pids+=($!)
for addr in $PLAIN $TLS; do
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}") 2>/dev/null && break
    sleep 0.1
  done
done

# one short run; prints its rate
run() {
  local target=$1 scenario=$2
  shift 2
  $bench_cpu "$BIN/admit-bench" --target "$target" "$@" --seconds "$SECS" \
    --concurrency "$CONC" --connections "$CONNS" --label x \
    --scenarios "$scenario" 2>>"$DIR/bench.err" |
    awk -F'\t' '/^result/ {print $4}'
}

for scenario in $SCENARIOS; do
  echo "== $scenario: $PAIRS pairs of ${SECS} s runs (calls/s)"
  printf '%-5s %10s %10s %8s\n' pair plain tls ratio
  for i in $(seq "$PAIRS"); do
    p=$(run "http://$PLAIN" "$scenario")
    t=$(run "https://$TLS" "$scenario" --ca "$DIR/certs/ca.pem")
    printf '%-5s %10s %10s %8s\n' "$i" "$p" "$t" \
      "$(awk -v p="$p" -v t="$t" 'BEGIN {printf "%.2f", t / p}')"
    echo "$scenario $p $t" >>"$DIR/pairs.txt"
  done
  awk -v s="$scenario" '$1 == s {p += $2; t += $3} END {
    printf "%s: TLS / plain over all pairs = %.3f\n", s, t / p}' "$DIR/pairs.txt"
done
