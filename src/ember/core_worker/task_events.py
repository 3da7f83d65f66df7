"""Task events: each process records its tasks' state changes and flushes them in batches.

Why this shape. The submit and execute paths run tens of thousands of tasks a
second, so recording must cost about a time stamp: no message, no lock, no
formatting per event, and one record per attempt and side for the GCS to
merge, not one per state change (the GCS's merge, in Python, was most of the
cost). The owner writes the times its task reaches each state (submitted,
arguments ready, pushed to a worker, finished or failed) into the task
object, with the worker it pushed to, and places RUNNING from the reply's
duration: it reports the whole attempt. The executor reports only what its
owner cannot: tasks still running at a flush (as RUNNING, so a long task
shows while it runs) and actor creations (pushed by the GCS, which keeps no
buffer). About once a second (``task_events_report_interval_ms``) a timer on
the I/O thread sends every attempt recorded or advanced since, as one
:class:`~ember.protocol.task_events.AddTaskEvents`, to the GCS's task-event
store (``ember/gcs/task_events.py``), which merges the reports of an attempt.
The state API, the CLI and the timeline read only that store.

Threads. The owner side records on the I/O thread, as the flush runs, so
it may write into live task objects. The executor records on the main
thread: under the GIL ``list.append``, ``lst[:n]`` and ``del lst[:n]`` are
each atomic, so the flush takes the first ``n`` entries and deletes exactly
those: an append racing with it lands after them and goes out with the next
flush. Nothing is lost, nothing is locked.

What a task is (its :class:`TaskInfo`: names, job, resources) is shared by
the calls of one function with the same options, and travels once per flush;
each attempt's first record points at it and names the attempt's parent. A
process that dies between flushes loses at most its last second of events;
the GCS shows such attempts in their last state seen.
"""
from __future__ import annotations

import logging
import os
import random
import time

from ..config import config
from ..exceptions import (ActorDiedError, OutOfMemoryError, RayTaskError, TaskCancelledError,
                          WorkerCrashedError)
from ..protocol import task_events as te
from ..protocol.common import VALUE_ERROR

logger = logging.getLogger(__name__)

_now = time.time


class TaskEventBuffer:
    """This process's recorded task events until the next flush (see the module doc)."""

    def __init__(self, node_id: bytes = b"", worker_id: bytes = b""):
        self.node_id = node_id
        self.worker_id = worker_id
        #: Owner: task_id -> task whose current attempt the GCS has not been told of
        #: yet, submitted since the last flush (``_unreported``) or before it
        #: (``_older``). A task leaves when it ends (its record is made then), or
        #: at the flush after the one it was submitted before, unfinished (then it
        #: is reported as it stands). So a task that ends within a flush interval or
        #: two is reported once, not once unfinished and again when it ends (with a
        #: thousand calls in flight, that doubled the records of every flush); one
        #: that waits longer shows within two intervals. Nothing here keeps a
        #: finished task alive.
        self._unreported: dict = {}
        self._older: dict = {}
        #: Either side: the TaskEventRecord of each attempt that ended; a record's
        #: ``desc`` indexes ``_descs``.
        self._records: list = []
        #: This flush's task descriptions, each once, and their index by what
        #: tells them apart (see :meth:`_describe`).
        self._descs: list = []
        self._desc_index: dict = {}
        #: Executor: (spec, record) of actor creations that ended, described at
        #: the flush (they are recorded on the main thread; descriptions on the I/O
        #: thread).
        self._created: list = []
        #: Executor: task_id -> (attempt, unix time it started running, spec if it is
        #: an actor creation).
        self._running: dict = {}
        #: (task_id, attempt, exception)
        self._errors: list = []
        self._max = config.task_events_max_buffer_size
        #: Attempts dropped because more than ``task_events_max_buffer_size`` piled
        #: up between two flushes; reported with the next flush.
        self.dropped = 0
        self.flushed = 0
        self._timer = None
        self._gcs = None

    # --- recording (hot path: a time stamp, at most one append) ----------------------
    #
    # The owner side runs on the I/O thread, as the flush does: it writes the times
    # of a task's current attempt into the task (``submitted_at``, ``queued_at``,
    # ``pushed_at``: floats, so no container per task for the garbage collector to
    # track). An attempt is sent once when it ends, or at a flush if it has not
    # ended by then (and again when it ends).

    def submitted(self, task) -> None:
        """Owner: a task or actor call was submitted; its arguments may be pending."""
        task.submitted_at = _now()
        task.queued_at = task.pushed_at = 0.0  # a task lineage runs again had them
        task.reported = False
        self._unreported[task.spec.task_id] = task

    def queued(self, task) -> None:
        """Owner: ``task``'s arguments are ready; it waits for a worker."""
        if task.submitted_at is None:
            self._unsubmitted(task)
        task.queued_at = _now()

    def pushed(self, task, where: tuple[bytes, bytes, int]) -> None:
        """Owner: ``task``'s current attempt was sent to the worker ``where`` names
        (node id, worker id, pid: one tuple per leased worker, not per task)."""
        if task.submitted_at is None:
            self._unsubmitted(task)
        task.pushed_at = _now()
        task.where = where

    def finished(self, task, returns) -> None:
        """Owner: the task's results (or its error) were stored."""
        failed = bool(returns) and returns[0].value.kind == VALUE_ERROR
        if task.submitted_at is None:
            self._unsubmitted(task)
        self._records.append(self._record(task, te.FAILED if failed else te.FINISHED,
                                          task.spec.attempt, _now()))
        if not task.reported:
            if self._unreported.pop(task.spec.task_id, None) is None:
                self._older.pop(task.spec.task_id, None)
            task.reported = True

    def _unsubmitted(self, task) -> None:
        """A task that ends (a call on a dead actor, say) without having been
        submitted: it is still recorded."""
        task.submitted_at = 0.0
        task.reported = False
        self._unreported[task.spec.task_id] = task

    def retried(self, task) -> None:
        """Owner: the previous attempt failed and ``task`` (its attempt raised) is queued."""
        now = _now()
        if task.submitted_at is None:
            self._unsubmitted(task)
        self._records.append(self._record(task, te.FAILED, task.spec.attempt - 1, now))
        task.submitted_at = task.pushed_at = 0.0
        task.queued_at = now
        task.where = None
        task.ran_for = 0.0
        task.reported = False
        # Its new attempt starts a new interval: it is due at the flush after next,
        # like any task submitted now (and is in one table only, so its end frees it).
        self._older.pop(task.spec.task_id, None)
        self._unreported[task.spec.task_id] = task

    def _record(self, task, state: int, attempt: int, ended: float) -> te.TaskEventRecord:
        """What the owner knows of one attempt of ``task``, which reached ``state``
        (at ``ended`` if it is FINISHED or FAILED); described if not sent before."""
        node_id, worker_id, pid = task.where or _NOWHERE
        # RUNNING from the executor's measure: when it started, seen from here.
        running = ended - task.ran_for if task.ran_for and ended else 0.0
        finished, failed = (ended, 0.0) if state == te.FINISHED else (0.0, ended)
        rec = te.TaskEventRecord(task.spec.task_id, attempt, state, task.submitted_at,
                                 task.queued_at, task.pushed_at, running, finished, failed,
                                 node_id, worker_id, pid)
        if not task.reported:
            rec.desc = self._describe(task)
            rec.parent_task_id = task.parent or b""
        return rec

    def _describe(self, task) -> int:
        """The ``desc_id`` of ``task``'s description, put in this flush's table.

        Calls of one function (or method of one actor) with the same options share
        one description, made once where the calls are made (``task.info``, see
        remote_function.py and actor.py) and sent once per flush: describing each
        task was half of what task events cost the owner. The table is keyed by
        the description's identity, which is safe: it keeps the description alive
        until the flush, when it is emptied.
        """
        info = task.info
        if info is None:  # a task made elsewhere (tests, lineage): described alone
            info = task.info = describe(task.spec)
        return self._add_desc(info)

    def _add_desc(self, info: te.TaskInfo) -> int:
        if id(info) not in self._desc_index:
            if not info.desc_id:
                info.desc_id = random.getrandbits(62) | 1
            self._desc_index[id(info)] = info
            self._descs.append(info)
        return info.desc_id

    def failed(self, spec, err: BaseException) -> None:
        """Either side: why ``spec``'s attempt failed (the error's type and message)."""
        self._errors.append((spec.task_id, spec.attempt, err))

    def running(self, spec) -> None:
        """Executor: the task starts running in this process (any thread).

        Nothing is sent for it unless it still runs at a flush: its owner reports
        the attempt, with this worker and (from the reply's duration) when it ran.
        """
        self._running[spec.task_id] = (spec.attempt, _now(),
                                       spec if spec.is_actor_creation else None)

    def ended(self, spec, reply) -> None:
        """Executor: the task returned (or raised); ``reply`` goes to its owner."""
        started = self._running.pop(spec.task_id, None)
        if not spec.is_actor_creation:
            return
        # An actor's creation has no core worker as its owner (the GCS pushed it): the
        # executor reports it whole.
        now = _now()
        state = te.FAILED if reply.is_application_error else te.FINISHED
        began = started[1] if started else now
        finished, failed = (now, 0.0) if state == te.FINISHED else (0.0, now)
        self._created.append((spec, te.TaskEventRecord(
            spec.task_id, spec.attempt, state, 0.0, 0.0, 0.0, began, finished, failed,
            *self._here())))

    def _here(self) -> tuple[bytes, bytes, int]:
        """Executor: where its tasks run (this process), for the records it makes."""
        return self.node_id, self.worker_id, os.getpid()

    # --- flushing (I/O thread) --------------------------------------------------------

    def start(self, loop, gcs) -> None:
        """Flush to ``gcs`` every ``task_events_report_interval_ms`` from now on."""
        if not config.task_events_enabled or config.task_events_report_interval_ms <= 0:
            return
        self._gcs = gcs
        self._loop = loop
        self._timer = loop.call_later(config.task_events_report_interval_ms / 1000, self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        try:
            self.flush()
        except Exception:  # noqa: BLE001 - observability must never break the worker
            logger.debug("task event flush failed", exc_info=True)
        if self._timer is not None:
            self._timer = self._loop.call_later(
                config.task_events_report_interval_ms / 1000, self._tick)

    def take(self) -> te.AddTaskEvents | None:
        """Everything recorded so far as one batch (None if nothing), emptying the buffer.

        Lists the executor appends to from another thread are taken as the first
        ``n`` entries and deleted as exactly those (each step atomic under the
        GIL): an append racing with it goes out with the next flush.
        """
        n, c, m = len(self._records), len(self._created), len(self._errors)
        running = list(self._running.items())
        if not (n or c or m or self._unreported or self._older or running or self.dropped):
            return None
        records = self._records[:n]
        del self._records[:n]
        created = self._created[:c]
        del self._created[:c]
        errors = self._errors[:m]
        del self._errors[:m]
        older, self._older, self._unreported = self._older, self._unreported, {}
        for task in older.values():  # unfinished for a whole interval: sent as it stands
            if task.reported:  # retried meanwhile, and reported as its new attempt
                continue
            records.append(self._record(task, _furthest(task), task.spec.attempt, 0.0))
            task.reported = True
        for spec, record in created:
            record.desc = self._add_desc(describe(spec))
            records.append(record)
        for task_id, (attempt, started, spec) in running:  # long tasks show RUNNING meanwhile
            records.append(te.TaskEventRecord(
                task_id, attempt, te.RUNNING, 0.0, 0.0, 0.0, started, 0.0, 0.0, *self._here(),
                desc=0 if spec is None else self._add_desc(describe(spec))))
        descs, self._descs, self._desc_index = self._descs, [], {}
        if len(records) > self._max:  # the GCS could not keep up, or we could not send
            self.dropped += len(records) - self._max
            records = records[-self._max:]
        dropped, self.dropped = self.dropped, 0
        if not (records or errors or dropped):  # only tasks not due yet
            return None
        return te.AddTaskEvents(
            records=records, descs=descs,
            errors=[(task_id, attempt, error_type(err), error_message(err))
                    for task_id, attempt, err in errors],
            node_id=self.node_id, worker_id=self.worker_id, pid=os.getpid(), dropped=dropped)

    def flush(self) -> None:
        batch = self.take()
        if batch is None or self._gcs is None:
            return
        self._gcs.notify(batch)
        self.flushed += len(batch.records)

    def debug_state(self) -> dict:
        return {"buffered": len(self._unreported) + len(self._older) + len(self._records),
                "running": len(self._running), "flushed": self.flushed,
                "dropped": self.dropped}


#: ``task.where`` of an attempt not pushed to a worker yet.
_NOWHERE = (b"", b"", 0)


def _furthest(task) -> int:
    """The furthest state an unfinished attempt reached, by the times recorded for it."""
    if task.pushed_at:
        return te.SUBMITTED_TO_WORKER
    if task.queued_at:
        return te.PENDING_NODE_ASSIGNMENT
    return te.PENDING_ARGS_AVAIL


def describe(spec) -> te.TaskInfo:
    """What calls like ``spec`` are: name, kind, job, actor, resources."""
    if spec.is_actor_creation:
        kind = te.ACTOR_CREATION_TASK
    elif spec.actor_id:
        kind = te.ACTOR_TASK
    else:
        kind = te.NORMAL_TASK
    # As Ray: a function by its own name, a method (or __init__) as Class.method.
    func = spec.function_name if spec.actor_id else spec.function_name.rsplit(".", 1)[-1]
    return te.TaskInfo(
        job_id=spec.job_id, func_or_class_name=func, name=spec.name or func, type=kind,
        actor_id=spec.actor_id, placement_group_id=spec.placement_group_id,
        required_resources=spec.resources)


def error_type(err: BaseException) -> str:
    """Ray's ``ErrorType`` name for an exception that failed a task."""
    for cls, name in ((TaskCancelledError, "TASK_CANCELLED"), (OutOfMemoryError, "OUT_OF_MEMORY"),
                      (ActorDiedError, "ACTOR_DIED"), (WorkerCrashedError, "WORKER_DIED"),
                      (RayTaskError, "TASK_EXECUTION_EXCEPTION")):
        if isinstance(err, cls):
            return name
    return "TASK_EXECUTION_EXCEPTION"


def error_message(err: BaseException, limit: int = 2000) -> str:
    text = str(err)
    return text if len(text) <= limit else text[:limit] + "..."


class DisabledTaskEvents(TaskEventBuffer):
    """What a process records with ``task_events_enabled`` off: nothing."""

    def _skip(self, *args) -> None:
        pass

    submitted = queued = pushed = finished = failed = running = ended = retried = _skip

    def take(self) -> None:
        return None


def task_event_buffer(node_id: bytes, worker_id: bytes) -> TaskEventBuffer:
    """This process's buffer: a recording one unless ``task_events_enabled`` is off."""
    cls = TaskEventBuffer if config.task_events_enabled else DisabledTaskEvents
    return cls(node_id, worker_id)
