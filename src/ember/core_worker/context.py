"""The process's core worker, reachable without import cycles.

``core`` is the :class:`~ember.core_worker.core_worker.CoreWorker` of this
process once ``ember.init()`` ran (driver) or the worker started; ``None``
otherwise.
"""
from __future__ import annotations

import logging

core = None


def require_core(what: str, auto_init: bool = False):
    """This process's core worker.

    With ``auto_init``, a driver that never called ``init()`` starts a local
    cluster first, as Ray does on the first ``.remote()``, ``put`` or ``get``.
    """
    if core is None and auto_init:
        from .. import worker
        logging.getLogger("ember").info(
            "%s called before ember.init(): starting a local cluster.", what)
        worker.init()
    if core is None:
        raise RuntimeError(
            f"{what} needs a connection to an ember cluster, and there is none. "
            "Call ember.init() first."
        )
    return core
