"""Node labels (``raylet/policies/node_label.py``): hard, soft and fallback constraints."""
import pytest

from ember.label_selector import constraints
from ember.protocol.common import NodeLabelScheduling
from ember.raylet.policies import node_label

from policy_views import busy, cpu, make_view, node_id

ZONES = {1: {"zone": "a"}, 2: {"zone": "b"}}


def pick(view, request, **labels):
    return node_label.pick(view, request, NodeLabelScheduling(**labels))


def test_node_labels_filter_and_prefer():
    view = make_view(1, 1, 1, labels=ZONES)
    assert pick(view, cpu(1), hard_labels={"zone": ("in", ["b"])}).node_id == node_id(2)
    assert pick(view, cpu(1), soft_labels={"zone": ("in", ["a"])}).node_id == node_id(1)
    assert pick(view, cpu(1), hard_labels={"zone": ("in", ["c"])}).infeasible


def test_soft_labels_yield_when_no_preferred_node_has_room_now():
    view = make_view(1, 1, 1, labels=ZONES)
    busy(view, 1, 1)
    assert pick(view, cpu(1), soft_labels={"zone": ("in", ["a"])}).node_id == node_id(0)


def test_a_fallback_selector_is_used_only_when_no_node_could_meet_the_first():
    view = make_view(1, 1, 1, labels=ZONES)
    fallback = pick(view, cpu(1), hard_labels=constraints({"zone": "c"}),
                    fallback_labels=[constraints({"zone": "in(b, d)"})])
    assert fallback.node_id == node_id(2)
    first_fits = pick(view, cpu(1), hard_labels=constraints({"zone": "!b"}),
                      fallback_labels=[constraints({"zone": "b"})])
    assert first_fits.node_id in {node_id(0), node_id(1)}


def test_a_fallback_is_taken_when_the_matching_nodes_are_too_small():
    view = make_view(4, 1, 4, labels=ZONES)
    decision = pick(view, cpu(2), hard_labels=constraints({"zone": "a"}),
                    fallback_labels=[constraints({"zone": "b"})])
    assert decision.node_id == node_id(2)


@pytest.mark.parametrize("op,values,expected", [
    ("in", ["a"], True), ("in", ["b"], False),
    ("not_in", ["a"], False), ("not_in", ["b"], True),
    ("exists", [], True), ("does_not_exist", [], False),
])
def test_each_operator_on_a_present_label(op, values, expected):
    assert node_label.labels_match({"zone": "a"}, {"zone": (op, values)}) is expected


@pytest.mark.parametrize("op,expected", [
    ("in", False), ("not_in", True), ("exists", False), ("does_not_exist", True)])
def test_each_operator_on_an_absent_label(op, expected):
    assert node_label.labels_match({}, {"zone": (op, ["a"])}) is expected


def test_data_never_decides_and_no_node_is_named():
    assert not node_label.FOLLOWS_DATA
    assert node_label.named_node(NodeLabelScheduling()) is None
