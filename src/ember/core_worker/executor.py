"""The executor: how a worker runs the tasks pushed to it.

Pushes arrive on the I/O thread and are queued to the main thread, which runs
user code, so that a task that blocks (in ``ray.get``, in C code, in a sleep)
never stops the worker from answering RPCs, receiving more pushes, or being
cancelled. Replies go back through :meth:`LoopThread.post`, batched.

Cancellation of a running task is delivered as a signal to the main thread,
whose handler raises ``TaskCancelledError`` inside the user's code, the way a
Ctrl-C would; a sleeping task wakes up to it. Force-cancellation is done by
the raylet, which kills the process.
"""
from __future__ import annotations

import asyncio
import atexit
import functools
import hmac
import inspect
import logging
import os
import pickle
import queue
import signal
import sys
import threading
import time
import typing

from ..exceptions import ActorDiedError, RayTaskError, RuntimeEnvSetupError, TaskCancelledError
from ..ids import object_id_for_return
from ..placement_group import ungroup_resources
from ..protocol import core_worker as cw
from ..protocol import gcs as gcs_msg
from ..protocol import raylet as rl
from ..rpc import auth
from .actor_runtime import BUILTIN_METHODS, ActorExitRequest, ActorRuntime
from .process_title import ProcessTitle
from .runtime_env_setup import RuntimeEnvSetup
from .serialization import deserialize, serialize_error, task_error

logger = logging.getLogger(__name__)

CANCEL_SIGNAL = signal.SIGUSR1


def _has_async_init(cls) -> bool:
    return inspect.isclass(cls) and inspect.iscoroutinefunction(
        getattr(cls, "__init__", None))


class _PendingInit:
    """An actor instance whose ``async def __init__`` has not run yet.

    ``cls(...)`` cannot construct such a class (``__init__`` must return None), so
    the instance is made bare and its ``__init__`` awaited on the actor's loop.
    """

    def __init__(self, cls, args, kwargs):
        self.instance = (object.__new__(cls) if cls.__new__ is object.__new__
                         else cls.__new__(cls, *args, **kwargs))
        self._args = args
        self._kwargs = kwargs

    async def run(self) -> None:
        await self.instance.__init__(*self._args, **self._kwargs)


class TaskContext:
    """What the running task may ask about itself (runtime context)."""

    __slots__ = ("task", "spec", "gpu_ids", "lease_id")

    def __init__(self, spec: cw.TaskSpec, gpu_ids, lease_id):
        self.task = spec.task_id
        self.spec = spec
        self.gpu_ids = gpu_ids
        self.lease_id = lease_id


class Operations(typing.NamedTuple):
    """The core worker's public operations a running task's executor calls back into."""

    #: get(refs) -> values: the arguments passed by reference.
    get: typing.Callable
    #: serialize_object(value, object id, owner) -> SerializedValue: results.
    serialize_object: typing.Callable
    #: make_ref(object id, owner) -> ObjectRef.
    make_ref: typing.Callable
    #: cancel_children(task id, force): a recursive cancel.
    cancel_children: typing.Callable


class TaskExecutor:
    def __init__(self, io, info, ids, node, gcs, functions, references, ownership,
                 task_context, handlers: dict, operations: Operations, task_events,
                 streams=()):
        self._io = io
        #: This node's raylet connection (LocalNode), told before a deliberate exit.
        self._node = node
        self._info = info
        #: Makes task and object ids; they embed the job id of the task running here.
        self._ids = ids
        self._gcs = gcs
        self._functions = functions
        self._references = references
        self._ownership = ownership
        #: Per thread: the task it runs (read by get_runtime_context()).
        self._task_context = task_context
        self._ops = operations
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._cancelled: set[bytes] = set()
        self._running: bytes | None = None
        self._calls: dict[bytes, int] = {}
        self._jobs_loaded: set[bytes] = set()
        self._streams = streams
        self._async_loop = None
        #: The actor this worker hosts, once its creation task ran.
        self.actor: ActorRuntime | None = None
        #: The last lease whose grant checked out, and that grant (I/O thread only).
        self._granted_lease = b""
        self._granted_proof = b""
        #: Enters the runtime env each task or actor needs (main thread only).
        self.runtime_envs = RuntimeEnvSetup(io, gcs, info)
        self._title = ProcessTitle()
        #: Records each task's RUNNING and end (core_worker/task_events.py).
        self.task_events = task_events
        handlers[cw.PushTask] = self.handle_push
        handlers[cw.CancelTask] = self.handle_cancel
        handlers[cw.Exit] = self.handle_exit
        handlers[cw.ExitIfIdle] = self.handle_exit_if_idle
        signal.signal(CANCEL_SIGNAL, self._on_cancel_signal)

    # --- I/O thread -------------------------------------------------------------

    def handle_push(self, conn, req: cw.PushTask):
        spec = req.spec
        self._check_allowed(conn, req)
        fut = self._io.loop.create_future()
        item = (req, conn, fut, None)
        if spec.actor_id and not spec.is_actor_creation:
            self.actor.dispatch(item)
        elif not self._functions.is_loaded(spec.function_id):
            async def fetch_then_queue():
                try:
                    pickled = await self._functions.fetch(spec.function_id)
                except Exception as exc:  # noqa: BLE001
                    pickled = exc
                self._queue.put((req, conn, fut, pickled))
            self._io.loop.create_task(fetch_then_queue())
        else:
            self._queue.put(item)
        return fut

    def _check_allowed(self, conn, req: cw.PushTask) -> None:
        """Refuse a push this worker's lease or actor does not allow (PermissionError).

        A task, or an actor's creation, needs the raylet's grant of the lease
        it names (see ember.rpc.auth.lease_grant): only the owner the raylet
        leased this worker to has one. An actor call needs no lease, but must
        be for the actor this worker hosts. The verified grant is remembered,
        so a pipeline of pushes under one lease costs one HMAC.
        """
        spec = req.spec
        if spec.actor_id and not spec.is_actor_creation:
            if self.actor is not None and self.actor.actor_id == spec.actor_id:
                return
            hosted = (f"hosts actor {self.actor.actor_id.hex()}" if self.actor is not None
                      else "hosts no actor")
            reason = (f"a call of {spec.function_name} for actor {spec.actor_id.hex()}, but "
                      f"this worker {hosted}")
        elif spec.is_actor_creation and self.actor is not None:
            reason = (f"the creation of {spec.function_name}, but this worker already hosts "
                      f"actor {self.actor.actor_id.hex()}")
        elif req.lease_id == self._granted_lease and hmac.compare_digest(
                req.grant, self._granted_proof):
            return
        elif auth.grant_is_valid(self._info.lease_key, req.lease_id, req.grant):
            self._granted_lease, self._granted_proof = req.lease_id, req.grant
            return
        else:
            reason = (f"{spec.function_name} without a lease on this worker from its raylet "
                      f"(lease {req.lease_id.hex() or 'none'})")
        peer = auth.describe_peer(conn.transport) if conn.transport is not None else "a peer"
        logger.warning("refused a task pushed by %s: %s", peer, reason)
        raise PermissionError(f"Worker {self._info.worker_id.hex()[:12]} refused {reason}. "
                              "Tasks reach a worker through a lease its raylet granted.")

    def enqueue(self, item) -> None:
        self._queue.put(item)

    def handle_cancel(self, conn, req: cw.CancelTask) -> None:
        """Cancel a task, or an actor call, queued or running here.

        A queued one ends before it starts (``_begin``). A running task is
        interrupted (the signal raises TaskCancelledError in it). A running
        actor call is not, as in Ray: the actor's state could be left half
        changed. An async call is cancelled as an asyncio task; a plain one
        only sees ``get_runtime_context().is_canceled()`` turn true, and its
        caller gets TaskCancelledError even if it then returns normally.
        """
        if req.recursive:
            self._ops.cancel_children(req.task_id, req.force)
        if req.force:
            return  # the raylet kills this process
        self._cancelled.add(req.task_id)
        if self.actor is not None:
            self.actor.cancel(req.task_id)
        elif self._running == req.task_id:
            signal.pthread_kill(threading.main_thread().ident, CANCEL_SIGNAL)

    def is_cancelled(self, task_id: bytes) -> bool:
        return task_id in self._cancelled

    def handle_exit(self, conn, req) -> None:
        self._queue.put(None)

    def handle_exit_if_idle(self, conn, req) -> cw.ExitIfIdleReply:
        """The raylet would reap this idle worker: agree unless it owns objects in use."""
        owned = self._references.owned_in_use()
        if owned or self.actor is not None or self._running is not None:
            return cw.ExitIfIdleReply(False, owned)
        # After this turn of the loop, so that the reply is written first.
        self._io.loop.call_soon(self._queue.put, None)
        return cw.ExitIfIdleReply(True)

    def _on_cancel_signal(self, signum, frame):
        if self._running is not None and self._running in self._cancelled:
            raise TaskCancelledError(self._running.hex())

    # --- running (main thread, or an actor's threads) ----------------------------------

    def run_forever(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            if item is None:
                return
            self.run_item(item)
            if self.actor is not None and self.actor.mode == "async":
                self.actor.run_forever()
                return

    def run_item(self, item) -> None:
        req, conn, fut, pickled = item
        self._deliver(fut, self.execute(req, conn, pickled))

    async def run_item_async(self, item) -> None:
        req, conn, fut, _ = item
        self._deliver(fut, await self.execute_async(req, conn))

    def run_item_async_cancelled(self, item) -> None:
        """An async call cancelled before it started: answer TaskCancelledError."""
        req, _, fut, _ = item
        self._cancelled.discard(req.spec.task_id)
        self._deliver(fut, self._error_reply(
            req.spec, TaskCancelledError(req.spec.task_id.hex()), False))

    def _deliver(self, fut, reply: cw.PushTaskReply) -> None:
        post = self._io.post
        post(_set_result, fut, reply)
        if reply.worker_exiting:
            # A deliberate exit (exit_actor(), max_calls) ends the process as a normal
            # exit would: the program's atexit handlers run, once the reply is sent.
            # (The standard library has no public way to run them before os._exit.)
            try:
                atexit._run_exitfuncs()
            except BaseException:  # noqa: BLE001 - its traceback is printed; exit anyway
                pass
            self._flush_streams()
            post(self._node.raylet.notify, rl.WorkerExiting())
            post(_exit_soon, self._io)
            # The I/O thread ends the process once the reply has left; returning
            # would let main() exit first and the owner would see a crash.
            self._io.thread.join()

    def execute(self, req: cw.PushTask, conn, pickled) -> cw.PushTaskReply:
        started = time.perf_counter()
        spec = req.spec
        self.task_events.running(spec)
        try:
            target, args, kwargs, held = self._begin(req, pickled)
        except _EarlyReply as early:
            return early.reply
        self._running = spec.task_id
        try:
            try:
                if spec.is_actor_creation and _has_async_init(target):
                    result = _PendingInit(target, args, kwargs)
                else:
                    result = target(*args, **kwargs)
                if inspect.iscoroutine(result):
                    result = self._run_coroutine(result)
                if spec.task_id in self._cancelled and self.actor is not None:
                    raise TaskCancelledError(spec.task_id.hex(), _cancelled_call(spec))
                reply = self._complete(spec, result, conn)
            finally:
                self._running = None
        except BaseException as exc:  # noqa: BLE001 - user code may raise anything
            reply = self._exception_reply(spec, exc)
        return self._end(spec, reply, started, held)

    async def execute_async(self, req: cw.PushTask, conn) -> cw.PushTaskReply:
        """Async actors: the same as :meth:`execute`, awaiting coroutine methods."""
        started = time.perf_counter()
        spec = req.spec
        self.task_events.running(spec)
        try:
            target, args, kwargs, held = self._begin(req, None)
        except _EarlyReply as early:
            return early.reply
        try:
            result = target(*args, **kwargs)
            if inspect.iscoroutine(result):
                result = await result
            elif inspect.isasyncgen(result):
                result = [v async for v in result] if spec.num_returns != -1 else \
                    iter([v async for v in result])
            reply = self._complete(spec, result, conn)
        except BaseException as exc:  # noqa: BLE001
            reply = self._exception_reply(spec, exc)
        return self._end(spec, reply, started, held)

    def _begin(self, req: cw.PushTask, pickled):
        """Find what to call and with what; raises _EarlyReply when it cannot run."""
        spec = req.spec
        if spec.task_id in self._cancelled:
            self._cancelled.discard(spec.task_id)
            raise _EarlyReply(self._error_reply(spec, TaskCancelledError(spec.task_id.hex()),
                                                False))
        if spec.job_id not in self._jobs_loaded:
            self._load_job(spec.job_id)
        is_method = spec.actor_id and not spec.is_actor_creation
        # Before loading: the function may live in the env's packages. Actor calls
        # run in the env their actor entered at creation.
        if not is_method and spec.runtime_env != self.runtime_envs.current:
            try:
                self.runtime_envs.switch(spec.runtime_env, spec.function_name)
            except RuntimeEnvSetupError as err:
                raise _EarlyReply(self._error_reply(spec, err, False)) from None
            finally:  # what this process's tasks and actors inherit
                self._info.runtime_env = self.runtime_envs.current
        if not is_method:
            self._title.task_started(spec.name or spec.function_name, _cpus(spec),
                                     self.runtime_envs.current)
        try:
            if is_method:
                builtin = BUILTIN_METHODS.get(spec.method_name)
                target = (functools.partial(builtin, self.actor.instance) if builtin else
                          self.actor.method(spec.method_name))
            else:
                if isinstance(pickled, Exception):
                    raise pickled
                target = self._functions.load(spec.function_id, pickled)
        except Exception as exc:  # noqa: BLE001
            err = RayTaskError(spec.function_name,
                               f"Could not load {spec.function_name}: {exc}", exc,
                               ip=self._info.node_ip)
            raise _EarlyReply(self._error_reply(spec, err, False)) from None
        ctx = self._task_context
        ctx.task = spec.task_id
        ctx.spec = spec
        # Calls to an actor come from its callers, not the raylet: they carry no
        # GPUs, and the actor keeps those its creation lease was granted.
        ctx.gpu_ids = req.gpu_ids if self.actor is None else self.actor.gpu_ids
        if req.gpu_ids:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, req.gpu_ids))
        label = (self.actor.class_name if self.actor is not None else
                 spec.name or spec.function_name.rsplit(".", 1)[-1])
        for stream in self._streams:
            stream.task_name = label
        held: list = []
        try:
            args, kwargs = self._resolve_args(spec, held)
        except BaseException as exc:  # noqa: BLE001 - an argument's error
            self._clear_context(spec, held)
            raise _EarlyReply(self._exception_reply(spec, exc)) from None
        return target, args, kwargs, held

    def _complete(self, spec: cw.TaskSpec, result, conn) -> cw.PushTaskReply:
        if spec.is_actor_creation:
            self._become_actor(spec, result)
            return cw.PushTaskReply([])
        if spec.num_returns == -1:
            return cw.PushTaskReply([], num_generator_items=self._stream(spec, result, conn))
        return cw.PushTaskReply(self._package(spec, result))

    def _exception_reply(self, spec: cw.TaskSpec, exc: BaseException) -> cw.PushTaskReply:
        if isinstance(exc, asyncio.CancelledError) and spec.task_id in self._cancelled:
            exc = TaskCancelledError(spec.task_id.hex(), _cancelled_call(spec))
        if isinstance(exc, TaskCancelledError):
            return self._error_reply(spec, exc, False)
        if isinstance(exc, ActorExitRequest):
            class_name = self.actor.class_name if self.actor else spec.function_name
            reply = self._error_reply(spec, ActorDiedError(
                error_msg=f"The actor {class_name} (id={spec.actor_id.hex()}) exited via "
                          "exit_actor() while running this call; it will not be restarted.",
                actor_id=spec.actor_id), False)
            reply.worker_exiting = True
            return reply
        if not isinstance(exc, Exception):
            raise exc  # KeyboardInterrupt, SystemExit: let the process end
        return self._error_reply(spec, self._wrap(spec, exc), self._retryable(spec, exc))

    def _end(self, spec: cw.TaskSpec, reply: cw.PushTaskReply, started: float, held: list):
        self._clear_context(spec, held)
        self.task_events.ended(spec, reply)
        reply.duration = time.perf_counter() - started
        if spec.max_calls:
            count = self._calls.get(spec.function_id, 0) + 1
            self._calls[spec.function_id] = count
            if count >= spec.max_calls:
                reply.worker_exiting = True
        return reply

    def _clear_context(self, spec: cw.TaskSpec, held: list) -> None:
        if held:
            self._references.release(held)
        ctx = self._task_context
        ctx.task = None
        ctx.spec = None
        self._cancelled.discard(spec.task_id)

    def _become_actor(self, spec: cw.TaskSpec, instance) -> None:
        pending = instance if isinstance(instance, _PendingInit) else None
        if pending is not None:
            instance = pending.instance
        options = pickle.loads(spec.actor_options) if spec.actor_options else {}
        class_name = spec.function_name.rsplit(".", 2)[-2] if "." in spec.function_name \
            else spec.function_name
        options["actor_id"] = spec.actor_id
        options["gpu_ids"] = list(self._task_context.gpu_ids or [])
        options["resources"] = dict(spec.resources)
        options["restarted"] = spec.attempt > 0
        self.actor = ActorRuntime(
            self, instance, options.get("class_name", class_name), options)
        if pending is not None:
            # An `async def __init__` runs on the actor's own loop, so that tasks it
            # starts (asyncio.get_event_loop().create_task(...)) go on running there.
            try:
                self.actor.loop.run_until_complete(pending.run())
            except BaseException:
                self.actor = None
                raise
        self._info.actor_id = spec.actor_id
        self._info.actor_placement_group_id = spec.placement_group_id

    def _resolve_args(self, spec: cw.TaskSpec, held: list):
        """Argument values; refs nested in them are held (in ``held``) for the call."""
        values = []
        refs = []
        for i, arg in enumerate(spec.args):
            if arg.value is not None:
                if arg.value.nested_refs:
                    # The caller registered us as their borrower before sending.
                    self._references.hold(arg.value.nested_refs, registered=True)
                    held.extend(arg.value.nested_refs)
                values.append(deserialize(arg.value))
            else:
                values.append(None)
                refs.append((i, self._ops.make_ref(arg.object_id, arg.owner)))
        if refs:
            fetched = self._ops.get([r for _, r in refs])
            for (i, _), value in zip(refs, fetched):
                values[i] = value
        n_kw = len(spec.kwarg_names)
        if n_kw:
            return values[:-n_kw], dict(zip(spec.kwarg_names, values[-n_kw:]))
        return values, {}

    def _package(self, spec: cw.TaskSpec, result) -> list[cw.ReturnObject]:
        n = spec.num_returns
        tid = spec.task_id
        caller = spec.owner

        def result_object(object_id, value):
            serialized = self._ops.serialize_object(value, object_id, caller)
            return self._ownership.result_object(object_id, serialized, caller)
        if n == 1:
            return [result_object(object_id_for_return(tid, 0), result)]
        if n == 0:
            return []
        if inspect.isgenerator(result):
            result, failed = self._drain(spec, result)
            if failed is not None:
                # As Ray: the values yielded before the error are the first
                # returns; the error is each of the others.
                objects = [result_object(object_id_for_return(tid, i), v)
                           for i, v in enumerate(result)]
                return objects + [cw.ReturnObject(object_id_for_return(tid, i), failed)
                                  for i in range(len(result), n)]
        try:
            values = list(result)
        except TypeError:
            raise ValueError(f"Task {spec.function_name} has num_returns={n} but returned "
                             f"a {type(result).__name__}, which is not iterable.") from None
        if len(values) != n:
            raise ValueError(f"Task {spec.function_name} has num_returns={n} but returned "
                             f"{len(values)} values.")
        return [result_object(object_id_for_return(tid, i), v) for i, v in enumerate(values)]

    def _drain(self, spec: cw.TaskSpec, generator) -> tuple[list, object]:
        """A generator task's values for its ``num_returns`` returns, and its error
        (serialized) if it raised before yielding them all; an error raised after
        that is logged, as Ray does."""
        values = []
        try:
            for value in generator:
                values.append(value)
        except Exception as exc:  # noqa: BLE001 - user code may raise anything
            if len(values) < spec.num_returns:
                return values, serialize_error(self._wrap(spec, exc))
            logger.error("Task %s raised %r after yielding its %d return values; the "
                         "values stand and the error is only logged.", spec.function_name,
                         exc, spec.num_returns)
        return values, None

    def _stream(self, spec: cw.TaskSpec, result, conn) -> int:
        """Report each yielded value to the owner as it comes; returns the count."""
        post = self._io.post
        index = 0
        if not inspect.isgenerator(result) and not hasattr(result, "__next__"):
            result = iter([result])
        try:
            for value in result:
                oid = object_id_for_return(spec.task_id, index)
                item = cw.GeneratorItem(spec.task_id, index, self._ownership.result_object(
                    oid, self._ops.serialize_object(value, oid, spec.owner), spec.owner))
                post(_notify, conn, item)
                index += 1
        except Exception as exc:  # noqa: BLE001
            err = serialize_error(self._wrap(spec, exc))
            post(_notify, conn, cw.GeneratorItem(spec.task_id, index, cw.ReturnObject(
                object_id_for_return(spec.task_id, index), err)))
            index += 1
        return index

    def _run_coroutine(self, coro):
        if self._async_loop is None:
            self._async_loop = asyncio.new_event_loop()
        return self._async_loop.run_until_complete(coro)

    def _wrap(self, spec: cw.TaskSpec, exc: BaseException) -> RayTaskError:
        return task_error(exc, spec.name or spec.function_name, self._info.node_ip)

    def _retryable(self, spec: cw.TaskSpec, exc: BaseException) -> bool:
        if not spec.retry_exceptions:
            return False
        if not spec.retry_exception_allowlist:
            return True
        try:
            allowed = pickle.loads(spec.retry_exception_allowlist)
        except Exception:  # noqa: BLE001
            return False
        return isinstance(exc, tuple(allowed))

    def _error_reply(self, spec: cw.TaskSpec, err: BaseException,
                     retryable: bool) -> cw.PushTaskReply:
        self.task_events.failed(spec, err)
        value = serialize_error(err)
        n = spec.num_returns
        if n == -1:
            # A failed streaming task reports its error as its only item.
            return cw.PushTaskReply([cw.ReturnObject(object_id_for_return(spec.task_id, 0),
                                                     value)],
                                    is_application_error=True, retryable=retryable)
        returns = [cw.ReturnObject(object_id_for_return(spec.task_id, i), value)
                   for i in range(max(n, 1))]
        return cw.PushTaskReply(returns, is_application_error=True, retryable=retryable)

    def _load_job(self, job_id: bytes) -> None:
        """First task of a job here: put the driver's import paths on sys.path."""
        try:
            reply = self._io.run(self._gcs.call(gcs_msg.GetJobInfo(job_id)), 10)
        except Exception as exc:  # noqa: BLE001
            logger.warning("could not load job %s info: %s", job_id.hex(), exc)
            return
        self._jobs_loaded.add(job_id)
        if reply.info is not None:
            self._info.job_id = self._ids.job_id = job_id
            self._info.namespace = reply.info.namespace
            for path in reversed(reply.info.code_search_path):
                if path not in sys.path:
                    sys.path.insert(0, path)

    def _flush_streams(self) -> None:
        for stream in self._streams:
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass


def _cancelled_call(spec: cw.TaskSpec) -> str:
    return (f"The call {spec.function_name} (task {spec.task_id.hex()}) was cancelled by "
            "ember.cancel() while it ran.")


class _EarlyReply(Exception):
    """A task that ends before user code runs (cancelled, unloadable, bad argument)."""

    def __init__(self, reply: cw.PushTaskReply):
        self.reply = reply


def _set_result(fut, reply) -> None:
    if not fut.done():
        fut.set_result(reply)


def _notify(conn, message) -> None:
    if not conn.closed:
        conn.notify(message)


def _cpus(spec: cw.TaskSpec) -> float:
    """The CPUs ``spec`` asked for (inside a placement group, under the group's names)."""
    cpus = spec.resources.get("CPU")
    if cpus is None and spec.placement_group_id:
        cpus = ungroup_resources(spec.resources, spec.placement_group_id).get("CPU")
    return cpus or 0.0


def _exit_soon(io) -> None:
    # Let the reply leave first: the connection flushes at the end of this turn.
    io.loop.call_later(0.05, os._exit, 0)
