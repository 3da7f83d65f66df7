"""Reference counts for every object this process owns or borrows.

An object stays alive while any of these is non-zero (Ray's ownership rules):

- ``local``: live ``ObjectRef`` objects in this process;
- ``contained``: values held here that contain a ref to it (a ``put`` value, a
  task's return value, the arguments of the task being executed);
- ``borrowers`` (owner only): other processes that hold it, each with the
  number of registrations it has not yet given back.

The protocol that keeps a ref valid while it travels: **a process that sends a
value containing refs to another process first registers the receiver as a
borrower of those refs at their owners** (locally for refs it owns, by an
acknowledged ``AddBorrower`` otherwise). The receiver counts the registrations
it received (``registrations``) and, when its own counts of the object reach
zero, returns them all in one ``RemoveBorrower``. Counting registrations rather
than flagging "is a borrower" makes a registration and a removal that cross
on the wire come out right.

When an owned object's counts all reach zero, it is freed: its value leaves
the memory store, ``on_free`` callbacks free copies in object stores, and the
refs its value contained are released in turn.

Threads: any thread may call in (``ObjectRef.__del__`` runs wherever the
garbage collector runs). One re-entrant lock, shared with the memory store,
guards everything; callbacks run after the lock is released.
"""
from __future__ import annotations

import threading
import traceback

from ..config import config
from ..protocol.common import Address, ObjectRefInfo


def _call_site() -> str:
    """The user's frame that made the ref: the innermost one outside ember."""
    for frame in reversed(traceback.extract_stack(limit=16)):
        if "/ember/" not in frame.filename:
            return f"{frame.filename}:{frame.lineno} in {frame.name}"
    return "(unknown)"


class Reference:
    __slots__ = ("local", "contained", "owner", "borrowers", "registrations", "nested",
                 "value_node", "locations", "call_site")

    def __init__(self, owner: Address | None):
        self.local = 0
        self.contained = 0
        #: None when this process owns the object.
        self.owner = owner
        #: Owner side: borrower worker id -> [address, outstanding registrations]
        self.borrowers: dict[bytes, list] | None = None
        #: Borrower side: registrations received and not yet returned.
        self.registrations = 0
        #: Refs contained in this object's value, released when it is freed.
        self.nested: list[ObjectRefInfo] | None = None
        #: Node whose object store holds this (owned) object's primary copy.
        self.value_node = b""
        #: Owner side: other nodes whose stores hold secondary copies (pulled by
        #: readers there); None if none. Freeing the object deletes them too.
        self.locations: set[bytes] | None = None
        #: Where the first ref was made, if config.record_ref_creation_sites.
        self.call_site = ""


class ReferenceCounter:
    def __init__(self, lock: threading.RLock, memory_store, own_worker_id: bytes = b""):
        self._lock = lock
        self._store = memory_store
        self.own_worker_id = own_worker_id
        self.refs: dict[bytes, Reference] = {}
        #: Called with (object_id, Reference) when an owned object is freed.
        self.on_free: list = []
        #: Called with [(owner, object_id, registrations)] to send RemoveBorrower.
        self.on_borrows_released = None
        self.own_address: Address | None = None
        self.record_call_sites = config.record_ref_creation_sites

    def snapshot(self) -> list[tuple[bytes, Reference]]:
        """A copy of the table, for ``ember memory``."""
        with self._lock:
            return list(self.refs.items())

    # --- local refs -----------------------------------------------------------------

    def _owner_of(self, owner: Address | None) -> Address | None:
        if owner is None or owner.worker_id == self.own_worker_id:
            return None
        return owner

    def add_local_ref(self, object_id: bytes, owner) -> None:
        with self._lock:
            ref = self.refs.get(object_id)
            if ref is None:
                ref = self.refs[object_id] = Reference(self._owner_of(owner))
                if self.record_call_sites:
                    ref.call_site = _call_site()
            ref.local += 1

    def remove_local_ref(self, object_id: bytes) -> None:
        released = []
        with self._lock:
            ref = self.refs.get(object_id)
            if ref is None:
                return
            ref.local -= 1
            self._maybe_release(object_id, ref, released)
        self._after_release(released)

    # --- containment ------------------------------------------------------------------

    def hold(self, infos: list[ObjectRefInfo], registered: bool) -> None:
        """A value containing ``infos`` arrived here or was made here.

        ``registered``: the sender registered this process as a borrower of
        them (true for anything received from another process).
        """
        with self._lock:
            for info in infos:
                ref = self.refs.get(info.object_id)
                if ref is None:
                    ref = self.refs[info.object_id] = Reference(self._owner_of(info.owner))
                ref.contained += 1
                if registered and ref.owner is not None:
                    ref.registrations += 1

    def release(self, infos: list[ObjectRefInfo]) -> None:
        """A value that contained ``infos`` is gone from this process."""
        released = []
        with self._lock:
            for info in infos:
                ref = self.refs.get(info.object_id)
                if ref is not None:
                    ref.contained -= 1
                    self._maybe_release(info.object_id, ref, released)
        self._after_release(released)

    def store_value(self, object_id: bytes, value) -> bool:
        """Keep a result or fetched value, unless every ref to it is already gone.

        The refs nested in the value were registered for us by whoever sent it;
        they stay held while the value is kept, and are given back at once if
        nobody wants the value any more.
        """
        nested = value.nested_refs
        with self._lock:
            ref = self.refs.get(object_id)
            if ref is not None and ref.nested is None:
                if nested:
                    self.hold(nested, registered=True)
                    ref.nested = nested
                self._store.put(object_id, value)
                return True
        if nested:  # nobody wants it: take the registrations and give them back
            self.hold(nested, registered=True)
            self.release(nested)
        return ref is not None

    def set_nested(self, object_id: bytes, nested: list[ObjectRefInfo]) -> None:
        """An owned value made here (put) contains ``nested``; hold them while it lives."""
        if not nested:
            return
        with self._lock:
            ref = self.refs.get(object_id)
            if ref is None:
                return
            self.hold(nested, registered=False)
            ref.nested = nested

    # --- borrowers (owner side) -----------------------------------------------------------

    def add_borrower(self, object_id: bytes, borrower: Address) -> bool:
        """Count one registration of ``borrower``; False if the object is already freed."""
        with self._lock:
            ref = self.refs.get(object_id)
            if ref is None or ref.owner is not None:
                return False
            if ref.borrowers is None:
                ref.borrowers = {}
            entry = ref.borrowers.get(borrower.worker_id)
            if entry is None:
                ref.borrowers[borrower.worker_id] = [borrower, 1]
            else:
                entry[1] += 1
            return True

    def remove_borrower(self, object_id: bytes, worker_id: bytes, count: int) -> None:
        released = []
        with self._lock:
            ref = self.refs.get(object_id)
            if ref is None or not ref.borrowers:
                return
            entry = ref.borrowers.get(worker_id)
            if entry is None:
                return
            entry[1] -= count
            if entry[1] <= 0:
                del ref.borrowers[worker_id]
            self._maybe_release(object_id, ref, released)
        self._after_release(released)

    def drop_borrower(self, worker_id: bytes) -> None:
        """A borrower process died: it holds nothing any more."""
        released = []
        with self._lock:
            for object_id, ref in list(self.refs.items()):
                if ref.borrowers and worker_id in ref.borrowers:
                    del ref.borrowers[worker_id]
                    self._maybe_release(object_id, ref, released)
        self._after_release(released)

    # --- release ------------------------------------------------------------------------

    def _maybe_release(self, object_id: bytes, ref: Reference, released: list) -> None:
        if ref.local > 0 or ref.contained > 0 or ref.borrowers:
            return
        del self.refs[object_id]
        self._store.delete(object_id)
        released.append((object_id, ref))
        if ref.nested:
            for info in ref.nested:
                inner = self.refs.get(info.object_id)
                if inner is not None:
                    inner.contained -= 1
                    self._maybe_release(info.object_id, inner, released)

    def _after_release(self, released: list) -> None:
        if not released:
            return
        returns = []
        for object_id, ref in released:
            if ref.owner is None:
                for callback in self.on_free:
                    callback(object_id, ref)
            elif ref.registrations:
                returns.append((ref.owner, object_id, ref.registrations))
        if returns and self.on_borrows_released is not None:
            self.on_borrows_released(returns)

    # --- queries ------------------------------------------------------------------------

    def is_referenced(self, object_id: bytes) -> bool:
        return object_id in self.refs

    def owned_in_use(self) -> int:
        """How many objects this process owns that are still referenced anywhere.

        While this is non-zero the process must not exit voluntarily (see
        ``ExitIfIdle``): owned objects die with their owner.
        """
        with self._lock:
            return sum(ref.owner is None for ref in self.refs.values())

    def count(self, object_id: bytes) -> int:
        ref = self.refs.get(object_id)
        return 0 if ref is None else ref.local

    def owned_in_store(self, object_id: bytes, node_id: bytes) -> None:
        with self._lock:
            ref = self.refs.get(object_id)
            if ref is not None:
                ref.value_node = node_id

    def add_location(self, object_id: bytes, node_id: bytes) -> bool:
        """A secondary copy of an owned object lives on ``node_id``; False if it is freed."""
        with self._lock:
            ref = self.refs.get(object_id)
            if ref is None or ref.owner is not None:
                return False
            if node_id != ref.value_node:
                if ref.locations is None:
                    ref.locations = set()
                ref.locations.add(node_id)
            return True

    def __len__(self):
        return len(self.refs)

    def debug_state(self) -> dict:
        owned = sum(r.owner is None for r in self.refs.values())
        return {"referenced": len(self.refs), "owned": owned,
                "borrowed": len(self.refs) - owned,
                "with_borrowers": sum(bool(r.borrowers) for r in self.refs.values())}
