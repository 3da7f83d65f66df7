"""The scheduling policies as one: dispatch by strategy type, and what every policy keeps.

Each policy has its own tests (``test_policy_<module>.py``). These check that
every strategy of the wire union reaches its policy, from the raylet, the
owner and the GCS alike, that the user's strategy objects become the structs
the policies serve, and, over random clusters, the invariants no policy may
break.
"""
import random
import typing

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ember.raylet.policies as policies
from ember.label_selector import constraints
from ember.protocol.common import (DefaultScheduling, NodeAffinityScheduling,
                                   NodeLabelScheduling, PlacementGroupScheduling,
                                   SchedulingStrategy, SpreadScheduling)
from ember.raylet.cluster_view import ClusterView, NodeView
from ember.raylet.policies import (follows_data, hybrid, named_node, node_affinity, node_label,
                                   pick_node, placement_group, spread)
from ember.raylet.resources import NodeResources, fixed_request
from ember.scheduling_strategies import (In, NodeAffinitySchedulingStrategy,
                                         NodeLabelSchedulingStrategy)

from policy_views import THRESHOLD, cpu, make_view, node_id

EXAMPLES = [
    DefaultScheduling(), SpreadScheduling(), NodeAffinityScheduling(node_id(1), soft=True),
    PlacementGroupScheduling(b"g" * 18, 0, True),
    NodeLabelScheduling({"zone": ("in", ["a"])}, {}, [constraints({"zone": "b"})]),
]


def test_every_strategy_of_the_union_has_exactly_its_policy():
    assert set(policies.POLICIES) == set(typing.get_args(SchedulingStrategy))
    assert policies.POLICIES == {DefaultScheduling: hybrid, SpreadScheduling: spread,
                                 NodeAffinityScheduling: node_affinity,
                                 NodeLabelScheduling: node_label,
                                 PlacementGroupScheduling: placement_group}


@pytest.mark.parametrize("strategy", EXAMPLES, ids=lambda s: type(s).__name__)
def test_pick_node_asks_the_policy_of_the_strategys_type(strategy, monkeypatch):
    seen = []
    policy = policies.POLICIES[type(strategy)]
    monkeypatch.setattr(policy, "pick", lambda view, request, s: seen.append(s) or "decision")
    assert pick_node(make_view(1), cpu(1), strategy) == "decision" and seen == [strategy]


@pytest.mark.parametrize("strategy", EXAMPLES, ids=lambda s: type(s).__name__)
def test_a_strategy_crosses_the_wire_as_its_own_type(strategy):
    """The owner keys its queues by the encoding; the raylet dispatches on the type."""
    encoded = msgspec.msgpack.encode(strategy)
    decoded = msgspec.msgpack.decode(encoded, type=SchedulingStrategy)
    assert type(decoded) is type(strategy) and msgspec.msgpack.encode(decoded) == encoded


def test_owner_locality_and_gcs_placement_follow_the_policies():
    assert [follows_data(s) for s in EXAMPLES] == [True, True, False, False, False]
    assert [named_node(s) for s in EXAMPLES] == [None, None, node_id(1), None, None]


def test_the_users_strategy_objects_become_the_structs_the_policies_serve():
    affinity = NodeAffinitySchedulingStrategy(node_id(1).hex(), soft=False).to_wire()
    assert affinity == NodeAffinityScheduling(node_id(1), soft=False)
    labels = NodeLabelSchedulingStrategy({"zone": In("a")}, soft={"gpu": In("x")}).to_wire()
    assert labels == NodeLabelScheduling({"zone": ("in", ["a"])}, {"gpu": ("in", ["x"])})


def test_discovery_refuses_a_union_member_without_a_policy(monkeypatch):
    monkeypatch.setattr(node_label, "STRATEGY", None)
    with pytest.raises(ImportError, match="no scheduling policy serves NodeLabelScheduling"):
        policies._discover()


def test_discovery_refuses_two_policies_for_one_strategy(monkeypatch):
    monkeypatch.setattr(node_label, "STRATEGY", DefaultScheduling)
    with pytest.raises(ImportError, match="two scheduling policies serve DefaultScheduling"):
        policies._discover()


# --- invariants over random clusters ------------------------------------------------

ZONES = ["a", "b", "c"]


@st.composite
def clusters(draw):
    """A view of 1-6 nodes (node 0 local) with random totals, load, zones and deaths."""
    view = ClusterView(node_id(0), rng=random.Random(draw(st.integers(0, 99))),
                       spread_threshold=THRESHOLD)
    for i in range(draw(st.integers(1, 6))):
        total = draw(st.sampled_from([0.5, 1, 2, 4]))
        resources = NodeResources({"CPU": total})
        resources.allocate(cpu(draw(st.sampled_from([0, 0.5, 1, 2, 4])) * total / 4))
        view.nodes[node_id(i)] = NodeView(node_id(i), resources,
                                          {"zone": draw(st.sampled_from(ZONES))},
                                          alive=i == 0 or draw(st.booleans()))
    return view


def strategies_for(view):
    ids = st.integers(0, len(view.nodes)).map(node_id)
    zones = st.sampled_from(ZONES).map(lambda z: {"zone": ("in", [z])})
    return st.one_of(
        st.just(DefaultScheduling()), st.just(SpreadScheduling()),
        st.builds(NodeAffinityScheduling, ids, st.booleans()),
        st.builds(NodeLabelScheduling, zones, st.one_of(st.just({}), zones),
                  st.lists(zones, max_size=2)))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_no_policy_picks_a_dead_node_or_one_that_can_never_hold_the_request(data):
    view = data.draw(clusters())
    strategy = data.draw(strategies_for(view))
    request = fixed_request({"CPU": data.draw(st.sampled_from([0.5, 1, 2, 3]))})
    decision = pick_node(view, request, strategy)
    chosen = [decision.node_id is not None, decision.infeasible, bool(decision.unschedulable)]
    assert chosen.count(True) == 1, decision
    if decision.node_id is not None:
        node = view.nodes[decision.node_id]
        assert node.alive and node.resources.is_feasible(request)
    if decision.infeasible:   # only a hard restriction or the request's size explains it
        assert isinstance(strategy, NodeLabelScheduling) or not any(
            n.resources.is_feasible(request) for n in view.alive())


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_free_local_node_below_the_threshold_keeps_default_work(data):
    view = data.draw(clusters())
    request = cpu(0.5)
    local = view.nodes[node_id(0)].resources
    if local.can_allocate(request) and local.utilization() < THRESHOLD:
        assert pick_node(view, request, DefaultScheduling()).node_id == node_id(0)
