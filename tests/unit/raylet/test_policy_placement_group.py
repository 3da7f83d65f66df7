"""Placement-group bundles (``raylet/policies/placement_group.py``): the bundle's node."""
from ember.placement_group import group_resources
from ember.protocol.common import PlacementGroupScheduling
from ember.raylet.cluster_view import NodeView
from ember.raylet.policies import placement_group
from ember.raylet.resources import NodeResources, fixed_request

from policy_views import make_view, node_id

GROUP = b"g" * 18


def with_bundle(view, i: int, index: int, cpus: float) -> None:
    """Node i holds bundle ``index`` of GROUP (as a committed bundle adds resources)."""
    names = group_resources({"CPU": cpus}, GROUP, index)
    names.update(group_resources({"CPU": cpus}, GROUP, -1))
    node = view.nodes[node_id(i)]
    total = dict(node.resources.as_floats("total"), **names)
    view.nodes[node_id(i)] = NodeView(node.node_id, NodeResources(total), node.labels)


def pick(view, cpus: float, index: int):
    strategy = PlacementGroupScheduling(GROUP, index)
    request = fixed_request(group_resources({"CPU": cpus}, GROUP, index))
    return placement_group.pick(view, request, strategy)


def test_a_task_goes_to_the_node_holding_its_bundle():
    view = make_view(4, 4, 4)
    with_bundle(view, 1, 0, 1)
    with_bundle(view, 2, 1, 1)
    assert pick(view, 1, 0).node_id == node_id(1)
    assert pick(view, 1, 1).node_id == node_id(2)


def test_any_bundle_prefers_the_local_one():
    view = make_view(4, 4)
    with_bundle(view, 0, 0, 1)
    with_bundle(view, 1, 1, 1)
    assert pick(view, 1, -1).node_id == node_id(0)


def test_more_than_the_bundle_holds_is_infeasible():
    view = make_view(4, 4)
    with_bundle(view, 1, 0, 1)
    assert pick(view, 2, 0).infeasible


def test_data_never_decides_and_no_node_is_named():
    assert not placement_group.FOLLOWS_DATA
    assert placement_group.named_node(PlacementGroupScheduling(GROUP)) is None
