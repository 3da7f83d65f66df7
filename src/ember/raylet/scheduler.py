"""The cluster scheduler's policy: which node should run a lease request.

Pure logic over a :class:`ClusterView`, no I/O, so that it can be tested
exhaustively. The raylet keeps the view fresh from the GCS (node joins and
deaths, periodic availability reports) and calls :func:`pick_node` for each
lease request. If the answer is another node, the raylet replies "spillback"
and the owner asks that node's raylet instead; the raylet then counts what it
promised against its view of that node (:meth:`ClusterView.promise`), since the
node's own report of it arrives only later, and a burst of requests would
otherwise all go to the node that looked free. A promise no report confirms
soon is forgotten (:meth:`ClusterView.expire_promises`).

Policies, as in Ray:

- DEFAULT (hybrid): stay on the local node while its utilisation is below
  ``spread_threshold`` and the request fits now; otherwise take the feasible
  node with the lowest utilisation that fits now, preferring the local node on
  ties and choosing at random among other tied nodes (always taking the lowest
  id would send every spilled request of a burst to one node); if nothing fits
  now, queue where it could fit, local first.
- SPREAD: rotate over the nodes where the request fits now.
- NODE_AFFINITY: the named node; if it is dead or can never fit, fall back to
  DEFAULT when ``soft``, else the request is unschedulable.
"""
from __future__ import annotations

import dataclasses
import itertools
import random

from ..protocol.common import SchedulingStrategy
from .resources import NodeResources


@dataclasses.dataclass
class NodeView:
    node_id: bytes
    resources: NodeResources
    labels: dict[str, str]
    alive: bool = True
    #: The node's last reported availability, while promises are subtracted from it.
    reported: dict[str, int] | None = None
    #: When the oldest unconfirmed promise to this node was made.
    promised_at: float = 0.0

    def report(self, available: dict[str, int]) -> None:
        """The node's own count, which includes whatever it was promised and took."""
        self.resources.available = available
        self.reported = None


@dataclasses.dataclass
class Decision:
    #: The chosen node, or None.
    node_id: bytes | None
    #: No node could ever run the request (a warning is due).
    infeasible: bool = False
    #: The request can never run and must fail (hard affinity to a dead node).
    unschedulable: str = ""


class ClusterView:
    def __init__(self, local_node_id: bytes, rng: random.Random | None = None):
        self.local_node_id = local_node_id
        self.nodes: dict[bytes, NodeView] = {}
        self._spread_turns = itertools.count()
        #: Breaks ties between equally good nodes; seeded in tests.
        self.rng = rng or random.Random()
        #: Nodes whose view holds promises not yet confirmed by a report.
        self._promised: set[bytes] = set()

    def next_spread_turn(self) -> int:
        """SPREAD rotates over the nodes that fit: 0, 1, 2, ... for successive requests."""
        return next(self._spread_turns)

    def alive(self) -> list[NodeView]:
        return [n for n in self.nodes.values() if n.alive]

    def promise(self, node_id: bytes, request: dict[str, int], now: float) -> None:
        """Count a request just sent to ``node_id`` as taken there, until its next report."""
        node = self.nodes.get(node_id)
        if node is None:
            return
        if node.reported is None:
            node.reported = dict(node.resources.available)
            node.promised_at = now
            self._promised.add(node_id)
        node.resources.take(request)

    def expire_promises(self, now: float, ttl: float) -> None:
        """Forget promises no report confirmed within ``ttl``.

        A request sent to a node may never arrive there (the owner went away, or
        the node refused it); the node then has nothing to report, and without
        this the view would count the request as taken there for ever.
        """
        for node_id in list(self._promised):  # only nodes promised to: this runs per request
            node = self.nodes.get(node_id)
            if node is None or node.reported is None:  # confirmed by a report meanwhile
                self._promised.discard(node_id)
            elif now - node.promised_at > ttl:
                node.report(node.reported)
                self._promised.discard(node_id)


def _label_match(labels: dict[str, str], constraints: dict) -> bool:
    for key, (op, values) in constraints.items():
        present = key in labels
        if op == "in" and not (present and labels[key] in values):
            return False
        if op == "not_in" and present and labels[key] in values:
            return False
        if op == "exists" and not present:
            return False
        if op == "does_not_exist" and present:
            return False
    return True


def pick_node(view: ClusterView, request: dict[str, int], strategy: SchedulingStrategy,
              spread_threshold: float) -> Decision:
    nodes = view.alive()
    kind = strategy.kind
    if kind == "NODE_AFFINITY":
        target = view.nodes.get(strategy.node_id)
        if target is not None and target.alive and target.resources.is_feasible(request):
            if not strategy.soft or target.resources.can_allocate(request):
                return Decision(target.node_id)
        if not strategy.soft:
            why = ("is dead" if target is not None and not target.alive else
                   "does not exist" if target is None else "can never fit the request")
            return Decision(None, unschedulable=f"node {strategy.node_id.hex()} {why}")
    elif kind == "NODE_LABEL":
        for hard in (strategy.hard_labels, *strategy.fallback_labels):
            matching = [n for n in nodes if _label_match(n.labels, hard)]
            if any(n.resources.is_feasible(request) for n in matching):
                break
        nodes = matching
        preferred = [n for n in nodes if _label_match(n.labels, strategy.soft_labels)]
        if strategy.soft_labels and any(
                n.resources.can_allocate(request) for n in preferred):
            nodes = preferred

    feasible = [n for n in nodes if n.resources.is_feasible(request)]
    if not feasible:
        return Decision(None, infeasible=True)
    ready = [n for n in feasible if n.resources.can_allocate(request)]

    if kind == "SPREAD":
        if ready:
            ready.sort(key=lambda n: n.node_id)
            return Decision(ready[view.next_spread_turn() % len(ready)].node_id)
        return Decision(_least_loaded(feasible, view).node_id)

    local = view.nodes.get(view.local_node_id)
    if (local is not None and local in ready
            and local.resources.utilization() < spread_threshold):
        return Decision(local.node_id)
    if ready:
        return Decision(_least_loaded(ready, view).node_id)
    if local is not None and local in feasible:
        return Decision(local.node_id)
    return Decision(_least_loaded(feasible, view).node_id)


def _least_loaded(nodes: list[NodeView], view: ClusterView) -> NodeView:
    """The node with the lowest utilisation: the local one on a tie, else one at random."""
    def key(n: NodeView):
        return round(n.resources.utilization(), 3), n.node_id != view.local_node_id
    best = min(key(n) for n in nodes)
    tied = sorted((n for n in nodes if key(n) == best), key=lambda n: n.node_id)
    return tied[0] if len(tied) == 1 else view.rng.choice(tied)
