"""The cluster lease manager with fakes: where a raylet sends each lease request.

No processes: the local lease manager runs over a fake worker pool, other
nodes are entries in the view, and their reports are the GCS's broadcasts.
"""
import asyncio

from ember.protocol import gcs as gcs_msg
from ember.protocol import raylet as msg
from ember.protocol.common import Address, DefaultScheduling
from ember.raylet.cluster_lease_manager import ClusterLeaseManager
from ember.raylet.fake_worker_pool import FakeWorkerPool
from ember.raylet.lease_manager import LocalLeaseManager
from ember.raylet.lease_service import LocalLeaseService
from ember.raylet.placement_groups import BundleManager
from ember.raylet.resources import NodeResources

HERE = b"h" * 28


def node(i: int) -> bytes:
    return bytes([i]) * 28


def info(i: int, cpus: float, alive: bool = True) -> gcs_msg.NodeInfo:
    return gcs_msg.NodeInfo(node_id=node(i), ip="127.0.0.1", hostname="h",
                            raylet=Address(node(i), "127.0.0.1", 1000 + i),
                            resources_total={"CPU": cpus}, alive=alive)


def request(i: int, cpus: float = 1.0, grant_or_reject=False) -> msg.RequestWorkerLease:
    return msg.RequestWorkerLease(bytes([i]) * 16, b"job", {"CPU": cpus}, DefaultScheduling(),
                                  f"task {i}", Address(HERE, "127.0.0.1", 1),
                                  grant_or_reject=grant_or_reject)


def run(test, cpus: float = 1.0):
    async def main():
        resources = NodeResources({"CPU": cpus})
        pool = FakeWorkerPool()
        local = LocalLeaseService(LocalLeaseManager(resources, pool, 1), pool.kill,
                                  on_availability_changed=lambda: None)
        published = []
        manager = ClusterLeaseManager(HERE, resources, {}, local,
                                      BundleManager(resources, local, lambda: None),
                                      published.append, lambda: None)
        manager.local_address(Address(HERE, "127.0.0.1", 1))
        await test(manager, local, published)
    asyncio.run(main())


async def answer(manager, req, timeout=0.05):
    """The reply, or None if the request waits (queued here or infeasible)."""
    task = asyncio.ensure_future(manager.request(req, conn=None))
    done, _ = await asyncio.wait([task], timeout=timeout)
    return task.result() if done else None


def test_a_full_node_spills_a_burst_to_every_free_node_once():
    async def test(manager, local, published):
        for i in (1, 2, 3):
            manager.node_changed(info(i, 1))
        assert await answer(manager, request(0)) is None   # it fits here: queued locally
        targets = [(await answer(manager, request(i))).retry_at.node_id for i in (1, 2, 3)]
        assert sorted(targets) == [node(1), node(2), node(3)]
        assert await answer(manager, request(9)) is None   # nothing free: waits here
    run(test)


def test_a_spilled_request_that_does_not_fit_is_rejected_not_queued():
    async def test(manager, local, published):
        assert await answer(manager, request(0)) is None
        reply = await answer(manager, request(1, grant_or_reject=True))
        assert type(reply) is msg.LeaseRejected
        assert local.manager.debug_state()["queued"] == 1
    run(test)


def test_a_waiting_request_moves_to_a_node_that_reports_free_cpus():
    async def test(manager, local, published):
        manager.node_changed(info(1, 1))
        manager.resources_reported(gcs_msg.ResourcesChanged({node(1): {}}))  # node 1 busy
        await answer(manager, request(0))                # takes this node's CPU
        waiting = asyncio.ensure_future(manager.request(request(1), conn=None))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        manager.resources_reported(gcs_msg.ResourcesChanged({node(1): {"CPU": 1.0}}))
        reply = await asyncio.wait_for(waiting, 1)
        assert type(reply) is msg.LeaseSpillback and reply.retry_at.node_id == node(1)
    run(test)


def test_an_infeasible_request_warns_then_runs_when_a_node_that_fits_joins():
    async def test(manager, local, published):
        waiting = asyncio.ensure_future(manager.request(request(1, cpus=4), conn=None))
        await asyncio.sleep(0.01)
        assert manager.demand() == [{"CPU": 4.0}]
        warning = published[-1].info
        assert "requires {'CPU': 4" in warning.message and warning.kind == "infeasible"
        assert "cluster totals {'CPU': 1.0}" in warning.message
        manager.node_changed(info(2, 8))
        reply = await asyncio.wait_for(waiting, 1)
        assert reply.retry_at.node_id == node(2) and manager.demand() == []
    run(test)


def test_cancelling_an_infeasible_request_answers_it():
    async def test(manager, local, published):
        waiting = asyncio.ensure_future(manager.request(request(1, cpus=4), conn=None))
        await asyncio.sleep(0.01)
        assert manager.cancel(request(1).lease_id)
        assert type(await waiting) is msg.LeaseCanceled
    run(test)


def test_a_dead_node_gets_no_more_work():
    async def test(manager, local, published):
        manager.node_changed(info(1, 1))
        manager.node_changed(info(1, 1, alive=False))
        await answer(manager, request(0))
        assert await answer(manager, request(1)) is None   # queued here, not spilled
    run(test)


def test_demand_by_shape_counts_queued_and_infeasible_requests_for_the_autoscaler():
    async def test(manager, local, published):
        assert manager.demand_by_shape() == []
        for i in range(3):
            assert await answer(manager, request(i, cpus=1.0)) is None  # queued here
        for i in range(3, 5):
            assert await answer(manager, request(i, cpus=8.0)) is None  # infeasible
        demand = {(tuple(d.shape.items()), d.infeasible): d.count
                  for d in manager.demand_by_shape()}
        # The first 1-CPU request holds the CPU (waiting for a worker): not demand.
        assert demand == {((("CPU", 1.0),), False): 2, ((("CPU", 8.0),), True): 2}
        manager.node_changed(info(1, 8))  # a node that fits joins: nothing infeasible
        demand = {(tuple(d.shape.items()), d.infeasible): d.count
                  for d in manager.demand_by_shape()}
        assert ((("CPU", 8.0),), True) not in demand
    run(test)


def test_a_draining_node_is_sent_no_work():
    async def test(manager, local, published):
        manager.node_changed(info(1, 4))
        draining = info(1, 4)
        draining.draining = True
        manager.node_changed(draining)
        assert await answer(manager, request(0, cpus=1.0)) is None  # fits here
        reply = await answer(manager, request(1, cpus=2.0))
        assert reply is None  # would have gone to node 1: infeasible while it drains
        manager.node_changed(info(1, 4))  # back in service: the request goes there
        assert manager.demand_by_shape() == []
    run(test)
