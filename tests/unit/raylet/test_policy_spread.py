"""SPREAD scheduling (``raylet/policies/spread.py``): rotate over the nodes that fit now."""
from ember.protocol.common import SpreadScheduling
from ember.raylet.policies import spread

from policy_views import busy, cpu, make_view, node_id

SPREAD = SpreadScheduling()


def pick(view, request):
    return spread.pick(view, request, SPREAD)


def test_spread_rotates_over_ready_nodes():
    view = make_view(2, 2, 2)
    picks = [pick(view, cpu(1)).node_id for _ in range(6)]
    assert sorted(picks) == sorted([node_id(i) for i in range(3)] * 2)


def test_the_local_node_has_no_preference():
    view = make_view(4, 4, 4)
    assert [pick(view, cpu(1)).node_id for _ in range(3)] == [node_id(i) for i in range(3)]


def test_busy_and_dead_nodes_are_skipped():
    view = make_view(1, 1, 1, 1)
    busy(view, 1, 1)
    view.nodes[node_id(2)].alive = False
    picks = {pick(view, cpu(1)).node_id for _ in range(4)}
    assert picks == {node_id(0), node_id(3)}


def test_when_nothing_fits_now_it_waits_on_the_least_loaded_node_that_could():
    view = make_view(2, 2, 1)
    busy(view, 0, 2)
    busy(view, 1, 1)
    assert pick(view, cpu(2)).node_id == node_id(1)


def test_a_request_no_node_can_ever_hold_is_infeasible():
    assert pick(make_view(1, 1), cpu(2)).infeasible


def test_data_may_decide_and_no_node_is_named():
    assert spread.FOLLOWS_DATA and spread.named_node(SPREAD) is None
