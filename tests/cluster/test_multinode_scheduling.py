"""Scheduling across the nodes of a ``Cluster``: spillback, SPREAD, node affinity,
node labels, per-node custom resources and GPUs, infeasible tasks that wait for
a node, and data locality.

The module shares one four-node cluster (1 CPU each, the driver on the head);
tests that add or remove nodes undo it before they return.
"""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

import ember as ray
from ember.cluster_utils import Cluster
from ember.core_worker import context
from ember.exceptions import TaskUnschedulableError
from ember.util.scheduling_strategies import (DoesNotExist, Exists, In,
                                              NodeAffinitySchedulingStrategy,
                                              NodeLabelSchedulingStrategy, NotIn)
from helpers import DriverProcess, wait_for_condition

MB = 1024 * 1024


@pytest.fixture(scope="module")
def _cluster():
    ray.shutdown()
    cluster = Cluster()
    nodes = {
        "head": cluster.add_node(num_cpus=1),
        "a": cluster.add_node(num_cpus=1, resources={"special": 1}, labels={"zone": "a"}),
        "b": cluster.add_node(num_cpus=1, num_gpus=1, labels={"zone": "b"}),
        "plain": cluster.add_node(num_cpus=1),
    }
    yield cluster, nodes
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture
def nodes(_cluster):
    """The nodes by name; this process is a driver of the cluster, on the head."""
    cluster, by_name = _cluster
    if not ray.is_initialized() or context.core.gcs_address != cluster.address:
        ray.shutdown()
        ray.init(address=cluster.address)
    return by_name


@ray.remote(num_cpus=0)
def where(seconds: float = 0.0) -> str:
    time.sleep(seconds)
    return ray.get_runtime_context().get_node_id()


def on(node, soft: bool = False) -> NodeAffinitySchedulingStrategy:
    return NodeAffinitySchedulingStrategy(node.node_id, soft=soft)


def test_tasks_spill_back_when_the_head_is_full(nodes):
    refs = [where.options(num_cpus=1).remote(1.0) for _ in range(4)]
    used = ray.get(refs, timeout=60)
    assert len(set(used)) > 1, used
    assert set(used) <= {n.node_id for n in nodes.values()}


def test_one_short_task_per_node_runs_on_every_node(nodes):
    """N one-CPU tasks on N one-CPU nodes: spilled tasks spread, none waits behind another."""
    refs = [where.options(num_cpus=1).remote(0.5) for _ in range(len(nodes))]
    assert set(ray.get(refs, timeout=60)) == {n.node_id for n in nodes.values()}


def test_twice_as_many_tasks_as_nodes_use_every_node_batch_after_batch(nodes):
    """Each batch finds every node free again: no node's freed CPUs go unreported."""
    for _ in range(3):
        refs = [where.options(num_cpus=1).remote(0.5) for _ in range(2 * len(nodes))]
        assert set(ray.get(refs, timeout=60)) == {n.node_id for n in nodes.values()}


def test_spread_uses_every_node(nodes):
    refs = [where.options(scheduling_strategy="SPREAD").remote(1.0) for _ in range(8)]
    assert set(ray.get(refs, timeout=60)) == {n.node_id for n in nodes.values()}


def test_hard_node_affinity_pins_to_the_node(nodes):
    for node in nodes.values():
        refs = [where.options(num_cpus=1, scheduling_strategy=on(node)).remote()
                for _ in range(3)]
        assert ray.get(refs, timeout=60) == [node.node_id] * 3


def test_soft_node_affinity_to_unknown_or_dead_node_runs_elsewhere(nodes, _cluster):
    cluster = _cluster[0]
    unknown = NodeAffinitySchedulingStrategy("ab" * 28, soft=True)
    assert ray.get(where.options(scheduling_strategy=unknown).remote(), timeout=30) in {
        n.node_id for n in nodes.values()}

    doomed = cluster.add_node(num_cpus=1)
    assert ray.get(where.options(scheduling_strategy=on(doomed)).remote(),
                   timeout=30) == doomed.node_id
    cluster.remove_node(doomed)
    cluster.wait_for_nodes()
    wait_for_condition(lambda: not any(n["Alive"] for n in ray.nodes()
                                       if n["NodeID"] == doomed.node_id),
                       message="the removed node to be dead")
    ran_on = ray.get(where.options(scheduling_strategy=on(doomed, soft=True)).remote(),
                     timeout=30)
    assert ran_on in {n.node_id for n in nodes.values()}

    # Hard affinity to the dead node fails at once, naming the node and why.
    with pytest.raises(TaskUnschedulableError, match=f"node {doomed.node_id} is dead"):
        ray.get(where.options(scheduling_strategy=on(doomed)).remote(), timeout=30)
    with pytest.raises(TaskUnschedulableError, match="does not exist"):
        ray.get(where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            "cd" * 28, soft=False)).remote(), timeout=30)


def labelled(hard: dict, **kwargs):
    return where.options(scheduling_strategy=NodeLabelSchedulingStrategy(hard, **kwargs))


def test_node_label_strategy_operators(nodes):
    a, b = nodes["a"].node_id, nodes["b"].node_id
    unlabelled = {nodes["head"].node_id, nodes["plain"].node_id}

    def run(hard, count=4, **kwargs):
        return set(ray.get([labelled(hard, **kwargs).remote(0.2) for _ in range(count)],
                           timeout=60))
    assert run({"zone": In("a")}) == {a}
    assert run({"zone": In("b", "c")}) == {b}
    assert run({"zone": NotIn("a")}) <= unlabelled | {b}
    assert a not in run({"zone": NotIn("a")}, count=8)
    assert run({"zone": Exists()}) <= {a, b}
    assert run({"zone": DoesNotExist()}) <= unlabelled
    # A soft preference is honoured when the preferred node is free.
    assert run({"zone": Exists()}, soft={"zone": In("b")}, count=1) == {b}


def test_node_label_strategy_with_no_matching_node_waits(nodes):
    ref = labelled({"zone": In("nowhere")}).remote()
    ready, _ = ray.wait([ref], timeout=1)
    assert not ready
    ray.cancel(ref)


def test_label_selector_and_fallback_strategy_options(nodes):
    a, b = nodes["a"].node_id, nodes["b"].node_id

    def run(count=3, **options):
        return set(ray.get([where.options(**options).remote(0.1) for _ in range(count)],
                           timeout=60))
    assert run(label_selector={"zone": "a"}) == {a}
    assert run(label_selector={"zone": "in(b, c)"}) == {b}
    assert a not in run(label_selector={"zone": "!a"}, count=6)
    # No node is in zone "c": the first fallback that some node meets is used.
    assert run(label_selector={"zone": "c"},
               fallback_strategy=[{"label_selector": {"zone": "d"}},
                                  {"label_selector": {"zone": "b"}}]) == {b}


def test_custom_resources_and_gpus_pick_their_node(nodes):
    @ray.remote(num_cpus=0, num_gpus=1)
    def gpu_task():
        return ray.get_runtime_context().get_node_id(), os.environ.get("CUDA_VISIBLE_DEVICES")

    assert set(ray.get([where.options(resources={"special": 1}).remote(0.1)
                        for _ in range(3)], timeout=60)) == {nodes["a"].node_id}
    results = ray.get([gpu_task.remote() for _ in range(3)], timeout=60)
    assert results == [(nodes["b"].node_id, "0")] * 3
    # A task without GPUs sees none, even on the GPU node.
    @ray.remote(num_cpus=0)
    def no_gpu():
        return os.environ.get("CUDA_VISIBLE_DEVICES")
    strategy = on(nodes["b"])
    assert ray.get(no_gpu.options(scheduling_strategy=strategy).remote()) in (None, "")


@pytest.mark.timeout(90)
def test_infeasible_task_waits_warns_and_runs_when_a_node_joins(nodes, _cluster, tmp_path):
    cluster = _cluster[0]
    driver = DriverProcess(tmp_path, f"""
        import sys, ember as ray
        ray.init(address={cluster.address!r})

        @ray.remote(num_cpus=0)
        def needs_later():
            return ray.get_runtime_context().get_node_id()

        ref = needs_later.options(resources={{"later": 1}}).remote()
        ready, _ = ray.wait([ref], timeout=1)
        print("WAITING" if not ready else "RAN TOO EARLY", flush=True)
        sys.stdin.readline()
        print("RAN ON", ray.get(ref, timeout=60), flush=True)
        ray.shutdown()
    """)
    later = None
    try:
        assert driver.wait_for_line(lambda line: line in ("WAITING", "RAN TOO EARLY")) \
            == "WAITING"
        wait_for_condition(lambda: "needs_later" in driver.stderr, timeout=30,
                           message="an infeasibility warning at the driver")
        warning = next(line for line in driver.stderr.splitlines() if "needs_later" in line)
        assert "'later': 1" in warning and "missing {'later': 1" in warning, warning
        later = cluster.add_node(num_cpus=1, resources={"later": 1})
        driver.proc.stdin.write("go\n")
        driver.proc.stdin.flush()
        line = driver.wait_for_line(lambda line: line.startswith("RAN ON"), timeout=30)
        assert line == f"RAN ON {later.node_id}"
        out, err = driver.finish()
        assert driver.proc.returncode == 0, err
    finally:
        driver.kill()
        if later is not None:
            cluster.remove_node(later)


def test_task_runs_where_its_large_argument_is(nodes):
    @ray.remote(num_cpus=1)
    def make(nbytes):
        return np.ones(nbytes, dtype=np.uint8)

    @ray.remote(num_cpus=1)
    def consume(array):
        return ray.get_runtime_context().get_node_id(), int(array.sum())

    for name in ("a", "b"):
        array = make.options(scheduling_strategy=on(nodes[name])).remote(8 * MB)
        ray.wait([array], timeout=30)
        assert ray.get(consume.remote(array), timeout=30) == (nodes[name].node_id, 8 * MB)
