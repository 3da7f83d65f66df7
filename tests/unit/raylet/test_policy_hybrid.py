"""DEFAULT scheduling (``raylet/policies/hybrid.py``): local first, then least loaded."""
import random

from ember.protocol.common import DefaultScheduling
from ember.raylet.policies import hybrid

from policy_views import busy, cpu, make_view, node_id

DEFAULT = DefaultScheduling()


def pick(view, request):
    return hybrid.pick(view, request, DEFAULT)


def test_local_node_is_kept_while_below_the_spread_threshold():
    view = make_view(4, 4, 4)
    assert pick(view, cpu(1)).node_id == node_id(0)


def test_local_node_is_left_once_past_the_spread_threshold():
    view = make_view(4, 4)
    busy(view, 0, 2)     # 50%: not below the threshold any more
    assert pick(view, cpu(1)).node_id == node_id(1)


def test_a_full_local_node_spills_to_a_free_node():
    view = make_view(1, 1, 1)
    busy(view, 0, 1)
    assert pick(view, cpu(1)).node_id in {node_id(1), node_id(2)}


def test_promised_requests_spread_a_burst_over_every_free_node():
    """The raylet counts what it spilled; a burst then reaches every node, once each."""
    for seed in range(20):
        view = make_view(1, 1, 1, 1, seed=seed)
        busy(view, 0, 1)
        chosen = []
        for _ in range(3):
            target = pick(view, cpu(1)).node_id
            view.promise(target, cpu(1), now=0.0)
            chosen.append(target)
        assert sorted(chosen) == [node_id(1), node_id(2), node_id(3)]
        # Nothing is free now: the request waits on the local node.
        assert pick(view, cpu(1)).node_id == node_id(0)


def test_ties_between_remote_nodes_are_broken_at_random():
    picks = set()
    for seed in range(40):
        view = make_view(1, 1, 1, 1, seed=seed)
        busy(view, 0, 1)
        picks.add(pick(view, cpu(1)).node_id)
    assert picks == {node_id(1), node_id(2), node_id(3)}


def test_least_utilised_node_wins_over_random_choice():
    view = make_view(1, 4, 4)
    busy(view, 0, 1)
    busy(view, 1, 3)
    for seed in range(10):
        view.rng = random.Random(seed)
        assert pick(view, cpu(1)).node_id == node_id(2)


def test_local_node_wins_a_tie():
    view = make_view(2, 2, 2)
    for i in range(3):
        busy(view, i, 1.5)   # every node at 75%: above the threshold, all tied
    assert pick(view, cpu(0.5)).node_id == node_id(0)


def test_request_no_node_can_ever_hold_is_infeasible():
    decision = pick(make_view(1, 2), cpu(3))
    assert decision.node_id is None and decision.infeasible


def test_request_that_fits_only_when_busy_nodes_free_up_waits_where_it_fits():
    view = make_view(1, 2)
    busy(view, 1, 1)
    # Only node 1 could ever hold 2 CPUs; it is busy now, so the request queues there.
    assert pick(view, cpu(2)).node_id == node_id(1)


def test_a_request_that_fits_nowhere_now_waits_on_the_local_node_if_it_could_fit_there():
    view = make_view(2, 2)
    busy(view, 0, 2)
    busy(view, 1, 1)
    assert pick(view, cpu(2)).node_id == node_id(0)


def test_dead_nodes_are_never_picked():
    for seed in range(10):
        view = make_view(1, 1, 1, seed=seed)
        busy(view, 0, 1)
        view.nodes[node_id(1)].alive = False
        assert pick(view, cpu(1)).node_id == node_id(2)


def test_place_chooses_only_among_the_given_candidates():
    view = make_view(4, 4, 4)
    candidates = [view.nodes[node_id(2)]]
    assert hybrid.place(view, candidates, cpu(1)).node_id == node_id(2)
    assert hybrid.place(view, [], cpu(1)).infeasible


def test_data_may_decide_and_no_node_is_named():
    assert hybrid.FOLLOWS_DATA and hybrid.named_node(DEFAULT) is None
