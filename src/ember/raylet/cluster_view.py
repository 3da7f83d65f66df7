"""The cluster scheduler's view of every node: what the policies decide over.

Pure data, no I/O. The raylet's cluster lease manager keeps it fresh from the
GCS (node joins and deaths, periodic availability reports) and asks a policy
(:mod:`ember.raylet.policies`) to pick a node for each lease request. If the
answer is another node, the raylet replies "spillback" and the owner asks that
node's raylet instead; the raylet then counts what it promised against its view
of that node (:meth:`ClusterView.promise`), since the node's own report of it
arrives only later, and a burst of requests would otherwise all go to the node
that looked free. A promise no report confirms soon is forgotten
(:meth:`ClusterView.expire_promises`).
"""
from __future__ import annotations

import dataclasses
import itertools
import random

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
    """A policy's answer for one request."""

    #: The chosen node, or None.
    node_id: bytes | None
    #: No node could ever run the request (a warning is due).
    infeasible: bool = False
    #: The request can never run and must fail (hard affinity to a dead node).
    unschedulable: str = ""


class ClusterView:
    def __init__(self, local_node_id: bytes, rng: random.Random | None = None,
                 spread_threshold: float = 0.5):
        self.local_node_id = local_node_id
        #: The hybrid policy keeps work on the local node while the node's
        #: utilisation is below this (EMBER_SCHEDULER_SPREAD_THRESHOLD).
        self.spread_threshold = spread_threshold
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
