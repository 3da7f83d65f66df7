"""The process's core worker, reachable without import cycles.

``core`` is the :class:`~ember.core_worker.core_worker.CoreWorker` of this
process once ``ember.init()`` ran (driver) or the worker started; ``None``
otherwise. This module imports nothing of ember's: every API module may
import it. ``ember.init`` reaches it by injection (:func:`set_auto_init`), not
by an import that would tie the core worker to the public API.
"""
from __future__ import annotations

import logging

core = None
_auto_init = None


def set_auto_init(init) -> None:
    """Set what starts a local cluster for a driver that never called ``init()``."""
    global _auto_init
    _auto_init = init


def require_core(what: str, auto_init: bool = False):
    """This process's core worker.

    With ``auto_init``, a driver that never called ``init()`` starts a local
    cluster first, as Ray does on the first ``.remote()``, ``put`` or ``get``.
    """
    if core is None and auto_init and _auto_init is not None:
        logging.getLogger("ember").info(
            "%s called before ember.init(): starting a local cluster.", what)
        _auto_init()
    if core is None:
        raise RuntimeError(
            f"{what} needs a connection to an ember cluster, and there is none. "
            "Call ember.init() first."
        )
    return core
