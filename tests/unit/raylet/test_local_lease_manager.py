"""The local lease manager with a fake worker pool: no processes.

It grants workers as resources allow, keeps each key's order, and tells the
raylet whenever the node's availability changes, since other nodes place
their work by it.
"""
import asyncio

import pytest

from ember.protocol import raylet as msg
from ember.protocol.common import Address, DefaultScheduling
from ember.raylet.lease_manager import Lease, LocalLeaseManager
from ember.raylet.resources import NodeResources

OWNER = Address(b"n" * 28, "127.0.0.1", 1)


class FakeWorker:
    def __init__(self, n: int):
        self.worker_id = bytes([n]) * 28
        self.address = Address(b"n" * 28, "127.0.0.1", 1000 + n)
        self.pid = 1000 + n
        self.lease = None
        self.actor_id = b""
        self.lease_key = bytes([n]) * 32


class FakePool:
    """Idle workers on demand: ``ready`` of them can be popped."""

    def __init__(self, ready: int = 0):
        self.ready = [FakeWorker(i) for i in range(ready)]
        self.started = 0
        self.killed = []

    def pop(self, job_id):
        return self.ready.pop() if self.ready else None

    def push(self, worker):
        self.ready.append(worker)

    def num_starting(self):
        return self.started

    def start_worker(self):
        self.started += 1

    def kill(self, worker, reason):
        self.killed.append((worker, reason))


def request(i: int, cpus: float = 1.0, key: bytes = b"k") -> msg.RequestWorkerLease:
    return msg.RequestWorkerLease(bytes([i]) * 16, b"job", {"CPU": cpus}, DefaultScheduling(),
                                  f"f{i}", OWNER, scheduling_key=key)


def run(test):
    """Run ``test(manager, pool, changes)`` inside an event loop (leases hold futures)."""
    async def main():
        pool = FakePool()
        changes = []
        manager = LocalLeaseManager(NodeResources({"CPU": 2}), pool, max_starting=2,
                                    on_resources_changed=lambda: changes.append(
                                        manager.resources.as_floats("available").get("CPU", 0)))
        await test(manager, pool, changes)
    asyncio.run(main())


def test_requests_are_granted_in_order_as_workers_and_cpus_allow():
    async def test(manager, pool, changes):
        leases = [Lease(request(i), owner_conn=None) for i in range(3)]
        for lease in leases:
            manager.queue(lease)
        assert pool.started >= 1            # no idle worker: one is started
        pool.ready = [FakeWorker(1), FakeWorker(2)]
        manager.dispatch()
        assert [lease.future.done() for lease in leases] == [True, True, False]
        assert type(leases[0].future.result()) is msg.LeaseGranted
        manager.return_worker(leases[0].lease_id, worker_failed=False)
        assert leases[2].future.done()      # the returned worker and CPU serve the third
    run(test)


def test_cancelling_a_request_that_holds_cpus_reports_them_free():
    """Other nodes spill work here by these reports; a silent release hides a free node."""
    async def test(manager, pool, changes):
        lease = Lease(request(1), owner_conn=None)
        manager.queue(lease)                # CPU allocated; waiting for a worker
        assert changes[-1] == 1.0
        assert manager.cancel(lease.lease_id)
        assert changes[-1] == 2.0
        assert type(lease.future.result()) is msg.LeaseCanceled
    run(test)


def test_a_waiting_request_can_be_taken_back_unless_it_holds_resources():
    async def test(manager, pool, changes):
        holding = [Lease(request(i), owner_conn=None) for i in range(2)]
        waiting = Lease(request(9), owner_conn=None)
        for lease in holding + [waiting]:
            manager.queue(lease)
        assert manager.take_waiting(holding[0].lease_id) is None
        assert manager.take_waiting(waiting.lease_id) is waiting
        assert manager.debug_state()["queued"] == 2
        assert manager.take_waiting(waiting.lease_id) is None
    run(test)


@pytest.mark.parametrize("failed", [False, True])
def test_a_returned_worker_frees_its_cpus(failed):
    async def test(manager, pool, changes):
        pool.ready = [FakeWorker(1)]
        lease = Lease(request(1, cpus=2), owner_conn=None)
        manager.queue(lease)
        assert type(lease.future.result()) is msg.LeaseGranted and changes[-1] == 0
        manager.return_worker(lease.lease_id, worker_failed=failed)
        assert changes[-1] == 2.0
        assert (pool.ready == [lease.worker]) is not failed
    run(test)
