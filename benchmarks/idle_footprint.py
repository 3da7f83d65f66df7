#!/usr/bin/env python3
"""Idle footprint: summed PSS of every process of a local cluster, ember vs Ray.

    python benchmarks/idle_footprint.py            # ember (this environment) and Ray
    python benchmarks/idle_footprint.py --only ember

Method (the same for both): ``init(num_cpus=2)``, run one task, wait a few
seconds for start-up work to settle, then sum ``memory_full_info().pss`` over
the driver and all its descendant processes. PSS splits shared pages between
the processes that map them, so the sum counts each page once.
"""
import subprocess

from harness import RAY_PYTHON, implementations, run_probe


PROBE = r'''
import json, os, sys, time
import psutil
impl = sys.argv[1]
ray = __import__(impl)
t0 = time.perf_counter()
ray.init(num_cpus=2)
@ray.remote
def f():
    return 1
ray.get(f.remote())
first = time.perf_counter() - t0
time.sleep(float(os.environ.get("SETTLE_S", "5")))
me = psutil.Process()
procs = [me] + me.children(recursive=True)
pss, rss, names = 0, 0, []
for p in procs:
    try:
        info = p.memory_full_info()
        pss += info.pss
        rss += info.rss
        names.append(" ".join(p.cmdline())[:60])
    except psutil.Error:
        pass
ray.shutdown()
print(json.dumps({"impl": impl, "pss_mb": pss / 2**20, "rss_mb": rss / 2**20,
                  "processes": len(procs), "init_and_first_task_s": first}))
'''


def main() -> None:
    rows = []
    for impl in implementations():
        if impl == "ray":  # the probe reads PSS with psutil, which Ray's venv may lack
            subprocess.run([RAY_PYTHON, "-m", "pip", "install", "-q", "psutil"], check=True)
        rows.append(run_probe(PROBE, impl, timeout=300))
    for r in rows:
        print(f"{r['impl']:6} PSS {r['pss_mb']:8.1f} MiB  RSS {r['rss_mb']:8.1f} MiB  "
              f"{r['processes']:3d} processes  init+first task {r['init_and_first_task_s']:.2f} s")
    if len(rows) == 2:
        print(f"ember/ray PSS: {rows[0]['pss_mb'] / rows[1]['pss_mb']:.3f}")


if __name__ == "__main__":
    main()
