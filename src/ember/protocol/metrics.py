"""Messages of user metrics: each process reports its metrics to its node's raylet.

A process sends, about once a second and only when something changed, the
current cumulative value of each (metric, tag set) it recorded: a counter's
total, a gauge's last value, a histogram's bucket counts and sum. Cumulative
values make a lost or repeated report harmless: the raylet keeps the latest
per process and adds the processes up when Prometheus scrapes.
"""
from __future__ import annotations

import msgspec

from .common import Message

COUNTER = 0
GAUGE = 1
HISTOGRAM = 2


class MetricDefinition(msgspec.Struct, array_like=True, gc=False, frozen=True):
    name: str
    kind: int
    description: str = ""
    tag_keys: tuple[str, ...] = ()
    #: HISTOGRAM: the upper bounds of its buckets (+Inf is implied).
    boundaries: tuple[float, ...] = ()


class MetricSample(msgspec.Struct, array_like=True, gc=False):
    name: str
    #: (key, value) pairs, in the metric's tag_keys order.
    tags: tuple[tuple[str, str], ...]
    #: COUNTER: the total; GAUGE: the value; HISTOGRAM: the sum of observations.
    value: float
    #: HISTOGRAM: observations per bucket (not cumulative), the last one +Inf.
    buckets: list[int] = []


class ReportMetrics(Message):
    """A process's changed metrics (a notification to its raylet)."""

    worker_id: bytes
    definitions: list[MetricDefinition]
    samples: list[MetricSample]


class GetSystemMetrics(Message):
    """A node's system metrics now, as its ``/metrics`` exports them (the dashboard's
    charts sample them; the endpoint itself need not be enabled)."""


class GetSystemMetricsReply(Message):
    #: One sample per (metric, label set); ``tags`` are the Prometheus labels.
    samples: list[MetricSample]
