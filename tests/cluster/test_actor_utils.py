"""Utilities built on actors: ``ember.util.ActorPool`` and ``ember.util.queue.Queue``."""
from __future__ import annotations

import asyncio
import os
import time

import pytest

import ember as ray
from ember.util import ActorPool
from ember.util.queue import Empty, Full, Queue


@ray.remote
class Doubler:
    def double(self, x):
        return 2 * x

    def slow_double(self, x, gate_dir):
        """Wait until the driver opens this value's gate, then answer."""
        gate = os.path.join(gate_dir, str(x))
        deadline = time.monotonic() + 30
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.005)
        return 2 * x

    def pid(self):
        return os.getpid()


@pytest.fixture
def doublers(shared):
    return [Doubler.remote(), Doubler.remote()]


def open_gate(gate_dir, x):
    open(os.path.join(gate_dir, str(x)), "w").close()


# --- ActorPool --------------------------------------------------------------------------


def test_pool_map_returns_results_in_order(doublers):
    pool = ActorPool(doublers)
    assert list(pool.map(lambda a, v: a.double.remote(v), range(10))) == \
        [2 * v for v in range(10)]
    # The pool can be used for another pass.
    assert list(pool.map(lambda a, v: a.double.remote(v), [5, 6])) == [10, 12]


def test_pool_uses_every_actor(doublers):
    pool = ActorPool(doublers)
    pids = set(pool.map(lambda a, _: a.pid.remote(), range(8)))
    assert pids == set(ray.get([a.pid.remote() for a in doublers]))


def test_pool_map_unordered_yields_results_as_they_finish(doublers, tmp_path):
    pool = ActorPool(doublers)
    results = pool.map_unordered(lambda a, v: a.slow_double.remote(v, str(tmp_path)), [1, 2])
    # The second value finishes first, so it comes first.
    open_gate(tmp_path, 2)
    assert next(results) == 4
    open_gate(tmp_path, 1)
    assert next(results) == 2
    with pytest.raises(StopIteration):
        next(results)


def test_pool_submit_get_next_and_has_next(doublers, tmp_path):
    pool = ActorPool(doublers)
    assert not pool.has_next()
    for v in (1, 2, 3):  # three items, two actors: one waits in the backlog
        pool.submit(lambda a, v: a.slow_double.remote(v, str(tmp_path)), v)
    assert pool.has_next()
    assert not pool.has_free()
    for v in (1, 2, 3):
        open_gate(tmp_path, v)
    assert [pool.get_next(), pool.get_next(), pool.get_next()] == [2, 4, 6]
    assert not pool.has_next()
    with pytest.raises(StopIteration):
        pool.get_next()


def test_pool_get_next_unordered(doublers, tmp_path):
    pool = ActorPool(doublers)
    pool.submit(lambda a, v: a.slow_double.remote(v, str(tmp_path)), 1)
    pool.submit(lambda a, v: a.slow_double.remote(v, str(tmp_path)), 2)
    with pytest.raises(TimeoutError):
        pool.get_next_unordered(timeout=0.1)
    open_gate(tmp_path, 2)
    assert pool.get_next_unordered(timeout=30) == 4
    open_gate(tmp_path, 1)
    assert pool.get_next_unordered() == 2
    assert not pool.has_next()


def test_pool_get_next_timeout(doublers, tmp_path):
    pool = ActorPool(doublers)
    pool.submit(lambda a, v: a.slow_double.remote(v, str(tmp_path)), 7)
    with pytest.raises(TimeoutError):
        pool.get_next(timeout=0.1, ignore_if_timedout=False)
    open_gate(tmp_path, 7)
    assert pool.get_next(timeout=30) == 14


def test_pool_timeouts_ignored_give_none(doublers, tmp_path):
    pool = ActorPool(doublers)
    pool.submit(lambda a, v: a.slow_double.remote(v, str(tmp_path)), 5)
    assert pool.get_next_unordered(timeout=0.1, ignore_if_timedout=True) is None
    assert pool.has_next()  # nothing dropped: it is still there to get
    assert pool.get_next(timeout=0.1, ignore_if_timedout=True) is None
    assert not pool.has_next()  # in order, the result that timed out is dropped
    open_gate(tmp_path, 5)


def test_pool_map_submits_at_once_and_forgets_an_earlier_pass(doublers, tmp_path):
    pool = ActorPool(doublers)
    pool.submit(lambda a, v: a.slow_double.remote(v, str(tmp_path)), 9)  # never collected
    submitted = []

    def call(actor, value):
        submitted.append(value)
        return actor.double.remote(value)
    results = pool.map(call, [1, 2, 3])
    assert submitted[:1] == [1]  # before any result is read
    open_gate(tmp_path, 9)  # (a sync actor runs the new calls after the old one)
    assert list(results) == [2, 4, 6]  # the earlier call's result is not mixed in


def test_pool_pop_idle_and_push(doublers):
    pool = ActorPool(doublers)
    taken = pool.pop_idle()
    assert taken in doublers
    assert list(pool.map(lambda a, v: a.double.remote(v), [1, 2, 3])) == [2, 4, 6]
    pool.push(taken)
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(taken)
    assert set(pool.map(lambda a, _: a.pid.remote(), range(6))) == \
        set(ray.get([a.pid.remote() for a in doublers]))


def test_pool_propagates_errors(doublers):
    pool = ActorPool(doublers)
    pool.submit(lambda a, v: a.double.remote(v), "x")
    pool.submit(lambda a, v: a.double.remote(v), None)
    assert pool.get_next() == "xx"
    with pytest.raises(TypeError):
        pool.get_next()
    # The pool and its actors keep working.
    assert list(pool.map(lambda a, v: a.double.remote(v), [4])) == [8]


# --- Queue ------------------------------------------------------------------------------


def test_queue_is_fifo(shared):
    queue = Queue()
    assert queue.empty() and queue.qsize() == 0 and len(queue) == 0
    for item in ("a", {"b": 1}, [3]):
        queue.put(item)
    assert queue.qsize() == 3 and not queue.empty() and not queue.full()
    assert [queue.get(), queue.get(), queue.get()] == ["a", {"b": 1}, [3]]
    assert queue.empty()
    queue.shutdown()


def test_queue_nowait_and_bounds(shared):
    queue = Queue(maxsize=2)
    queue.put_nowait(1)
    queue.put(2, block=False)
    assert queue.full()
    with pytest.raises(Full):
        queue.put_nowait(3)
    with pytest.raises(Full):
        queue.put(3, timeout=0.05)
    assert queue.get_nowait() == 1
    assert queue.get(block=False) == 2
    with pytest.raises(Empty):
        queue.get_nowait()
    with pytest.raises(Empty):
        queue.get(timeout=0.05)
    # Empty and Full are the standard library's, as in Ray.
    import queue as stdlib_queue
    assert issubclass(Empty, stdlib_queue.Empty) and issubclass(Full, stdlib_queue.Full)
    with pytest.raises(ValueError):
        queue.get(timeout=-1)
    queue.shutdown()


def test_queue_batches(shared):
    queue = Queue(maxsize=3)
    queue.put_nowait_batch([1, 2, 3])
    with pytest.raises(Full):
        queue.put_nowait_batch([4])
    assert queue.get_nowait_batch(2) == [1, 2]
    with pytest.raises(Empty):
        queue.get_nowait_batch(2)
    assert queue.get_nowait_batch(1) == [3]
    queue.shutdown()


def test_blocking_get_waits_for_a_producer_task(shared):
    queue = Queue()

    @ray.remote
    def produce(q, n):
        for i in range(n):
            q.put(i)
        return "produced"

    done = produce.remote(queue, 5)
    assert [queue.get(timeout=30) for _ in range(5)] == list(range(5))
    assert ray.get(done) == "produced"
    queue.shutdown()


def test_blocking_put_waits_for_a_consumer(shared):
    queue = Queue(maxsize=1)

    @ray.remote
    def consume(q, n):
        return [q.get(timeout=30) for _ in range(n)]

    consumer = consume.remote(queue, 4)
    for i in range(4):
        queue.put(i, timeout=30)  # blocks while the single slot is taken
    assert ray.get(consumer) == [0, 1, 2, 3]
    queue.shutdown()


def test_queue_shared_with_an_actor(shared):
    @ray.remote
    class Consumer:
        def __init__(self, queue):
            self.queue = queue

        def take(self, n):
            return [self.queue.get(timeout=30) for _ in range(n)]

    queue = Queue()
    consumer = Consumer.remote(queue)
    taken = consumer.take.remote(3)
    for item in "xyz":
        queue.put(item)
    assert ray.get(taken) == ["x", "y", "z"]
    queue.shutdown()


def test_queue_async_put_and_get(shared):
    queue = Queue(maxsize=1)

    async def main():
        await queue.put_async("first")
        getter = asyncio.ensure_future(queue.get_async(timeout=30))
        assert await getter == "first"
        # A put that must wait for a free slot, and the get that frees it, together.
        await queue.put_async("second")
        blocked_put = asyncio.ensure_future(queue.put_async("third", timeout=30))
        assert await queue.get_async() == "second"
        await blocked_put
        assert await queue.get_async() == "third"
        with pytest.raises(Empty):
            await queue.get_async(timeout=0.05)
        with pytest.raises(Empty):
            await queue.get_async(block=False)

    asyncio.run(main())
    queue.shutdown()


def test_queue_async_inside_an_async_actor(shared):
    @ray.remote
    class AsyncUser:
        async def roundtrip(self, queue, items):
            for item in items:
                await queue.put_async(item)
            return [await queue.get_async(timeout=30) for _ in items]

    queue = Queue()
    assert ray.get(AsyncUser.remote().roundtrip.remote(queue, [1, 2, 3])) == [1, 2, 3]
    queue.shutdown()


def test_queue_shutdown_ends_its_actor(shared):
    queue = Queue()
    actor = queue.actor
    queue.put(1)
    queue.shutdown()
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(actor.qsize.remote())
