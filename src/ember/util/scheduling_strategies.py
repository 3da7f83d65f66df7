"""Scheduling strategy objects, as in ``ray.util.scheduling_strategies``."""
from __future__ import annotations

from ..protocol.common import SchedulingStrategy

DEFAULT = "DEFAULT"
SPREAD = "SPREAD"


class NodeAffinitySchedulingStrategy:
    """Run on the node with ``node_id`` (hex); if ``soft``, elsewhere when it cannot."""

    def __init__(self, node_id: str, soft: bool, _spill_on_unavailable: bool = False,
                 _fail_on_unavailable: bool = False):
        if not isinstance(node_id, str):
            raise TypeError(f"node_id must be a hex string, got {type(node_id).__name__}.")
        try:
            self._node_bytes = bytes.fromhex(node_id)
        except ValueError:
            raise ValueError(f"node_id {node_id!r} is not a hex node id.") from None
        self.node_id = node_id
        self.soft = soft

    def to_wire(self) -> SchedulingStrategy:
        return SchedulingStrategy(kind="NODE_AFFINITY", node_id=self._node_bytes,
                                  soft=self.soft)


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

    def to_wire(self) -> SchedulingStrategy:
        def conv(d):
            return {k: (v.op, v.values) for k, v in d.items()}
        return SchedulingStrategy(kind="NODE_LABEL", hard_labels=conv(self.hard),
                                  soft_labels=conv(self.soft))
