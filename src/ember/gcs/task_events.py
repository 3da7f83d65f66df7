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
counted (and events that workers dropped from full buffers), and reported
with every query, so a user sees that the view is partial. A finished
job's attempts are dropped ``task_events_finished_job_ttl_s`` after it ended.

Kept undecoded until read. Nearly every attempt is reported once, whole, by
its owner when it ends; a batch carries those encoded apart (``ended``, in
chunks of a thousand), and the store keeps each chunk as it came, bytes,
until someone reads the store: then the chunks are decoded and merged into
``tasks``, the wire structs themselves, which queries filter and return. A
cluster nobody watches pays nothing per task here, and a full store drops
whole chunks, oldest first, after the finished attempts already decoded. A
store read in the last minute is watched: it takes chunks in as they come,
so that a scrape or a poll never waits for a whole store's decoding (100,000
attempts: about 0.2 s). The rest (unfinished attempts, later reports, the
executors') is merged at once.
Held in memory only: task events are a view of recent history, not state a
restarted GCS must recover (as in Ray).
"""
from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import operator
import time

import msgspec

from ..config import config
from ..observability import records
from ..protocol import task_events as te

logger = logging.getLogger(__name__)

FINISHED = te.FINISHED  # and FAILED, the only state beyond it: a finished attempt
_KEY = operator.attrgetter("task_id", "attempt")
_STATE = operator.attrgetter("state")
_ENDED = FINISHED.__le__
#: Descriptions kept for records not read yet; past this many, the store is
#: made whole (see _read_all), which empties the table. Descriptions are shared
#: by the calls made alike, so this takes many distinct ones (a task name per
#: call, say); each time, it decodes what the chunks hold.
_MAX_DESCS = 50_000
_NODE_COUNTS_TTL_S = 1.0
#: A store read within this long is being watched (a metrics scraper, a
#: dashboard, a script polling the state API): it takes chunks in as they come,
#: so that no read waits for a whole store's decoding.
_WATCHED_S = 60.0


class TaskEventManager:
    def __init__(self, max_tasks: int | None = None):
        self.max_tasks = max_tasks or config.task_events_max_num_task_in_gcs
        #: (task_id, attempt) -> record, oldest first (insertion order).
        self.tasks: dict[tuple[bytes, int], te.TaskEventRecord] = {}
        #: Keys of attempts in the order they finished; may hold keys dropped since.
        self._finished: collections.deque = collections.deque()
        #: Batches' ``ended`` parts not decoded yet, oldest first, as (raw, number
        #: of records, number FAILED), and the records they hold.
        self._chunks: collections.deque = collections.deque()
        self._in_chunks = 0
        #: Attempts first seen unfinished since the chunks were last taken in. Some
        #: are stale (an executor's RUNNING report of an attempt whose owner's
        #: report ended it, in a chunk): past a tenth of the bound, the chunks are
        #: taken in, which ends them, so that unfinished attempts kept from
        #: eviction never crowd out the finished ones.
        self._opened = 0
        #: (task_id, attempt) -> (error type, message), until its record is read.
        self._errors: dict[tuple[bytes, int], tuple[str, str]] = {}
        #: Attempts dropped because the store was full.
        self.dropped_tasks = 0
        #: Events workers dropped before sending (their buffers were full).
        self.dropped_at_workers = 0
        self.events_received = 0
        #: desc_id -> TaskInfo, from the batches' ``descs``, until the records that
        #: point at them are given them (see _read_all).
        self._descs: dict[int, te.TaskInfo] = {}
        self._timers: list[asyncio.TimerHandle] = []
        #: (monotonic time, {node_id: Counter((name, state))}): every node's exporter
        #: asks for its counts at each scrape; one pass over the store serves them
        #: all for ``_NODE_COUNTS_TTL_S``.
        self._node_counts: tuple[float, dict] = (-1e9, {})
        #: Monotonic time of the last read that needed the records.
        self._last_read = -1e9

    def handlers(self):
        return {te.AddTaskEvents: self.add_events, te.GetTaskEvents: self.get_events}

    async def load(self) -> None:
        """Nothing to reload: task events are not persisted (see the module doc)."""

    def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()

    # --- writing ----------------------------------------------------------------------

    def __len__(self) -> int:
        """Attempts held, decoded or not (counting an attempt reported in a chunk and
        again unfinished twice, until the chunks are taken in)."""
        return len(self.tasks) + self._in_chunks

    def add_events(self, conn, batch: te.AddTaskEvents) -> None:
        """Store a batch: its ``ended`` part as a chunk, undecoded; its other records
        merged into ``tasks`` at once."""
        self.events_received += len(batch.records)
        self.dropped_at_workers += batch.dropped
        descs = self._descs
        for info in batch.descs:
            descs[info.desc_id] = info
        for data, count, failed in batch.ended:
            if count > 0:
                self._chunks.append((data, count, min(max(failed, 0), count)))
                self._in_chunks += count
                self.events_received += count
        if batch.records:
            self._store(batch.records)
        errors = self._errors
        for task_id, attempt, error_type, message in batch.errors:
            errors.setdefault((task_id, attempt), (error_type, message))
        if len(errors) > self.max_tasks:  # errors of attempts never reported
            for key in list(itertools.islice(errors, len(errors) - self.max_tasks)):
                del errors[key]
        if self._opened > self.max_tasks // 10 or (
                self._chunks and time.monotonic() - self._last_read < _WATCHED_S):
            self._take_in()
        if len(self) > self.max_tasks:
            self._evict(len(self) - self.max_tasks)
        if len(descs) > _MAX_DESCS:
            self._read_all()

    def _store(self, records: list) -> None:
        """Store decoded records: in bulk when every attempt in them is new (a chunk, in
        the common case); else record by record, merging a later report of an
        attempt into the stored one."""
        tasks = self.tasks
        keys = list(map(_KEY, records))
        fresh = dict(zip(keys, records))
        if len(fresh) == len(keys) and tasks.keys().isdisjoint(keys):
            tasks.update(fresh)  # all in C: nothing built or looked at per record
            ended = list(map(_ENDED, map(_STATE, records)))
            self._finished.extend(itertools.compress(keys, ended))
            self._opened += len(keys) - sum(ended)
            return
        for key, r in zip(keys, records):
            rec = tasks.get(key)
            if rec is None:
                tasks[key] = r
                if r.state >= FINISHED:
                    self._finished.append(key)
                else:
                    self._opened += 1
            else:
                self._merge(key, rec, r)

    def _take_in(self, n: int | None = None) -> None:
        """Decode the oldest ``n`` chunks (all by default) into ``tasks``."""
        chunks = self._chunks
        for _ in range(len(chunks) if n is None else n):
            raw, count, _failed = chunks.popleft()
            self._in_chunks -= count
            try:
                records = te.decode_records(raw)
            except msgspec.MsgspecError as exc:  # a sender that is not a core worker
                logger.warning("dropped %d task events that do not decode: %s", count, exc)
                self.dropped_tasks += count
                continue
            self._store(records)
        if not chunks:
            self._opened = 0

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

    def _read_all(self) -> None:
        """Make ``tasks`` whole before it is read: take the chunks in, and give each
        record its description and error.

        Done when read, not when written: a batch is stored without touching its
        records one by one (see add_events), and reads are rare. Then the table
        of descriptions is emptied: each batch brings those its records point at.
        """
        self._take_in()
        tasks = self.tasks
        descs = self._descs
        if descs:
            for rec in tasks.values():
                if rec.info is None and rec.desc:
                    rec.info = descs.get(rec.desc)
            descs.clear()
        errors = self._errors
        for key in [key for key in errors if key in tasks]:
            rec = tasks[key]
            error_type, message = errors.pop(key)
            if not rec.error_type:
                rec.error_type, rec.error_message = error_type, message

    def _evict(self, excess: int) -> None:
        """Drop ``excess`` attempts: the oldest finished first (those decoded, then the
        chunks), then the oldest of all.

        Once per batch, not per record: the store may hold one batch more than
        its bound for that long. A chunk goes whole, undecoded, unless that
        would leave the store more than a tenth below its bound (a small bound,
        or an unusually large batch): then it is taken in and dropped record by
        record, as the decoded ones are.
        """
        wanted = excess
        excess = self._drop_finished(excess)
        chunks = self._chunks
        slack = self.max_tasks // 10
        while excess > 0 and chunks:
            count = chunks[0][1]
            if count > excess + slack:
                self._take_in(1)
                excess = self._drop_finished(excess)
                continue
            chunks.popleft()
            self._in_chunks -= count
            excess -= count
        if excess > 0:  # nothing finished is left
            tasks = self.tasks
            for key in list(itertools.islice(tasks, excess)):
                del tasks[key]
                excess -= 1
        self.dropped_tasks += wanted - excess

    def _drop_finished(self, excess: int) -> int:
        """Drop up to ``excess`` decoded finished attempts, oldest first; what is left.

        A full store drops as many attempts per batch as the batch brings, so
        the common case (the next finished keys name finished attempts still
        stored) is done in bulk, in C. Taking the oldest of all (in
        :meth:`_evict`) is one pass from the front of the (insertion-ordered)
        dict per batch; a pass per record would walk the slots of every
        attempt dropped before it, each time.
        """
        tasks = self.tasks
        finished = self._finished
        while excess > 0 and finished:
            n = min(excess, len(finished))
            keys = [finished.popleft() for _ in range(n)]
            recs = list(map(tasks.pop, keys, itertools.repeat(None, n)))
            if None not in recs and all(map(_ENDED, map(_STATE, recs))):
                excess -= n
                continue
            for key, rec in zip(keys, recs):
                if rec is None:  # dropped already
                    continue
                if rec.state < FINISHED:  # dropped, then reported again unfinished: kept
                    tasks[key] = rec
                    continue
                excess -= 1
        return excess

    def job_finished(self, job_id: bytes) -> None:
        """Drop the job's attempts once ``task_events_finished_job_ttl_s`` has passed."""
        loop = asyncio.get_running_loop()
        self._timers = [t for t in self._timers if t.when() > loop.time()]  # still pending
        self._timers.append(loop.call_later(config.task_events_finished_job_ttl_s,
                                            self.drop_job, job_id))

    def drop_job(self, job_id: bytes) -> None:
        self._take_in()
        for key in [k for k in self.tasks if k[0][-4:] == job_id]:
            del self.tasks[key]

    # --- reading ------------------------------------------------------------------------

    def get_events(self, conn, req: te.GetTaskEvents) -> te.GetTaskEventsReply:
        """Attempts matching the request, newest first, at most ``limit`` of them."""
        if req.counts_only:  # the chunks' counts come with them: nothing is decoded
            counts = collections.Counter(rec.state for rec in self.tasks.values())
            for _raw, count, failed in self._chunks:
                counts[te.FINISHED] += count - failed
                counts[te.FAILED] += failed
            return te.GetTaskEventsReply([], state_counts={
                te.STATE_NAMES[s]: n for s, n in counts.items() if s >= 0 and n})
        self._last_read = time.monotonic()
        self._read_all()
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
            num_status_task_events_dropped=self.dropped_tasks,
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
        return {"tasks": len(self), "undecoded": self._in_chunks, "max_tasks": self.max_tasks,
                "events_received": self.events_received,
                "dropped_tasks": self.dropped_tasks,
                "dropped_at_workers": self.dropped_at_workers}
