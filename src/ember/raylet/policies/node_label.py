"""Node labels: run where the labels match (Ray's NodeLabelSchedulingStrategy,
``label_selector`` and ``fallback_strategy``).

Each constraint maps a label to (operator, values), the operators being those
of ``ember.scheduling_strategies`` (``in``, ``not_in``, ``exists``,
``does_not_exist``). The hard constraints narrow the candidates; when no node
that meets them could ever hold the request, each fallback set of hard
constraints is tried in turn. Among those, the nodes that also meet the soft
constraints are preferred when one of them has room now. Then the request is
placed as DEFAULT places it (:func:`.hybrid.place`).
"""
from __future__ import annotations

from ...protocol.common import NodeLabelScheduling
from ..cluster_view import ClusterView, Decision
from .hybrid import place

STRATEGY = NodeLabelScheduling
FOLLOWS_DATA = False


def pick(view: ClusterView, request: dict[str, int], strategy: NodeLabelScheduling) -> Decision:
    nodes = view.alive()
    for hard in (strategy.hard_labels, *strategy.fallback_labels):
        matching = [n for n in nodes if labels_match(n.labels, hard)]
        if any(n.resources.is_feasible(request) for n in matching):
            break
    preferred = [n for n in matching if labels_match(n.labels, strategy.soft_labels)]
    if strategy.soft_labels and any(n.resources.can_allocate(request) for n in preferred):
        matching = preferred
    return place(view, matching, request)


def named_node(strategy: NodeLabelScheduling) -> None:
    return None


def labels_match(labels: dict[str, str], constraints: dict) -> bool:
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
