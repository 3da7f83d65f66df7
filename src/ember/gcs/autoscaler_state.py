"""The GCS's autoscaler service: one cluster-wide view of demand, and node draining.

Why in the GCS: the pieces of the demand live in three places. Each raylet
reports the lease requests queued at it (with its load, see
``ReportResources.demand``) and whether it is idle; the placement group
manager knows the groups it could not place yet; ``request_resources`` leaves
its standing request in the KV store. The autoscaler reads them all with one
``GetClusterDemand`` per round, as Ray's monitor reads the GCS's
autoscaler state, instead of asking every raylet.

Draining: before removing a node, the autoscaler marks it ``draining``. The
mark travels with the node's record (a NodeChanged publication), so raylets
stop spilling work to it and the placement group manager stops choosing it;
the autoscaler removes it only if it is still idle a report later, and
otherwise takes the mark back.
"""
from __future__ import annotations

import msgspec

from ..protocol import gcs as msg
from .kv_manager import KVManager
from .node_manager import NodeManager
from .placement_group_manager import PlacementGroupManager, PlacementGroupState

_PENDING = (PlacementGroupState.PENDING, PlacementGroupState.RESCHEDULING)


class AutoscalerStateManager:
    def __init__(self, nodes: NodeManager, placement_groups: PlacementGroupManager,
                 kv: KVManager):
        self._nodes = nodes
        self._groups = placement_groups
        self._kv = kv

    def handlers(self):
        return {msg.GetClusterDemand: self.cluster_demand, msg.DrainNode: self.drain}

    def cluster_demand(self, conn, req) -> msg.ClusterDemandReply:
        nodes = self._nodes
        alive = [info.node_id for info in nodes.alive_nodes()]
        return msg.ClusterDemandReply(
            list(nodes.nodes.values()), nodes.available,
            {n: nodes.busy.get(n, []) for n in alive},
            merge_demand([nodes.demand.get(n, []) for n in alive]),
            self.pending_groups(), self.requested())

    def pending_groups(self) -> list[msg.PlacementGroupDemand]:
        """The bundles of every group still waiting for nodes."""
        found = []
        for group in self._groups.groups.values():
            if group.state not in _PENDING:
                continue
            info = group.info
            bundles = [b for b, node in zip(info.bundles, info.bundle_nodes) if not node]
            if bundles:
                found.append(msg.PlacementGroupDemand(info.placement_group_id, bundles,
                                                      info.strategy))
        return found

    def requested(self) -> list[dict[str, float]]:
        raw = self._kv.get(None, msg.KVGet(msg.AUTOSCALER_KV_NAMESPACE,
                                           msg.REQUEST_RESOURCES_KEY)).value
        if not raw:
            return []
        return msgspec.msgpack.decode(raw, type=list[dict[str, float]])

    async def drain(self, conn, req: msg.DrainNode) -> msg.DrainNodeReply:
        return msg.DrainNodeReply(await self._nodes.set_draining(req.node_id, req.draining))

    def debug_state(self) -> dict:
        return {"draining": sum(1 for n in self._nodes.alive_nodes() if n.draining),
                "pending_groups": len(self.pending_groups())}


def merge_demand(reports: list[list[msg.ResourceDemand]]) -> list[msg.ResourceDemand]:
    """Sum the counts of equal shapes across raylets (infeasible kept apart)."""
    merged: dict[tuple, msg.ResourceDemand] = {}
    for report in reports:
        for demand in report:
            key = (tuple(sorted(demand.shape.items())), demand.infeasible)
            entry = merged.get(key)
            if entry is None:
                merged[key] = msg.ResourceDemand(dict(demand.shape), demand.count,
                                                 demand.infeasible)
            else:
                entry.count += demand.count
    return list(merged.values())
