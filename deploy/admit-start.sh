#!/bin/sh
# admit-start: the container's entrypoint in a StatefulSet pod. It chooses the
# node id and how admitd starts, so that a pod whose volume was lost never
# comes back as an empty voter under an id the cluster still counts on
# (issue 11, item 1): such a pod refuses to start until that id is removed,
# then joins as a new node with a new id. Plain POSIX sh: it runs on the
# image's busybox and is tested with the host's sh (deploy/check/start-test.sh).
#
# Environment (from the pod spec and the admit-start ConfigMap):
#   POD_NAME               the pod's name, <statefulset>-<ordinal>
#   ADMIT_CLUSTER_STATE    single | new | existing
#                            single:   one node, no peers (development)
#                            new:      first creation: ordinals below
#                                      ADMIT_INITIAL_NODES bootstrap from the
#                                      config's peers (ids = ordinal + 1)
#                            existing: the cluster exists: an empty volume
#                                      always joins with a new id
#   ADMIT_INITIAL_NODES    how many peers the config lists (new only)
#   ADMIT_PEER_SERVICE     the headless Service: a pod is reached at
#                          <pod>.<service>:<port> (same namespace)
#   ADMIT_PORT             gRPC port [50051]
#   ADMIT_JOIN_VIA         a member to join through, host:port (the client Service)
#   ADMIT_VOLUME           the data volume's mount point [/data]
#   ADMIT_CONFIG           admitd's TOML file (read by admitd itself)
# Files on the volume: node-id (this volume's node id), start-mode (bootstrap
# or join), admit/ (admitd's data dir).
set -eu

say() { echo "admit-start: $*" >&2; }
die() {
    say "$*"
    exit 1
}

: "${POD_NAME:?POD_NAME must be set (downward API metadata.name)}"
state=${ADMIT_CLUSTER_STATE:-existing}
volume=${ADMIT_VOLUME:-/data}
port=${ADMIT_PORT:-50051}
admitd=${ADMITD:-admitd}
admitctl=${ADMITCTL:-admitctl}
ordinal=${POD_NAME##*-}
case $ordinal in
'' | *[!0-9]*) die "cannot read an ordinal from POD_NAME=$POD_NAME" ;;
esac
data="$volume/admit"

if [ "$state" = single ]; then
    # one node, its only voter: an empty volume is simply a new, empty node
    exec "$admitd" --node-id 1 --data-dir "$data"
fi

: "${ADMIT_PEER_SERVICE:?ADMIT_PEER_SERVICE must be set}"
address="$POD_NAME.$ADMIT_PEER_SERVICE:$port"

start() { # id mode: exec admitd for an initialized volume
    if [ "$2" = join ]; then
        : "${ADMIT_JOIN_VIA:?ADMIT_JOIN_VIA must be set}"
        # --join again on restarts is harmless: a registered node is kept
        exec "$admitd" --node-id "$1" --data-dir "$data" --advertise "$address" \
            --no-bootstrap --join "$ADMIT_JOIN_VIA"
    fi
    if [ "$state" = new ]; then
        # still creating the cluster: finish a bootstrap cut short (groups
        # initialized already are left as they are)
        exec "$admitd" --node-id "$1" --data-dir "$data"
    fi
    # an established cluster: a restart never initializes anything
    exec "$admitd" --node-id "$1" --data-dir "$data" --no-bootstrap
}

if [ -s "$volume/node-id" ]; then
    # this volume ran before: same id, same data
    id=$(cat "$volume/node-id")
    mode=$(cat "$volume/start-mode" 2>/dev/null || echo bootstrap)
    say "node $id ($mode) restarting from $data"
    start "$id" "$mode"
fi

if [ -e "$data" ]; then
    die "$data exists but $volume/node-id does not: refusing to guess the node id"
fi

if [ "$state" = new ] && [ "$ordinal" -lt "${ADMIT_INITIAL_NODES:?ADMIT_INITIAL_NODES must be set}" ]; then
    id=$((ordinal + 1))
    say "cluster creation: node $id bootstraps from the configured peers"
    mkdir -p "$data"
    echo bootstrap >"$volume/start-mode"
    echo "$id" >"$volume/node-id"
    # bootstrap: the config's peers initialize every fresh shard
    exec "$admitd" --node-id "$id" --data-dir "$data"
fi
[ "$state" = new ] || [ "$state" = existing ] ||
    die "ADMIT_CLUSTER_STATE must be single, new or existing, not '$state'"

# An empty volume in an existing cluster: a new node, or one whose volume was
# lost. The registry lists every node ever added (removed ones included).
: "${ADMIT_JOIN_VIA:?ADMIT_JOIN_VIA must be set}"
nodes=$("$admitctl" --addr "$ADMIT_JOIN_VIA" nodes) ||
    die "cannot list the cluster's nodes through $ADMIT_JOIN_VIA; retrying on restart"
stale=$(printf '%s\n' "$nodes" | awk -v a="$address" 'NR > 1 && $2 == a && $3 != "removed" { print $1 }')
if [ -n "$stale" ]; then
    for old in $stale; do
        say "node $old is still a cluster member at $address, but this pod's volume is empty"
        say "(its data was lost). It must not come back as an empty voter. Remove it first:"
        say "  admitctl --addr $ADMIT_JOIN_VIA remove-node $old"
        say "and wait until 'admitctl nodes' shows it removed (deploy/README.md,"
        say "'Replacing a node whose volume was lost'); this pod then joins with a new id."
    done
    exit 1
fi
# Ids are never reused: one above every id the registry knows, plus the
# ordinal, so pods joining at the same time pick different ids.
max=$(printf '%s\n' "$nodes" | awk 'NR > 1 && $1 ~ /^[0-9]+$/ && $1 > m { m = $1 } END { print m + 0 }')
id=$((max + 1 + ordinal))
say "joining the cluster through $ADMIT_JOIN_VIA as new node $id at $address"
mkdir -p "$data"
echo join >"$volume/start-mode"
echo "$id" >"$volume/node-id"
start "$id" join
