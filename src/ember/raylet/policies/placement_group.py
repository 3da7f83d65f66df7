"""Placement-group bundles: run on the node that holds the group's bundle.

The group's resources are already the request's: a task in a group asks for
``CPU_group_<index>_<group id>`` (or ``CPU_group_<group id>`` for any bundle)
instead of ``CPU`` (see ``ember.placement_group.group_resources``), and only
the nodes where the GCS committed those bundles have them. Feasibility
therefore narrows the candidates to those nodes, and among them the request is
placed as DEFAULT places it. A group's node is chosen by the GCS when it
places the group, not by the data of one task, so data does not decide here.
"""
from __future__ import annotations

from ...protocol.common import PlacementGroupScheduling
from ..cluster_view import ClusterView, Decision
from .hybrid import place

STRATEGY = PlacementGroupScheduling
FOLLOWS_DATA = False


def pick(view: ClusterView, request: dict[str, int],
         strategy: PlacementGroupScheduling) -> Decision:
    return place(view, view.alive(), request)


def named_node(strategy: PlacementGroupScheduling) -> None:
    return None
