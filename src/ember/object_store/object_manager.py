"""Copies objects between nodes: the raylet's object manager.

A value larger than ``max_direct_call_object_size`` lives in the object store
of the node that made it, and the marker that travels in its place names that
node. A reader on another node asks its own raylet to *pull* the object
(``PullObject``); the raylet copies it from the source raylet into its own
store as a *secondary* copy (evictable in LRU order, never spilled: the
primary stays where it was), and answers once the copy is sealed. The reader
then maps it like any local object.

The transfer, from the pulling side::

    StartObjectTransfer(id)  ──►  source pins the object (restoring it if
                             ◄──  spilled) and answers its size
    create a secondary copy of that size here
    GetObjectChunk(id, offset, length) × N, ``chunks_in_flight`` at a time
                             ◄──  each reply: one raw buffer frame, sliced
                                  from the source's arena mapping
    seal the copy; EndObjectTransfer(id) ──► source unpins

Why chunks with several in flight, as Ray's object manager does: one request
per object would make the source hold the socket for the whole object and
leave the link idle for a round trip per request; with a window of chunks
the next bytes are always on their way, and a slow or dead peer is noticed
per chunk rather than per object.

Why no buffer ever holds an object twice: the source sends ``memoryview``
slices of its arena (the pin keeps them valid until the bytes are written),
and the puller names each chunk's place in its own arena as the destination
of the reply (``request(..., into=...)`` on a connection with the buffered
front of :mod:`ember.rpc.buffered`), so the kernel copies socket data
straight into shared memory. Fresh store pages are pre-faulted on a thread
a few chunks ahead of the data (MADV_POPULATE_WRITE), which on this
project's VMs is faster than faulting them one by one under ``recv``.

Same host, no TCP: when the source raylet runs on this machine (a
``cluster_utils.Cluster``, or nodes in separate network namespaces), the
puller says so in StartObjectTransfer (its boot id), and the source answers
where its arena is and where the object lies in it. The puller maps that
arena read-only (:class:`~ember.object_store.arena.PeerArena`, once per
source node) and copies the object with memcpy on a thread, in steps so the
loop stays free, instead of asking for chunks: loopback TCP runs at about a
fifth of memcpy's speed on this project's VMs. Pins work as for chunks. If
the arena cannot be opened here (another user, another pid namespace), the
chunks go through TCP; ``object_transfer_same_host=False`` forces that.

Failure modes, each an ``ObjectLostError`` that names the object and the
node rather than a hang: the source node is dead (known from the GCS's node
events, or its raylet refuses the connection), the connection drops during
the transfer, or the object is not (or no longer) in the source's store.

Concurrent pulls of one object on one node share one transfer. Every method
runs on the raylet's event loop; populating runs on a thread of its own.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import os
import time

from ..config import config
from ..exceptions import ObjectLostError, ObjectStoreFullError, OutOfMemoryError
from ..protocol import object_store as msg
from ..protocol.common import Address
from ..rpc import RemoteError
from ..rpc.pool import ConnectionPool
from .arena import PeerArena, host_id
from .store import ObjectExistsError

logger = logging.getLogger(__name__)

#: Bytes per step of a same-host copy: each step is one trip to the copying
#: thread (about 50 us), so steps are large; small enough that stopping the
#: raylet waits for at most one.
SHARED_COPY_STEP = 64 * 1024**2

#: Errors a pull answers in its reply, by class name, for the client to re-raise.
_REPLY_ERRORS = (ObjectLostError, ObjectStoreFullError, OutOfMemoryError, ValueError)


class _Transfer:
    """Identifies one transfer to the store, as the creator of the copy it writes."""

    __slots__ = ("object_id",)

    def __init__(self, object_id: bytes):
        self.object_id = object_id


class ObjectManager:
    """Pulls objects from other nodes into this node's store, and serves them to others."""

    def __init__(self, store, arena, node_id: bytes):
        """``store``: this node's ObjectStore; ``arena``: the Arena it allocates in."""
        self.store = store
        self.arena = arena
        self.node_id = node_id
        #: object id -> the transfer in progress; every PullObject of it waits on it.
        self._pulls: dict[bytes, asyncio.Task] = {}
        #: Buffered TCP connections to other raylets, by "ip:port".
        self._links = ConnectionPool(timeout=config.object_transfer_connect_timeout_s,
                                     already_listening=True, buffered=True)
        #: Nodes the GCS declared dead: pulls from them fail at once.
        self._dead_nodes: set[bytes] = set()
        #: Serving side: connection -> object id -> [arena offset, size, transfers].
        #: Each transfer holds one pin of the object for that connection.
        self._serving: dict[object, dict[bytes, list]] = {}
        #: Blocking memory work, off the loop: pre-faulting, and same-host copies.
        self._memory_thread = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="ember-memory")
        #: This machine's boot id, and how raylets here open this node's arena.
        self._host_id = host_id()
        self._shared = msg.SharedArena(os.getpid(), arena.fd, arena.capacity,
                                       *arena.identity())
        #: Arenas of other nodes on this host, mapped read-only; None: not mappable.
        self._peers: dict[bytes, PeerArena | None] = {}
        self._stats = dict.fromkeys((
            "pull_requests", "pulls_joined", "pulls_already_local", "transfers_started",
            "transfers_completed", "transfers_failed", "bytes_received", "chunks_received",
            "transfers_same_host", "bytes_copied_same_host",
            "transfers_served", "chunks_sent", "bytes_sent"), 0)
        self._last_transfer: dict = {}

    def handlers(self) -> dict:
        return {
            msg.PullObject: self.handle_pull,
            msg.StartObjectTransfer: self.handle_start_transfer,
            msg.GetObjectChunk: self.handle_get_chunk,
            msg.EndObjectTransfer: self.handle_end_transfer,
        }

    # --- pulling (this node reads another node's object) ---------------------------------

    def handle_pull(self, conn, req: msg.PullObject):
        """A local client wants a copy here; answered when it is sealed (or failed)."""
        self._stats["pull_requests"] += 1
        if self.store.contains(req.object_id):
            self._stats["pulls_already_local"] += 1
            return msg.PullObjectReply()
        task = self._pulls.get(req.object_id)
        if task is None:
            task = asyncio.get_running_loop().create_task(
                self._transfer(req.object_id, req.source, req.owner))
            self._pulls[req.object_id] = task
            task.add_done_callback(lambda t, oid=req.object_id: self._pull_done(oid, t))
        else:
            self._stats["pulls_joined"] += 1
        return self._answer_when_done(task)

    async def _answer_when_done(self, task: asyncio.Task) -> msg.PullObjectReply:
        try:
            await asyncio.shield(task)  # a reader that leaves does not cancel the others' pull
        except _REPLY_ERRORS as exc:
            return msg.PullObjectReply(type(exc).__name__, str(exc))
        return msg.PullObjectReply()

    def _pull_done(self, object_id: bytes, task: asyncio.Task) -> None:
        if self._pulls.get(object_id) is task:
            del self._pulls[object_id]
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            self._stats["transfers_completed"] += 1
        else:
            self._stats["transfers_failed"] += 1
            if not isinstance(exc, _REPLY_ERRORS):
                logger.error("pull of object %s failed", object_id.hex(), exc_info=exc)

    async def _transfer(self, object_id: bytes, source: Address, owner) -> None:
        """Copy ``object_id`` from the raylet at ``source`` into a sealed local copy."""
        self._stats["transfers_started"] += 1
        if source.node_id == self.node_id:
            raise ObjectLostError(object_id.hex(), message=(
                f"Object {object_id.hex()} is no longer in the object store of its node "
                f"({self.node_id.hex()[:12]}): it was freed or lost there."))
        where = f"{source.ip}:{source.port}"
        try:
            if source.node_id in self._dead_nodes:
                raise ConnectionError("the node is dead")
            link = await self._links.get(where, f"raylet {source.node_id.hex()[:12]}")
            start = await link.call(msg.StartObjectTransfer(
                object_id, self._host_id if config.object_transfer_same_host else ""))
        except (ConnectionError, RemoteError) as exc:
            raise self._lost(object_id, source, exc) from exc
        if start.error_type:
            raise self._lost(object_id, source, start.error_message)
        started = time.perf_counter()
        # The copy's creator id in the store: one per transfer, so that a failed one
        # is aborted alone, even if its owner deleted the object meanwhile.
        creator = _Transfer(object_id)
        try:
            try:
                offset = await self.store.create(object_id, start.size, owner, False, creator)
            except ObjectExistsError:
                return  # a copy appeared here meanwhile (written by a local process)
            except ObjectStoreFullError as exc:
                raise ObjectStoreFullError(
                    f"Cannot copy object {object_id.hex()} ({start.size} bytes) from node "
                    f"{source.node_id.hex()[:12]} to this node: {exc}") from None
            # Objects larger than a store live in files: they travel over the socket.
            peer = (self._peer(source, start.arena)
                    if start.arena is not None and start.offset >= 0 and offset >= 0
                    else None)
            try:
                if peer is not None:
                    await self._copy_same_host(peer, start.offset, offset, start.size,
                                               object_id)
                else:
                    await self._receive(link, object_id, offset, start.size)
            except BaseException:
                self.store.release_client(creator)
                raise
            self.store.seal(object_id)
        except (ConnectionError, RemoteError) as exc:
            raise self._lost(object_id, source, exc) from exc
        finally:
            if not link.closed:
                link.notify(msg.EndObjectTransfer(object_id))
        seconds = time.perf_counter() - started
        self._last_transfer = {"object_id": object_id.hex(), "bytes": start.size,
                               "seconds": round(seconds, 4),
                               "from_node": source.node_id.hex(),
                               "path": "shared memory" if peer is not None else "tcp"}

    async def _receive(self, link, object_id: bytes, offset: int, size: int) -> None:
        """Fetch the object's bytes into ``[offset, offset + size)`` of the arena (or,
        with ``offset`` -1, into the file of an object larger than the store)."""
        chunk = max(config.object_transfer_chunk_size, 1)
        window = max(config.object_transfer_chunks_in_flight, 1)
        loop = asyncio.get_running_loop()
        populated = None
        if offset < 0:
            target, offset = self.store.contents(self.store.entry(object_id)), 0
        else:
            target = self.arena.view
        if target is self.arena.view and self.store.is_fresh(offset):
            # Queue the pre-faulting of every chunk now; the thread runs ahead of the data.
            populated = [loop.run_in_executor(self._memory_thread, self.arena.populate,
                                              offset + start, min(chunk, size - start))
                         for start in range(0, size, chunk)]
        in_flight: collections.deque = collections.deque()
        position = 0
        try:
            while position < size or in_flight:
                while position < size and len(in_flight) < window:
                    n = min(chunk, size - position)
                    if populated is not None:
                        await self._populated(populated[position // chunk], object_id, size)
                    dest = target[offset + position:offset + position + n]
                    in_flight.append((link.request(
                        msg.GetObjectChunk(object_id, position, n), into=[dest]), dest))
                    position += n
                reply = await in_flight[0][0]
                _, dest = in_flight.popleft()
                body, buffers = reply if isinstance(reply, tuple) else (reply, None)
                if body.error_type or not buffers or buffers[0] is not dest:
                    raise RemoteError(body.error_type or "ValueError", body.error_message or (
                        f"a chunk of {len(dest)} bytes came with "
                        f"{[len(b) for b in buffers or ()]} bytes"))
                self._stats["chunks_received"] += 1
                self._stats["bytes_received"] += len(dest)
        except BaseException:
            # Chunks still on their way write into this range: let them land (or
            # fail) before the caller gives the range back to the allocator.
            if in_flight:
                await asyncio.gather(*(fut for fut, _ in in_flight), return_exceptions=True)
            if populated is not None:
                for fut in populated:
                    fut.cancel()
                await asyncio.gather(*populated, return_exceptions=True)
            raise

    def _peer(self, source: Address, shared: msg.SharedArena) -> PeerArena | None:
        """The source node's arena mapped here, or None: copy through TCP then."""
        if source.node_id in self._peers:
            return self._peers[source.node_id]
        try:
            peer = PeerArena(shared.pid, shared.fd, shared.capacity, shared.device,
                             shared.inode)
        except OSError as exc:
            logger.info("cannot map the object store of node %s on this host (%s); "
                        "copying its objects through TCP", source.node_id.hex()[:12], exc)
            peer = None
        self._peers[source.node_id] = peer
        return peer

    async def _copy_same_host(self, peer: PeerArena, src: int, dst: int, size: int,
                              object_id: bytes) -> None:
        """memcpy ``size`` bytes from ``src`` in ``peer`` to ``dst`` here, step by step."""
        loop = asyncio.get_running_loop()
        fresh = self.store.is_fresh(dst)
        peer.readers += 1
        try:
            for start in range(0, size, SHARED_COPY_STEP):
                n = min(SHARED_COPY_STEP, size - start)
                step = loop.run_in_executor(self._memory_thread, self._copy_step, peer,
                                            src + start, dst + start, n, fresh)
                try:
                    await self._populated(asyncio.shield(step), object_id, size)
                except asyncio.CancelledError:
                    # The thread is writing into this range: let it finish before
                    # the caller gives the range back to the allocator.
                    await asyncio.wait([step])
                    raise
                self._stats["bytes_copied_same_host"] += n
        finally:
            peer.readers -= 1
            if peer.closing:
                peer.close()
        self._stats["transfers_same_host"] += 1

    def _copy_step(self, peer: PeerArena, src: int, dst: int, n: int, fresh: bool) -> None:
        if fresh:
            self.arena.populate(dst, n)
        self.arena.copy_from(peer, src, dst, n)

    @staticmethod
    async def _populated(fut, object_id: bytes, size: int) -> None:
        try:
            await fut
        except OSError as exc:
            raise OutOfMemoryError(
                f"This node ran out of memory while copying object {object_id.hex()} "
                f"({size} bytes) into its object store ({exc}). The store's capacity is "
                "more than the memory actually available: lower object_store_memory, or "
                "free memory on the node.") from exc

    def _lost(self, object_id: bytes, source: Address, cause) -> ObjectLostError:
        node = source.node_id.hex()[:12]
        if source.node_id in self._dead_nodes:
            why = f"its node {node} ({source.ip}) died, and with it the only copy"
        else:
            why = f"it could not be copied from node {node} ({source.ip}:{source.port}): {cause}"
        return ObjectLostError(object_id.hex(), message=f"Object {object_id.hex()} is lost: {why}.")

    # --- serving (another node reads an object of this node) ------------------------------

    def handle_start_transfer(self, conn, req: msg.StartObjectTransfer):
        entries = self.store.get_nowait(conn, [req.object_id])
        if entries is not None:
            return self._started(conn, req, entries[0])
        return self._start_slow(conn, req)

    async def _start_slow(self, conn, req: msg.StartObjectTransfer):
        try:
            entries = await self.store.get(conn, [req.object_id], timeout=0)
        except _REPLY_ERRORS as exc:  # e.g. its spill file is corrupt
            return msg.StartObjectTransferReply(-1, type(exc).__name__, str(exc))
        if conn.closed:  # the puller left while the object was restored
            if entries[0] is not None:
                self.store.release(conn, [req.object_id])
            return msg.StartObjectTransferReply(-1, "ConnectionError", "puller left")
        return self._started(conn, req, entries[0])

    def _started(self, conn, req: msg.StartObjectTransfer,
                 entry) -> msg.StartObjectTransferReply:
        object_id = req.object_id
        if entry is None:
            return msg.StartObjectTransferReply(-1, ObjectLostError.__name__, (
                f"the object is not in the object store of node {self.node_id.hex()[:12]}: "
                "it was freed, or never sealed there"))
        serving = self._serving.setdefault(conn, {})
        record = serving.get(object_id)
        if record is None:
            serving[object_id] = [self.store.contents(entry), entry.size, 1]
        else:
            record[2] += 1
        self._stats["transfers_served"] += 1
        if req.host_id and req.host_id == self._host_id and entry.offset >= 0:
            return msg.StartObjectTransferReply(entry.size, arena=self._shared,
                                                offset=entry.offset)
        return msg.StartObjectTransferReply(entry.size)

    def handle_get_chunk(self, conn, req: msg.GetObjectChunk):
        record = self._serving.get(conn, {}).get(req.object_id)
        if record is None:
            return msg.ObjectChunkReply(ValueError.__name__, (
                f"object {req.object_id.hex()} is not pinned for a transfer on this "
                "connection; send StartObjectTransfer first"))
        contents, size, _ = record
        if req.offset < 0 or req.length < 0 or req.offset + req.length > size:
            return msg.ObjectChunkReply(ValueError.__name__, (
                f"chunk [{req.offset}, {req.offset + req.length}) is outside object "
                f"{req.object_id.hex()} of {size} bytes"))
        self._stats["chunks_sent"] += 1
        self._stats["bytes_sent"] += req.length
        # A slice of the arena mapping (or of an on-disk object's file): the transport
        # writes it out without a copy, and the transfer's pin keeps the bytes in
        # place until it has.
        return msg.ObjectChunkReply(), [contents[req.offset:req.offset + req.length]]

    def handle_end_transfer(self, conn, req: msg.EndObjectTransfer) -> None:
        serving = self._serving.get(conn)
        record = serving.get(req.object_id) if serving else None
        if record is None:
            return
        record[2] -= 1
        if record[2] == 0:
            del serving[req.object_id]
            if not serving:
                del self._serving[conn]
        self.store.release(conn, [req.object_id])

    # --- events -------------------------------------------------------------------------

    def connection_closed(self, conn) -> None:
        """A puller left; the store drops its pins itself (StoreService.connection_closed)."""
        self._serving.pop(conn, None)

    def node_removed(self, node_id: bytes, raylet: Address | None) -> None:
        """The GCS declared ``node_id`` dead: fail pulls from it now, not at a timeout."""
        self._dead_nodes.add(node_id)
        peer = self._peers.pop(node_id, None)
        if peer is not None:  # unmapped now, or when a copy reading it ends
            peer.close()
        if raylet is not None:
            self._links.close(f"{raylet.ip}:{raylet.port}")

    def close(self) -> None:
        self._serving.clear()  # its views of the arena go before the arena is unmapped
        for task in list(self._pulls.values()):
            task.cancel()
        self._links.close_all()
        # Wait for the step being copied, if any: the arenas are unmapped next.
        self._memory_thread.shutdown(wait=True, cancel_futures=True)
        for peer in self._peers.values():
            if peer is not None:
                peer.readers = 0
                peer.close()
        self._peers.clear()

    def debug_state(self) -> dict:
        return {**self._stats,
                "pulls_in_progress": [oid.hex() for oid in self._pulls],
                "objects_being_served": sum(len(s) for s in self._serving.values()),
                "links": sorted(self._links.connections),
                "peer_arenas_mapped": sum(p is not None for p in self._peers.values()),
                "last_transfer": self._last_transfer}
