"""The GCS process: cluster metadata, pub/sub and health checks on one event loop.

The server is a thin shell: it owns the listening socket and routes each
message type to the manager responsible for it (nodes, jobs, kv, pub/sub).
Managers never touch sockets except through the connections handed to them.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from .. import rpc
from ..config import config
from ..protocol import gcs as msg
from ..protocol.raylet import GetNodeState, GetNodeStateReply
from ..rpc.pool import ConnectionPool
from .actor_manager import ActorManager
from .autoscaler_state import AutoscalerStateManager
from .placement_group_manager import PlacementGroupManager
from .job_manager import JobManager
from .kv_manager import KVManager
from .node_manager import NodeManager
from .pubsub import Publisher
from .task_events import TaskEventManager
from .worker_manager import WorkerManager
from .storage import (REDIS_SCHEMES, InMemoryStoreClient, StorageConfigError,
                      StorageUnavailableError, StoreClient)

logger = logging.getLogger(__name__)


def make_store_client(spec: str, namespace: str = "default") -> StoreClient:
    """Build the store client named by the ``gcs_storage`` config value."""
    if spec == "memory":
        return InMemoryStoreClient()
    if spec.startswith(REDIS_SCHEMES):
        from .redis_store import RedisStoreClient  # imports redis-py: only when asked for
        return RedisStoreClient(spec, namespace)
    raise StorageConfigError(
        f"Unknown GCS storage {spec.split('@')[-1]!r}; expected 'memory', "
        "'redis://[:password@]host:port[/db]', 'rediss://...' (TLS) or "
        "'redis+sentinel://host:port[,host:port]/MASTER_NAME[/db]'."
    )


class GcsServer:
    def __init__(self, host: str, port: int, storage: str = "memory",
                 storage_namespace: str = "default"):
        self.host = host
        self.port = port
        self.store = make_store_client(storage, storage_namespace)
        self.publisher = Publisher()
        self.kv = KVManager(self.store)
        self.nodes = NodeManager(self.store, self.publisher)
        self.jobs = JobManager(self.store, self.publisher)
        # A raylet registers only once it listens: a refused connection means it
        # died (fail at once; a node that crashes is declared dead within a moment)
        # rather than a raylet still starting (retry for the whole timeout). With a
        # hundred nodes crashing at once, actors owned there waited 10 s for each.
        raylets = ConnectionPool(timeout=10, already_listening=True)
        self.actors = ActorManager(self.publisher, self.nodes, self.store, raylets)
        self.placement_groups = PlacementGroupManager(self.nodes, self.actors, self.store,
                                                      raylets)
        self.nodes.on_node_dead.append(self.placement_groups.node_died)
        self.nodes.on_resources_changed.append(self.placement_groups.capacity_changed)
        self.jobs.on_job_finished.append(self.placement_groups.job_finished)
        self.nodes.on_node_dead.append(self.actors.node_died)
        self.jobs.on_job_finished.append(self.actors.job_finished)
        self.autoscaler = AutoscalerStateManager(self.nodes, self.placement_groups, self.kv)
        self.task_events = TaskEventManager()
        self.jobs.on_job_finished.append(self.task_events.job_finished)
        self.workers = WorkerManager()
        self.nodes.on_node_dead.append(self.workers.node_died)
        self.jobs.on_job_finished.append(self.workers.job_finished)
        self._handlers = {}
        for manager in (self.kv, self.nodes, self.jobs, self.actors, self.placement_groups,
                        self.publisher, self.autoscaler, self.task_events, self.workers):
            self._handlers.update(manager.handlers())
        self._handlers[GetNodeState] = self.debug_state
        self._handlers[msg.PublishLogs] = self._publish_logs
        self._handlers[msg.PublishError] = self._publish_error
        self._handlers[msg.ReportWorkerFailure] = self._worker_failed
        self._server = None
        self.stopped = asyncio.Event()

    async def start(self) -> None:
        """Load every table (a restarted GCS carries on from them), then serve."""
        await self.store.open()
        for manager in (self.kv, self.nodes, self.jobs, self.actors, self.placement_groups):
            await manager.load()
        self._server = await rpc.serve(f"{self.host}:{self.port}", lambda: self._handlers,
                                       on_close=self._on_close, name="gcs")
        self.port = self._server.sockets[0].getsockname()[1]
        self.nodes.start()
        self.jobs.start()
        self.actors.start()
        self.placement_groups.start()
        logger.info("GCS listening on %s:%d (storage: %s)", self.host, self.port,
                    type(self.store).__name__)

    def _on_close(self, conn) -> None:
        self.publisher.drop(conn)
        self.nodes.connection_closed(conn)
        asyncio.get_running_loop().create_task(self.jobs.connection_closed(conn))

    def _publish_logs(self, conn, req: msg.PublishLogs) -> None:
        for batch in req.batches:
            self.publisher.publish(msg.CHANNEL_LOG, batch, batch.job_id)

    def _publish_error(self, conn, req: msg.PublishError) -> None:
        self.publisher.publish(msg.CHANNEL_ERROR, req.info, req.info.job_id)

    def _worker_failed(self, conn, req: msg.ReportWorkerFailure) -> None:
        self.actors.worker_failed(conn, req)
        self.workers.worker_failed(req)
        self.publisher.publish(msg.CHANNEL_WORKER, req)

    def debug_state(self, conn, req) -> GetNodeStateReply:
        return GetNodeStateReply({
            "nodes": self.nodes.debug_state(), "jobs": self.jobs.debug_state(),
            "kv": self.kv.debug_state(), "subscribers": self.publisher.debug_state(),
            "actors": self.actors.debug_state(),
            "placement_groups": self.placement_groups.debug_state(),
            "autoscaler": self.autoscaler.debug_state(),
            "task_events": self.task_events.debug_state(),
            "workers": self.workers.debug_state(),
            "servers": rpc.servers_debug_state(),
        })

    async def stop(self) -> None:
        self.nodes.stop()
        self.jobs.stop()
        self.placement_groups.stop()
        self.task_events.stop()
        if self._server is not None:
            self._server.close()
        await self.store.close()
        self.stopped.set()


async def run(host: str, port: int, port_file: str | None, storage: str | None = None) -> None:
    server = GcsServer(host, port, storage or config.gcs_storage,
                       config.gcs_storage_namespace)
    try:
        await server.start()
    except StorageUnavailableError as exc:
        logger.error("%s", exc)
        print(f"ember GCS: {exc}", file=sys.stderr, flush=True)
        await server.store.close()
        raise SystemExit(1) from None
    except OSError as exc:  # the port was taken after the starter checked it
        print(f"ember GCS: cannot listen on {host}:{port}: {exc.strerror or exc}",
              file=sys.stderr, flush=True)
        await server.store.close()
        raise SystemExit(1) from None
    if port_file:
        tmp = port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(server.port))
        os.replace(tmp, port_file)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: loop.create_task(server.stop()))
    await server.stopped.wait()
