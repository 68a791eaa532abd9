#!/usr/bin/env bash
# Cairn's fault suite, long runs (issue 11; tests/src/chaos): each scenario against a fresh
# 3-broker cluster (5 for the unclean canary) for DURATION_S seconds of faults with SEED.
#
#   scripts/chaos.sh [DURATION_S] [SEED] [SCENARIO...]
#   scripts/chaos.sh 60 1                       # kill pause partition mixed + both canaries
#   scripts/chaos.sh 120 7 mixed                # one scenario
#
# Writes target/chaos/<scenario>-<seed>/{history.jsonl,nemesis.jsonl,final.json,results.json,
# broker-<id>.log}, prints a summary table, and ends with "N passed, N failed" (exit 1 if any
# failed). Needs root: brokers run as distinct uids and partitions are nftables rules.
set -euo pipefail
cd "$(dirname "$0")/.."

duration="${1:-60}"
seed="${2:-1}"
shift $(( $# < 2 ? $# : 2 ))
if [ $# -eq 0 ]; then
  set -- kill pause partition mixed canary-unclean canary-segment
fi
scenarios="$(IFS=,; echo "$*")"

if [ "$(id -u)" -ne 0 ]; then
  echo "error: the fault suite needs root (brokers as distinct uids, nftables rules)" >&2
  exit 1
fi
if ! command -v nft >/dev/null 2>&1; then
  echo "installing nftables (network partitions need nft)"
  apt-get install -y -q nftables >/dev/null || {
    echo "error: nft is missing and 'apt-get install -y nftables' failed" >&2
    exit 1
  }
fi

cargo build -q -p cairn-server --bin cairn
cargo build -q -p cairn-tests --bin cairn-chaos
mkdir -p target/chaos
exec target/debug/cairn-chaos --scenario "$scenarios" --seed "$seed" \
  --duration-s "$duration" --out target/chaos
