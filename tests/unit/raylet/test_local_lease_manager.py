"""The local lease manager with the fake worker pool: no processes.

It grants workers as resources allow, keeps each key's order without blocking
other keys, lends a blocked worker's CPUs back, and tells the raylet whenever
the node's availability changes, since other nodes place their work by it.
Every lease and worker moves only along its state table.
"""
import asyncio
import signal

import pytest

from ember.exceptions import IllegalTransition
from ember.protocol import raylet as msg
from ember.protocol.common import Address, DefaultScheduling
from ember.raylet.fake_worker_pool import FakeWorkerPool
from ember.raylet.lease_manager import Lease, LeaseState, LocalLeaseManager
from ember.raylet.resources import NodeResources
from ember.raylet.worker_pool import WorkerState

OWNER = Address(b"n" * 28, "127.0.0.1", 1)

#: The name test_cluster_lease_manager.py imports the fake pool by.
FakePool = FakeWorkerPool


def request(i: int, cpus: float = 1.0, key: bytes = b"k", job: bytes = b"job",
            actor_id: bytes = b"") -> msg.RequestWorkerLease:
    return msg.RequestWorkerLease(bytes([i]) * 16, job, {"CPU": cpus}, DefaultScheduling(),
                                  f"f{i}", OWNER, scheduling_key=key, actor_id=actor_id)


def run(test, cpus: float = 2, ports: int | None = None):
    """Run ``test(manager, pool, changes)`` inside an event loop (leases hold futures).

    ``changes``: the node's available CPUs at each report the manager made.
    """
    async def main():
        changes = []
        pool = FakeWorkerPool(ports=ports)
        manager = LocalLeaseManager(NodeResources({"CPU": cpus}), pool, max_starting=2,
                                    on_resources_changed=lambda: changes.append(
                                        manager.resources.as_floats("available").get("CPU", 0)))
        pool._on_worker_ready = manager.dispatch
        pool._on_worker_dead = manager.worker_died
        await test(manager, pool, changes)
    asyncio.run(main())


def queue(manager, *requests, conn=None) -> list[Lease]:
    leases = [Lease(req, owner_conn=conn) for req in requests]
    for lease in leases:
        manager.queue(lease)
    return leases


def granted(leases) -> list[bool]:
    return [lease.future.done() and type(lease.future.result()) is msg.LeaseGranted
            for lease in leases]


def test_requests_are_granted_in_order_as_workers_and_cpus_allow():
    async def test(manager, pool, changes):
        leases = queue(manager, *(request(i) for i in range(3)))
        assert pool.num_starting() == 1      # one for the key's head, which waits for it
        pool.register()
        assert granted(leases) == [True, False, False] and pool.num_starting() == 1
        pool.register()
        assert granted(leases) == [True, True, False] and pool.num_starting() == 0
        assert [lease.state for lease in leases] == [
            LeaseState.GRANTED, LeaseState.GRANTED, LeaseState.QUEUED]
        manager.return_worker(leases[0].lease_id, worker_failed=False)
        assert granted(leases) == [True, True, True]   # the returned worker and CPU
        assert leases[2].worker is leases[0].worker
    run(test)


def test_one_keys_requests_keep_their_order_as_workers_register_one_by_one():
    async def test(manager, pool, changes):
        leases = queue(manager, *(request(i, cpus=0.5) for i in range(4)))
        order = []
        for _ in range(4):
            pool.add_idle(1) if not pool.num_starting() else pool.register(1)
            order = [i for i, done in enumerate(granted(leases)) if done]
        assert order == [0, 1, 2, 3]
        assert [lease.future.result().worker for lease in leases] == [
            lease.worker.address for lease in leases]
    run(test)


def test_a_request_that_does_not_fit_blocks_its_own_key_but_not_others():
    """No head-of-line blocking across keys; order within a key is kept."""
    async def test(manager, pool, changes):
        pool.add_idle(3)
        first = queue(manager, request(1, cpus=1, key=b"a"))
        big, after_big = queue(manager, request(2, cpus=2, key=b"big"),
                               request(3, cpus=0.5, key=b"big"))
        small = queue(manager, request(4, cpus=1, key=b"small"))
        assert granted(first + [big, after_big] + small) == [True, False, False, True]
        assert big.state is LeaseState.QUEUED and after_big.state is LeaseState.QUEUED
        manager.return_worker(first[0].lease_id, worker_failed=False)
        manager.return_worker(small[0].lease_id, worker_failed=False)
        assert granted([big, after_big]) == [True, False]
    run(test)


def test_a_request_holding_cpus_waits_for_a_worker_and_cannot_be_overtaken():
    async def test(manager, pool, changes):
        holder, other = queue(manager, request(1, cpus=2, key=b"a"), request(2, key=b"b"))
        assert holder.state is LeaseState.WAITING_FOR_WORKER and changes[-1] == 0
        assert other.state is LeaseState.QUEUED
        pool.register()
        assert granted([holder, other]) == [True, False]
    run(test)


def test_cancelling_a_request_that_holds_cpus_reports_them_free():
    """Other nodes spill work here by these reports; a silent release hides a free node."""
    async def test(manager, pool, changes):
        lease, = queue(manager, request(1))      # CPU allocated; waiting for a worker
        assert changes[-1] == 1.0
        assert manager.cancel(lease.lease_id)
        assert changes[-1] == 2.0
        assert type(lease.future.result()) is msg.LeaseCanceled
        assert lease.state is LeaseState.CANCELED
        assert not manager.cancel(lease.lease_id)    # once only
    run(test)


def test_a_granted_lease_cannot_be_cancelled_only_returned():
    async def test(manager, pool, changes):
        pool.add_idle(1)
        lease, = queue(manager, request(1))
        assert not manager.cancel(lease.lease_id)
        assert lease.state is LeaseState.GRANTED
    run(test)


def test_a_waiting_request_can_be_taken_back_unless_it_holds_resources():
    async def test(manager, pool, changes):
        holding = queue(manager, request(0), request(1))
        waiting, = queue(manager, request(9))
        assert manager.take_waiting(holding[0].lease_id) is None
        assert manager.take_waiting(waiting.lease_id) is waiting
        assert waiting.state is LeaseState.PENDING and not waiting.future.done()
        assert manager.debug_state()["queued"] == 2
        assert manager.take_waiting(waiting.lease_id) is None
        manager.queue(waiting)                   # the cluster lease manager may queue it again
        assert waiting.state is LeaseState.QUEUED
    run(test)


@pytest.mark.parametrize("failed", [False, True])
def test_a_returned_worker_frees_its_cpus(failed):
    async def test(manager, pool, changes):
        pool.add_idle(1)
        lease, = queue(manager, request(1, cpus=2))
        assert type(lease.future.result()) is msg.LeaseGranted and changes[-1] == 0
        manager.return_worker(lease.lease_id, worker_failed=failed)
        assert changes[-1] == 2.0 and lease.state is LeaseState.RETURNED
        assert (pool.idle == [lease.worker]) is not failed
        manager.return_worker(lease.lease_id, worker_failed=failed)   # again: ignored
        assert changes[-1] == 2.0
    run(test)


def test_a_blocked_worker_lends_its_cpus_and_takes_them_back_when_unblocked():
    """Without lending, a task that waits on its own children deadlocks a full node."""
    async def test(manager, pool, changes):
        pool.add_idle(2)
        parent, child = queue(manager, request(1, cpus=2, key=b"p"), request(2, key=b"c"))
        assert granted([parent, child]) == [True, False]
        manager.blocked(parent.worker)
        assert granted([child]) == [True] and parent.lent
        manager.blocked(parent.worker)              # twice: lent once
        assert changes[-1] == 1.0
        manager.unblocked(parent.worker)            # takes them back, oversubscribed a while
        assert changes[-1] == -1.0 and not parent.lent
        manager.return_worker(child.lease_id, worker_failed=False)
        manager.blocked(parent.worker)              # returned while blocked: all comes back
        manager.return_worker(parent.lease_id, worker_failed=False)
        assert changes[-1] == 2.0
    run(test)


def test_when_the_owner_goes_its_queued_requests_are_cancelled_and_its_workers_stopped():
    async def test(manager, pool, changes):
        pool.add_idle(3)
        gone, stays = object(), object()
        task, actor = queue(manager, request(1, cpus=0.5),
                            request(2, cpus=0.5, key=b"actor", actor_id=b"a" * 16), conn=gone)
        mine, = queue(manager, request(3, cpus=0.5, key=b"other"), conn=stays)
        waiting, = queue(manager, request(4, cpus=1, key=b"more"), conn=gone)
        assert granted([task, actor, mine, waiting]) == [True, True, True, False]
        manager.owner_gone(gone)
        assert type(waiting.future.result()) is msg.LeaseCanceled
        assert [(w, sig) for w, _, sig in pool.killed] == [(task.worker, signal.SIGTERM)]
        assert task.state is LeaseState.RETURNED
        # An actor's lease is the GCS's: it outlives the connection (a GCS restart).
        assert actor.state is LeaseState.GRANTED and actor.lease_id in manager.granted
        assert mine.state is LeaseState.GRANTED
        assert changes[-1] == 1.0
    run(test)


def test_a_dead_workers_lease_frees_its_cpus_for_the_next_request():
    async def test(manager, pool, changes):
        pool.add_idle(1)
        first, second = queue(manager, request(1, cpus=2), request(2, cpus=2))
        pool.die(first.worker)
        assert first.state is LeaseState.RETURNED and first.worker.state is WorkerState.DEAD
        assert second.state is LeaseState.WAITING_FOR_WORKER   # a new worker starts for it
        pool.register()
        assert granted([second]) == [True]
        manager.return_worker(first.lease_id, worker_failed=True)  # the owner's late report
        pool.push(first.worker)                                    # the dead stay dead
        assert first.worker not in pool.idle
    run(test)


def test_requests_fail_naming_the_range_when_no_worker_port_is_left():
    async def test(manager, pool, changes):
        lease, = queue(manager, request(1))
        reply = lease.future.result()
        assert type(reply) is msg.LeaseFailed and lease.state is LeaseState.FAILED
        assert reply.message == "f1 cannot run: no port is free in the fake pool's range"
        assert changes[-1] == 2.0
    run(test, ports=0)


def test_an_illegal_lease_move_names_the_lease_and_both_states():
    async def test(manager, pool, changes):
        lease = Lease(request(1), owner_conn=None)
        with pytest.raises(IllegalTransition, match=(
                f"lease {lease.lease_id.hex()} \\(f1\\): illegal state transition "
                "PENDING -> GRANTED")):
            lease.transition(LeaseState.GRANTED)
        assert lease.state is LeaseState.PENDING
    run(test)


def test_an_illegal_worker_move_names_the_worker_and_both_states():
    pool = FakeWorkerPool()
    worker = pool.start_worker()
    with pytest.raises(IllegalTransition, match="illegal state transition STARTING -> LEASED"):
        worker.transition(WorkerState.LEASED)
    pool.register()
    pool.die(worker)
    with pytest.raises(IllegalTransition, match=f"worker {worker.worker_id.hex()} "):
        worker.transition(WorkerState.IDLE)
