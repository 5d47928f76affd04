#!/usr/bin/env bash
# Same-run A/B of two paxos-kv server binaries (or wrappers that exec one
# with other settings): ROUNDS rounds, each starting a fresh 3-node cluster
# of A and then of B (B first on odd rounds, so neither always runs on a
# warmer machine), and running the same cases against node 1:
#   put32  new keys, 32 in flight     put1  one in flight
#   get32  decided keys, 32 in flight
# One client binary (CLIENT, default A) drives both, so only the servers
# differ. Prints every run (with the CPU time of the three servers per
# request, from /proc, which load on the machine disturbs far less than
# throughput), then mean and median per case and binary.
# Usage: scripts/bench-ab.sh A B [ROUNDS] [DURATION] [CASES]
#   CASES: comma-separated subset of put32,put1,get32 (default all)
set -euo pipefail
cd "$(dirname "$0")/.."
A=$1
B=$2
ROUNDS=${3:-3}
DURATION=${4:-5s}
CASES=${5:-put32,put1,get32}
export PAXOS_KV_BIN=$A
source scripts/lib/bench-clusters.sh
CLIENT=${CLIENT:-$A}
RESULTS=$WORK/results

# cpu_ticks PID...: user + system clock ticks of the processes so far.
cpu_ticks() { for p in "$@"; do awk '{print $14 + $15}' "/proc/$p/stat"; done | paste -sd+ | bc; }
: >"$RESULTS"

run_one() { # LABEL SERVER-BINARY ROUND
    local label=$1 server=$2 round=$3 out mode conc
    BIN=$server
    rm -rf "$WORK"/pkv?
    start_paxos_kv
    for c in ${CASES//,/ }; do
        case $c in
            put32) mode=put conc=32 ;;
            put1) mode=put conc=1 ;;
            get32) mode=get conc=32 ;;
            *) echo "unknown case $c" >&2; exit 2 ;;
        esac
        local cpu0 cpu1
        cpu0=$(cpu_ticks "${PKV_PIDS[@]}")
        out=$("$CLIENT" bench --url "${PKV_URLS%%,*}" --json --mode $mode \
            --concurrency $conc --duration "$DURATION")
        cpu1=$(cpu_ticks "${PKV_PIDS[@]}")
        # CPU of the three servers per request, in microseconds (for get,
        # it includes writing the 1,000 keys it reads).
        local per=$(python3 -c "print(round(($cpu1 - $cpu0) / $(getconf CLK_TCK) * 1e6 / max(1, $(field "$out" requests))))")
        echo "$round $label $c $(field "$out" throughput) $(field "$out" p50_ms) $(field "$out" p99_ms) $per" |
            tee -a "$RESULTS"
    done
    stop_all "${PKV_PIDS[@]}"
}

echo "round binary case req/s p50_ms p99_ms cpu_us_per_req"
for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then
        run_one A "$A" "$round"; run_one B "$B" "$round"
    else
        run_one B "$B" "$round"; run_one A "$A" "$round"
    fi
done

python3 - "$RESULTS" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
cases = sorted({r[2] for r in rows}, key=[r[2] for r in rows].index)
print("\n| case | A req/s mean / median | B req/s mean / median | B/A (mean) | A p50 ms (median) | B p50 ms (median) | A p99 ms (median) | B p99 ms (median) | A CPU us/req (median) | B CPU us/req (median) |")
print("|---|---|---|---|---|---|---|---|---|---|")
for c in cases:
    def col(b, i):
        return [float(r[i]) for r in rows if r[1] == b and r[2] == c]
    a, b = col("A", 3), col("B", 3)
    print(f"| {c} | {statistics.mean(a):.0f} / {statistics.median(a):.0f} | "
          f"{statistics.mean(b):.0f} / {statistics.median(b):.0f} | "
          f"{statistics.mean(b) / statistics.mean(a):.3f} | "
          f"{statistics.median(col('A', 4)):.2f} | {statistics.median(col('B', 4)):.2f} | "
          f"{statistics.median(col('A', 5)):.2f} | {statistics.median(col('B', 5)):.2f} | "
          f"{statistics.median(col('A', 6)):.0f} | {statistics.median(col('B', 6)):.0f} |")
EOF
