"""The autoscaler with real nodes: Ray programs using ``AutoscalingCluster`` run unchanged.

One cluster serves most tests (head with 1 CPU; worker types ``cpu2`` and
``special``; 3 s idle timeout), so the module costs a few node start-ups, not
one cluster per test. Every wait is on a condition: nodes appearing in the
GCS, work completing, nodes leaving.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

import ember as ray
from ember.autoscaler.sdk import request_resources
from ember.cluster_utils import AutoscalingCluster
from ember.util.placement_group import placement_group, remove_placement_group
from helpers import wait_for_condition

IDLE_MINUTES = 0.025  # 1.5 s


def worker_types():
    return {"cpu2": {"resources": {"CPU": 2}, "node_config": {}, "min_workers": 0,
                     "max_workers": 2},
            "special": {"resources": {"CPU": 1, "special": 1}, "node_config": {},
                        "min_workers": 0, "max_workers": 2}}


@pytest.fixture(scope="module")
def cluster(temp_root):
    ray.shutdown()
    cluster = AutoscalingCluster(head_resources={"CPU": 1}, worker_node_types=worker_types(),
                                 idle_timeout_minutes=IDLE_MINUTES)
    cluster.start()
    ray.init("auto")
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def nodes_of_type(node_type: str) -> list[dict]:
    return [n for n in ray.nodes()
            if n["Alive"] and n["Labels"].get("ember.io/node-type") == node_type]


def wait_for_scale_down(timeout: float = 60):
    wait_for_condition(lambda: not nodes_of_type("cpu2") and not nodes_of_type("special"),
                       timeout, interval=0.2, message="the idle worker nodes to be removed")


def test_tasks_bigger_than_the_head_make_nodes_appear_within_max_workers(cluster, caplog):
    @ray.remote(num_cpus=2)
    def where():
        time.sleep(0.5)
        return ray.get_runtime_context().get_node_id()

    seen = set()
    refs = [where.remote() for _ in range(6)]
    while refs:
        done, refs = ray.wait(refs, timeout=0.2)
        seen.update(ray.get(done))
        assert len(nodes_of_type("cpu2")) <= 2  # the type's max_workers
    head = next(n["NodeID"] for n in ray.nodes() if n["IsHead"])
    assert head not in seen and 1 <= len(seen) <= 2
    wait_for_scale_down()
    assert [n["NodeID"] for n in ray.nodes() if n["Alive"]] == [head]
    # The driver is told, as Ray prints "(autoscaler)" lines.
    wait_for_condition(lambda: "(autoscaler) Removing 1 node of type cpu2 (idle)."
                       in caplog.text, 10, message="the autoscaler's events at the driver")
    assert "(autoscaler) Adding " in caplog.text


def test_an_actor_gets_a_node_of_the_type_that_has_its_resource(cluster):
    @ray.remote(resources={"special": 1}, num_cpus=1)
    class Special:
        def node(self):
            return ray.get_runtime_context().get_node_id()

    actor = Special.remote()
    node_id = ray.get(actor.node.remote(), timeout=60)
    assert node_id in {n["NodeID"] for n in nodes_of_type("special")}
    ray.kill(actor)


@pytest.mark.parametrize("strategy, bundles, node_type, nodes", [
    ("PACK", [{"CPU": 2}, {"CPU": 2}], "cpu2", 2),  # no type holds both: one node each
    ("STRICT_SPREAD", [{"special": 1}, {"special": 1}], "special", 2),
])
def test_placement_groups_scale_up(cluster, strategy, bundles, node_type, nodes):
    pg = placement_group(bundles, strategy=strategy)
    assert pg.wait(60)
    placed = {n["NodeID"] for n in nodes_of_type(node_type)}
    assert len(placed) >= nodes
    remove_placement_group(pg)


def test_request_resources_launches_and_withdrawing_lets_nodes_go(cluster):
    wait_for_scale_down()
    request_resources(bundles=[{"special": 1}] * 2)
    wait_for_condition(lambda: len(nodes_of_type("special")) == 2, 60, interval=0.2,
                       message="two special nodes for the request")
    request_resources()
    wait_for_scale_down()


def test_scale_down_keeps_a_node_whose_object_is_referenced(cluster):
    @ray.remote(num_cpus=2)
    def make():
        return np.ones(1 << 20, dtype=np.uint8), ray.get_runtime_context().get_node_id()

    # The array is returned as its own object (not inline): its primary copy
    # is in the store of the node that ran the task.
    array_ref, node_ref = make.options(num_returns=2).remote()
    node_id = ray.get(node_ref, timeout=60)
    assert node_id in {n["NodeID"] for n in nodes_of_type("cpu2")}
    # Idle for twice the timeout but holding a referenced primary copy: kept.
    time.sleep(2 * IDLE_MINUTES * 60 + 2)
    assert node_id in {n["NodeID"] for n in nodes_of_type("cpu2")}
    assert ray.get(array_ref).sum() == 1 << 20
    del array_ref
    wait_for_scale_down()


def test_status_shows_the_autoscaler_section(cluster, temp_root, caplog):
    from ember.state import format_status

    @ray.remote(num_cpus=64)
    def too_big():
        pass

    ref = too_big.remote()
    wait_for_condition(lambda: "{'CPU': 64.0}: 1+ pending tasks (no node type can hold it)"
                       in format_status(cluster.address), 30, interval=0.2,
                       message="the infeasible demand in ember status")
    text = format_status(cluster.address)
    assert "======== Autoscaler status:" in text and "(autoscaling-cluster)" in text
    assert "Healthy:\n 1 ray.head.default" in text
    assert "Recent failures:\n (no failures)" in text
    wait_for_condition(lambda: "(autoscaler) No node type can hold the resource demand "
                               "{'CPU': 64.0}" in caplog.text, 10,
                       message="the infeasible warning at the driver")
    ray.cancel(ref)


def test_min_workers_start_without_demand(temp_root):
    ray.shutdown()
    types = worker_types()
    types["cpu2"]["min_workers"] = 1
    cluster = AutoscalingCluster(head_resources={"CPU": 1}, worker_node_types=types,
                                 idle_timeout_minutes=IDLE_MINUTES)
    cluster.start()
    try:
        ray.init(address=cluster.address)
        wait_for_condition(lambda: len(nodes_of_type("cpu2")) == 1, 60, interval=0.2,
                           message="the min_workers node")
        # Idle past the timeout, it stays: min_workers is a floor.
        time.sleep(IDLE_MINUTES * 60 + 2)
        assert len(nodes_of_type("cpu2")) == 1
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_autoscaling_cluster_rejects_a_bad_config():
    types = worker_types()
    types["cpu2"]["min_workers"] = 3
    with pytest.raises(ValueError, match=r"available_node_types.cpu2.max_workers \(2\) is "
                                         r"lower than available_node_types.cpu2.min_workers"):
        AutoscalingCluster(head_resources={"CPU": 1}, worker_node_types=types)
    with pytest.raises(ValueError, match="available_node_types.gpu.resources is empty"):
        AutoscalingCluster(head_resources={"CPU": 1},
                           worker_node_types={"gpu": {"resources": {}, "max_workers": 1}})
