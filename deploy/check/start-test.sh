#!/usr/bin/env bash
# Tests deploy/admit-start.sh (the pod entrypoint) with stand-ins for admitd
# (prints the arguments it was started with) and admitctl (prints a canned
# `admitctl nodes` table, or fails): which id and flags each kind of start
# gets, and that an empty volume never starts under an id the cluster knows.
set -euo pipefail
cd "$(dirname "$0")/../.."
script=$PWD/deploy/admit-start.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pass=0
fail=0

cat >"$work/admitd" <<'STUB'
#!/bin/sh
echo "admitd $*"
STUB
cat >"$work/admitctl" <<'STUB'
#!/bin/sh
[ -n "${NODES_TABLE:-}" ] || { echo "connecting: refused" >&2; exit 1; }
cat "$NODES_TABLE"
STUB
chmod +x "$work/admitd" "$work/admitctl"

# run NAME EXPECTED_EXIT EXPECTED_OUTPUT_PATTERN [VAR=value...]: a start on a
# volume prepared by the caller ($work/vol)
run() {
    local name=$1 want_rc=$2 pattern=$3
    shift 3
    local out rc=0
    out=$(env -i PATH="$PATH" ADMITD="$work/admitd" ADMITCTL="$work/admitctl" \
        ADMIT_VOLUME="$work/vol" ADMIT_PEER_SERVICE=admit-peers ADMIT_JOIN_VIA=admit:50051 \
        ADMIT_INITIAL_NODES=3 "$@" sh "$script" 2>&1) || rc=$?
    if [ "$rc" = "$want_rc" ] && printf '%s\n' "$out" | grep -Eq -- "$pattern"; then
        pass=$((pass + 1))
        echo "ok   $name"
    else
        fail=$((fail + 1))
        echo "FAIL $name: exit $rc (want $want_rc), output:"
        printf '%s\n' "$out" | sed 's/^/     /'
    fi
}
fresh() { rm -rf "$work/vol" && mkdir -p "$work/vol"; }

table() { # the nodes table as admitctl prints it
    printf '%4s  %-28s %-8s %-7s %8s %5s  leads\n' id address state alive replicas self
    while [ $# -gt 0 ]; do
        printf '%4s  %-28s %-8s %-7s %8s %5s  %s\n' "$1" "$2" "$3" yes 64 "" 21
        shift 3
    done
}

# -- single node: id 1, no cluster flags
fresh
run "single node" 0 "^admitd --node-id 1 --data-dir $work/vol/admit\$" POD_NAME=admit-0 ADMIT_CLUSTER_STATE=single

# -- creation: initial ordinals bootstrap with id = ordinal + 1 and record it
fresh
run "creation: admit-1 bootstraps as node 2" 0 "^admitd --node-id 2 --data-dir $work/vol/admit\$" \
    POD_NAME=admit-1 ADMIT_CLUSTER_STATE=new
[ "$(cat "$work/vol/node-id")" = 2 ] && [ "$(cat "$work/vol/start-mode")" = bootstrap ] &&
    { pass=$((pass + 1)); echo "ok   creation records node-id 2, bootstrap"; } ||
    { fail=$((fail + 1)); echo "FAIL creation did not record node-id/start-mode"; }
mkdir -p "$work/vol/admit"
run "restart during creation: may finish the bootstrap" 0 "^admitd --node-id 2 --data-dir $work/vol/admit\$" \
    POD_NAME=admit-1 ADMIT_CLUSTER_STATE=new
run "restart when established: never bootstraps" 0 "^admitd --node-id 2 --data-dir $work/vol/admit --no-bootstrap\$" \
    POD_NAME=admit-1 ADMIT_CLUSTER_STATE=existing

# -- the hazard: an established cluster, admit-1's volume lost, node 2 still a member
fresh
table 1 admit-0.admit-peers:50051 active 2 admit-1.admit-peers:50051 active 3 admit-2.admit-peers:50051 active >"$work/nodes"
run "lost volume, id still a member: refuses" 1 "node 2 is still a cluster member at admit-1.admit-peers:50051" \
    POD_NAME=admit-1 ADMIT_CLUSTER_STATE=existing NODES_TABLE="$work/nodes"
[ ! -e "$work/vol/node-id" ] && [ ! -e "$work/vol/admit" ] &&
    { pass=$((pass + 1)); echo "ok   the refused start wrote nothing"; } ||
    { fail=$((fail + 1)); echo "FAIL the refused start left files on the volume"; }
table 1 admit-0.admit-peers:50051 active 2 admit-1.admit-peers:50051 leaving 3 admit-2.admit-peers:50051 active >"$work/nodes"
run "lost volume, id leaving: still refuses" 1 "remove-node 2" \
    POD_NAME=admit-1 ADMIT_CLUSTER_STATE=existing NODES_TABLE="$work/nodes"
# a forgotten switch: still creating, but the cluster exists: same refusal
# only for ordinals past the initial ones; initial ordinals bootstrap (the
# README's reason to apply the production overlay right after creation)

# -- after `admitctl remove-node 2`: joins with a new id
table 1 admit-0.admit-peers:50051 active 2 admit-1.admit-peers:50051 removed 3 admit-2.admit-peers:50051 active 4 admit-3.admit-peers:50051 active >"$work/nodes"
run "lost volume, old id removed: joins as a new node" 0 \
    "^admitd --node-id 6 --data-dir $work/vol/admit --advertise admit-1.admit-peers:50051 --no-bootstrap --join admit:50051\$" \
    POD_NAME=admit-1 ADMIT_CLUSTER_STATE=existing NODES_TABLE="$work/nodes"
run "its restart keeps id 6 and joins again" 0 \
    "^admitd --node-id 6 --data-dir $work/vol/admit --advertise admit-1.admit-peers:50051 --no-bootstrap --join admit:50051\$" \
    POD_NAME=admit-1 ADMIT_CLUSTER_STATE=existing

# -- scale-up: a new ordinal joins with an id never used
fresh
table 1 admit-0.admit-peers:50051 active 2 admit-1.admit-peers:50051 active 3 admit-2.admit-peers:50051 active >"$work/nodes"
run "scale-up: admit-3 joins as node 7" 0 "^admitd --node-id 7 .*--advertise admit-3.admit-peers:50051 --no-bootstrap --join admit:50051\$" \
    POD_NAME=admit-3 ADMIT_CLUSTER_STATE=existing NODES_TABLE="$work/nodes"
fresh
run "scale-up while creating: admit-3 joins too" 0 "^admitd --node-id 7 .*--join admit:50051\$" \
    POD_NAME=admit-3 ADMIT_CLUSTER_STATE=new NODES_TABLE="$work/nodes"

# -- an unreachable cluster: no guessing
fresh
run "empty volume, cluster unreachable: refuses" 1 "cannot list the cluster's nodes" \
    POD_NAME=admit-3 ADMIT_CLUSTER_STATE=existing
[ ! -e "$work/vol/node-id" ] && { pass=$((pass + 1)); echo "ok   nothing written"; } ||
    { fail=$((fail + 1)); echo "FAIL node-id written"; }

# -- bad input
fresh
run "bad state named" 1 "ADMIT_CLUSTER_STATE must be single, new or existing" \
    POD_NAME=admit-0 ADMIT_CLUSTER_STATE=bogus NODES_TABLE="$work/nodes"
run "pod name without ordinal" 1 "cannot read an ordinal" POD_NAME=admit ADMIT_CLUSTER_STATE=existing
mkdir -p "$work/vol/admit"
run "data without node-id: refuses to guess" 1 "refusing to guess the node id" POD_NAME=admit-0 ADMIT_CLUSTER_STATE=existing

echo "admit-start: $pass passed, $fail failed"
[ "$fail" = 0 ]
