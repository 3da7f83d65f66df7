"""The GCS task-event store at its default bound: 100,000 finished tasks recorded,
then the state API's answers timed and the GCS's memory per stored task measured:
as stored (undecoded chunks, as an unwatched store keeps them) and once read
(decoded: the first query decodes them all).

    python benchmarks/task_events_store.py [N]
"""
from __future__ import annotations

import asyncio
import sys
import time

import psutil

import ember as ray
from ember.observability.cluster import ask_gcs
from ember.protocol import task_events as te
from ember.util import state


@ray.remote
def tiny():
    return None


def gcs_process() -> psutil.Process:
    for p in psutil.Process().children(recursive=True):
        if "ember.gcs" in " ".join(p.cmdline()):
            return p
    raise RuntimeError("no GCS process among this driver's children")


def stored() -> int:
    """Attempts the GCS's store holds now."""
    reply = asyncio.run(ask_gcs(ray.get_runtime_context().gcs_address,
                                [te.GetTaskEvents(counts_only=True)], 10))[0]
    return sum(reply.state_counts.values())


def main(n: int = 100_000) -> None:
    ray.init(num_cpus=2)
    gcs = gcs_process()
    ray.get(tiny.remote())
    time.sleep(2)  # one flush: the store holds the warm-up task
    before_rss, before = gcs.memory_full_info().uss, stored()
    started = time.perf_counter()
    for _ in range(n // 10_000):
        ray.get([tiny.remote() for _ in range(10_000)])
    ran = time.perf_counter() - started
    while stored() < min(before + n, 100_000):
        time.sleep(0.5)
    grown = gcs.memory_full_info().uss - before_rss
    held = stored() - before
    print(f"{n:,} tasks ran in {ran:.1f} s; the store holds {stored():,}; GCS USS grew "
          f"{grown / 2**20:.1f} MiB, {grown / held:.0f} bytes per stored task")
    for what, call in (
            ("list_tasks(limit=100)", lambda: state.list_tasks(limit=100)),
            ("list_tasks(filters=[('state','=','FINISHED')], limit=100)",
             lambda: state.list_tasks(filters=[("state", "=", "FINISHED")], limit=100)),
            ("list_tasks(filters=[('name','=','nope')])",
             lambda: state.list_tasks(filters=[("name", "=", "nope")])),
            ("summarize_tasks()", state.summarize_tasks)):
        started = time.perf_counter()
        call()
        print(f"  {what}: {(time.perf_counter() - started) * 1000:.0f} ms")
    grown = gcs.memory_full_info().uss - before_rss
    print(f"once read (decoded): GCS USS grew {grown / 2**20:.1f} MiB, "
          f"{grown / held:.0f} bytes per stored task")
    ray.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
