"""The object store on the wire: the raylet's handlers for :mod:`ember.protocol.object_store`.

A thin shell around :class:`~.store.ObjectStore` (events in, replies out), so
the store itself stays testable without sockets. The client id the store
sees is the :class:`ember.rpc.Connection` itself: a client's pins live exactly
as long as its connection, with no id to forge or forget.

Fast paths answer synchronously (an allocation that fits, a get of sealed
objects), so the common case creates no task. Slow paths (spilling, restoring,
waiting for a seal) run as tasks tracked per connection; when a connection
closes they are cancelled and the client's pins dropped, so a crashed worker
never leaves memory pinned.
"""
from __future__ import annotations

import asyncio
import os

from ..exceptions import ObjectLostError, ObjectStoreFullError
from ..protocol import object_store as msg
from .arena import Arena
from .store import ObjectExistsError, ObjectStore

#: Errors that a create or get answers in its reply rather than as an RPC failure.
_REPLY_ERRORS = (ObjectStoreFullError, ObjectExistsError, ObjectLostError, ValueError)


class StoreService:
    """Serves one node's store to the clients connected to its raylet."""

    def __init__(self, store: ObjectStore, arena: Arena | None = None):
        self.store = store
        #: The memfd arena whose fd clients open; owned (closed) by this service.
        self.arena = arena
        self._inflight: dict[object, set[asyncio.Task]] = {}

    @classmethod
    def for_node(cls, capacity: int, session_dir: str) -> "StoreService":
        """A memfd arena of ``capacity`` bytes and its store, spilling under ``session_dir``."""
        arena = Arena(capacity)
        return cls(ObjectStore(arena, os.path.join(session_dir, "spill")), arena)

    def handlers(self) -> dict:
        return {
            msg.CreateObject: self.create,
            msg.SealObject: self.seal,
            msg.AbortObject: self.abort,
            msg.GetObjects: self.get,
            msg.ReleaseObjects: self.release,
            msg.DeleteObjects: self.delete,
            msg.GetStoreStats: self.stats,
        }

    # --- handlers -----------------------------------------------------------------

    def create(self, conn, req: msg.CreateObject):
        try:
            offset = self.store.create_nowait(req.object_id, req.size, req.owner,
                                              req.is_primary, conn)
        except _REPLY_ERRORS as exc:
            return msg.CreateObjectReply(-1, type(exc).__name__, str(exc))
        if offset is not None:
            return self._created(req.object_id, offset)
        return self._track(conn, self._create_slow(conn, req))

    def _created(self, object_id: bytes, offset: int) -> msg.CreateObjectReply:
        if offset < 0:  # larger than the store: in a file of its own
            return msg.CreateObjectReply(-1, path=self.store.path_of(object_id))
        return msg.CreateObjectReply(offset, fresh=self.store.is_fresh(offset))

    async def _create_slow(self, conn, req: msg.CreateObject) -> msg.CreateObjectReply:
        try:
            offset = await self.store.create(req.object_id, req.size, req.owner,
                                             req.is_primary, conn)
        except _REPLY_ERRORS as exc:
            return msg.CreateObjectReply(-1, type(exc).__name__, str(exc))
        return self._created(req.object_id, offset)

    def seal(self, conn, req: msg.SealObject) -> None:
        self.store.seal(req.object_id)

    def abort(self, conn, req: msg.AbortObject) -> None:
        self.store.abort(req.object_id, conn)

    def get(self, conn, req: msg.GetObjects):
        entries = self.store.get_nowait(conn, req.object_ids)
        if entries is not None:
            return _get_reply(entries)
        return self._track(conn, self._get_slow(conn, req))

    async def _get_slow(self, conn, req: msg.GetObjects) -> msg.GetObjectsReply:
        try:
            entries = await self.store.get(conn, req.object_ids, req.timeout)
        except _REPLY_ERRORS as exc:
            return msg.GetObjectsReply([], type(exc).__name__, str(exc))
        return _get_reply(entries)

    def release(self, conn, req: msg.ReleaseObjects) -> None:
        self.store.release(conn, req.object_ids)

    def delete(self, conn, req: msg.DeleteObjects) -> None:
        self.store.delete(req.object_ids)

    def stats(self, conn, req: msg.GetStoreStats) -> msg.GetStoreStatsReply:
        return msg.GetStoreStatsReply(
            self.store.stats(), self.store.list_objects() if req.include_objects else [])

    # --- lifecycle ------------------------------------------------------------------

    def connection_closed(self, conn) -> None:
        """The client is gone: stop its waits and drop its pins and unsealed objects."""
        for task in self._inflight.pop(conn, ()):
            task.cancel()
        self.store.release_client(conn)

    def start(self) -> None:
        self.store.start()

    def close(self) -> None:
        self.store.close()
        if self.arena is not None:
            self.arena.close()

    def debug_state(self) -> dict:
        return self.store.debug_state()

    def _track(self, conn, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        tasks = self._inflight.setdefault(conn, set())
        tasks.add(task)

        def done(t, conn=conn):
            tasks = self._inflight.get(conn)
            if tasks is not None:
                tasks.discard(t)
                if not tasks:
                    del self._inflight[conn]
        task.add_done_callback(done)
        return task


def _get_reply(entries) -> msg.GetObjectsReply:
    return msg.GetObjectsReply([None if e is None else msg.ObjectEntry(e.object_id, e.offset,
                                                                       e.size, e.path)
                                for e in entries])
