#!/usr/bin/env bash
# Side-by-side benchmark on this machine: a 3-node paxos-kv cluster and a
# 3-node etcd cluster (Debian's etcd-server), both on loopback, driven by the
# same `paxos-kv bench` workload:
#   put: create-if-absent of new keys (etcd: txn on create_revision == 0)
#   get: linearizable reads of decided keys (etcd: range, serializable=false)
# Usage: scripts/bench-vs-etcd.sh [DURATION] [CONCURRENCY]
# Needs: a release build (cargo build --release) and `etcd` on PATH
# (apt-get install etcd-server). Everything runs on 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10s}
CONC=${2:-32}
BIN=${PAXOS_KV_BIN:-target/release/paxos-kv}
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 2; }
command -v etcd >/dev/null || { echo "etcd not found: apt-get install etcd-server" >&2; exit 2; }

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

wait_http() { # URL [POST-BODY]
    for _ in $(seq 300); do
        if [ -n "${2:-}" ]; then
            curl -sf -X POST -d "$2" "$1" >/dev/null 2>&1 && return 0
        else
            curl -sf "$1" >/dev/null 2>&1 && return 0
        fi
        sleep 0.1
    done
    echo "timed out waiting for $1" >&2
    return 1
}

# paxos-kv: three real processes
PEERS="1=http://127.0.0.1:7301,2=http://127.0.0.1:7302,3=http://127.0.0.1:7303"
for i in 1 2 3; do
    "$BIN" serve --id $i --listen 127.0.0.1:730$i --data-dir "$WORK/pkv$i" \
        --peers "$PEERS" --cluster-token bench-token 2>"$WORK/pkv$i.log" &
    PIDS+=($!)
done
for i in 1 2 3; do wait_http "http://127.0.0.1:730$i/health"; done

# etcd: three members with the same durability (fsync on every commit, the default)
CLUSTER="e1=http://127.0.0.1:23801,e2=http://127.0.0.1:23802,e3=http://127.0.0.1:23803"
for i in 1 2 3; do
    etcd --name e$i --data-dir "$WORK/etcd$i" \
        --listen-client-urls http://127.0.0.1:2379$i --advertise-client-urls http://127.0.0.1:2379$i \
        --listen-peer-urls http://127.0.0.1:2380$i --initial-advertise-peer-urls http://127.0.0.1:2380$i \
        --initial-cluster "$CLUSTER" --initial-cluster-state new --initial-cluster-token bench \
        --log-level error >"$WORK/etcd$i.log" 2>&1 &
    PIDS+=($!)
done
for i in 1 2 3; do wait_http "http://127.0.0.1:2379$i/v3/kv/range" '{"key":"eA=="}'; done

PKV_URLS=http://127.0.0.1:7301,http://127.0.0.1:7302,http://127.0.0.1:7303
ETCD_URLS=http://127.0.0.1:23791,http://127.0.0.1:23792,http://127.0.0.1:23793
for mode in put get; do
    for sys in paxos-kv etcd; do
        if [ $sys = paxos-kv ]; then urls=$PKV_URLS; else urls=$ETCD_URLS; fi
        echo "== $sys $mode, $CONC in flight, $DURATION"
        "$BIN" bench --api $sys --url "$urls" --mode $mode --concurrency "$CONC" --duration "$DURATION"
    done
done
