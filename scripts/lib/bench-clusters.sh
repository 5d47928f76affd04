# Sourced by scripts/bench-*.sh: starts a 3-node paxos-kv cluster and a 3-node
# etcd cluster (Debian's etcd-server) on loopback, each with its own data
# directories under $WORK, and stops them on exit. Both keep their default
# durability (an fsync before every acknowledged write).
# Sets BIN (PAXOS_KV_BIN, else the release build) and WORK (a scratch
# directory, removed on exit); stops the script when either tool is missing.

BIN=${PAXOS_KV_BIN:-target/release/paxos-kv}
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 2; }
command -v etcd >/dev/null || { echo "etcd not found: apt-get install etcd-server" >&2; exit 2; }
WORK=$(mktemp -d)

PIDS=()
PKV_PIDS=()
ETCD_PIDS=()
PKV_PEERS="1=http://127.0.0.1:7301,2=http://127.0.0.1:7302,3=http://127.0.0.1:7303"
PKV_URLS=http://127.0.0.1:7301,http://127.0.0.1:7302,http://127.0.0.1:7303
ETCD_CLUSTER="e1=http://127.0.0.1:23801,e2=http://127.0.0.1:23802,e3=http://127.0.0.1:23803"
ETCD_URLS=http://127.0.0.1:23791,http://127.0.0.1:23792,http://127.0.0.1:23793

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# wait_http URL [POST-BODY]: polls until URL answers 2xx, at most 60 s.
wait_http() {
    for _ in $(seq 600); do
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

# start_paxos_kv: three real processes; returns once every node is ready.
start_paxos_kv() {
    PKV_PIDS=()
    for i in 1 2 3; do
        "$BIN" serve --id $i --listen 127.0.0.1:730$i --data-dir "$WORK/pkv$i" \
            --peers "$PKV_PEERS" --cluster-token bench-token 2>>"$WORK/pkv$i.log" &
        PKV_PIDS+=($!)
        PIDS+=($!)
    done
    for i in 1 2 3; do wait_http "http://127.0.0.1:730$i/ready"; done
}

# start_etcd [new|existing]: three members; returns once each serves a range.
start_etcd() {
    local state=${1:-new}
    ETCD_PIDS=()
    for i in 1 2 3; do
        etcd --name e$i --data-dir "$WORK/etcd$i" \
            --listen-client-urls http://127.0.0.1:2379$i --advertise-client-urls http://127.0.0.1:2379$i \
            --listen-peer-urls http://127.0.0.1:2380$i --initial-advertise-peer-urls http://127.0.0.1:2380$i \
            --initial-cluster "$ETCD_CLUSTER" --initial-cluster-state "$state" \
            --initial-cluster-token bench --quota-backend-bytes 8589934592 \
            --log-level error >>"$WORK/etcd$i.log" 2>&1 &
        ETCD_PIDS+=($!)
        PIDS+=($!)
    done
    for i in 1 2 3; do wait_http "http://127.0.0.1:2379$i/v3/kv/range" '{"key":"eA=="}'; done
}

# stop_all PID...: SIGTERM, then waits for the processes to exit.
stop_all() {
    kill "$@" 2>/dev/null || true
    for pid in "$@"; do
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    done
}

# rss_mb PID: resident memory in MB.
rss_mb() { echo $(($(ps -o rss= -p "$1") / 1024)); }

# disk_mb DIR: bytes on disk in MB.
disk_mb() { echo $(($(du -sk "$1" | cut -f1) / 1024)); }

# bench_json SYSTEM URLS ARGS...: one `paxos-kv bench --json` run.
bench_json() {
    local sys=$1 urls=$2
    shift 2
    "$BIN" bench --api "$sys" --url "$urls" --json "$@"
}

# field JSON NAME: one number of a bench report.
field() { python3 -c 'import json,sys; print(round(json.loads(sys.argv[1])[sys.argv[2]], 2))' "$1" "$2"; }
