"""Messages and value types shared by every service.

Every wire message derives from :class:`Message`: a msgspec Struct, tagged by its
class name and encoded as a msgpack array (``array_like``) because arrays are
smaller and faster to decode than maps. ``gc=False`` is safe because messages
never form reference cycles, and it keeps the garbage collector from scanning
the thousands of in-flight task specs a busy owner holds.
"""
from __future__ import annotations

import typing

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


class _Strategy(msgspec.Struct, tag=True, array_like=True, frozen=True, gc=False):
    """Base of the scheduling strategies: tagged by class name, so that a
    :data:`SchedulingStrategy` decodes to the strategy it was, and each one
    carries only the fields that matter to it. Frozen and hashable (but for
    NODE_LABEL's dicts): owners key their lease queues by a strategy's encoding.
    """

    #: The strategy's name in Ray's terms, for messages to users only; code
    #: matches on the type (see ember.raylet.policies).
    name: typing.ClassVar[str]


class DefaultScheduling(_Strategy):
    """Ray's DEFAULT (hybrid): the local node while it is not busy, else the least loaded."""

    name = "DEFAULT"


class SpreadScheduling(_Strategy):
    """Ray's SPREAD: successive requests rotate over the nodes where they fit."""

    name = "SPREAD"


class NodeAffinityScheduling(_Strategy):
    """Run on one node; if ``soft``, elsewhere when it is dead or full."""

    name = "NODE_AFFINITY"
    node_id: bytes
    soft: bool = False


class PlacementGroupScheduling(_Strategy):
    """Run in a placement group's bundle (the request names the group's resources)."""

    name = "PLACEMENT_GROUP"
    placement_group_id: bytes
    #: -1: any bundle of the group.
    bundle_index: int = -1
    #: Tasks the task starts join the group too.
    capture_child_tasks: bool = False


class NodeLabelScheduling(_Strategy):
    """Run on nodes whose labels match; label -> (operator, values) per constraint."""

    name = "NODE_LABEL"
    hard_labels: dict = {}
    #: Preferred among the nodes ``hard_labels`` allows, when one has room now.
    soft_labels: dict = {}
    #: Hard constraints tried in order when no node could ever meet
    #: ``hard_labels`` (Ray's fallback_strategy).
    fallback_labels: list = []


#: How a task or actor chooses its node: one struct per strategy, each served by
#: one policy module in ember.raylet.policies. A new strategy is a struct here,
#: a member of this union, and its policy module.
SchedulingStrategy = (DefaultScheduling | SpreadScheduling | NodeAffinityScheduling
                      | PlacementGroupScheduling | NodeLabelScheduling)


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
