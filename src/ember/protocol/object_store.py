"""Messages of the object store service, served by the raylet to clients on its node.

Object bytes never travel in these messages within a node: both ends map the
same memfd arena (see :mod:`ember.object_store.arena`), and messages carry
offsets into it. A writer creates, fills and seals; a reader gets (which
pins) and releases. Between nodes, raylets copy objects in chunks that travel
as raw buffer frames (the last section; see
:mod:`ember.object_store.object_manager`).

Replies carry a status as ``error_type`` and ``error_message``: "" when the
request succeeded, otherwise the name of the exception the client re-raises
(``ObjectStoreFullError``, ``ObjectExistsError``, ``SpilledObjectCorruptError``,
``ValueError``) and its message.
"""
from __future__ import annotations

import msgspec

from .common import Address, Message


class CreateObject(Message):
    """Allocate ``size`` bytes for a new object; the client then writes and seals it."""

    #: The id of the new object.
    object_id: bytes
    #: Bytes the object needs, header included.
    size: int
    #: The core worker that owns the object, for ``ember memory``; None if unknown.
    owner: Address | None = None
    #: False for a copy pulled from another node: it may be evicted, not spilled.
    is_primary: bool = True


class CreateObjectReply(Message):
    #: Offset of the object in the arena; -1 on error, or when it is on disk.
    offset: int = -1
    #: "" on success, else the exception's class name.
    error_type: str = ""
    #: What happened and what to do, for the user.
    error_message: str = ""
    #: The range has no memory pages yet: pre-fault it before writing
    #: (MADV_POPULATE_WRITE), several times faster than page-by-page faults.
    fresh: bool = False
    #: An object larger than the whole store is written to this file instead
    #: (Ray's fallback allocation); "" for arena objects.
    path: str = ""


class SealObject(Message):
    """Notification: the object is fully written and immutable; readers may see it."""

    #: The object the sender created.
    object_id: bytes


class AbortObject(Message):
    """Notification: the creator failed while writing; free the unsealed object."""

    #: The object the sender created and will not seal.
    object_id: bytes


class ObjectEntry(msgspec.Struct, array_like=True, frozen=True, gc=False, omit_defaults=True):
    """Where a sealed object lies in the arena."""

    #: The object.
    object_id: bytes
    #: Offset of its first byte in the arena (-1: in the file ``path``).
    offset: int
    #: Its size in bytes.
    size: int
    #: The file of an object larger than the store (see CreateObjectReply.path).
    path: str = ""


class GetObjects(Message):
    """Pin objects on this node for the sender and say where they are.

    Spilled objects are restored first. Each found object stays pinned (it
    cannot be evicted, spilled or moved) until the sender releases it or
    disconnects.
    """

    #: The objects to read.
    object_ids: list[bytes]
    #: Seconds to wait for objects still being written; None waits for ever.
    #: Objects unknown to this node are answered None at once.
    timeout: float | None = None


class GetObjectsReply(Message):
    #: One per requested id, in order: where it is, or None if not on this node.
    entries: list[ObjectEntry | None] = []
    #: "" on success, else the exception's class name; no object is pinned then.
    error_type: str = ""
    #: What happened and what to do, for the user.
    error_message: str = ""


class ReleaseObjects(Message):
    """Notification: the sender no longer holds views of these objects (one pin each)."""

    #: One entry per pin to drop; an id may appear more than once.
    object_ids: list[bytes]


class DeleteObjects(Message):
    """Notification from the owner: the objects are freed; drop them and their spill files.

    Memory of an object that a reader still pins is freed when the last pin goes.
    """

    #: The objects to delete; unknown ids are ignored.
    object_ids: list[bytes]


class GetStoreStats(Message):
    """Ask for the store's counters, and optionally its object list (``ember memory``)."""

    #: Also list every object.
    include_objects: bool = False


class StoredObjectInfo(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """One object as ``ember memory`` shows it."""

    #: The object.
    object_id: bytes
    #: Its size in bytes.
    size: int
    #: The core worker that owns it; None if unknown.
    owner: Address | None
    #: "CREATED", "SEALED" or "SPILLED".
    state: str
    #: False for a secondary copy (evictable).
    is_primary: bool
    #: A copy is in a spill file.
    spilled: bool
    #: Number of pins held by readers.
    pins: int


class GetStoreStatsReply(Message):
    #: capacity, used, pinned, num_objects, num_spilled, spilled_bytes, restored,
    #: evicted and more; see ObjectStore.stats().
    stats: dict
    #: Every object, when requested.
    objects: list[StoredObjectInfo] = []


# --- transfers between nodes (ember.object_store.object_manager) ----------------------

class PullObject(Message):
    """Core worker to its raylet: make a copy of an object of another node here.

    Answered once the local copy is sealed (so a GetObjects finds it), or with
    an error. Concurrent pulls of one object on a node share one transfer.
    """

    #: The object to copy.
    object_id: bytes
    #: The raylet of the node whose store holds the copy to read.
    source: Address
    #: The object's owner, recorded on the local copy for ``ember memory``.
    owner: Address | None = None


class PullObjectReply(Message):
    #: "" on success, else the exception's class name (``ObjectLostError``,
    #: ``ObjectStoreFullError``, ...).
    error_type: str = ""
    #: What happened and what to do, for the user.
    error_message: str = ""


class StartObjectTransfer(Message):
    """Raylet to the raylet holding an object: pin it for a transfer to me; how big is it?

    The object stays pinned (it is not spilled, evicted or moved, even if its
    owner deletes it) until EndObjectTransfer or until the connection closes.
    A spilled object is restored first.
    """

    #: The object to read.
    object_id: bytes
    #: The puller's host (its boot id): if it is the source's host too, the
    #: reply says where the object lies in the source's arena, and the puller
    #: may copy it from there directly instead of asking for chunks.
    host_id: str = ""


class SharedArena(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """How a raylet on the same host opens another raylet's arena, and checks it did.

    ``/proc/<pid>/fd/<fd>``; the opened file must have this device and inode
    (a pid seen through another pid namespace would name another process).
    """

    pid: int
    fd: int
    capacity: int
    device: int
    inode: int


class StartObjectTransferReply(Message):
    #: The object's size in bytes; -1 on error.
    size: int = -1
    #: "" on success, else the exception's class name (``ObjectLostError`` when
    #: the object is not on that node).
    error_type: str = ""
    #: What happened, for the user.
    error_message: str = ""
    #: Same host only (see StartObjectTransfer.host_id): the source's arena, and
    #: the object's offset in it, valid while the transfer's pin lasts.
    arena: SharedArena | None = None
    offset: int = -1


class GetObjectChunk(Message):
    """Read ``length`` bytes at ``offset`` of an object pinned by StartObjectTransfer.

    The reply carries the bytes as one raw buffer frame, sliced from the
    sender's store mapping (never copied into the message).
    """

    #: The object, pinned for this connection.
    object_id: bytes
    #: First byte to read, from the start of the object.
    offset: int
    #: Bytes to read.
    length: int


class ObjectChunkReply(Message):
    #: "" on success (the bytes follow as one raw buffer), else the exception's
    #: class name; no buffer follows then.
    error_type: str = ""
    #: What happened, for the user.
    error_message: str = ""


class EndObjectTransfer(Message):
    """Notification: the transfer of this object is over; drop its pin."""

    #: The object pinned by StartObjectTransfer on this connection.
    object_id: bytes
