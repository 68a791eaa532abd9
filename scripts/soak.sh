#!/usr/bin/env bash
# Soaks a 3-broker cluster with the default configuration and fails on any spurious election
# or fencing (BENCHMARKS.md, "No spurious fencing"): idle, then under an acks=all producer.
#
#   scripts/soak.sh [seconds]         default 600 each; release build
set -euo pipefail
cd "$(dirname "$0")/.."
export CAIRN_SOAK_SECS="${1:-600}"
for load in 0 1; do
  CAIRN_SOAK_LOAD=$load cargo test --release -p cairn-tests --test availability -- --ignored \
    soak_no_spurious_fencing_or_election --nocapture --test-threads 1
done
