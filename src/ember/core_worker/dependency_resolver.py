"""Waiting for a task's arguments before it is sent.

A task (normal, actor call, or actor creation) is sent only once every
top-level ObjectRef argument owned by this process has a value, and once its
function or class has been exported. Then small owned values are inlined into
the spec, so the executor never has to call back for them. An argument whose
value is an error makes the task fail with that error without running.

Runs on the I/O thread. Values can arrive from any thread (a ``put``), so the
countdown posts its completion back to the I/O thread.
"""
from __future__ import annotations

from .memory_store import CallbackWaiter


class DependencyResolver:
    def __init__(self, core):
        self._core = core

    def resolve(self, task, on_ready) -> None:
        """Call ``on_ready(task)`` on the I/O thread once ``task``'s dependencies exist."""
        core = self._core
        deps = core.unresolved_dependencies(task)
        if not deps:
            on_ready(task)
            return
        # Start above any reachable count so a racing notification cannot hit 0 early.
        task.unresolved = len(deps)

        def one_ready(_object_id, task=task):
            task.unresolved -= 1
            if task.unresolved == 0:
                core.io.post(on_ready, task)
        absent = core.store.wait_for(deps, CallbackWaiter(one_ready))
        task.unresolved -= len(deps) - absent
        if task.unresolved == 0:
            on_ready(task)
