"""SPREAD scheduling: successive requests rotate over the nodes where they fit now.

Ray's SPREAD spreads work for throughput or isolation, not for locality, so
the local node has no preference here and data does not decide (an owner
still asks the raylet nearest its arguments first; that raylet spreads). The
rotation is over the nodes that fit now, sorted by id, with a turn counter
the view keeps, so that N requests land on N nodes when they fit. When none
fits now, the request waits on the least-loaded node that could hold it.
"""
from __future__ import annotations

from ...protocol.common import SpreadScheduling
from ..cluster_view import ClusterView, Decision
from .hybrid import candidates, least_loaded

STRATEGY = SpreadScheduling
FOLLOWS_DATA = True


def pick(view: ClusterView, request: dict[str, int], strategy: SpreadScheduling) -> Decision:
    feasible, ready = candidates(view.alive(), request)
    if not feasible:
        return Decision(None, infeasible=True)
    if ready:
        ready.sort(key=lambda n: n.node_id)
        return Decision(ready[view.next_spread_turn() % len(ready)].node_id)
    return Decision(least_loaded(feasible, view).node_id)


def named_node(strategy: SpreadScheduling) -> None:
    return None
