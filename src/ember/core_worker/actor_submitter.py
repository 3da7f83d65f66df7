"""Actor calls: sent straight from the caller to the actor's worker, in order.

For each actor this process holds a handle to, an :class:`ActorQueue` keeps
the calls not yet sent (in submission order) and the calls sent and awaiting a
reply. Calls go out over one connection, so they reach the actor in the order
they were made; a call waiting for an argument holds back the calls behind it,
which is how Ray keeps per-caller ordering.

The queue learns where the actor is, and when it restarts or dies, from the
GCS's "actor" channel. When the connection to the actor breaks, the calls in
flight wait for that news: if the actor restarts and ``max_task_retries``
allows, they are sent again to the new process; otherwise they fail with
``ActorDiedError``, which says why the process died.

Cancelling a call (``ember.cancel``): a call not sent yet is dropped here and
fails with ``TaskCancelledError``; a sent one is cancelled in the actor's
process (see ``TaskExecutor.handle_cancel``) and is never retried.

Also here: actor creation (after its arguments are ready, ``CreateActor`` to
the GCS) and killing the actors this process owns once no handle to them is
left anywhere (their handle refs are freed; see ``ember/actor.py``).
Everything runs on the I/O thread unless a method says otherwise.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import pickle
import threading

import msgspec

from .. import rpc
from ..exceptions import ActorDiedError, PendingCallsLimitExceeded, TaskCancelledError
from ..protocol import core_worker as cw
from ..protocol import gcs as gcs_msg
from .serialization import serialize_error

logger = logging.getLogger(__name__)


class ActorQueue:
    __slots__ = ("actor_id", "class_name", "state", "conn", "address", "pending", "inflight",
                 "death", "max_task_retries", "connecting", "num_restarts", "subscribed",
                 "next_seq", "max_pending_calls", "unfinished",
                 "registering", "version", "where")

    def __init__(self, actor_id: bytes, class_name: str, max_task_retries: int,
                 max_pending_calls: int = -1):
        self.actor_id = actor_id
        self.class_name = class_name
        #: An ActorState name, as last heard from the GCS; "" before the first news.
        self.state = ""
        #: ActorInfo.version of that news; older news is ignored.
        self.version = -1
        self.conn: rpc.Connection | None = None
        self.address = None
        #: (node id, worker id, pid) of the actor's process (from the GCS), for its
        #: calls' task events.
        self.where = (b"", b"", 0)
        self.pending: collections.deque = collections.deque()
        self.inflight: dict[bytes, object] = {}
        #: The error every call gets once the actor is DEAD.
        self.death: Exception | None = None
        self.max_task_retries = max_task_retries
        self.connecting = False
        self.num_restarts = 0
        self.subscribed = False
        self.next_seq = 0
        #: A call waits for borrower registration; later calls wait behind it.
        self.registering = False
        #: -1: no limit. Otherwise calls submitted whose results are not stored yet
        #: are counted in ``unfinished``, under the submitter's ``pending_lock``:
        #: caller threads add, the I/O thread subtracts.
        self.max_pending_calls = max_pending_calls
        self.unfinished = 0


class ActorTaskSubmitter:
    def __init__(self, io, info, gcs, peers, references, dependencies, ownership,
                 store_returns):
        self._io = io
        self._info = info
        self._gcs = gcs
        self._peers = peers
        self._dependencies = dependencies
        self._ownership = ownership
        #: The normal task submitter's: results are stored the same way.
        self._store_returns = store_returns
        self.queues: dict[bytes, ActorQueue] = {}
        #: Handle ref (object id) -> actor id, for the actors this process owns
        #: that die when their handles are gone (see ember/actor.py).
        self._handle_refs: dict[bytes, bytes] = {}
        references.on_free.append(self._handle_ref_freed)
        #: actor id -> refs its creation arguments mention (see create()).
        self._creation_args: dict[bytes, list] = {}
        self.pending_lock = threading.Lock()

    # --- creation (I/O thread) ----------------------------------------------------

    def create(self, task, create_msg: gcs_msg.CreateActor, register: gcs_msg.RegisterActor
               | None) -> None:
        """Register (if not done synchronously), wait for arguments, then ask the GCS."""
        gcs = self._gcs
        if register is not None:
            gcs.notify(register)

        # The GCS forwards the creation task, so its worker cannot be registered
        # as a borrower in advance: keep the argument refs alive for good instead.
        self._creation_args[task.spec.actor_id] = task.keep_alive

        def ready(task):
            failed = self._dependencies.inline(task.spec)
            if failed is not None:
                logger.error("creating actor %s: an argument holds an error",
                             task.spec.function_name)
            create_msg.creation_spec = msgspec.msgpack.encode(task.spec)
            gcs.notify(create_msg)
        self._dependencies.resolve(task, ready)

    # --- calls --------------------------------------------------------------------

    def queue_for(self, actor_id: bytes, class_name: str, max_task_retries: int,
                  max_pending_calls: int = -1) -> ActorQueue:
        """Any thread: this process's call queue for one actor, shared by all its handles."""
        queue = self.queues.get(actor_id)
        if queue is None:
            queue = self.queues.setdefault(actor_id, ActorQueue(
                actor_id, class_name, max_task_retries, max_pending_calls))
        return queue

    def reserve_pending_call(self, queue: ActorQueue) -> None:
        """Caller thread: count one more call, or refuse it beyond max_pending_calls.

        Counted here, before the call reaches the I/O thread, so that a burst of
        calls from a tight loop is limited exactly.
        """
        with self.pending_lock:
            if queue.unfinished >= queue.max_pending_calls:
                raise PendingCallsLimitExceeded(
                    f"Actor {queue.class_name} (id={queue.actor_id.hex()}) already has "
                    f"{queue.unfinished} calls pending, its max_pending_calls. Wait for "
                    "some of their results before calling it again.")
            queue.unfinished += 1

    def submit(self, queue: ActorQueue, task) -> None:
        if not queue.subscribed:
            self._subscribe(queue)
        if queue.death is not None:
            self._fail(queue, task, queue.death)
            return
        task.spec.sequence_number = queue.next_seq
        queue.next_seq += 1
        self.task_events.submitted(task)
        queue.pending.append(task)
        self._dependencies.resolve(task, lambda t, q=queue: self._pump(q))

    def _pump(self, queue: ActorQueue) -> None:
        if queue.state != "ALIVE":
            return
        if queue.conn is None or queue.conn.closed:
            if not queue.connecting:
                queue.connecting = True
                self._io.loop.create_task(self._connect(queue))
            return
        pending = queue.pending
        while pending and pending[0].unresolved <= 0 and not queue.registering:
            task = pending.popleft()
            failed = self._dependencies.inline(task.spec)
            if failed is not None:
                self._finish(queue, task, failed)
                continue
            queue.inflight[task.spec.task_id] = task
            nested = task.nested_refs()
            if nested and self._ownership.register_local(queue.address, nested):
                # Third-party owners must learn of the actor before it gets the refs;
                # later calls wait, to keep the order.
                queue.registering = True
                self._io.loop.create_task(self._register_then_send(queue, task, nested))
                return
            self._send(queue, task)

    async def _register_then_send(self, queue: ActorQueue, task, nested) -> None:
        await self._ownership.loop_register(queue.address, nested)
        queue.registering = False
        if task.spec.task_id in queue.inflight and queue.conn is not None:
            self._send(queue, task)
        self._pump(queue)

    def is_pending(self, task_id: bytes) -> bool:
        """Whether ``task_id`` is a call of this process not finished yet."""
        return self._find(task_id)[1] is not None

    def _find(self, task_id: bytes):
        for queue in self.queues.values():
            task = queue.inflight.get(task_id)
            if task is not None:
                return queue, task
            for task in queue.pending:
                if task.spec.task_id == task_id:
                    return queue, task
        return None, None

    def cancel(self, task_id: bytes) -> bool:
        """Cancel one call: here if not sent, else in the actor's process; never retried.

        False if ``task_id`` is no unfinished call of this process (finished
        ones keep their results).
        """
        queue, task = self._find(task_id)
        if task is None:
            return False
        task.cancelled = True
        task.retries_left = 0
        cancelled = TaskCancelledError(task_id.hex(), (
            f"The call {task.spec.function_name} (task {task_id.hex()}) to actor "
            f"{queue.class_name} was cancelled by ember.cancel() before it ran."))
        if task_id not in queue.inflight:
            queue.pending.remove(task)
            self._fail(queue, task, cancelled)
            self._pump(queue)  # the calls behind it may go now
        elif task.lost:  # its process died; do not wait for news of a restart
            del queue.inflight[task_id]
            self._fail(queue, task, cancelled)
        elif queue.conn is not None and not queue.conn.closed:
            queue.conn.notify(cw.CancelTask(task_id))
        return True

    def _send(self, queue: ActorQueue, task) -> None:
        fut = queue.conn.request(cw.PushTask(task.spec))
        self.task_events.pushed(task, queue.where)
        fut.add_done_callback(lambda f, q=queue, t=task: self._on_reply(q, t, f))

    async def _connect(self, queue: ActorQueue) -> None:
        address = queue.address
        try:
            conn = await self._peers.get(address, "worker")
        except ConnectionError:
            conn = None
        queue.connecting = False
        if queue.address is not address:  # the actor moved while we dialled
            self._pump(queue)
            return
        if conn is None:
            return  # the GCS will tell us whether it restarts or died
        queue.conn = conn
        self._pump(queue)

    def _on_reply(self, queue: ActorQueue, task, fut) -> None:
        if queue.inflight.pop(task.spec.task_id, None) is None:
            return  # already failed or requeued
        exc = fut.exception()
        if exc is None:
            reply = fut.result()
            task.ran_for = reply.duration
            self._finish(queue, task, reply.returns, reply.num_generator_items)
            return
        # The connection broke: the actor's process is gone. Wait for the GCS's word.
        if queue.conn is not None and queue.conn.closed:
            queue.conn = None
        if queue.death is not None:
            self._fail(queue, task, queue.death)
            return
        queue.inflight[task.spec.task_id] = task
        task.lost = True

    # --- actor state from the GCS ----------------------------------------------------

    def _subscribe(self, queue: ActorQueue) -> None:
        queue.subscribed = True
        gcs = self._gcs
        gcs.notify(gcs_msg.Subscribe([gcs_msg.CHANNEL_ACTOR], keys=[queue.actor_id]))
        fut = gcs.request(gcs_msg.GetActorInfo(queue.actor_id))

        def got(f):
            if f.exception() is None and f.result().info is not None:
                self.actor_changed(None, gcs_msg.ActorChanged(f.result().info))
        fut.add_done_callback(got)

    async def resubscribe(self, conn) -> None:
        """On a new GCS connection: follow the same actors again, and catch up on them."""
        actor_ids = [q.actor_id for q in list(self.queues.values()) if q.subscribed]
        if not actor_ids:
            return
        await conn.call(gcs_msg.Subscribe([gcs_msg.CHANNEL_ACTOR], keys=actor_ids))
        replies = await asyncio.gather(*(conn.request(gcs_msg.GetActorInfo(actor_id))
                                         for actor_id in actor_ids))
        for reply in replies:
            if reply.info is not None:
                self.actor_changed(None, gcs_msg.ActorChanged(reply.info))

    def actor_changed(self, conn, news: gcs_msg.ActorChanged) -> None:
        info = news.info
        if info.state == "DEAD":  # never created again: its arguments may be freed
            self._creation_args.pop(info.actor_id, None)
        queue = self.queues.get(info.actor_id)
        if queue is None or info.version <= queue.version:
            return  # not ours, or stale: the first look-up crossed newer news
        queue.version = info.version
        restarted = info.num_restarts > queue.num_restarts
        queue.num_restarts = max(queue.num_restarts, info.num_restarts)
        queue.state = info.state
        if info.state == "ALIVE":
            if queue.address != info.address:
                queue.address = info.address
                queue.where = (info.address.node_id, info.address.worker_id, info.pid)
                if queue.conn is not None:
                    queue.conn = None
            if restarted or queue.inflight:
                self._resend_after_restart(queue, info)
            self._pump(queue)
        elif info.state == "RESTARTING":
            self._resend_after_restart(queue, info, restarting=True)
        elif info.state == "DEAD":
            queue.death = death_error(info)
            self._fail_all(queue)

    def _resend_after_restart(self, queue: ActorQueue, info: gcs_msg.ActorInfo,
                              restarting: bool = False) -> None:
        """Calls that were in flight when the process died: retry or fail each.

        A call that is not retried fails with ActorDiedError, as in Ray: the
        process that was running it died, even though the actor lives on.
        """
        lost = [t for t in queue.inflight.values() if t.lost
                or restarting]
        for task in lost:
            queue.inflight.pop(task.spec.task_id, None)
        retry = []
        for task in sorted(lost, key=lambda t: t.spec.sequence_number):
            if task.retries_left != 0:
                if task.retries_left > 0:
                    task.retries_left -= 1
                task.lost = False
                retry.append(task)
            else:
                retries = ("max_task_retries is 0; set max_task_retries to retry calls "
                           "after a restart" if not task.spec.max_retries else
                           f"it was already retried max_task_retries={task.spec.max_retries}"
                           " time(s)")
                self._fail(queue, task, ActorDiedError(
                    error_msg=f"The actor {info.describe()} died while running this call: "
                              f"{info.death_cause or 'its process died'}. The actor is being "
                              f"restarted (restart {info.num_restarts} of max_restarts="
                              f"{info.max_restarts}), but this call was not retried because "
                              f"{retries}.",
                    actor_id=queue.actor_id))
        queue.pending.extendleft(reversed(retry))

    def _fail_all(self, queue: ActorQueue) -> None:
        tasks = list(queue.inflight.values()) + list(queue.pending)
        queue.inflight.clear()
        queue.pending.clear()
        for task in tasks:
            self._fail(queue, task, queue.death)

    def _fail(self, queue: ActorQueue, task, err: Exception) -> None:
        self.task_events.failed(task.spec, err)
        value = serialize_error(err)
        self._finish(queue, task, [cw.ReturnObject(oid, value) for oid in task.return_ids])

    def _finish(self, queue: ActorQueue, task, returns, num_generator_items: int = 0) -> None:
        """Every call ends here: stop counting it as pending, and store its results.

        In that order, so that a caller woken by the result may call again at once.
        """
        if queue.max_pending_calls > 0:
            with self.pending_lock:
                queue.unfinished -= 1
        self._store_returns(task, returns, num_generator_items)

    # --- going out of scope (any thread) -------------------------------------------------

    def kill_when_freed(self, handle_ref_id: bytes, actor_id: bytes) -> None:
        """Caller thread, at creation: kill the actor when its handle ref is freed.

        The ref is held by every handle, here and (as borrowers) elsewhere, and
        by every unfinished call, so ``ray.get(Actor.remote().method.remote())``
        works, as in Ray.
        """
        self._handle_refs[handle_ref_id] = actor_id

    def _handle_ref_freed(self, object_id: bytes, ref) -> None:
        actor_id = self._handle_refs.pop(object_id, None)
        if actor_id is not None and not self._info.shutting_down:
            self._io.post(self._kill_out_of_scope, actor_id)

    def _kill_out_of_scope(self, actor_id: bytes) -> None:
        queue = self.queues.get(actor_id)
        if queue is not None and queue.death is not None:
            return
        self._creation_args.pop(actor_id, None)
        if not self._gcs.closed:
            self._gcs.notify(gcs_msg.KillActor(
                actor_id, force=True, no_restart=True,
                reason="all references to it went out of scope"))

    def debug_state(self) -> dict:
        return {q.class_name + ":" + q.actor_id.hex()[:8]: {
            "state": q.state, "pending": len(q.pending), "inflight": len(q.inflight)}
            for q in self.queues.values()}


def death_error(info: gcs_msg.ActorInfo) -> Exception:
    """The error a call to a DEAD actor raises: says which actor died and why."""
    cause = None
    if info.creation_error:
        try:
            cause = pickle.loads(info.creation_error)
        except Exception:  # noqa: BLE001
            cause = None
    message = info.death_cause or f"The actor {info.describe()} died."
    if cause is not None:
        message += f"\nThe error raised by __init__:\n{cause}"
    return ActorDiedError(cause=cause, error_msg=message, actor_id=info.actor_id)
