#!/usr/bin/env bash
# replica-bench against openraft-bench, interleaved on the same machine.
#
# Builds both binaries in release, then for each client count runs
#   replica-bench, openraft-bench, replica-bench, openraft-bench, ...
# R times each with -m 3 and the same -n, and prints every run's put/s, the medians and the ratio
# replica / openraft. Interleaving matters: the machine's speed drifts by tens of percent over
# half an hour, so only ratios taken within one run of this script mean anything.
#
# Usage: benches/openraft-compare/compare.sh [-n OPS] [-r RUNS] [-c "64 256"] [-m MEMBERS]
#            [-t THREADS] [-k RUNTIMES] [-x "EXTRA REPLICA-BENCH FLAGS"]
# -t sets the worker threads of both benchmarks' runtimes; -k runs both on RUNTIMES single-worker
# runtimes instead of one shared one (the primary/leader and the clients on the first, the
# secondaries/followers on the others); -x adds flags to replica-bench only
# (e.g. -x "--idle-polls 512").
# Binaries go to $CARGO_TARGET_DIR (default: the repository's target/).
set -euo pipefail

ops=500000
runs=3
clients="64 256"
members=3
threads=()
extra=""
while getopts "n:r:c:m:t:k:x:h" opt; do
    case "$opt" in
        n) ops=$OPTARG ;;
        r) runs=$OPTARG ;;
        c) clients=$OPTARG ;;
        m) members=$OPTARG ;;
        t) threads=(--threads "$OPTARG") ;;
        k) threads=(--runtimes "$OPTARG") ;;
        x) extra=$OPTARG ;;
        *) sed -n '2,17p' "$0"; exit 2 ;;
    esac
done

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}

# One build at a time (two cores).
(cd "$repo" && cargo build --release --quiet -p benches --bin replica-bench)
(cd "$here" && cargo build --release --quiet --bin openraft-bench)
replica_bin=$CARGO_TARGET_DIR/release/replica-bench
openraft_bin=$CARGO_TARGET_DIR/release/openraft-bench

# put/s of one run; the full output goes to stderr so the runs can be followed.
measure() {
    local out
    if ! out=$("$@" 2>&1); then
        echo "$out" >&2
        echo "failed: $*" >&2
        exit 1
    fi
    echo "$out" | sed 's/^/    /' >&2
    echo "$out" | awk '/^put\/s:/ { print $2 }'
}

median() {
    tr ' ' '\n' | grep -v '^$' | sort -n | awk '
        { v[NR] = $1 }
        END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
table=""
for c in $clients; do
    rep_all=""
    ora_all=""
    for i in $(seq 1 "$runs"); do
        echo "-c $c run $i: replica-bench" >&2
        # shellcheck disable=SC2086 # $extra is a list of flags
        rep=$(measure "$replica_bin" -m "$members" -c "$c" -n "$ops" "${threads[@]}" $extra)
        echo "-c $c run $i: openraft-bench" >&2
        ora=$(measure "$openraft_bin" -m "$members" -c "$c" -n "$ops" "${threads[@]}")
        rep_all="$rep_all $rep"
        ora_all="$ora_all $ora"
        table+="| -c $c | $i | $rep | $ora | $(ratio "$rep" "$ora") |"$'\n'
    done
    rep_med=$(echo "$rep_all" | median)
    ora_med=$(echo "$ora_all" | median)
    table+="| **-c $c** | **median** | **$rep_med** | **$ora_med** | **$(ratio "$rep_med" "$ora_med")** |"$'\n'
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

echo
echo "-m $members -n $ops ${threads[*]} (replica-bench also: ${extra:-nothing}), $runs interleaved runs per case; load average $load_start at the start, $load_end at the end"
echo "openraft: $(cd "$here" && cargo tree --quiet --depth 1 -e normal | awk '/openraft v/ { print $2, $3 }')"
echo
echo "| case | run | replica put/s | openraft put/s | replica / openraft |"
echo "|---|---:|---:|---:|---:|"
printf '%s' "$table"
