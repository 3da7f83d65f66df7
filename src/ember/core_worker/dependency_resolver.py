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

from ..ids import object_id_for_return
from ..protocol import core_worker as cw
from ..protocol.common import VALUE_ERROR, VALUE_IN_STORE
from .memory_store import CallbackWaiter


class DependencyResolver:
    def __init__(self, io, store, functions, info):
        self._io = io
        self._store = store
        self._functions = functions
        self._info = info

    def resolve(self, task, on_ready) -> None:
        """Call ``on_ready(task)`` on the I/O thread once ``task``'s dependencies exist."""
        deps = self._unresolved(task)
        if not deps:
            on_ready(task)
            return
        # Start above any reachable count so a racing notification cannot hit 0 early.
        task.unresolved = len(deps)

        def one_ready(_object_id, task=task):
            task.unresolved -= 1
            if task.unresolved == 0:
                self._io.post(on_ready, task)
        absent = self._store.wait_for(deps, CallbackWaiter(one_ready))
        task.unresolved -= len(deps) - absent
        if task.unresolved == 0:
            on_ready(task)

    def _unresolved(self, task) -> list[bytes]:
        owns, store = self._info.owns, self._store
        deps = [arg.object_id for arg in task.spec.args
                if arg.object_id and owns(arg.owner) and not store.contains(arg.object_id)]
        export = self._functions.export_marker(task.spec.function_id)
        if export is not None and not store.contains(export):
            deps.append(export)
        return deps

    def inline(self, spec: cw.TaskSpec):
        """Replace owned small ref arguments by their values.

        Returns the error returns if an argument holds an error: such a task
        fails with that error without running, as in Ray.
        """
        for arg in spec.args:
            if arg.object_id and self._info.owns(arg.owner):
                value = self._store.get(arg.object_id)
                if value is None:
                    continue
                if value.kind == VALUE_ERROR:
                    n = max(spec.num_returns, 1)
                    return [cw.ReturnObject(object_id_for_return(spec.task_id, i), value)
                            for i in range(n)]
                if value.kind == VALUE_IN_STORE:
                    continue  # large: the executor reads it from its node's store
                arg.value = value
                arg.object_id = b""
                arg.owner = None
        return None
