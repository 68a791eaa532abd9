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

# Every run uses linger 1 ms (the client default is 5 ms, which alone sets the median latency).
# Each topic is created and warmed up first: a new topic's first batch waits for the followers
# to learn of the topic and start fetching, a one-off a few hundred ms long.
bench() {
  local topic=$1 rf=$2
  shift 2
  "$bin" topic create "$topic" -r "$rf" >/dev/null
  "$bin" bench produce --topic "$topic" --records 20000 --linger-ms 1 --json >/dev/null
  sync
  "$bin" bench produce --topic "$topic" --linger-ms 1 --json "$@"
}

for run in $(seq "$runs"); do
  bench "rf1-$run" 1 --acks all --records "$records"
  bench "rf3-acks1-$run" 3 --acks leader --records "$records"
  all=$(bench "rf3-all-$run" 3 --acks all --records "$records")
  echo "$all"
  half=$(( $(echo "$all" | peak) / 2 ))
  bench "rf3-all-half-$run" 3 --acks all --records $((half * 10)) --rate "$half"
  "$bin" bench produce --baseline --records "$records" --linger-ms 1 --json
done
