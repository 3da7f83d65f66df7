"""``ember.util.metrics``: user metrics from tasks, actors and drivers, as ``ray.util.metrics``.

    from ember.util.metrics import Counter, Gauge, Histogram
    requests = Counter("requests", description="Requests served.", tag_keys=("route",))
    requests.inc(1, tags={"route": "/"})

Values are kept in this process (a dict update under a lock: cheap enough for a
hot loop) and reported about once a second, cumulatively, to the node's raylet,
which exposes them on the node's Prometheus ``/metrics`` endpoint (see
``ember/observability/metrics.py``) next to the system metrics. As in Ray,
user metrics keep their own names (no ``ember_`` prefix), and an invalid name
warns rather than fails.
"""
from __future__ import annotations

import logging
import re
import threading
import warnings

from ..config import config
from ..protocol import metrics as pm

logger = logging.getLogger(__name__)

_VALID_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


class Metric:
    """Base of Counter, Gauge and Histogram: a name, tag keys and default tags."""

    _kind = pm.COUNTER

    def __init__(self, name: str, description: str = "", tag_keys: tuple | None = None):
        if not name:
            raise ValueError("Empty name is not allowed. Please provide a metric name.")
        if not _VALID_NAME.match(name):
            warnings.warn(f"Invalid metric name {name!r}: a Prometheus name matches "
                          f"{_VALID_NAME.pattern}; it will be exported with the invalid "
                          "characters replaced by '_'.", stacklevel=3)
            name = re.sub(r"[^a-zA-Z0-9_:]", "_", name)
            if name[0].isdigit():
                name = "_" + name
        if tag_keys is not None and (not isinstance(tag_keys, tuple) or not all(
                isinstance(k, str) for k in tag_keys)):
            raise TypeError(f"tag_keys must be a tuple of str, got {tag_keys!r}.")
        self.name = name
        self._description = description
        self._tag_keys = tuple(tag_keys or ())
        self._default_tags: dict[str, str] = {}

    @property
    def info(self) -> dict:
        return {"name": self.name, "description": self._description,
                "tag_keys": self._tag_keys, "default_tags": dict(self._default_tags)}

    def set_default_tags(self, default_tags: dict[str, str]) -> "Metric":
        for key in default_tags:
            if key not in self._tag_keys:
                raise ValueError(f"Unrecognized tag key {key!r}; the metric {self.name!r} has "
                                 f"tag_keys {self._tag_keys}.")
        self._default_tags = dict(default_tags)
        return self

    def _tags(self, tags: dict | None) -> tuple:
        merged = dict(self._default_tags)
        if tags:
            for key in tags:
                if key not in self._tag_keys:
                    raise ValueError(f"Unrecognized tag key {key!r}; the metric {self.name!r} "
                                     f"has tag_keys {self._tag_keys}.")
            merged.update(tags)
        missing = [k for k in self._tag_keys if k not in merged]
        if missing:
            raise ValueError(f"Missing value for tag key(s) {missing} of the metric "
                             f"{self.name!r}: pass them in tags= or set_default_tags().")
        return tuple((k, str(merged[k])) for k in self._tag_keys)

    def definition(self) -> pm.MetricDefinition:
        """What the recorder reports about this metric besides its values."""
        return pm.MetricDefinition(self.name, self._kind, self._description, self._tag_keys)


class Counter(Metric):
    """A cumulative total that only goes up (exported as ``<name>_total``)."""

    _kind = pm.COUNTER

    def inc(self, value: float = 1.0, tags: dict | None = None) -> None:
        if value <= 0:
            raise ValueError(f"value must be > 0, got {value}")
        _recorder.add(self, self._tags(tags), value)


class Gauge(Metric):
    """A value that goes up and down; the last one set is exported."""

    _kind = pm.GAUGE

    def set(self, value: float, tags: dict | None = None) -> None:
        if value is None:
            return
        _recorder.set(self, self._tags(tags), float(value))


class Histogram(Metric):
    """Observations counted in buckets bounded by ``boundaries``."""

    _kind = pm.HISTOGRAM

    def __init__(self, name: str, description: str = "", boundaries: list | None = None,
                 tag_keys: tuple | None = None):
        super().__init__(name, description, tag_keys)
        if not boundaries:
            raise ValueError("boundaries must be a non-empty list of increasing positive "
                             "numbers, e.g. [0.1, 1, 10].")
        if any(b <= 0 for b in boundaries) or sorted(boundaries) != list(boundaries):
            raise ValueError(f"Invalid boundaries {boundaries}: they must be positive and "
                             "increasing.")
        self.boundaries = tuple(float(b) for b in boundaries)

    def observe(self, value: float, tags: dict | None = None) -> None:
        _recorder.observe(self, self._tags(tags), float(value))

    def definition(self) -> pm.MetricDefinition:
        """What the recorder reports about this metric besides its values."""
        return pm.MetricDefinition(self.name, self._kind, self._description, self._tag_keys,
                                   self.boundaries)

    @property
    def info(self) -> dict:
        return {**super().info, "boundaries": list(self.boundaries)}


class _Recorder:
    """This process's metric values, reported to its raylet about once a second."""

    def __init__(self):
        self._lock = threading.Lock()
        #: (name, tags) -> [definition, value, buckets or None]
        self._values: dict[tuple, list] = {}
        self._dirty: set[tuple] = set()
        self._started_for = None

    def add(self, metric: Metric, tags: tuple, value: float) -> None:
        key = (metric.name, tags)
        with self._lock:
            entry = self._values.get(key)
            if entry is None:
                entry = self._values[key] = [metric.definition(), 0.0, None]
            entry[1] += value
            self._dirty.add(key)
        self._ensure_reporting()

    def set(self, metric: Metric, tags: tuple, value: float) -> None:
        key = (metric.name, tags)
        with self._lock:
            entry = self._values.get(key)
            if entry is None:
                entry = self._values[key] = [metric.definition(), 0.0, None]
            entry[1] = value
            self._dirty.add(key)
        self._ensure_reporting()

    def observe(self, metric: Histogram, tags: tuple, value: float) -> None:
        key = (metric.name, tags)
        bounds = metric.boundaries
        index = next((i for i, b in enumerate(bounds) if value <= b), len(bounds))
        with self._lock:
            entry = self._values.get(key)
            if entry is None:
                entry = self._values[key] = [metric.definition(), 0.0, [0] * (len(bounds) + 1)]
            entry[1] += value
            entry[2][index] += 1
            self._dirty.add(key)
        self._ensure_reporting()

    def take(self, worker_id: bytes) -> pm.ReportMetrics | None:
        """The changed values as one report, or None if nothing changed."""
        with self._lock:
            if not self._dirty:
                return None
            dirty, self._dirty = self._dirty, set()
            entries = [(key, self._values[key]) for key in dirty]
            samples = [pm.MetricSample(name, tags, value, list(buckets) if buckets else [])
                       for (name, tags), (_, value, buckets) in entries]
            definitions = {d.name: d for _, (d, _, _) in entries}
        return pm.ReportMetrics(worker_id, list(definitions.values()), samples)

    def _ensure_reporting(self) -> None:
        """Start the report timer on this process's core worker, once per core worker."""
        from ..core_worker import context
        core = context.core
        if core is None or self._started_for is core:
            return
        self._started_for = core
        core.io.post(self._schedule, core)

    def _schedule(self, core) -> None:
        core.io.loop.call_later(config.metrics_report_interval_ms / 1000, self._report, core)

    def _report(self, core) -> None:
        """I/O thread: send what changed to the raylet, then come again."""
        if core.shutting_down or core.node.raylet is None or core.node.raylet.closed:
            return
        report = self.take(core.worker_id)
        if report is not None:
            try:
                core.node.raylet.notify(report)
            except ConnectionError:
                return
        self._schedule(core)


_recorder = _Recorder()

__all__ = ["Counter", "Gauge", "Histogram", "Metric"]
