#!/usr/bin/env bash
# A large registry, both systems side by side: for paxos-kv and for etcd
# (three nodes each, on loopback), measure PUT and GET on the empty cluster,
# load KEYS keys of 256 B (default 1,000,000) through `paxos-kv bench
# --preload`, measure PUT and GET again, then read RSS and disk per node,
# stop every node and time how long a restarted cluster takes to serve
# (paxos-kv: every node's /ready; etcd: every member answers a range).
# Prints one table at the end.
# Usage: scripts/bench-scale.sh [KEYS] [DURATION] [CONCURRENCY]
# Needs: a release build and `etcd` on PATH (apt-get install etcd-server).
# Loading 1M keys takes minutes per system on 2 cores; disk: a few GB.
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=${1:-1000000}
DURATION=${2:-10s}
CONC=${3:-32}

source scripts/lib/bench-clusters.sh

ROWS=()
measure() { # SYSTEM URLS LABEL [--preload N]
    local sys=$1 urls=$2 label=$3 put get
    shift 3
    put=$(bench_json "$sys" "$urls" --mode put --concurrency "$CONC" --duration "$DURATION" "$@")
    echo "$sys put ($label): $put"
    get=$(bench_json "$sys" "$urls" --mode get --concurrency "$CONC" --duration "$DURATION")
    echo "$sys get ($label): $get"
    ROWS+=("| $sys | $label | $(field "$put" throughput) req/s, p99 $(field "$put" p99_ms) ms | $(field "$get" throughput) req/s, p99 $(field "$get" p99_ms) ms |")
}

SIZES=()
for sys in paxos-kv etcd; do
    if [ $sys = paxos-kv ]; then start_paxos_kv; urls=$PKV_URLS; else start_etcd; urls=$ETCD_URLS; fi
    measure $sys "$urls" "empty"
    echo "== $sys: loading $KEYS keys"
    measure $sys "$urls" "after $KEYS keys" --preload "$KEYS"
    if [ $sys = paxos-kv ]; then
        pids=("${PKV_PIDS[@]}")
        rss=$(for p in "${pids[@]}"; do rss_mb "$p"; done | paste -sd/)
        disk=$(for i in 1 2 3; do disk_mb "$WORK/pkv$i"; done | paste -sd/)
        stop_all "${pids[@]}"
        t0=$(date +%s.%N)
        start_paxos_kv
        restart=$(python3 -c "import time; print(f'{time.time() - $t0:.2f}')")
        stop_all "${PKV_PIDS[@]}"
    else
        pids=("${ETCD_PIDS[@]}")
        rss=$(for p in "${pids[@]}"; do rss_mb "$p"; done | paste -sd/)
        disk=$(for i in 1 2 3; do disk_mb "$WORK/etcd$i"; done | paste -sd/)
        stop_all "${pids[@]}"
        t0=$(date +%s.%N)
        start_etcd existing
        restart=$(python3 -c "import time; print(f'{time.time() - $t0:.2f}')")
        stop_all "${ETCD_PIDS[@]}"
    fi
    SIZES+=("| $sys | $rss | $disk | $restart |")
done

echo
echo "| system | cluster | PUT new keys ($CONC in flight, spread) | GET decided keys |"
echo "|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
echo
echo "| system, $KEYS keys | RSS per node (MB) | disk per node (MB) | restart until all serve (s) |"
echo "|---|---|---|---|"
printf '%s\n' "${SIZES[@]}"
