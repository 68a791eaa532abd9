#!/usr/bin/env bash
# Replication benchmarks for BENCHMARKS.md (issue 5): on a local 3-broker cluster of release
# brokers, one partition of 1 KiB records, produced with
#   1. replication factor 1 (acks=all: the leader alone),
#   2. replication factor 3, acks=1 (leader),
#   3. replication factor 3, acks=all (every in-sync replica),
#   4. replication factor 3, acks=all, paced at half of run 3's throughput (latency below
#      saturation),
# each beside the do-nothing gRPC baseline measured in the same run. All four topics live on
# the same cluster, whose brokers share this machine's cores and disk with the load tool.
# Prints one JSON object per measurement.
#
# Usage: scripts/bench-replication.sh [RECORDS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-300000}
runs=${2:-3}
base_port=${CAIRN_BENCH_PORT:-19300}

cargo build --release -q -p cairn-server
bin=$PWD/target/release/cairn
root=$(mktemp -d)
voters="1@127.0.0.1:$base_port,2@127.0.0.1:$((base_port + 1)),3@127.0.0.1:$((base_port + 2))"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$root"
}
trap cleanup EXIT
for i in 1 2 3; do
  "$bin" serve --node-id "$i" --listen "127.0.0.1:$((base_port + i - 1))" \
    --data-dir "$root/b$i" --voters "$voters" >"$root/b$i.out" 2>"$root/b$i.err" &
  pids+=($!)
done
for i in 1 2 3; do
  for _ in $(seq 300); do grep -q "listening on" "$root/b$i.out" && break; sleep 0.1; done
done
export CAIRN_BROKERS="127.0.0.1:$base_port,127.0.0.1:$((base_port + 1)),127.0.0.1:$((base_port + 2))"

peak() { python3 -c 'import json,sys; print(int(json.loads(sys.stdin.read())["records_per_sec"]))'; }

for run in $(seq "$runs"); do
  sync
  "$bin" bench produce --topic "rf1-$run" --replication-factor 1 --acks all \
    --records "$records" --json
  sync
  "$bin" bench produce --topic "rf3-acks1-$run" --replication-factor 3 --acks leader \
    --records "$records" --json
  sync
  all=$("$bin" bench produce --topic "rf3-all-$run" --replication-factor 3 --acks all \
    --records "$records" --json)
  echo "$all"
  half=$(( $(echo "$all" | peak) / 2 ))
  sync
  "$bin" bench produce --topic "rf3-all-half-$run" --replication-factor 3 --acks all \
    --records $((half * 10)) --rate "$half" --json
  "$bin" bench produce --baseline --records "$records" --json
done
