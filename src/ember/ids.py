"""Identifiers, with Ray's sizes.

Inside ember an id is plain ``bytes``: it hashes fast, packs into msgspec
messages without a wrapper, and compares by value. The classes below wrap those
bytes only where a user sees them (``ObjectRef.hex()``,
``get_runtime_context().get_node_id()``), and mirror ``ray.JobID`` and friends.

Sizes follow Ray so that hex strings look familiar in logs:
job 4 bytes, actor 16, task 24, object 28 (task id + 4-byte index), node and
worker 28, placement group 18.

Task ids are made from a per-process random prefix and a counter rather than
``os.urandom`` per task: the counter costs nothing on the submission hot path and
the 12-byte random prefix keeps ids unique across processes.
"""
from __future__ import annotations

import itertools
import os

JOB_ID_SIZE = 4
ACTOR_ID_SIZE = 16
TASK_ID_SIZE = 24
OBJECT_ID_SIZE = 28
UNIQUE_ID_SIZE = 28
PLACEMENT_GROUP_ID_SIZE = 18


class BaseID:
    """A typed wrapper around id bytes, for the public API."""

    size = UNIQUE_ID_SIZE
    __slots__ = ("_bytes",)

    def __init__(self, id_bytes: bytes):
        if not isinstance(id_bytes, bytes) or len(id_bytes) != self.size:
            raise ValueError(
                f"{type(self).__name__} needs {self.size} bytes, got {id_bytes!r}"
            )
        self._bytes = id_bytes

    @classmethod
    def from_random(cls):
        return cls(os.urandom(cls.size))

    @classmethod
    def from_hex(cls, hex_id: str):
        return cls(bytes.fromhex(hex_id))

    @classmethod
    def nil(cls):
        return cls(b"\xff" * cls.size)

    def is_nil(self) -> bool:
        return self._bytes == b"\xff" * self.size

    def binary(self) -> bytes:
        return self._bytes

    def hex(self) -> str:
        return self._bytes.hex()

    def __eq__(self, other):
        return type(self) is type(other) and self._bytes == other._bytes

    def __hash__(self):
        return hash(self._bytes)

    def __repr__(self):
        return f"{type(self).__name__}({self.hex()})"

    def __reduce__(self):
        return type(self), (self._bytes,)


class JobID(BaseID):
    size = JOB_ID_SIZE
    __slots__ = ()

    @classmethod
    def from_int(cls, value: int) -> "JobID":
        return cls(value.to_bytes(JOB_ID_SIZE, "little"))

    def int(self) -> int:
        return int.from_bytes(self._bytes, "little")


class ActorID(BaseID):
    size = ACTOR_ID_SIZE
    __slots__ = ()

    @property
    def job_id(self) -> JobID:
        """The job that created the actor (a property, as in Ray)."""
        return JobID(self.binary()[-JOB_ID_SIZE:])


class TaskID(BaseID):
    size = TASK_ID_SIZE
    __slots__ = ()

    def job_id(self) -> JobID:
        return JobID(self.binary()[-JOB_ID_SIZE:])


class ObjectID(BaseID):
    size = OBJECT_ID_SIZE
    __slots__ = ()


class NodeID(BaseID):
    __slots__ = ()


class WorkerID(BaseID):
    __slots__ = ()


class PlacementGroupID(BaseID):
    size = PLACEMENT_GROUP_ID_SIZE
    __slots__ = ()


class IdFactory:
    """Makes task and object ids for one process. Thread-safe.

    ``itertools.count`` is advanced under the GIL atomically, so no lock is
    needed on the hot path.
    """

    def __init__(self, job_id: bytes = b"\x00" * JOB_ID_SIZE):
        self._prefix = os.urandom(TASK_ID_SIZE - JOB_ID_SIZE - 8)
        self._counter = itertools.count(1)
        self.job_id = job_id

    def task_id(self) -> bytes:
        return self._prefix + next(self._counter).to_bytes(8, "little") + self.job_id

    def actor_id(self) -> bytes:
        return os.urandom(ACTOR_ID_SIZE - JOB_ID_SIZE) + self.job_id


def object_id_for_return(task_id: bytes, index: int) -> bytes:
    """The id of return value ``index`` (0-based) of a task."""
    return task_id + (index + 1).to_bytes(4, "little")


_HANDLE_INDEX = b"\xff\xff\xff\xff"


def actor_handle_id(creation_task_id: bytes) -> bytes:
    """The id of an actor's handle ref (see ember/actor.py), told apart by its index
    so that ``ember memory`` can list it as ACTOR_HANDLE in every process."""
    return creation_task_id + _HANDLE_INDEX


def is_actor_handle_id(object_id: bytes) -> bool:
    return object_id[TASK_ID_SIZE:] == _HANDLE_INDEX


_PUT_INDEX = b"\x00\x00\x00\x00"


def object_id_for_put(task_id: bytes) -> bytes:
    """Puts use a fresh task id each, with index 0 (no task returns index 0)."""
    return task_id + _PUT_INDEX


def is_put_id(object_id: bytes) -> bool:
    return object_id[TASK_ID_SIZE:] == _PUT_INDEX


def task_id_of(object_id: bytes) -> bytes:
    return object_id[:TASK_ID_SIZE]

