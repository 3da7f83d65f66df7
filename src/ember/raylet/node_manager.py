"""The raylet process: one per node. Wires the node's components to the network.

- Registers the node with the GCS, answers its health checks, reports
  resource availability, and follows node and job events.
- Serves workers and drivers on a Unix socket (same node) and TCP (other
  nodes): registration, lease requests, lease returns, blocking notices.
- Hands each lease request to the cluster lease manager, which places it
  here, elsewhere (spillback), or nowhere yet (infeasible, with a warning).

The per-task path does not pass through here: owners push tasks straight to
leased workers.
"""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time

from .. import port_check, rpc
from ..ports import WorkerPortAllocator, WorkerPorts
from ..rpc.throttle import Throttle
from ..config import config
from ..node import default_object_store_memory
from ..object_store.object_manager import ObjectManager
from ..object_store.service import StoreService
from ..observability.metrics import NodeMetrics
from ..protocol import gcs as gcs_msg
from ..protocol import core_worker as cw_msg
from ..protocol import raylet as msg
from ..protocol.common import Address
from ..rpc.reconnecting import ReconnectingClient
from .cluster_lease_manager import ClusterLeaseManager
from .lease_manager import LocalLeaseManager
from .lease_service import LocalLeaseService
from .log_files import LogFiles
from .log_monitor import LogMonitor
from .memory_monitor import MemoryMonitor, kill_reason, lease_candidates, oom_message
from .node_usage import NodeUsage
from .placement_groups import BundleManager
from .resources import NodeResources
from .worker_pool import WorkerHandle, WorkerPool, killed_by_raylet

logger = logging.getLogger(__name__)


class Raylet:
    def __init__(self, *, node_id: bytes, gcs_address: str, session_dir: str,
                 node_ip: str, port: int, resources: dict[str, float],
                 labels: dict[str, str], object_store_memory: int, is_head: bool,
                 worker_ports: WorkerPorts = WorkerPorts(),
                 metrics_export_port: int | None = None, dashboard_port: int = 0):
        self.node_id = node_id
        self.gcs_address = gcs_address
        self.session_dir = session_dir
        self.node_ip = node_ip
        self.port = port
        self.worker_ports = worker_ports
        #: None: as config.metrics_export_port says.
        self.metrics_export_port = metrics_export_port
        self.dashboard_port = dashboard_port
        self.labels = labels
        self.object_store_memory = object_store_memory
        self.is_head = is_head
        self.socket_path = os.path.join(session_dir, "sockets",
                                        f"raylet-{node_id.hex()[:12]}")
        self.resources = NodeResources(resources)
        num_cpus = int(resources.get("CPU", 0))
        env = dict(os.environ,
                   EMBER_RAYLET_SOCKET=self.socket_path,
                   EMBER_NODE_ID=node_id.hex(),
                   EMBER_NODE_IP=node_ip,
                   EMBER_GCS_ADDRESS=gcs_address,
                   EMBER_SESSION_DIR=session_dir)
        soft_limit = config.idle_worker_soft_limit
        self.pool = WorkerPool(node_id, session_dir, env,
                               soft_limit if soft_limit >= 0 else max(num_cpus, 1),
                               WorkerPortAllocator(worker_ports),
                               lambda port: port_check.is_free(node_ip, port),
                               on_worker_ready=self._on_worker_ready,
                               on_worker_dead=self._on_worker_dead)
        #: The lease policy, for reads; its events go through lease_service, which
        #: carries out what it asks for.
        self.leases = LocalLeaseManager(self.resources, self.pool,
                                        max_starting=max(num_cpus, 1))
        self.lease_service = LocalLeaseService(self.leases, self.pool.kill,
                                               self._resources_changed)
        self.bundles = BundleManager(self.resources, self.lease_service,
                                     self._resources_changed)
        self.cluster_leases = ClusterLeaseManager(node_id, self.resources, labels,
                                                  self.lease_service,
                                                  self.bundles, self._publish,
                                                  self._resources_changed)
        self.log_monitor = LogMonitor(node_ip, self._publish)
        self.gcs: ReconnectingClient | None = None
        self._servers = []
        #: Connected drivers by worker id (workers are in the pool).
        self._drivers: dict[bytes, rpc.Connection] = {}
        self._report_throttle = Throttle(config.resource_report_period_s, self._report_resources)
        self._totals_changed = False
        self._background: list[asyncio.Task] = []
        self.stopped = asyncio.Event()
        self._stopping = False
        #: Set once the GCS knows this node; drivers are answered only then.
        self.registered = asyncio.Event()
        self.address: Address | None = None
        # The node's shared-memory object store (ember.object_store): a memfd
        # arena that local clients map, and the handlers that serve it.
        self.object_store = StoreService.for_node(
            object_store_memory or default_object_store_memory(), session_dir)
        # Copies objects to this node from others, and serves them to others.
        self.object_manager = ObjectManager(self.object_store.store, self.object_store.arena,
                                            node_id)
        # Kills a worker before the node runs out of memory (see memory_monitor.py).
        self.memory_monitor = MemoryMonitor(
            threshold=config.memory_usage_threshold,
            refresh_s=config.memory_monitor_refresh_ms / 1000,
            candidates=lambda: lease_candidates(self.leases.granted.values()),
            kill=self._kill_for_memory,
            alive=lambda handle: handle.process.poll() is None)
        # Whether this node is idle, for the autoscaler (see node_usage.py).
        self.usage = NodeUsage(self.leases, self.bundles, self.object_store.store,
                               self.cluster_leases.demand_by_shape, self._resources_changed,
                               config.autoscaler_usage_period_s)
        #: The node's Prometheus endpoint, and the user metrics its processes report.
        self.metrics = NodeMetrics(node_id, node_ip, session_dir, pool=self.pool,
                                   leases=self.leases, store=self.object_store,
                                   resources=self.resources)

    # --- start and stop -------------------------------------------------------

    async def start(self) -> None:
        handlers = self._handlers()
        self._servers.append(await rpc.serve(
            "unix:" + self.socket_path, lambda: handlers, on_close=self._conn_closed,
            name="raylet"))
        tcp = await rpc.serve(f"{self.node_ip}:{self.port}", lambda: handlers,
                              on_close=self._conn_closed, name="raylet")
        self._servers.append(tcp)
        self.port = tcp.sockets[0].getsockname()[1]
        self.address = Address(self.node_id, self.node_ip, self.port, self.socket_path)
        self.cluster_leases.local_address(self.address)

        num_prestart = config.num_prestart_workers
        if num_prestart < 0:
            num_prestart = int(self.resources.as_floats("total").get("CPU", 0))
        self.pool.start_zygote()
        self.pool.prestart(num_prestart)

        self._start_time = time.time()
        self.gcs = ReconnectingClient(self.gcs_address, self._gcs_handlers(), name="gcs",
                                      on_connected=self._register_with_gcs,
                                      on_give_up=self._gcs_lost)
        # Before registering: the node table has the metrics port.
        self.metrics.start(config.metrics_export_port if self.metrics_export_port is None
                           else self.metrics_export_port, self.gcs, self.is_head)
        await self.gcs.start()
        self.registered.set()
        self.pool.start_reaper()
        self.log_monitor.start()
        self.object_store.start()
        self.memory_monitor.start()
        loop = asyncio.get_running_loop()
        self._background.append(loop.create_task(self._infeasible_loop()))
        self._background.append(loop.create_task(self.usage.run()))
        logger.info("raylet %s up at %s:%d with %s", self.node_id.hex()[:8], self.node_ip,
                    self.port, self.resources.as_floats("total"))

    async def stop(self, reason: str = "") -> None:
        if self._stopping:
            return
        self._stopping = True
        logger.info("raylet stopping%s", f": {reason}" if reason else "")
        for task in self._background:
            task.cancel()
        self.memory_monitor.stop()
        self.metrics.stop()
        for server in self._servers:
            server.close()
        await self.pool.shutdown()
        self.log_monitor.stop()
        self.object_manager.close()
        self.object_store.close()
        if self.gcs is not None:
            self.gcs.stop_reconnecting()
            if self.gcs.connected:
                try:
                    await asyncio.wait_for(self.gcs.call(
                        gcs_msg.UnregisterNode(self.node_id, reason or "raylet stopped")), 1.0)
                except (ConnectionError, asyncio.TimeoutError, rpc.RemoteError):
                    pass
            self.gcs.close()
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        self.stopped.set()

    async def _register_with_gcs(self, conn: rpc.Connection) -> None:
        """Register the node and subscribe: at start, and again with a restarted GCS.

        The node keeps its id across GCS restarts, so the GCS's reloaded record
        of it comes alive again; its running workers and objects are untouched.
        """
        info = gcs_msg.NodeInfo(
            node_id=self.node_id, ip=self.node_ip, hostname=socket.gethostname(),
            raylet=self.address, resources_total=self.resources.as_floats("total"),
            labels=self.labels, is_head=self.is_head, start_time=self._start_time,
            object_store_memory=self.object_store_memory, session_dir=self.session_dir,
            worker_ports=self.worker_ports.spec, metrics_export_port=self.metrics.port or 0,
            dashboard_port=self.dashboard_port,
            gcs_port=int(self.gcs_address.rpartition(":")[2]) if self.is_head else 0)
        # Subscribe first: a node that registers between our registration's reply
        # and a later subscription would be in neither, and never known here (at
        # a hundred nodes starting at once, some always were). Subscribed first,
        # it is in the reply or in a NodeChanged; the reply, sent after any
        # NodeChanged published before it, is the newest word on every node.
        await conn.call(gcs_msg.Subscribe([gcs_msg.CHANNEL_NODE, gcs_msg.CHANNEL_JOB,
                                           gcs_msg.CHANNEL_WORKER,
                                           gcs_msg.CHANNEL_RESOURCES]))
        reply = await conn.call(gcs_msg.RegisterNode(info))
        for node in reply.nodes:
            self._update_node(node)
        if self.registered.is_set():
            # A restarted GCS knows only our totals: tell it what is in use.
            self._resources_changed(totals_changed=True)

    def _gcs_lost(self, exc: Exception) -> None:
        if not self._stopping:
            asyncio.get_running_loop().create_task(self.stop(str(exc)))

    # --- handlers ---------------------------------------------------------------

    def _handlers(self):
        return {
            msg.RegisterWorker: self.register_worker,
            msg.RequestWorkerLease: lambda conn, req: self.cluster_leases.request(req, conn),
            msg.ReturnWorker: self.return_worker,
            msg.CancelWorkerLease: self.cancel_lease,
            msg.NotifyBlocked: self.notify_blocked,
            msg.WorkerExiting: self.worker_exiting,
            msg.NotifyUnblocked: self.notify_unblocked,
            msg.KillWorker: self.kill_worker,
            msg.GetWorkerFailureCause: self.failure_cause,
            msg.GetNodeState: self.node_state,
            msg.ShutdownRaylet: self.shutdown,
            msg.GetMemoryInfo: self.memory_info,
            **self.metrics.handlers(),
            **self.object_store.handlers(),
            **self.object_manager.handlers(),
            **self.bundles.handlers(),
            **LogFiles(self.session_dir).handlers(),
            msg.CancelResourceReserve: self.cancel_bundles,
        }

    def _gcs_handlers(self):
        return {
            gcs_msg.CheckAlive: lambda conn, req: gcs_msg.CheckAliveReply(self.node_id),
            gcs_msg.NodeChanged: lambda conn, m: self._update_node(m.info),
            gcs_msg.JobFinished: self._job_finished,
            gcs_msg.ReportWorkerFailure: self._remote_worker_died,
            gcs_msg.ResourcesChanged: lambda conn, m: self.cluster_leases.resources_reported(m),
        }

    def _job_finished(self, conn, m: gcs_msg.JobFinished) -> None:
        self.pool.kill_job_workers(m.job_id)
        if m.driver_worker_id:
            self.object_store.store.delete_owned_by(m.driver_worker_id)

    def _remote_worker_died(self, conn, m: gcs_msg.ReportWorkerFailure) -> None:
        """A worker of another node died: free the objects it owned here."""
        if m.node_id != self.node_id:  # our own were freed when we saw it die
            self.object_store.store.delete_owned_by(m.worker_id)

    def register_worker(self, conn, req: msg.RegisterWorker) -> msg.RegisterWorkerReply:
        reply = msg.RegisterWorkerReply(self.node_id, self.gcs_address, self.session_dir,
                                        self.resources.as_floats("total"),
                                        store_fd=self.object_store.arena.fd,
                                        store_capacity=self.object_store.arena.capacity,
                                        raylet_pid=os.getpid())
        self._publish(gcs_msg.AddWorkerInfo(gcs_msg.WorkerTableData(
            req.worker_id, self.node_id, req.address.ip, req.address.port, req.pid,
            "DRIVER" if req.is_driver else "WORKER", req.job_id)))
        if req.is_driver:
            conn.peer = ("driver", req.worker_id)
            self._drivers[req.worker_id] = conn
            if not self.registered.is_set():
                # The raylet serves before the GCS knows its node; a driver that is
                # answered now could find no node in ember.nodes() or
                # cluster_resources() right after init(). Answer once it is known.
                return self._when_registered(reply)
        else:
            handle = self.pool.register(req.worker_id, req.pid, conn, req.address)
            if handle is None:
                raise RuntimeError(f"unknown worker {req.worker_id.hex()}")
            handle.lease_key = reply.lease_key = secrets.token_bytes(32)
            conn.peer = ("worker", handle)
            self.log_monitor.add_worker(handle)
        return reply

    async def _when_registered(self, reply):
        await self.registered.wait()
        return reply

    def cancel_bundles(self, conn, req: msg.CancelResourceReserve):
        """Release a group's bundles here; if the group is gone, fail what waits for it."""
        reply = self.bundles.cancel(conn, req)
        self.cluster_leases.bundles_cancelled()
        return reply

    def return_worker(self, conn, req: msg.ReturnWorker) -> None:
        self.lease_service.return_worker(req.lease_id, req.worker_failed)

    def cancel_lease(self, conn, req: msg.CancelWorkerLease) -> msg.CancelWorkerLeaseReply:
        return msg.CancelWorkerLeaseReply(self.cluster_leases.cancel(req.lease_id))

    def worker_exiting(self, conn, req) -> None:
        if conn.peer and conn.peer[0] == "worker":
            conn.peer[1].exiting = True

    def notify_blocked(self, conn, req) -> None:
        if conn.peer and conn.peer[0] == "worker":
            self.lease_service.blocked(conn.peer[1])

    def notify_unblocked(self, conn, req) -> None:
        if conn.peer and conn.peer[0] == "worker":
            self.lease_service.unblocked(conn.peer[1])

    def kill_worker(self, conn, req: msg.KillWorker) -> gcs_msg.Ack:
        handle = self.pool.workers.get(req.worker_id)
        if handle is not None:
            self.pool.kill(handle, req.reason or "it was killed on request")
        return gcs_msg.Ack()

    def failure_cause(self, conn, req: msg.GetWorkerFailureCause):
        handle = self.pool.find(req.worker_id)
        if handle is not None and handle.out_of_memory is not None:
            message, retry = handle.out_of_memory
            return msg.GetWorkerFailureCauseReply(message, handle.exit_code,
                                                  out_of_memory=True, retry=retry)
        cause, code = self.pool.failure_cause(req.worker_id)
        return msg.GetWorkerFailureCauseReply(cause, code)

    def _kill_for_memory(self, handle: WorkerHandle, decision, snapshot) -> None:
        """The memory monitor's kill: record why first, so the owner learns it at once."""
        handle.out_of_memory = (oom_message(
            description=decision.victim.description, node_id=self.node_id,
            node_ip=self.node_ip, pid=handle.pid, snapshot=snapshot,
            threshold=self.memory_monitor.threshold), decision.retry)
        self.pool.kill(handle, kill_reason(snapshot, self.memory_monitor.threshold))

    def node_state(self, conn, req) -> msg.GetNodeStateReply:
        return msg.GetNodeStateReply(self.debug_state())

    async def memory_info(self, conn, req) -> msg.GetMemoryInfoReply:
        """Every reference held by this node's processes, and what its store holds."""
        conns = list(self._drivers.values()) + [
            w.conn for w in self.pool.workers.values() if w.conn is not None]
        replies = await asyncio.gather(
            *(asyncio.wait_for(c.call(cw_msg.GetCoreWorkerStats()), 5) for c in conns),
            return_exceptions=True)
        store = self.object_store.store
        stored = [(o.object_id, o.size, o.owner.worker_id if o.owner else b"", o.state,
                   o.state == "SPILLED") for o in store.list_objects()]
        return msg.GetMemoryInfoReply([r for r in replies if not isinstance(r, BaseException)],
                                      store.stats(), stored)

    async def shutdown(self, conn, req: msg.ShutdownRaylet) -> gcs_msg.Ack:
        asyncio.get_running_loop().call_soon(
            lambda: asyncio.ensure_future(self.stop(req.reason)))
        return gcs_msg.Ack()

    # --- events -----------------------------------------------------------------

    def _conn_closed(self, conn) -> None:
        self.object_store.connection_closed(conn)
        self.object_manager.connection_closed(conn)
        peer = conn.peer
        if peer and peer[0] == "driver":
            self._drivers.pop(peer[1], None)
            self.object_store.store.delete_owned_by(peer[1])
        if peer and peer[0] == "worker":
            self.pool.disconnected(peer[1])
        self.cluster_leases.owner_gone(conn)

    def _on_worker_ready(self) -> None:
        self.lease_service.dispatch_soon()

    def _on_worker_dead(self, handle: WorkerHandle) -> None:
        self.lease_service.worker_died(handle)
        self.object_store.store.delete_owned_by(handle.worker_id)
        if handle.address is not None:
            self._publish(gcs_msg.ReportWorkerFailure(
                handle.worker_id, self.node_id, handle.death_cause,
                intentional=handle.exiting and handle.exit_code == 0,
                exit_type=exit_type(handle)))

    def _update_node(self, info: gcs_msg.NodeInfo) -> None:
        if info.node_id == self.node_id:
            return
        self.cluster_leases.node_changed(info)
        if not info.alive:
            self.object_manager.node_removed(info.node_id, info.raylet)
            # Every owner that lived there died with it.
            self.object_store.store.delete_owned_by(node_id=info.node_id)

    def _resources_changed(self, totals_changed: bool = False) -> None:
        self._totals_changed |= totals_changed
        self._report_throttle.poke()

    def _report_resources(self) -> None:
        if self.gcs is None or not self.gcs.connected:
            return  # reconnecting: a full report follows the re-registration
        demand = self.cluster_leases.demand()
        total = self.resources.as_floats("total") if self._totals_changed else None
        self._totals_changed = False
        self.gcs.notify(gcs_msg.ReportResources(
            self.node_id, self.resources.as_floats("available"), demand, total,
            self.usage.demand(), self.usage.busy))
        if total is not None:
            self.cluster_leases.retry_infeasible()

    def _publish(self, message) -> None:
        if self.gcs is not None and not self.gcs.closed:
            self.gcs.notify(message)

    async def _infeasible_loop(self) -> None:
        while True:
            await asyncio.sleep(config.infeasible_warning_period_s)
            self.cluster_leases.warn_all_infeasible()

    def debug_state(self) -> dict:
        return {
            "node_id": self.node_id.hex(),
            "gcs": self.gcs.debug_state() if self.gcs is not None else None,
            "resources_total": self.resources.as_floats("total"),
            "resources_available": self.resources.as_floats("available"),
            "leases": self.lease_service.debug_state(),
            **self.cluster_leases.debug_state(),
            "worker_pool": self.pool.debug_state(),
            "bundles": self.bundles.debug_state(),
            "object_store": self.object_store.debug_state(),
            "object_manager": self.object_manager.debug_state(),
            "memory_monitor": self.memory_monitor.debug_state(),
            "servers": rpc.servers_debug_state(),
        }


def exit_type(handle: WorkerHandle) -> str:
    """Ray's exit type for a worker that ended, from how the raylet saw it end."""
    code = handle.exit_code
    if handle.out_of_memory is not None:
        return "NODE_OUT_OF_MEMORY"
    if code == 0:  # it said it was exiting (exit_actor(), max_calls), or sys.exit(0)
        return "INTENDED_USER_EXIT"
    if killed_by_raylet(handle, code):
        return "INTENDED_SYSTEM_EXIT"  # the raylet ended it: its actor or job ended...
    return "SYSTEM_ERROR"

