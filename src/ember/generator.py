"""ObjectRefGenerator: what a streaming-generator task returns.

A remote generator function yields values one by one; the executor reports
each to the owner as soon as it is produced, and the owner's generator hands
out one ObjectRef per value, in order, blocking until the next one exists.
It ends (StopIteration) after the last value, or yields one last ref that
raises the task's error on ``get``.
"""
from __future__ import annotations

import asyncio
import threading

from .ids import object_id_for_return
from .object_ref import ObjectRef


class GeneratorState:
    """Owner-side state, updated on the I/O thread, read by the user's thread."""

    def __init__(self, task_id: bytes, on_finish=None):
        self.task_id = task_id
        #: Called (on the I/O thread) with this state once the task ended.
        self.on_finish = on_finish
        #: index -> ObjectRef of a yielded value not yet handed out
        self.available: dict = {}
        self.total: int | None = None
        self.error = None
        self.cond = threading.Condition()

    def add_item(self, index: int, ref) -> None:
        with self.cond:
            self.available[index] = ref
            self.cond.notify_all()

    def finish(self, count: int, error) -> None:
        with self.cond:
            self.total = count
            self.error = error
            self.cond.notify_all()
        if self.on_finish is not None:
            self.on_finish(self)


class ObjectRefGenerator:
    def __init__(self, state: GeneratorState, owner, core):
        self._state = state
        self._owner = owner
        self._core = core
        self._next = 0

    def __iter__(self):
        return self

    def __next__(self):
        ref = self._next_ref(timeout=None)
        if ref is None:
            raise StopIteration
        return ref

    def _next_ref(self, timeout):
        state = self._state
        index = self._next
        with state.cond:
            if self._must_wait(index):
                # A task iterating a generator lends its CPU while it waits: the
                # generator's own task may need it (one CPU, nested generators).
                with self._core.blocked():
                    self._wait_for(index, timeout)
            if index in state.available:
                self._next += 1
                return state.available.pop(index)
            if state.error is not None and index == state.total:
                # The task failed before yielding anything more: hand out its error once.
                self._next += 1
                oid = object_id_for_return(state.task_id, 1 << 20)
                ref = ObjectRef(oid, self._owner)
                self._core.store.put(oid, state.error)
                state.error = None
                return ref
            return None

    def _wait_for(self, index: int, timeout) -> None:
        while self._must_wait(index):
            if not self._state.cond.wait(timeout):
                raise TimeoutError("no next value yet")

    def _must_wait(self, index: int) -> bool:
        """Whether value ``index`` may still come but has not (the caller holds cond)."""
        state = self._state
        return index not in state.available and (state.total is None or index < state.total)

    def __aiter__(self):
        return self

    async def __anext__(self):
        loop = asyncio.get_running_loop()
        ref = await loop.run_in_executor(None, self._next_ref, None)
        if ref is None:
            raise StopAsyncIteration
        return ref

    def completed(self):
        return self._state.total is not None

    def is_finished(self) -> bool:
        """Whether every value was handed out (next() raises StopIteration)."""
        state = self._state
        with state.cond:
            return (state.total is not None and self._next >= state.total
                    and state.error is None)

    def next_ready(self) -> bool:
        """Whether next() would return at once (a ref, or StopIteration)."""
        state = self._state
        with state.cond:
            return self._next in state.available or state.total is not None

    def __repr__(self):
        return f"ObjectRefGenerator({self._state.task_id.hex()})"



class DynamicObjectRefGenerator:
    """The value of a ``num_returns="dynamic"`` task's ref: its values' ObjectRefs.

    Ray's older form of generator tasks: ``ray.get(ref)`` gives this once the
    task has yielded everything, and iterating it gives one ref per value.
    """

    def __init__(self, refs: list):
        self._refs = refs

    def __iter__(self):
        return iter(self._refs)

    def __len__(self) -> int:
        return len(self._refs)

    def __repr__(self):
        return f"DynamicObjectRefGenerator({len(self._refs)} refs)"
