"""The task-event store (GCS side) and the buffer (core worker side), without processes.

The store merges the owner's and the executor's halves of each attempt,
whatever order their batches arrive in; it is bounded, dropping the oldest
finished attempts first and counting what it dropped.
"""
from __future__ import annotations

import threading

import msgspec
import pytest

from ember.core_worker.task_events import TaskEventBuffer, describe
from ember.core_worker.task_submitter import PendingTask
from ember.gcs.task_events import TaskEventManager
from ember.protocol import task_events as te
from ember.protocol.common import VALUE_ERROR, VALUE_PICKLE, SerializedValue
from ember.protocol.core_worker import ReturnObject, TaskSpec, PushTaskReply
from ember.protocol.common import Address

JOB = b"\x01\x00\x00\x00"


def task_id(n: int, job: bytes = JOB) -> bytes:
    return b"p" * 12 + n.to_bytes(8, "little") + job


def info(n: int, job: bytes = JOB, **kw) -> te.TaskInfo:
    kw.setdefault("desc_id", 1000 + n)
    return te.TaskInfo(job, f"f{n}", f"f{n}", **kw)


def times(**at: float) -> tuple[float, ...]:
    """An attempt's state times: ``times(RUNNING=1.0)``."""
    out = [0.0] * len(te.STATE_NAMES)
    for name, ts in at.items():
        out[te.STATE_NAMES.index(name)] = ts
    return tuple(out)


def record(tid: bytes, attempt: int, state: int, ts, desc: int = 0,
           where=(b"", b"", 0)) -> te.TaskEventRecord:
    return te.TaskEventRecord(tid, attempt, state, *ts, *where, desc=desc)


def batch(events, descs=(), errors=(), node=b"N", worker=b"W", pid=7, dropped=0,
          ended=False):
    """A batch of one record per (task_id, attempt, state, time) event, each as a
    separate report of its attempt: the store must merge them as it merges sides.
    With ``descs``, the k-th event's record points at the k-th description. With
    ``ended``, the records travel as first reports of ended attempts, encoded
    (``AddTaskEvents.ended``), through a real encode and decode."""
    records = [record(tid, attempt, state, times(**{te.STATE_NAMES[state]: ts}),
                      descs[k].desc_id if k < len(descs) else 0, (node, worker, pid))
               for k, (tid, attempt, state, ts) in enumerate(events)]
    if not ended:
        return te.AddTaskEvents(records=records, descs=list(descs), errors=list(errors),
                                node_id=node, worker_id=worker, pid=pid, dropped=dropped)
    sent = te.AddTaskEvents(ended=te.encode_ended(records), descs=list(descs), errors=list(errors), node_id=node,
                            worker_id=worker, pid=pid, dropped=dropped)
    return msgspec.msgpack.decode(msgspec.msgpack.encode(sent), type=te.AddTaskEvents)


def sent_records(sent: te.AddTaskEvents) -> list[te.TaskEventRecord]:
    """Every record of a batch: its ended attempts' and the others."""
    return [r for data, _, _ in sent.ended for r in te.decode_records(data)] + sent.records


def query(store, **kw) -> te.GetTaskEventsReply:
    return store.get_events(None, te.GetTaskEvents(**kw))


def test_owner_and_executor_halves_merge_in_any_order():
    store = TaskEventManager(max_tasks=10)
    tid = task_id(1)
    # The executor's record arrives before the owner's.
    store.add_events(None, te.AddTaskEvents(
        records=[record(tid, 0, te.FINISHED, times(RUNNING=10.0, FINISHED=11.0),
                        where=(b"node", b"wkr", 42))],
        node_id=b"node", worker_id=b"wkr", pid=42))
    store.add_events(None, te.AddTaskEvents(
        records=[record(tid, 0, te.FINISHED, times(PENDING_ARGS_AVAIL=9.0, SUBMITTED_TO_WORKER=9.5,
                                             FINISHED=11.2), desc=info(1).desc_id)],
        descs=[info(1)], node_id=b"owner-node", worker_id=b"owner", pid=1))
    (rec,) = query(store).tasks
    assert te.STATE_NAMES[rec.state] == "FINISHED"
    assert (rec.node_id, rec.worker_id, rec.worker_pid) == (b"node", b"wkr", 42)
    assert rec.info.func_or_class_name == "f1"
    assert rec.state_ts[te.FINISHED] == 11.0  # the earliest report of a state
    assert rec.state_ts[te.PENDING_ARGS_AVAIL] == 9.0
    assert rec.state_ts[te.RUNNING] == 10.0


def test_an_unfinished_attempt_reported_again_advances():
    store = TaskEventManager(max_tasks=10)
    tid = task_id(1)
    store.add_events(None, te.AddTaskEvents(
        records=[record(tid, 0, te.SUBMITTED_TO_WORKER, times(PENDING_ARGS_AVAIL=1.0,
                                                        SUBMITTED_TO_WORKER=2.0))]))
    assert te.STATE_NAMES[query(store).tasks[0].state] == "SUBMITTED_TO_WORKER"
    store.add_events(None, te.AddTaskEvents(
        records=[record(tid, 0, te.FAILED, times(PENDING_ARGS_AVAIL=1.0, SUBMITTED_TO_WORKER=2.0,
                                           FAILED=3.0))]))
    (rec,) = query(store).tasks
    assert te.STATE_NAMES[rec.state] == "FAILED" and rec.state_ts[te.FAILED] == 3.0


def test_a_record_with_the_wrong_number_of_times_is_refused_at_decoding():
    bad = te.AddTaskEvents(records=[record(task_id(1), 0, te.RUNNING, (1.0,))])
    with pytest.raises(msgspec.ValidationError):
        msgspec.msgpack.decode(msgspec.msgpack.encode(bad), type=te.AddTaskEvents)


def test_failure_keeps_its_error_type_and_message():
    store = TaskEventManager(max_tasks=10)
    tid = task_id(1)
    store.add_events(None, batch([(tid, 0, te.RUNNING, 1.0), (tid, 0, te.FAILED, 2.0)],
                                 errors=[(tid, 0, "TASK_EXECUTION_EXCEPTION", "ValueError: x")]))
    (rec,) = query(store).tasks
    assert te.STATE_NAMES[rec.state] == "FAILED"
    assert (rec.error_type, rec.error_message) == ("TASK_EXECUTION_EXCEPTION", "ValueError: x")


def test_bound_drops_oldest_finished_first_and_counts_drops():
    store = TaskEventManager(max_tasks=3)
    t = [task_id(i) for i in range(5)]
    store.add_events(None, batch([(t[0], 0, te.RUNNING, 1.0),       # still running
                                  (t[1], 0, te.RUNNING, 1.0), (t[1], 0, te.FINISHED, 2.0),
                                  (t[2], 0, te.RUNNING, 1.0), (t[2], 0, te.FINISHED, 3.0)]))
    store.add_events(None, batch([(t[3], 0, te.RUNNING, 4.0)]))
    kept = {r.task_id for r in query(store).tasks}
    assert kept == {t[0], t[2], t[3]}  # t[1] finished first, so it went first
    store.add_events(None, batch([(t[4], 0, te.RUNNING, 5.0)]))
    reply = query(store)
    assert {r.task_id for r in reply.tasks} == {t[0], t[3], t[4]}
    assert reply.num_status_task_events_dropped == 2
    assert store.debug_state()["dropped_tasks"] == 2


def test_bound_drops_the_oldest_when_nothing_finished():
    store = TaskEventManager(max_tasks=2)
    t = [task_id(i) for i in range(3)]
    store.add_events(None, batch([(tid, 0, te.RUNNING, 1.0) for tid in t]))
    assert {r.task_id for r in query(store).tasks} == {t[1], t[2]}


def test_queries_filter_by_job_task_and_actor_newest_first_with_limit():
    store = TaskEventManager(max_tasks=100)
    other = b"\x02\x00\x00\x00"
    store.add_events(None, batch(
        [(task_id(i), 0, te.PENDING_ARGS_AVAIL, float(i)) for i in range(5)]
        + [(task_id(9, other), 0, te.PENDING_ARGS_AVAIL, 9.0)],
        descs=[info(i, actor_id=b"A" * 16 if i == 3 else b"") for i in range(5)]))
    assert [r.task_id for r in query(store, job_id=JOB, limit=2).tasks] == [task_id(4),
                                                                            task_id(3)]
    assert query(store, job_id=JOB, limit=2).num_filtered == 3
    assert [r.task_id for r in query(store, actor_id=b"A" * 16).tasks] == [task_id(3)]
    assert [r.task_id for r in query(store, task_id=task_id(9, other)).tasks] == [
        task_id(9, other)]


def test_retried_attempts_are_separate_records():
    store = TaskEventManager(max_tasks=10)
    tid = task_id(1)
    store.add_events(None, batch([(tid, 0, te.RUNNING, 1.0), (tid, 0, te.FAILED, 2.0),
                                  (tid, 1, te.RUNNING, 3.0), (tid, 1, te.FINISHED, 4.0)]))
    attempts = query(store, task_id=tid).tasks
    assert [(r.attempt, te.STATE_NAMES[r.state]) for r in attempts] == [(1, "FINISHED"),
                                                                         (0, "FAILED")]


def test_finished_job_events_are_dropped():
    store = TaskEventManager(max_tasks=10)
    other = b"\x02\x00\x00\x00"
    store.add_events(None, batch([(task_id(1), 0, te.RUNNING, 1.0),
                                  (task_id(2, other), 0, te.RUNNING, 1.0)]))
    store.drop_job(JOB)
    assert [r.task_id for r in query(store).tasks] == [task_id(2, other)]


def test_worker_drops_are_reported():
    store = TaskEventManager(max_tasks=10)
    store.add_events(None, batch([], dropped=5))
    assert query(store).num_profile_events_dropped == 5


# --- the buffer -------------------------------------------------------------------------

def spec(n: int, **kw) -> TaskSpec:
    kw.setdefault("resources", {"CPU": 1.0})
    return TaskSpec(task_id=task_id(n), job_id=JOB, function_id=b"fn",
                    function_name="mod.func", args=[], kwarg_names=[], num_returns=1,
                    owner=Address(b"", "", 0), **kw)


class _Task(PendingTask):
    """The owner's record of a submitted task, as the submitters make it (weakly
    referable, for the tests that check nothing keeps it alive)."""

    __slots__ = ("__weakref__",)

    def __init__(self, s, parent=None, info=None):
        super().__init__(s, [b"r" * 28], None, None, parent=parent, info=info)


def _attempts(sent) -> list[tuple[int, str]]:
    return [(r.attempt, te.STATE_NAMES[r.state]) for r in sent_records(sent)]


def test_buffer_sends_an_owned_attempt_once_with_its_times_worker_and_description():
    buf = TaskEventBuffer(b"node", b"worker")
    task = _Task(spec(1), parent=task_id(0))
    buf.submitted(task)
    buf.queued(task)
    buf.pushed(task, (b"N" * 28, b"W" * 28, 4321))
    task.ran_for = 0.001  # the reply's duration: the owner places RUNNING from it
    buf.finished(task, [ReturnObject(b"o", SerializedValue(VALUE_PICKLE))])
    sent = buf.take()
    assert sent.records == [] and [n for _, n, _ in sent.ended] == [1]  # an ended attempt, sent once
    (rec,) = sent_records(sent)
    assert (rec.task_id, rec.attempt, rec.state) == (task_id(1), 0, te.FINISHED)
    assert (rec.node_id, rec.worker_id, rec.worker_pid) == (b"N" * 28, b"W" * 28, 4321)
    ts = rec.state_ts
    assert all(ts[s] > 0 for s in (te.PENDING_ARGS_AVAIL, te.PENDING_NODE_ASSIGNMENT,
                                   te.SUBMITTED_TO_WORKER, te.RUNNING, te.FINISHED))
    assert ts[te.RUNNING] < ts[te.FINISHED] and ts[te.FAILED] == 0.0
    (desc,) = sent.descs
    assert (desc.func_or_class_name, desc.name, desc.type) == ("func", "func", te.NORMAL_TASK)
    assert desc.required_resources == {"CPU": 1.0}
    assert rec.desc == desc.desc_id != 0 and rec.parent_task_id == task_id(0)
    assert buf.take() is None  # emptied
    # The batch survives the wire.
    wire = msgspec.msgpack.encode(sent)
    assert msgspec.msgpack.encode(msgspec.msgpack.decode(wire, type=te.AddTaskEvents)) == wire
    # The store takes where it ran from the record, not from the owner's batch.
    store = TaskEventManager(max_tasks=10)
    store.add_events(None, sent)
    (stored,) = query(store).tasks
    assert (stored.node_id, stored.worker_id, stored.worker_pid) == (b"N" * 28, b"W" * 28,
                                                                     4321)


def test_buffer_sends_an_attempt_unfinished_for_an_interval_then_again_when_it_ends():
    buf = TaskEventBuffer()
    task = _Task(spec(1))
    buf.submitted(task)
    buf.pushed(task, (b"N" * 28, b"W" * 28, 1))
    assert buf.take() is None  # it may end before the next flush: then it is sent once
    assert _attempts(buf.take()) == [(0, "SUBMITTED_TO_WORKER")]
    buf.finished(task, [ReturnObject(b"o", SerializedValue(VALUE_ERROR))])
    sent = buf.take()
    assert _attempts(sent) == [(0, "FAILED")]
    assert sent.descs == [] and sent.records[0].desc == 0  # described once


def test_buffer_shows_a_running_task_until_it_ends_on_the_executor():
    buf = TaskEventBuffer(b"node", b"worker")
    s = spec(1)
    buf.running(s)
    assert buf.take() is None  # it may end before the next flush: its owner reports it
    assert _attempts(buf.take()) == [(0, "RUNNING")]
    assert _attempts(buf.take()) == [(0, "RUNNING")]  # still running: still shown
    buf.ended(s, PushTaskReply([], is_application_error=False))
    assert buf.take() is None  # its owner reports how it ended


def test_buffer_reports_an_actor_creation_whole_on_the_executor():
    """The GCS, not a core worker, pushes an actor's creation: nobody else reports it."""
    buf = TaskEventBuffer(b"node", b"worker")
    s = spec(1, is_actor_creation=True, actor_id=b"A" * 16)
    buf.running(s)
    buf.ended(s, PushTaskReply([], is_application_error=False))
    sent = buf.take()
    (rec,) = sent.records
    assert rec.state == te.FINISHED and 0 < rec.state_ts[te.RUNNING] <= rec.state_ts[te.FINISHED]
    assert [i.type for i in sent.descs] == [te.ACTOR_CREATION_TASK]
    assert rec.desc == sent.descs[0].desc_id and rec.worker_id == b"worker"


def test_buffer_error_outcomes_and_retries():
    buf = TaskEventBuffer()
    task = _Task(spec(1, max_retries=1))
    buf.submitted(task)
    buf.failed(task.spec, ValueError("bad"))
    task.spec.attempt = 1
    buf.retried(task)  # before any flush: attempt 0 must still be described and sent
    buf.finished(task, [ReturnObject(b"o", SerializedValue(VALUE_ERROR))])
    sent = buf.take()
    assert sorted(_attempts(sent)) == [(0, "FAILED"), (1, "FAILED")]
    assert sent.errors == [(task_id(1), 0, "TASK_EXECUTION_EXCEPTION", "bad")]
    # Both attempts are described, by the one description they share.
    assert len(sent.descs) == 1 and [r.desc for r in sent_records(sent)] == [
        sent.descs[0].desc_id] * 2


def test_a_task_that_ends_within_two_flushes_is_sent_once():
    """With many calls in flight, reporting each unfinished at a flush and again at its
    end doubled what a flush carried."""
    buf = TaskEventBuffer()
    early, late = _Task(spec(1)), _Task(spec(2))
    buf.submitted(early)
    buf.take()
    buf.submitted(late)
    buf.finished(early, [ReturnObject(b"o", SerializedValue(VALUE_PICKLE))])
    buf.finished(late, [ReturnObject(b"o", SerializedValue(VALUE_PICKLE))])
    assert sorted(_attempts(buf.take())) == [(0, "FINISHED"), (0, "FINISHED")]
    assert buf.take() is None


def test_buffer_full_drops_and_counts():
    buf = TaskEventBuffer()
    buf._max = 2
    tasks = [_Task(spec(n)) for n in range(4)]
    for task in tasks:
        buf.submitted(task)
    for task in tasks:
        buf.finished(task, [ReturnObject(b"o", SerializedValue(VALUE_PICKLE))])
    sent = buf.take()
    assert len(sent_records(sent)) == 2 and sent.dropped == 2


def test_buffer_loses_nothing_to_a_racing_flush():
    """Executor records from another thread while flushes take batches: each arrives once."""
    buf = TaskEventBuffer()
    n = 20000
    specs = [spec(i, is_actor_creation=True, actor_id=b"A" * 16) for i in range(n)]
    reply = PushTaskReply([], is_application_error=False)
    got = []

    def record():
        for s in specs:
            buf.running(s)
            buf.ended(s, reply)
    writer = threading.Thread(target=record)
    writer.start()
    while writer.is_alive():
        sent = buf.take()
        if sent is not None:
            got += [r for r in sent.records if r.state == te.FINISHED]
    writer.join()
    sent = buf.take()
    got += [r for r in sent.records if r.state == te.FINISHED] if sent else []
    assert sorted(r.task_id for r in got) == sorted(s.task_id for s in specs)


@pytest.mark.parametrize("max_tasks", [1, 50])
def test_store_never_exceeds_its_bound(max_tasks):
    store = TaskEventManager(max_tasks=max_tasks)
    for i in range(200):
        state = te.FINISHED if i % 3 else te.RUNNING
        store.add_events(None, batch([(task_id(i), 0, state, float(i))]))
    assert len(store) == max_tasks
    assert store.debug_state()["dropped_tasks"] == 200 - max_tasks


def test_a_full_store_drops_by_age_skipping_what_already_left_or_runs_again():
    """Eviction in bulk, with its rare cases mixed in: finished attempts whose job
    was dropped already, and one dropped attempt reported again as running."""
    other = b"\x02\x00\x00\x00"
    store = TaskEventManager(max_tasks=6)
    store.add_events(None, batch([(task_id(i, other), 0, te.FINISHED, 1.0) for i in range(2)]
                                 + [(task_id(i), 0, te.FINISHED, 2.0) for i in range(4)]))
    store.drop_job(other)  # their keys stay in the finished order, naming nothing
    store.add_events(None, batch([(task_id(i), 0, te.FINISHED, 3.0) for i in range(4, 8)]))
    # 8 stored over a bound of 6: the two oldest finished that are still stored go.
    assert {r.task_id for r in query(store).tasks} == {task_id(i) for i in range(2, 8)}
    assert store.debug_state()["dropped_tasks"] == 2
    store.add_events(None, batch([(task_id(0), 0, te.RUNNING, 4.0)]))  # dropped, runs again
    store.add_events(None, batch([(task_id(i), 0, te.FINISHED, 5.0) for i in range(8, 10)]))
    kept = {r.task_id for r in query(store).tasks}
    assert len(kept) == 6 and task_id(0) in kept and task_id(9) in kept
    assert store.debug_state()["dropped_tasks"] == 5


def test_store_applies_column_filters_and_summarizes():
    store = TaskEventManager(max_tasks=100)
    store.add_events(None, batch(
        [(task_id(i), 0, te.FINISHED if i % 2 else te.RUNNING, float(i)) for i in range(6)],
        descs=[info(i) for i in range(6)]))
    reply = query(store, filters=[("state", "=", "finished")], limit=2)
    assert [r.task_id for r in reply.tasks] == [task_id(5), task_id(3)]
    assert reply.num_filtered == 1
    assert [r.task_id for r in query(store, filters=[("name", "!=", "f0"),
                                                     ("state", "=", "running")]).tasks] == [
        task_id(4), task_id(2)]
    rows = query(store, summary=True).summary
    assert sorted(rows) == sorted([(f"f{i}", te.NORMAL_TASK,
                                    te.FINISHED if i % 2 else te.RUNNING, 1) for i in range(6)])


def test_buffer_records_a_task_that_ends_without_being_submitted():
    """A call on an actor already known dead fails before it is submitted."""
    buf = TaskEventBuffer()
    task = _Task(spec(1))
    buf.finished(task, [ReturnObject(b"o", SerializedValue(VALUE_ERROR))])
    sent = buf.take()
    assert _attempts(sent) == [(0, "FAILED")] and len(sent.descs) == 1


def test_calls_made_alike_share_one_description_per_flush():
    """remote_function.py and actor.py describe the calls of one option set once and
    hand the description with each call; a task without one is described alone."""
    buf = TaskEventBuffer()
    shared = describe(spec(0))
    tasks = [_Task(spec(n), info=shared) for n in range(3)]
    other = _Task(spec(9, name="custom"))
    for task in tasks + [other]:
        buf.submitted(task)
    for task in tasks + [other]:
        buf.finished(task, [ReturnObject(b"o", SerializedValue(VALUE_PICKLE))])
    sent = buf.take()
    assert sorted(d.name for d in sent.descs) == ["custom", "func"]
    names = {d.desc_id: d.name for d in sent.descs}
    by_task = {r.task_id: names[r.desc] for r in sent_records(sent)}
    assert by_task == {task_id(0): "func", task_id(1): "func", task_id(2): "func",
                       task_id(9): "custom"}
    store = TaskEventManager(max_tasks=10)
    store.add_events(None, msgspec.msgpack.decode(msgspec.msgpack.encode(sent),
                                                  type=te.AddTaskEvents))
    assert sorted(r.info.name for r in query(store).tasks) == ["custom", "func", "func",
                                                              "func"]


def test_the_buffer_does_not_keep_a_finished_task_alive():
    """An owner may finish tens of thousands of tasks a second: holding each until the
    next flush would keep them from being freed at once."""
    import weakref
    buf = TaskEventBuffer()
    task = _Task(spec(1))
    buf.submitted(task)
    buf.finished(task, [ReturnObject(b"o", SerializedValue(VALUE_PICKLE))])
    gone = weakref.ref(task)
    del task
    assert gone() is None
    assert _attempts(buf.take()) == [(0, "FINISHED")]


def test_records_keep_their_descriptions_when_the_table_of_descriptions_is_emptied(
        monkeypatch):
    """The store gives records their descriptions when read, or when too many distinct
    descriptions wait (a name per call, say): then, at once."""
    from ember.gcs import task_events as store_module
    monkeypatch.setattr(store_module, "_MAX_DESCS", 3)
    store = TaskEventManager(max_tasks=100)
    for n in range(10):  # a description of its own per task
        store.add_events(None, batch([(task_id(n), 0, te.FINISHED, 1.0 + n)], descs=[info(n)]))
    assert len(store._descs) <= 3
    got = {r.task_id: r.info.name for r in query(store).tasks}
    assert got == {task_id(n): f"f{n}" for n in range(10)}


def test_a_retried_task_is_freed_when_its_new_attempt_ends():
    """A task retried after a flush must leave the buffer when its new attempt ends."""
    import weakref
    buf = TaskEventBuffer()
    task = _Task(spec(1, max_retries=1))
    buf.submitted(task)
    buf.take()                      # attempt 0 waits a whole interval before it is due
    task.spec.attempt = 1
    buf.retried(task)
    buf.finished(task, [ReturnObject(b"o", SerializedValue(VALUE_PICKLE))])
    gone = weakref.ref(task)
    del task
    assert gone() is None
    assert sorted(_attempts(buf.take())) == [(0, "FAILED"), (1, "FINISHED")]


# --- attempts sent apart, undecoded until read -----------------------------------------

def test_ended_attempts_wait_undecoded_until_read_then_merge_with_the_rest():
    store = TaskEventManager(max_tasks=100)
    t = [task_id(i) for i in range(3)]
    store.add_events(None, batch([(t[0], 0, te.FINISHED, 2.0), (t[1], 0, te.FAILED, 3.0)],
                                 descs=[info(0), info(1)], ended=True))
    # Another process's reports: an attempt still running, and why t[1] failed.
    store.add_events(None, batch([(t[2], 0, te.RUNNING, 1.5)],
                                 errors=[(t[1], 0, "TASK_EXECUTION_EXCEPTION", "ValueError: x")]))
    assert store.debug_state()["undecoded"] == 2 and len(store) == 3
    counts = query(store, counts_only=True).state_counts  # answered without decoding
    assert counts == {"FINISHED": 1, "FAILED": 1, "RUNNING": 1}
    assert store.debug_state()["undecoded"] == 2
    got = {r.task_id: r for r in query(store).tasks}
    assert store.debug_state()["undecoded"] == 0
    assert {tid: te.STATE_NAMES[r.state] for tid, r in got.items()} == {
        t[0]: "FINISHED", t[1]: "FAILED", t[2]: "RUNNING"}
    assert got[t[0]].info.name == "f0" and got[t[1]].info.name == "f1"
    assert (got[t[1]].error_type, got[t[1]].error_message) == ("TASK_EXECUTION_EXCEPTION",
                                                               "ValueError: x")


def test_a_later_report_merges_with_an_attempt_still_undecoded():
    store = TaskEventManager(max_tasks=100)
    tid = task_id(1)
    store.add_events(None, batch([(tid, 0, te.FINISHED, 5.0)], ended=True))
    store.add_events(None, batch([(tid, 0, te.RUNNING, 4.0)], node=b"X", worker=b"Y", pid=9))
    (rec,) = query(store).tasks
    assert te.STATE_NAMES[rec.state] == "FINISHED"
    assert rec.state_ts[te.RUNNING] == 4.0 and rec.state_ts[te.FINISHED] == 5.0


def test_a_full_store_drops_decoded_finished_first_then_whole_chunks_oldest_first():
    store = TaskEventManager(max_tasks=20)
    running = [(task_id(i), 0, te.RUNNING, 1.0) for i in range(2)]
    store.add_events(None, batch(running))
    store.add_events(None, batch([(task_id(i), 0, te.FINISHED, 2.0) for i in range(2, 6)]))
    for first in range(6, 30, 4):  # chunks of 4: 6-9, 10-13, ..., 26-29
        store.add_events(None, batch([(task_id(i), 0, te.FINISHED, 3.0)
                                      for i in range(first, first + 4)], ended=True))
    # The decoded finished ones went first (2-5), then whole chunks, oldest first
    # (6-9, 10-13): a chunk goes whole when that leaves the store at least 90% full.
    assert len(store) == 18 and store.debug_state()["dropped_tasks"] == 12
    assert store.debug_state()["undecoded"] == 16  # the chunks left, never decoded
    kept = {r.task_id for r in query(store).tasks}
    assert kept == {task_id(i) for i in (0, 1, *range(14, 30))}
    assert query(store).num_status_task_events_dropped == 12


def test_a_chunk_larger_than_the_excess_is_trimmed_not_dropped_whole():
    """Dropping a chunk whole must not leave the store far below its bound."""
    store = TaskEventManager(max_tasks=10)
    store.add_events(None, batch([(task_id(i), 0, te.FINISHED, 1.0) for i in range(8)],
                                 ended=True))
    store.add_events(None, batch([(task_id(i), 0, te.FINISHED, 2.0) for i in range(8, 12)],
                                 ended=True))
    assert len(store) == 10 and store.debug_state()["dropped_tasks"] == 2
    assert {r.task_id for r in query(store).tasks} == {task_id(i) for i in range(2, 12)}


def test_unfinished_reports_never_crowd_out_the_finished_attempts():
    """Attempts first seen unfinished are kept from eviction; past a tenth of the bound
    the chunks are decoded, so those their owners ended (in a chunk) can go."""
    store = TaskEventManager(max_tasks=50)
    for first in range(0, 300, 3):
        ids = [task_id(i) for i in range(first, first + 3)]
        store.add_events(None, batch([(tid, 0, te.RUNNING, 1.0) for tid in ids]))
        store.add_events(None, batch([(tid, 0, te.FINISHED, 2.0) for tid in ids], ended=True))
    got = query(store).tasks
    assert len(got) <= 50
    states = [te.STATE_NAMES[r.state] for r in got]
    assert states.count("FINISHED") == len(got)  # no attempt left that shows RUNNING
    assert task_id(299) in {r.task_id for r in got}  # the newest kept


def test_a_chunk_that_does_not_decode_is_dropped_and_counted_at_the_read():
    store = TaskEventManager(max_tasks=100)
    store.add_events(None, te.AddTaskEvents(ended=[(b"\xc1not msgpack", 3, 0)]))
    store.add_events(None, batch([(task_id(1), 0, te.FINISHED, 1.0)], ended=True))
    reply = query(store)
    assert [r.task_id for r in reply.tasks] == [task_id(1)]
    assert reply.num_status_task_events_dropped == 3 and len(store) == 1


def test_ended_attempts_travel_in_chunks_that_a_full_store_drops_whole():
    buf = TaskEventBuffer()
    tasks = [_Task(spec(n)) for n in range(2 * te.ENDED_CHUNK + 5)]
    for task in tasks:
        buf.submitted(task)
    for n, task in enumerate(tasks):
        kind = VALUE_ERROR if n % 7 == 0 else VALUE_PICKLE
        buf.finished(task, [ReturnObject(b"o", SerializedValue(kind))])
    sent = buf.take()
    assert [n for _, n, _ in sent.ended] == [te.ENDED_CHUNK, te.ENDED_CHUNK, 5]
    assert sum(failed for _, _, failed in sent.ended) == len(range(0, len(tasks), 7))
    store = TaskEventManager(max_tasks=3 * te.ENDED_CHUNK + 10)
    store.add_events(None, sent)
    store.add_events(None, sent)  # the same attempts again: merged when read
    # 4,010 over a bound of 3,010: the oldest chunk goes, whole, undecoded.
    assert store.debug_state()["undecoded"] == 3 * te.ENDED_CHUNK + 10
    assert store.debug_state()["dropped_tasks"] == te.ENDED_CHUNK
    assert len(query(store).tasks) == len(tasks)


def test_a_watched_store_takes_chunks_in_as_they_come():
    """After a read, chunks are decoded as they arrive, so the next read finds them
    decoded; counting states alone does not make the store watched."""
    store = TaskEventManager(max_tasks=100)
    store.add_events(None, batch([(task_id(1), 0, te.FINISHED, 1.0)], ended=True))
    query(store, counts_only=True)
    store.add_events(None, batch([(task_id(2), 0, te.FINISHED, 1.0)], ended=True))
    assert store.debug_state()["undecoded"] == 2
    query(store, limit=1)
    store.add_events(None, batch([(task_id(3), 0, te.FINISHED, 1.0)], ended=True))
    assert store.debug_state()["undecoded"] == 0 and len(store) == 3
