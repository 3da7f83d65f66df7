"""Concurrency inside an actor: async actors, threaded actors, concurrency groups.

Each test proves concurrency by making calls wait for each other (an asyncio
event, a threading barrier): if the calls did not overlap, the waits would time
out and the test would fail, rather than depend on timing. Upper bounds are
checked by counting the calls inside a method at once.
"""
from __future__ import annotations

import asyncio
import os
import threading

import pytest

import ember as ray

WAIT_S = 20  # how long a call waits for its peers before giving up


@ray.remote
class AsyncGauge:
    """Counts how many calls are inside ``visit`` at once."""

    def __init__(self, full_at):
        self.inside = 0
        self.most = 0
        self.full_at = full_at
        self.full = asyncio.Event()

    async def visit(self, hold_s=0.05):
        self.inside += 1
        self.most = max(self.most, self.inside)
        if self.inside >= self.full_at:
            self.full.set()
        try:
            # Every call waits until ``full_at`` calls were inside together once.
            await asyncio.wait_for(self.full.wait(), WAIT_S)
            await asyncio.sleep(hold_s)
        finally:
            self.inside -= 1
        return os.getpid()

    async def most_(self):
        return self.most


def test_async_actor_runs_calls_concurrently_on_one_event_loop(shared):
    gauge = AsyncGauge.remote(full_at=50)
    pids = ray.get([gauge.visit.remote() for _ in range(50)])
    assert len(set(pids)) == 1
    assert ray.get(gauge.most_.remote()) == 50


def test_async_actor_concurrency_is_bounded_by_max_concurrency(shared):
    gauge = AsyncGauge.options(max_concurrency=3).remote(full_at=3)
    ray.get([gauge.visit.remote() for _ in range(12)])
    assert ray.get(gauge.most_.remote()) == 3


def test_async_actor_awaits_other_actors_without_blocking(shared):
    @ray.remote
    class Echo:
        async def echo(self, x):
            await asyncio.sleep(0.01)
            return x

    @ray.remote
    class Fanout:
        def __init__(self, echo):
            self.echo = echo

        async def gather(self, n):
            return await asyncio.gather(*[self.echo.echo.remote(i) for i in range(n)])

    fanout = Fanout.remote(Echo.remote())
    assert ray.get(fanout.gather.remote(20)) == list(range(20))


def test_async_actor_sync_methods_and_errors(shared):
    @ray.remote
    class Mixed:
        def __init__(self):
            self.log = []

        def sync_add(self, x):
            self.log.append(x)
            return x

        async def async_fail(self):
            await asyncio.sleep(0)
            raise KeyError("missing")

        async def log_(self):
            return self.log

    mixed = Mixed.remote()
    assert ray.get(mixed.sync_add.remote(1)) == 1
    with pytest.raises(KeyError):
        ray.get(mixed.async_fail.remote())
    assert ray.get(mixed.sync_add.remote(2)) == 2
    assert ray.get(mixed.log_.remote()) == [1, 2]


def test_async_generator_method_streams(shared):
    @ray.remote
    class Ticker:
        async def ticks(self, n):
            for i in range(n):
                await asyncio.sleep(0)
                yield i

    ticker = Ticker.remote()
    assert [ray.get(ref) for ref in ticker.ticks.remote(3)] == [0, 1, 2]


@ray.remote
class ThreadedGauge:
    """A sync actor: calls meet at a barrier of ``parties`` threads."""

    def __init__(self, parties):
        self.lock = threading.Lock()
        self.inside = 0
        self.most = 0
        self.threads = set()
        self.barrier = threading.Barrier(parties, timeout=WAIT_S)

    def visit(self):
        with self.lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
            self.threads.add(threading.get_ident())
        try:
            self.barrier.wait()
        finally:
            with self.lock:
                self.inside -= 1
        return True

    def stats(self):
        return self.most, len(self.threads)


def test_threaded_actor_runs_calls_in_parallel_threads(shared):
    gauge = ThreadedGauge.options(max_concurrency=3).remote(3)
    assert all(ray.get([gauge.visit.remote() for _ in range(9)]))
    most, threads = ray.get(gauge.stats.remote())
    assert most == 3
    assert threads >= 3


def test_default_actor_runs_one_call_at_a_time(shared):
    @ray.remote
    class Serial:
        def __init__(self):
            self.inside = 0
            self.most = 0

        def visit(self):
            import time
            self.inside += 1
            self.most = max(self.most, self.inside)
            time.sleep(0.002)
            self.inside -= 1

        def most_(self):
            return self.most

    serial = Serial.remote()
    ray.get([serial.visit.remote() for _ in range(20)])
    assert ray.get(serial.most_.remote()) == 1


@ray.remote(concurrency_groups={"io": 2})
class Grouped:
    """Default group: 1 at a time. Group "io": 2 at a time."""

    def __init__(self):
        self.release = threading.Event()
        self.io_barrier = threading.Barrier(2, timeout=WAIT_S)
        self.lock = threading.Lock()
        self.io_inside = 0
        self.io_most = 0

    def block(self):
        """Default group: held until released."""
        return self.release.wait(WAIT_S)

    def unblock(self):
        self.release.set()

    @ray.method(concurrency_group="io")
    def io(self, x):
        with self.lock:
            self.io_inside += 1
            self.io_most = max(self.io_most, self.io_inside)
        try:
            self.io_barrier.wait()
        finally:
            with self.lock:
                self.io_inside -= 1
        return x

    @ray.method(concurrency_group="io")
    def io_most_(self):
        return self.io_most

    def plain(self):
        return "plain"


def test_concurrency_groups_have_their_own_limits(shared):
    actor = Grouped.remote()
    blocked = actor.block.remote()
    # The default group is busy, yet io-group calls run, two at a time.
    assert ray.get([actor.io.remote(i) for i in range(6)], timeout=WAIT_S) == list(range(6))
    assert ray.get(actor.io_most_.remote(), timeout=WAIT_S) == 2
    # A default-group call waits behind the blocked one; "unblock" runs in io.
    queued = actor.plain.remote()
    ready, _ = ray.wait([queued], timeout=0.2)
    assert not ready, "a default-group call ran while the group's only slot was taken"
    ray.get(actor.unblock.options(concurrency_group="io").remote(), timeout=WAIT_S)
    assert ray.get(blocked, timeout=WAIT_S) is True
    assert ray.get(queued, timeout=WAIT_S) == "plain"


def test_concurrency_groups_of_an_async_actor(shared):
    @ray.remote(concurrency_groups={"io": 2, "compute": 1})
    class AsyncGrouped:
        def __init__(self):
            self.release = asyncio.Event()
            self.io_inside = 0
            self.io_most = 0
            self.io_full = asyncio.Event()

        async def block(self):
            await asyncio.wait_for(self.release.wait(), WAIT_S)
            return "released"

        @ray.method(concurrency_group="io")
        async def io(self, x):
            self.io_inside += 1
            self.io_most = max(self.io_most, self.io_inside)
            if self.io_inside >= 2:
                self.io_full.set()
            try:
                await asyncio.wait_for(self.io_full.wait(), WAIT_S)
                await asyncio.sleep(0.02)
            finally:
                self.io_inside -= 1
            return x

        @ray.method(concurrency_group="compute")
        async def unblock(self):
            self.release.set()
            return self.io_most

    actor = AsyncGrouped.options(max_concurrency=1).remote()
    blocked = actor.block.remote()
    assert ray.get([actor.io.remote(i) for i in range(6)], timeout=WAIT_S) == list(range(6))
    assert ray.get(actor.unblock.remote(), timeout=WAIT_S) == 2
    assert ray.get(blocked, timeout=WAIT_S) == "released"


def test_concurrency_groups_given_as_a_list_and_per_call(shared):
    actor = ThreadedGauge.options(concurrency_groups=["side"], max_concurrency=2).remote(2)
    # Two default-group calls meet at the barrier (max_concurrency=2) ...
    assert ray.get([actor.visit.remote() for _ in range(2)], timeout=WAIT_S) == [True, True]
    # ... and calls sent to the "side" group (limit 1) run there.
    assert ray.get(actor.stats.options(concurrency_group="side").remote())[0] == 2


def test_calls_to_a_threaded_actor_from_many_callers(shared):
    gauge = ThreadedGauge.options(max_concurrency=4).remote(4)

    @ray.remote
    def caller(g):
        return ray.get(g.visit.remote())

    assert ray.get([caller.remote(gauge) for _ in range(4)], timeout=WAIT_S) == [True] * 4
    assert ray.get(gauge.stats.remote())[0] == 4


@ray.remote
class AsyncInit:
    """An ``async def __init__`` that awaits, and starts a task on the actor's loop."""

    async def __init__(self, value):
        await asyncio.sleep(0)
        self.value = value
        self.ticks = 0
        self.ticker = asyncio.get_event_loop().create_task(self._tick())

    async def _tick(self):
        while True:
            self.ticks += 1
            await asyncio.sleep(0.01)

    async def get(self):
        return self.value

    async def ticks_after(self, n):
        # The task __init__ started keeps running on the loop the calls run on.
        start = self.ticks
        while self.ticks < start + n:
            await asyncio.sleep(0.01)
        return True


def test_async_init_runs_on_the_actors_loop(shared):
    actor = AsyncInit.remote(7)
    assert ray.get(actor.get.remote(), timeout=WAIT_S) == 7
    assert ray.get(actor.ticks_after.remote(3), timeout=WAIT_S)


@ray.remote
class FailingAsyncInit:
    async def __init__(self):
        await asyncio.sleep(0)
        raise ValueError("bad config")

    async def get(self):
        return 1


def test_an_error_in_async_init_fails_the_actor_with_its_cause(shared):
    actor = FailingAsyncInit.remote()
    with pytest.raises(ray.exceptions.RayActorError, match="bad config"):
        ray.get(actor.get.remote(), timeout=WAIT_S)
