"""Resource-aware scheduling: queueing, fractional and custom resources, infeasible tasks."""
from __future__ import annotations

import os
import time

import pytest

import ember as ray
from helpers import DriverProcess, wait_for_condition, wait_for_file


@ray.remote
def timed_sleep(seconds):
    start = time.time()
    time.sleep(seconds)
    return start, time.time()


@ray.remote
def barrier(directory, me, count, timeout=30):
    """Arrive, then wait until ``count`` tasks have arrived; True if they all did."""
    open(os.path.join(directory, f"arrived-{me}"), "w").close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len([n for n in os.listdir(directory) if n.startswith("arrived-")]) >= count:
            return True
        time.sleep(0.01)
    return False


@ray.remote
def block_until(path, started=None):
    if started:
        open(started, "w").close()
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return "released"


def max_concurrency(intervals) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals],
                    key=lambda ev: (ev[0], ev[1]))
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


def test_tasks_wait_for_free_cpus(shared):
    intervals = ray.get([timed_sleep.remote(0.5) for _ in range(4)], timeout=60)
    assert max_concurrency(intervals) == 2


def test_a_task_needing_both_cpus_runs_alone(shared):
    refs = [timed_sleep.options(num_cpus=2).remote(0.3) for _ in range(2)]
    refs += [timed_sleep.remote(0.3) for _ in range(2)]
    intervals = ray.get(refs, timeout=60)
    big = intervals[:2]
    for b_start, b_end in big:
        for start, end in intervals:
            if (start, end) != (b_start, b_end):
                assert end <= b_start or start >= b_end, "a task overlapped a 2-CPU task"


def test_fractional_cpus_share_a_cpu(shared, tmp_path):
    # Four tasks of half a CPU each run at once on two CPUs: each waits for all four.
    refs = [barrier.options(num_cpus=0.5).remote(str(tmp_path), i, 4) for i in range(4)]
    assert ray.get(refs, timeout=60) == [True] * 4


def test_zero_cpu_tasks_run_while_cpus_are_busy(shared, tmp_path):
    gate = str(tmp_path / "gate")
    started = [str(tmp_path / f"started{i}") for i in range(2)]
    busy = [block_until.remote(gate, s) for s in started]
    for s in started:
        wait_for_file(s)

    @ray.remote(num_cpus=0)
    def free():
        return "ran"
    assert ray.get(free.remote(), timeout=30) == "ran"
    open(gate, "w").close()
    assert ray.get(busy, timeout=30) == ["released"] * 2


def test_custom_resource_limits_concurrency(fresh, tmp_path):
    fresh(num_cpus=4, resources={"slot": 1, "pair": 2})
    intervals = ray.get([timed_sleep.options(resources={"slot": 1}).remote(0.3)
                         for _ in range(3)], timeout=60)
    assert max_concurrency(intervals) == 1
    # Two units of "pair": two tasks of one unit each run together.
    refs = [barrier.options(resources={"pair": 1}).remote(str(tmp_path), i, 2)
            for i in range(2)]
    assert ray.get(refs, timeout=60) == [True, True]


def test_cluster_resources_and_nodes(shared):
    total = ray.cluster_resources()
    assert total["CPU"] == 2
    assert total["memory"] > 0 and total["object_store_memory"] > 0
    nodes = ray.nodes()
    assert len(nodes) == 1
    node = nodes[0]
    assert node["Alive"] is True
    assert node["NodeID"] == ray.get_runtime_context().get_node_id()
    assert node["Resources"]["CPU"] == 2
    assert node["NodeManagerAddress"]
    assert node["IsHead"] is True


def test_available_resources_follow_running_tasks(shared, tmp_path):
    wait_for_condition(lambda: ray.available_resources().get("CPU") == 2,
                       message="an idle cluster with 2 CPUs free")
    gate = str(tmp_path / "gate")
    started = str(tmp_path / "started")
    ref = block_until.remote(gate, started)
    wait_for_file(started)
    wait_for_condition(lambda: ray.available_resources().get("CPU") == 1,
                       message="available CPU to drop to 1 while the task runs")
    open(gate, "w").close()
    assert ray.get(ref, timeout=30) == "released"
    wait_for_condition(lambda: ray.available_resources().get("CPU") == 2,
                       message="available CPU back to 2 after the task")
    assert ray.cluster_resources()["CPU"] == 2


def test_blocked_task_lends_its_cpu(fresh):
    fresh(num_cpus=1)

    @ray.remote
    def child():
        return "child"

    @ray.remote
    def parent():
        # While the parent waits in get, its CPU runs the child.
        return ray.get(child.remote())
    assert ray.get(parent.remote(), timeout=60) == "child"
    wait_for_condition(lambda: ray.available_resources().get("CPU") == 1,
                       message="the lent CPU to be given back")


@pytest.mark.timeout(90)
def test_infeasible_task_warns_and_does_not_run(tmp_path):
    ran = tmp_path / "ran"
    driver = DriverProcess(tmp_path, f"""
        import sys, ember as ray
        ray.init(num_cpus=1)

        @ray.remote
        def too_big_task():
            open({str(ran)!r}, "w").close()

        @ray.remote
        def small():
            return "small ok"

        big = too_big_task.options(num_cpus=4).remote()
        custom = too_big_task.options(resources={{"unobtainium": 1}}).remote()
        print("SUBMITTED", flush=True)
        ready, _ = ray.wait([big, custom], num_returns=1, timeout=1)
        print("READY" if ready else "NOT READY", flush=True)
        print(ray.get(small.remote()), flush=True)
        sys.stdin.read()
        ray.shutdown()
    """)
    try:
        driver.wait_for_line(lambda line: line == "SUBMITTED")
        wait_for_condition(lambda: "unobtainium" in driver.stderr and "CPU" in driver.stderr,
                           timeout=30, message="infeasibility warnings at the driver")
        assert driver.wait_for_line(lambda line: "READY" in line) == "NOT READY"
        assert driver.wait_for_line(lambda line: "small" in line) == "small ok"
        out, err = driver.finish()
        assert driver.proc.returncode == 0, err
    finally:
        driver.kill()
    warnings = [line for line in err.splitlines() if "too_big_task" in line]
    # Each names the task, what it asked for, and what is missing.
    assert any("'CPU': 4" in w and "missing {'CPU': 3" in w for w in warnings), err
    assert any("missing {'unobtainium': 1" in w for w in warnings), err
    assert not ran.exists()
