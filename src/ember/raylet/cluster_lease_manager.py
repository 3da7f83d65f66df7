"""The cluster lease manager: where each lease request that reaches this raylet runs.

A request is placed, by its strategy's policy (:mod:`.policies`), in one of three ways:

- here: into the local lease manager, which grants a worker when resources
  and a worker are free;
- on another node: the reply is "spillback" naming that node's raylet, and the
  owner asks there (grant-or-reject). What was sent there is counted against
  this raylet's view of that node until the node's own report arrives;
- nowhere yet: no node could ever hold it. It waits in the infeasible queue,
  with a warning to its job's driver, until a node that fits joins.

Requests queued here for want of resources are placed again when another
node frees up first, as Ray's cluster lease manager does.

The view of the other nodes comes from the GCS (node joins and deaths, and
availability broadcasts); the raylet forwards those events here.
"""
from __future__ import annotations

import logging
import time
import typing

from ..config import config
from ..protocol import gcs as gcs_msg
from ..protocol import raylet as msg
from ..protocol.common import Address
from .lease_manager import Lease
from .lease_service import LocalLeaseService
from .placement_groups import BundleManager
from .cluster_view import ClusterView, NodeView
from .policies import pick_node
from .resources import NodeResources, fixed_request

logger = logging.getLogger(__name__)

#: How long a request spilled to another node counts as taken there without
#: that node confirming it in a report (it reports within a report period).
PROMISE_TTL_S = max(1.0, 10 * config.resource_report_period_s)


class ClusterLeaseManager:
    def __init__(self, node_id: bytes, resources: NodeResources, labels: dict[str, str],
                 local: LocalLeaseService, bundles: BundleManager,
                 publish: typing.Callable[[object], None],
                 demand_changed: typing.Callable[[], None]):
        self.node_id = node_id
        self.resources = resources
        self.local = local
        self.bundles = bundles
        self._publish = publish
        self._demand_changed = demand_changed
        self.view = ClusterView(node_id, spread_threshold=config.scheduler_spread_threshold)
        self.view.nodes[node_id] = NodeView(node_id, resources, labels)
        self._addresses: dict[bytes, Address] = {}
        self._infeasible: dict[bytes, Lease] = {}

    # --- requests -------------------------------------------------------------------

    async def request(self, req: msg.RequestWorkerLease, conn) -> msg.WorkerLeaseReply:
        again = self.local.regrant(req, conn)
        if again is not None:
            return again
        refusal = self.bundles.refusal(req.resources)
        if refusal:
            return msg.LeaseFailed(f"{req.description} cannot run: {refusal}")
        lease = Lease(req, conn)
        with self.local.waiting_for_reply(lease) as reply:
            placed = self._place(lease)
            return placed if placed is not None else await reply

    def _place(self, lease: Lease) -> msg.WorkerLeaseReply | None:
        """The reply to a new request if it is answered now; None if it waits (queued
        here, or infeasible) for the reply the local lease service resolves."""
        req = lease.request
        if req.grant_or_reject:
            # Sent here by another raylet, which chose this node: run it if it fits
            # now, else the owner asks its own raylet again, rather than wait here
            # while another node may be free.
            if not self.resources.can_allocate(lease.fixed):
                return msg.LeaseRejected()
            self.local.queue(lease)
            return None
        self.view.expire_promises(time.monotonic(), PROMISE_TTL_S)
        decision = pick_node(self.view, lease.fixed, req.strategy)
        if decision.unschedulable:
            return msg.LeaseFailed(f"{req.description} cannot be scheduled: "
                                   f"{decision.unschedulable}.")
        if decision.infeasible:
            self._infeasible[req.lease_id] = lease
            self.warn_infeasible(lease)
            return None
        return self._spill_or_queue(lease, decision.node_id)

    def _spill_or_queue(self, lease: Lease, node_id: bytes) -> msg.LeaseSpillback | None:
        """The spillback reply sending ``lease`` to ``node_id``, counted as taken there in
        our view; or, when that is this node (or one we cannot name), None: queued here."""
        address = self._addresses.get(node_id) if node_id != self.node_id else None
        if address is None:
            self.local.queue(lease)
            return None
        self.view.promise(node_id, lease.fixed, time.monotonic())
        return msg.LeaseSpillback(address)

    def cancel(self, lease_id: bytes) -> bool:
        lease = self._infeasible.pop(lease_id, None)
        if lease is not None:
            self.local.answer(lease, msg.LeaseCanceled())
            return True
        return self.local.cancel(lease_id)

    def owner_gone(self, conn) -> None:
        self.local.owner_gone(conn)
        for lease_id, lease in list(self._infeasible.items()):
            if lease.owner_conn is conn:
                del self._infeasible[lease_id]

    def bundles_cancelled(self) -> None:
        """Placement groups went away: fail what waits for their bundles."""
        for lease_id, lease in list(self._infeasible.items()):
            refusal = self.bundles.refusal(lease.request.resources)
            if refusal:
                del self._infeasible[lease_id]
                self.local.answer(lease, msg.LeaseFailed(
                    f"{lease.request.description} cannot run: {refusal}"))

    def demand(self) -> list[dict[str, float]]:
        """What no node can hold now: reported to the GCS (and the autoscaler)."""
        return [lease.request.resources for lease in self._infeasible.values()]

    def demand_by_shape(self) -> list[gcs_msg.ResourceDemand]:
        """Every request waiting here for resources, counted by shape, for the autoscaler.

        Requests for placement-group resources are left out: the group's
        pending bundles stand for them (the GCS reports those).
        """
        counts: dict[tuple, gcs_msg.ResourceDemand] = {}
        waiting = [(lease, True) for lease in self._infeasible.values()]
        waiting += [(lease, False) for lease in self.local.manager.queued()
                    if lease.allocation is None]
        for lease, infeasible in waiting:
            shape = lease.request.resources
            if any("_group_" in name for name in shape):
                continue
            key = (tuple(sorted(shape.items())), infeasible)
            entry = counts.get(key)
            if entry is None:
                counts[key] = gcs_msg.ResourceDemand(dict(shape), 1, infeasible)
            else:
                entry.count += 1
        return list(counts.values())

    # --- the view of other nodes ---------------------------------------------------

    def local_address(self, address: Address) -> None:
        self._addresses[self.node_id] = address

    def node_changed(self, info: gcs_msg.NodeInfo) -> None:
        if info.node_id == self.node_id:
            return
        if info.alive:
            if info.node_id not in self.view.nodes:
                self.view.nodes[info.node_id] = NodeView(
                    info.node_id, NodeResources(info.resources_total), info.labels)
                self._addresses[info.node_id] = info.raylet
                self.view.nodes[info.node_id].alive = not info.draining
                self.retry_infeasible()
            else:
                # The autoscaler drains a node before removing it: send it nothing new;
                # back in service, it may hold what waits as infeasible.
                view = self.view.nodes[info.node_id]
                returning = not view.alive and not info.draining
                view.alive = not info.draining
                if returning:
                    self.retry_infeasible()
        else:
            view = self.view.nodes.get(info.node_id)
            if view is not None:
                view.alive = False

    def resources_reported(self, m: gcs_msg.ResourcesChanged) -> None:
        """Other nodes' availability, as the GCS broadcasts it.

        It replaces what :meth:`ClusterView.promise` subtracted for requests sent
        there, now that those nodes have counted them themselves.
        """
        grew = False
        for node_id, available in m.available.items():
            view = self.view.nodes.get(node_id)
            if view is None or node_id == self.node_id:
                continue
            total = m.total.get(node_id)
            if total is not None:
                total = fixed_request(total)
                grew |= any(v > view.resources.total.get(k, 0) for k, v in total.items())
                view.resources.total = total
            view.report(fixed_request(available))
        if grew and self._infeasible:
            self.retry_infeasible()
        self._respill_waiting()

    def _respill_waiting(self) -> None:
        """Send requests queued here for want of resources to a node that now has them.

        A request is queued here when no node had room at the time; when another
        node frees up first, it should run there, not wait for this one.
        Requests spilled here (grant-or-reject) stay: their owner chose this node.
        """
        self.view.expire_promises(time.monotonic(), PROMISE_TTL_S)
        for lease in self.local.manager.queued():
            if lease.allocation is not None or lease.request.grant_or_reject:
                continue
            decision = pick_node(self.view, lease.fixed, lease.request.strategy)
            target = self.view.nodes.get(decision.node_id)
            if (target is None or decision.node_id == self.node_id
                    or decision.node_id not in self._addresses
                    or not target.resources.can_allocate(lease.fixed)):
                continue
            if self.local.take_waiting(lease.lease_id) is not None:
                self.local.answer(lease, self._spill_or_queue(lease, decision.node_id))

    # --- infeasible requests -------------------------------------------------------

    def warn_infeasible(self, lease: Lease) -> None:
        req = lease.request
        missing = self.resources.missing(lease.fixed)
        text = (f"The {req.description} requires {req.resources}, but no node in the "
                f"cluster has that much (missing {missing} on this node; cluster totals "
                f"{self._cluster_totals()}). It will wait until a node that fits joins "
                "the cluster. Lower the request or add a node with these resources.")
        logger.warning(text)
        self._publish(gcs_msg.PublishError(gcs_msg.ErrorInfo(req.job_id, "infeasible", text)))
        self._demand_changed()

    def warn_all_infeasible(self) -> None:
        for lease in list(self._infeasible.values()):
            self.warn_infeasible(lease)

    def _cluster_totals(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for node in self.view.alive():
            for k, v in node.resources.as_floats("total").items():
                totals[k] = totals.get(k, 0) + v
        return totals

    def retry_infeasible(self) -> None:
        pending, self._infeasible = self._infeasible, {}
        for lease in pending.values():
            decision = pick_node(self.view, lease.fixed, lease.request.strategy)
            if decision.infeasible:
                self._infeasible[lease.lease_id] = lease
                continue
            spill = self._spill_or_queue(lease, decision.node_id)
            if spill is not None:
                self.local.answer(lease, spill)

    def debug_state(self) -> dict:
        return {
            "infeasible": [lease.request.description for lease in self._infeasible.values()],
            "cluster_view": {node.node_id.hex(): node.resources.as_floats("available")
                             for node in self.view.alive()},
        }
