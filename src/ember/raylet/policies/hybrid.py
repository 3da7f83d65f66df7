"""DEFAULT scheduling: Ray's hybrid policy, and the placement the other policies end in.

Stay on the local node while its utilisation is below the view's
``spread_threshold`` and the request fits now: the owner's data and its
workers' warm caches are there, and a lease granted locally skips a hop.
Past the threshold, take the feasible node with the lowest utilisation that
fits now, preferring the local node on ties and choosing at random among other
tied nodes (always taking the lowest id would send every spilled request of a
burst to one node). If nothing fits now, queue where it could fit, local
first, so that the request waits where it was asked rather than hop around.

:func:`place` is that rule over a given set of candidates; node labels, soft
node affinity and placement-group bundles narrow the candidates and then
place the same way.
"""
from __future__ import annotations

from ...protocol.common import DefaultScheduling
from ..cluster_view import ClusterView, Decision, NodeView

STRATEGY = DefaultScheduling
FOLLOWS_DATA = True


def pick(view: ClusterView, request: dict[str, int], strategy: DefaultScheduling) -> Decision:
    return place(view, view.alive(), request)


def named_node(strategy: DefaultScheduling) -> None:
    return None


def place(view: ClusterView, nodes: list[NodeView], request: dict[str, int]) -> Decision:
    """The hybrid choice among ``nodes`` (alive ones, narrowed by the caller's rules)."""
    feasible, ready = candidates(nodes, request)
    if not feasible:
        return Decision(None, infeasible=True)
    local = view.nodes.get(view.local_node_id)
    if (local is not None and local in ready
            and local.resources.utilization() < view.spread_threshold):
        return Decision(local.node_id)
    if ready:
        return Decision(least_loaded(ready, view).node_id)
    if local is not None and local in feasible:
        return Decision(local.node_id)
    return Decision(least_loaded(feasible, view).node_id)


def candidates(nodes: list[NodeView], request: dict[str, int]
               ) -> tuple[list[NodeView], list[NodeView]]:
    """(the nodes that could ever hold ``request``, those of them that can now)."""
    feasible = [n for n in nodes if n.resources.is_feasible(request)]
    return feasible, [n for n in feasible if n.resources.can_allocate(request)]


def least_loaded(nodes: list[NodeView], view: ClusterView) -> NodeView:
    """The node with the lowest utilisation: the local one on a tie, else one at random."""
    def key(n: NodeView):
        return round(n.resources.utilization(), 3), n.node_id != view.local_node_id
    best = min(key(n) for n in nodes)
    tied = sorted((n for n in nodes if key(n) == best), key=lambda n: n.node_id)
    return tied[0] if len(tied) == 1 else view.rng.choice(tied)
