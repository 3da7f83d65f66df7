"""The local lease manager with the fake worker pool: no processes and no event loop.

It grants workers as resources allow, keeps each key's order without blocking
other keys, lends a blocked worker's CPUs back, and tells the raylet whenever
the node's availability changes, since other nodes place their work by it.
Every lease and worker moves only along its state table.

The manager is driven by plain method calls, and what it asks for is read
from its instructions: :class:`Node` carries them out as the raylet's lease
service would, with the end of a loop turn being "now".
"""
import signal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ember.exceptions import IllegalTransition
from ember.protocol import raylet as msg
from ember.protocol.common import Address, DefaultScheduling
from ember.raylet.fake_worker_pool import FakeWorkerPool
from ember.raylet.lease_manager import (AVAILABILITY_CHANGED, DISPATCH_SOON,
                                        FAILED_WORKER_GRACE_S, KillAfter, Lease, LeaseState,
                                        LocalLeaseManager, Reply)
from ember.raylet.resources import NodeResources, to_fixed
from ember.raylet.worker_pool import WorkerState

OWNER = Address(b"n" * 28, "127.0.0.1", 1)


def request(i: int, cpus: float = 1.0, key: bytes = b"k", job: bytes = b"job",
            actor_id: bytes = b"") -> msg.RequestWorkerLease:
    return msg.RequestWorkerLease(i.to_bytes(16, "big"), job, {"CPU": cpus},
                                  DefaultScheduling(), f"f{i}", OWNER, scheduling_key=key,
                                  actor_id=actor_id)


class CheckedResources(NodeResources):
    """Node resources that fail the test if an allocation ever leaves less than nothing."""

    def allocate(self, request):
        allocation = super().allocate(request)
        if allocation is not None:
            assert all(amount >= 0 for amount in self.available.values()), self.available
        return allocation


class Node:
    """A manager over a fake pool, with its instructions carried out as the raylet would.

    ``replies``: every reply sent, per lease. ``reports``: the node's available
    CPUs at each availability report. ``kills_after``: the delayed kills asked for.
    """

    def __init__(self, cpus: float = 2, ports: int | None = None):
        self.pool = FakeWorkerPool(ports=ports, on_worker_ready=self._worker_ready,
                                   on_worker_dead=self._worker_dead)
        self.now = 0.0
        self.manager = LocalLeaseManager(CheckedResources({"CPU": cpus}), self.pool,
                                         max_starting=2, clock=lambda: self.now)
        self.replies: dict[Lease, list] = {}
        self.reports: list[float] = []
        self.kills_after: list[KillAfter] = []

    def _worker_ready(self) -> None:
        self.manager.dispatch_soon()
        self.run()

    def _worker_dead(self, handle) -> None:
        self.manager.worker_died(handle)
        self.run()

    def run(self) -> None:
        """Carry out every instruction; a DispatchSoon runs when the rest are done (the
        end of the loop turn), which may emit more."""
        while True:
            dispatch = False
            for instruction in self.manager.drain():
                if type(instruction) is Reply:
                    self.replies.setdefault(instruction.lease, []).append(instruction.reply)
                elif instruction is AVAILABILITY_CHANGED:
                    self.reports.append(self.cpus_available())
                elif instruction is DISPATCH_SOON:
                    dispatch = True
                elif type(instruction) is KillAfter:
                    self.kills_after.append(instruction)
                else:
                    raise AssertionError(f"unknown instruction {instruction!r}")
            if not dispatch:
                return
            self.manager.dispatch()

    def cpus_available(self) -> float:
        return self.manager.resources.as_floats("available").get("CPU", 0)

    def queue(self, *requests, conn=None) -> list[Lease]:
        leases = [Lease(req, owner_conn=conn) for req in requests]
        for lease in leases:
            self.manager.queue(lease)
        self.run()
        return leases

    def reply(self, lease: Lease):
        """The one reply ``lease`` got, or None."""
        self.run()
        replies = self.replies.get(lease, [])
        assert len(replies) <= 1, replies
        return replies[0] if replies else None

    def granted(self, leases) -> list[bool]:
        return [type(self.reply(lease)) is msg.LeaseGranted for lease in leases]

    def last_report(self) -> float:
        self.run()
        return self.reports[-1]


def test_requests_are_granted_in_order_as_workers_and_cpus_allow():
    node = Node()
    leases = node.queue(*(request(i) for i in range(3)))
    assert node.pool.num_starting() == 1      # one for the key's head, which waits for it
    node.pool.register()
    assert node.granted(leases) == [True, False, False] and node.pool.num_starting() == 1
    node.pool.register()
    assert node.granted(leases) == [True, True, False] and node.pool.num_starting() == 0
    assert [lease.state for lease in leases] == [
        LeaseState.GRANTED, LeaseState.GRANTED, LeaseState.QUEUED]
    node.manager.return_worker(leases[0].lease_id, worker_failed=False)
    assert node.granted(leases) == [True, True, True]   # the returned worker and CPU
    assert leases[2].worker is leases[0].worker


def test_one_keys_requests_keep_their_order_as_workers_register_one_by_one():
    node = Node()
    leases = node.queue(*(request(i, cpus=0.5) for i in range(4)))
    order = []
    for _ in range(4):
        node.pool.add_idle(1) if not node.pool.num_starting() else node.pool.register(1)
        order = [i for i, done in enumerate(node.granted(leases)) if done]
    assert order == [0, 1, 2, 3]
    assert [node.reply(lease).worker for lease in leases] == [
        lease.worker.address for lease in leases]


def test_a_request_that_does_not_fit_blocks_its_own_key_but_not_others():
    """No head-of-line blocking across keys; order within a key is kept."""
    node = Node()
    node.pool.add_idle(3)
    first = node.queue(request(1, cpus=1, key=b"a"))
    big, after_big = node.queue(request(2, cpus=2, key=b"big"), request(3, cpus=0.5, key=b"big"))
    small = node.queue(request(4, cpus=1, key=b"small"))
    assert node.granted(first + [big, after_big] + small) == [True, False, False, True]
    assert big.state is LeaseState.QUEUED and after_big.state is LeaseState.QUEUED
    node.manager.return_worker(first[0].lease_id, worker_failed=False)
    node.manager.return_worker(small[0].lease_id, worker_failed=False)
    assert node.granted([big, after_big]) == [True, False]


def test_a_request_holding_cpus_waits_for_a_worker_and_cannot_be_overtaken():
    node = Node()
    holder, other = node.queue(request(1, cpus=2, key=b"a"), request(2, key=b"b"))
    assert holder.state is LeaseState.WAITING_FOR_WORKER and node.last_report() == 0
    assert other.state is LeaseState.QUEUED
    node.pool.register()
    assert node.granted([holder, other]) == [True, False]


def test_cancelling_a_request_that_holds_cpus_reports_them_free():
    """Other nodes spill work here by these reports; a silent release hides a free node."""
    node = Node()
    lease, = node.queue(request(1))      # CPU allocated; waiting for a worker
    assert node.last_report() == 1.0
    assert node.manager.cancel(lease.lease_id)
    assert node.last_report() == 2.0
    assert type(node.reply(lease)) is msg.LeaseCanceled
    assert lease.state is LeaseState.CANCELED
    assert not node.manager.cancel(lease.lease_id)    # once only
    assert node.reply(lease) == msg.LeaseCanceled()   # and answered once only


def test_cancel_emits_the_reply_then_asks_for_one_dispatch():
    """The cancel answers at once; what it freed is granted at the end of the turn."""
    node = Node()
    node.pool.add_idle(1)
    holder, = node.queue(request(1, cpus=2, key=b"a"))
    queued, = node.queue(request(2, cpus=1, key=b"b"))
    node.run()
    assert node.manager.cancel(queued.lease_id)
    assert node.manager.drain() == [Reply(queued, msg.LeaseCanceled()), DISPATCH_SOON]
    assert queued.allocation is None


def test_a_granted_lease_cannot_be_cancelled_only_returned():
    node = Node()
    node.pool.add_idle(1)
    lease, = node.queue(request(1))
    assert not node.manager.cancel(lease.lease_id)
    assert lease.state is LeaseState.GRANTED
    assert node.manager.drain() == ()


def test_a_waiting_request_can_be_taken_back_unless_it_holds_resources():
    node = Node()
    holding = node.queue(request(0), request(1))
    waiting, = node.queue(request(9))
    assert node.manager.take_waiting(holding[0].lease_id) is None
    assert node.manager.take_waiting(waiting.lease_id) is waiting
    assert waiting.state is LeaseState.PENDING and node.reply(waiting) is None
    assert node.manager.debug_state()["queued"] == 2
    assert node.manager.take_waiting(waiting.lease_id) is None
    node.manager.queue(waiting)             # the cluster lease manager may queue it again
    assert waiting.state is LeaseState.QUEUED


@pytest.mark.parametrize("failed", [False, True])
def test_a_returned_worker_frees_its_cpus(failed):
    node = Node()
    node.pool.add_idle(1)
    lease, = node.queue(request(1, cpus=2))
    assert type(node.reply(lease)) is msg.LeaseGranted and node.last_report() == 0
    node.manager.return_worker(lease.lease_id, worker_failed=failed)
    assert node.last_report() == 2.0 and lease.state is LeaseState.RETURNED
    assert (node.pool.idle == [lease.worker]) is not failed
    reports = len(node.reports)
    node.manager.return_worker(lease.lease_id, worker_failed=failed)   # again: ignored
    node.run()
    assert len(node.reports) == reports and node.cpus_available() == 2.0


def test_a_worker_its_owner_reported_failed_is_killed_only_after_a_grace_period():
    """Its exit status, if it dies on its own meanwhile, says why; a kill now would hide it."""
    node = Node()
    node.pool.add_idle(1)
    lease, = node.queue(request(1))
    node.run()
    node.manager.return_worker(lease.lease_id, worker_failed=True)
    instructions = node.manager.drain()
    assert KillAfter(lease.worker, FAILED_WORKER_GRACE_S,
                     "its owner reported it failed") in instructions
    assert node.pool.killed == [] and lease.worker not in node.pool.idle


def test_an_actors_returned_worker_is_killed_at_once():
    node = Node()
    node.pool.add_idle(1)
    lease, = node.queue(request(1, actor_id=b"a" * 16))
    node.manager.return_worker(lease.lease_id, worker_failed=False)
    node.run()
    assert [(w, reason) for w, reason, _ in node.pool.killed] == [
        (lease.worker, "its actor ended")]
    assert node.kills_after == []


def test_dispatch_is_asked_for_once_until_it_runs():
    """Workers registering, bundles committing and cancels each ask for a dispatch; a
    burst of them in one loop turn costs one pass over the queues."""
    manager = LocalLeaseManager(NodeResources({"CPU": 1}), FakeWorkerPool(), max_starting=1)
    for _ in range(3):
        manager.dispatch_soon()
    assert manager.drain() == [DISPATCH_SOON]
    manager.dispatch_soon()
    assert manager.drain() == ()             # still scheduled: its dispatch has not run
    manager.dispatch()
    manager.dispatch_soon()
    assert manager.drain() == [DISPATCH_SOON]


def test_availability_is_reported_once_per_drain():
    node = Node(cpus=4)
    node.pool.add_idle(3)
    for i in range(3):
        node.manager.queue(Lease(request(i, key=bytes([i])), owner_conn=None))
    instructions = node.manager.drain()
    assert instructions.count(AVAILABILITY_CHANGED) == 1
    assert [type(i) for i in instructions].count(Reply) == 3


def test_a_blocked_worker_lends_its_cpus_and_takes_them_back_when_unblocked():
    """Without lending, a task that waits on its own children deadlocks a full node."""
    node = Node()
    node.pool.add_idle(2)
    parent, child = node.queue(request(1, cpus=2, key=b"p"), request(2, key=b"c"))
    assert node.granted([parent, child]) == [True, False]
    node.manager.blocked(parent.worker)
    assert node.granted([child]) == [True] and parent.lent
    node.manager.blocked(parent.worker)              # twice: lent once
    assert node.last_report() == 1.0
    node.manager.unblocked(parent.worker)            # takes them back, oversubscribed a while
    assert node.last_report() == -1.0 and not parent.lent
    node.manager.return_worker(child.lease_id, worker_failed=False)
    node.manager.blocked(parent.worker)              # returned while blocked: all comes back
    node.manager.return_worker(parent.lease_id, worker_failed=False)
    assert node.last_report() == 2.0


def test_when_the_owner_goes_its_queued_requests_are_cancelled_and_its_workers_stopped():
    node = Node()
    node.pool.add_idle(3)
    gone, stays = object(), object()
    task, actor = node.queue(request(1, cpus=0.5),
                             request(2, cpus=0.5, key=b"actor", actor_id=b"a" * 16), conn=gone)
    mine, = node.queue(request(3, cpus=0.5, key=b"other"), conn=stays)
    waiting, = node.queue(request(4, cpus=1, key=b"more"), conn=gone)
    assert node.granted([task, actor, mine, waiting]) == [True, True, True, False]
    node.manager.owner_gone(gone)
    assert type(node.reply(waiting)) is msg.LeaseCanceled
    assert [(w, sig) for w, _, sig in node.pool.killed] == [(task.worker, signal.SIGTERM)]
    assert task.state is LeaseState.RETURNED
    # An actor's lease is the GCS's: it outlives the connection (a GCS restart).
    assert actor.state is LeaseState.GRANTED and actor.lease_id in node.manager.granted
    assert mine.state is LeaseState.GRANTED
    assert node.last_report() == 1.0


def test_an_actors_lease_asked_for_again_is_granted_again_to_the_new_owner():
    """A restarted GCS asks again for the lease its previous self was granted."""
    node = Node()
    node.pool.add_idle(1)
    actor_request = request(1, actor_id=b"a" * 16)
    lease, = node.queue(actor_request, conn="old gcs")
    node.run()
    again = node.manager.regrant(actor_request, "new gcs")
    assert again == node.reply(lease) and lease.owner_conn == "new gcs"
    assert node.manager.regrant(request(2, actor_id=b"a" * 16), "new gcs") is None
    assert node.manager.drain() == ()


def test_a_dead_workers_lease_frees_its_cpus_for_the_next_request():
    node = Node()
    node.pool.add_idle(1)
    first, second = node.queue(request(1, cpus=2), request(2, cpus=2))
    node.pool.die(first.worker)
    assert first.state is LeaseState.RETURNED and first.worker.state is WorkerState.DEAD
    assert second.state is LeaseState.WAITING_FOR_WORKER   # a new worker starts for it
    node.pool.register()
    assert node.granted([second]) == [True]
    node.manager.return_worker(first.lease_id, worker_failed=True)  # the owner's late report
    node.pool.push(first.worker)                                    # the dead stay dead
    assert first.worker not in node.pool.idle


def test_requests_fail_naming_the_range_when_no_worker_port_is_left():
    node = Node(ports=0)
    lease, = node.queue(request(1))
    reply = node.reply(lease)
    assert type(reply) is msg.LeaseFailed and lease.state is LeaseState.FAILED
    assert reply.message == "f1 cannot run: no port is free in the fake pool's range"
    assert node.last_report() == 2.0


def test_a_grant_is_stamped_with_the_managers_clock():
    """The memory monitor kills the newest grant first."""
    node = Node()
    node.pool.add_idle(2)
    node.now = 5.0
    early, = node.queue(request(1, key=b"a"))
    node.now = 7.0
    late, = node.queue(request(2, key=b"b"))
    assert (early.granted_at, late.granted_at) == (5.0, 7.0)


def test_an_illegal_lease_move_names_the_lease_and_both_states():
    lease = Lease(request(1), owner_conn=None)
    with pytest.raises(IllegalTransition, match=(
            f"lease {lease.lease_id.hex()} \\(f1\\): illegal state transition "
            "PENDING -> GRANTED")):
        lease.transition(LeaseState.GRANTED)
    assert lease.state is LeaseState.PENDING


def test_an_illegal_worker_move_names_the_worker_and_both_states():
    pool = FakeWorkerPool()
    worker = pool.start_worker()
    with pytest.raises(IllegalTransition, match="illegal state transition STARTING -> LEASED"):
        worker.transition(WorkerState.LEASED)
    pool.register()
    pool.die(worker)
    with pytest.raises(IllegalTransition, match=f"worker {worker.worker_id.hex()} "):
        worker.transition(WorkerState.IDLE)


# --- random sequences of events ------------------------------------------------------

#: The reply each state has had by now: one, or none while the lease still waits.
_REPLY_OF_STATE = {
    LeaseState.QUEUED: None, LeaseState.WAITING_FOR_WORKER: None,
    LeaseState.GRANTED: msg.LeaseGranted, LeaseState.RETURNED: msg.LeaseGranted,
    LeaseState.CANCELED: msg.LeaseCanceled, LeaseState.FAILED: msg.LeaseFailed,
}
_ENDED = (LeaseState.RETURNED, LeaseState.CANCELED, LeaseState.FAILED)
_CONNS = ("owner 0", "owner 1", "owner 2")

_events = st.lists(st.one_of(
    st.tuples(st.just("queue"), st.sampled_from([0.5, 1.0, 2.0, 3.0]),
              st.sampled_from([b"a", b"b", b"c"]), st.sampled_from([b"j1", b"j2"]),
              st.integers(0, len(_CONNS) - 1), st.booleans()),
    st.tuples(st.just("cancel"), st.integers(0, 40)),
    st.tuples(st.just("return"), st.integers(0, 40), st.booleans()),
    st.tuples(st.just("die"), st.integers(0, 40)),
    st.tuples(st.just("blocked"), st.integers(0, 40)),
    st.tuples(st.just("unblocked"), st.integers(0, 40)),
    st.tuples(st.just("register"), st.integers(1, 3)),
    st.tuples(st.just("owner_gone"), st.integers(0, len(_CONNS) - 1)),
    st.tuples(st.just("dispatch_soon")),
), max_size=60)


def _pick(items: list, index: int):
    return items[index % len(items)] if items else None


def _apply(node: Node, leases: list[Lease], event: tuple) -> None:
    manager, pool = node.manager, node.pool
    name, args = event[0], event[1:]
    with_worker = [lease.worker for lease in leases if lease.worker is not None]
    if name == "queue":
        cpus, key, job, conn, actor = args
        lease = Lease(request(len(leases), cpus, key=key, job=job,
                              actor_id=b"a" * 16 if actor else b""), _CONNS[conn])
        leases.append(lease)
        manager.queue(lease)
    elif name == "cancel":
        lease = _pick(leases, args[0])
        if lease is not None:
            manager.cancel(lease.lease_id)
    elif name == "return":
        lease = _pick(leases, args[0])
        if lease is not None:
            manager.return_worker(lease.lease_id, worker_failed=args[1])
    elif name == "die":
        alive = [w for w in pool.workers.values() if w.state is not WorkerState.DEAD]
        worker = _pick(alive, args[0])
        if worker is not None:
            pool.die(worker)
    elif name == "blocked":
        worker = _pick(with_worker, args[0])
        if worker is not None:
            manager.blocked(worker)
    elif name == "unblocked":
        worker = _pick(with_worker, args[0])
        if worker is not None:
            manager.unblocked(worker)
    elif name == "register":
        pool.register(args[0])
    elif name == "owner_gone":
        manager.owner_gone(_CONNS[args[0]])
    else:
        manager.dispatch_soon()
    node.run()


def _check(node: Node, leases: list[Lease]) -> None:
    resources = node.manager.resources
    held = sum(lease.allocation.amounts.get("CPU", 0) - lease.lent
               for lease in leases if lease.allocation is not None)
    # Every unit is either available or held by exactly one live lease.
    assert resources.available["CPU"] + held == resources.total["CPU"]
    assert set(node.manager.granted.values()) == {
        lease for lease in leases if lease.state is LeaseState.GRANTED}
    for lease in leases:
        replies = [type(reply) for reply in node.replies.get(lease, [])]
        expected = _REPLY_OF_STATE[lease.state]
        assert replies == ([] if expected is None else [expected]), (lease.state, replies)
        if lease.state in _ENDED:
            assert lease.allocation is None and lease.lent == 0


@settings(max_examples=300, deadline=None)
@given(events=_events, ports=st.one_of(st.none(), st.integers(0, 4)))
def test_random_events_never_overallocate_and_answer_every_lease_once(events, ports):
    """Whatever the order of events: an allocation never takes more than is free (see
    CheckedResources), each lease is answered exactly once and by its state, and a
    lease that ends gives all it held back."""
    node = Node(cpus=2, ports=ports)
    leases: list[Lease] = []
    for event in events:
        _apply(node, leases, event)
        _check(node, leases)
    # Wind down: every owner goes, every worker dies; then all is free and answered.
    for conn in _CONNS:
        node.manager.owner_gone(conn)
    for lease in leases:
        node.manager.cancel(lease.lease_id)
    for worker in list(node.pool.workers.values()):
        if worker.state is not WorkerState.DEAD:
            node.pool.die(worker)
    node.run()
    _check(node, leases)
    assert all(lease.state in _ENDED for lease in leases)
    assert node.manager.resources.available["CPU"] == to_fixed(2)
