"""Each node's Prometheus ``/metrics`` endpoint: system metrics and user metrics.

The raylet serves it (``metrics_export_port``, set by ``ember start
--metrics-export-port``) on the node's own IP, loopback for a local cluster:
the endpoint is read-only, as Ray's is, but nothing beyond the node's bound
address should see it. prometheus-client does the exposition and the HTTP
(its server runs on a thread of its own).

Why a snapshot per scrape. A scrape arrives on the HTTP thread, but the
raylet's state belongs to its event loop; so the collector asks the loop for
one consistent snapshot (:meth:`NodeMetrics.snapshot`) and waits for it.
Nothing is computed while nobody scrapes, which keeps an idle node idle.

What is exported, with Ray's meaning under an ``ember_`` prefix: node CPU and
memory use, resources used and available, object store memory used and
spilled, workers by state, queued lease requests, the task attempts and actors
on the node by name and state (from the GCS: the head also counts those not
on a node yet, so a sum over nodes counts each once, as Ray's per-node
``ray_tasks`` does), and the latency of those GCS requests. User metrics (``ember.util.metrics``) arrive
from each process on the node as cumulative values; the latest per process
is kept and the processes are added up (gauges: the latest value set).
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
import time

import psutil

from ..protocol import gcs as gcs_msg
from ..protocol import metrics as pm
from ..protocol import task_events as te

logger = logging.getLogger(__name__)

#: GCS request latency buckets (seconds).
_LATENCY_BOUNDS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)


def port_file(session_dir: str, node_id: bytes) -> str:
    """Where a node writes ``ip:port`` of its metrics endpoint."""
    return os.path.join(session_dir, f"metrics_export_address_{node_id.hex()[:12]}")


class NodeMetrics:
    """The node's metric state (user metrics) and its exporter; runs in the raylet."""

    def __init__(self, node_id: bytes, node_ip: str, session_dir: str, *, pool, leases,
                 store, resources, gcs=None):
        self.node_id = node_id
        self.node_ip = node_ip
        self.session_dir = session_dir
        self._pool = pool
        self._leases = leases
        self._store = store
        self._resources = resources
        #: The GCS client: the node's task and actor counts.
        self.gcs = gcs
        #: The head also counts tasks and actors not placed on any node.
        self.is_head = False
        #: (worker id, metric name, tags) -> MetricSample; written on the loop, read on
        #: the HTTP thread under the lock.
        self._samples: dict[tuple, pm.MetricSample] = {}
        self._definitions: dict[str, pm.MetricDefinition] = {}
        self._lock = threading.Lock()
        self._gcs_latency = [0] * (len(_LATENCY_BOUNDS) + 1)
        self._gcs_latency_sum = 0.0
        self._loop = None
        self._server = None
        self.port = None
        psutil.cpu_percent(None)  # the first reading starts the interval

    def handlers(self):
        return {pm.ReportMetrics: self.report, pm.GetSystemMetrics: self.system_metrics}

    def report(self, conn, req: pm.ReportMetrics) -> None:
        with self._lock:
            for d in req.definitions:
                self._definitions[d.name] = d
            for s in req.samples:
                self._samples[(req.worker_id, s.name, s.tags)] = s

    # --- serving --------------------------------------------------------------------------

    def start(self, port: int, gcs=None, is_head: bool = False) -> int | None:
        """Serve ``/metrics`` on ``node_ip:port`` (0: a free port; < 0: none); returns the
        port. ``gcs``: the GCS client, for the node's task and actor counts."""
        if port < 0:
            return None
        try:
            from prometheus_client import start_http_server
            from prometheus_client.registry import CollectorRegistry
        except ImportError:
            logger.error("metrics_export_port is set but prometheus-client is not installed: "
                         "pip install 'ember[observability]'")
            return None
        self.gcs = gcs
        self.is_head = is_head
        self._loop = asyncio.get_running_loop()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self))
        self._server, _ = start_http_server(port, addr=self.node_ip, registry=registry)
        self.port = self._server.server_port
        path = port_file(self.session_dir, self.node_id)
        with open(path + ".tmp", "w") as f:
            f.write(f"{self.node_ip}:{self.port}")
        os.replace(path + ".tmp", path)
        logger.info("metrics at http://%s:%d/metrics", self.node_ip, self.port)
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
            try:
                os.unlink(port_file(self.session_dir, self.node_id))
            except FileNotFoundError:
                pass

    # --- collecting (the loop) -----------------------------------------------------------------

    async def system_metrics(self, conn, req: pm.GetSystemMetrics) -> pm.GetSystemMetricsReply:
        """The node's own system metrics (not its task and actor counts: the
        dashboard asks the GCS for those itself)."""
        snapshot = await self.snapshot(task_counts=False)
        return pm.GetSystemMetricsReply([
            pm.MetricSample(name, tuple(sorted((k, str(v)) for k, v in labels.items())),
                            float(value))
            for name, (_, _, rows) in snapshot.items() for labels, value in rows])

    async def snapshot(self, task_counts: bool = True) -> dict:
        """System metric values now, as ``{name: (kind, description, [(labels, value)])}``;
        with ``task_counts``, also the node's tasks and actors by name and state."""
        vm = psutil.virtual_memory()
        store = self._store.debug_state()
        stats = store.get("stats", store)
        workers = self._pool.debug_state().get("workers", {})
        total = self._resources.as_floats("total")
        available = self._resources.as_floats("available")
        node = {"NodeAddress": self.node_ip}
        out = {
            "ember_node_cpu_utilization": ("gauge", "CPU use of the node, percent",
                                           [(node, psutil.cpu_percent(None))]),
            "ember_node_mem_used": ("gauge", "Memory in use on the node, bytes",
                                    [(node, vm.total - vm.available)]),
            "ember_node_mem_total": ("gauge", "Memory of the node, bytes", [(node, vm.total)]),
            "ember_object_store_memory": ("gauge", "Object store bytes by location", [
                ({**node, "Location": "MMAP_SHM"}, stats.get("used", 0)),
                ({**node, "Location": "SPILLED"}, stats.get("spilled_bytes", 0))]),
            "ember_object_store_available_memory": (
                "gauge", "Object store bytes free",
                [(node, stats.get("capacity", 0) - stats.get("used", 0))]),
            "ember_object_store_num_local_objects": (
                "gauge", "Objects in the node's store", [(node, stats.get("num_objects", 0))]),
            "ember_workers": ("gauge", "Worker processes of the node by state",
                              [({**node, "State": s}, n) for s, n in workers.items()]),
            "ember_scheduler_queued_leases": (
                "gauge", "Lease requests queued at the node's lease manager",
                [(node, self._leases.debug_state().get("queued", 0))]),
            "ember_resources": ("gauge", "Logical resources by state", [
                ({**node, "Name": name, "State": state}, value)
                for name in total if not name.startswith("node:")
                for state, value in (("AVAILABLE", available.get(name, 0.0)),
                                     ("USED", total[name] - available.get(name, 0.0)))]),
        }
        if task_counts and self.gcs is not None and self.gcs.connected:
            out.update(await self._task_counts(node))
        return out

    async def _task_counts(self, node: dict) -> dict:
        """The task attempts and actors of this node (and, on the head, of none yet)."""
        try:
            started = time.perf_counter()
            tasks = await self.gcs.call(te.GetTaskEvents(
                node_counts_for=self.node_id, unassigned=self.is_head), timeout=5)
            self._observe_latency(time.perf_counter() - started)
            started = time.perf_counter()
            actors = await self.gcs.call(gcs_msg.ListActors(), timeout=5)
            self._observe_latency(time.perf_counter() - started)
        except Exception:  # noqa: BLE001 - a scrape must not fail for the GCS
            logger.debug("metrics: the GCS did not answer", exc_info=True)
            return {}
        actor_counts: dict[tuple[str, str], int] = {}
        for a in actors.actors:
            if a.node_id == self.node_id or (self.is_head and not a.node_id):
                key = (a.class_name, a.state)
                actor_counts[key] = actor_counts.get(key, 0) + 1
        return {
            "ember_tasks": ("gauge", "Task attempts of the node by name and state (the GCS's "
                            "recent history)",
                            [({**node, "Name": name, "State": state}, n)
                             for name, state, n in tasks.node_counts]),
            "ember_actors": ("gauge", "Actors of the node by class and state",
                             [({**node, "Name": name, "State": state}, n)
                              for (name, state), n in actor_counts.items()]),
        }

    def _observe_latency(self, seconds: float) -> None:
        index = next((i for i, b in enumerate(_LATENCY_BOUNDS) if seconds <= b),
                     len(_LATENCY_BOUNDS))
        self._gcs_latency[index] += 1
        self._gcs_latency_sum += seconds

    def snapshot_from_thread(self, timeout: float) -> dict:
        """:meth:`snapshot`, from a thread other than the node's loop (the HTTP server's)."""
        return asyncio.run_coroutine_threadsafe(self.snapshot(), self._loop).result(timeout)

    def gcs_latency(self) -> tuple[list[int], float]:
        """The GCS request latency histogram: counts per bucket of _LATENCY_BOUNDS (and
        one above them), and the sum of the latencies in seconds."""
        return self._gcs_latency, self._gcs_latency_sum

    def user_samples(self):
        """``[(definition, [(labels, value, buckets)])]``: the node's processes added up."""
        with self._lock:
            samples = list(self._samples.values())
            definitions = dict(self._definitions)
        merged: dict[tuple, list] = {}
        for s in samples:
            d = definitions.get(s.name)
            if d is None:
                continue
            entry = merged.get((s.name, s.tags))
            if entry is None:
                merged[(s.name, s.tags)] = [s.value, list(s.buckets)]
            elif d.kind == pm.GAUGE:
                entry[0] = s.value
            else:
                entry[0] += s.value
                entry[1] = [a + b for a, b in zip(entry[1], s.buckets)]
        by_metric: dict[str, list] = {}
        for (name, tags), (value, buckets) in merged.items():
            by_metric.setdefault(name, []).append((dict(tags), value, buckets))
        return [(definitions[name], rows) for name, rows in by_metric.items()]


class _Collector:
    """prometheus-client collector: runs on the HTTP thread, reads via the raylet's loop."""

    def __init__(self, metrics: NodeMetrics):
        self._metrics = metrics

    def collect(self):
        from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                            HistogramMetricFamily)
        m = self._metrics
        try:
            snapshot = m.snapshot_from_thread(10)
        except Exception:  # noqa: BLE001 - serve the user metrics even so
            logger.warning("metrics: no system snapshot", exc_info=True)
            snapshot = {}
        for name, (_, description, rows) in snapshot.items():
            labels = sorted({k for row_labels, _ in rows for k in row_labels})
            family = GaugeMetricFamily(name, description, labels=labels)
            for row_labels, value in rows:
                family.add_metric([str(row_labels.get(k, "")) for k in labels], value)
            yield family
        if m.gcs is not None:
            family = HistogramMetricFamily(
                "ember_gcs_request_latency_seconds",
                "Latency of the exporter's GCS requests, seconds")
            counts, total = m.gcs_latency()
            cumulative, buckets = 0, []
            for bound, count in zip(_LATENCY_BOUNDS + (float("inf"),), counts):
                cumulative += count
                buckets.append((_bucket_label(bound), cumulative))
            family.add_metric([], buckets, total)
            yield family
        for definition, rows in m.user_samples():
            labels = list(definition.tag_keys)
            if definition.kind == pm.COUNTER:
                family = CounterMetricFamily(definition.name, definition.description,
                                             labels=labels)
                for tags, value, _ in rows:
                    family.add_metric([tags.get(k, "") for k in labels], value)
            elif definition.kind == pm.GAUGE:
                family = GaugeMetricFamily(definition.name, definition.description,
                                           labels=labels)
                for tags, value, _ in rows:
                    family.add_metric([tags.get(k, "") for k in labels], value)
            else:
                family = HistogramMetricFamily(definition.name, definition.description,
                                               labels=labels)
                bounds = tuple(definition.boundaries) + (float("inf"),)
                for tags, value, counts in rows:
                    cumulative, buckets = 0, []
                    for bound, count in zip(bounds, counts):
                        cumulative += count
                        buckets.append((_bucket_label(bound), cumulative))
                    family.add_metric([tags.get(k, "") for k in labels], buckets, value)
            yield family


def _bucket_label(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))
