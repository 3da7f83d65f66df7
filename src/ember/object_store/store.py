"""The node's object store: which objects live where in the arena, and who reads them.

It lives in the raylet and does no network I/O; :mod:`.service` puts it on
the wire. Every method runs on the raylet's event loop (no locks). Disk I/O
(spilling, restoring, deleting spill files) runs on one thread of its own, so
the loop keeps serving while megabytes move.

Policy, as in Ray's plasma store and local object manager:

- Objects are immutable once sealed. A reader *pins* what it gets, per client,
  and a pinned object is never evicted, spilled or moved: the reader holds
  zero-copy views of its pages. A disconnected client's pins are dropped.
- When an allocation does not fit, the store makes room in this order:
  (a) evict unpinned *secondary* copies (copies pulled from other nodes; the
  primary lives elsewhere), least recently used first; (b) spill unpinned
  *primary* copies to ``<session_dir>/spill/``, least recently used first,
  preferring those already on disk, which cost nothing to drop;
  (c) fail with ObjectStoreFullError, which says what is pinned and what to do.
  It does not wait for pins to go away: a create that waits on readers who
  wait on that create would deadlock.
- An object larger than the whole store is not refused: it is created in a
  file of its own in the spill directory (Ray's "fallback allocation"), which
  the creator writes and readers map, so its pages are the kernel's page cache,
  written back to disk under memory pressure. Such an *on-disk* object has no
  arena space; it is never evicted, spilled or restored, and its file goes when
  it is freed. Only a full disk refuses it.
- Reading a spilled object restores it transparently (its file is kept, so
  spilling it again is free). Restores and creates that need room queue on
  one lock, so two of them never spill for each other's space.
- Deleting an object that is still pinned (or being written, spilled or
  restored) unlinks it at once (new readers miss it; the id may even be
  created again) but keeps its memory until the last pin goes.

Object lifecycle. ``Entry.transition`` is the only place that changes ``state``::

             seal                   spill (unpinned primary, store full)
    CREATED ──────────► SEALED ───────────────────────────────────► SPILLED
       │                  │    ◄───────────────────────────────────    │
       │ abort            │         restore (a reader asked)           │
       ▼                  ▼ evict (unpinned secondary, store full)
     gone               gone

    delete, from any state: the entry leaves the table at once; its memory
    is freed once it is unpinned, sealed and no disk I/O runs on it, and its
    spill file is removed.

- CREATED: space allocated; the creator writes. Readers wait (up to their
  timeout). If the creator disconnects, the object is aborted.
- SEALED: immutable and in the arena, maybe also in a spill file.
- SPILLED: only in its spill file; no arena space.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import itertools
import logging
import os
import time

from ..exceptions import IllegalTransition, ObjectStoreFullError, RayError
from ..protocol.object_store import StoredObjectInfo
from . import spill
from .allocator import Allocator
from .arena import PAGE_SIZE

logger = logging.getLogger(__name__)

#: Free ranges are returned to the kernel after staying free this long...
TRIM_AFTER_S = 30.0
#: ...when they span at least this much...
TRIM_MIN_BYTES = 4 * 1024 * 1024
#: ...in steps of at most this much, so the loop never stalls for long.
_TRIM_STEP = 64 * 1024 * 1024


class ObjectExistsError(RayError):
    """An object with this id is already in the store (or being written)."""


class ObjectState(enum.Enum):
    CREATED = "CREATED"  # space allocated, being written by its creator
    SEALED = "SEALED"    # immutable, in the arena (maybe also on disk)
    SPILLED = "SPILLED"  # only in its spill file


_EDGES = {(ObjectState.CREATED, ObjectState.SEALED),
          (ObjectState.SEALED, ObjectState.SPILLED),
          (ObjectState.SPILLED, ObjectState.SEALED)}

# Entry.io values: disk I/O in flight; the entry must not move meanwhile.
_SPILLING = "spilling"
_RESTORING = "restoring"


class Entry:
    """One object of the store (or one deleted but still pinned)."""

    __slots__ = ("object_id", "size", "offset", "state", "is_primary", "owner", "creator",
                 "pins", "last_access", "spill_path", "io", "deleted", "waiters", "path",
                 "disk")

    def __init__(self, object_id: bytes, size: int, offset: int, owner, is_primary: bool,
                 creator, now: float):
        self.object_id = object_id
        #: Bytes of the object (its arena block may be larger, by alignment).
        self.size = size
        #: Arena offset; -1 exactly when the object has no arena space (SPILLED and
        #: not being restored, or aborted).
        self.offset = offset
        self.state = ObjectState.CREATED
        self.is_primary = is_primary
        self.owner = owner
        #: The client writing it while CREATED; None afterwards.
        self.creator = creator
        #: client id -> pin count. Non-empty means the arena block must not change.
        self.pins: dict = {}
        self.last_access = now
        #: A complete, verified copy on disk; "" if none.
        self.spill_path = ""
        #: _SPILLING or _RESTORING while a disk transfer runs, else None.
        self.io: str | None = None
        #: Deleted by its owner: no longer in the table, freed once unpinned and idle.
        self.deleted = False
        #: (get request, index) pairs waiting for this object to be SEALED.
        self.waiters: list = []
        #: An on-disk object (larger than the store): its file, and the store's own
        #: mapping of it (for transfers to other nodes); "" and None otherwise.
        self.path = ""
        self.disk = None

    def transition(self, new: ObjectState) -> None:
        """The only way ``state`` changes: along an edge of ``_EDGES``."""
        if (self.state, new) not in _EDGES:
            raise IllegalTransition(f"object {self.object_id.hex()}", self.state, new)
        self.state = new

    @property
    def busy(self) -> bool:
        """The arena block is in use by someone: it must stay."""
        return bool(self.pins) or self.io is not None or self.state is ObjectState.CREATED


class _GetRequest:
    """One get() call waiting for objects being created or restored."""

    __slots__ = ("client", "results", "pending", "pinned", "waiting", "future", "error",
                 "done")

    def __init__(self, client, n: int):
        self.client = client
        self.results: list = [None] * n
        #: Objects still awaited.
        self.pending = 0
        #: Entries pinned for this request, released if it fails or is cancelled.
        self.pinned: list[Entry] = []
        self.waiting: list[Entry] = []
        self.future: asyncio.Future | None = None
        self.error: BaseException | None = None
        self.done = False

    def finish(self) -> None:
        self.done = True
        if self.future is not None and not self.future.done():
            self.future.set_result(None)


class ObjectStore:
    """The object table of one node's arena. See the module docstring."""

    def __init__(self, arena, spill_dir: str, *, alignment: int = 64, clock=time.monotonic,
                 trim_after_s: float = TRIM_AFTER_S, trim_min_bytes: int = TRIM_MIN_BYTES):
        self.arena = arena
        self.capacity = arena.capacity
        self.spill_dir = spill_dir
        self.trim_after_s = trim_after_s
        self.trim_min_bytes = trim_min_bytes
        self._clock = clock
        self._allocator = Allocator(arena.capacity, alignment, clock)
        self._objects: dict[bytes, Entry] = {}
        #: Deleted entries whose memory cannot be freed yet (pinned, or I/O runs).
        self._zombies: dict[bytes, list[Entry]] = {}
        #: client id -> entries it pins, so a disconnect is cheap to clean up.
        self._client_entries: dict[object, set[Entry]] = {}
        self._room_lock = asyncio.Lock()
        self._io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ember-spill")
        self._tasks: set[asyncio.Task] = set()
        self._closed = False
        self._spill_prefix = os.urandom(4).hex()
        self._spill_sequence = itertools.count()
        self._counters = dict.fromkeys(
            ("created", "created_on_disk", "sealed", "evicted", "evicted_bytes", "spilled", "spilled_bytes_total",
             "restored", "restored_bytes", "deleted", "aborted", "trimmed_bytes"), 0)

    # --- creating -----------------------------------------------------------------

    def create_nowait(self, object_id: bytes, size: int, owner=None, is_primary: bool = True,
                      client_id=None) -> int | None:
        """The new object's offset, or None when room must be made (use :meth:`create`).

        Raises ValueError for a negative size, ObjectStoreFullError for a size
        above the capacity, ObjectExistsError if the id is taken.
        """
        self._check_create(object_id, size)
        if self._allocator.block_size(size) > self._allocator.capacity:
            self._create_on_disk(object_id, size, owner, is_primary, client_id)
            return -1
        if self._room_lock.locked():
            return None  # others are waiting for room: do not overtake them
        offset = self._allocator.allocate(size)
        if offset is None:
            return None
        self._add(object_id, size, offset, owner, is_primary, client_id)
        return offset

    async def create(self, object_id: bytes, size: int, owner=None, is_primary: bool = True,
                     client_id=None) -> int:
        """Allocate a new object, evicting and spilling others if needed; its offset."""
        offset = self.create_nowait(object_id, size, owner, is_primary, client_id)
        if offset is not None:
            return offset
        async with self._room_lock:
            self._check_create(object_id, size)  # the id may have been taken meanwhile
            offset = self._allocator.allocate(size)
            if offset is None:
                offset = await self._make_room(size)
            if object_id in self._objects:  # created while we spilled
                self._allocator.free(offset)
                self._check_create(object_id, size)
            self._add(object_id, size, offset, owner, is_primary, client_id)
            return offset

    def _check_create(self, object_id: bytes, size: int) -> None:
        if size < 0:
            raise ValueError(f"Cannot create object {object_id.hex()} with a negative size "
                             f"({size} bytes).")
        if object_id in self._objects:
            raise ObjectExistsError(f"Object {object_id.hex()} is already in the object "
                                    "store of this node.")

    def _create_on_disk(self, object_id: bytes, size: int, owner, is_primary: bool,
                        client_id) -> Entry:
        """An object larger than the whole store: a file of its own (module doc)."""
        path = spill.spill_path(self.spill_dir, self._spill_prefix, object_id,
                                next(self._spill_sequence)) + ".object"
        try:
            disk = spill.create_sparse(path, size)
        except OSError as exc:
            raise ObjectStoreFullError(
                f"Object {object_id.hex()} needs {_bytes(size)}, more than the whole object "
                f"store of this node ({_bytes(self.capacity)}), and its file {path} could "
                f"not be made ({exc}). Free disk space there, start the node with a larger "
                "object_store_memory (ember.init(object_store_memory=...) or `ember start "
                "--object-store-memory`), or split the value into smaller ones.") from None
        entry = self._add(object_id, size, -1, owner, is_primary, client_id)
        entry.path, entry.disk = path, disk
        self._counters["created_on_disk"] += 1
        return entry

    def contents(self, entry: Entry) -> memoryview:
        """A writable view of ``entry``'s bytes, in the arena or in its file."""
        if entry.disk is not None:
            return memoryview(entry.disk)[:entry.size]
        return self.arena.view[entry.offset:entry.offset + entry.size]

    def entry(self, object_id: bytes) -> Entry | None:
        """The stored (or being created) object ``object_id``, if here."""
        return self._objects.get(object_id)

    def path_of(self, object_id: bytes) -> str:
        """The file of an on-disk object being created or stored; "" for others."""
        entry = self._objects.get(object_id)
        return entry.path if entry is not None else ""

    def _add(self, object_id, size, offset, owner, is_primary, client_id) -> Entry:
        entry = Entry(object_id, size, offset, owner, is_primary, client_id, self._clock())
        self._objects[object_id] = entry
        self._counters["created"] += 1
        return entry

    def seal(self, object_id: bytes) -> None:
        """The creator finished writing: the object becomes immutable and readable."""
        entry = self._objects.get(object_id)
        if entry is None or entry.state is not ObjectState.CREATED:
            entry = next((e for e in self._zombies.get(object_id, ())
                          if e.state is ObjectState.CREATED), entry)
        if entry is None or entry.state is not ObjectState.CREATED:
            raise ValueError(f"Cannot seal object {object_id.hex()}: it is not being created "
                             "on this node.")
        entry.transition(ObjectState.SEALED)
        entry.creator = None
        entry.last_access = self._clock()
        self._counters["sealed"] += 1
        self._wake(entry)
        self._free_if_deleted(entry)

    def abort(self, object_id: bytes, client_id=None) -> None:
        """The creator gave up on an unsealed object: free it; its readers get None."""
        entry = self._objects.get(object_id)
        if (entry is not None and entry.state is ObjectState.CREATED
                and (client_id is None or entry.creator == client_id)):
            self._abort(entry)

    def _abort(self, entry: Entry) -> None:
        if self._objects.get(entry.object_id) is entry:
            del self._objects[entry.object_id]
        else:
            self._drop_zombie(entry)
        entry.deleted = True
        self._release_resources(entry)
        entry.creator = None
        self._counters["aborted"] += 1
        self._wake(entry)

    # --- reading ------------------------------------------------------------------

    def get_nowait(self, client_id, object_ids: list[bytes]) -> list[Entry | None] | None:
        """Like :meth:`get` when no object needs waiting or restoring; else None, no pins."""
        entries = []
        for object_id in object_ids:
            entry = self._objects.get(object_id)
            if entry is not None and entry.state is not ObjectState.SEALED:
                return None
            entries.append(entry)
        for entry in entries:
            if entry is not None:
                self._pin(entry, client_id)
        return entries

    async def get(self, client_id, object_ids: list[bytes],
                  timeout: float | None = None) -> list[Entry | None]:
        """Pin and return the entries of ``object_ids``; None for those not on this node.

        Spilled objects are restored first (which may raise
        SpilledObjectCorruptError or ObjectStoreFullError; then nothing stays
        pinned). Objects being created are awaited for up to ``timeout``
        seconds (None: no limit) and are None if still unsealed then.
        """
        req = _GetRequest(client_id, len(object_ids))
        wait_for_created = timeout is None or timeout > 0
        for i, object_id in enumerate(object_ids):
            entry = self._objects.get(object_id)
            if entry is None:
                continue
            if entry.state is ObjectState.SEALED:
                self._pin(entry, client_id)
                req.pinned.append(entry)
                req.results[i] = entry
            elif entry.state is ObjectState.SPILLED or wait_for_created:
                entry.waiters.append((req, i))
                req.waiting.append(entry)
                req.pending += 1
                if entry.state is ObjectState.SPILLED and entry.io is None:
                    entry.io = _RESTORING  # now, so that the next get joins this restore
                    self._start_task(self._restore(entry))
        if req.pending == 0:
            return req.results
        loop = asyncio.get_running_loop()
        req.future = loop.create_future()
        timer = None
        if timeout is not None:
            timer = loop.call_later(timeout, self._get_timed_out, req)
        try:
            await req.future
        except BaseException:
            self._abandon(req)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if req.error is not None:
            self._abandon(req)
            raise req.error
        return req.results

    def _wake(self, entry: Entry) -> None:
        """Answer the gets waiting for ``entry``: pinned if readable, else None."""
        waiters, entry.waiters = entry.waiters, []
        readable = entry.state is ObjectState.SEALED and not entry.deleted
        for req, i in waiters:
            if req.done:
                continue
            if readable:
                self._pin(entry, req.client)
                req.pinned.append(entry)
                req.results[i] = entry
            req.pending -= 1
            if req.pending == 0:
                req.finish()

    def _fail_waiters(self, entry: Entry, error: BaseException) -> None:
        waiters, entry.waiters = entry.waiters, []
        for req, _ in waiters:
            if not req.done:
                req.error = error
                req.finish()

    def _get_timed_out(self, req: _GetRequest) -> None:
        """Stop waiting for objects still being created; restores run to the end."""
        for entry in req.waiting:
            if entry.state is ObjectState.CREATED:
                before = len(entry.waiters)
                entry.waiters = [w for w in entry.waiters if w[0] is not req]
                req.pending -= before - len(entry.waiters)
        if req.pending == 0:
            req.finish()

    def _abandon(self, req: _GetRequest) -> None:
        """A get failed or was cancelled: stop waiting and drop the pins it took."""
        req.done = True
        for entry in req.waiting:
            entry.waiters = [w for w in entry.waiters if w[0] is not req]
        pinned, req.pinned = req.pinned, []
        for entry in pinned:
            self._unpin(entry, req.client)

    # --- pins -------------------------------------------------------------------------

    def _pin(self, entry: Entry, client_id) -> None:
        entry.pins[client_id] = entry.pins.get(client_id, 0) + 1
        self._client_entries.setdefault(client_id, set()).add(entry)
        entry.last_access = self._clock()

    def _unpin(self, entry: Entry, client_id) -> None:
        count = entry.pins.get(client_id, 0)
        if count == 0:
            return  # already dropped by release_client
        if count > 1:
            entry.pins[client_id] = count - 1
            return
        del entry.pins[client_id]
        entries = self._client_entries.get(client_id)
        if entries is not None:
            entries.discard(entry)
            if not entries:
                del self._client_entries[client_id]
        self._free_if_deleted(entry)

    def release(self, client_id, object_ids: list[bytes]) -> None:
        """Drop one pin of ``client_id`` per id (its views are gone)."""
        for object_id in object_ids:
            entry = self._objects.get(object_id)
            if entry is None or client_id not in entry.pins:
                entry = next((e for e in self._zombies.get(object_id, ())
                              if client_id in e.pins), None)
            if entry is not None:
                self._unpin(entry, client_id)

    def release_client(self, client_id) -> None:
        """The client disconnected: drop all its pins and abort what it was writing."""
        for entry in self._client_entries.pop(client_id, ()):
            entry.pins.pop(client_id, None)
            self._free_if_deleted(entry)
        created = [e for e in itertools.chain(self._objects.values(),
                                              *self._zombies.values())
                   if e.state is ObjectState.CREATED and e.creator == client_id]
        for entry in created:
            self._abort(entry)

    # --- deleting ---------------------------------------------------------------------

    def delete(self, object_ids: list[bytes]) -> None:
        """The owner freed these objects: drop them (memory once unpinned) and their files."""
        for object_id in object_ids:
            entry = self._objects.pop(object_id, None)
            if entry is None:
                continue
            entry.deleted = True
            self._counters["deleted"] += 1
            self._wake(entry)
            if entry.busy:
                self._zombies.setdefault(object_id, []).append(entry)
            else:
                self._release_resources(entry)

    def delete_owned_by(self, worker_id: bytes = b"", node_id: bytes = b"") -> int:
        """An owner process died (``worker_id``), or every process of a node did
        (``node_id``): their objects can never be read again (OwnerDiedError),
        so free them all, primaries included. Returns how many were deleted."""
        doomed = [oid for oid, e in self._objects.items()
                  if e.owner is not None and (e.owner.worker_id == worker_id
                                              or e.owner.node_id == node_id)]
        self.delete(doomed)
        return len(doomed)

    def _free_if_deleted(self, entry: Entry) -> None:
        if entry.deleted and not entry.busy:
            self._drop_zombie(entry)
            self._release_resources(entry)

    def _drop_zombie(self, entry: Entry) -> None:
        zombies = self._zombies.get(entry.object_id)
        if zombies is not None and entry in zombies:
            zombies.remove(entry)
            if not zombies:
                del self._zombies[entry.object_id]

    def _release_resources(self, entry: Entry) -> None:
        if entry.offset >= 0:
            self._allocator.free(entry.offset)
            entry.offset = -1
        # Readers' mappings of an on-disk object's file keep its pages until unmapped.
        entry.disk = None
        for path in (entry.path, entry.spill_path):
            if not path:
                continue
            if self._closed:
                spill.remove(path)
            else:
                self._io.submit(spill.remove, path)
        entry.path = entry.spill_path = ""

    # --- making room ----------------------------------------------------------------

    async def _make_room(self, size: int) -> int:
        """Evict, then spill, until ``size`` fits; the new block's offset. Lock held."""
        secondaries = sorted((e for e in self._objects.values()
                              if not e.is_primary and e.state is ObjectState.SEALED
                              and not e.busy and e.offset >= 0), key=lambda e: e.last_access)
        for entry in secondaries:
            self._evict(entry)
            offset = self._allocator.allocate(size)
            if offset is not None:
                return offset
        tried: set[Entry] = set()
        errors: list[str] = []
        while True:
            batch = self._spill_batch(size, tried)
            if not batch:
                raise self._full_error(size, errors)
            tried.update(batch)
            task = self._start_task(self._spill(batch))
            errors += await asyncio.shield(task)
            offset = self._allocator.allocate(size)
            if offset is not None:
                return offset

    def _evict(self, entry: Entry) -> None:
        del self._objects[entry.object_id]
        self._allocator.free(entry.offset)
        entry.offset = -1
        self._counters["evicted"] += 1
        self._counters["evicted_bytes"] += entry.size

    def _spill_batch(self, size: int, tried: set) -> list[Entry]:
        """Least recently used spillable primaries freeing at least the shortfall."""
        candidates = sorted((e for e in self._objects.values()
                             if e.is_primary and e.state is ObjectState.SEALED
                             and not e.busy and e.offset >= 0 and e not in tried),
                            key=lambda e: (not e.spill_path, e.last_access))
        shortfall = self._allocator.block_size(size) - self._allocator.free_bytes
        batch, freed = [], 0
        for entry in candidates:
            batch.append(entry)
            freed += self._allocator.size_of(entry.offset)
            if freed >= shortfall:
                break
        return batch

    async def _spill(self, batch: list[Entry]) -> list[str]:
        """Write ``batch`` to disk and free its memory; the errors, as text."""
        jobs = []
        for entry in batch:
            entry.io = _SPILLING
            if not entry.spill_path:
                path = spill.spill_path(self.spill_dir, self._spill_prefix, entry.object_id,
                                        next(self._spill_sequence))
                view = self.arena.view[entry.offset:entry.offset + entry.size]
                jobs.append((entry, path, view))
        loop = asyncio.get_running_loop()
        results = await loop.run_in_executor(
            self._io, _write_files, [(path, e.object_id, view) for e, path, view in jobs])
        errors = []
        for (entry, path, _), error in zip(jobs, results):
            if error is None:
                entry.spill_path = path
                self._counters["spilled"] += 1
                self._counters["spilled_bytes_total"] += entry.size
            else:
                logger.error("could not spill object %s to %s: %s", entry.object_id.hex(),
                             path, error)
                errors.append(f"{path}: {error}")
        for entry in batch:
            entry.io = None
            if entry.deleted:
                self._free_if_deleted(entry)
            elif entry.spill_path and not entry.pins:
                self._allocator.free(entry.offset)
                entry.offset = -1
                entry.transition(ObjectState.SPILLED)
        return errors

    async def _restore(self, entry: Entry) -> None:
        """Bring a SPILLED object back into the arena, then wake its readers.

        The caller has set ``entry.io`` to _RESTORING already.
        """
        try:
            async with self._room_lock:
                if entry.deleted:  # deleted while queued: its readers already got None
                    entry.io = None
                    self._free_if_deleted(entry)
                    return
                offset = self._allocator.allocate(entry.size)
                if offset is None:
                    offset = await self._make_room(entry.size)
                entry.offset = offset
            view = self.arena.view[offset:offset + entry.size]
            try:
                await asyncio.get_running_loop().run_in_executor(
                    self._io, spill.read_into, entry.spill_path, entry.object_id, view)
            finally:
                view.release()
        except Exception as exc:  # noqa: BLE001 - handed to every waiting reader
            if entry.offset >= 0:
                self._allocator.free(entry.offset)
                entry.offset = -1
            entry.io = None
            if isinstance(exc, ObjectStoreFullError):
                exc = ObjectStoreFullError(f"Cannot restore spilled object "
                                           f"{entry.object_id.hex()}: {exc}")
            self._fail_waiters(entry, exc)
            self._free_if_deleted(entry)
            return
        entry.io = None
        entry.transition(ObjectState.SEALED)
        entry.last_access = self._clock()
        self._counters["restored"] += 1
        self._counters["restored_bytes"] += entry.size
        self._wake(entry)
        self._free_if_deleted(entry)

    def _full_error(self, size: int, spill_errors: list[str]) -> ObjectStoreFullError:
        pinned = self._pinned_bytes()
        writing = sum(e.size for e in self._objects.values()
                      if e.state is ObjectState.CREATED)
        text = (f"The object store of this node is full: cannot allocate {_bytes(size)} "
                f"(capacity {_bytes(self.capacity)}, {_bytes(self._allocator.used)} in use, "
                f"of which {_bytes(pinned)} is pinned by readers holding views and "
                f"{_bytes(writing)} is being written; largest free block "
                f"{_bytes(self._allocator.largest_free())}). Nothing else can be evicted "
                "or spilled. Raise object_store_memory (ember.init(object_store_memory=...) "
                "or `ember start --object-store-memory`), or free references you no longer "
                "need (del the ObjectRefs, and the arrays that ember.get returned) so that "
                "their memory can be reused.")
        if spill_errors:
            text += f" Spilling to disk failed: {spill_errors[0]}."
        return ObjectStoreFullError(text)

    # --- returning memory to the kernel -------------------------------------------

    async def trim(self) -> int:
        """Punch out free ranges idle for ``trim_after_s``; the bytes released."""
        released = 0
        page = PAGE_SIZE
        for offset, size in self._allocator.trim_candidates(self.trim_after_s,
                                                            self.trim_min_bytes):
            position = -(-offset // page) * page
            end = (offset + size) // page * page
            while position < end:
                step = min(_TRIM_STEP, end - position)
                if not self._allocator.is_free(position, step):
                    break  # allocated meanwhile; a later round trims what stays free
                released += self.arena.punch(position, step)
                position += step
                await asyncio.sleep(0)
            else:
                self._allocator.mark_clean(offset, size)
        self._counters["trimmed_bytes"] += released
        return released

    async def _trim_loop(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            try:
                await self.trim()
            except Exception:  # noqa: BLE001 - keep trimming later
                logger.exception("object store trim failed")

    def start(self, trim_period_s: float = 10.0) -> None:
        """Start background work (trimming); call on the running loop."""
        self._start_task(self._trim_loop(trim_period_s))

    def close(self) -> None:
        """Stop background work and remove this store's spill files."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        self._io.shutdown(wait=True, cancel_futures=True)
        for entry in itertools.chain(self._objects.values(), *self._zombies.values()):
            if entry.spill_path:
                spill.remove(entry.spill_path)
                entry.spill_path = ""
            if entry.path:
                entry.disk = None
                spill.remove(entry.path)
                entry.path = ""
        # Removals of deleted objects' files queued on the I/O thread were just
        # cancelled, and a spill cut short may have left a file no entry names:
        # every file with this store's prefix goes.
        spill.remove_all(self.spill_dir, self._spill_prefix)

    async def drain_io(self) -> None:
        """Wait for the disk I/O queued so far (spill file removals included)."""
        await asyncio.get_running_loop().run_in_executor(self._io, _nothing)

    # --- introspection ---------------------------------------------------------------

    def is_fresh(self, offset: int) -> bool:
        """Whether the block at ``offset`` has no pages yet (see Allocator.is_fresh)."""
        return self._allocator.is_fresh(offset)

    def contains(self, object_id: bytes) -> bool:
        """Whether a readable (sealed or spilled) copy is here."""
        entry = self._objects.get(object_id)
        return entry is not None and entry.state is not ObjectState.CREATED

    def _pinned_bytes(self) -> int:
        return sum(e.size for e in itertools.chain(self._objects.values(),
                                                   *self._zombies.values())
                   if e.pins and e.offset >= 0)

    def stats(self) -> dict:
        spilled = [e for e in self._objects.values() if e.state is ObjectState.SPILLED]
        return {
            "capacity": self.capacity,
            "used": self._allocator.used,
            "pinned": self._pinned_bytes(),
            "largest_free": self._allocator.largest_free(),
            "num_objects": len(self._objects),
            "num_in_memory": sum(1 for e in self._objects.values() if e.offset >= 0),
            "num_spilled": len(spilled),
            "spilled_bytes": sum(e.size for e in spilled),
            "on_disk_bytes": sum(e.size for e in self._objects.values() if e.path),
            "num_deleted_pinned": sum(len(v) for v in self._zombies.values()),
            **self._counters,
        }

    def num_primary(self) -> int:
        """Primary copies held here, in memory or spilled (the autoscaler keeps such a node)."""
        return sum(1 for e in self._objects.values() if e.is_primary)

    def list_objects(self) -> list[StoredObjectInfo]:
        return [StoredObjectInfo(e.object_id, e.size, e.owner, e.state.value, e.is_primary,
                                 bool(e.spill_path), sum(e.pins.values()))
                for e in self._objects.values()]

    def debug_state(self) -> dict:
        return {**self.stats(), "allocator": self._allocator.debug_state(),
                "spill_dir": self.spill_dir, "clients_pinning": len(self._client_entries),
                "room_lock_held": self._room_lock.locked()}

    # --- internals ---------------------------------------------------------------------

    def _start_task(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("object store task failed", exc_info=task.exception())


def _write_files(jobs: list) -> list:
    """Run on the I/O thread: write each (path, object id, view); per job None or error."""
    results = []
    for path, object_id, view in jobs:
        try:
            spill.write(path, object_id, view)
            results.append(None)
        except OSError as exc:
            results.append(exc)
        finally:
            view.release()
    return results


def _nothing() -> None:
    return None


def _bytes(n: int) -> str:
    """A size for people: "512 B", "3.0 MiB", "1.50 GiB"."""
    if n < 1024:
        return f"{n} B"
    if n < 1024**3:
        return f"{n / 1024**2:.1f} MiB" if n >= 1024**2 else f"{n / 1024:.1f} KiB"
    return f"{n / 1024**3:.2f} GiB"
