"""``ember.cluster_utils.Cluster``: several nodes on one machine, as in Ray's tests.

Nodes are added, found alive in the GCS, used by a driver (which sits on the
head node), and removed gracefully or by SIGKILL; shutdown leaves no process.
"""
from __future__ import annotations

import pytest

import ember
from ember import worker
from ember.cluster_utils import Cluster
from ember.protocol.common import Address
from ember.protocol.gcs import GetAllNodesReply, NodeInfo
from ember.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from helpers import ember_processes, wait_for_condition


@pytest.fixture
def cluster(temp_root):
    ember.shutdown()  # no cluster of another test module may be running as our driver
    cluster = Cluster()
    yield cluster
    cluster.shutdown()


def alive_nodes() -> dict[str, bool]:
    return {n["NodeID"]: n["Alive"] for n in ember.nodes()}


def test_add_wait_use_and_remove_nodes(cluster, temp_root):
    head = cluster.add_node(num_cpus=1)
    second = cluster.add_node(num_cpus=1, resources={"second": 1})
    third = cluster.add_node(num_cpus=1, labels={"zone": "c"})
    cluster.wait_for_nodes()
    assert cluster.list_all_nodes() == [head, second, third]
    assert head.is_head and not second.is_head
    assert cluster.address == head.address
    assert len({n.node_id for n in cluster.list_all_nodes()}) == 3
    assert second.unique_id == second.node_id
    # Every node shares the head's session directory.
    assert {n.session_dir for n in cluster.list_all_nodes()} == {head.session_dir}

    ember.init(address=cluster.address)
    assert alive_nodes() == {head.node_id: True, second.node_id: True, third.node_id: True}
    assert ember.cluster_resources()["CPU"] == 3
    assert ember.cluster_resources()["second"] == 1
    # The driver is on the head node.
    assert ember.get_runtime_context().get_node_id() == head.node_id

    @ember.remote(num_cpus=0)
    def where():
        return ember.get_runtime_context().get_node_id()
    for node in (second, third):
        strategy = NodeAffinitySchedulingStrategy(node.node_id, soft=False)
        assert ember.get(where.options(scheduling_strategy=strategy).remote()) == node.node_id
    assert ember.get(where.options(resources={"second": 1}).remote()) == second.node_id

    cluster.remove_node(second)  # graceful
    cluster.remove_node(third, allow_graceful=False)  # a node failure
    assert not second.all_processes_alive() and not third.all_processes_alive()
    cluster.wait_for_nodes()
    assert cluster.list_all_nodes() == [head]
    wait_for_condition(lambda: alive_nodes() == {head.node_id: True, second.node_id: False,
                                                 third.node_id: False},
                       message="the removed nodes to be dead")
    assert ember.cluster_resources()["CPU"] == 1

    # A node added later joins the same cluster.
    fourth = cluster.add_node(num_cpus=2)
    assert alive_nodes()[fourth.node_id] is True
    cluster.shutdown()
    assert not ember.is_initialized()  # its driver went with it
    wait_for_condition(lambda: not ember_processes(head.session_dir), timeout=15,
                       message="every process of the cluster to exit")


def test_initialize_head_and_connect(temp_root):
    ember.shutdown()
    cluster = Cluster(initialize_head=True, connect=True, head_node_args={"num_cpus": 1})
    try:
        assert ember.is_initialized()
        assert ember.get_runtime_context().get_node_id() == cluster.head_node.node_id
        assert ember.get(ember.put(41)) == 41
    finally:
        cluster.shutdown()
    assert not ember.is_initialized()
    assert cluster.list_all_nodes() == []


def test_add_node_rejects_unknown_arguments(cluster):
    with pytest.raises(TypeError, match="unsupported argument.*'no_such_option'"):
        cluster.add_node(no_such_option=1)
    with pytest.raises(RuntimeError, match="no head node"):
        cluster.address
    with pytest.raises(ValueError, match="not a node of this cluster"):
        other = Cluster(shutdown_at_exit=False)
        node = other.add_node(num_cpus=0)
        try:
            cluster.remove_node(node)
        finally:
            other.shutdown()


def test_driver_prefers_the_head_raylet(monkeypatch, tmp_path):
    """With several raylet sockets on this machine, a driver picks the head's."""
    def info(name: str, is_head: bool, start_time: float) -> NodeInfo:
        sock = tmp_path / name
        sock.write_text("")
        return NodeInfo(node_id=name.encode(), ip="127.0.0.1", hostname="h",
                        raylet=Address(name.encode(), "127.0.0.1", 1, str(sock)),
                        resources_total={}, is_head=is_head, start_time=start_time)
    nodes = [info("worker-a", False, 1.0), info("head", True, 2.0), info("worker-b", False, 0.5)]
    monkeypatch.setattr(worker.node_mod, "query_nodes",
                        lambda address, timeout=10: GetAllNodesReply(nodes, {}))
    assert worker._find_local_node("127.0.0.1:1").node_id == b"head"
    nodes.pop(1)  # no head here: the oldest node
    assert worker._find_local_node("127.0.0.1:1").node_id == b"worker-b"
