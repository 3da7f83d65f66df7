#!/usr/bin/env python3
"""10,000 tasks of 0.25 CPU on a 4-node Cluster on this machine: ember vs Ray.

    python benchmarks/many_tasks_cluster.py              # both, ember first
    python benchmarks/many_tasks_cluster.py --only ray

Both run the same script through ``cluster_utils.Cluster`` (Ray's from the Ray
venv that ../shared/bench/compare_with_ray.py creates), with the same layout:
4 nodes of 2 CPUs each. Reported: tasks per second over the whole batch,
median of 3 rounds after a warm-up round.
"""
from harness import implementations, run_probe

NODES, CPUS, TASKS = 4, 2, 10_000

PROBE = r'''
import json, sys, time
impl, nodes, cpus, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ray = __import__(impl)
Cluster = __import__(impl + ".cluster_utils", fromlist=["Cluster"]).Cluster
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus})
for _ in range(nodes - 1):
    cluster.add_node(num_cpus=cpus)
cluster.wait_for_nodes()
ray.init(address=cluster.address)

@ray.remote(num_cpus=0.25)
def tiny(i):
    return i

rates = []
for round_ in range(4):
    t0 = time.perf_counter()
    out = ray.get([tiny.remote(i) for i in range(n)])
    dt = time.perf_counter() - t0
    assert out[-1] == n - 1
    if round_:
        rates.append(n / dt)
ray.shutdown()
cluster.shutdown()
rates.sort()
print(json.dumps({"impl": impl, "tasks_per_s": rates[len(rates) // 2], "rounds": rates}))
'''


def main() -> None:
    rows = [run_probe(PROBE, impl, str(NODES), str(CPUS), str(TASKS))
            for impl in implementations()]
    for r in rows:
        print(f"{r['impl']:6} {r['tasks_per_s']:10.1f} tasks/s  "
              f"(rounds: {', '.join(f'{x:.0f}' for x in r['rounds'])})")
    if len(rows) == 2:
        print(f"ember/ray: {rows[0]['tasks_per_s'] / rows[1]['tasks_per_s']:.2f}")


if __name__ == "__main__":
    main()
