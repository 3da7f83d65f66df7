"""Node affinity (``raylet/policies/node_affinity.py``): the named node, hard or soft."""
import pytest

from ember.protocol.common import NodeAffinityScheduling
from ember.raylet.policies import node_affinity

from policy_views import busy, cpu, make_view, node_id


def pick(view, request, target: int, soft: bool = False):
    return node_affinity.pick(view, request, NodeAffinityScheduling(node_id(target), soft))


@pytest.mark.parametrize("soft", [False, True])
def test_node_affinity_to_a_live_node(soft):
    assert pick(make_view(1, 1), cpu(1), 1, soft).node_id == node_id(1)


def test_hard_affinity_to_a_busy_node_still_goes_there():
    view = make_view(1, 1)
    busy(view, 1, 1)
    assert pick(view, cpu(1), 1).node_id == node_id(1)


def test_soft_affinity_to_a_busy_node_falls_back_to_default():
    view = make_view(1, 1)
    busy(view, 1, 1)
    assert pick(view, cpu(1), 1, soft=True).node_id == node_id(0)


def test_hard_affinity_to_a_dead_or_unknown_node_is_unschedulable():
    view = make_view(1, 1)
    view.nodes[node_id(1)].alive = False
    dead = pick(view, cpu(1), 1)
    assert dead.node_id is None and dead.unschedulable == f"node {node_id(1).hex()} is dead"
    assert pick(view, cpu(1), 9).unschedulable == f"node {node_id(9).hex()} does not exist"


def test_hard_affinity_to_a_node_too_small_is_unschedulable():
    decision = pick(make_view(4, 1), cpu(2), 1)
    assert decision.unschedulable == f"node {node_id(1).hex()} can never fit the request"


@pytest.mark.parametrize("alive", [False, True])
def test_soft_affinity_to_a_dead_or_too_small_node_places_as_default(alive):
    view = make_view(4, 1)
    view.nodes[node_id(1)].alive = alive
    assert pick(view, cpu(2), 1, soft=True).node_id == node_id(0)


def test_the_named_node_is_where_the_gcs_asks_first_and_data_never_decides():
    strategy = NodeAffinityScheduling(node_id(3), soft=True)
    assert node_affinity.named_node(strategy) == node_id(3)
    assert not node_affinity.FOLLOWS_DATA
