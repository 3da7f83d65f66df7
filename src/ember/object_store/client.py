"""A core worker's handle on its node's object store: put and get without copies.

Writing: ``put`` asks the raylet for space (one RPC), copies the pickle stream
and each out-of-band buffer straight into the shared arena with one slice
assignment each (``memcpy``; nothing is joined first), and seals with a
one-way notification.

Reading: ``get`` asks the raylet to pin the objects (one RPC) and returns
read-only views into the client's read-only mapping of the arena. Nothing is
copied, so a get costs the same for 1 KB and for 1 GB.

The pin must last exactly as long as any view of the object is alive, however
the user slices it, wraps it in numpy arrays or hands it to other threads.
The views of one object all derive from one exporter object (see
:meth:`ember.object_store.arena.ClientMapping.new_exporter`), and a
``weakref.finalize`` on it queues a ReleaseObjects when the last view dies.
The exporter holds no reference to its views, so plain reference counting
frees it: no cycle waits for the garbage collector.

One pin per exporter: a second get of an object this process still holds is
served from a weak cache without any RPC and returns views of the same
exporter, hence of the same pages. When the cache misses, the ids of one call
are de-duplicated before the RPC, so every pin the raylet grants is matched
by exactly one release.

Releases are batched. A finalizer appends the id to a list and, if no flush
is scheduled, schedules one through ``defer`` (the lead passes
``LoopThread.post``, which coalesces wake-ups), so dropping a thousand arrays
costs one message. The flag is cleared *before* the list is swapped out, so
an id appended during a flush is either sent by it or schedules another: no
release is stranded. This relies on the GIL (each step is one bytecode-level
operation on a list or attribute); finalizers may run on any thread, even
inside the garbage collector.

Threads: any thread may call ``put``, ``get``, ``delete``; ``call`` must
block the calling thread until the reply arrives and must not be invoked on
the event loop's own thread.
"""
from __future__ import annotations

import logging
import mmap
import os
import threading
import typing
import weakref

from ..exceptions import (ObjectLostError, ObjectStoreFullError, OutOfMemoryError,
                          RaySystemError)
from ..protocol import object_store as msg
from . import layout
from .arena import ClientMapping
from .spill import SpilledObjectCorruptError
from .store import ObjectExistsError

logger = logging.getLogger(__name__)

_ERRORS: dict[str, type] = {cls.__name__: cls for cls in (
    ObjectStoreFullError, ObjectExistsError, SpilledObjectCorruptError, ObjectLostError,
    ValueError)}


class StoreClient:
    """See the module docstring."""

    def __init__(self, raylet_pid: int, store_fd: int, capacity: int,
                 call: typing.Callable[[typing.Any], typing.Any],
                 notify: typing.Callable[[typing.Any], None], *,
                 defer: typing.Callable[[typing.Callable[[], None]], None] | None = None):
        """``call(msg)`` sends a request to the raylet and blocks for its reply;
        ``notify(msg)`` sends a one-way message; ``defer(fn)`` runs ``fn`` soon
        on some thread (None: release notifications are sent at once)."""
        self._mapping = ClientMapping(raylet_pid, store_fd, capacity)
        self.capacity = capacity
        self._call = call
        self._notify = notify
        self._defer = defer
        #: object id -> exporter of its views, while any view is alive.
        self._exporters: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self._pending_releases: list[bytes] = []
        self._release_scheduled = False
        # Re-entrant: a finalizer may run (garbage collection) while it is held.
        self._lock = threading.RLock()
        self.closed = False

    # --- writing ------------------------------------------------------------------

    def put(self, object_id: bytes, main, buffers: list, owner=None,
            is_primary: bool = True) -> int:
        """Store an object made of a pickle stream and its out-of-band buffers.

        Returns its size in the store. Putting an id that is already there is
        a no-op: objects are immutable, so the value is the same.
        """
        views = layout.byte_views(buffers)
        total, _, _ = layout.plan(len(main), [len(v) for v in views])
        self._flush_releases()  # let the store reuse what we no longer hold
        reply = self._call(msg.CreateObject(object_id, total, owner, is_primary))
        if reply.error_type:
            if reply.error_type == ObjectExistsError.__name__:
                return total
            raise _error(reply.error_type, reply.error_message)
        disk = None
        try:
            if reply.path:  # larger than the store: its own file (see ObjectStore)
                disk = _map_file(reply.path, total, writable=True)
                dest = memoryview(disk)
            else:
                dest = self._mapping.rw[reply.offset:reply.offset + total]
            try:
                if reply.fresh:
                    self._populate(object_id, reply.offset, total)
                layout.write(dest, main, views)
            finally:
                dest.release()
        except BaseException:
            self._notify(msg.AbortObject(object_id))
            raise
        finally:
            if disk is not None:
                disk.close()
        self._notify(msg.SealObject(object_id))
        return total

    def _populate(self, object_id: bytes, offset: int, size: int) -> None:
        try:
            self._mapping.populate(offset, size)
        except OSError as exc:
            raise OutOfMemoryError(
                f"This node ran out of memory while writing object {object_id.hex()} "
                f"({size} bytes) into the object store ({exc}). The store's capacity "
                f"({self.capacity} bytes) is more than the memory actually available: "
                "lower object_store_memory, or free memory on the node.") from exc

    # --- reading --------------------------------------------------------------------

    def get(self, object_ids: list[bytes], timeout: float | None = None
            ) -> list[tuple[memoryview, list[memoryview]] | None]:
        """(main, buffers) read-only views of each object, or None if not on this node.

        Waits up to ``timeout`` seconds (None: no limit) for objects still being
        written. Pass the views to :func:`ember.object_store.layout.load_from_store`.
        """
        results: list = [None] * len(object_ids)
        missing: dict[bytes, list[int]] = {}
        for i, object_id in enumerate(object_ids):
            exporter = self._exporters.get(object_id)
            if exporter is not None:
                results[i] = _views(exporter)
            else:
                missing.setdefault(object_id, []).append(i)
        if not missing:
            return results
        self._flush_releases()
        need = list(missing)
        reply = self._call(msg.GetObjects(need, timeout))
        if reply.error_type:
            raise _error(reply.error_type, reply.error_message)
        first_error = None
        for object_id, entry in zip(need, reply.entries):
            if entry is None:
                continue
            exporter = self._new_exporter(object_id, entry)  # owns the pin from here
            try:
                views = _views(exporter, parse=True)
            except RaySystemError as exc:
                first_error = first_error or exc
                continue
            self._exporters[object_id] = exporter
            for i in missing[object_id]:
                results[i] = views
        if first_error is not None:
            raise first_error
        return results

    def _new_exporter(self, object_id: bytes, entry: msg.ObjectEntry):
        if entry.path:  # an object larger than the store, in its own file
            exporter = _map_file(entry.path, entry.size, writable=False)
            exporter.extent = (0, entry.size)
        else:
            exporter = self._mapping.new_exporter()
            exporter.extent = (entry.offset, entry.size)
        with self._lock:
            self._mapping.live_regions += 1
        finalizer = weakref.finalize(exporter, self._released, object_id)
        finalizer.atexit = False
        return exporter

    def _released(self, object_id: bytes) -> None:
        """Finalizer of an exporter (any thread): queue the release of its pin."""
        with self._lock:
            self._mapping.live_regions -= 1
        self._pending_releases.append(object_id)
        if not self._release_scheduled:
            self._release_scheduled = True
            if self._defer is not None:
                try:
                    self._defer(self._flush_releases)
                    return
                except Exception:  # noqa: BLE001 - e.g. loop closed: send directly
                    pass
            self._flush_releases()

    def _flush_releases(self) -> None:
        self._release_scheduled = False
        if not self._pending_releases:
            return
        ids, self._pending_releases = self._pending_releases, []
        if self.closed:
            return
        try:
            self._notify(msg.ReleaseObjects(ids))
        except Exception:  # noqa: BLE001 - raylet gone: it dropped our pins anyway
            logger.debug("could not send ReleaseObjects", exc_info=True)

    # --- the rest ---------------------------------------------------------------------

    def delete(self, object_ids: list[bytes]) -> None:
        """The owner frees these objects everywhere on this node."""
        for object_id in object_ids:
            self._exporters.pop(object_id, None)
        self._notify(msg.DeleteObjects(list(object_ids)))

    def stats(self) -> dict:
        """The store's counters (ObjectStore.stats())."""
        return self._call(msg.GetStoreStats()).stats

    def list_objects(self) -> list[msg.StoredObjectInfo]:
        """Every object in the store, for ``ember memory``."""
        return self._call(msg.GetStoreStats(include_objects=True)).objects

    def close(self) -> None:
        """Send pending releases and unmap (views still alive keep their mapping)."""
        if self.closed:
            return
        self._flush_releases()
        self.closed = True
        self._mapping.close()


class _FileMapping(mmap.mmap):
    """The mapping of an on-disk object's file: an exporter like the arena's
    (:meth:`ClientMapping.new_exporter`), whose views keep it mapped."""

    __slots__ = ("extent", "parts")


def _map_file(path: str, size: int, writable: bool) -> _FileMapping:
    try:
        fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
    except FileNotFoundError:
        raise ObjectLostError("", message=(
            f"The file {path} of an object larger than the object store is gone: "
            "the object was freed, or its node stopped.")) from None
    try:
        return _FileMapping(fd, size, prot=mmap.PROT_READ | (mmap.PROT_WRITE if writable
                                                            else 0))
    finally:
        os.close(fd)


def _views(exporter, parse: bool = False) -> tuple[memoryview, list[memoryview]]:
    """Fresh read-only (main, buffers) views of an exporter's object.

    Only ints are stored on the exporter: a view stored there would form a
    cycle (view -> exporter -> view) that only the garbage collector frees.
    """
    offset, size = exporter.extent
    whole = memoryview(exporter).cast("B").toreadonly()[offset:offset + size]
    if parse:
        exporter.parts = layout.parse(whole)
    (start, end), ranges = exporter.parts
    return whole[start:end], [whole[a:b] for a, b in ranges]


def _error(error_type: str, message: str) -> Exception:
    cls = _ERRORS.get(error_type)
    if cls is None:
        return RaySystemError(f"object store: {error_type}: {message}")
    if issubclass(cls, ObjectLostError):
        return cls("", message=message)
    return cls(message)
