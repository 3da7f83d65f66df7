"""The last ten minutes of the cluster's system metrics, for the dashboard's charts.

Prometheus keeps history for those who run it; the dashboard must draw its
charts without one. So it samples, every ``interval_s``, the same values the
nodes' ``/metrics`` endpoints export, from the same code: task attempts by
state from the GCS task-event store (``GetTaskEvents(counts_only=True)``, as
``ember_tasks``), and from every raylet its system metrics
(``GetSystemMetrics``: ``NodeMetrics.snapshot``, behind ``ember_node_*`` and
``ember_object_store_*``), whether or not the endpoint is enabled.

Bounded: a ring buffer of ``capacity`` samples (200 x 3 s = 10 minutes), each a
few hundred bytes per node. A failed round (the GCS restarting) records
nothing rather than zeros, so a chart shows a gap, not a false drop.

Owned by the dashboard's event loop: the sampler task and the route handler
run there, so the deque needs no lock.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time

from ..observability import cluster
from ..protocol import metrics as pm
from ..protocol import task_events as te

logger = logging.getLogger(__name__)

#: Per-node values kept, from the exporter's metric names (labels told apart).
_NODE_METRICS = {
    ("ember_node_cpu_utilization", ()): "cpu_percent",
    ("ember_node_mem_used", ()): "mem_used",
    ("ember_node_mem_total", ()): "mem_total",
    ("ember_object_store_memory", (("Location", "MMAP_SHM"),)): "object_store_used",
    ("ember_object_store_memory", (("Location", "SPILLED"),)): "object_store_spilled",
    ("ember_object_store_available_memory", ()): "object_store_available",
    ("ember_object_store_num_local_objects", ()): "object_store_objects",
}


def node_values(samples: list[pm.MetricSample]) -> dict[str, float]:
    """The charted values of one node's ``GetSystemMetricsReply.samples``."""
    values = {}
    for s in samples:
        tags = tuple((k, v) for k, v in s.tags if k != "NodeAddress")
        name = _NODE_METRICS.get((s.name, tags))
        if name is not None:
            values[name] = s.value
    return values


class MetricsHistory:
    """A ring buffer of cluster samples and the task that fills it."""

    def __init__(self, gcs_address: str, interval_s: float = 3.0, capacity: int = 200,
                 timeout_s: float = 5.0):
        self.gcs_address = gcs_address
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        #: Oldest first; each {"time": s, "tasks": {state: n}, "nodes": {id: values}}.
        self.samples: collections.deque = collections.deque(maxlen=capacity)
        self._task: asyncio.Task | None = None
        #: Rounds that recorded nothing (the GCS or every raylet unreachable).
        self.failed_rounds = 0

    async def start(self) -> None:
        # resolve_address sets this process's token for the cluster (file reads).
        await asyncio.to_thread(cluster.resolve_address, self.gcs_address)
        self._task = asyncio.create_task(self._run(), name="metrics-history")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                self.samples.append(await self.sample())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a gap in the charts, not a dead sampler
                self.failed_rounds += 1
                logger.debug("metrics history: no sample this round: %s", exc)
            await asyncio.sleep(self.interval_s)

    async def sample(self) -> dict:
        """One round: the GCS's task counts and every live raylet's system metrics."""
        (counts,), (table, replies) = await asyncio.gather(
            cluster.ask_gcs(self.gcs_address, [te.GetTaskEvents(counts_only=True)],
                            self.timeout_s),
            cluster.ask_raylets(self.gcs_address, pm.GetSystemMetrics(), self.timeout_s))
        ips = {info.node_id: info.ip for info in table.nodes}
        return {
            "time": time.time(),
            "tasks": dict(counts.state_counts),
            "nodes": {node_id.hex(): {"node_ip": ips.get(node_id, ""),
                                      **node_values(reply.samples)}
                      for node_id, reply in replies.items() if reply is not None},
        }

    def as_json(self) -> dict:
        return {"interval_s": self.interval_s, "samples": list(self.samples)}

    def debug_state(self) -> dict:
        return {"running": self._task is not None and not self._task.done(),
                "interval_s": self.interval_s, "samples": len(self.samples),
                "capacity": self.samples.maxlen, "failed_rounds": self.failed_rounds,
                "last_sample_time": self.samples[-1]["time"] if self.samples else None}
