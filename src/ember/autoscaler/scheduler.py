"""The autoscaler's decision: which nodes to launch and which to remove. No I/O.

``plan(demand, nodes, config)`` is a pure function, as the object store's state
machine is: the monitor gathers the inputs (the GCS's demand view, the
provider's nodes) and carries out the output. Every rule a user relies on
is therefore testable without processes (tests/unit/autoscaler/).

How a round decides, in this order (earlier steps win when limits bind):

1. **min_workers**: each worker type is brought up to its minimum.
2. **request_resources**: the standing request is packed onto the *totals*
   of every node (running, launching, and those step 1 adds), ignoring
   what is in use, as in Ray: it asks for capacity, not for free capacity.
   Bundles that fit nowhere launch nodes. Nodes that hold part of the
   request are kept even when idle.
3. **Pending work**: queued and infeasible lease shapes and the bundles of
   pending placement groups are packed onto what is *available* (running
   nodes' free resources, the full resources of nodes still launching or
   launched this round). What does not fit launches nodes.
4. **Idle nodes**: a worker idle for ``idle_timeout_minutes`` is removed,
   unless that would take its type below ``min_workers``, or step 2 or 3
   packed something onto it. The head is never removed.

Placement groups by strategy: STRICT_PACK is one shape (the bundles' sum) on
one node; PACK is one shape when some node type can hold the sum, else its
bundles one by one; SPREAD is its bundles one by one; STRICT_SPREAD needs
each bundle on a node of its own, so existing nodes that already took one of
its bundles are not offered the next.

Choosing a node type for what is left (Ray's utilisation scorer, simplified):
the type that can hold the first unplaced shape and, empty, holds the most
of the rest; ties go to the type whose resources those shapes use most fully
(a CPU task does not launch a GPU node when a CPU node fits), then to the name.

Limits: a type's ``max_workers``, the cluster's ``max_workers`` (worker nodes,
the head not counted), and ``upscaling_speed``: at most
``max(5, ceil(upscaling_speed * running nodes))`` launches pending at once,
as in Ray. Demand the limits hold back is reported as ``unmet``; demand that
no node type could ever hold is ``infeasible`` (and launches nothing).
"""
from __future__ import annotations

import dataclasses
import math

from ..protocol.gcs import PlacementGroupDemand, ResourceDemand
from .config import AutoscalerConfig, NodeTypeConfig
from .node_status import NodeStatus

#: Ray's floor on the number of launches that may be pending at once.
MIN_PENDING_LAUNCHES = 5

_EPSILON = 1e-9


@dataclasses.dataclass
class NodeState:
    """One node as the decision sees it."""

    id: str
    #: The config's node type; None for a node the autoscaler did not launch
    #: (the head, or one added by hand), which it never removes.
    node_type: str | None
    total: dict[str, float]
    available: dict[str, float]
    status: NodeStatus = NodeStatus.RUNNING
    #: Seconds the node has been idle (no leases, bundles or primary objects); 0 if busy.
    idle_s: float = 0.0
    is_head: bool = False


@dataclasses.dataclass
class Demand:
    """The cluster-wide demand: what the GCS aggregates from every raylet."""

    #: Shapes of queued lease requests (infeasible ones included), with counts.
    tasks: list[ResourceDemand] = dataclasses.field(default_factory=list)
    #: Pending placement groups.
    placement_groups: list[PlacementGroupDemand] = dataclasses.field(default_factory=list)
    #: The standing ``request_resources`` bundles.
    requested: list[dict[str, float]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Decision:
    #: Node type -> number of nodes to launch now.
    launch: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Ids of the nodes to drain and remove.
    terminate: list[str] = dataclasses.field(default_factory=list)
    #: Shapes that no node type can hold, whatever the limits.
    infeasible: list[dict[str, float]] = dataclasses.field(default_factory=list)
    #: Shapes left without a node because a limit (max_workers, upscaling_speed) binds.
    unmet: list[dict[str, float]] = dataclasses.field(default_factory=list)


def fits(capacity: dict[str, float], shape: dict[str, float]) -> bool:
    return all(capacity.get(k, 0.0) + _EPSILON >= v for k, v in shape.items() if v > 0)


def _subtract(capacity: dict[str, float], shape: dict[str, float]) -> None:
    for k, v in shape.items():
        capacity[k] = capacity.get(k, 0.0) - v


def _sum(shapes: list[dict[str, float]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for shape in shapes:
        for k, v in shape.items():
            total[k] = total.get(k, 0.0) + v
    return total


@dataclasses.dataclass(eq=False)
class _Bin:
    """Capacity that the packing fills: a node, or one to be launched."""

    node_id: str | None
    node_type: str | None
    remaining: dict[str, float]
    used: bool = False

    def take(self, shape: dict[str, float]) -> bool:
        if not fits(self.remaining, shape):
            return False
        _subtract(self.remaining, shape)
        self.used = True
        return True


class _Planner:
    """One round's bookkeeping: bins, launch counts and the limits they check."""

    def __init__(self, nodes: list[NodeState], config: AutoscalerConfig):
        self.config = config
        self.types = config.worker_types()
        self.launch: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self.workers = 0
        for node in nodes:
            if node.is_head:
                continue
            self.workers += 1
            if node.node_type is not None:
                self.counts[node.node_type] = self.counts.get(node.node_type, 0) + 1
        running = sum(1 for n in nodes if n.status is NodeStatus.RUNNING)
        launching = sum(1 for n in nodes if n.status is NodeStatus.LAUNCHING)
        max_pending = max(MIN_PENDING_LAUNCHES,
                          math.ceil(config.upscaling_speed * max(1, running)))
        self.launch_budget = max(0, max_pending - launching)
        self.new_bins: list[_Bin] = []
        self.existing_totals = [n.total for n in nodes if n.status is not NodeStatus.DRAINING]

    def can_launch(self, node_type: str) -> bool:
        t = self.types[node_type]
        return (self.launch_budget > 0 and self.workers < self.config.max_workers
                and self.counts.get(node_type, 0) < t.max_workers)

    def add_node(self, node_type: str) -> _Bin:
        self.launch[node_type] = self.launch.get(node_type, 0) + 1
        self.counts[node_type] = self.counts.get(node_type, 0) + 1
        self.workers += 1
        self.launch_budget -= 1
        new = _Bin(None, node_type, dict(self.types[node_type].resources))
        self.new_bins.append(new)
        return new

    def feasible(self, shape: dict[str, float]) -> bool:
        """Could a node of some worker type hold ``shape``?"""
        return any(fits(t.resources, shape) for t in self.types.values())

    def fits_existing(self, shape: dict[str, float]) -> bool:
        """Could a node already there hold ``shape`` once free? Then it waits, launching
        nothing, and is not infeasible."""
        return any(fits(total, shape) for total in self.existing_totals)

    def best_type(self, shapes: list[dict[str, float]]) -> str | None:
        """The launchable type for ``shapes[0]`` that also holds most of the rest."""
        best, best_score = None, None
        for name, t in sorted(self.types.items()):
            if not self.can_launch(name) or not fits(t.resources, shapes[0]):
                continue
            remaining = dict(t.resources)
            placed = []
            for shape in shapes:
                if fits(remaining, shape):
                    _subtract(remaining, shape)
                    placed.append(shape)
            score = (len(placed), _utilisation(t, placed))
            if best_score is None or score > best_score:
                best, best_score = name, score
        return best


def _utilisation(node_type: NodeTypeConfig, shapes: list[dict[str, float]]) -> float:
    used = _sum(shapes)
    fractions = [min(1.0, used.get(k, 0.0) / v) for k, v in node_type.resources.items() if v > 0]
    return sum(fractions) / len(fractions) if fractions else 0.0


def plan(demand: Demand, nodes: list[NodeState], config: AutoscalerConfig) -> Decision:
    """The round's decision; see the module docstring for the rules."""
    planner = _Planner(nodes, config)
    decision = Decision()
    for name, t in sorted(planner.types.items()):
        while planner.counts.get(name, 0) < t.min_workers and planner.can_launch(name):
            planner.add_node(name)
    live = [n for n in nodes if n.status is not NodeStatus.DRAINING]
    # Step 2: request_resources against totals.
    total_bins = [_Bin(n.id, n.node_type, dict(n.total)) for n in live]
    total_bins += [_Bin(None, b.node_type, dict(b.remaining)) for b in planner.new_bins]
    _pack(demand.requested, total_bins, planner, decision)
    protected = {b.node_id for b in total_bins if b.used and b.node_id is not None}
    # Step 3: pending work against availability.
    free_bins = [_Bin(n.id, n.node_type, dict(n.available if n.status is NodeStatus.RUNNING
                                               else n.total)) for n in live]
    free_bins += [_Bin(None, b.node_type, dict(planner.types[b.node_type].resources))
                  for b in planner.new_bins]
    _pack(_task_shapes(demand.tasks), free_bins, planner, decision)
    for group in demand.placement_groups:
        _pack_group(group, free_bins, planner, decision)
    protected |= {b.node_id for b in free_bins if b.used and b.node_id is not None}
    decision.launch = planner.launch
    decision.terminate = _idle_nodes(nodes, config, planner, protected)
    return decision


def _task_shapes(tasks: list[ResourceDemand]) -> list[dict[str, float]]:
    return [dict(d.shape) for d in tasks for _ in range(d.count)]


def _pack(shapes: list[dict[str, float]], bins: list[_Bin], planner: _Planner,
          decision: Decision) -> None:
    """First fit onto ``bins``; what is left launches nodes of the best type."""
    left = [s for s in shapes if not any(b.take(s) for b in bins)]
    while left:
        shape = left[0]
        if not planner.feasible(shape):
            if not planner.fits_existing(shape):
                decision.infeasible.append(shape)
            left.pop(0)
            continue
        node_type = planner.best_type(left)
        if node_type is None:
            decision.unmet.append(left.pop(0))
            continue
        new = planner.add_node(node_type)
        bins.append(new)
        left = [s for s in left if not new.take(s)]


def _pack_group(group: PlacementGroupDemand, bins: list[_Bin], planner: _Planner,
                decision: Decision) -> None:
    bundles = [dict(b) for b in group.bundles]
    if group.strategy == "STRICT_SPREAD":
        _pack_spread(bundles, bins, planner, decision)
        return
    whole = _sum(bundles)
    if group.strategy == "STRICT_PACK" or (
            group.strategy == "PACK" and (planner.feasible(whole)
                                           or planner.fits_existing(whole))):
        _pack([whole], bins, planner, decision)
    else:
        _pack(bundles, bins, planner, decision)


def _pack_spread(bundles: list[dict[str, float]], bins: list[_Bin], planner: _Planner,
                 decision: Decision) -> None:
    """Each bundle on a bin that holds no other bundle of the group."""
    taken: set[int] = set()
    for bundle in bundles:
        placed = next((b for b in bins if id(b) not in taken and b.take(bundle)), None)
        if placed is None:
            if not planner.feasible(bundle):
                if not planner.fits_existing(bundle):
                    decision.infeasible.append(bundle)
                continue
            node_type = planner.best_type([bundle])
            if node_type is None:
                decision.unmet.append(bundle)
                continue
            placed = planner.add_node(node_type)
            bins.append(placed)
            placed.take(bundle)
        taken.add(id(placed))


def _idle_nodes(nodes: list[NodeState], config: AutoscalerConfig, planner: _Planner,
                protected: set[str | None]) -> list[str]:
    """Workers idle past the timeout, oldest idle first, keeping each type's minimum."""
    counts = dict(planner.counts)
    chosen = []
    candidates = [n for n in nodes
                  if not n.is_head and n.node_type in planner.types
                  and n.status is NodeStatus.RUNNING and n.id not in protected
                  and n.idle_s > 0 and n.idle_s >= config.idle_timeout_s]
    for node in sorted(candidates, key=lambda n: (-n.idle_s, n.id)):
        if counts[node.node_type] - 1 < planner.types[node.node_type].min_workers:
            continue
        counts[node.node_type] -= 1
        chosen.append(node.id)
    return chosen
