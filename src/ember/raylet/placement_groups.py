"""A raylet's share of placement groups: the bundles reserved on this node.

The GCS places a group with two phases across raylets:

1. **prepare**: each raylet reserves its bundles' resources from the node, all
   or nothing. If any raylet fails, the GCS cancels the others' reservations.
2. **commit**: each reservation becomes resources of the group, named as in
   Ray, so that ordinary resource scheduling does the rest: a bundle ``{"CPU":
   2}`` at index 1 of group ``g`` adds ``CPU_group_1_g: 2`` and ``CPU_group_g:
   2`` to the node, plus ``bundle_group_1_g`` / ``bundle_group_g`` so that a
   task asking for nothing can still be placed in the group. The owner of a
   task in the group rewrites its request into these names.

Cancelling a committed bundle (the group was removed) takes the group's
resources away again, kills the workers leased on them, fails the lease
requests waiting for them, and returns the reservation to the node.
"""
from __future__ import annotations

import logging

from ..protocol import raylet as msg
from .lease_service import LocalLeaseService
from .resources import UNIT, Allocation, NodeResources, fixed_request

logger = logging.getLogger(__name__)

#: Units of the per-bundle "bundle_group" resource: plenty of tasks may share one.
BUNDLE_UNITS = 1000 * UNIT


def group_resource_names(name: str, pg_hex: str, index: int) -> tuple[str, str]:
    """(indexed, wildcard) resource names of ``name`` in bundle ``index`` of a group."""
    return f"{name}_group_{index}_{pg_hex}", f"{name}_group_{pg_hex}"


def asks_for_group(resources, pg_id: bytes) -> bool:
    """Whether a request names resources of group ``pg_id`` (any of its bundles)."""
    suffix = "_" + pg_id.hex()
    return any(name.endswith(suffix) and "_group_" in name for name in resources)


class BundleManager:
    def __init__(self, resources: NodeResources, leases: LocalLeaseService, on_change):
        self._resources = resources
        self._leases = leases
        self._on_change = on_change
        self._prepared: dict[tuple[bytes, int], Allocation] = {}
        #: (group, index) -> (reservation, the group resources it created)
        self._committed: dict[tuple[bytes, int], tuple[Allocation, dict[str, int]]] = {}
        self.removed: set[bytes] = set()

    def handlers(self) -> dict:
        # CancelResourceReserve is served by the raylet, which also fails the
        # requests of a removed group that wait in its infeasible queue.
        return {msg.PrepareBundleResources: self.prepare,
                msg.CommitBundleResources: self.commit}

    def prepare(self, conn, req: msg.PrepareBundleResources) -> msg.PrepareBundleResourcesReply:
        taken = []
        for index, resources in req.bundles:
            key = (req.placement_group_id, index)
            if key in self._prepared or key in self._committed:
                continue  # a retried prepare
            alloc = self._resources.allocate(fixed_request(resources))
            if alloc is None:
                for done in taken:
                    self._resources.release(self._prepared.pop(done))
                return msg.PrepareBundleResourcesReply(
                    False, f"bundle {index} {resources} does not fit in "
                           f"{self._resources.as_floats('available')}")
            self._prepared[key] = alloc
            taken.append(key)
        if taken:
            self._on_change(totals_changed=False)
        return msg.PrepareBundleResourcesReply(True)

    def commit(self, conn, req: msg.CommitBundleResources) -> msg.PrepareBundleResourcesReply:
        pg_hex = req.placement_group_id.hex()
        total, available = self._resources.total, self._resources.available
        for index in req.bundle_indexes:
            key = (req.placement_group_id, index)
            alloc = self._prepared.pop(key, None)
            if alloc is None:
                continue
            created: dict[str, int] = {}
            for name, amount in list(alloc.amounts.items()) + [("bundle", BUNDLE_UNITS)]:
                for group_name in group_resource_names(name, pg_hex, index):
                    created[group_name] = created.get(group_name, 0) + amount
            for name, amount in created.items():
                total[name] = total.get(name, 0) + amount
                available[name] = available.get(name, 0) + amount
            self._committed[key] = (alloc, created)
        self._on_change(totals_changed=True)
        self._leases.dispatch_soon()
        return msg.PrepareBundleResourcesReply(True)

    def cancel(self, conn, req: msg.CancelResourceReserve) -> msg.PrepareBundleResourcesReply:
        pg_id = req.placement_group_id
        if req.removed:
            self.removed.add(pg_id)
            self._leases.fail_where(
                lambda lease: asks_for_group(lease.request.resources, pg_id),
                f"its placement group {pg_id.hex()} was removed")
        total, available = self._resources.total, self._resources.available
        doomed_names: set[str] = set()
        for index in req.bundle_indexes:
            key = (pg_id, index)
            alloc = self._prepared.pop(key, None)
            if alloc is not None:
                self._resources.release(alloc)
                continue
            committed = self._committed.pop(key, None)
            if committed is None:
                continue
            alloc, created = committed
            for name, amount in created.items():
                total[name] = total.get(name, 0) - amount
                available[name] = available.get(name, 0) - amount
                if total[name] <= 0:
                    del total[name]
                    available.pop(name, None)
                    doomed_names.add(name)
            self._resources.release(alloc)
        if doomed_names:
            self._leases.kill_where(
                lambda lease: lease.allocation is not None
                and any(name in doomed_names for name in lease.allocation.amounts),
                f"its placement group {pg_id.hex()} was removed")
        self._on_change(totals_changed=True)
        return msg.PrepareBundleResourcesReply(True)

    def refusal(self, resources: dict[str, float]) -> str:
        """Why a request for a removed group's resources can never be granted, or ""."""
        for pg_id in self.removed:
            if asks_for_group(resources, pg_id):
                return f"its placement group {pg_id.hex()} was removed"
        return ""

    def num_committed(self) -> int:
        return len(self._committed)

    def debug_state(self) -> dict:
        return {"prepared": len(self._prepared), "committed": len(self._committed)}
