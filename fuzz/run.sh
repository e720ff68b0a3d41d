#!/bin/sh
# Runs every fuzz target in turn: `fuzz/run.sh runs 10000000` (a count per target) or
# `fuzz/run.sh time 30` (seconds per target, the CI smoke run). libFuzzer prints its
# executions at the end of each run ("Done N runs"); a crash stops the script with its input
# saved under fuzz/artifacts/<target>/. Needs cargo-fuzz; nightly flags via RUSTC_BOOTSTRAP.
set -eu
cd "$(dirname "$0")"
mode=${1:-time}
amount=${2:-30}
case $mode in
    runs) limit="-runs=$amount" ;;
    time) limit="-max_total_time=$amount" ;;
    *) echo "usage: $0 runs N | time SECONDS" >&2; exit 2 ;;
esac
export RUSTC_BOOTSTRAP=1
cargo fuzz build -s none -O
mkdir -p logs
for t in request_head chunked_body request_info cache_file watch_stream json_filter kubeconfig; do
    mkdir -p "corpus/$t"
    log="logs/$t.log"
    if ! cargo fuzz run -s none -O "$t" "corpus/$t" "seeds/$t" -- $limit -max_len=65536 \
        -print_final_stats=1 >"$log" 2>&1; then
        tail -40 "$log"
        echo "FUZZ FAILURE: $t (input saved under fuzz/artifacts/$t/)" >&2
        exit 1
    fi
    echo "$t: $(grep -E 'stat::number_of_executed_units' "$log" | awk '{print $2}') executions, no crash"
done
