#!/usr/bin/env python3
"""ember.put bandwidth next to this machine's memcpy bandwidth, measured in one run.

Two sources, because they differ: the microbenchmark's ``np.zeros`` array
(its pages are all the kernel's shared zero page, so reading it is cheap) and
an array of random bytes (a real read of 800 MB). For each, memcpy is numpy
copying into a destination that is already faulted in, the best case for a
copy, and put is ``ember.put`` after a warm-up, so the store reuses pages it
has already touched. Rounds alternate so that machine noise hits both.
"""
import statistics
import time

import numpy as np

import ember

SIZE = 800 * 1024 * 1024
ROUNDS = 5


def rate(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return SIZE / (time.perf_counter() - t0) / 1e9


def main() -> None:
    ember.init(num_cpus=1, object_store_memory=4 * SIZE)
    sources = {"zeros (the workload's array)": np.zeros(SIZE // 8, dtype=np.int64),
               "random bytes": np.frombuffer(np.random.bytes(SIZE), dtype=np.uint8)}
    dest = np.empty(SIZE, dtype=np.uint8)
    dest[:] = 1
    for name, src in sources.items():
        flat = src.view(np.uint8)
        for _ in range(2):  # warm up both paths
            np.copyto(dest, flat)
            ref = ember.put(src)
            del ref
        memcpy, put = [], []
        for _ in range(ROUNDS):
            memcpy.append(rate(lambda: np.copyto(dest, flat)))
            holder = []
            put.append(rate(lambda: holder.append(ember.put(src))))
            del holder
        m, p = statistics.median(memcpy), statistics.median(put)
        print(f"{name:30} memcpy {m:6.2f} GB/s   ember.put {p:6.2f} GB/s   "
              f"put/memcpy {p / m:.0%}")
    ember.shutdown()


if __name__ == "__main__":
    main()
