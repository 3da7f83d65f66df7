"""ObjectRef: a handle to a value that exists, or will exist, somewhere in the cluster.

An ObjectRef carries its object id and its owner's address, so that any process
holding it can ask the owner for the value. Creating one adds a local
reference in this process's reference counter and dropping it removes one; the
owner frees the value when no reference is left anywhere.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import os
import weakref

from .core_worker import context
from .core_worker.serialization import record_ref
from .ids import OBJECT_ID_SIZE, TaskID


class ObjectRef:
    #: Public slots, not properties: task submission, put and get read them per ref.
    __slots__ = ("object_id", "owner", "_counted", "__weakref__")

    def __init__(self, object_id: bytes, owner=None, *, _add_ref: bool = True):
        self.object_id = object_id
        self.owner = owner
        core = context.core
        self._counted = _add_ref and core is not None
        if self._counted:
            core.references.add_local_ref(object_id, owner)

    def __del__(self):
        if self._counted:
            core = context.core
            if core is not None:
                try:
                    core.references.remove_local_ref(self.object_id)
                except Exception:  # interpreter shutdown
                    pass

    # --- identity -------------------------------------------------------------

    @classmethod
    def from_random(cls) -> "ObjectRef":
        """A ref to no object, with a random id (Ray's; for tests and placeholders)."""
        return cls(os.urandom(OBJECT_ID_SIZE), _add_ref=False)

    @classmethod
    def from_binary(cls, object_id: bytes) -> "ObjectRef":
        """A ref with ``object_id``, not counted and with no owner known."""
        if not isinstance(object_id, bytes) or len(object_id) != OBJECT_ID_SIZE:
            raise ValueError(f"ObjectRef.from_binary needs {OBJECT_ID_SIZE} bytes, got "
                             f"{object_id!r}.")
        return cls(object_id, _add_ref=False)

    @classmethod
    def nil(cls) -> "ObjectRef":
        return cls(b"\xff" * OBJECT_ID_SIZE, _add_ref=False)

    def is_nil(self) -> bool:
        return self.object_id == b"\xff" * OBJECT_ID_SIZE

    def binary(self) -> bytes:
        return self.object_id

    def hex(self) -> str:
        return self.object_id.hex()

    def task_id(self):
        return TaskID(self.object_id[:24])

    def job_id(self):
        return self.task_id().job_id()

    def owner_address(self):
        return self.owner

    def __hash__(self):
        return hash(self.object_id)

    def __eq__(self, other):
        return isinstance(other, ObjectRef) and other.object_id == self.object_id

    def __repr__(self):
        return f"ObjectRef({self.object_id.hex()})"

    def __reduce__(self):
        record_ref(self.object_id, self.owner)
        return _rebuild, (self.object_id, self.owner)

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    # --- waiting ----------------------------------------------------------------

    def future(self) -> concurrent.futures.Future:
        """A concurrent.futures.Future that resolves to the value (or its error)."""
        return context.require_core("ObjectRef.future()").future_for(self)

    def __await__(self):
        return self.as_future().__await__()

    def as_future(self) -> asyncio.Future:
        """An asyncio future on the running loop that resolves to the value."""
        return asyncio.wrap_future(self.future())

    # asyncio.wait() on Python 3.11+ no longer wraps awaitables in tasks: it calls
    # add_done_callback / remove_done_callback / done on what it is given. These
    # give an ObjectRef that much of an asyncio.Future's interface.

    def add_done_callback(self, fn, *, context=None) -> None:
        """Call ``fn(self)`` once the value (or its error) exists.

        Called from an asyncio loop, ``fn`` runs on that loop, as a Future's
        callbacks do; otherwise it runs on whichever thread saw the value arrive.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        state = _completion(self)
        state.callbacks.append(fn)

        def fire(_fut, fn=fn):
            if fn not in state.callbacks:
                return  # removed meanwhile
            state.callbacks.remove(fn)
            if loop is None:
                fn(self)
            elif not loop.is_closed():
                loop.call_soon_threadsafe(fn, self, context=context)
        state.future.add_done_callback(fire)

    def remove_done_callback(self, fn) -> int:
        """Forget ``fn`` (every time it was added); returns how many were removed."""
        state = _COMPLETIONS.get(self)
        if state is None:
            return 0
        removed = state.callbacks.count(fn)
        state.callbacks[:] = [cb for cb in state.callbacks if cb != fn]
        return removed

    def done(self) -> bool:
        """True once the value (or its error) exists; does not wait or fetch it."""
        state = _COMPLETIONS.get(self)
        if state is not None:
            return state.future.done()
        core = context.require_core("ObjectRef.done()")
        ready, _ = core.wait_objects([self], 1, 0, False)
        return bool(ready)

    def cancelled(self) -> bool:
        return False

    def result(self, timeout=None):
        """The value, waiting for it (``ember.get(self, timeout=timeout)``)."""
        return _completion(self).future.result(timeout)

    def exception(self, timeout=None):
        """The error the value is (a failed task's), or None."""
        return _completion(self).future.exception(timeout)

    def _on_completed(self, callback):
        fut = self.future()
        fut.add_done_callback(lambda f: callback(f.result() if f.exception() is None
                                                 else f.exception()))


class _Completion:
    """One future per ref for the Future-like methods, and the callbacks added."""
    __slots__ = ("future", "callbacks")

    def __init__(self, ref: ObjectRef):
        self.future = ref.future()
        self.callbacks: list = []


#: ref -> its _Completion, for as long as the ref is alive.
_COMPLETIONS: "weakref.WeakKeyDictionary[ObjectRef, _Completion]" = weakref.WeakKeyDictionary()


def _completion(ref: ObjectRef) -> _Completion:
    state = _COMPLETIONS.get(ref)
    if state is None:
        state = _COMPLETIONS[ref] = _Completion(ref)
    return state


def _rebuild(object_id: bytes, owner) -> ObjectRef:
    # Whoever sent the value this ref came in registered us as a borrower
    # (see core_worker/reference_counter.py); here it is just a local ref.
    return ObjectRef(object_id, owner)
