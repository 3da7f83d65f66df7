"""Where the copies of stored objects live, seen from a core worker.

A value in an object store is known by a marker that names the node holding
its primary copy. This module is the core worker's part of moving and
freeing such values across nodes (the raylets' part is
:mod:`ember.object_store.object_manager`):

- **Reading a remote object.** Before reading a marker of another node, the
  reader asks its own raylet to pull the object (``PullObject``, naming that
  node's raylet) and blocks until the local copy is sealed. It blocks the
  calling thread, never the I/O thread: the I/O thread must stay free to
  carry the reply. Pulls of one ``get`` run concurrently; the raylet merges
  pulls of the same object from several readers into one transfer.
- **Recording copies.** After a pull, the reader tells the object's owner
  (``AddObjectLocation``), and the owner adds the node to the object's
  locations (``Reference.locations``).
- **Freeing.** When an owned object is freed, ``DeleteObjects`` goes to the
  raylet of every node holding a copy: the primary's node and every recorded
  location, batched per node. A location reported after the free (the
  notice and the free crossed) is deleted at once, so no copy outlives its
  owner's interest. When a driver shuts down, it frees its objects' copies
  on other nodes the same way (its own node's raylet frees the local ones).
- **Node addresses.** A node id becomes a raylet address through the GCS
  node table, cached here and re-read when an unknown node shows up.

Methods prefixed ``loop_`` and handlers run on the I/O thread; ``pull`` runs
on any other thread; ``free`` on any thread.
"""
from __future__ import annotations

import asyncio
import logging

from .. import rpc
from ..exceptions import (ObjectLostError, ObjectStoreFullError, OutOfMemoryError,
                          RaySystemError)
from ..protocol import core_worker as cw
from ..protocol import gcs as gcs_msg
from ..protocol import object_store as os_msg
from ..protocol.common import Address

logger = logging.getLogger(__name__)

_PULL_ERRORS = {cls.__name__: cls for cls in (ObjectLostError, ObjectStoreFullError,
                                              OutOfMemoryError)}


class ObjectDirectory:
    """See the module docstring."""

    def __init__(self, io, info, node, gcs, references, peers, handlers: dict):
        self._io = io
        self._info = info
        self._node = node
        self._gcs = gcs
        self._references = references
        self._peers = peers
        #: node id -> its NodeInfo from the GCS (death is final, so a dead entry stays).
        self._nodes: dict[bytes, gcs_msg.NodeInfo] = {}
        self._refreshing: asyncio.Future | None = None
        #: node id -> object ids to delete there, sent at the end of this loop turn.
        self._pending_deletes: dict[bytes, list[bytes]] = {}
        handlers[cw.AddObjectLocation] = self.handle_add_location
        references.on_free.append(self.free)

    # --- reading objects of other nodes ---------------------------------------------

    def pull(self, items: list[tuple[bytes, bytes, Address | None]]) -> None:
        """Copy each ``(object id, node id, owner)`` into this node's store; blocks.

        Raises the first failure: ObjectLostError (the node died, or the object
        is gone there), ObjectStoreFullError or OutOfMemoryError (no room here).
        """
        results = self._io.run(self._loop_pull(items))
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _loop_pull(self, items) -> list:
        return await asyncio.gather(*(self._pull_one(*item) for item in items),
                                    return_exceptions=True)

    async def _pull_one(self, object_id: bytes, node_id: bytes, owner: Address | None):
        info = await self.node_info(node_id)
        if info is None or not info.alive:
            state = "is not in the cluster" if info is None else "died"
            raise ObjectLostError(object_id.hex(), message=(
                f"Object {object_id.hex()} is lost: its copy was in the object store of node "
                f"{node_id.hex()[:12]}, which {state}."))
        raylet = self._node.raylet
        try:
            reply = await raylet.call(os_msg.PullObject(object_id, info.raylet, owner))
        except (ConnectionError, rpc.RemoteError) as exc:
            raise RaySystemError(f"Could not ask this node's raylet to copy object "
                                 f"{object_id.hex()} from node {node_id.hex()[:12]}: {exc}"
                                 ) from exc
        if reply.error_type:
            cls = _PULL_ERRORS.get(reply.error_type)
            if cls is ObjectLostError:
                raise ObjectLostError(object_id.hex(), message=reply.error_message)
            if cls is not None:
                raise cls(reply.error_message)
            raise RaySystemError(f"Copying object {object_id.hex()} from node "
                                 f"{node_id.hex()[:12]} failed: {reply.error_type}: "
                                 f"{reply.error_message}")
        await self._report_location(object_id, owner)

    async def _report_location(self, object_id: bytes, owner: Address | None) -> None:
        """Tell the owner that this node now holds a copy."""
        node_id = self._info.node_id
        if self._info.owns(owner):
            if not self._references.add_location(object_id, node_id):
                self._queue_delete(node_id, object_id)
            return
        try:
            conn = await self._peers.get(owner, "owner")
            conn.notify(cw.AddObjectLocation(object_id, node_id))
        except ConnectionError:
            pass  # the owner is gone; so is its object, and the raylet evicts the copy

    # --- the owner's side -------------------------------------------------------------

    def handle_add_location(self, conn, req: cw.AddObjectLocation) -> None:
        if not self._references.add_location(req.object_id, req.node_id):
            self._queue_delete(req.node_id, req.object_id)  # freed meanwhile

    def free(self, object_id: bytes, ref) -> None:
        """An owned object was freed (any thread): delete every copy of it."""
        if not ref.value_node or self._node.object_store is None or self._info.shutting_down:
            return
        nodes = [ref.value_node, *(ref.locations or ())]
        self._io.post(self._loop_delete_copies, object_id, nodes)

    def _loop_delete_copies(self, object_id: bytes, nodes: list[bytes]) -> None:
        for node_id in nodes:
            self._queue_delete(node_id, object_id)

    def _queue_delete(self, node_id: bytes, object_id: bytes) -> None:
        if not self._pending_deletes:
            self._io.loop.call_soon(self._flush_deletes)
        self._pending_deletes.setdefault(node_id, []).append(object_id)

    def _flush_deletes(self) -> list[asyncio.Task]:
        pending, self._pending_deletes = self._pending_deletes, {}
        tasks = []
        for node_id, object_ids in pending.items():
            if node_id == self._info.node_id:
                raylet = self._node.raylet
                if raylet is not None and not raylet.closed:
                    raylet.notify(os_msg.DeleteObjects(object_ids))
            else:
                tasks.append(self._io.loop.create_task(
                    self._delete_remote(node_id, object_ids)))
        return tasks

    async def _delete_remote(self, node_id: bytes, object_ids: list[bytes]) -> None:
        info = await self.node_info(node_id)
        if info is None or not info.alive:
            return  # its store died with it
        try:
            conn = await self._peers.get(info.raylet, "raylet")
            conn.notify(os_msg.DeleteObjects(object_ids))
        except ConnectionError:
            pass  # the node is going away, and its store with it

    async def loop_free_remote_copies(self) -> None:
        """Driver shutdown: delete the copies of its objects on other nodes.

        This node's raylet frees the driver's objects here when it disconnects;
        other nodes would keep theirs until they stop.
        """
        own = self._info.node_id
        for object_id, ref in self._references.snapshot():
            if ref.owner is None and ref.value_node:
                for node_id in {ref.value_node, *(ref.locations or ())} - {own}:
                    self._pending_deletes.setdefault(node_id, []).append(object_id)
        tasks = self._flush_deletes()
        if tasks:
            await asyncio.wait(tasks, timeout=2)

    # --- the node table ---------------------------------------------------------------

    async def node_info(self, node_id: bytes) -> gcs_msg.NodeInfo | None:
        """The GCS's record of ``node_id``, re-reading the table if it is not known yet."""
        info = self._nodes.get(node_id)
        if info is None:
            await self._refresh_nodes()
            info = self._nodes.get(node_id)
        return info

    async def dead_nodes(self, node_ids) -> set[bytes]:
        """Those of ``node_ids`` that the GCS says died (or never knew), read afresh."""
        if not node_ids:
            return set()
        await self._refresh_nodes()
        return {n for n in node_ids if n not in self._nodes or not self._nodes[n].alive}

    async def _refresh_nodes(self) -> None:
        if self._refreshing is not None:
            await asyncio.shield(self._refreshing)
            return
        self._refreshing = self._io.loop.create_future()
        try:
            reply = await self._gcs.call(gcs_msg.GetAllNodes())
            for info in reply.nodes:
                self._nodes[info.node_id] = info
        except (ConnectionError, rpc.RemoteError) as exc:
            logger.warning("could not read the node table from the GCS: %s", exc)
        finally:
            self._refreshing.set_result(None)
            self._refreshing = None
