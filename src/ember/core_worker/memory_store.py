"""The owner's in-process store of small values, and the waits on them.

Small task results and small ``put`` values live here, in the memory of the
process that owns them, as in Ray; large ones go to the node's shared-memory
store and leave only a marker here. Entries are kept serialized and
deserialized on each ``get`` so that every reader gets its own copy of mutable
values, as with Ray.

Threads: the user's thread reads and waits, the I/O thread writes results as
replies arrive. One re-entrant lock (shared with the reference counter) guards
both tables; it must be re-entrant because an ``ObjectRef.__del__`` run by the
garbage collector can re-enter from inside a locked section.

A waiter is notified outside the lock, once per object it waits for.
"""
from __future__ import annotations

import threading

from ..protocol.common import VALUE_ERROR, SerializedValue


class CountdownWaiter:
    """Blocks a thread until ``count`` of the objects it waits for are ready.

    Objects count down either by notification (they arrived after the waiter
    was registered) or through :meth:`satisfied` (they were already there).
    Both subtract, never assign: a notification that lands between the
    registration and the ``satisfied`` call must not be overwritten, or the
    waiter would wait forever for an object that already arrived.
    """

    __slots__ = ("_remaining", "_lock", "_done", "_released")

    def __init__(self, count: int):
        self._remaining = count
        self._done = threading.Lock()
        self._done.acquire()
        self._lock = threading.Lock()
        self._released = False

    def notify(self, object_id: bytes) -> None:
        self.satisfied(1)

    def satisfied(self, n: int) -> None:
        """``n`` more of the awaited objects are ready."""
        with self._lock:
            self._remaining -= n
            if self._remaining <= 0 and not self._released:
                self._released = True
                self._done.release()

    def release(self) -> None:
        """Wake the waiting thread now, however many objects are still missing."""
        with self._lock:
            if not self._released:
                self._released = True
                self._done.release()

    @property
    def done(self) -> bool:
        return self._released

    def wait(self, timeout: float | None) -> bool:
        if timeout is None:
            return self._done.acquire()
        return self._done.acquire(timeout=max(timeout, 0))


class FailFastWaiter(CountdownWaiter):
    """A ``get`` of several objects: also woken by the first one that is an error.

    Ray raises a task's error from ``get([...])`` as soon as it is known,
    rather than after every other object (some may never come) is ready.
    """

    __slots__ = ("_store", "failed")

    def __init__(self, count: int, store: "MemoryStore"):
        super().__init__(count)
        self._store = store
        self.failed = False

    def notify(self, object_id: bytes) -> None:
        value = self._store.get(object_id)
        if value is not None and value.kind == VALUE_ERROR:
            self.failed = True
            self.release()
        else:
            self.satisfied(1)


class CallbackWaiter:
    """Calls ``callback(object_id)`` when an object is ready, on the putting thread."""

    __slots__ = ("notify",)

    def __init__(self, callback):
        self.notify = callback


class MemoryStore:
    def __init__(self, lock: threading.RLock):
        self._lock = lock
        self._objects: dict[bytes, SerializedValue] = {}
        self._waiters: dict[bytes, list] = {}

    def put(self, object_id: bytes, value: SerializedValue) -> None:
        with self._lock:
            self._objects[object_id] = value
            waiters = self._waiters.pop(object_id, None)
        if waiters:
            for waiter in waiters:
                waiter.notify(object_id)

    def get(self, object_id: bytes) -> SerializedValue | None:
        return self._objects.get(object_id)

    def contains(self, object_id: bytes) -> bool:
        return object_id in self._objects

    def wait_for(self, object_ids, waiter) -> int:
        """Register ``waiter`` on each absent object; return how many were absent."""
        absent = 0
        with self._lock:
            for oid in object_ids:
                if oid not in self._objects:
                    self._waiters.setdefault(oid, []).append(waiter)
                    absent += 1
        return absent

    def cancel_wait(self, object_ids, waiter) -> None:
        with self._lock:
            for oid in object_ids:
                waiters = self._waiters.get(oid)
                if waiters and waiter in waiters:
                    waiters.remove(waiter)
                    if not waiters:
                        del self._waiters[oid]

    def delete(self, object_id: bytes) -> None:
        with self._lock:
            self._objects.pop(object_id, None)

    def __len__(self):
        return len(self._objects)

    def debug_state(self) -> dict:
        return {"objects": len(self._objects), "waited_on": len(self._waiters)}
