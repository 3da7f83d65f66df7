#!/usr/bin/env python3
"""What recording task events costs in call throughput: events on against off, in ABBA order.

    python benchmarks/task_events_throughput.py [--rounds 8] ["1:1 actor calls async" ...]

Each run is one ``ember microbenchmark --filter WORKLOAD`` in a fresh cluster,
with ``EMBER_TASK_EVENTS_ENABLED`` on or off. A round is on, off, off, on, so
that a slow stretch of the machine (on a small VM, a quarter between runs)
falls on both; the estimate is the mean over rounds of each round's on/off
ratio, with its standard error. The budget (issue 13) is 5%.
"""
from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys

ROUNDS = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 8
WORKLOADS = [a for a in sys.argv[1:] if not a.startswith("--") and not a.isdigit()] or [
    "1:1 actor calls async", "single client tasks async"]
_RATE = re.compile(r"per second ([0-9.]+)")


def one_run(workload: str, events: bool) -> float:
    env = dict(os.environ, EMBER_TASK_EVENTS_ENABLED="1" if events else "0")
    out = subprocess.run(
        [sys.executable, "-c", "import sys; from ember.microbenchmark import main; "
                               "main(sys.argv[1:])", "--filter", workload],
        env=env, capture_output=True, text=True, timeout=600, check=True).stdout
    return float(_RATE.search(out).group(1))


def main() -> None:
    for workload in WORKLOADS:
        ratios, on, off = [], [], []
        for r in range(ROUNDS):
            a, b, c, d = (one_run(workload, e) for e in (True, False, False, True))
            on += [a, d]
            off += [b, c]
            ratios.append((a + d) / (b + c) - 1)
            print(f"{workload} round {r + 1}: on {a:,.0f} {d:,.0f}  off {b:,.0f} {c:,.0f}",
                  flush=True)
        sem = statistics.stdev(ratios) / len(ratios) ** 0.5 if len(ratios) > 1 else 0.0
        print(f"{workload}: on {statistics.mean(on):,.0f}/s, off {statistics.mean(off):,.0f}/s,"
              f" events cost {-100 * statistics.mean(ratios):.1f}% (+-{100 * sem:.1f}%)\n")


if __name__ == "__main__":
    main()
