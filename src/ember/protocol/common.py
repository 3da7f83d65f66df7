"""Messages and value types shared by every service.

Every wire message derives from :class:`Message`: a msgspec Struct, tagged by its
class name and encoded as a msgpack array (``array_like``) because arrays are
smaller and faster to decode than maps. ``gc=False`` is safe because messages
never form reference cycles, and it keeps the garbage collector from scanning
the thousands of in-flight task specs a busy owner holds.
"""
from __future__ import annotations

import msgspec


class Message(msgspec.Struct, tag=True, array_like=True, gc=False):
    """Base of every message that travels in an envelope."""


class Address(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """Where a process (raylet, worker, driver) listens for RPCs."""

    node_id: bytes
    ip: str
    #: TCP port; reachable from every node.
    port: int
    #: Unix socket path; preferred by peers on the same node. "" if none.
    unix: str = ""
    #: The worker id for a worker or driver; b"" for a raylet.
    worker_id: bytes = b""


class SchedulingStrategy(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """How a task or actor chooses its node. ``kind`` selects which fields matter."""

    kind: str = "DEFAULT"  # DEFAULT | SPREAD | NODE_AFFINITY | PLACEMENT_GROUP | NODE_LABEL
    node_id: bytes = b""
    soft: bool = False
    placement_group_id: bytes = b""
    bundle_index: int = -1
    capture_child_tasks: bool = False
    #: NODE_LABEL: label -> (operator, values) for hard and soft constraints.
    hard_labels: dict = {}
    soft_labels: dict = {}
    #: NODE_LABEL: hard constraints tried in order when no node could ever meet
    #: ``hard_labels`` (Ray's fallback_strategy).
    fallback_labels: list = []


class ObjectRefInfo(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """A reference found inside a serialized value, and who owns it."""

    object_id: bytes
    owner: Address


class SerializedValue(msgspec.Struct, array_like=True, gc=False):
    """A value as it travels: a pickle stream, plus what the reader must know.

    ``kind`` says how to read ``data``: a plain value, a raised error, or a
    marker that the value lives in the object store of ``location``.
    """

    kind: int
    data: bytes = b""
    #: pickle-5 out-of-band buffers, each sent as its own frame.
    buffers: list = []
    #: ObjectRefs contained in the value, for borrower bookkeeping.
    nested_refs: list[ObjectRefInfo] = []
    #: Size in bytes of the whole value, for the store and ``ember memory``.
    size: int = 0
    #: VALUE_IN_STORE: the node whose object store holds the primary copy.
    node_id: bytes = b""


# SerializedValue.kind values.
VALUE_PICKLE = 0
VALUE_ERROR = 1
VALUE_IN_STORE = 2


class ErrorReply(Message):
    """Sent instead of a reply when the handler raised; the caller re-raises it."""

    error_type: str
    message: str
