"""Node affinity: run on the named node; if ``soft``, elsewhere when it cannot.

Hard affinity waits on the named node while it is alive and could ever hold
the request, and fails the request (``unschedulable``) when it is dead,
unknown or too small: waiting for it would never end. Soft affinity takes the
named node only when the request fits there now, and otherwise places it as
DEFAULT does (Ray's ``soft=True``).

The named node is also where the GCS sends an actor's lease request first,
rather than the owner's node; an owner's data never overrides the choice.
"""
from __future__ import annotations

from ...protocol.common import NodeAffinityScheduling
from ..cluster_view import ClusterView, Decision
from .hybrid import place

STRATEGY = NodeAffinityScheduling
FOLLOWS_DATA = False


def pick(view: ClusterView, request: dict[str, int],
         strategy: NodeAffinityScheduling) -> Decision:
    target = view.nodes.get(strategy.node_id)
    if target is not None and target.alive and target.resources.is_feasible(request):
        if not strategy.soft or target.resources.can_allocate(request):
            return Decision(target.node_id)
    if not strategy.soft:
        why = ("is dead" if target is not None and not target.alive else
               "does not exist" if target is None else "can never fit the request")
        return Decision(None, unschedulable=f"node {strategy.node_id.hex()} {why}")
    return place(view, view.alive(), request)


def named_node(strategy: NodeAffinityScheduling) -> bytes:
    return strategy.node_id
