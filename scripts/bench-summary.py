#!/usr/bin/env python3
"""Summarises scripts/bench.sh output (JSON lines on stdin): median of the runs per workload."""
import json
import statistics
import sys

groups = {}
for line in sys.stdin:
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    if r["workload"] == "disk":
        print("disk:", r["dd"])
        continue
    topic = "baseline" if r["baseline"] else r["topic"].rsplit("-", 1)[0]
    groups.setdefault((r["workload"], topic), []).append(r)

print(f"{'workload':8} {'target':13} {'MB/s (runs)':24} {'median MB/s':>11} {'rec/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'p999 ms':>8}")
for (workload, topic), rows in sorted(groups.items()):
    med = lambda f: statistics.median(f(x) for x in rows)
    runs = ",".join(str(round(x["mb_per_sec"])) for x in rows)
    print(
        f"{workload:8} {topic:13} {runs:24} {med(lambda x: x['mb_per_sec']):11.0f} "
        f"{med(lambda x: x['records_per_sec']):9.0f} {med(lambda x: x['latency_ms']['p50']):7.2f} "
        f"{med(lambda x: x['latency_ms']['p99']):7.2f} {med(lambda x: x['latency_ms']['p999']):8.2f}"
    )
