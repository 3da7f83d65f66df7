"""A FIFO queue shared between tasks and actors, as ``ray.util.queue.Queue``.

The queue lives in an async actor holding an ``asyncio.Queue``; blocking
``put``/``get`` with a timeout wait inside the actor, so many producers and
consumers in different processes can use one queue without polling.
"""
from __future__ import annotations

import asyncio
import queue as _stdlib_queue

from .. import worker
from ..actor import actor_class


class Empty(_stdlib_queue.Empty):
    pass


class Full(_stdlib_queue.Full):
    pass


class _QueueActor:
    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self.queue = asyncio.Queue(maxsize)

    def qsize(self):
        return self.queue.qsize()

    def empty(self):
        return self.queue.empty()

    def full(self):
        return self.queue.full()

    async def put(self, item, timeout=None):
        try:
            await asyncio.wait_for(self.queue.put(item), timeout)
        except asyncio.TimeoutError:
            raise Full from None

    async def put_batch(self, items, timeout=None):
        for item in items:
            await self.put(item, timeout)

    async def get(self, timeout=None):
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            raise Empty from None

    def put_nowait(self, item):
        self.queue.put_nowait(item)

    def put_nowait_batch(self, items):
        if self.maxsize > 0 and len(items) + self.qsize() > self.maxsize:
            raise Full(f"Cannot add {len(items)} items to queue of size {self.qsize()} "
                       f"and maxsize {self.maxsize}.")
        for item in items:
            self.queue.put_nowait(item)

    def get_nowait(self):
        return self.queue.get_nowait()

    def get_nowait_batch(self, num_items):
        if num_items > self.qsize():
            raise Empty(f"Cannot get {num_items} items from queue of size {self.qsize()}.")
        return [self.queue.get_nowait() for _ in range(num_items)]


def _unwrap(exc, kind):
    """An actor call raised; re-raise Empty/Full as themselves, others unchanged."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, (asyncio.QueueEmpty, Empty)) and kind is Empty:
        raise Empty from None
    if isinstance(cause, (asyncio.QueueFull, Full)) and kind is Full:
        raise Full from None
    raise exc


class Queue:
    def __init__(self, maxsize: int = 0, actor_options: dict | None = None):
        self.maxsize = maxsize
        queue_actor = actor_class(_QueueActor, {})
        self.actor = queue_actor.options(**(actor_options or {})).remote(maxsize)

    def __len__(self):
        return self.size()

    def size(self) -> int:
        return worker.get(self.actor.qsize.remote())

    def qsize(self) -> int:
        return self.size()

    def empty(self) -> bool:
        return worker.get(self.actor.empty.remote())

    def full(self) -> bool:
        return worker.get(self.actor.full.remote())

    def put(self, item, block: bool = True, timeout: float | None = None) -> None:
        if not block:
            return self.put_nowait(item)
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        try:
            worker.get(self.actor.put.remote(item, timeout))
        except Exception as exc:  # noqa: BLE001
            _unwrap(exc, Full)

    async def put_async(self, item, block: bool = True, timeout: float | None = None):
        if not block:
            return self.put_nowait(item)
        try:
            await self.actor.put.remote(item, timeout)
        except Exception as exc:  # noqa: BLE001
            _unwrap(exc, Full)

    def get(self, block: bool = True, timeout: float | None = None):
        if not block:
            return self.get_nowait()
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        try:
            return worker.get(self.actor.get.remote(timeout))
        except Exception as exc:  # noqa: BLE001
            _unwrap(exc, Empty)

    async def get_async(self, block: bool = True, timeout: float | None = None):
        if not block:
            return self.get_nowait()
        try:
            return await self.actor.get.remote(timeout)
        except Exception as exc:  # noqa: BLE001
            _unwrap(exc, Empty)

    def put_nowait(self, item) -> None:
        try:
            worker.get(self.actor.put_nowait.remote(item))
        except Exception as exc:  # noqa: BLE001
            _unwrap(exc, Full)

    def put_nowait_batch(self, items) -> None:
        if not isinstance(items, list):
            raise TypeError("Argument 'items' must be a list")
        try:
            worker.get(self.actor.put_nowait_batch.remote(items))
        except Exception as exc:  # noqa: BLE001
            _unwrap(exc, Full)

    def get_nowait(self):
        try:
            return worker.get(self.actor.get_nowait.remote())
        except Exception as exc:  # noqa: BLE001
            _unwrap(exc, Empty)

    def get_nowait_batch(self, num_items: int):
        if not isinstance(num_items, int) or num_items < 0:
            raise ValueError("'num_items' must be a non-negative integer")
        try:
            return worker.get(self.actor.get_nowait_batch.remote(num_items))
        except Exception as exc:  # noqa: BLE001
            _unwrap(exc, Empty)

    def shutdown(self, force: bool = False, grace_period_s: int = 5) -> None:
        if self.actor is not None:
            worker.kill(self.actor)
        self.actor = None
