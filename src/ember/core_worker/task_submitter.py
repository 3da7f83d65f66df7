"""Direct task submission: the owner leases workers and pushes tasks straight to them.

For each scheduling key (function, resources, strategy) the submitter keeps a
queue of ready tasks, the workers it currently leases for that key, and its
outstanding lease requests. Tasks are pushed to the least-loaded leased worker,
up to ``max_tasks_in_flight_per_worker`` at a time (pipelining hides the round
trip). More leases are requested while tasks are queued, and a worker that
runs dry is kept for ``lease_idle_timeout_s`` before it goes back to the
raylet, so a tight ``get(f.remote())`` loop leases once, not once per task.
Those choices are made with no I/O in :mod:`.submit_policy`; this module
carries them out (sends, lease requests, timers) and handles the replies.

A task's life here (:class:`TaskState`; :meth:`PendingTask.transition` allows only
these edges, and lineage reconstruction takes a FINISHED task back to the start)::

    WAITING_FOR_DEPENDENCIES ──► QUEUED ──push──► RUNNING ──reply──► FINISHED
                 │                 ▲               │
                 │                 └──retry────────┤ (worker died / retryable error)
                 └──────── cancel ─────────────────┴──► FINISHED (TaskCancelledError)

Everything here runs on the core worker's I/O thread.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import enum
import logging
import os

import msgspec

from .. import rpc
from ..config import config
from ..exceptions import (TaskCancelledError, TaskUnschedulableError, WorkerCrashedError,
                          LocalRayletDiedError, OutOfMemoryError)
from ..exceptions import IllegalTransition
from ..protocol import core_worker as cw
from ..protocol import raylet as rl
from ..protocol.common import VALUE_IN_STORE, SchedulingStrategy
from ..raylet.lease_client import LeaseAttempt
from ..raylet.policies import follows_data
from .serialization import serialize_error
from .submit_policy import pipeline_depth, plan_pump

logger = logging.getLogger(__name__)

#: The longest wait before retrying a task the memory monitor killed (as Ray).
OOM_RETRY_DELAY_MAX_S = 60.0


class TaskState(enum.Enum):
    WAITING_FOR_DEPENDENCIES = "waiting for dependencies"  # its argument refs resolve
    QUEUED = "queued"        # in its scheduling key's queue, waiting for a leased worker
    RUNNING = "running"      # pushed to a worker; the reply is awaited
    FINISHED = "finished"    # its returns (values or the error) are stored


#: The moves of the diagram above: state -> the states it may go to next. A
#: FINISHED task waits for its dependencies again when lineage reconstruction
#: runs it again to rebuild a lost result.
_TASK_EDGES = {
    TaskState.WAITING_FOR_DEPENDENCIES: frozenset({TaskState.QUEUED, TaskState.FINISHED}),
    TaskState.QUEUED: frozenset({TaskState.RUNNING, TaskState.FINISHED}),
    TaskState.RUNNING: frozenset({TaskState.QUEUED, TaskState.FINISHED}),
    TaskState.FINISHED: frozenset({TaskState.WAITING_FOR_DEPENDENCIES}),
}


class PendingTask:
    """A submitted task until its results are stored."""

    __slots__ = ("spec", "return_ids", "keep_alive", "retries_left", "key", "state",
                 "cancelled", "worker", "generator", "unresolved", "lost", "parent",
                 "oom_retries_left", "oom_kills", "event", "reported", "ran_for",
                 "info")

    def nested_refs(self) -> list:
        """Refs inside the argument values; the receiver must be registered for them."""
        return [info for arg in self.spec.args if arg.value is not None
                for info in arg.value.nested_refs]

    def transition(self, new: TaskState) -> None:
        """The only way ``state`` changes: along an edge of ``_TASK_EDGES``."""
        if new not in _TASK_EDGES[self.state]:
            raise IllegalTransition(f"task {self.spec.function_name} "
                                    f"({self.spec.task_id.hex()})", self.state, new)
        self.state = new

    def __init__(self, spec: cw.TaskSpec, return_ids: list[bytes], keep_alive, key,
                 parent: bytes | None = None, info=None):
        self.spec = spec
        #: The task this process was running when it submitted this one, if any:
        #: a recursive cancel of that task cancels this one too.
        self.parent = parent
        self.return_ids = return_ids
        #: ObjectRefs the task's arguments mention; held until it finishes.
        self.keep_alive = keep_alive
        self.retries_left = spec.max_retries
        #: Retries after the memory monitor killed the worker: a budget of their
        #: own (EMBER_TASK_OOM_RETRIES), not taken from max_retries.
        self.oom_retries_left = config.task_oom_retries
        self.oom_kills = 0
        self.key: SchedulingKey = key
        self.state = TaskState.WAITING_FOR_DEPENDENCIES
        self.cancelled = False
        self.worker: LeasedWorker | None = None
        self.generator = None
        self.unresolved = 0
        #: Actor calls: sent, then the connection broke before a reply came.
        self.lost = False
        #: The current attempt's task-event record (None: not recorded yet), which
        #: the task-event hooks write its times and worker into, and whether the
        #: GCS has been sent it (core_worker/task_events.py).
        self.event = None
        self.reported = False
        #: How long the current attempt ran on its worker (its reply's duration;
        #: 0.0 until it replied).
        self.ran_for = 0.0
        #: What the task is, for task events: one TaskInfo shared by the calls made
        #: alike (core_worker/task_events.py), or None to describe it from its spec.
        self.info = info


@dataclasses.dataclass(frozen=True)
class SchedulingKey:
    """Tasks with equal keys can share leased workers."""

    function_id: bytes
    resources: tuple
    strategy: SchedulingStrategy = dataclasses.field(compare=False, hash=False)
    job_id: bytes = b""
    description: str = dataclasses.field(default="", compare=False, hash=False)
    #: The strategy's encoding, which (unlike the strategy) is hashable.
    strategy_key: bytes = b""
    #: The task's runtime env (wire form): tasks of one env share workers, which
    #: then enter it once rather than switching envs between tasks.
    runtime_env: str = ""

    @classmethod
    def make(cls, function_id, resources, strategy, job_id, description,
             runtime_env: str = "") -> "SchedulingKey":
        return cls(function_id, resources, strategy, job_id, description,
                   msgspec.msgpack.encode(strategy), runtime_env)

    def wire_key(self) -> bytes:
        return self.function_id + repr(self.resources).encode() + self.strategy_key


class LeasedWorker:
    __slots__ = ("conn", "address", "lease_id", "grant", "worker_pid", "raylet", "gpu_ids",
                 "inflight", "idle_timer", "dead", "where")

    def __init__(self, conn, reply: rl.LeaseGranted, raylet):
        self.conn = conn
        self.address = reply.worker
        self.lease_id = reply.lease_id
        self.grant = reply.grant
        self.worker_pid = reply.worker_pid
        self.raylet = raylet
        self.gpu_ids = reply.gpu_ids
        self.inflight = 0
        self.idle_timer: asyncio.TimerHandle | None = None
        self.dead = False
        #: (node id, worker id, pid), for the task events of the tasks pushed here.
        self.where = (self.address.node_id, self.address.worker_id, self.worker_pid)


class KeyState:
    __slots__ = ("key", "queue", "workers", "pending_leases", "wire_key", "avg_duration",
                 "depth")

    def __init__(self, key: SchedulingKey):
        self.key = key
        self.queue: collections.deque[PendingTask] = collections.deque()
        self.workers: list[LeasedWorker] = []
        #: lease id -> raylet connection the request is waiting at
        self.pending_leases: dict[bytes, rpc.Connection] = {}
        self.wire_key = key.wire_key()
        #: Moving average of the tasks' run time; None until one finished.
        self.avg_duration: float | None = None
        #: How many tasks to push to one worker at once: pipeline_depth of the
        #: average, kept with it (the pump reads it on every submission).
        self.depth = 1


class NormalTaskSubmitter:
    def __init__(self, io, info, node, peers, store, references, dependencies, ownership,
                 objects, lineage):
        self._io = io
        self._info = info
        self._node = node
        self._peers = peers
        self._store = store
        self._references = references
        self._dependencies = dependencies
        self._ownership = ownership
        self._objects = objects
        self._lineage = lineage
        self._keys: dict[SchedulingKey, KeyState] = {}
        #: Every unfinished task by task id.
        self.tasks: dict[bytes, PendingTask] = {}
        self._max_inflight = config.max_tasks_in_flight_per_worker
        self._short_task_s = config.pipeline_max_task_duration_s
        self._max_pending_leases = config.max_pending_lease_requests

    # --- submission -------------------------------------------------------------

    def submit(self, task: PendingTask) -> None:
        if task.state is TaskState.FINISHED:  # run again to rebuild a lost result (lineage)
            task.transition(TaskState.WAITING_FOR_DEPENDENCIES)
        self.tasks[task.spec.task_id] = task
        self.task_events.submitted(task)
        self._dependencies.resolve(task, self._dependencies_ready)

    def _dependencies_ready(self, task: PendingTask) -> None:
        if task.state is TaskState.FINISHED:  # cancelled while it waited
            return
        if task.cancelled:
            self._finish_with_error(task, TaskCancelledError(task.spec.task_id.hex()))
            return
        failed = self._dependencies.inline(task.spec)
        if failed is not None:  # an argument is an error: the task fails with it
            self.store_returns(task, failed)
            return
        task.transition(TaskState.QUEUED)
        self.task_events.queued(task)
        state = self._keys.get(task.key)
        if state is None:
            state = self._keys[task.key] = KeyState(task.key)
        state.queue.append(task)
        self._pump(state)

    # --- leases and pushes --------------------------------------------------------

    def _pump(self, state: KeyState) -> None:
        """Carry out what :func:`~.submit_policy.plan_pump` decides for the key now."""
        queue = state.queue
        pending = state.pending_leases
        lost, pushes, lease_requests, cancel_leases, idle = plan_pump(
            queue, len(queue), state.workers, len(pending), state.depth,
            self._max_pending_leases)
        for w in lost:  # it (or its node) died while its lease sat idle here
            self._worker_lost(state, w)
        for w in pushes:
            self._push(w, queue.popleft())
        if lease_requests:
            for _ in range(lease_requests):
                lease_id = os.urandom(16)
                pending[lease_id] = self._node.raylet
                self._io.loop.create_task(self._request_lease(state, lease_id))
        elif cancel_leases:
            self._cancel_pending_leases(state)
        for w in idle:
            w.idle_timer = self._io.loop.call_later(
                config.lease_idle_timeout_s, self._idle_expired, state, w)

    def _push(self, w: LeasedWorker, task: PendingTask) -> None:
        if w.idle_timer is not None:
            w.idle_timer.cancel()
            w.idle_timer = None
        w.inflight += 1
        task.worker = w
        task.transition(TaskState.RUNNING)
        address = w.address
        self.task_events.pushed(task, w.where)
        nested = task.nested_refs()
        if nested and self._ownership.register_local(w.address, nested):
            # Refs owned by third processes: their owners must know the worker first.
            async def register_then_send():
                await self._ownership.loop_register(w.address, nested)
                self._send(w, task)
            self._io.loop.create_task(register_then_send())
        else:
            self._send(w, task)

    def _send(self, w: LeasedWorker, task: PendingTask) -> None:
        try:
            fut = w.conn.request(cw.PushTask(task.spec, w.gpu_ids, w.lease_id, w.grant))
        except ConnectionError as exc:
            fut = self._io.loop.create_future()
            fut.set_exception(exc)
        fut.add_done_callback(lambda f, w=w, task=task: self._on_reply(w, task, f))

    def _on_reply(self, w: LeasedWorker, task: PendingTask, fut: asyncio.Future) -> None:
        w.inflight -= 1
        task.worker = None
        state = self._keys.get(task.key)
        exc = fut.exception()
        if exc is not None:
            if not w.dead:
                self._worker_lost(state, w)
            self._system_failure(task, w, exc)
        else:
            reply: cw.PushTaskReply = fut.result()
            task.ran_for = reply.duration
            if state is not None:
                avg = state.avg_duration
                state.avg_duration = avg = (reply.duration if avg is None
                                            else 0.8 * avg + 0.2 * reply.duration)
                state.depth = pipeline_depth(avg, self._max_inflight, self._short_task_s)
            if reply.worker_exiting:
                self._drop_worker(state, w, failed=False)
            if (reply.is_application_error and reply.retryable and not task.cancelled
                    and task.retries_left != 0):
                self._retry(task)
            elif task.cancelled and reply.is_application_error:
                self._finish_with_error(task, TaskCancelledError(task.spec.task_id.hex()))
            else:
                self.store_returns(task, reply.returns, reply.num_generator_items)
        if state is not None:
            self._pump(state)

    async def _request_lease(self, state: KeyState, lease_id: bytes) -> None:
        key = state.key
        request = rl.RequestWorkerLease(
            lease_id=lease_id, job_id=key.job_id, resources=dict(key.resources),
            strategy=key.strategy, description=key.description, owner=self._info.address,
            scheduling_key=state.wire_key,
            retriable=not state.queue or state.queue[0].spec.max_retries != 0)
        node_id, raylet = await self._raylet_near_data(state)

        def spilled(target, raylet) -> bool:
            if lease_id not in state.pending_leases:
                return False  # cancelled meanwhile
            state.pending_leases[lease_id] = raylet
            self._return_idle_leases(target.node_id, state)
            return True
        attempt = LeaseAttempt(request, raylet)
        try:
            self._return_idle_leases(node_id, state)
            reply = await attempt.run(self._connect_raylet, spilled)
            if reply is None:
                return
        except (ConnectionError, rpc.RemoteError) as exc:
            state.pending_leases.pop(lease_id, None)
            if attempt.raylet is self._node.raylet:
                self._fail_queue(state, LocalRayletDiedError())
            else:
                # Likely a node that just died, which the local raylet's view may still
                # spill to: ask again shortly, once the death has reached it.
                logger.info("lease request to a remote raylet failed: %s", exc)
                self._io.loop.call_later(0.1, self._pump, state)
            return
        state.pending_leases.pop(lease_id, None)
        raylet = attempt.raylet
        if type(reply) is rl.LeaseGranted:
            try:
                conn = await self._peers.get(reply.worker, "worker")
            except ConnectionError:
                raylet.notify(rl.ReturnWorker(reply.lease_id, worker_failed=True))
                self._pump(state)
                return
            state.workers.append(LeasedWorker(conn, reply, raylet))
        elif type(reply) is rl.LeaseFailed:
            self._fail_queue(state, TaskUnschedulableError(reply.message))
            return
        # "rejected" (the node spilled to was taken meanwhile) or "canceled": the
        # pump asks the local raylet again if tasks still wait.
        self._pump(state)

    def _return_idle_leases(self, node_id: bytes, asking: KeyState) -> None:
        """Return this process's idle leases on ``node_id`` held for other keys.

        An idle lease is kept briefly only so that the next task of its key
        skips the lease round trip. It must not hold the node's resources
        against a request of ours for that node, or the request would spill
        elsewhere (and lose its data locality) only because of ourselves. The
        return is sent before the request, on the connection the request
        will use when the lease came from there too, so the raylet frees the
        resources first.
        """
        for state in self._keys.values():
            if state is asking or state.queue:
                continue
            for w in list(state.workers):
                if (w.idle_timer is not None and w.inflight == 0 and not w.dead
                        and w.address.node_id == node_id):
                    self._drop_worker(state, w, failed=False, return_lease=True)

    async def _raylet_near_data(self, state: KeyState):
        """The node whose raylet to ask first, and that raylet: the node holding
        most of the arguments.

        Locality: a task whose large arguments sit in another node's object
        store should run there rather than pull them. Only arguments this
        process owns are considered (their location is known here without a
        round trip); the head of the queue stands for the tasks behind it.
        Only for strategies that let data decide (ember.raylet.policies).
        """
        local = self._info.node_id, self._node.raylet
        if not state.queue or not follows_data(state.key.strategy):
            return local
        weights: dict[bytes, int] = {}
        store = self._store
        for arg in state.queue[0].spec.args:
            if arg.object_id and self._info.owns(arg.owner):
                value = store.get(arg.object_id)
                if value is not None and value.kind == VALUE_IN_STORE:
                    weights[value.node_id] = weights.get(value.node_id, 0) + value.size
        if not weights:
            return local
        node_id = max(weights, key=weights.get)
        if node_id == self._info.node_id:
            return local
        info = await self._objects.node_info(node_id)
        if info is None or not info.alive:
            return local
        try:
            return node_id, await self._connect_raylet(info.raylet)
        except ConnectionError:
            return local

    def _cancel_pending_leases(self, state: KeyState) -> None:
        pending, state.pending_leases = state.pending_leases, {}
        for lease_id, raylet in pending.items():
            if not raylet.closed:
                raylet.notify(rl.CancelWorkerLease(lease_id))

    def node_died(self, node_id: bytes) -> None:
        """Let go of the idle workers leased on a node known dead, before anything is
        pushed to them: their connections may not have noticed yet, and a push there
        would spend a retry of the task for nothing."""
        for state in self._keys.values():
            for w in list(state.workers):
                if w.address.node_id == node_id and w.inflight == 0:
                    self._worker_lost(state, w)

    def _idle_expired(self, state: KeyState, w: LeasedWorker) -> None:
        w.idle_timer = None
        if w.inflight == 0 and not w.dead and not state.queue:
            self._drop_worker(state, w, failed=False, return_lease=True)

    def _drop_worker(self, state, w: LeasedWorker, failed: bool,
                     return_lease: bool = False) -> None:
        w.dead = True
        if w.idle_timer is not None:
            w.idle_timer.cancel()
            w.idle_timer = None
        if state is not None and w in state.workers:
            state.workers.remove(w)
        if (return_lease or failed) and not w.raylet.closed:
            w.raylet.notify(rl.ReturnWorker(w.lease_id, worker_failed=failed))

    def _worker_lost(self, state, w: LeasedWorker) -> None:
        self._drop_worker(state, w, failed=True)

    # --- outcomes -----------------------------------------------------------------

    def _system_failure(self, task: PendingTask, w: LeasedWorker, exc) -> None:
        if task.cancelled:
            self._finish_with_error(task, TaskCancelledError(task.spec.task_id.hex()))
        else:
            self._io.loop.create_task(self._worker_failed(task, w, exc))

    async def _worker_failed(self, task: PendingTask, w: LeasedWorker, exc) -> None:
        """Retry the task, or fail it with what its raylet says killed the worker.

        The raylet is asked first in every case: a worker its memory monitor
        killed is retried after a backoff and on a budget of its own
        (``task_oom_retries``), or fails with ``OutOfMemoryError``; the monitor
        records such a kill before it sends the signal, so one round trip
        tells. Any other death spends one of ``max_retries``.
        """
        reply = await self._failure_cause(w)
        if task.cancelled:
            self._finish_with_error(task, TaskCancelledError(task.spec.task_id.hex()))
        elif reply is not None and reply.out_of_memory:
            # As Ray: a task with max_retries=0 is never retried, not even after an OOM kill.
            if reply.retry and task.spec.max_retries != 0 and task.oom_retries_left != 0:
                if task.oom_retries_left > 0:
                    task.oom_retries_left -= 1
                delay = min(config.task_oom_retry_delay_base_ms / 1000 * 2 ** task.oom_kills,
                            OOM_RETRY_DELAY_MAX_S)
                task.oom_kills += 1
                logger.info("retrying task %s in %.2f s: the memory monitor killed its worker",
                            task.spec.function_name, delay)
                self._io.loop.call_later(delay, self._retry, task, False)
            else:
                self._finish_with_error(task, OutOfMemoryError(reply.cause))
        elif task.retries_left != 0:
            logger.info("retrying task %s after its worker failed: %s",
                        task.spec.function_name, exc)
            self._retry(task)
        else:
            cause = reply.cause if reply is not None else ""
            if not cause and reply is not None:  # the raylet may not have reaped it yet
                await asyncio.sleep(0.2)
                again = await self._failure_cause(w)
                cause = again.cause if again is not None else ""
            cause = cause or f"worker (pid {w.worker_pid}) stopped answering: {exc}"
            retries = task.spec.max_retries
            self._finish_with_error(task, WorkerCrashedError(
                f"The worker running task {task.spec.function_name} died: {cause}. "
                f"The task was tried {task.spec.attempt + 1} time(s) (max_retries={retries}). "
                "If the worker ran out of memory, request more with "
                "`.options(memory=...)`; to retry more often, raise `max_retries`."))

    async def _failure_cause(self, w: LeasedWorker) -> rl.GetWorkerFailureCauseReply | None:
        """What the worker's raylet knows of its death; None if it cannot be asked."""
        if w.raylet.closed:
            return None
        try:
            return await asyncio.wait_for(w.raylet.call(
                rl.GetWorkerFailureCause(w.address.worker_id)), 2.0)
        except (ConnectionError, asyncio.TimeoutError, rpc.RemoteError):
            return None

    def _retry(self, task: PendingTask, spend: bool = True) -> None:
        """Queue the task again; ``spend`` takes one of its ``max_retries``."""
        if task.cancelled:
            self._finish_with_error(task, TaskCancelledError(task.spec.task_id.hex()))
            return
        if spend and task.retries_left > 0:
            task.retries_left -= 1
        task.spec.attempt += 1
        self.task_events.retried(task)
        task.transition(TaskState.QUEUED)
        state = self._keys.get(task.key)
        if state is None:
            state = self._keys[task.key] = KeyState(task.key)
        state.queue.appendleft(task)
        self._pump(state)

    def _fail_queue(self, state: KeyState, err: Exception) -> None:
        queue, state.queue = state.queue, collections.deque()
        for task in queue:
            self._finish_with_error(task, err)

    def _finish_with_error(self, task: PendingTask, err: Exception) -> None:
        self.task_events.failed(task.spec, err)
        value = serialize_error(err)
        self.store_returns(task, [cw.ReturnObject(oid, value) for oid in task.return_ids])

    def _connect_raylet(self, address):
        return self._peers.get(address, "raylet")

    def store_result(self, ret: cw.ReturnObject) -> None:
        """A task result arrived: keep it if anyone here still refers to it."""
        value = ret.value
        if self._references.store_value(ret.object_id, value) and value.kind == VALUE_IN_STORE:
            self._references.owned_in_store(ret.object_id, value.node_id)

    def store_returns(self, task: PendingTask, returns, num_generator_items: int = 0) -> None:
        task.transition(TaskState.FINISHED)
        self.task_events.finished(task, returns)
        self.tasks.pop(task.spec.task_id, None)
        for ret in returns:
            self.store_result(ret)
        self._lineage.record(task, returns)
        if task.generator is not None:
            error = returns[0].value if returns and task.spec.num_returns == -1 else None
            task.generator.finish(num_generator_items, error)
        task.keep_alive = None

    # --- cancellation ---------------------------------------------------------------

    def cancel(self, task_id: bytes, force: bool, recursive: bool = True) -> bool:
        task = self.tasks.get(task_id)
        if task is None:
            return False
        task.cancelled = True
        if task.state is TaskState.WAITING_FOR_DEPENDENCIES:
            # Its arguments may take long, or never come: it fails now, and
            # _dependencies_ready ignores it when they do.
            self._finish_with_error(task, TaskCancelledError(task_id.hex()))
        elif task.state is TaskState.QUEUED:
            state = self._keys.get(task.key)
            if state is not None and task in state.queue:
                state.queue.remove(task)
            self._finish_with_error(task, TaskCancelledError(task_id.hex()))
            if state is not None:  # its lease requests are cancelled if it was the last
                self._pump(state)
        elif task.state is TaskState.RUNNING and task.worker is not None:
            w = task.worker
            task.retries_left = 0
            if force:
                if recursive:  # its children first, before the raylet kills it
                    w.conn.notify(cw.CancelTask(task_id, force=True))
                w.raylet.notify(rl.KillWorker(w.address.worker_id,
                                              f"task {task.spec.function_name} was "
                                              "force-cancelled"))
            else:
                w.conn.notify(cw.CancelTask(task_id, force=False, recursive=recursive))
        return True

    def debug_state(self) -> dict:
        return {
            "tasks": len(self.tasks),
            "keys": {s.key.description: {"queued": len(s.queue), "workers": len(s.workers),
                                         "pending_leases": len(s.pending_leases)}
                     for s in self._keys.values()},
        }
