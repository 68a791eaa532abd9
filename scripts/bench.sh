#!/usr/bin/env bash
# Headline benchmarks for BENCHMARKS.md: one release broker, one partition, 1 KiB records,
# produce and consume with fsync `never` and `always`, each beside two physical limits measured
# in the same run: the do-nothing gRPC baseline (`cairn bench --baseline`: same client, same
# bytes, a server that stores nothing) and the disk's sustained write speed (dd with fdatasync).
#
# Each run uses a fresh topic and starts with dirty pages flushed (`sync`), so runs do not pay for
# each other's writeback. Prints one JSON object per measurement.
#
# Usage: scripts/bench.sh [RECORDS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-500000}
runs=${2:-3}

cargo build --release -q -p cairn-server
bin=$PWD/target/release/cairn
data=$(mktemp -d)
port_file=$(mktemp)
"$bin" serve --data-dir "$data" --listen 127.0.0.1:0 >"$port_file" 2>/dev/null &
broker=$!
trap 'kill $broker 2>/dev/null; wait $broker 2>/dev/null; rm -rf "$data" "$port_file"' EXIT
for _ in $(seq 100); do grep -q "listening on" "$port_file" && break; sleep 0.1; done
addr=$(sed -n 's/^cairn listening on \([^ ]*\).*/\1/p' "$port_file")
export CAIRN_BROKERS=$addr

disk() {
  local out
  out=$(dd if=/dev/zero of="$data/dd" bs=1M count=1000 conv=fdatasync 2>&1 | tail -1)
  rm -f "$data/dd"
  echo "{\"workload\":\"disk\",\"dd\":\"$out\"}"
}

for run in $(seq "$runs"); do
  sync
  disk
  for fsync in never always; do
    topic="bench-$fsync-$run"
    "$bin" topic create "$topic" -p 1 -c "fsync=$fsync" >/dev/null
    sync
    "$bin" bench produce --topic "$topic" --records "$records" --json
    "$bin" bench consume --topic "$topic" --records "$records" --json
    "$bin" topic delete "$topic" >/dev/null
  done
  "$bin" bench produce --baseline --records "$records" --json
  "$bin" bench consume --baseline --records "$records" --json
done
