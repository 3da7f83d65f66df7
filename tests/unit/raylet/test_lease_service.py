"""The lease service: the local lease manager's instructions carried out on a loop.

Replies reach the request that waits for them (and only that one), a burst of
dispatch requests in one loop turn runs one dispatch, and a delayed kill waits
for its timer.
"""
import asyncio

from ember.protocol import raylet as msg
from ember.raylet import lease_manager
from ember.raylet.fake_worker_pool import FakeWorkerPool
from ember.raylet.lease_manager import Lease, LocalLeaseManager
from ember.raylet.lease_service import LocalLeaseService
from ember.raylet.resources import NodeResources

from test_local_lease_manager import request


class CountingManager(LocalLeaseManager):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.dispatches = 0

    def dispatch(self) -> None:
        self.dispatches += 1
        super().dispatch()


def service(cpus: float = 1.0):
    """The service, its fake pool (wired as the raylet wires the real one), and its reports."""
    pool = FakeWorkerPool(on_worker_ready=lambda: leases.dispatch_soon(),
                          on_worker_dead=lambda handle: leases.worker_died(handle))
    manager = CountingManager(NodeResources({"CPU": cpus}), pool, max_starting=1)
    reports = []
    leases = LocalLeaseService(manager, pool.kill, lambda: reports.append(1))
    return leases, pool, reports


async def until(condition) -> None:
    """Wait for ``condition`` to hold (a hung test fails after a generous timeout)."""
    async def poll():
        while not condition():
            await asyncio.sleep(0.001)
    await asyncio.wait_for(poll(), 30)


def test_a_grant_resolves_the_waiting_request_and_reports_availability():
    async def main():
        leases, pool, reports = service()
        pool.add_idle(1)
        lease = Lease(request(1), owner_conn=None)
        with leases.waiting_for_reply(lease) as reply:
            leases.queue(lease)
            assert type(await reply) is msg.LeaseGranted
        assert reports and leases.debug_state()["awaiting_reply"] == 0
    asyncio.run(main())


def test_a_cancelled_request_does_not_answer_a_later_one_with_the_same_id():
    """A restarted GCS may ask again, with the same lease id, while its first ask waits."""
    async def main():
        leases, pool, _ = service()
        first, second = Lease(request(1), "old gcs"), Lease(request(1), "new gcs")
        with leases.waiting_for_reply(first) as first_reply, \
                leases.waiting_for_reply(second) as second_reply:
            leases.queue(first)
            leases.owner_gone("old gcs")
            assert type(await first_reply) is msg.LeaseCanceled
            leases.queue(second)
            assert not second_reply.done()
            pool.register()
            await until(second_reply.done)
            assert type(second_reply.result()) is msg.LeaseGranted
    asyncio.run(main())


def test_many_requests_to_dispatch_in_one_turn_run_one_dispatch():
    async def main():
        leases, _, _ = service()
        before = leases.manager.dispatches
        for _ in range(5):
            leases.dispatch_soon()
        await asyncio.sleep(0)
        assert leases.manager.dispatches == before + 1
    asyncio.run(main())


def test_a_worker_reported_failed_is_killed_when_its_grace_period_ends(monkeypatch):
    monkeypatch.setattr(lease_manager, "FAILED_WORKER_GRACE_S", 0.01)

    async def main():
        leases, pool, _ = service()
        pool.add_idle(1)
        lease = Lease(request(1), owner_conn=None)
        leases.queue(lease)
        leases.return_worker(lease.lease_id, worker_failed=True)
        assert pool.killed == []
        await until(lambda: pool.killed)
        assert pool.killed[0][:2] == (lease.worker, "its owner reported it failed")
    asyncio.run(main())
