#!/usr/bin/env python3
"""Ray's scalability envelope on one machine: each dimension on ember and on Ray.

    python benchmarks/envelope.py                  # every dimension, ember and Ray
    python benchmarks/envelope.py --only ember     # one implementation
    python benchmarks/envelope.py tasks actors     # dimensions whose name has a word
    ENVELOPE_SCALE=0.01 python benchmarks/envelope.py   # a quick, smaller run

Each dimension runs in a fresh process (the same file, ``--probe IMPL DIM``)
with a fresh local cluster of 2 CPUs, so one dimension's failure, hang or
leftover memory cannot touch the next; a dimension that does not finish in
its time limit is reported as such. Memory is the peak of the summed PSS of
the driver and every process it started (PSS splits shared pages between
the processes that map them, so the sum counts each page once), sampled
every half second while the dimension runs, minus the cluster's idle PSS
before it: what the dimension itself cost.

Ray runs from the virtual environment ../shared/bench/compare_with_ray.py
creates (``$RAY_BENCH_VENV``, default /tmp/ray-bench-venv).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

SCALE = float(os.environ.get("ENVELOPE_SCALE", "1"))
GiB = 2**30
#: Both clusters get the same object store, smaller than the largest object,
#: so that object is spilled (ember) or fallback-allocated on disk (Ray).
STORE_BYTES = 4 * GiB
#: Stop creating actors while less than this much memory is available, or after
#: this long (the row then says how many were reached).
KEEP_FREE = 3 * GiB
ACTORS_FOR_S = 150


def n(count: int) -> int:
    return max(1, int(count * SCALE))


# --- the probe: one dimension, in its own process ---------------------------------------

class PeakPss:
    """Samples the summed PSS of this process and its descendants until stopped."""

    def __init__(self):
        import psutil
        self._me = psutil.Process()
        self._psutil = psutil
        self.baseline = self.sample()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def sample(self) -> int:
        total = 0
        for p in [self._me] + self._me.children(recursive=True):
            try:
                total += p.memory_full_info().pss
            except self._psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, self.sample())

    def stop(self) -> int:
        """Peak PSS above the baseline, bytes."""
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.sample())
        return self.peak - self.baseline


def probe(impl: str, dim: str) -> dict:
    ray = __import__(impl)
    ray.init(num_cpus=2, object_store_memory=STORE_BYTES, resources={"slot": 1000})

    @ray.remote
    def tiny():
        return None

    ray.get([tiny.remote() for _ in range(100)])  # workers started
    time.sleep(2)
    memory = PeakPss()
    started = time.perf_counter()
    extra = DIMENSIONS[dim][1](ray, tiny)
    seconds = time.perf_counter() - started
    grown = memory.stop()
    ray.shutdown()
    return {"impl": impl, "dim": dim, "seconds": seconds, "peak_mib": grown / 2**20,
            **(extra or {})}


def million_tasks(ray, tiny):
    count = n(1_000_000)
    refs = [tiny.remote() for _ in range(count)]
    for i in range(0, count, 10_000):
        ray.get(refs[i:i + 10_000])
    return {"count": count}


def many_returns(ray, tiny):
    count = n(10_000)

    @ray.remote(num_returns=count)
    def returns_many():
        return list(range(count))
    assert ray.get(returns_many.remote())[-1] == count - 1
    return {"count": count}


def get_many(ray, tiny):
    import numpy as np
    count = n(10_000)
    refs = [ray.put(np.full(16_384, i, dtype=np.float64)) for i in range(count)]  # 128 KiB
    values = ray.get(refs)
    assert values[-1][0] == count - 1
    return {"count": count}


def many_args(ray, tiny):
    count = n(10_000)

    @ray.remote
    def add(*values):
        return sum(values)
    refs = [ray.put(i) for i in range(count)]
    assert ray.get(add.remote(*refs)) == count * (count - 1) // 2
    return {"count": count}


def placement_groups(ray, tiny):
    from importlib import import_module
    pg_mod = import_module(f"{ray.__name__}.util.placement_group")
    count = n(1_000)
    pgs = [pg_mod.placement_group([{"slot": 1}]) for _ in range(count)]
    ray.get([pg.ready() for pg in pgs])
    for pg in pgs:
        pg_mod.remove_placement_group(pg)
    return {"count": count}


def actors(ray, tiny):
    import psutil

    @ray.remote(num_cpus=0)
    class Idle:
        def ping(self):
            return os.getpid()

    target, live, reason = n(2_000), [], "target reached"
    deadline = time.monotonic() + ACTORS_FOR_S * max(SCALE, 0.1)
    while len(live) < target:
        if psutil.virtual_memory().available < KEEP_FREE:
            reason = "memory nearly full"
            break
        if time.monotonic() > deadline:
            reason = "time limit"
            break
        batch = [Idle.remote() for _ in range(min(100, target - len(live)))]
        pings = {a.ping.remote(): a for a in batch}
        try:
            ready, _ = ray.wait(list(pings), num_returns=len(pings),
                                timeout=max(1.0, deadline - time.monotonic()))
            ray.get(ready)
        except Exception as exc:  # noqa: BLE001 - the envelope's edge: report it
            reason = f"{type(exc).__name__}: {str(exc)[:120]}"
            break
        live += [pings[ref] for ref in ready]
        if len(ready) < len(pings):
            reason = "time limit"
            break
    pids = ray.get([a.ping.remote() for a in live]) if live else []
    pss = 0
    for pid in set(pids):
        try:
            pss += psutil.Process(pid).memory_full_info().pss
        except psutil.Error:
            pass
    return {"count": len(live), "stopped": reason,
            "actor_pss_mib": pss / 2**20 / max(len(set(pids)), 1)}


def big_objects(ray, tiny):
    import numpy as np
    sizes = {"100 MB": 100 * 10**6, "1 GiB": GiB, "10 GiB": 10 * GiB}
    out = {}
    for label, size in sizes.items():
        size = max(8, int(size * SCALE)) // 8 * 8
        value = np.zeros(size // 8, dtype=np.float64)  # untouched pages: no RAM yet
        value[0], value[-1] = 1.0, 2.0
        began = time.perf_counter()
        ref = ray.put(value)
        del value
        got = ray.get(ref)
        assert got[0] == 1.0 and got[-1] == 2.0 and got.nbytes == size
        out[label] = round(time.perf_counter() - began, 2)
        del got, ref
    return {"per_size_s": out}


#: name -> (what it is, workload, time limit per implementation in seconds)
DIMENSIONS = {
    "tasks": ("1,000,000 tiny tasks queued, then fetched", million_tasks, 210),
    "returns": ("one task returning 10,000 objects", many_returns, 300),
    "get": ("one get of 10,000 store objects (128 KiB)", get_many, 300),
    "args": ("one task with 10,000 ObjectRef arguments", many_args, 300),
    "pgs": ("1,000 placement groups created, ready, removed", placement_groups, 300),
    "actors": ("live actors (target 2,000)", actors, ACTORS_FOR_S + 180),
    "objects": ("100 MB, 1 GiB, 10 GiB objects put and read", big_objects, 300),
}


# --- the report ---------------------------------------------------------------------------

def run(impl: str, dim: str) -> dict:
    python = sys.executable
    if impl == "ray":
        python = os.path.join(os.environ.get("RAY_BENCH_VENV", "/tmp/ray-bench-venv"),
                              "bin", "python")
    limit = DIMENSIONS[dim][2] * max(SCALE, 0.2)
    try:
        out = subprocess.run([python, __file__, "--probe", impl, dim], capture_output=True,
                             text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        cli = os.path.join(os.path.dirname(python), impl)  # what the probe left running
        subprocess.run([cli, "stop", "--force"] if impl == "ray" else [cli, "stop"],
                       capture_output=True)
        return {"impl": impl, "dim": dim, "error": f"did not finish in {limit:.0f} s"}
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            return json.loads(line)
    last = (out.stderr.strip().splitlines() or ["no output"])[-1]
    return {"impl": impl, "dim": dim, "error": last[:160]}


def describe(row: dict | None) -> tuple[str, str]:
    if row is None:
        return "-", "-"
    if "error" in row:
        return "failed: " + row["error"], "-"
    if row["dim"] == "actors":
        what = f"{row['count']:,} live in {row['seconds']:.0f} s ({row['stopped']})"
        return what, (f"{row['peak_mib']:,.0f} MiB ({row['actor_pss_mib']:.1f} MiB PSS "
                      "per actor process)")
    if row["dim"] == "objects":
        what = ", ".join(f"{k} {v} s" for k, v in row["per_size_s"].items())
        return what, f"{row['peak_mib']:,.0f} MiB"
    return f"{row['seconds']:.2f} s", f"{row['peak_mib']:,.0f} MiB"


def main() -> None:
    words = [a for a in sys.argv[1:] if not a.startswith("--") and a not in ("ember", "ray")]
    impls = [sys.argv[sys.argv.index("--only") + 1]] if "--only" in sys.argv else [
        "ember", "ray"]
    dims = [d for d in DIMENSIONS if not words or any(w in d for w in words)]
    results = {}
    began = time.monotonic()
    for dim in dims:
        for impl in impls:
            results[impl, dim] = row = run(impl, dim)
            print(f"{impl:5} {dim:8} {json.dumps(row)}", file=sys.stderr, flush=True)
    print(f"\nScale {SCALE:g}; 2 CPUs; object store {STORE_BYTES // GiB} GiB; memory is "
          "the peak summed PSS above the idle cluster; the whole run took "
          f"{(time.monotonic() - began) / 60:.1f} min.\n")
    print("| dimension | ember | ember memory | Ray | Ray memory | Ray/ember time |")
    print("|---|---|---|---|---|---|")
    for dim in dims:
        e, r = results.get(("ember", dim)), results.get(("ray", dim))
        ratio = "-"
        if e and r and "error" not in e and "error" not in r and dim not in ("actors",):
            ratio = f"{r['seconds'] / e['seconds']:.1f}x"
        print(f"| {DIMENSIONS[dim][0]} | {' | '.join(describe(e))} | "
              f"{' | '.join(describe(r))} | {ratio} |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--probe":
        print(json.dumps(probe(sys.argv[2], sys.argv[3])), flush=True)
    else:
        main()
