"""Task events: each process records its tasks' state changes and flushes them in batches.

Why this shape. The submit and execute paths run tens of thousands of tasks a
second, so recording must cost about as much as appending a tuple to a list:
no message, no lock, no formatting per event. The owner records what it sees
(submitted, arguments ready, pushed to a worker, finished or failed), the
executor what it sees (running, on which node, worker and pid, and how it
ended), and about once a second (``task_events_report_interval_ms``) a timer
on the I/O thread sends everything recorded since, as one
:class:`~ember.protocol.task_events.AddTaskEvents`, to the GCS's task-event
store (``ember/gcs/task_events.py``), which merges the two halves of each
attempt. The state API, the CLI and the timeline read only that store.

Threads. The owner side records on the I/O thread, the executor on the main
thread, the flush runs on the I/O thread. Under the GIL ``list.append``,
``lst[:n]`` and ``del lst[:n]`` are each atomic, so the flush takes the first
``n`` entries and deletes exactly those: an append racing with it lands after
them and goes out with the next flush. Nothing is lost, nothing is locked.

What a task is (its :class:`TaskInfo`: names, job, resources, parent) is
built at flush time from the references kept here, off the hot path. A
process that dies between flushes loses at most its last second of events;
the GCS shows such attempts in their last state seen.
"""
from __future__ import annotations

import logging
import os
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
        #: (task_id, attempt, state, unix time)
        self._events: list = []
        #: (task spec, attempt, parent task id): described at flush time.
        self._new: list = []
        #: (task_id, attempt, exception)
        self._errors: list = []
        self._max = config.task_events_max_buffer_size
        #: Events dropped because more than ``task_events_max_buffer_size`` piled up
        #: between two flushes; reported with the next flush.
        self.dropped = 0
        self.flushed = 0
        self._timer = None
        self._gcs = None

    # --- recording (hot path: one append or two) ---------------------------------

    def submitted(self, task) -> None:
        """Owner: a task or actor call was submitted; its arguments may be pending."""
        spec = task.spec
        self._new.append((spec, spec.attempt, task.parent))
        self._events.append((spec.task_id, spec.attempt, te.PENDING_ARGS_AVAIL, _now()))

    def state(self, spec, state: int) -> None:
        """Either side: ``spec``'s current attempt reached ``state``."""
        self._events.append((spec.task_id, spec.attempt, state, _now()))

    def finished(self, task, returns) -> None:
        """Owner: the task's results (or its error) were stored."""
        spec = task.spec
        failed = bool(returns) and returns[0].value.kind == VALUE_ERROR
        self._events.append((spec.task_id, spec.attempt, te.FAILED if failed else te.FINISHED,
                             _now()))

    def retried(self, task) -> None:
        """Owner: the previous attempt failed and ``task`` (its attempt raised) is queued."""
        spec = task.spec
        now = _now()
        self._events.append((spec.task_id, spec.attempt - 1, te.FAILED, now))
        self._new.append((spec, spec.attempt, task.parent))
        self._events.append((spec.task_id, spec.attempt, te.PENDING_NODE_ASSIGNMENT, now))

    def failed(self, spec, err: BaseException) -> None:
        """Either side: why ``spec``'s attempt failed (the error's type and message)."""
        self._errors.append((spec.task_id, spec.attempt, err))

    def running(self, spec) -> None:
        """Executor: the task starts running in this process."""
        if spec.is_actor_creation:  # its owner registered it with the GCS, not a submitter
            self._new.append((spec, spec.attempt, b""))
        self._events.append((spec.task_id, spec.attempt, te.RUNNING, _now()))

    def ended(self, spec, reply) -> None:
        """Executor: the task returned (or raised); ``reply`` goes to its owner."""
        self._events.append((spec.task_id, spec.attempt,
                             te.FAILED if reply.is_application_error else te.FINISHED, _now()))

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
        """Everything recorded so far as one batch (None if nothing), emptying the buffer."""
        n, k, m = len(self._events), len(self._new), len(self._errors)
        if not (n or k or m or self.dropped):
            return None
        events = self._events[:n]
        del self._events[:n]
        if n > self._max:  # the GCS could not keep up, or this process could not send
            self.dropped += n - self._max
            events = events[-self._max:]
        new = self._new[:k]
        del self._new[:k]
        errors = self._errors[:m]
        del self._errors[:m]
        dropped, self.dropped = self.dropped, 0
        return te.AddTaskEvents(
            events=events, infos=[describe(spec, attempt, parent) for spec, attempt, parent in new],
            errors=[(task_id, attempt, error_type(err), error_message(err))
                    for task_id, attempt, err in errors],
            node_id=self.node_id, worker_id=self.worker_id, pid=os.getpid(), dropped=dropped)

    def flush(self) -> None:
        batch = self.take()
        if batch is None or self._gcs is None:
            return
        self._gcs.notify(batch)
        self.flushed += len(batch.events)

    def debug_state(self) -> dict:
        return {"buffered": len(self._events), "flushed": self.flushed, "dropped": self.dropped}


def describe(spec, attempt: int, parent: bytes | None) -> te.TaskInfo:
    """The :class:`TaskInfo` of one attempt of ``spec``."""
    if spec.is_actor_creation:
        kind = te.ACTOR_CREATION_TASK
    elif spec.actor_id:
        kind = te.ACTOR_TASK
    else:
        kind = te.NORMAL_TASK
    # As Ray: a function by its own name, a method (or __init__) as Class.method.
    func = spec.function_name if spec.actor_id else spec.function_name.rsplit(".", 1)[-1]
    return te.TaskInfo(
        task_id=spec.task_id, attempt=attempt, job_id=spec.job_id, func_or_class_name=func,
        name=spec.name or func, type=kind, actor_id=spec.actor_id,
        parent_task_id=parent or b"", placement_group_id=spec.placement_group_id,
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

    submitted = state = finished = failed = running = ended = retried = _skip


def task_event_buffer(node_id: bytes, worker_id: bytes) -> TaskEventBuffer:
    """This process's buffer: a recording one unless ``task_events_enabled`` is off."""
    cls = TaskEventBuffer if config.task_events_enabled else DisabledTaskEvents
    return cls(node_id, worker_id)
