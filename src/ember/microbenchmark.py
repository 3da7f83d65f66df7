"""``ember microbenchmark``: Ray's microbenchmark workloads, same names, same method.

Method (as ``ray microbenchmark``): run the workload for a warm-up second,
then several timed rounds; report the mean and standard deviation of the
per-round rates, in operations per second. ``init and first task (s)`` is the
wall time of ``init()`` plus the first task's result, measured first, in this
fresh process.

Workloads are registered in the order Ray runs them; ``--filter`` keeps those
whose name contains any of the given substrings. All of them take about four
minutes (23 workloads of about 9 s each), so each one is announced on stderr
as it starts.

Its clusters do not move ``<temp_dir>/session_latest``: it keeps pointing at
the cluster that ``ember start`` runs, if any.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import statistics
import sys
import time

import ember

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


def _define():
    """The remote functions and actors of Ray's ray_perf, with the same options."""
    import numpy as np  # optional: only the benchmarks that use arrays need it

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

    @ember.remote
    def do_put():
        for _ in range(10):
            ember.put(np.zeros(10 * 1024 * 1024, dtype=np.int64))

    @ember.remote(num_cpus=0)
    class Actor:
        def small_value(self):
            return b"ok"

        def small_value_arg(self, x):
            return b"ok"

        def small_value_batch(self, n):
            ember.get([small_value.remote() for _ in range(n)])

    @ember.remote
    class AsyncActor:
        async def small_value(self):
            return b"ok"

        async def small_value_with_arg(self, x):
            return b"ok"

    @ember.remote(num_cpus=0)
    class Client:
        def __init__(self, servers):
            self.servers = servers if isinstance(servers, list) else [servers]

        def small_value_batch(self, n):
            results = []
            for s in self.servers:
                results.extend([s.small_value.remote() for _ in range(n)])
            ember.get(results)

        def small_value_batch_arg(self, n):
            x = ember.put(0)
            results = []
            for s in self.servers:
                results.extend([s.small_value_arg.remote(x) for _ in range(n)])
            ember.get(results)

    return locals()


def _workloads(d: dict, n_cpu: int):
    """(name, setup) pairs; setup returns (fn, multiplier) and may create actors."""
    import numpy as np  # optional: only the benchmarks that use arrays need it

    get, put = ember.get, ember.put
    small_value = d["small_value"]
    Actor, AsyncActor, Client = d["Actor"], d["AsyncActor"], d["Client"]

    def wait_1k():
        not_ready = [small_value.remote() for _ in range(1000)]
        fetch_local = True
        for _ in range(1000):
            _ready, not_ready = ember.wait(not_ready, fetch_local=fetch_local)
            fetch_local = False

    def n_n(actor_class):
        servers = [actor_class.remote() for _ in range(n_cpu)]

        @ember.remote
        def work(actors):
            get([actors[i % n_cpu].small_value.remote() for i in range(2000)])
        return lambda: get([work.remote(servers) for _ in range(4)]), 4 * 2000

    value = put(0)
    return [
        ("single client get calls (Plasma Store)", lambda: (lambda: get(value), 1)),
        ("single client put calls (Plasma Store)", lambda: (lambda: put(0), 1)),
        ("multi client put calls (Plasma Store)", lambda: (
            lambda: get([d["do_put_small"].remote() for _ in range(10)]), 1000)),
        ("single client put gigabytes", lambda: (
            (lambda arr: (lambda: put(arr), 8 * 0.1))(
                np.zeros(100 * 1024 * 1024, dtype=np.int64)))),
        ("single client tasks and get batch", lambda: (
            lambda: get([small_value.remote() for _ in range(1000)]), 1)),
        ("multi client put gigabytes", lambda: (
            lambda: get([d["do_put"].remote() for _ in range(10)]), 10 * 8 * 0.1)),
        ("single client get object containing 10k refs", lambda: (
            (lambda obj: (lambda: get(obj), 1))(d["create_object_containing_ref"].remote()))),
        ("single client wait 1k refs", lambda: (wait_1k, 1)),
        ("single client tasks sync", lambda: (lambda: get(small_value.remote()), 1)),
        ("single client tasks async", lambda: (
            lambda: get([small_value.remote() for _ in range(1000)]), 1000)),
        ("multi client tasks async", lambda: (
            (lambda actors: (lambda: get([a.small_value_batch.remote(2000) for a in actors]),
                             2000 * 4))([Actor.remote() for _ in range(4)]))),
        ("1:1 actor calls sync", lambda: (
            (lambda a: (lambda: get(a.small_value.remote()), 1))(Actor.remote()))),
        ("1:1 actor calls async", lambda: (
            (lambda a: (lambda: get([a.small_value.remote() for _ in range(1000)]), 1000))(
                Actor.remote()))),
        ("1:1 actor calls concurrent", lambda: (
            (lambda a: (lambda: get([a.small_value.remote() for _ in range(1000)]), 1000))(
                Actor.options(max_concurrency=16).remote()))),
        ("1:n actor calls async", lambda: (
            (lambda c: (lambda: get(c.small_value_batch.remote(2000)), 2000 * n_cpu))(
                Client.remote([Actor.remote() for _ in range(n_cpu)])))),
        ("n:n actor calls async", lambda: n_n(Actor)),
        ("n:n actor calls with arg async", lambda: (
            (lambda cs: (lambda: get([c.small_value_batch_arg.remote(1000) for c in cs]),
                         1000 * n_cpu))([Client.remote(Actor.remote()) for _ in range(n_cpu)]))),
        ("1:1 async-actor calls sync", lambda: (
            (lambda a: (lambda: get(a.small_value.remote()), 1))(AsyncActor.remote()))),
        ("1:1 async-actor calls async", lambda: (
            (lambda a: (lambda: get([a.small_value.remote() for _ in range(1000)]), 1000))(
                AsyncActor.remote()))),
        ("1:1 async-actor calls with args async", lambda: (
            (lambda a: (lambda: get([a.small_value_with_arg.remote(i) for i in range(1000)]),
                        1000))(AsyncActor.remote()))),
        ("1:n async-actor calls async", lambda: (
            (lambda c: (lambda: get(c.small_value_batch.remote(2000)), 2000 * n_cpu))(
                Client.remote([AsyncActor.remote() for _ in range(n_cpu)])))),
        ("n:n async-actor calls async", lambda: n_n(AsyncActor)),
    ]


def main(filters: list[str], as_json: bool = False) -> list[dict]:
    from ember.config import config
    config.update_session_latest = False
    return _run(filters, as_json)


def _run(filters: list[str], as_json: bool) -> list[dict]:
    def want(name):
        return not filters or any(f in name for f in filters)

    d = _define()
    results = []
    t0 = time.perf_counter()
    ember.init()
    ember.get(d["small_value"].remote())
    first = {"name": "init and first task (s)", "seconds": time.perf_counter() - t0}
    _report(first, as_json)
    results.append(first)
    n_cpu = max(1, multiprocessing.cpu_count() // 2)
    # Some setups start actors, so the list is made once the cluster is up.
    chosen = [(name, setup) for name, setup in _workloads(d, n_cpu) if want(name)]
    with_pgs = want("placement group create/removal")
    progress = _Progress(len(chosen) + with_pgs)
    try:
        for name, setup in chosen:
            progress.starting(name)
            fn, multiplier = setup()
            results.append(timeit(name, fn, multiplier, as_json))
    finally:
        ember.shutdown()
    if with_pgs:
        progress.starting("placement group create/removal")
        results.append(_placement_groups(as_json))
    return results


class _Progress:
    """``[3/25, 0:21] 1:1 actor calls sync`` on stderr, so stdout stays the results."""

    def __init__(self, total: int):
        self.total = total
        self.done = 0
        self.start = time.monotonic()

    def starting(self, name: str) -> None:
        self.done += 1
        elapsed = int(time.monotonic() - self.start)
        print(f"[{self.done}/{self.total}, {elapsed // 60}:{elapsed % 60:02d}] {name}",
              file=sys.stderr, flush=True)


def _placement_groups(as_json: bool) -> dict:
    from ember.util.placement_group import placement_group, remove_placement_group
    ember.init(resources={"custom": 100})
    try:
        def pg_round(num_pgs=100):
            pgs = [placement_group(bundles=[{"custom": 0.001}]) for _ in range(num_pgs)]
            for pg in pgs:
                pg.wait(timeout_seconds=30)
            for pg in pgs:
                remove_placement_group(pg)
        return timeit("placement group create/removal", pg_round, 100, as_json)
    finally:
        ember.shutdown()
