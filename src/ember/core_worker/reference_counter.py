"""Reference counts for the objects this process holds refs to.

Each live ``ObjectRef`` in this process counts once. When the count of an
object drops to zero, this process no longer needs it: an owned object is
freed from the memory store; a borrowed value cached here is dropped.

Refs that a pending task needs (its arguments) stay alive because the
submitter holds the ObjectRef objects until the task finishes, so those count
as local refs too.

Shares the memory store's re-entrant lock, so that "store a result only if
someone still wants it" is atomic with respect to the last ref being dropped.
"""
from __future__ import annotations

import threading


class ReferenceCounter:
    def __init__(self, lock: threading.RLock, memory_store, own_address=None):
        self._lock = lock
        self._store = memory_store
        self.own_address = own_address
        self._counts: dict[bytes, int] = {}
        #: object id -> owner address, for objects owned by other processes.
        self.borrowed: dict[bytes, object] = {}
        #: Callbacks run with the object id when its count reaches zero.
        self.on_zero: list = []

    def add_local_ref(self, object_id: bytes, owner) -> None:
        with self._lock:
            self._counts[object_id] = self._counts.get(object_id, 0) + 1

    def remove_local_ref(self, object_id: bytes) -> None:
        with self._lock:
            count = self._counts.get(object_id, 0) - 1
            if count > 0:
                self._counts[object_id] = count
                return
            self._counts.pop(object_id, None)
            self.borrowed.pop(object_id, None)
            self._store.delete(object_id)
        for callback in self.on_zero:
            callback(object_id)

    def add_borrowed(self, object_id: bytes, owner) -> None:
        if owner is not None and owner != self.own_address:
            with self._lock:
                self.borrowed[object_id] = owner

    def is_referenced(self, object_id: bytes) -> bool:
        return object_id in self._counts

    def put_if_referenced(self, object_id: bytes, value) -> bool:
        """Store a result unless every ref to it is already gone."""
        with self._lock:
            if object_id not in self._counts:
                return False
            self._store.put(object_id, value)
            return True

    def count(self, object_id: bytes) -> int:
        return self._counts.get(object_id, 0)

    def __len__(self):
        return len(self._counts)

    def debug_state(self) -> dict:
        return {"referenced": len(self._counts), "borrowed": len(self.borrowed)}
