#!/usr/bin/env python3
"""Bandwidth of a 1 GiB object copied between two nodes, next to memcpy on this machine.

    python benchmarks/cross_node_transfer.py            # 1 GiB, 3 rounds
    python benchmarks/cross_node_transfer.py --mib 256 --rounds 5

Two raylets of one ``cluster_utils.Cluster`` on this machine, talking over
loopback TCP as two machines would. A task pinned to the second node makes
an array of the given size (its primary copy lands in that node's store);
the driver on the head node then ``get``s it, which pulls it into the head's
store in chunks. Reported per round:

- ``transfer``: the raylet's own timing of the copy (create, chunks, seal),
  from its object manager's ``last_transfer``;
- ``get``: the driver's whole ``ember.get``, pull included.

Round 1 copies into store pages never touched before, which the kernel must
first allocate (slow on VMs); later rounds reuse the pages the previous,
freed copy left behind, as a long-running node does.

memcpy is measured in the same run with numpy (``np.copyto`` of the same
size): into a destination already in memory (``memcpy``), and into fresh
memory (``memcpy_fresh``, page faults included).
"""
import argparse
import json
import time

import numpy as np


def memcpy_bandwidth(size: int) -> dict:
    src = np.ones(size, dtype=np.uint8)
    dst = np.empty(size, dtype=np.uint8)
    t0 = time.perf_counter()
    np.copyto(dst, src)
    fresh = size / (time.perf_counter() - t0)
    rates = []
    for _ in range(3):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        rates.append(size / (time.perf_counter() - t0))
    return {"memcpy_GBps": max(rates) / 1e9, "memcpy_fresh_GBps": fresh / 1e9}


def transfer_bandwidth(size: int, rounds: int) -> list[dict]:
    import ember
    from ember.cluster_utils import Cluster
    from ember.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    store = int(size * 2.5)
    cluster = Cluster()
    cluster.add_node(num_cpus=1, object_store_memory=store)
    source = cluster.add_node(num_cpus=1, object_store_memory=store)
    ember.init(address=cluster.address)
    try:
        @ember.remote(scheduling_strategy=NodeAffinitySchedulingStrategy(source.node_id,
                                                                         soft=False))
        def make(n):
            return np.full(n, 7, dtype=np.uint8)

        results = []
        for i in range(rounds):
            ref = make.remote(size)
            ember.wait([ref])
            t0 = time.perf_counter()
            value = ember.get(ref)
            get_s = time.perf_counter() - t0
            assert value.nbytes == size and value[0] == 7 and value[-1] == 7
            last = cluster.head_node.debug_state()["object_manager"]["last_transfer"]
            results.append({"round": i + 1, "transfer_s": last["seconds"],
                            "transfer_GBps": last["bytes"] / last["seconds"] / 1e9,
                            "get_s": round(get_s, 4), "get_GBps": size / get_s / 1e9})
            del value, ref
            _wait_store_empty(cluster.head_node)
        return results
    finally:
        ember.shutdown()
        cluster.shutdown()


def _wait_store_empty(node, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while node.debug_state()["object_store"]["num_objects"] and time.monotonic() < deadline:
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="object size in MiB")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = args.mib * 1024**2
    copy = memcpy_bandwidth(size)
    rounds = transfer_bandwidth(size, args.rounds)
    best = max(r["transfer_GBps"] for r in rounds)
    print(json.dumps({"size_bytes": size, **copy, "rounds": rounds,
                      "best_transfer_GBps": best,
                      "best_transfer_vs_memcpy": best / copy["memcpy_GBps"]}, indent=2))


if __name__ == "__main__":
    main()
