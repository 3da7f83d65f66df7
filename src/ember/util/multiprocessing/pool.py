"""A drop-in for ``multiprocessing.Pool`` whose processes are actors of the cluster.

Why actors, not tasks: ``initializer`` must run once per process and its
effects (globals, an opened model) must serve every item that process gets,
as in ``multiprocessing``. Each pool process is an actor that asks for no
CPU, as Ray's are (the pool is sized by the cluster's CPUs instead), and runs
items in chunks: one actor call per chunk, so a million tiny items do not
cost a million round trips.

Items fail as in Ray's pool: ``get()`` raises the exception the function
raised, not a wrapper, while ``imap``/``imap_unordered`` give it as that
item's value and go on. An actor that dies fails its chunks with
``RayActorError``.
"""
from __future__ import annotations

import collections
import collections.abc
import itertools
import logging
import multiprocessing
import os
import threading
import warnings
from typing import Any, Callable, Iterable

from ... import worker
from ...actor import actor_class
from ...exceptions import RayError
from ..annotations import RayDeprecationWarning

logger = logging.getLogger(__name__)

TimeoutError = multiprocessing.TimeoutError  # noqa: A001 - multiprocessing's name


class _ItemFailed:
    """What an item that raised leaves in its chunk's results (the exception itself
    travels pickled; a plain exception in the list would be taken for a value)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException):
        self.error = error


class _PoolProcess:
    """One process of a pool: runs the initializer once, then chunks of items."""

    def __init__(self, initializer, initargs):
        if initializer is not None:
            initializer(*(initargs or ()))

    def ready(self) -> None:
        pass

    def run_chunk(self, func: Callable, chunk: list) -> list:
        results = []
        for args, kwargs in chunk:
            try:
                results.append(func(*args, **kwargs))
            except Exception as exc:  # noqa: BLE001 - returned to the caller's get()
                results.append(_ItemFailed(exc))
        return results


_PoolActor = actor_class(_PoolProcess, {"num_cpus": 0})


def _first_error(chunk_results: list) -> BaseException | None:
    return next((r.error for r in chunk_results if isinstance(r, _ItemFailed)), None)


class AsyncResult:
    """The results of ``apply_async``, ``map_async`` or ``starmap_async``."""

    def __init__(self, chunk_refs: list, single: bool, callback=None, error_callback=None):
        self._refs = chunk_refs
        self._single = single
        self._outcome: tuple[list, BaseException | None] | None = None
        self._lock = threading.Lock()
        if callback is not None or error_callback is not None:
            # multiprocessing calls them from a thread of the pool as soon as the
            # results are in, whether or not anyone calls get().
            threading.Thread(target=self._call_back, args=(callback, error_callback),
                             daemon=True, name="ember-pool-callback").start()

    def _call_back(self, callback, error_callback) -> None:
        values, error = self._collect(None)
        if error is not None:
            if error_callback is not None:
                error_callback(error)
        elif callback is not None:
            callback(values[0] if self._single else values)

    def _collect(self, timeout: float | None) -> tuple[list, BaseException | None]:
        with self._lock:
            if self._outcome is None:
                ready, _ = worker.wait(self._refs, num_returns=len(self._refs),
                                       timeout=timeout, fetch_local=False)
                if len(ready) < len(self._refs):
                    raise TimeoutError(f"the results were not ready within {timeout} s")
                values, error = [], None
                for ref in self._refs:
                    try:
                        chunk = worker.get(ref)
                    except RayError as exc:  # the pool process itself died
                        chunk = [_ItemFailed(exc)]
                    error = error or _first_error(chunk)
                    values.extend(chunk)
                self._outcome = values, error
            return self._outcome

    def get(self, timeout: float | None = None):
        """The result (a list for the map methods); raises what the function raised,
        or ``multiprocessing.TimeoutError`` if not ready within ``timeout`` s."""
        values, error = self._collect(timeout)
        if error is not None:
            raise error
        return values[0] if self._single else values

    def wait(self, timeout: float | None = None) -> None:
        """Block until the results are ready or ``timeout`` s have passed."""
        worker.wait(self._refs, num_returns=len(self._refs), timeout=timeout,
                    fetch_local=False)

    def ready(self) -> bool:
        ready, _ = worker.wait(self._refs, num_returns=len(self._refs), timeout=0,
                               fetch_local=False)
        return len(ready) == len(self._refs)

    def successful(self) -> bool:
        """Whether no item raised; a ValueError until the results are ready."""
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._collect(None)[1] is None


class IMapIterator:
    """Results of ``imap`` (in order) or ``imap_unordered`` (as they finish).

    Chunks are submitted lazily, at most two per pool process ahead of the
    consumer, so an endless or huge iterable is not read (or held) at once.
    """

    def __init__(self, submit: Callable, processes: int, func, iterable: Iterable, chunksize: int,
                 ordered: bool):
        if chunksize < 1:
            raise ValueError(f"chunksize must be at least 1, got {chunksize}.")
        if not isinstance(iterable, collections.abc.Iterable):
            warnings.warn(
                "Passing a non-iterable argument to Pool.imap or imap_unordered is "
                "deprecated (as in Ray): it is taken as a one-item iterable.",
                RayDeprecationWarning, stacklevel=3)
            iterable = [iterable]
        #: The pool's ``_submit``: runs one chunk of calls on one of its actors.
        self._submit = submit
        self._func = func
        self._items = iter(iterable)
        self._chunksize = chunksize
        self._ordered = ordered
        self._in_flight: collections.deque = collections.deque()
        self._ready: collections.deque = collections.deque()
        self._exhausted = False
        for _ in range(2 * processes):
            self._submit_next()

    def _submit_next(self) -> None:
        if self._exhausted:
            return
        chunk = [((item,), {}) for item in itertools.islice(self._items, self._chunksize)]
        if len(chunk) < self._chunksize:
            self._exhausted = True
        if chunk:
            self._in_flight.append(self._submit(self._func, chunk))

    def __iter__(self):
        return self

    def __next__(self):
        return self.next()

    def next(self, timeout: float | None = None):
        while not self._ready:
            if not self._in_flight:
                raise StopIteration
            if self._ordered:
                ref = self._in_flight[0]
                if not worker.wait([ref], timeout=timeout, fetch_local=False)[0]:
                    raise TimeoutError(f"the next result was not ready within {timeout} s")
                self._in_flight.popleft()
            else:
                ready, _ = worker.wait(list(self._in_flight), timeout=timeout,
                                       fetch_local=False)
                if not ready:
                    raise TimeoutError(f"no result was ready within {timeout} s")
                ref = ready[0]
                self._in_flight.remove(ref)
            self._submit_next()
            # As Ray's imap: an item that raised gives its exception as its value, so
            # that one failure does not end the iteration over the others.
            self._ready.extend(r.error if isinstance(r, _ItemFailed) else r
                               for r in worker.get(ref))
        return self._ready.popleft()


class Pool:
    """``multiprocessing.Pool`` on the cluster (Ray's ``ray.util.multiprocessing.Pool``).

    ``processes`` defaults to the cluster's CPUs; ``ray_address`` (or
    ``EMBER_ADDRESS`` / ``RAY_ADDRESS``) names a cluster to connect to if this
    process is not connected yet, else a local one is started;
    ``ray_remote_args`` are the pool actors' options. ``context`` is accepted and
    ignored (there is no start method to choose).
    """

    def __init__(self, processes: int | None = None, initializer: Callable | None = None,
                 initargs: Iterable | None = None, maxtasksperchild: int | None = None,
                 context: Any = None, ray_address: str | None = None,
                 ray_remote_args: dict | None = None):
        if context is not None:
            logger.warning("Pool(context=...) is ignored: pool processes are actors of the "
                           "cluster, not forked processes.")
        if maxtasksperchild is not None and maxtasksperchild < 1:
            raise ValueError(f"maxtasksperchild must be at least 1, got {maxtasksperchild}.")
        self._processes = self._connect(processes, ray_address)
        self._initializer = initializer
        self._initargs = tuple(initargs or ())
        self._max_chunks = maxtasksperchild
        self._actor_class = _PoolActor.options(**(ray_remote_args or {}))
        #: [actor handle, chunks it was given] per process.
        self._actors = [self._new_process() for _ in range(self._processes)]
        self._next = 0
        self._retired: list = []
        self._state = "running"
        worker.get([actor.ready.remote() for actor, _ in self._actors])

    @staticmethod
    def _connect(processes: int | None, address: str | None) -> int:
        if processes is not None and processes < 1:
            raise ValueError(f"Number of processes must be at least 1, got {processes}.")
        if not worker.is_initialized():
            address = address or os.environ.get("EMBER_ADDRESS") or os.environ.get(
                "RAY_ADDRESS")
            if address:
                worker.init(address=address)
            else:
                worker.init(num_cpus=processes)
        cpus = int(worker.cluster_resources().get("CPU", 0))
        processes = processes or cpus
        if processes < 1:
            raise ValueError("The cluster has no CPU, so a pool cannot size itself; pass "
                             "processes=N.")
        if processes > cpus:
            raise ValueError(f"Tried to start a pool with {processes} processes on a cluster "
                             f"with only {cpus} CPUs.")
        return processes

    def _new_process(self) -> list:
        return [self._actor_class.remote(self._initializer, self._initargs), 0]

    def _check_running(self) -> None:
        if self._state != "running":
            raise ValueError("Pool not running")

    def _submit(self, func: Callable, chunk: list):
        """Run ``chunk`` ((args, kwargs) per item) on the next process, round robin."""
        entry = self._actors[self._next]
        self._next = (self._next + 1) % len(self._actors)
        ref = entry[0].run_chunk.remote(func, chunk)
        entry[1] += 1
        if self._max_chunks is not None and entry[1] >= self._max_chunks:
            # Retired once what it was given is done; a fresh process takes its place.
            self._retired.append(entry[0].__ray_terminate__.remote())
            entry[:] = self._new_process()
        return ref

    def _chunks(self, func: Callable, items: list, chunksize: int | None, star: bool) -> list:
        if chunksize is None:
            chunksize, extra = divmod(len(items), 4 * self._processes)
            chunksize += bool(extra)
        elif chunksize < 1:
            raise ValueError(f"chunksize must be at least 1, got {chunksize}.")
        calls = [(tuple(item) if star else (item,), {}) for item in items]
        return [self._submit(func, calls[i:i + chunksize])
                for i in range(0, len(calls), max(1, chunksize))]

    # --- the multiprocessing.Pool API ----------------------------------------------

    def apply(self, func: Callable, args: tuple = (), kwds: dict | None = None):
        return self.apply_async(func, args, kwds).get()

    def apply_async(self, func: Callable, args: tuple = (), kwds: dict | None = None,
                    callback=None, error_callback=None) -> AsyncResult:
        self._check_running()
        ref = self._submit(func, [(tuple(args or ()), dict(kwds or {}))])
        return AsyncResult([ref], True, callback, error_callback)

    def map(self, func: Callable, iterable: Iterable, chunksize: int | None = None) -> list:
        return self.map_async(func, iterable, chunksize).get()

    def map_async(self, func: Callable, iterable: Iterable, chunksize: int | None = None,
                  callback=None, error_callback=None) -> AsyncResult:
        return self._map_async(func, iterable, chunksize, False, callback, error_callback)

    def starmap(self, func: Callable, iterable: Iterable, chunksize: int | None = None) -> list:
        return self.starmap_async(func, iterable, chunksize).get()

    def starmap_async(self, func: Callable, iterable: Iterable, chunksize: int | None = None,
                      callback=None, error_callback=None) -> AsyncResult:
        return self._map_async(func, iterable, chunksize, True, callback, error_callback)

    def _map_async(self, func, iterable, chunksize, star: bool, callback,
                   error_callback) -> AsyncResult:
        self._check_running()
        refs = self._chunks(func, list(iterable), chunksize, star)
        return AsyncResult(refs, False, callback, error_callback)

    def imap(self, func: Callable, iterable: Iterable, chunksize: int = 1) -> IMapIterator:
        self._check_running()
        return IMapIterator(self._submit, self._processes, func, iterable, chunksize,
                           ordered=True)

    def imap_unordered(self, func: Callable, iterable: Iterable,
                       chunksize: int = 1) -> IMapIterator:
        self._check_running()
        return IMapIterator(self._submit, self._processes, func, iterable, chunksize,
                           ordered=False)

    def close(self) -> None:
        """Take no more work; the processes end once what they were given is done."""
        if self._state == "running":
            self._state = "closed"
            self._retired += [actor.__ray_terminate__.remote() for actor, _ in self._actors]

    def terminate(self) -> None:
        """Stop the processes now; work not finished is lost."""
        self._state = "terminated"
        for actor, _ in self._actors:
            worker.kill(actor)
        self._retired = []

    def join(self) -> None:
        """Wait for the processes to end; only after ``close()`` or ``terminate()``."""
        if self._state == "running":
            raise ValueError("Pool is still running; call close() or terminate() first.")
        if self._retired:
            worker.wait(self._retired, num_returns=len(self._retired), fetch_local=False)
            self._retired = []

    def __enter__(self) -> "Pool":
        self._check_running()
        return self

    def __exit__(self, *exc_info) -> None:
        self.terminate()  # as multiprocessing.Pool's context manager does

    def __reduce__(self):
        raise TypeError("A Pool cannot be pickled: use it in the process that made it.")
