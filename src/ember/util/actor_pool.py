"""ActorPool: spread work over a fixed set of actors, as ``ray.util.ActorPool``.

Each submitted item goes to an idle actor; items wait in a backlog while every
actor is busy. Results come back in submission order (``get_next``) or as
they finish (``get_next_unordered``); the two orders cannot be mixed within
one pass, since the ordered cursor would skip results already handed out.
"""
from __future__ import annotations

from .. import worker


class ActorPool:
    def __init__(self, actors: list):
        self._idle = list(actors)
        self._backlog: list = []
        #: ObjectRef (or tuple of refs) -> (submission index, actor)
        self._running: dict = {}
        #: submission index -> ObjectRef (or list of refs)
        self._by_index: dict = {}
        self._submitted = 0
        self._returned = 0

    def map(self, fn, values):
        """Apply ``fn(actor, value)`` to each value; the results in order, as a generator.

        Every value is submitted now, not as the results are read (as Ray's).
        """
        self._start_pass(fn, values)
        return self._results(self.get_next)

    def map_unordered(self, fn, values):
        """Like :meth:`map`, the results as they finish."""
        self._start_pass(fn, values)
        return self._results(self.get_next_unordered)

    def _start_pass(self, fn, values) -> None:
        self._drain()
        for value in values:
            self.submit(fn, value)

    def _results(self, get):
        while self.has_next():
            yield get()

    def _drain(self) -> None:
        """Forget the results of an earlier pass nobody collected, without waiting for
        them: their actors count as free again (as in Ray)."""
        for key, (index, actor) in list(self._running.items()):
            del self._running[key]
            self._by_index.pop(index, None)
            self._release(actor)
        self._returned = self._submitted

    def submit(self, fn, value) -> None:
        """Schedule ``fn(actor, value)`` on an idle actor, or queue it."""
        if not self._idle:
            self._backlog.append((fn, value))
            return
        actor = self._idle.pop()
        ref = fn(actor, value)
        key = tuple(ref) if isinstance(ref, list) else ref
        self._running[key] = (self._submitted, actor)
        self._by_index[self._submitted] = ref
        self._submitted += 1

    def has_next(self) -> bool:
        return bool(self._running)

    def get_next(self, timeout=None, ignore_if_timedout=False):
        """The next result in submission order. After ``timeout`` seconds: TimeoutError,
        or with ``ignore_if_timedout`` None, and that result is dropped."""
        if not self.has_next():
            raise StopIteration("No more results to get")
        if self._returned >= self._submitted or self._returned not in self._by_index:
            raise ValueError("get_next() cannot follow get_next_unordered() in one pass.")
        ref = self._by_index[self._returned]
        timed_out = False
        if timeout is not None:
            ready, _ = worker.wait(_as_list(ref), num_returns=len(_as_list(ref)),
                                   timeout=timeout)
            if not ready:
                if not ignore_if_timedout:
                    raise TimeoutError("Timed out waiting for result")
                timed_out = True
        del self._by_index[self._returned]
        self._returned += 1
        _, actor = self._running.pop(tuple(ref) if isinstance(ref, list) else ref)
        self._release(actor)
        if timed_out:  # dropped: its result is never returned, as Ray does
            return None
        return worker.get(ref)

    def get_next_unordered(self, timeout=None, ignore_if_timedout=False):
        """Whichever result finishes first. After ``timeout`` seconds: TimeoutError, or
        None with ``ignore_if_timedout``."""
        if not self.has_next():
            raise StopIteration("No more results to get")
        refs = [k[0] if isinstance(k, tuple) else k for k in self._running]
        ready, _ = worker.wait(refs, num_returns=1, timeout=timeout)
        if not ready:
            if ignore_if_timedout:
                return None  # as Ray; nothing is dropped
            raise TimeoutError("Timed out waiting for result")
        first = ready[0]
        key = next(k for k in self._running
                   if (k[0] if isinstance(k, tuple) else k) == first)
        index, actor = self._running.pop(key)
        ref = self._by_index.pop(index)
        self._returned = max(self._returned, index + 1)
        self._release(actor)
        return worker.get(ref)

    def _release(self, actor) -> None:
        self._idle.append(actor)
        if self._backlog:
            self.submit(*self._backlog.pop(0))

    def has_free(self) -> bool:
        return bool(self._idle) and not self._backlog

    def pop_idle(self):
        return self._idle.pop() if self.has_free() else None

    def push(self, actor) -> None:
        busy = [a for _, a in self._running.values()]
        if actor in self._idle or actor in busy:
            raise ValueError("Actor already belongs to current ActorPool")
        self._release(actor)


def _as_list(ref) -> list:
    return ref if isinstance(ref, list) else [ref]
