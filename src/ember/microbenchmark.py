"""``ember microbenchmark``: Ray's microbenchmark workloads, same names, same method.

Method (as ``ray microbenchmark``): run the workload for a warm-up second,
then several timed rounds; report the mean and standard deviation of the
per-round rates, in operations per second. ``init and first task (s)`` is the
wall time of ``init()`` plus the first task's result, measured first, in this
fresh process.

Workloads are registered in the order Ray runs them; ``--filter`` keeps those
whose name contains any of the given substrings.
"""
from __future__ import annotations

import json
import os
import statistics
import time

ROUND_S = float(os.environ.get("EMBER_BENCH_ROUND_S", "2.0"))
ROUNDS = int(os.environ.get("EMBER_BENCH_ROUNDS", "4"))
WARMUP_S = float(os.environ.get("EMBER_BENCH_WARMUP_S", "1.0"))


def timeit(name: str, fn, multiplier: float = 1, as_json: bool = False) -> dict:
    start = time.perf_counter()
    count = 0
    while time.perf_counter() - start < WARMUP_S:
        fn()
        count += 1
    step = count // 10 + 1
    rates = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        count = 0
        while time.perf_counter() - start < ROUND_S:
            for _ in range(step):
                fn()
            count += step
        rates.append(multiplier * count / (time.perf_counter() - start))
    result = {"name": name, "per_s": statistics.mean(rates),
              "std": statistics.pstdev(rates), "rounds": rates}
    _report(result, as_json)
    return result


def _report(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result), flush=True)
    elif "seconds" in result:
        print(f"{result['name']}: {result['seconds']:.3f} s", flush=True)
    else:
        print(f"{result['name']} per second {result['per_s']:.2f} +- {result['std']:.2f}",
              flush=True)


def main(filters: list[str], as_json: bool = False) -> list[dict]:
    import ember

    def want(name):
        return not filters or any(f in name for f in filters)

    @ember.remote
    def small_value():
        return b"ok"

    @ember.remote
    def create_object_containing_ref():
        return [ember.put(1) for _ in range(10000)]

    @ember.remote
    def do_put_small():
        for _ in range(100):
            ember.put(0)

    results = []
    t0 = time.perf_counter()
    ember.init()
    ember.get(small_value.remote())
    first = {"name": "init and first task (s)", "seconds": time.perf_counter() - t0}
    _report(first, as_json)
    results.append(first)
    try:
        value = ember.put(0)
        if want("single client get calls (Plasma Store)"):
            results.append(timeit("single client get calls (Plasma Store)",
                                  lambda: ember.get(value), 1, as_json))
        if want("single client put calls (Plasma Store)"):
            results.append(timeit("single client put calls (Plasma Store)",
                                  lambda: ember.put(0), 1, as_json))
        if want("multi client put calls (Plasma Store)"):
            results.append(timeit(
                "multi client put calls (Plasma Store)",
                lambda: ember.get([do_put_small.remote() for _ in range(10)]), 1000, as_json))
        if want("single client tasks and get batch"):
            results.append(timeit(
                "single client tasks and get batch",
                lambda: ember.get([small_value.remote() for _ in range(1000)]), 1, as_json))
        if want("single client get object containing 10k refs"):
            obj = create_object_containing_ref.remote()
            results.append(timeit("single client get object containing 10k refs",
                                  lambda: ember.get(obj), 1, as_json))
            del obj
        if want("single client wait 1k refs"):
            def wait_multiple_refs():
                not_ready = [small_value.remote() for _ in range(1000)]
                fetch_local = True
                for _ in range(1000):
                    _ready, not_ready = ember.wait(not_ready, fetch_local=fetch_local)
                    fetch_local = False
            results.append(timeit("single client wait 1k refs", wait_multiple_refs, 1,
                                  as_json))
        if want("single client tasks sync"):
            results.append(timeit("single client tasks sync",
                                  lambda: ember.get(small_value.remote()), 1, as_json))
        if want("single client tasks async"):
            results.append(timeit(
                "single client tasks async",
                lambda: ember.get([small_value.remote() for _ in range(1000)]), 1000, as_json))
    finally:
        ember.shutdown()
    return results
