"""``ember demo``: a two-minute tour of ember on a local cluster.

It shows remote functions running in parallel, objects passed by reference,
a streaming generator, and what a failing task looks like to the caller.
"""
from __future__ import annotations

import os
import time

import ember


def main() -> None:
    t0 = time.perf_counter()
    ember.init()
    print(f"Started a local cluster in {time.perf_counter() - t0:.2f} s: "
          f"{ember.cluster_resources().get('CPU', 0):g} CPUs.\n")

    @ember.remote
    def square(x):
        return x * x

    @ember.remote
    def slow_pid(seconds):
        time.sleep(seconds)
        return os.getpid()

    print("1. Tasks run in parallel on worker processes.")
    refs = [square.remote(i) for i in range(10)]
    print("   squares:", ember.get(refs))
    t = time.perf_counter()
    pids = ember.get([slow_pid.remote(0.5) for _ in range(2)])
    print(f"   two 0.5 s tasks took {time.perf_counter() - t:.2f} s on pids {sorted(set(pids))}\n")

    print("2. Objects: put once, pass the reference to many tasks.")
    data = ember.put(list(range(1000)))

    @ember.remote
    def total(numbers):
        return sum(numbers)
    print("   sum of a shared list:", ember.get(total.remote(data)), "\n")

    print("3. Streaming generators hand out results as they are produced.")

    @ember.remote
    def countdown(n):
        for i in range(n, 0, -1):
            yield i
    print("   countdown:", [ember.get(ref) for ref in countdown.remote(5)], "\n")

    print("4. Errors keep their type and their remote traceback.")

    @ember.remote
    def divide(a, b):
        return a / b
    try:
        ember.get(divide.remote(1, 0))
    except ZeroDivisionError as err:
        print(f"   caught {type(err).__name__}, also a "
              f"RayTaskError: {isinstance(err, ember.exceptions.RayTaskError)}")
        print("   " + str(err).replace("\n", "\n   "))

    ember.shutdown()
    print("\nDone; the cluster was shut down and left nothing running.")


if __name__ == "__main__":
    main()
