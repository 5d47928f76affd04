#!/usr/bin/env bash
# Side-by-side benchmark on this machine: a 3-node paxos-kv cluster and a
# 3-node etcd cluster (Debian's etcd-server), both on loopback, driven by the
# same `paxos-kv bench` workload, each case run for both systems back to back:
#   put spread   new keys, CONCURRENCY in flight, spread over the 3 nodes
#                (etcd: txn on create_revision == 0)
#   put one      the same, all sent to node 1 (a load balancer's single URL)
#   put 1        one request in flight, to node 1: the unloaded latency
#   get one      linearizable reads of decided keys on node 1
#                (etcd: range, serializable=false)
# Prints each report, then one table (markdown) of throughput and latency.
# Usage: scripts/bench-vs-etcd.sh [DURATION] [CONCURRENCY]
# Needs: a release build (cargo build --release) and `etcd` on PATH
# (apt-get install etcd-server). Everything runs on 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10s}
CONC=${2:-32}

source scripts/lib/bench-clusters.sh
start_paxos_kv
start_etcd

ROWS=()
run_case() { # NAME MODE CONCURRENCY spread|one
    local name=$1 mode=$2 conc=$3 where=$4 pkv etcd pkv_urls=$PKV_URLS etcd_urls=$ETCD_URLS
    if [ "$where" = one ]; then pkv_urls=${PKV_URLS%%,*}; etcd_urls=${ETCD_URLS%%,*}; fi
    echo "== $name: paxos-kv"
    pkv=$(bench_json paxos-kv "$pkv_urls" --mode "$mode" --concurrency "$conc" --duration "$DURATION")
    echo "$pkv"
    echo "== $name: etcd"
    etcd=$(bench_json etcd "$etcd_urls" --mode "$mode" --concurrency "$conc" --duration "$DURATION")
    echo "$etcd"
    local a b
    a=$(field "$pkv" throughput)
    b=$(field "$etcd" throughput)
    ROWS+=("| $name | $a req/s, p50 $(field "$pkv" p50_ms) ms, p99 $(field "$pkv" p99_ms) ms | $b req/s, p50 $(field "$etcd" p50_ms) ms, p99 $(field "$etcd" p99_ms) ms | $(python3 -c "print(f'{$a/max($b,1e-9):.2f}x')") |")
}
run_case "PUT new keys, $CONC in flight, spread over 3 nodes" put "$CONC" spread
run_case "PUT new keys, $CONC in flight, one node" put "$CONC" one
run_case "PUT new keys, 1 in flight, one node" put 1 one
run_case "GET decided keys, $CONC in flight, one node" get "$CONC" one

echo
echo "| workload ($DURATION each) | paxos-kv | etcd $(etcd --version | head -1 | awk '{print $3}') | throughput ratio |"
echo "|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
