"""The cluster scheduler's node-picking policy, with no processes.

``pick_node`` is a pure function of (view, request, strategy, threshold); these
tests build views by hand and check the decisions users rely on.
"""
import random

import pytest

from ember.protocol.common import SchedulingStrategy
from ember.raylet.resources import NodeResources, fixed_request
from ember.raylet.scheduler import ClusterView, NodeView, pick_node

DEFAULT = SchedulingStrategy()
SPREAD = SchedulingStrategy("SPREAD")
THRESHOLD = 0.5


def node_id(i: int) -> bytes:
    return bytes([i]) * 28


def make_view(*cpus: float, seed: int = 0, labels=None) -> ClusterView:
    """Node 0 is the local node; node i has cpus[i] CPUs, all free."""
    view = ClusterView(node_id(0), rng=random.Random(seed))
    for i, n in enumerate(cpus):
        view.nodes[node_id(i)] = NodeView(node_id(i), NodeResources({"CPU": n}),
                                          (labels or {}).get(i, {}))
    return view


def cpu(n: float) -> dict[str, int]:
    return fixed_request({"CPU": n})


def busy(view: ClusterView, i: int, n: float) -> None:
    assert view.nodes[node_id(i)].resources.allocate(cpu(n)) is not None


def test_local_node_is_kept_while_below_the_spread_threshold():
    view = make_view(4, 4, 4)
    assert pick_node(view, cpu(1), DEFAULT, THRESHOLD).node_id == node_id(0)


def test_a_full_local_node_spills_to_a_free_node():
    view = make_view(1, 1, 1)
    busy(view, 0, 1)
    assert pick_node(view, cpu(1), DEFAULT, THRESHOLD).node_id in {node_id(1), node_id(2)}


def test_promised_requests_spread_a_burst_over_every_free_node():
    """The raylet counts what it spilled; a burst then reaches every node, once each."""
    for seed in range(20):
        view = make_view(1, 1, 1, 1, seed=seed)
        busy(view, 0, 1)
        chosen = []
        for _ in range(3):
            target = pick_node(view, cpu(1), DEFAULT, THRESHOLD).node_id
            view.promise(target, cpu(1), now=0.0)
            chosen.append(target)
        assert sorted(chosen) == [node_id(1), node_id(2), node_id(3)]
        # Nothing is free now: the request waits on the local node.
        assert pick_node(view, cpu(1), DEFAULT, THRESHOLD).node_id == node_id(0)


def test_ties_between_remote_nodes_are_broken_at_random():
    picks = set()
    for seed in range(40):
        view = make_view(1, 1, 1, 1, seed=seed)
        busy(view, 0, 1)
        picks.add(pick_node(view, cpu(1), DEFAULT, THRESHOLD).node_id)
    assert picks == {node_id(1), node_id(2), node_id(3)}


def test_least_utilised_node_wins_over_random_choice():
    view = make_view(1, 4, 4)
    busy(view, 0, 1)
    busy(view, 1, 3)
    for seed in range(10):
        view.rng = random.Random(seed)
        assert pick_node(view, cpu(1), DEFAULT, THRESHOLD).node_id == node_id(2)


def test_local_node_wins_a_tie():
    view = make_view(2, 2, 2)
    for i in range(3):
        busy(view, i, 1.5)   # every node at 75%: above the threshold, all tied
    assert pick_node(view, cpu(0.5), DEFAULT, THRESHOLD).node_id == node_id(0)


def test_promise_never_drives_availability_below_zero():
    view = make_view(1, 1)
    view.promise(node_id(1), cpu(1), now=0.0)
    view.promise(node_id(1), cpu(1), now=0.0)
    assert view.nodes[node_id(1)].resources.available["CPU"] == 0
    view.promise(b"unknown", cpu(1), now=0.0)  # a node the view does not have: ignored


def test_a_promise_no_report_confirms_is_forgotten():
    """A spilled request the node never got (refused, owner gone) frees the node again."""
    view = make_view(1, 1)
    busy(view, 0, 1)
    view.promise(node_id(1), cpu(1), now=10.0)
    view.expire_promises(now=10.5, ttl=1.0)
    assert pick_node(view, cpu(1), DEFAULT, THRESHOLD).node_id == node_id(0)  # waits
    view.expire_promises(now=11.5, ttl=1.0)
    assert pick_node(view, cpu(1), DEFAULT, THRESHOLD).node_id == node_id(1)


def test_a_report_replaces_promises_and_later_expiry_keeps_it():
    view = make_view(2, 2)
    node = view.nodes[node_id(1)]
    view.promise(node_id(1), cpu(1), now=0.0)
    node.report(cpu(0.5))       # the node's own count: it took the request and more
    view.expire_promises(now=5.0, ttl=1.0)
    assert node.resources.available == cpu(0.5)


def test_request_no_node_can_ever_hold_is_infeasible():
    decision = pick_node(make_view(1, 2), cpu(3), DEFAULT, THRESHOLD)
    assert decision.node_id is None and decision.infeasible


def test_request_that_fits_only_when_busy_nodes_free_up_waits_where_it_fits():
    view = make_view(1, 2)
    busy(view, 1, 1)
    # Only node 1 could ever hold 2 CPUs; it is busy now, so the request queues there.
    assert pick_node(view, cpu(2), DEFAULT, THRESHOLD).node_id == node_id(1)


def test_spread_rotates_over_ready_nodes():
    view = make_view(2, 2, 2)
    picks = [pick_node(view, cpu(1), SPREAD, THRESHOLD).node_id for _ in range(6)]
    assert sorted(picks) == sorted([node_id(i) for i in range(3)] * 2)


@pytest.mark.parametrize("soft", [False, True])
def test_node_affinity_to_a_live_node(soft):
    view = make_view(1, 1)
    strategy = SchedulingStrategy("NODE_AFFINITY", node_id=node_id(1), soft=soft)
    assert pick_node(view, cpu(1), strategy, THRESHOLD).node_id == node_id(1)


def test_hard_affinity_to_a_busy_node_still_goes_there():
    view = make_view(1, 1)
    busy(view, 1, 1)
    strategy = SchedulingStrategy("NODE_AFFINITY", node_id=node_id(1))
    assert pick_node(view, cpu(1), strategy, THRESHOLD).node_id == node_id(1)


def test_soft_affinity_to_a_busy_node_falls_back_to_default():
    view = make_view(1, 1)
    busy(view, 1, 1)
    strategy = SchedulingStrategy("NODE_AFFINITY", node_id=node_id(1), soft=True)
    assert pick_node(view, cpu(1), strategy, THRESHOLD).node_id == node_id(0)


def test_hard_affinity_to_a_dead_or_unknown_node_is_unschedulable():
    view = make_view(1, 1)
    view.nodes[node_id(1)].alive = False
    dead = pick_node(view, cpu(1),
                     SchedulingStrategy("NODE_AFFINITY", node_id=node_id(1)), THRESHOLD)
    assert dead.node_id is None and "is dead" in dead.unschedulable
    unknown = pick_node(view, cpu(1),
                        SchedulingStrategy("NODE_AFFINITY", node_id=node_id(9)), THRESHOLD)
    assert "does not exist" in unknown.unschedulable


def test_node_labels_filter_and_prefer():
    view = make_view(1, 1, 1, labels={1: {"zone": "a"}, 2: {"zone": "b"}})
    hard = SchedulingStrategy("NODE_LABEL", hard_labels={"zone": ("in", ["b"])})
    assert pick_node(view, cpu(1), hard, THRESHOLD).node_id == node_id(2)
    soft = SchedulingStrategy("NODE_LABEL", soft_labels={"zone": ("in", ["a"])})
    assert pick_node(view, cpu(1), soft, THRESHOLD).node_id == node_id(1)
    none = SchedulingStrategy("NODE_LABEL", hard_labels={"zone": ("in", ["c"])})
    assert pick_node(view, cpu(1), none, THRESHOLD).infeasible


def test_dead_nodes_are_never_picked():
    for seed in range(10):
        view = make_view(1, 1, 1, seed=seed)
        busy(view, 0, 1)
        view.nodes[node_id(1)].alive = False
        assert pick_node(view, cpu(1), DEFAULT, THRESHOLD).node_id == node_id(2)


def test_a_fallback_selector_is_used_only_when_no_node_could_meet_the_first():
    from ember.label_selector import constraints
    view = make_view(1, 1, 1, labels={1: {"zone": "a"}, 2: {"zone": "b"}})
    strategy = SchedulingStrategy("NODE_LABEL", hard_labels=constraints({"zone": "c"}),
                                  fallback_labels=[constraints({"zone": "in(b, d)"})])
    assert pick_node(view, cpu(1), strategy, THRESHOLD).node_id == node_id(2)
    first_fits = SchedulingStrategy("NODE_LABEL", hard_labels=constraints({"zone": "!b"}),
                                    fallback_labels=[constraints({"zone": "b"})])
    assert pick_node(view, cpu(1), first_fits, THRESHOLD).node_id in {node_id(0), node_id(1)}
