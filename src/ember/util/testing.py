"""Helpers that Ray users import into their tests: ``wait_for_condition``, ``SignalActor``.

Ray keeps them in ``ray._private.test_utils``; programs and test suites written
for Ray import them from there, so ember offers the same names and behaviour
here (``from ember.util.testing import wait_for_condition, SignalActor``).
"""
from __future__ import annotations

import asyncio
import time

from ..actor import actor_class


def wait_for_condition(condition_predictor, timeout: float = 10, retry_interval_ms: float = 100,
                       raise_exceptions: bool = False, **kwargs) -> None:
    """Call ``condition_predictor(**kwargs)`` until it returns true.

    Raises RuntimeError after ``timeout`` seconds, naming the last exception the
    predicate raised; with ``raise_exceptions``, such an exception is raised at once.
    """
    deadline = time.monotonic() + timeout
    # Only the description of the last failure is kept: the exception itself holds
    # this frame and the predicate's (through its traceback), and with them every
    # value the predicate closes over, an actor handle say, until the cyclic
    # garbage collector happens to run. The actor would outlive the test.
    last_error = None
    while time.monotonic() < deadline:
        try:
            if condition_predictor(**kwargs):
                return
            last_error = None
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            if raise_exceptions:
                raise
            last_error = repr(exc)
        time.sleep(retry_interval_ms / 1000)
    message = f"The condition wasn't met before the timeout expired ({timeout} s)."
    if last_error is not None:
        message += f" Last exception: {last_error}"
    raise RuntimeError(message)


class _Signal:
    """An actor that tasks wait on until the test sends the signal (Ray's SignalActor)."""

    def __init__(self):
        self.ready_event = asyncio.Event()
        self.num_waiters = 0

    def send(self, clear: bool = False):
        self.ready_event.set()
        if clear:
            self.ready_event.clear()

    async def wait(self, should_wait: bool = True):
        if should_wait:
            self.num_waiters += 1
            await self.ready_event.wait()
            self.num_waiters -= 1

    async def cur_num_waiters(self) -> int:
        return self.num_waiters


#: ``SignalActor.remote()`` makes one; ``ray.get(signal.wait.remote())`` blocks
#: until ``signal.send.remote()``. Runs no CPU, so it never takes a task's place.
SignalActor = actor_class(_Signal, {"num_cpus": 0})
