"""The I/O thread of a core worker, and the cheap way to hand it work.

Every core worker (driver or worker) runs one uvloop event loop on a daemon
thread; all sockets belong to it. The user's thread hands it work with
:meth:`LoopThread.post`, which appends to a deque and wakes the loop only if it
is not already due to drain the deque. A thousand ``f.remote()`` calls in a
burst thus cost one wake-up (one self-pipe write), not a thousand: this is the
"batch the thread hops" rule of the design.

Invariant: ``_wake_pending`` is cleared *before* the deque is drained, so an
item appended during a drain either is seen by that drain or schedules a new
one; none is ever stranded.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import threading

import uvloop

logger = logging.getLogger(__name__)


class LoopInbox:
    """Hand callables to an event loop from other threads, one wake-up per burst."""

    def __init__(self, loop):
        self.loop = loop
        self._items: collections.deque = collections.deque()
        self._wake_pending = False

    def post(self, fn, *args) -> None:
        """Run ``fn(*args)`` on the loop's thread soon, in posting order."""
        self._items.append((fn, args))
        if not self._wake_pending:
            self._wake_pending = True
            try:
                self.loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # loop closed during shutdown
                pass

    def _drain(self) -> None:
        self._wake_pending = False
        items = self._items
        while items:
            fn, args = items.popleft()
            try:
                fn(*args)
            except Exception:
                logger.exception("error in posted callback %r", fn)


class LoopThread:
    def __init__(self, name: str = "ember-io"):
        self.loop = uvloop.new_event_loop()
        self._inbox = LoopInbox(self.loop)
        self.post = self._inbox.post
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()
        self._ready.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        try:
            self.loop.run_forever()
        finally:
            try:
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            except Exception:
                pass
            self.loop.close()

    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self.thread

    def run(self, coro, timeout: float | None = None):
        """Run a coroutine on the loop and wait for its result from another thread."""
        if self.in_loop_thread():
            raise RuntimeError("LoopThread.run() called from the loop thread itself")
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        try:
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:
            return
        if not self.in_loop_thread():
            self.thread.join(timeout=5)
