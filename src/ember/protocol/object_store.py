"""Messages of the object store service, served by the raylet to clients on its node.

Object bytes never travel in these messages: both ends map the same memfd
arena (see :mod:`ember.object_store.arena`), and messages carry offsets into
it. A writer creates, fills and seals; a reader gets (which pins) and releases.

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
    #: Offset of the object in the arena; -1 on error.
    offset: int = -1
    #: "" on success, else the exception's class name.
    error_type: str = ""
    #: What happened and what to do, for the user.
    error_message: str = ""
    #: The range has no memory pages yet: pre-fault it before writing
    #: (MADV_POPULATE_WRITE), several times faster than page-by-page faults.
    fresh: bool = False


class SealObject(Message):
    """Notification: the object is fully written and immutable; readers may see it."""

    #: The object the sender created.
    object_id: bytes


class AbortObject(Message):
    """Notification: the creator failed while writing; free the unsealed object."""

    #: The object the sender created and will not seal.
    object_id: bytes


class ObjectEntry(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """Where a sealed object lies in the arena."""

    #: The object.
    object_id: bytes
    #: Offset of its first byte in the arena.
    offset: int
    #: Its size in bytes.
    size: int


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
