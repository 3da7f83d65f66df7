"""The GCS node table and the health checks that keep it true.

A raylet registers its node over a connection it keeps open. The GCS then
pings it every ``health_check_period_s``. A node is declared dead when:

- its connection closes (the raylet process exited or crashed), or
- it has not answered a ping for ``health_check_timeout_s`` (a hung process or
  a network partition: the TCP connection may look alive for minutes).

Death is final: a dead node's raylet that reconnects is told to exit, as in
Ray, because the cluster has already given up its tasks and objects.

A restarted GCS reloads the table: a node alive in it is not dead but not
connected either. Its raylet re-registers with the same node id (and is
accepted, being alive); one that has not within ``health_check_timeout_s`` of
the reload is declared dead as usual.
"""
from __future__ import annotations

import asyncio
import logging
import time

import msgspec

from ..config import config
from ..protocol import gcs as msg
from ..rpc.throttle import Throttle
from .pubsub import Publisher
from .storage import StoreClient

logger = logging.getLogger(__name__)

TABLE = "node"


class NodeManager:
    def __init__(self, store: StoreClient, publisher: Publisher):
        self._store = store
        self._publisher = publisher
        self.nodes: dict[bytes, msg.NodeInfo] = {}
        self.available: dict[bytes, dict[str, float]] = {}
        self.pending_demand: dict[bytes, list] = {}
        #: node_id -> queued lease shapes, and why the node is not idle (autoscaler).
        self.demand: dict[bytes, list[msg.ResourceDemand]] = {}
        self.busy: dict[bytes, list[str]] = {}
        self._conns: dict[bytes, object] = {}
        self._last_seen: dict[bytes, float] = {}
        self._health_task: asyncio.Task | None = None
        #: Callbacks run with the NodeInfo of a node that just died.
        self.on_node_dead: list = []
        #: Callbacks run with the node id of a node that joined or reported resources.
        self.on_resources_changed: list = []
        #: Nodes whose availability (and totals) changed since the last broadcast.
        self._changed: set[bytes] = set()
        self._totals_changed: set[bytes] = set()
        self._broadcast_throttle = Throttle(config.resource_report_period_s,
                                            self._broadcast_resources)

    async def load(self) -> None:
        for raw in (await self._store.get_all(TABLE)).values():
            info = msgspec.msgpack.decode(raw, type=msg.NodeInfo)
            self.nodes[info.node_id] = info
            if info.alive:
                # Give reloaded nodes a full timeout to reconnect to a restarted GCS.
                self._last_seen[info.node_id] = time.monotonic()

    def start(self) -> None:
        self._health_task = asyncio.get_running_loop().create_task(self._health_loop())

    def stop(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()

    def handlers(self):
        return {
            msg.RegisterNode: self.register,
            msg.UnregisterNode: self.unregister,
            msg.GetAllNodes: self.get_all,
            msg.ReportResources: self.report_resources,
        }

    async def register(self, conn, req: msg.RegisterNode) -> msg.RegisterNodeReply:
        info = req.info
        old = self.nodes.get(info.node_id)
        if old is not None and not old.alive:
            raise RuntimeError(f"node {info.node_id.hex()} was already declared dead")
        info.alive = True
        info.start_time = info.start_time or time.time()
        self.nodes[info.node_id] = info
        self.available[info.node_id] = dict(info.resources_total)
        self._conns[info.node_id] = conn
        self._last_seen[info.node_id] = time.monotonic()
        conn.peer = ("node", info.node_id)
        await self._persist(info)
        logger.info("node %s registered at %s", info.node_id.hex()[:8], info.ip)
        self._publisher.publish(msg.CHANNEL_NODE, msg.NodeChanged(info))
        for callback in self.on_resources_changed:
            callback(info.node_id)
        return msg.RegisterNodeReply(list(self.nodes.values()))

    async def unregister(self, conn, req: msg.UnregisterNode) -> msg.Ack:
        await self.mark_dead(req.node_id, req.reason)
        return msg.Ack()

    def get_all(self, conn, req) -> msg.GetAllNodesReply:
        return msg.GetAllNodesReply(list(self.nodes.values()), self.available)

    def report_resources(self, conn, req: msg.ReportResources) -> None:
        if req.node_id in self.nodes and self.nodes[req.node_id].alive:
            self.available[req.node_id] = req.available
            self._changed.add(req.node_id)
            if req.total is not None:
                self.nodes[req.node_id].resources_total = req.total
                self._totals_changed.add(req.node_id)
            self._broadcast_throttle.poke()
            for callback in self.on_resources_changed:
                callback(req.node_id)
            self.pending_demand[req.node_id] = req.pending_demand
            self.demand[req.node_id] = req.demand
            self.busy[req.node_id] = req.busy
            self._last_seen[req.node_id] = time.monotonic()

    def _broadcast_resources(self) -> None:
        """Tell every raylet what changed since the last broadcast, in one message."""
        changed, self._changed = self._changed, set()
        totals, self._totals_changed = self._totals_changed, set()
        alive = [n for n in changed if n in self.nodes and self.nodes[n].alive]
        if alive:
            self._publisher.publish(msg.CHANNEL_RESOURCES, msg.ResourcesChanged(
                {n: self.available[n] for n in alive},
                {n: self.nodes[n].resources_total for n in alive if n in totals}))

    def connection_closed(self, conn) -> None:
        peer = conn.peer
        if peer and peer[0] == "node" and self._conns.get(peer[1]) is conn:
            asyncio.get_running_loop().create_task(
                self.mark_dead(peer[1], "the raylet's connection to the GCS closed "
                                        "(raylet process exited or crashed)"))

    async def mark_dead(self, node_id: bytes, reason: str) -> None:
        info = self.nodes.get(node_id)
        if info is None or not info.alive:
            return
        info.alive = False
        info.end_time = time.time()
        info.death_reason = reason
        self.available.pop(node_id, None)
        self.pending_demand.pop(node_id, None)
        self.demand.pop(node_id, None)
        self.busy.pop(node_id, None)
        self._last_seen.pop(node_id, None)
        conn = self._conns.pop(node_id, None)
        logger.warning("node %s (%s) is dead: %s", node_id.hex()[:8], info.ip, reason)
        await self._persist(info)
        self._publisher.publish(msg.CHANNEL_NODE, msg.NodeChanged(info))
        for callback in self.on_node_dead:
            callback(info)
        if conn is not None:
            conn.close()

    async def set_draining(self, node_id: bytes, draining: bool) -> bool:
        """Mark a live node draining (no new work goes there) or back in service."""
        info = self.nodes.get(node_id)
        if info is None or not info.alive:
            return False
        if info.draining != draining:
            info.draining = draining
            await self._persist(info)
            self._publisher.publish(msg.CHANNEL_NODE, msg.NodeChanged(info))
        return True

    async def _persist(self, info: msg.NodeInfo) -> None:
        await self._store.put(TABLE, info.node_id, msgspec.msgpack.encode(info))

    async def _health_loop(self) -> None:
        period = config.health_check_period_s
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for node_id, conn in list(self._conns.items()):
                if conn.closed:
                    continue
                fut = conn.request(msg.CheckAlive())
                fut.add_done_callback(lambda f, n=node_id: self._pong(f, n))
            for node_id, seen in list(self._last_seen.items()):
                if now - seen > config.health_check_timeout_s:
                    await self.mark_dead(
                        node_id, f"the raylet did not answer health checks for "
                                 f"{config.health_check_timeout_s:g} s")

    def _pong(self, fut, node_id: bytes) -> None:
        if not fut.cancelled() and fut.exception() is None and node_id in self._last_seen:
            self._last_seen[node_id] = time.monotonic()

    def alive_nodes(self) -> list[msg.NodeInfo]:
        return [n for n in self.nodes.values() if n.alive]

    def debug_state(self) -> dict:
        return {"alive": len(self.alive_nodes()), "total": len(self.nodes)}
