#!/usr/bin/env python3
"""What recording task events costs per call, in CPU, process by process.

    python benchmarks/task_events_cost.py [--calls 100000] [--pairs 2] [tasks|actor ...]

Throughput on a small VM swings by a quarter between runs, which hides a cost
of a few percent. CPU time is steadier: each run makes a fresh cluster, makes
``--calls`` calls of a tiny task or actor method in batches of 1,000 (after as
many to warm up and fill the GCS's task-event store to its bound), and sums
the CPU seconds every process of the cluster spent on them. Runs alternate
events on and off (``EMBER_TASK_EVENTS_ENABLED``), ``--pairs`` times, on then
off, then off then on, so that a slow stretch of the machine falls on both.
"""
from __future__ import annotations

import os
import statistics
import sys
import time

import psutil
from harness import run_probe

import ember

CALLS = int(sys.argv[sys.argv.index("--calls") + 1]) if "--calls" in sys.argv else 100_000
PAIRS = int(sys.argv[sys.argv.index("--pairs") + 1]) if "--pairs" in sys.argv else 2
WORKLOADS = [a for a in sys.argv[1:] if a in ("tasks", "actor")] or ["actor", "tasks"]


def one_run(workload: str, calls: int) -> dict[str, float]:
    """In a child process: CPU microseconds per call by process kind, and the rate."""
    ember.init(num_cpus=2)

    @ember.remote
    def small():
        return b"ok"

    @ember.remote
    class Actor:
        def small(self):
            return b"ok"

    actor = Actor.remote()
    ember.get([actor.small.remote(), small.remote()])
    me = psutil.Process()

    def kind(p: psutil.Process) -> str:
        if p.pid == me.pid:
            return "driver"
        line = p.cmdline()
        return next((k for k in ("gcs", "raylet", "dashboard") if f"ember.{k}" in line),
                    "worker")

    def cpu() -> dict[int, tuple[str, float]]:
        out = {}
        for p in [me] + me.children(recursive=True):
            try:
                t = p.cpu_times()
                out[p.pid] = (kind(p), t.user + t.system)
            except psutil.Error:
                pass
        return out

    def run():
        for _ in range(calls // 1000):
            if workload == "actor":
                ember.get([actor.small.remote() for _ in range(1000)])
            else:
                ember.get([small.remote() for _ in range(1000)])

    run()  # warm up; fills the GCS's store to its bound
    time.sleep(1.5)
    before, began = cpu(), time.perf_counter()
    run()
    wall = time.perf_counter() - began
    time.sleep(1.5)  # the last flush, and the GCS storing it
    after = cpu()
    per_call: dict[str, float] = {}
    for pid, (k, t) in after.items():
        per_call[k] = per_call.get(k, 0.0) + (t - before.get(pid, (k, 0.0))[1]) / calls * 1e6
    per_call["total"] = sum(per_call.values())
    per_call["rate"] = calls / wall
    ember.shutdown()
    return per_call


#: Runs one measurement in a fresh interpreter and prints it as a JSON line.
PROBE = f"""
import json, sys
sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
import task_events_cost
print(json.dumps(task_events_cost.one_run(sys.argv[2], int(sys.argv[3]))))
"""


def measure(workload: str, events: bool) -> dict[str, float]:
    return run_probe(PROBE, "ember", workload, str(CALLS), timeout=900,
                     env={"EMBER_TASK_EVENTS_ENABLED": "1" if events else "0"})


def main() -> None:
    kinds = ("total", "driver", "worker", "gcs", "raylet")
    for workload in WORKLOADS:
        runs: dict[bool, list[dict]] = {True: [], False: []}
        for i in range(PAIRS):
            for events in ((True, False) if i % 2 == 0 else (False, True)):
                runs[events].append(measure(workload, events))
        print(f"\n{workload}: CPU us per call (median of {PAIRS}), summed over the cluster")
        print("| events | " + " | ".join(kinds) + " | calls/s |")
        print("|---" * (len(kinds) + 2) + "|")
        for events in (True, False):
            med = {k: statistics.median(r.get(k, 0.0) for r in runs[events])
                   for k in kinds + ("rate",)}
            print(f"| {'on' if events else 'off'} | "
                  + " | ".join(f"{med[k]:.1f}" for k in kinds) + f" | {med['rate']:,.0f} |")


if __name__ == "__main__":
    main()
