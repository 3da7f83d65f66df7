"""The GCS task-event store: the one place the state API, the CLI and the timeline read.

Every core worker sends batches of the task attempts it saw
(``ember/core_worker/task_events.py``); this manager merges them into one
:class:`~ember.protocol.task_events.TaskEventRecord` per task attempt. The
owner and the executor of an attempt report different halves of its life, in
batches that arrive in any order (an unfinished one more than once), so an
attempt's state is the furthest state seen (FAILED beyond FINISHED), and each
state keeps its earliest time (the executor's FINISHED, a little before its
owner's, ends the timeline span). The first record of an attempt is stored as
it came, the very struct msgspec decoded: the merge runs only for the second
side.

Bounded, as Ray's ``task_events_max_num_task_in_gcs``: past
``task_events_max_num_task_in_gcs`` attempts, the oldest finished attempt is
dropped first, and the oldest of all only when none has finished. Drops are
counted (per job, and events that workers dropped from full buffers), and
reported with every query, so a user sees that the view is partial. A finished
job's attempts are dropped ``task_events_finished_job_ttl_s`` after it ended.

The records are kept as the wire structs themselves, so neither a batch nor a
query builds anything per task: msgspec decodes and encodes them in C. Held
in memory only: task events are a view of recent history, not state a
restarted GCS must recover (as in Ray).
"""
from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import operator
import time

from ..config import config
from ..observability import records
from ..protocol import task_events as te

logger = logging.getLogger(__name__)

FINISHED = te.FINISHED  # and FAILED, the only state beyond it: a finished attempt
_KEY = operator.attrgetter("task_id", "attempt")
_STATE = operator.attrgetter("state")
_ENDED = FINISHED.__le__
_TASK_ID = operator.itemgetter(0)
_JOB = operator.itemgetter(slice(-4, None))  # a task id ends with its job's id
#: Descriptions kept for records not read yet; past this many, the records are
#: given theirs at once (descriptions are shared by the calls made alike, so this
#: takes many distinct ones: a task name per call, say).
_MAX_DESCS = 10_000
_NODE_COUNTS_TTL_S = 1.0


class TaskEventManager:
    def __init__(self, max_tasks: int | None = None):
        self.max_tasks = max_tasks or config.task_events_max_num_task_in_gcs
        #: (task_id, attempt) -> record, oldest first (insertion order).
        self.tasks: dict[tuple[bytes, int], te.TaskEventRecord] = {}
        #: Keys of attempts in the order they finished; may hold keys dropped since.
        self._finished: collections.deque = collections.deque()
        #: Attempts dropped because the store was full, per job id.
        self.dropped_by_job: collections.Counter = collections.Counter()
        #: Events workers dropped before sending (their buffers were full).
        self.dropped_at_workers = 0
        self.events_received = 0
        #: desc_id -> TaskInfo, from the batches' ``descs``, until the records that
        #: point at them are given them (see _resolve).
        self._descs: dict[int, te.TaskInfo] = {}
        self._timers: list[asyncio.TimerHandle] = []
        #: (monotonic time, {node_id: Counter((name, state))}): every node's exporter
        #: asks for its counts at each scrape; one pass over the store serves them
        #: all for ``_NODE_COUNTS_TTL_S``.
        self._node_counts: tuple[float, dict] = (-1e9, {})

    def handlers(self):
        return {te.AddTaskEvents: self.add_events, te.GetTaskEvents: self.get_events}

    async def load(self) -> None:
        """Nothing to reload: task events are not persisted (see the module doc)."""

    def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()

    # --- writing ----------------------------------------------------------------------

    def _record(self, task_id: bytes, attempt: int) -> te.TaskEventRecord:
        key = (task_id, attempt)
        rec = self.tasks.get(key)
        if rec is None:
            rec = self.tasks[key] = te.TaskEventRecord(task_id, attempt, -1)
        return rec

    def add_events(self, conn, batch: te.AddTaskEvents) -> None:
        """Store a batch: its records as they came, in bulk, when every attempt in it is
        new (the common case: a record per finished task, from its owner); else
        record by record, merging a later report of an attempt into the stored one."""
        records = batch.records
        self.events_received += len(records)
        self.dropped_at_workers += batch.dropped
        descs = self._descs
        for info in batch.descs:
            descs[info.desc_id] = info
        tasks = self.tasks
        keys = list(map(_KEY, records))
        fresh = dict(zip(keys, records))
        if len(fresh) == len(keys) and tasks.keys().isdisjoint(keys):
            tasks.update(fresh)  # all in C: nothing built or looked at per record
            self._finished.extend(itertools.compress(keys, map(_ENDED, map(_STATE, records))))
        else:
            for key, r in zip(keys, records):
                rec = tasks.get(key)
                if rec is None:
                    tasks[key] = r
                    if r.state >= FINISHED:
                        self._finished.append(key)
                else:
                    self._merge(key, rec, r)
        for task_id, attempt, error_type, message in batch.errors:
            rec = self._record(task_id, attempt)
            if not rec.error_type:
                rec.error_type = error_type
                rec.error_message = message
        if len(tasks) > self.max_tasks:
            self._evict(len(tasks) - self.max_tasks)
        if len(descs) > _MAX_DESCS:
            self._resolve()

    def _merge(self, key, rec: te.TaskEventRecord, r: te.TaskEventRecord) -> None:
        """A later report of a stored attempt: each state keeps its earliest time
        (0.0: not reached), the state is the furthest seen."""
        rec.merge_times(r)
        if r.state > rec.state:
            if r.state >= FINISHED > rec.state:
                self._finished.append(key)
            rec.state = r.state
        if r.desc and not rec.desc:
            rec.desc = r.desc
            rec.parent_task_id = r.parent_task_id
        if r.worker_id:
            rec.node_id, rec.worker_id, rec.worker_pid = r.node_id, r.worker_id, r.worker_pid

    def _resolve(self) -> None:
        """Give each stored record its description, before the store is read.

        Done when read, not when written: a batch is stored without touching its
        records one by one (see add_events), and reads are rare. Then the table
        is emptied: each batch brings the descriptions its records point at.
        """
        descs = self._descs
        if not descs:
            return
        for rec in self.tasks.values():
            if rec.info is None and rec.desc:
                rec.info = descs.get(rec.desc)
        descs.clear()

    def _evict(self, excess: int) -> None:
        """Drop ``excess`` attempts: the oldest finished first, then the oldest of all.

        Once per batch, not per record: the store may hold one batch more than
        its bound for that long. A full store drops as many attempts per batch
        as the batch brings, so the common case (the next finished keys name
        finished attempts still stored) is done in bulk, in C: this ran at
        every batch and cost more than storing the batch. Taking the oldest of
        all is one pass from the front of the (insertion-ordered) dict per
        batch; a pass per record would walk the slots of every attempt dropped
        before it, each time.
        """
        tasks = self.tasks
        finished = self._finished
        gone: list = []
        while excess and finished:
            n = min(excess, len(finished))
            keys = [finished.popleft() for _ in range(n)]
            recs = list(map(tasks.pop, keys, itertools.repeat(None, n)))
            if None not in recs and all(map(_ENDED, map(_STATE, recs))):
                gone += keys
                excess -= n
                continue
            for key, rec in zip(keys, recs):
                if rec is None:  # dropped already
                    continue
                if rec.state < FINISHED:  # dropped, then reported again unfinished: kept
                    tasks[key] = rec
                    continue
                gone.append(key)
                excess -= 1
        if excess:  # nothing finished is left
            oldest = list(itertools.islice(tasks, excess))
            for key in oldest:
                del tasks[key]
            gone += oldest
        self.dropped_by_job.update(map(_JOB, map(_TASK_ID, gone)))

    def job_finished(self, job_id: bytes) -> None:
        """Drop the job's attempts once ``task_events_finished_job_ttl_s`` has passed."""
        loop = asyncio.get_running_loop()
        self._timers = [t for t in self._timers if t.when() > loop.time()]  # still pending
        self._timers.append(loop.call_later(config.task_events_finished_job_ttl_s,
                                            self.drop_job, job_id))

    def drop_job(self, job_id: bytes) -> None:
        for key in [k for k in self.tasks if k[0][-4:] == job_id]:
            del self.tasks[key]

    # --- reading ------------------------------------------------------------------------

    def get_events(self, conn, req: te.GetTaskEvents) -> te.GetTaskEventsReply:
        """Attempts matching the request, newest first, at most ``limit`` of them."""
        if req.counts_only:
            counts = collections.Counter(rec.state for rec in self.tasks.values())
            return te.GetTaskEventsReply([], state_counts={
                te.STATE_NAMES[s]: n for s, n in counts.items() if s >= 0})
        self._resolve()
        if req.node_counts_for:
            by_node = self._counts_by_node()
            rows = by_node.get(req.node_counts_for, collections.Counter())
            if req.unassigned:
                rows = rows + by_node.get(b"", collections.Counter())
            return te.GetTaskEventsReply([], node_counts=[
                (name, te.STATE_NAMES[state], n) for (name, state), n in rows.items()])
        if req.task_id:
            found = [r for k, r in self.tasks.items() if k[0] == req.task_id]
            found.sort(key=lambda r: -r.attempt)
        else:
            job_id, actor_id = req.job_id, req.actor_id
            found = [rec for rec in reversed(self.tasks.values())
                     if (not job_id or rec.task_id[-4:] == job_id)
                     and (not actor_id or (rec.info is not None
                                           and rec.info.actor_id == actor_id))]
        if req.filters:
            found = records.select_task_records(found, req.filters, 0)
        if req.summary:
            return te.GetTaskEventsReply([], summary=records.count_task_records(found))
        total = len(found)
        if req.limit:
            found = found[:req.limit]
        return te.GetTaskEventsReply(
            found, num_filtered=total - len(found),
            num_status_task_events_dropped=sum(self.dropped_by_job.values()),
            num_profile_events_dropped=self.dropped_at_workers)

    def _counts_by_node(self) -> dict:
        """``{node_id: Counter((func_or_class_name, state))}`` over the stored attempts,
        at most ``_NODE_COUNTS_TTL_S`` old (b"": not on a node yet)."""
        at, by_node = self._node_counts
        now = time.monotonic()
        if now - at < _NODE_COUNTS_TTL_S:
            return by_node
        by_node = {}
        for rec in self.tasks.values():
            if rec.state < 0:
                continue
            counts = by_node.get(rec.node_id)
            if counts is None:
                counts = by_node[rec.node_id] = collections.Counter()
            info = rec.info
            counts[(info.func_or_class_name if info is not None else "", rec.state)] += 1
        self._node_counts = (now, by_node)
        return by_node

    def debug_state(self) -> dict:
        return {"tasks": len(self.tasks), "max_tasks": self.max_tasks,
                "events_received": self.events_received,
                "dropped_tasks": sum(self.dropped_by_job.values()),
                "dropped_at_workers": self.dropped_at_workers}
