"""The submitter's pump decision (core_worker/submit_policy.py), with no I/O.

Each rule of the module docstring has a test; then, over random sequences of
submissions, replies, grants and deaths, the invariants no plan may break.
The plans are carried out here by a model of the submitter (``apply``) that
does what ``NormalTaskSubmitter._pump`` does to the key's state.
"""
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ember.core_worker.submit_policy import PumpPlan, pipeline_depth, plan_pump
from ember.core_worker.task_submitter import LeasedWorker, PendingTask
from ember.protocol import core_worker as cw
from ember.protocol import raylet as rl
from ember.protocol.common import Address

OWNER = Address(b"o" * 28, "127.0.0.1", 1)
TIMER = object()  # an armed idle timer; the policy only asks whether there is one


def task(max_calls: int = 0, n: int = 0) -> PendingTask:
    spec = cw.TaskSpec(n.to_bytes(24, "big"), b"job", b"f" * 28, "f", [], [], 1, OWNER, {},
                       max_calls=max_calls)
    return PendingTask(spec, [], None, None)


def worker(inflight: int = 0, dead: bool = False, closed: bool = False,
           timer: bool = False, n: int = 0) -> LeasedWorker:
    address = Address(b"n" * 28, "127.0.0.1", 2, worker_id=n.to_bytes(28, "big"))
    w = LeasedWorker(types.SimpleNamespace(closed=closed),
                     rl.LeaseGranted(n.to_bytes(16, "big"), address, 100 + n), None)
    w.inflight, w.dead, w.idle_timer = inflight, dead, TIMER if timer else None
    return w


def plan(queue, workers, pending=0, depth=1, max_pending=10) -> PumpPlan:
    return PumpPlan(*plan_pump(queue, len(queue), workers, pending, depth, max_pending))


# --- pushes --------------------------------------------------------------------------

def test_with_no_workers_nothing_is_pushed_and_a_lease_is_asked_per_task():
    assert plan([task(), task(), task()], []) == PumpPlan([], [], 3, False, [])


def test_lease_requests_are_capped_and_count_those_outstanding():
    queue = [task() for _ in range(20)]
    assert plan(queue, [], pending=4, max_pending=10).lease_requests == 6
    assert plan(queue, [], pending=10, max_pending=10).lease_requests == 0
    # Outstanding requests beyond what the queue needs are kept while tasks wait.
    assert plan(queue[:2], [], pending=5).lease_requests == 0


def test_each_task_goes_to_the_least_loaded_worker_ties_to_the_first_leased():
    a, b, c = worker(2), worker(0), worker(1)
    assert plan([task(), task(), task()], [a, b, c], depth=4).pushes == [b, b, c]


def test_pushes_stop_at_the_depth_and_the_rest_wait_for_leases():
    a, b = worker(1), worker(0)
    p = plan([task() for _ in range(5)], [a, b], depth=2, max_pending=2)
    assert p.pushes == [b, a, b]
    assert p.lease_requests == 2 and not p.cancel_leases and p.idle == []


def test_a_max_calls_task_goes_only_to_a_worker_with_nothing_in_flight():
    busy, free = worker(1), worker(0)
    assert plan([task(max_calls=1)], [busy, free], depth=8).pushes == [free]
    assert plan([task(max_calls=1)], [busy], depth=8).pushes == []


def test_the_queue_is_served_in_order_the_first_task_that_fits_nowhere_stops_it():
    busy = worker(1)
    p = plan([task(max_calls=1), task()], [busy], depth=8)
    assert p.pushes == [] and p.lease_requests == 2


def test_a_dead_worker_is_never_chosen():
    dead, alive = worker(0, dead=True), worker(3)
    assert plan([task()], [dead, alive], depth=4).pushes == [alive]
    p = plan([task()], [dead], depth=4)
    assert p.pushes == [] and p.lost == []


def test_a_chosen_worker_whose_connection_closed_is_lost_and_the_next_one_chosen():
    closed, alive = worker(0, closed=True), worker(1)
    p = plan([task(), task()], [closed, alive], depth=4)
    assert p.lost == [closed] and p.pushes == [alive, alive]


def test_a_closed_worker_found_after_a_push_is_lost_and_the_push_stands():
    alive, closed = worker(0), worker(0, closed=True)
    p = plan([task(), task()], [alive, closed], depth=1, max_pending=5)
    assert p == PumpPlan([closed], [alive], 1, False, [])


def test_a_closed_worker_that_is_not_chosen_is_left_alone():
    alive, closed = worker(0), worker(1, closed=True)
    assert plan([task()], [alive, closed], depth=4) == PumpPlan([], [alive], 0, False, [])


# --- once the queue is empty -------------------------------------------------------------

def test_an_empty_queue_cancels_the_outstanding_lease_requests():
    assert plan([], [], pending=3) == PumpPlan([], [], 0, True, [])
    assert plan([], [], pending=0) == PumpPlan([], [], 0, False, [])


def test_an_empty_queue_arms_an_idle_timer_on_each_live_worker_with_nothing_in_flight():
    idle, armed, busy, dead = worker(0), worker(0, timer=True), worker(2), worker(0, dead=True)
    assert plan([], [idle, armed, busy, dead]).idle == [idle]


def test_a_worker_given_the_last_task_is_not_idle():
    a, b = worker(0), worker(0)
    p = plan([task()], [a, b], pending=1)
    assert p.pushes == [a] and p.idle == [b] and p.cancel_leases


def test_the_plan_changes_nothing_it_reads():
    queue, workers = [task(), task()], [worker(0), worker(0, closed=True)]
    plan(queue, workers, depth=4)
    assert [w.inflight for w in workers] == [0, 0]
    assert not any(w.dead for w in workers) and len(queue) == 2


@pytest.mark.parametrize("avg, expected", [(None, 1), (0.001, 8), (0.002, 1), (5.0, 1)])
def test_only_keys_whose_tasks_are_short_are_pipelined(avg, expected):
    assert pipeline_depth(avg, 8, 0.002) == expected


def test_pipeline_depth_is_at_least_one():
    assert pipeline_depth(0.0, 0, 0.002) == 1


# --- invariants over random histories ---------------------------------------------------

class Model:
    """A key's state and what the submitter does to it, with no I/O."""

    def __init__(self, max_pending: int):
        self.queue: list[PendingTask] = []
        self.workers: list[LeasedWorker] = []
        self.pending = 0
        self.max_pending = max_pending
        self.n = 0

    def pump(self, depth: int) -> None:
        pending_before = self.pending
        p = PumpPlan(*plan_pump(self.queue, len(self.queue), self.workers, self.pending,
                                depth, self.max_pending))
        for w in p.lost:
            assert w.conn.closed and w in self.workers
            w.dead = True
            self.workers.remove(w)
        for w in p.pushes:
            head = self.queue.pop(0)
            limit = 1 if head.spec.max_calls else depth
            assert not w.dead and not w.conn.closed, "a push to a dead or closed worker"
            assert w.inflight < limit, "a worker given more than the depth allows"
            w.inflight += 1
            w.idle_timer = None
        self.pending += p.lease_requests
        if p.cancel_leases:
            self.pending = 0
        for w in p.idle:
            assert w.idle_timer is None and w.inflight == 0 and not w.dead
            w.idle_timer = TIMER
        want = min(len(self.queue), self.max_pending)
        assert self.pending <= max(pending_before, want), "more leases asked than tasks wait"
        if self.queue:
            assert self.pending >= want, "tasks wait with too few lease requests out"
            head = self.queue[0]
            limit = 1 if head.spec.max_calls else depth
            assert all(w.inflight >= limit for w in self.workers
                       if not w.dead and not w.conn.closed), "a free worker left unused"
        else:
            assert self.pending == 0, "an empty queue left lease requests outstanding"
            assert all(w.idle_timer is not None for w in self.workers
                       if w.inflight == 0 and not w.dead), "an idle worker without a timer"

    def event(self, kind: str, pick: int, flag: bool) -> None:
        self.n += 1
        if kind == "submit":
            self.queue.append(task(max_calls=int(flag), n=self.n))
        elif kind == "reply":
            busy = [w for w in self.workers if w.inflight]
            if busy:
                busy[pick % len(busy)].inflight -= 1
        elif kind == "grant" and self.pending:
            self.pending -= 1
            self.workers.append(worker(n=self.n))
        elif kind == "lease_failed" and self.pending:
            self.pending -= 1
        elif kind == "close" and self.workers:
            self.workers[pick % len(self.workers)].conn.closed = True
        elif kind == "idle_expired":
            idle = [w for w in self.workers if w.idle_timer is not None and not self.queue]
            if idle:
                w = idle[pick % len(idle)]
                w.dead = True
                self.workers.remove(w)
        elif kind == "dead_in_list" and self.workers:
            # A worker let go of while a reply was on its way: it may still be listed.
            self.workers[pick % len(self.workers)].dead = True


EVENTS = st.tuples(st.sampled_from(["submit", "submit", "reply", "grant", "lease_failed",
                                    "close", "idle_expired", "dead_in_list"]),
                   st.integers(0, 50), st.booleans())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(EVENTS, st.sampled_from([1, 1, 2, 8])), max_size=80),
       st.integers(1, 12))
def test_no_history_breaks_the_invariants(history, max_pending):
    model = Model(max_pending)
    for (kind, pick, flag), depth in history:
        model.event(kind, pick, flag)
        model.pump(depth)
