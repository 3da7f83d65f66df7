"""Messages of the GCS task-event service: batches of task attempts in, views out.

A batch is shaped for a cheap sender and receiver: each attempt a process saw
is one :class:`TaskEventRecord` that msgspec encodes and decodes in C, with
``state_ts`` the unix time of each state it reached (0.0 where not) and the
worker it ran on (its owner knows the worker it pushed to; an executor
names itself), and what a task is (:class:`TaskInfo`) travels once per batch for all the calls
of one function with the same options: the first record of an attempt
points at it by its ``desc_id``.

Most attempts are reported once, whole, by their owner when they end. A batch
carries those apart from the rest, already encoded (``ended``): the GCS keeps
them as they came, undecoded, until someone reads the store (see
gcs/task_events.py), so the common case costs it nothing per task.
"""
from __future__ import annotations

import struct

import msgspec

from .common import Message

# Task states, in the order a task passes through them; an attempt's state is
# the furthest one seen (events of one attempt come from two processes, in
# any order). Names as Ray's ``TaskStatus``.
PENDING_ARGS_AVAIL = 0
PENDING_NODE_ASSIGNMENT = 1
SUBMITTED_TO_WORKER = 2
RUNNING = 3
FINISHED = 4
FAILED = 5
STATE_NAMES = ("PENDING_ARGS_AVAIL", "PENDING_NODE_ASSIGNMENT", "SUBMITTED_TO_WORKER",
               "RUNNING", "FINISHED", "FAILED")

# TaskInfo.type values, as Ray's ``TaskType``.
NORMAL_TASK = 0
ACTOR_CREATION_TASK = 1
ACTOR_TASK = 2
TYPE_NAMES = ("NORMAL_TASK", "ACTOR_CREATION_TASK", "ACTOR_TASK")


#: An attempt's unix time per state (indexed by state), 0.0 where not reached.
StateTimes = tuple[float, float, float, float, float, float]
assert len(StateTimes.__args__) == len(STATE_NAMES)


class TaskInfo(msgspec.Struct, array_like=True, gc=False, omit_defaults=True):
    """What a task is: shared by the calls of one function with the same options."""

    job_id: bytes
    #: The function's or method's qualified name.
    func_or_class_name: str
    #: The task's ``name`` option, else the short function or method name.
    name: str
    type: int = NORMAL_TASK
    actor_id: bytes = b""
    placement_group_id: bytes = b""
    required_resources: dict[str, float] = {}
    #: Names this description for the GCS, which keeps it by this id until the
    #: records that point at it are read: random (so ids of different processes
    #: do not meet), drawn once per description.
    desc_id: int = 0


class AddTaskEvents(Message):
    """One process's task events since its last flush (a notification)."""

    #: Reports the GCS merges into what it holds: attempts not ended yet, later
    #: reports of attempts reported before, and the executor's.
    records: list[TaskEventRecord] = []
    #: Attempts that ended and were never reported before, in chunks of at most
    #: ``ENDED_CHUNK`` (:func:`encode_ended`): (an encoded ``list[TaskEventRecord]``,
    #: how many records, how many of them FAILED). Bytes, not ``msgspec.Raw``: a
    #: Raw would be a view of the receiving connection's buffer.
    ended: list[tuple[bytes, int, int]] = []
    descs: list[TaskInfo] = []
    #: (task_id, attempt, error_type, error_message) for failed attempts.
    errors: list[tuple[bytes, int, str, str]] = []
    node_id: bytes = b""
    worker_id: bytes = b""
    pid: int = 0
    #: Events this process dropped since its last flush (its buffer was full).
    dropped: int = 0


class GetTaskEvents(Message):
    """Task attempts, newest first; the filters are applied in the GCS."""

    job_id: bytes = b""
    task_id: bytes = b""
    actor_id: bytes = b""
    #: 0: no limit.
    limit: int = 0
    #: Only count the stored attempts per state (``state_counts``); no records.
    counts_only: bool = False
    #: More filters, applied in the GCS before ``limit``: (column, "=" | "!=",
    #: lowercased value), columns as TaskState's (see observability/records.py).
    filters: list[tuple[str, str, str]] = []
    #: Only count attempts per (function, type, state) (``summary``); no records.
    summary: bool = False
    #: Only count the attempts that ran (or run) on this node, per (function,
    #: state) (``node_counts``); with ``unassigned``, also those not on a node yet.
    node_counts_for: bytes = b""
    unassigned: bool = False


class TaskEventRecord(msgspec.Struct, array_like=True, gc=False, omit_defaults=True):
    """One task attempt: as one process saw it (in a batch), and as the GCS holds it.

    One struct for both, so the GCS stores the record it decoded and builds
    nothing per task: the first report of an attempt is kept as it came, with
    its description filled in; a later report of the same attempt (the other
    side's, or a finished one after an unfinished one) is merged into it. A
    struct, not a tuple: msgspec decodes a batch of untracked structs several
    times faster than one of tuples, which the garbage collector must scan.
    """

    task_id: bytes
    attempt: int
    #: The furthest state reached (a STATE_NAMES index; another value shows as
    #: "NIL").
    state: int
    #: Unix time of each state reached, 0.0 where not (``state_ts`` has them as
    #: a tuple). Floats in the record, not a tuple of them: a record then holds
    #: no container, so making one allocates nothing the garbage collector
    #: tracks, on the owner (a record per task) and in the GCS (a hundred
    #: thousand stored).
    pending_args_avail_ts: float = 0.0
    pending_node_assignment_ts: float = 0.0
    submitted_to_worker_ts: float = 0.0
    running_ts: float = 0.0
    finished_ts: float = 0.0
    failed_ts: float = 0.0
    #: Where it ran, once it was pushed to a worker.
    node_id: bytes = b""
    worker_id: bytes = b""
    worker_pid: int = 0
    #: In the first record of an attempt: its description's ``desc_id`` (0: none),
    #: which the batch's ``descs`` hold, and the task that submitted it.
    desc: int = 0
    parent_task_id: bytes = b""
    #: Set by the GCS when it is read: the description (shared with the calls
    #: described alike; None until the owner's report arrived).
    info: TaskInfo | None = None
    #: Set by the GCS: why the attempt failed.
    error_type: str = ""
    error_message: str = ""

    @property
    def state_ts(self) -> StateTimes:
        """The time of each state, indexed by state (0.0 where not reached)."""
        return (self.pending_args_avail_ts, self.pending_node_assignment_ts,
                self.submitted_to_worker_ts, self.running_ts, self.finished_ts,
                self.failed_ts)

    def merge_times(self, other: "TaskEventRecord") -> None:
        """Take ``other``'s report of this attempt's times: each state keeps its
        earliest time seen (the two sides' clocks differ a little)."""
        for name in STATE_TS_FIELDS:
            theirs = getattr(other, name)
            if theirs:
                ours = getattr(self, name)
                if not ours or theirs < ours:
                    setattr(self, name, theirs)


_decode_records = msgspec.msgpack.Decoder(list[TaskEventRecord]).decode


#: Records per chunk of ``AddTaskEvents.ended``: small enough that a full GCS
#: store drops whole chunks (see gcs/task_events.py), large enough that a chunk
#: costs nothing per record.
ENDED_CHUNK = 1000


def encode_ended(records: list[TaskEventRecord]) -> list[tuple[bytes, int, int]]:
    """``records`` as ``AddTaskEvents.ended`` carries them."""
    chunks = EndedChunks()
    for r in records:
        chunks.add(r, r.state == FAILED)
    return chunks.take()


class EndedChunks:
    """Records of ended attempts, encoded as they are added, in the chunks
    ``AddTaskEvents.ended`` carries.

    Encoded at once, into the chunk: the record can then be freed at once, so an
    owner holds a record per call in flight, not one per call of the last
    second (tens of thousands, which crowded the CPU's caches). A chunk is one
    msgpack array: a 32-bit array header, its count filled in when the chunk is
    sealed, then the records.
    """

    __slots__ = ("chunks", "_buf", "_n", "_failed")

    def __init__(self):
        #: Sealed chunks: (encoded records, how many, how many FAILED).
        self.chunks: list[tuple[bytearray, int, int]] = []
        self._start()

    @property
    def count(self) -> int:
        """Records added and not taken yet."""
        return sum(n for _, n, _ in self.chunks) + self._n

    def _start(self) -> None:
        self._buf = bytearray(_ARRAY32)
        self._n = self._failed = 0

    def add(self, record: TaskEventRecord, failed: bool) -> None:
        _encode_into(record, self._buf, -1)
        self._failed += failed
        self._n += 1
        if self._n == ENDED_CHUNK:
            self._seal()

    def _seal(self) -> None:
        _pack_count(self._buf, 1, self._n)
        self.chunks.append((self._buf, self._n, self._failed))
        self._start()

    def take(self) -> list[tuple[bytearray, int, int]]:
        """The chunks so far (the last one sealed as it stands), emptying this."""
        if self._n:
            self._seal()
        chunks, self.chunks = self.chunks, []
        return chunks


_encode_into = msgspec.msgpack.Encoder().encode_into
_ARRAY32 = b"\xdd\x00\x00\x00\x00"
_pack_count = struct.Struct(">I").pack_into


def decode_records(data: bytes) -> list[TaskEventRecord]:
    """The records of a chunk of ``AddTaskEvents.ended``."""
    return _decode_records(data)


#: TaskEventRecord's time fields, in state order.
STATE_TS_FIELDS = tuple(f"{name.lower()}_ts" for name in STATE_NAMES)
assert all(name in TaskEventRecord.__struct_fields__ for name in STATE_TS_FIELDS)


class GetTaskEventsReply(Message):
    tasks: list[TaskEventRecord]
    #: Attempts matching the query that exist beyond ``limit``.
    num_filtered: int = 0
    #: Attempts the GCS dropped (store full), and events workers dropped.
    num_status_task_events_dropped: int = 0
    num_profile_events_dropped: int = 0
    #: counts_only: state name -> stored attempts in that state.
    state_counts: dict[str, int] = {}
    #: node_counts_for: (func_or_class_name, state name, attempts) rows.
    node_counts: list[tuple[str, str, int]] = []
    #: summary: (func_or_class_name, type, state, attempts) rows.
    summary: list[tuple[str, int, int, int]] = []
