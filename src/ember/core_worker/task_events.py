"""Task events: each process records its tasks' state changes and flushes them in batches.

Why this shape. The submit and execute paths run tens of thousands of tasks a
second, so recording must cost about a time stamp: no message, no lock, no
formatting per event, and one record per attempt and side for the GCS to
merge, not one per state change (the GCS's merge, in Python, was most of the
cost). The owner makes an attempt's record when it submits it (``task.event``)
and writes the times it reaches each state (submitted, arguments ready,
pushed to a worker, finished or failed) into it, with the worker it pushed
to, and places RUNNING from the reply's duration: it reports the whole
attempt. The executor reports only what its owner cannot: tasks that run
across a whole flush interval (as RUNNING, so a long task shows while it
runs) and actor creations (pushed by the GCS, which keeps no buffer). About
once a second (``task_events_report_interval_ms``) a timer on the I/O
thread sends every attempt recorded or advanced since, as one
:class:`~ember.protocol.task_events.AddTaskEvents`, to the GCS's task-event
store (``ember/gcs/task_events.py``), which merges the reports of an attempt.
Attempts that ended and were never reported before, nearly all of them,
travel apart, encoded already: the GCS keeps them undecoded until the store
is read. The state API, the CLI and the timeline read only that store.

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

import copy
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
        #: (``_older``). A task leaves when it ends (its record is sent then), or
        #: at the flush after the one it was submitted before, unfinished (then it
        #: is reported as it stands). So a task that ends within a flush interval or
        #: two is reported once, not once unfinished and again when it ends (with a
        #: thousand calls in flight, that doubled the records of every flush); one
        #: that waits longer shows within two intervals. Nothing here keeps a
        #: finished task alive.
        self._unreported: dict = {}
        self._older: dict = {}
        #: Owner: the records of attempts that ended, never reported before, encoded
        #: as they end (the GCS keeps them without decoding: ``AddTaskEvents.ended``).
        self._ended = te.EndedChunks()
        #: Either side: reports the GCS merges into what it has (``records``).
        self._records: list = []
        #: This flush's task descriptions, each once, and their index by identity
        #: (see :meth:`_add_desc`).
        self._descs: list = []
        self._desc_index: dict = {}
        #: Executor: (spec, record) of actor creations that ended, described at
        #: the flush (they are recorded on the main thread; descriptions on the I/O
        #: thread).
        self._created: list = []
        #: Executor: task_id -> (attempt, unix time it started running, spec if it is
        #: an actor creation).
        self._running: dict = {}
        #: Unix time of the previous ``take``: a task running since before it is shown
        #: RUNNING at this one (one that ends sooner is reported by its owner).
        self._previous_take = 0.0
        #: (task_id, attempt, exception)
        self._errors: list = []
        self._max = config.task_events_max_buffer_size
        #: An attempt that ran longer than this may have been reported RUNNING by its
        #: executor (see take), so its end is merged into that report, not sent apart.
        self._long_s = config.task_events_report_interval_ms / 2000
        #: Attempts dropped because more than ``task_events_max_buffer_size`` piled
        #: up between two flushes; reported with the next flush.
        self.dropped = 0
        self.flushed = 0
        self._timer = None
        self._gcs = None

    # --- recording (hot path: a time stamp, at most one append) ----------------------
    #
    # The owner side runs on the I/O thread, as the flush does. A task's current
    # attempt has its record from the start (``task.event``): the hooks write its
    # times and worker into it, so the record is made once per attempt and nothing
    # is copied when it ends. An attempt is sent once when it ends, or at a flush
    # if it has not ended by then (and again when it ends).

    def submitted(self, task) -> None:
        """Owner: a task or actor call was submitted; its arguments may be pending."""
        spec = task.spec
        task.event = _Record(spec.task_id, spec.attempt, te.PENDING_ARGS_AVAIL, _now())
        task.reported = False
        self._unreported[spec.task_id] = task

    def queued(self, task) -> None:
        """Owner: ``task``'s arguments are ready; it waits for a worker."""
        (task.event or self._unsubmitted(task)).pending_node_assignment_ts = _now()

    def pushed(self, task, where: tuple[bytes, bytes, int]) -> None:
        """Owner: ``task``'s current attempt was sent to the worker ``where`` names
        (node id, worker id, pid: one tuple per leased worker, not per task)."""
        ev = task.event or self._unsubmitted(task)
        ev.submitted_to_worker_ts = _now()
        ev.node_id, ev.worker_id, ev.worker_pid = where

    def finished(self, task, returns) -> None:
        """Owner: the task's results (or its error) were stored."""
        failed = bool(returns) and returns[0].value.kind == VALUE_ERROR
        self._end(task, task.event or self._unsubmitted(task), failed, _now())
        task.event = None  # lineage may keep the task; its record has left

    def _unsubmitted(self, task) -> te.TaskEventRecord:
        """A task that ends (a call on a dead actor, say) without having been
        submitted: it is still recorded."""
        self.submitted(task)
        task.event.pending_args_avail_ts = 0.0
        return task.event

    def retried(self, task) -> None:
        """Owner: the previous attempt failed and ``task`` (its attempt raised) is queued."""
        now = _now()
        ev = task.event or self._unsubmitted(task)
        ev.attempt = task.spec.attempt - 1
        self._end(task, ev, True, now)
        task.event = _Record(task.spec.task_id, task.spec.attempt, te.PENDING_NODE_ASSIGNMENT,
                             0.0, now)
        task.ran_for = 0.0
        task.reported = False
        # Its new attempt starts a new interval: it is due at the flush after next,
        # like any task submitted now (and is in one table only, so its end frees it).
        self._older.pop(task.spec.task_id, None)
        self._unreported[task.spec.task_id] = task

    def _end(self, task, ev: te.TaskEventRecord, failed: bool, now: float) -> None:
        """``task``'s attempt ``ev`` ended at ``now``: it goes out with the next flush."""
        if failed:
            ev.state = te.FAILED
            ev.failed_ts = now
        else:
            ev.state = te.FINISHED
            ev.finished_ts = now
        if task.ran_for:  # RUNNING from the executor's measure, seen from here
            ev.running_ts = now - task.ran_for
        if not task.reported:
            self._first_report(task, ev)
            if self._unreported.pop(task.spec.task_id, None) is None:
                self._older.pop(task.spec.task_id, None)
            if task.ran_for <= self._long_s:  # the GCS has not heard of it: sent apart
                self._ended.add(ev, failed)
                return
        # The GCS has it unfinished, from here or (if it ran across a flush there) as
        # RUNNING from its executor: a report to merge at once.
        self._records.append(ev)

    def _first_report(self, task, ev: te.TaskEventRecord) -> None:
        """Name ``ev``'s description and parent: the first report of an attempt does.

        Calls of one function (or method of one actor) with the same options share
        one description, made once where the calls are made (``task.info``, see
        remote_function.py and actor.py) and sent once per flush: describing each
        task was half of what task events cost the owner.
        """
        task.reported = True
        info = task.info
        if info is None:  # a task made elsewhere (tests, lineage): described alone
            info = task.info = describe(task.spec)
        ev.desc = self._add_desc(info)
        if task.parent:
            ev.parent_task_id = task.parent

    def _add_desc(self, info: te.TaskInfo) -> int:
        """``info``'s ``desc_id``, with ``info`` in this flush's table. The table is
        keyed by the description's identity, which is safe: it keeps the
        description alive until the flush, when it is emptied."""
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

        Nothing is sent for it unless it runs across a whole flush interval (it
        started before the previous flush and still runs at this one): its owner
        reports the attempt, with this worker and (from the reply's duration) when
        it ran.
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
        since, self._previous_take = self._previous_take, _now()
        n, c, m = len(self._records), len(self._created), len(self._errors)
        ended = self._ended.take()
        running = [(task_id, *entry) for task_id, entry in list(self._running.items())
                   if entry[1] < since]
        if not (ended or n or c or m or self._unreported or self._older or running
                or self.dropped):
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
            ev = copy.copy(task.event)  # the attempt goes on: send how it stands now
            ev.state = _furthest(ev)
            self._first_report(task, ev)
            records.append(ev)
        for spec, record in created:
            record.desc = self._add_desc(describe(spec))
            records.append(record)
        here = self._here()
        for task_id, attempt, started, spec in running:  # long tasks show RUNNING meanwhile
            records.append(te.TaskEventRecord(
                task_id, attempt, te.RUNNING, 0.0, 0.0, 0.0, started, 0.0, 0.0, *here,
                desc=0 if spec is None else self._add_desc(describe(spec))))
        descs, self._descs, self._desc_index = self._descs, [], {}
        excess = sum(n for _, n, _ in ended) + len(records) - self._max
        if excess > 0:  # the GCS could not keep up, or we could not send
            self.dropped += excess
            ended, records = _drop_oldest(ended, records, excess)
        dropped, self.dropped = self.dropped, 0
        if not (ended or records or errors or dropped):  # only tasks not due yet
            return None
        return te.AddTaskEvents(
            records=records, ended=ended, descs=descs,
            errors=[(task_id, attempt, error_type(err), error_message(err))
                    for task_id, attempt, err in errors],
            node_id=self.node_id, worker_id=self.worker_id, pid=os.getpid(), dropped=dropped)

    def flush(self) -> None:
        batch = self.take()
        if batch is None or self._gcs is None:
            return
        self._gcs.notify(batch)
        self.flushed += len(batch.records) + sum(count for _, count, _ in batch.ended)

    def debug_state(self) -> dict:
        return {"buffered": (len(self._unreported) + len(self._older) + self._ended.count
                             + len(self._records)),
                "running": len(self._running), "flushed": self.flushed,
                "dropped": self.dropped}


_Record = te.TaskEventRecord


def _drop_oldest(ended: list, records: list, excess: int) -> tuple[list, list]:
    """``ended`` chunks and ``records`` without the oldest ``excess`` records (ended
    ones first: they are older than the reports made at the flush)."""
    while ended and excess >= ended[0][1]:
        excess -= ended.pop(0)[1]
    if ended and excess:  # part of a chunk: rare, so decoded and encoded again
        ended[0:1] = te.encode_ended(te.decode_records(ended[0][0])[excess:])
        excess = 0
    return ended, records[excess:]


def _furthest(ev: te.TaskEventRecord) -> int:
    """The furthest state an unfinished attempt reached, by the times recorded for it."""
    if ev.submitted_to_worker_ts:
        return te.SUBMITTED_TO_WORKER
    if ev.pending_node_assignment_ts:
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
