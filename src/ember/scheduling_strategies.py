"""Scheduling strategy objects, as in ``ray.util.scheduling_strategies``."""
from __future__ import annotations

from .protocol.common import (NodeAffinityScheduling, NodeLabelScheduling,
                              PlacementGroupScheduling)
from .placement_group import PlacementGroup

DEFAULT = "DEFAULT"
SPREAD = "SPREAD"


class NodeAffinitySchedulingStrategy:
    """Run on the node with ``node_id`` (hex); if ``soft``, elsewhere when it cannot."""

    def __init__(self, node_id: str, soft: bool, _spill_on_unavailable: bool = False,
                 _fail_on_unavailable: bool = False):
        if not isinstance(node_id, str) and callable(getattr(node_id, "hex", None)):
            node_id = node_id.hex()  # a NodeID (runtime_context.node_id), as Ray accepts
        if not isinstance(node_id, str):
            raise TypeError(f"node_id must be a hex string or a NodeID, got "
                            f"{type(node_id).__name__}.")
        try:
            self._node_bytes = bytes.fromhex(node_id)
        except ValueError:
            raise ValueError(f"node_id {node_id!r} is not a hex node id.") from None
        self.node_id = node_id
        self.soft = soft

    def to_wire(self) -> NodeAffinityScheduling:
        return NodeAffinityScheduling(self._node_bytes, soft=bool(self.soft))


class In:
    def __init__(self, *values: str):
        self.values = list(values)
        self.op = "in"


class NotIn:
    def __init__(self, *values: str):
        self.values = list(values)
        self.op = "not_in"


class Exists:
    def __init__(self):
        self.values = []
        self.op = "exists"


class DoesNotExist:
    def __init__(self):
        self.values = []
        self.op = "does_not_exist"


class NodeLabelSchedulingStrategy:
    """Run on nodes whose labels match ``hard``; prefer those matching ``soft``."""

    def __init__(self, hard: dict, *, soft: dict | None = None):
        self.hard = hard
        self.soft = soft or {}

    def to_wire(self) -> NodeLabelScheduling:
        def conv(d):
            return {k: (v.op, v.values) for k, v in d.items()}
        return NodeLabelScheduling(conv(self.hard), conv(self.soft))


class PlacementGroupSchedulingStrategy:
    """Run in a placement group's bundle (any bundle when the index is -1)."""

    def __init__(self, placement_group, placement_group_bundle_index: int = -1,
                 placement_group_capture_child_tasks: bool | None = None):
        if not isinstance(placement_group, PlacementGroup):
            raise TypeError("PlacementGroupSchedulingStrategy needs a PlacementGroup, got "
                            f"{type(placement_group).__name__}.")
        if not isinstance(placement_group_bundle_index, int) or \
                placement_group_bundle_index < -1:
            raise ValueError("placement_group_bundle_index must be -1 or a bundle index, "
                             f"got {placement_group_bundle_index!r}.")
        if placement_group.bundle_cache is not None and \
                placement_group_bundle_index >= len(placement_group.bundle_cache):
            raise ValueError(
                f"placement_group_bundle_index {placement_group_bundle_index} is out of "
                f"range: the group has {len(placement_group.bundle_cache)} bundle(s).")
        self.placement_group = placement_group
        self.placement_group_bundle_index = placement_group_bundle_index
        self.placement_group_capture_child_tasks = placement_group_capture_child_tasks

    def to_wire(self) -> PlacementGroupScheduling:
        return PlacementGroupScheduling(
            self.placement_group.id.binary(), self.placement_group_bundle_index,
            bool(self.placement_group_capture_child_tasks))
