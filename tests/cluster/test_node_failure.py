"""Node failures in a ``Cluster``: killed and frozen raylets are declared dead, and
the work they ran is retried (tasks) or restarted (actors) on other nodes, or
fails with an error that says the node died.

Health checks are shortened (3 s timeout, 0.5 s period) for this module's
cluster, so a frozen raylet is found out quickly.
"""
from __future__ import annotations

import os
import signal
import time

import pytest

import helpers

import ember as ray
from ember.cluster_utils import Cluster
from ember.exceptions import ActorDiedError, ObjectLostError
from ember.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from helpers import wait_for_condition, wait_for_file

HEALTH_CHECK = {"EMBER_HEALTH_CHECK_TIMEOUT_S": "3", "EMBER_HEALTH_CHECK_PERIOD_S": "0.5"}


@pytest.fixture(scope="module")
def _cluster():
    ray.shutdown()
    saved = {name: os.environ.get(name) for name in HEALTH_CHECK}
    os.environ.update(HEALTH_CHECK)
    cluster = Cluster()
    try:
        cluster.add_node(num_cpus=1)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def cluster(_cluster):
    """The cluster (a 1-CPU head to begin with); this process is its driver."""
    helpers.drive(_cluster)
    yield _cluster
    for node in list(_cluster.worker_nodes):
        _cluster.remove_node(node, allow_graceful=False)
    # The next test starts from an idle head: an actor a test left alive there would
    # make the next one wait for the head's CPU, and fail for the wrong reason.
    wait_for_condition(lambda: ray.available_resources().get("CPU") == 1, timeout=20,
                       message="the head's CPU to be free again after the test")


def alive(node) -> bool | None:
    return next((n["Alive"] for n in ray.nodes() if n["NodeID"] == node.node_id), None)


def prefer(node):
    return NodeAffinitySchedulingStrategy(node.node_id, soft=True)


@ray.remote(num_cpus=1)
def node_id_after(path: str = "", seconds: float = 0.0) -> str:
    """Touch ``path`` (if given), sleep, and return the node it ran on."""
    if path:
        with open(path, "a") as f:
            f.write(ray.get_runtime_context().get_node_id() + "\n")
    time.sleep(seconds)
    return ray.get_runtime_context().get_node_id()


@ray.remote(num_cpus=1)
class Resident:
    def node(self) -> str:
        return ray.get_runtime_context().get_node_id()


def test_killed_node_is_dead_in_nodes(cluster):
    node = cluster.add_node(num_cpus=1)
    assert alive(node) is True
    cluster.remove_node(node, allow_graceful=False)
    cluster.wait_for_nodes(timeout=15)
    assert alive(node) is False
    info = next(n for n in ray.nodes() if n["NodeID"] == node.node_id)
    assert info["DeathReason"] and info["Resources"] == {}
    assert ray.cluster_resources()["CPU"] == 1


@pytest.mark.timeout(60)
def test_frozen_raylet_is_declared_dead_by_health_checks(cluster):
    node = cluster.add_node(num_cpus=1)
    raylets = [p for p in node._processes.processes if p.poll() is None]
    for proc in raylets:
        os.kill(proc.pid, signal.SIGSTOP)
    try:
        wait_for_condition(lambda: alive(node) is False, timeout=15, interval=0.1,
                           message="the frozen node to be declared dead")
        info = next(n for n in ray.nodes() if n["NodeID"] == node.node_id)
        assert "did not answer health checks for 3 s" in info["DeathReason"]
    finally:
        for proc in raylets:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
        cluster.remove_node(node, allow_graceful=False)


def run_then_kill_node(cluster, started, max_retries: int, seconds: float):
    """Start ``node_id_after`` on a new node, kill the node while it runs; its ref."""
    doomed = cluster.add_node(num_cpus=1)
    ref = node_id_after.options(scheduling_strategy=prefer(doomed),
                                max_retries=max_retries).remote(str(started), seconds)
    wait_for_file(str(started))
    assert started.read_text().split() == [doomed.node_id]
    cluster.remove_node(doomed, allow_graceful=False)
    return ref, doomed


def test_task_on_a_killed_node_is_retried_elsewhere(cluster, tmp_path):
    started = tmp_path / "started"
    ref, doomed = run_then_kill_node(cluster, started, max_retries=2, seconds=3.0)
    assert ray.get(ref, timeout=60) == cluster.head_node.node_id
    assert started.read_text().split() == [doomed.node_id, cluster.head_node.node_id]


def test_task_without_retries_on_a_killed_node_fails(cluster, tmp_path):
    ref, _ = run_then_kill_node(cluster, tmp_path / "started", max_retries=0, seconds=30.0)
    with pytest.raises(ray.exceptions.WorkerCrashedError, match="node_id_after"):
        ray.get(ref, timeout=60)


def test_actor_with_restarts_moves_to_another_node(cluster):
    doomed = cluster.add_node(num_cpus=1)
    actor = Resident.options(scheduling_strategy=prefer(doomed), max_restarts=1).remote()
    assert ray.get(actor.node.remote(), timeout=30) == doomed.node_id
    cluster.remove_node(doomed, allow_graceful=False)

    def moved():
        return ray.get(actor.node.remote(), timeout=30) == cluster.head_node.node_id
    wait_for_condition(moved, timeout=30, interval=0.2,
                       message="the actor to restart on the head node")


def test_actor_without_restarts_dies_with_its_node(cluster):
    doomed = cluster.add_node(num_cpus=1)
    actor = Resident.options(scheduling_strategy=prefer(doomed), max_restarts=0).remote()
    assert ray.get(actor.node.remote(), timeout=30) == doomed.node_id
    cluster.remove_node(doomed, allow_graceful=False)
    with pytest.raises(ActorDiedError) as info:
        ray.get(actor.node.remote(), timeout=30)
    message = str(info.value)
    assert "Resident" in message and "the node it ran on" in message and "died" in message


@ray.remote(num_cpus=0)
class Owner:
    """Owns a large object whose only copy it puts on ``where``."""

    def make_on(self, node_id: str, nbytes: int) -> str:
        import numpy as np

        @ray.remote(num_cpus=0)
        def make(n):
            return np.ones(n, dtype=np.uint8)
        strategy = NodeAffinitySchedulingStrategy(node_id, soft=False)
        self.ref = make.options(scheduling_strategy=strategy).remote(nbytes)
        ray.wait([self.ref], fetch_local=False)
        return self.ref.hex()


def _objects(node) -> int:
    return node.debug_state()["object_store"]["num_objects"]


def test_objects_of_a_dead_owner_are_freed_on_other_nodes(cluster):
    """The owner (an actor on one node) dies: the primary it owned on another node
    can never be read again, and that node frees it rather than keep it for ever."""
    holder = cluster.add_node(num_cpus=1)
    owner = Owner.options(scheduling_strategy=prefer(cluster.head_node)).remote()
    ray.get(owner.make_on.remote(holder.node_id, 8 * 1024 * 1024))
    assert _objects(holder) == 1
    ray.kill(owner)
    wait_for_condition(lambda: _objects(holder) == 0, timeout=15,
                       message="the holder node to free the dead owner's object")


def test_objects_owned_on_a_dead_node_are_freed_on_other_nodes(cluster):
    doomed = cluster.add_node(num_cpus=1)
    holder = cluster.add_node(num_cpus=1)
    owner = Owner.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        doomed.node_id, soft=False)).remote()
    ray.get(owner.make_on.remote(holder.node_id, 8 * 1024 * 1024))
    assert _objects(holder) == 1
    cluster.remove_node(doomed, allow_graceful=False)
    wait_for_condition(lambda: _objects(holder) == 0, timeout=20,
                       message="the holder node to free objects owned on the dead node")


# --- lineage reconstruction ------------------------------------------------------------

MB = 1024 * 1024


@ray.remote(max_retries=2)
def made_on(marker: str, nbytes: int):
    """A large value (so it lives in the store of the node that made it); counts runs."""
    import numpy as np
    with open(marker, "a") as f:
        f.write(ray.get_runtime_context().get_node_id() + "\n")
    return np.arange(nbytes // 8, dtype=np.int64)


@ray.remote(num_cpus=0)
def total(array) -> int:
    return int(array.sum())


def _runs(marker: str) -> list[str]:
    with open(marker) as f:
        return f.read().split()


def _made_then_node_killed(cluster, marker: str, **options):
    """A result made on a new node, then that node killed; returns (ref, node)."""
    doomed = cluster.add_node(num_cpus=1)
    ref = made_on.options(scheduling_strategy=prefer(doomed), **options).remote(
        marker, 4 * MB)
    ray.wait([ref], fetch_local=False, timeout=60)
    assert _runs(marker) == [doomed.node_id]
    cluster.remove_node(doomed, allow_graceful=False)
    wait_for_condition(lambda: alive(doomed) is False, timeout=20,
                       message="the node to be declared dead")
    return ref, doomed


@pytest.mark.parametrize("max_retries", [2, 1])
def test_result_lost_with_its_node_is_rebuilt_for_its_owner(cluster, tmp_path, max_retries):
    """With one retry, the rebuild has one try: it must not be spent on the dead
    node's worker, whose idle lease the owner may still hold when the node dies."""
    marker = str(tmp_path / "runs")
    ref, doomed = _made_then_node_killed(cluster, marker, max_retries=max_retries)
    array = ray.get(ref, timeout=60)
    assert array.nbytes == 4 * MB and int(array[-1]) == 4 * MB // 8 - 1
    runs = _runs(marker)
    assert len(runs) == 2 and runs[1] != doomed.node_id  # made again, elsewhere


def test_result_lost_with_its_node_is_rebuilt_for_a_task_that_reads_it(cluster, tmp_path):
    marker = str(tmp_path / "runs")
    ref, _ = _made_then_node_killed(cluster, marker)
    n = 4 * MB // 8
    # The reader is a borrower: its pull fails, and it asks the owner to rebuild.
    assert ray.get(total.remote(ref), timeout=60) == n * (n - 1) // 2
    assert len(_runs(marker)) == 2


def test_result_of_a_task_without_retries_is_lost_with_a_reason(cluster, tmp_path):
    marker = str(tmp_path / "runs")
    ref, doomed = _made_then_node_killed(cluster, marker, max_retries=0)
    with pytest.raises(ObjectLostError) as info:
        ray.get(ref, timeout=60)
    message = str(info.value)
    assert ref.hex() in message and doomed.node_id[:12] in message
    assert "max_retries=0" in message
    assert len(_runs(marker)) == 1  # not run again
