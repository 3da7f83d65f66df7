"""The autoscaler process (Ray's "monitor"): one round every period, on the head node.

Each round:

1. asks the GCS for the cluster's demand and nodes (``GetClusterDemand``);
2. asks the provider for its nodes, and matches them to the GCS's by the
   ``ember.io/provider-node-id`` label their raylets carry;
3. runs the pure decision (:func:`.scheduler.plan`);
4. launches what it says, and drains what it says to remove;
5. removes drained nodes that stayed idle, and takes back the drain of those
   that did not;
6. writes its view to the GCS's KV store for ``ember status``, and tells
   drivers of launches, removals and failures (the "error" channel, job b"",
   which every driver shows, as Ray prints "(autoscaler)" lines).

Failure modes, and what the monitor does:

- A launch fails (provider error, raylet exits, or no registration within
  ``provider.launch_timeout_s``, default 120 s): the node is terminated,
  the failure reported, and its type is not launched again until a backoff
  (``provider.launch_backoff_s`` doubling up to 60 s) has passed, so a broken
  type is never retried in a tight loop.
- A node the autoscaler launched dies: reported as failed; the demand that
  remains launches a replacement next round.
- The GCS cannot be reached: the round is skipped; the monitor exits when its
  parent (the head) does.

Why drain before removal: between the decision and the removal, a raylet
could send the node a task. The GCS marks it draining (raylets stop spilling
to it, placement groups skip it); the node is removed only if it is still idle
``DRAIN_CHECK_S`` later, a few usage reports on.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import time

import msgspec

from .. import process_setup, rpc
from ..config import config as ember_config
from ..protocol import gcs as gcs_msg
from ..rpc.backoff import Backoff
from .config import AutoscalerConfig, load_config
from .providers import NodeProvider, make_provider
from .node_status import NodeStatus
from .providers.base import LABEL_PROVIDER_NODE_ID
from .scheduler import Demand, NodeState, plan

logger = logging.getLogger(__name__)

UPDATE_PERIOD_S = 1.0
#: How long a drained node must stay idle before it is removed.
DRAIN_CHECK_S = max(1.0, 3 * ember_config.autoscaler_usage_period_s)
FAILURE_MEMORY_S = 3600.0
_NOT_CAPACITY = ("memory", "object_store_memory")


def is_idle(total: dict[str, float], available: dict[str, float], busy: list[str]) -> bool:
    """No leases, bundles or primary objects, and every schedulable resource free."""
    return not busy and all(available.get(k, 0.0) + 1e-9 >= v for k, v in total.items()
                            if k not in _NOT_CAPACITY and "_group_" not in k)


class Monitor:
    def __init__(self, config: AutoscalerConfig, provider: NodeProvider, gcs_address: str,
                 clock=time.monotonic, gcs_call=None, publish=None):
        """``gcs_call`` (an async function of a request) and ``publish`` (of a message)
        replace the GCS connection in unit tests."""
        self.config = config
        self._gcs_call = gcs_call
        self._publish = publish
        self.provider = provider
        self.gcs_address = gcs_address
        self._clock = clock
        self._gcs: rpc.Connection | None = None
        #: provider id -> GCS node id, of the nodes that joined (this round's view).
        self._gcs_ids: dict[str, bytes] = {}
        #: provider id -> when it was asked for.
        self._launched_at: dict[str, float] = {}
        #: provider id -> when it was first seen idle.
        self._idle_since: dict[str, float] = {}
        #: provider id -> when it was marked draining.
        self._draining: dict[str, float] = {}
        #: provider ids seen alive in the GCS (a later death is a failure).
        self._joined: set[str] = set()
        self._backoff: dict[str, Backoff] = {}
        self._retry_at: dict[str, float] = {}
        self._failures: list[gcs_msg.AutoscalerNodeReport] = []
        self._warned_infeasible: set[tuple] = set()
        self.launch_timeout_s = float(config.provider.get("launch_timeout_s", 120.0))
        self.launch_backoff_s = float(config.provider.get("launch_backoff_s", 1.0))
        self.stopped = asyncio.Event()

    # --- the loop ----------------------------------------------------------------------

    async def run(self, period: float = UPDATE_PERIOD_S) -> None:
        unreachable_since = None
        while not self.stopped.is_set():
            try:
                await self.round()
                unreachable_since = None
            except (ConnectionError, OSError, asyncio.TimeoutError) as exc:
                logger.warning("autoscaler round skipped: the GCS at %s did not answer (%s)",
                               self.gcs_address, exc)
                self._drop_gcs()
                unreachable_since = unreachable_since or self._clock()
                if self._clock() - unreachable_since > ember_config.gcs_reconnect_timeout_s:
                    logger.error("the GCS has been unreachable for %g s: the cluster is gone; "
                                 "stopping", ember_config.gcs_reconnect_timeout_s)
                    return
            try:
                await asyncio.wait_for(self.stopped.wait(), period)
            except asyncio.TimeoutError:
                pass

    async def _call(self, request):
        if self._gcs_call is not None:
            return await self._gcs_call(request)
        if self._gcs is None or self._gcs.closed:
            self._gcs = await rpc.connect(self.gcs_address, name="gcs", timeout=5)
        return await self._gcs.call(request, timeout=10)

    def _drop_gcs(self) -> None:
        if self._gcs is not None:
            self._gcs.close()
            self._gcs = None

    async def round(self) -> None:
        now = self._clock()
        reply: gcs_msg.ClusterDemandReply = await self._call(gcs_msg.GetClusterDemand())
        nodes = await self._observe(reply, now)
        demand = Demand(reply.tasks, reply.placement_groups, reply.requested)
        decision = plan(demand, nodes, self.config)
        for node_type, count in sorted(decision.launch.items()):
            self._launch(node_type, count, now)
        by_id = {n.id: n for n in nodes}
        for node_id in decision.terminate:
            gcs_id = self._gcs_ids.get(node_id)
            if gcs_id is not None and (await self._call(gcs_msg.DrainNode(gcs_id))).accepted:
                self._draining[node_id] = now
                logger.info("draining idle node %s (%s)", node_id, by_id[node_id].node_type)
        self._warn_infeasible(decision.infeasible)
        await self._write_status(nodes, decision.infeasible)

    # --- what is there -------------------------------------------------------------

    async def _observe(self, reply: gcs_msg.ClusterDemandReply, now: float) -> list[NodeState]:
        """The nodes as the decision sees them; handles failures and finished drains."""
        in_gcs = {}
        self._gcs_ids = {}
        nodes = []
        for info in reply.nodes:
            provider_id = info.labels.get(LABEL_PROVIDER_NODE_ID)
            if provider_id is not None:
                in_gcs[provider_id] = info
            if not info.alive:
                continue
            if info.draining and provider_id not in self._draining:
                # Drained by a monitor that died before deciding: back in service.
                await self._call(gcs_msg.DrainNode(info.node_id, draining=False))
                info.draining = False
            if provider_id is None:
                # The head, or a node joined by hand: capacity, never removed.
                available = reply.available.get(info.node_id, info.resources_total)
                nodes.append(NodeState(info.node_id.hex(), None, info.resources_total,
                                       available, is_head=info.is_head))
        known = set()
        for pnode in self.provider.non_terminated_nodes():
            known.add(pnode.id)
            info = in_gcs.get(pnode.id)
            if info is not None and info.alive:
                state = await self._joined_node(pnode.id, pnode.node_type, info, reply, now)
                if state is not None:
                    nodes.append(state)
                continue
            error = pnode.error
            if pnode.id in self._joined:
                error = f"the node died: {info.death_reason if info else 'it left the cluster'}"
            elif not error and now - self._launched_at.get(pnode.id, now) > self.launch_timeout_s:
                error = (f"it did not join the cluster within {self.launch_timeout_s:g} s "
                         "(provider.launch_timeout_s)")
            if pnode.status is NodeStatus.FAILED or error:
                self._failed(pnode.id, pnode.node_type, error, now)
                continue
            resources = self.config.node_types[pnode.node_type].resources
            nodes.append(NodeState(pnode.id, pnode.node_type, dict(resources), dict(resources),
                                   NodeStatus.LAUNCHING))
        for provider_id, info in in_gcs.items():
            if info.alive and provider_id not in known:
                # Launched by an earlier monitor (this one restarted): capacity, not ours.
                available = reply.available.get(info.node_id, info.resources_total)
                nodes.append(NodeState(provider_id, None, info.resources_total, available))
        return nodes

    async def _joined_node(self, provider_id: str, node_type: str, info, reply,
                           now: float) -> NodeState | None:
        if provider_id not in self._joined:
            self._joined.add(provider_id)
            self._backoff.pop(node_type, None)
            self._retry_at.pop(node_type, None)
            logger.info("node %s (%s) joined as %s", provider_id, node_type,
                        info.node_id.hex()[:12])
        self._gcs_ids[provider_id] = info.node_id
        available = reply.available.get(info.node_id, info.resources_total)
        idle = is_idle(info.resources_total, available, reply.busy.get(info.node_id, []))
        if not idle:
            self._idle_since.pop(provider_id, None)
        elif provider_id not in self._idle_since:
            self._idle_since[provider_id] = now
        if provider_id in self._draining:
            if now - self._draining[provider_id] < DRAIN_CHECK_S:
                return NodeState(provider_id, node_type, info.resources_total, available,
                                 NodeStatus.DRAINING)
            del self._draining[provider_id]
            if idle:
                self._terminate(provider_id, node_type, "idle")
                return None
            logger.info("node %s got work while draining; keeping it", provider_id)
            self._idle_since.pop(provider_id, None)
            await self._call(gcs_msg.DrainNode(info.node_id, draining=False))
        idle_s = now - self._idle_since[provider_id] if idle else 0.0
        return NodeState(provider_id, node_type, info.resources_total, available,
                         NodeStatus.RUNNING, idle_s=max(idle_s, 1e-6) if idle else 0.0)

    # --- actions -----------------------------------------------------------------------

    def _launch(self, node_type: str, count: int, now: float) -> None:
        if now < self._retry_at.get(node_type, 0.0):
            return
        try:
            ids = self.provider.create_node(self.config.node_types[node_type], count)
        except Exception as exc:  # noqa: BLE001 - a provider's bug must not end the monitor
            logger.exception("the %s provider failed to create nodes",
                             self.config.provider["type"])
            self._failed(None, node_type, f"the provider raised {exc!r}", now)
            return
        for node_id in ids:
            self._launched_at[node_id] = now
        self._event(f"Adding {count} node(s) of type {node_type}.")

    def _terminate(self, provider_id: str, node_type: str, why: str) -> None:
        self.provider.terminate_node(provider_id)
        for table in (self._launched_at, self._idle_since, self._draining):
            table.pop(provider_id, None)
        self._joined.discard(provider_id)
        self._event(f"Removing 1 node of type {node_type} ({why}).")

    def _failed(self, provider_id: str | None, node_type: str, error: str, now: float) -> None:
        """A launch that failed (``provider_id`` None: no node was even made)."""
        if provider_id is not None:
            self.provider.terminate_node(provider_id)
        for table in (self._launched_at, self._idle_since, self._draining):
            table.pop(provider_id, None)
        self._joined.discard(provider_id)
        backoff = self._backoff.setdefault(node_type, Backoff(self.launch_backoff_s, 60.0))
        delay = backoff.next_delay()
        self._retry_at[node_type] = now + delay
        self._failures.append(gcs_msg.AutoscalerNodeReport(
            provider_id or "-", node_type, NodeStatus.FAILED.value, error=error,
            time=time.time()))
        cutoff = time.time() - FAILURE_MEMORY_S
        self._failures = [f for f in self._failures if f.time >= cutoff][-20:]
        self._event(f"{'A node' if provider_id is None else 'Node ' + provider_id} of type "
                    f"{node_type} failed: {error}. Retrying this type in {delay:.1f} s.",
                    warning=True)

    def _warn_infeasible(self, infeasible: list[dict[str, float]]) -> None:
        for shape in infeasible:
            key = tuple(sorted(shape.items()))
            if key in self._warned_infeasible:
                continue
            self._warned_infeasible.add(key)
            types = {name: t.resources for name, t in self.config.worker_types().items()}
            self._event(f"No node type can hold the resource demand {shape}; it will wait "
                        f"forever. The node types are {types}: add a type that fits "
                        "(available_node_types) or lower the request.", warning=True)

    def _event(self, text: str, warning: bool = False) -> None:
        (logger.warning if warning else logger.info)("%s", text)
        message = gcs_msg.PublishError(
            gcs_msg.ErrorInfo(b"", "autoscaler", f"(autoscaler) {text}"))
        if self._publish is not None:
            self._publish(message)
        elif self._gcs is not None and not self._gcs.closed:
            self._gcs.notify(message)

    async def _write_status(self, nodes: list[NodeState], infeasible) -> None:
        reports = [gcs_msg.AutoscalerNodeReport(
            n.id, n.node_type, n.status.value,
            node_id=self._gcs_ids.get(n.id, b"")) for n in nodes
            if n.node_type is not None and not n.is_head]
        status = gcs_msg.AutoscalerStatus(time.time(), self.config.cluster_name, reports,
                                          list(self._failures), list(infeasible),
                                          self.config.head_node_type)
        await self._call(gcs_msg.KVPut(gcs_msg.AUTOSCALER_KV_NAMESPACE,
                                       gcs_msg.AUTOSCALER_STATUS_KEY,
                                       msgspec.msgpack.encode(status)))

    def debug_state(self) -> dict:
        return {"launching": sorted(set(self._launched_at) - self._joined),
                "joined": sorted(self._joined), "draining": sorted(self._draining),
                "backoff_until": dict(self._retry_at), "failures": len(self._failures)}

    def stop(self) -> None:
        self.stopped.set()

    def shutdown(self) -> None:
        """Remove every node this monitor launched (the cluster is going away)."""
        self.provider.shutdown()
        self._drop_gcs()


async def _main(args) -> None:
    config = load_config(args.config)
    provider = make_provider(config.provider, args.gcs_address, args.session_dir)
    monitor = Monitor(config, provider, args.gcs_address)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, monitor.stop)
    logger.info("autoscaler for cluster %r started (provider %s, node types %s)",
                config.cluster_name, config.provider["type"], sorted(config.worker_types()))
    try:
        await monitor.run(args.period)
    finally:
        monitor.shutdown()


def main() -> None:
    p = argparse.ArgumentParser(prog="ember.autoscaler.monitor")
    p.add_argument("--gcs-address", required=True)
    p.add_argument("--config", required=True, help="the cluster YAML file")
    p.add_argument("--session-dir", required=True)
    p.add_argument("--period", type=float, default=UPDATE_PERIOD_S)
    p.add_argument("--log-file", default=None)
    p.add_argument("--die-with-parent", action="store_true")
    args = p.parse_args()
    process_setup.setup("autoscaler", args.log_file, args.die_with_parent)
    process_setup.run_loop(_main(args))


if __name__ == "__main__":
    main()
