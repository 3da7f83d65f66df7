#!/usr/bin/env python3
"""One real GCS and up to 1,000 simulated raylets (ember.util.sim_cluster).

    python benchmarks/thousand_nodes.py                    # N = 100, 250, 500, 1000
    python benchmarks/thousand_nodes.py --nodes 100 --steady 10
    python benchmarks/thousand_nodes.py --nodes 1000 --profile /tmp/gcs.txt

For each N: a fresh GCS process alone, and ceil(N / 250) processes of
simulated nodes (4 CPUs each, reporting their resources every second as a
loaded raylet does; see the module docstring of ember.util.sim_cluster).
Measured, on the GCS process:

- registration: every node registered and subscribed (wall time);
- steady state: the GCS's CPU (% of one core) and memory (RSS, USS) over
  ``--steady`` seconds with every node reporting and health-checked;
- N placement groups of two 1-CPU bundles (PACK), created and ready
  (1,000 at N = 1,000);
- 5 N actors (1 CPU to place, 0 held, max_restarts=1) until ALIVE
  (5,000 at N = 1,000);
- N / 10 nodes crashed at once (their connections close, as when their
  processes die): time until the GCS marks them all dead, and until the
  actors they held are ALIVE again elsewhere.

Prints one JSON line per N, then a table.
"""
import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time

import psutil

from ember.util.sim_cluster import SimDriver, SimProcess, start_gcs

NODES_PER_PROCESS = 250


def wait(predicate, timeout: float, what: str, period: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(period)


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def run(n: int, steady_s: float, report_period_s: float, profile: str | None) -> dict:
    tmp = tempfile.mkdtemp(prefix=f"ember-sim-{n}-")
    env = dict(os.environ)
    gcs_proc, address = start_gcs(tmp, env)
    gcs = psutil.Process(gcs_proc.pid)
    sims: list[SimProcess] = []
    driver = None
    row: dict = {"nodes": n}
    try:
        counts = [NODES_PER_PROCESS] * (n // NODES_PER_PROCESS)
        if n % NODES_PER_PROCESS:
            counts.append(n % NODES_PER_PROCESS)
        sims = [SimProcess(address, {"CPU": 4.0}, report_period_s, env) for _ in counts]
        row["rss_idle_mib"] = gcs.memory_info().rss / 2**20
        driver = SimDriver(address)

        cpu0, t0 = cpu_seconds(gcs), time.perf_counter()
        for sim, count in zip(sims, counts):
            sim.send(f"add {count}")
        for sim in sims:
            sim.answer()
        wait(lambda: len(driver.alive_nodes()) == n, 60, "every node registered", 0.02)
        row["register_s"] = time.perf_counter() - t0
        row["register_gcs_cpu_s"] = cpu_seconds(gcs) - cpu0

        time.sleep(2)  # let the registration burst settle
        profiler = None
        if profile:
            profiler = subprocess.Popen(
                ["py-spy", "record", "-p", str(gcs_proc.pid), "-f", "raw", "-o", profile,
                 "-d", str(int(steady_s)), "-r", "50"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cpu0, t0 = cpu_seconds(gcs), time.perf_counter()
        time.sleep(steady_s)
        row["steady_gcs_cpu_pct"] = 100 * (cpu_seconds(gcs) - cpu0) / (time.perf_counter() - t0)
        mem = gcs.memory_full_info()
        row["rss_mib"], row["uss_mib"] = mem.rss / 2**20, mem.uss / 2**20
        if profiler is not None:
            profiler.wait()

        groups = n
        cpu0, t0 = cpu_seconds(gcs), time.perf_counter()
        driver.create_placement_groups(groups, [{"CPU": 1.0}, {"CPU": 1.0}], "PACK")
        row["pgs"] = groups
        row["pg_s"] = time.perf_counter() - t0
        row["pg_gcs_cpu_s"] = cpu_seconds(gcs) - cpu0

        nodes = driver.alive_nodes()
        cpu0, t0 = cpu_seconds(gcs), time.perf_counter()
        ids = driver.create_actors(5 * n, nodes, max_restarts=1)
        wait(lambda: driver.actor_states(ids).get("ALIVE") == len(ids), 300,
             "every actor ALIVE")
        row["actors"] = len(ids)
        row["actor_s"] = time.perf_counter() - t0
        row["actor_gcs_cpu_s"] = cpu_seconds(gcs) - cpu0

        victims = max(n // 10, 1)
        per_sim = [victims // len(sims) + (i < victims % len(sims)) for i in range(len(sims))]
        restarts0 = sum(driver.actors[a].num_restarts for a in ids)
        t0 = time.perf_counter()
        for sim, k in zip(sims, per_sim):
            sim.send(f"crash {k}")
        dead = set()
        for sim in sims:
            dead.update(bytes.fromhex(h) for h in sim.answer()["node_ids"])
        wait(lambda: len(driver.alive_nodes()) == n - victims, 60, "dead nodes marked dead")
        row["killed"] = victims
        row["death_detect_s"] = time.perf_counter() - t0
        wait(lambda: driver.actor_states(ids).get("ALIVE") == len(ids), 300,
             "every actor ALIVE again")
        row["actor_recover_s"] = time.perf_counter() - t0
        row["actors_restarted"] = sum(driver.actors[a].num_restarts for a in ids) - restarts0
        row["rss_end_mib"] = gcs.memory_info().rss / 2**20
        row["gcs_alive"] = gcs_proc.poll() is None
        return row
    finally:
        if driver is not None:
            driver.close()
        threads = [threading.Thread(target=s.close) for s in sims]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        gcs_proc.terminate()
        gcs_proc.wait(10)
        errors = subprocess.run(["grep", "-c", "ERROR\\|Traceback", os.path.join(tmp, "gcs.log"),
                                 os.path.join(tmp, "gcs.out")], capture_output=True, text=True)
        row["gcs_errors"] = sum(int(x.rsplit(":", 1)[-1]) for x in errors.stdout.split())
        row["logs"] = tmp


def table(rows: list[dict]) -> str:
    head = ("| nodes | all registered (s) | GCS CPU, all reporting | GCS RSS / USS (MiB) | "
            "placement groups ready (s) | actors until ALIVE (s) | "
            "N/10 crashed: all dead (s) | their actors ALIVE again (s) |")
    lines = [head, "|" + "---:|" * 8]
    for r in rows:
        lines.append(
            f"| {r['nodes']:,} | {r['register_s']:.2f} | {r['steady_gcs_cpu_pct']:.1f}% | "
            f"{r['rss_mib']:.0f} / {r['uss_mib']:.0f} | {r['pgs']:,}: {r['pg_s']:.2f} | "
            f"{r['actors']:,}: {r['actor_s']:.2f} | {r['killed']}: {r['death_detect_s']:.2f} | "
            f"{r['actors_restarted']:,}: {r['actor_recover_s']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, nargs="*", default=[100, 250, 500, 1000])
    parser.add_argument("--steady", type=float, default=30.0,
                        help="seconds of steady state to measure the GCS's CPU over")
    parser.add_argument("--report-period", type=float, default=1.0,
                        help="each node reports its resources every this many seconds")
    parser.add_argument("--profile", default=None,
                        help="py-spy the GCS in the steady state; raw output to this path "
                             "(with the node count appended)")
    args = parser.parse_args()
    # One token for every GCS of the run: this process's connections read it once.
    os.environ.setdefault("EMBER_AUTH_TOKEN", secrets.token_hex(16))
    rows = []
    for n in args.nodes:
        row = run(n, args.steady, args.report_period,
                  f"{args.profile}.{n}" if args.profile else None)
        print(json.dumps(row), flush=True)
        rows.append(row)
    print(table(rows))
    for r in rows:
        per_node_kib = (r["rss_mib"] - r["rss_idle_mib"]) * 1024 / r["nodes"]
        print(f"N={r['nodes']}: GCS RSS per node {per_node_kib:.0f} KiB, steady CPU per node "
              f"{r['steady_gcs_cpu_pct'] / r['nodes'] * 1000:.2f} m-core")
    sys.exit(0 if all(r["gcs_alive"] for r in rows) else 1)


if __name__ == "__main__":
    main()
