"""The process's core worker, reachable without import cycles.

``core`` is the :class:`~ember.core_worker.core_worker.CoreWorker` of this
process once ``ember.init()`` ran (driver) or the worker started; ``None``
otherwise.
"""
from __future__ import annotations

core = None


def require_core(what: str):
    if core is None:
        raise RuntimeError(
            f"{what} needs a connection to an ember cluster, and there is none. "
            "Call ember.init() first."
        )
    return core
