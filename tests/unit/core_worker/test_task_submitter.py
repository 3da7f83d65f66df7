"""The normal task submitter, driven through a fake node (core_worker/fake_node.py).

A real NormalTaskSubmitter with its real light collaborators (memory store,
reference counter, dependency resolver, lineage, ownership) talks over
in-process connections to a raylet and workers that are calls in this
process. No processes, no sockets; every wait is for a state, a loop turn at
a time.
"""
import asyncio
import threading
import types

import pytest

from ember.config import config
from ember.core_worker.dependency_resolver import DependencyResolver
from ember.core_worker.fake_node import FakeNode
from ember.core_worker.lineage import Lineage
from ember.core_worker.memory_store import MemoryStore
from ember.core_worker.ownership import Ownership
from ember.core_worker.process_info import LocalNode, ProcessInfo
from ember.core_worker.reference_counter import ReferenceCounter
from ember.core_worker.serialization import deserialize
from ember.core_worker.task_events import TaskEventBuffer
from ember.core_worker.task_submitter import NormalTaskSubmitter, PendingTask, SchedulingKey
from ember.exceptions import TaskCancelledError, WorkerCrashedError
from ember.ids import object_id_for_return
from ember.protocol import core_worker as cw
from ember.protocol import raylet as rl
from ember.protocol.common import Address, DefaultScheduling

NODE_ID = b"n" * 28
OWNER = Address(NODE_ID, "127.0.0.1", 6000, worker_id=b"o" * 28)
KEY = SchedulingKey.make(b"f" * 28, (("CPU", 1.0),), DefaultScheduling(), b"job", "f")


class Owner:
    """A submitter wired as the core worker wires it, to a fake node."""

    def __init__(self, node: FakeNode):
        loop = asyncio.get_running_loop()
        io = types.SimpleNamespace(loop=loop, post=loop.call_soon)
        info = ProcessInfo(OWNER.worker_id, NODE_ID, "127.0.0.1", True, "/tmp", address=OWNER)
        lock = threading.RLock()
        self.node = node
        self.store = MemoryStore(lock)
        self.references = ReferenceCounter(lock, self.store, OWNER.worker_id)
        functions = types.SimpleNamespace(export_marker=lambda function_id: None)
        dependencies = DependencyResolver(io, self.store, functions, info)
        lineage = Lineage(self.store, self.references, dead_nodes=None)
        ownership = Ownership(io, info, self.store, self.references, node.peers, lineage, {})
        # No object directory: it serves data locality only, and these tasks take no refs.
        self.submitter = NormalTaskSubmitter(
            io, info, LocalNode(raylet=node.connect_raylet()), node.peers, self.store,
            self.references, dependencies, ownership, None, lineage)
        self.submitter.task_events = TaskEventBuffer()
        self._n = 0

    def submit(self, max_retries: int = 0, max_calls: int = 0) -> PendingTask:
        self._n += 1
        task_id = self._n.to_bytes(24, "big")
        spec = cw.TaskSpec(task_id, b"job", KEY.function_id, "f", [], [], 1, OWNER,
                           {"CPU": 1.0}, max_retries=max_retries, max_calls=max_calls)
        return_id = object_id_for_return(task_id, 0)
        self.references.add_local_ref(return_id, None)
        task = PendingTask(spec, [return_id], None, KEY)
        self.submitter.submit(task)
        return task

    def done(self, task: PendingTask) -> bool:
        return self.store.contains(task.return_ids[0])

    def result(self, task: PendingTask):
        return deserialize(self.store.get(task.return_ids[0]))


async def until(condition, turns: int = 10_000) -> None:
    """Run the loop until ``condition()`` holds; fail if it never does."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


def run(test):
    return asyncio.run(test())


async def running(owner: Owner, **options):
    """Submit a task and wait until a worker runs it (holding its reply): (task, worker)."""
    task = owner.submit(**options)
    await until(lambda: any(w.held for w in owner.node.live_workers()))
    (worker,) = [w for w in owner.node.live_workers() if w.held]
    return task, worker


async def finish(owner: Owner, tasks: list) -> None:
    """Let every worker reply, until ``tasks`` are done."""
    while not all(owner.done(t) for t in tasks):
        for w in owner.node.live_workers():
            w.release()
        await asyncio.sleep(0)


def test_tasks_complete_with_their_workers_returns():
    async def test():
        owner = Owner(FakeNode())
        tasks = [owner.submit() for _ in range(5)]
        await until(lambda: all(owner.done(t) for t in tasks))
        assert [owner.result(t) for t in tasks] == ["f"] * 5
        assert owner.submitter.tasks == {}
    run(test)


def test_short_tasks_are_pipelined_up_to_the_depth_and_no_further():
    async def test():
        node = FakeNode(grant_leases=False, hold_replies=True)
        owner = Owner(node)
        first = owner.submit()
        await until(lambda: len(node.waiting) == 1)
        (worker,) = node.grant(1)
        await until(lambda: len(worker.held) == 1)
        rest = [owner.submit() for _ in range(20)]
        # Until a task of the key has finished, its tasks may be long: one at a time.
        await until(lambda: len(node.waiting) == config.max_pending_lease_requests)
        assert len(worker.held) == 1
        worker.release()  # the first reply shows the tasks are short
        depth = config.max_tasks_in_flight_per_worker
        await until(lambda: owner.done(first) and len(worker.held) == depth)
        for _ in range(100):  # and it stays at the depth
            await asyncio.sleep(0)
        assert worker.max_in_flight == depth and len(worker.held) == depth
        node.grant(len(node.waiting))
        await finish(owner, rest)
        assert max(w.max_in_flight for w in node.workers.values()) == depth
    run(test)


def test_a_task_whose_worker_dies_is_retried_on_another_worker():
    async def test():
        node = FakeNode(hold_replies=True)
        owner = Owner(node)
        task, first = await running(owner, max_retries=1)
        first.die()
        await until(lambda: len(node.live_workers()) == 1 and node.live_workers()[0].held)
        (second,) = node.live_workers()
        assert second is not first and second.held[0].attempt == 1
        second.release()
        await until(lambda: owner.done(task))
        assert owner.result(task) == "f"
        # The dead worker's lease went back marked failed, so the raylet lends it no more.
        assert [r for r in node.returned if r.lease_id == first.lease_id] == [
            rl.ReturnWorker(first.lease_id, worker_failed=True)]
    run(test)


def test_a_task_out_of_retries_fails_with_the_cause_its_raylet_gives():
    async def test():
        owner = Owner(FakeNode(hold_replies=True))
        task, worker = await running(owner, max_retries=0)
        worker.die()
        await until(lambda: owner.done(task))
        with pytest.raises(WorkerCrashedError) as info:
            owner.result(task)
        assert ("The worker running task f died: the worker's process died (fake node). "
                "The task was tried 1 time(s) (max_retries=0).") in str(info.value)
    run(test)


def test_cancelling_queued_tasks_fails_them_and_cancels_the_lease_requests():
    async def test():
        node = FakeNode(grant_leases=False)
        owner = Owner(node)
        a, b = owner.submit(), owner.submit()
        await until(lambda: len(node.waiting) == 2)
        assert owner.submitter.cancel(a.spec.task_id, force=False)
        await until(lambda: owner.done(a))
        with pytest.raises(TaskCancelledError):
            owner.result(a)
        assert not owner.done(b) and node.cancelled == []  # b still waits for a lease
        assert owner.submitter.cancel(b.spec.task_id, force=False)
        await until(lambda: owner.done(b) and len(node.cancelled) == 2)
        assert node.waiting == {} and owner.submitter.tasks == {}
    run(test)


def test_cancelling_a_running_task_asks_its_worker_to_stop_it():
    async def test():
        owner = Owner(FakeNode(hold_replies=True))
        task, worker = await running(owner)
        assert owner.submitter.cancel(task.spec.task_id, force=False)
        await until(lambda: worker.cancels)
        assert worker.cancels == [cw.CancelTask(task.spec.task_id, force=False, recursive=True)]
    run(test)


def test_a_max_calls_task_is_never_pipelined_behind_another():
    async def test():
        node = FakeNode(hold_replies=True)
        owner = Owner(node)
        warm, worker = await running(owner)  # a short task, so that the key is pipelined
        worker.release()
        await until(lambda: owner.done(warm))
        tasks = [owner.submit(max_calls=1) for _ in range(3)]
        await finish(owner, tasks)
        assert max(w.max_in_flight for w in node.workers.values()) == 1
    run(test)
