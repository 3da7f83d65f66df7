"""The actor living in a worker process, and how its calls are run.

Three modes, chosen once when the actor is created, as in Ray:

- **serial** (the default): one call at a time on the main thread, in arrival
  order, which is each caller's submission order.
- **threaded** (``max_concurrency > 1`` with plain methods, or concurrency
  groups): calls run on a thread pool per concurrency group, each pool as large
  as its group's limit. Order between concurrent calls is not kept.
- **async** (any ``async def`` method): calls are coroutines on one event loop
  that the main thread runs, at most ``max_concurrency`` (default 1000) at once
  per group, bounded by a semaphore.

Calls arrive on the I/O thread; :meth:`ActorRuntime.dispatch` hands each to
its mode's runner without blocking the I/O thread.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging

from .event_loop import LoopInbox

logger = logging.getLogger(__name__)

DEFAULT_GROUP = ""


class ActorExitRequest(BaseException):
    """Raised by ``exit_actor()``: finish this call, then end the actor's process."""


def _ready(instance) -> bool:
    return True


def _terminate(instance) -> None:
    raise ActorExitRequest()


def _call(instance, fn, *args, **kwargs):
    return fn(instance, *args, **kwargs)


#: Methods every actor has, as in Ray: ``__ray_ready__`` (true once constructed),
#: ``__ray_terminate__`` (end after the calls before it), ``__ray_call__(fn, ...)``
#: (run ``fn(instance, ...)`` in the actor).
BUILTIN_METHODS = {"__ray_ready__": _ready, "__ray_terminate__": _terminate,
                   "__ray_call__": _call}

DEFAULT_ASYNC_CONCURRENCY = 1000


def is_async_class(cls) -> bool:
    return any(inspect.iscoroutinefunction(m) or inspect.isasyncgenfunction(m)
               for _, m in inspect.getmembers(cls, predicate=inspect.isfunction))


class ActorRuntime:
    def __init__(self, executor, instance, class_name: str, options: dict):
        self.executor = executor
        self.instance = instance
        self.class_name = class_name
        #: The actor's name ("" if unnamed).
        self.name = options.get("name") or ""
        #: method name -> its descriptor on the class (see method()).
        self._descriptors: dict = {}
        self.actor_id = options.get("actor_id", b"")
        #: The GPUs granted with the creation lease, held for the actor's life.
        self.gpu_ids: list[int] = options.get("gpu_ids", [])
        #: The resources the actor holds while it lives (its calls carry none).
        self.resources: dict[str, float] = options.get("resources", {})
        #: True when this process is a restart of the actor (``__init__`` ran again).
        self.restarted: bool = options.get("restarted", False)
        is_async = options.get("is_async", False)
        groups = dict(options.get("concurrency_groups") or {})
        #: method name -> concurrency group declared with @ember.method
        self.method_groups: dict[str, str] = options.get("method_groups") or {}
        max_concurrency = options.get("max_concurrency")
        if is_async:
            self.mode = "async"
            limit = max_concurrency or DEFAULT_ASYNC_CONCURRENCY
            self.loop = asyncio.new_event_loop()
            self.inbox = LoopInbox(self.loop)
            self._limits = dict(groups, **{DEFAULT_GROUP: limit})
            self._semaphores: dict[str, asyncio.Semaphore] = {}
            #: task id -> the asyncio task running (or about to run) that call.
            self._calls: dict[bytes, asyncio.Task] = {}
        elif (max_concurrency or 1) > 1 or groups:
            self.mode = "threaded"
            limits = dict(groups, **{DEFAULT_GROUP: max_concurrency or 1})
            self._pools = {name: concurrent.futures.ThreadPoolExecutor(
                max_workers=n, thread_name_prefix=f"actor-{name or 'default'}")
                for name, n in limits.items()}
        else:
            self.mode = "serial"

    def method(self, name: str):
        """The actor's method ``name``, bound, looked up on its class as Ray does: an
        instance attribute of the same name (``self.stop = True``) does not hide it.

        The class lookup (a walk of the MRO) is made once per name; binding is a
        C-level ``__get__`` per call.
        """
        descriptor = self._descriptors.get(name)
        if descriptor is None:
            cls = type(self.instance)
            try:
                descriptor = inspect.getattr_static(cls, name)
            except AttributeError:
                return getattr(self.instance, name)  # __getattr__ or an instance callable
            self._descriptors[name] = descriptor
        get = getattr(descriptor, "__get__", None)
        return get(self.instance, type(self.instance)) if get is not None else descriptor

    def group_of(self, spec) -> str:
        return spec.concurrency_group or self.method_groups.get(spec.method_name, DEFAULT_GROUP)

    def dispatch(self, item) -> None:
        """I/O thread: start one call (item = (request, connection, future, None))."""
        if self.mode == "serial":
            self.executor.enqueue(item)
        elif self.mode == "threaded":
            group = self.group_of(item[0].spec)
            pool = self._pools.get(group, self._pools[DEFAULT_GROUP])
            pool.submit(self.executor.run_item, item)
        else:
            self.inbox.post(self._start_async, item)

    def cancel(self, task_id: bytes) -> None:
        """I/O thread: an async call is cancelled as an asyncio task; see handle_cancel."""
        if self.mode == "async":
            self.inbox.post(self._cancel_async, task_id)

    # --- async mode (runs on the main thread's actor loop) ---------------------------

    def _start_async(self, item) -> None:
        call = self.loop.create_task(self._run_async(item))
        self._calls[item[0].spec.task_id] = call
        call.add_done_callback(lambda c, item=item: self._async_call_done(item, c))

    def _async_call_done(self, item, call: asyncio.Task) -> None:
        self._calls.pop(item[0].spec.task_id, None)
        if call.cancelled():
            # Cancelled before it began, or while it waited for its turn (a call
            # cancelled while running answers TaskCancelledError itself).
            self.executor.run_item_async_cancelled(item)

    def _cancel_async(self, task_id: bytes) -> None:
        call = self._calls.get(task_id)
        if call is not None:
            call.cancel()

    async def _run_async(self, item) -> None:
        group = self.group_of(item[0].spec)
        if group not in self._limits:
            group = DEFAULT_GROUP
        semaphore = self._semaphores.get(group)
        if semaphore is None:
            semaphore = self._semaphores[group] = asyncio.Semaphore(self._limits[group])
        async with semaphore:
            await self.executor.run_item_async(item)

    def run_forever(self) -> None:
        """Main thread: serve async calls until the process exits."""
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
