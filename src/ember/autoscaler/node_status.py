"""The life of a node the autoscaler launched, as the provider and the decision see it.

::

    LAUNCHING ──joined the GCS──► RUNNING ──idle past the timeout──► DRAINING
        │                            │  ▲                               │
        │                            │  └──── got work while draining ──┤
        └──── did not come up ───────┴──► FAILED          still idle ───┴──► (removed)

A provider reports LAUNCHING, RUNNING (its part done: the process or command
is up) or FAILED; the monitor adds DRAINING, which only it knows, and the
decision sees every state but FAILED (failed nodes are terminated first).
"""
from __future__ import annotations

import enum


class NodeStatus(enum.Enum):
    #: Asked of the provider; not yet registered with the GCS.
    LAUNCHING = "launching"
    #: Up: for a provider, its process or command; for the decision, joined the GCS.
    RUNNING = "running"
    #: Marked draining: no new work goes there; removed if it is still idle.
    DRAINING = "draining"
    #: It did not come up, or died; the provider's ``ProviderNode.error`` says why.
    FAILED = "failed"
