#!/usr/bin/env bash
# Measures leader failover with the default configuration (BENCHMARKS.md, "Failover"): SIGKILL
# of a partition's leader (every other trial the controller) to the first acks=all write sent
# after the kill and acknowledged by the new leader; prints each trial and the median, and
# fails if the median is over 4 s.
#
#   scripts/failover.sh [trials]      default 10; release build of the broker and the test
set -euo pipefail
cd "$(dirname "$0")/.."
export CAIRN_FAILOVER_TRIALS="${1:-10}"
exec cargo test --release -p cairn-tests --test availability -- --ignored \
  measure_leader_failover --nocapture --test-threads 1
