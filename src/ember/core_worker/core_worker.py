"""The core worker: the library inside every driver and worker process.

It holds this process's view of the cluster: connections to the GCS and the
local raylet, an RPC server that other core workers call (task pushes, object
status queries), the memory store and reference counter of the objects this
process owns or borrows, and the task submitter.

Threads: public methods that a user calls (``put``, ``get``, ``wait``,
``submit_task``) run on the caller's thread and hand work to the I/O thread
through :meth:`LoopThread.post`. Methods whose names start with ``_loop_`` and
all RPC handlers run on the I/O thread.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import logging
import os
import sys
import threading

from .. import rpc
from ..config import config
from ..exceptions import GetTimeoutError, ObjectLostError
from ..ids import (IdFactory, is_actor_handle_id, object_id_for_put, object_id_for_return,
                   task_id_of)
from ..ports import WorkerPorts, listen_order
from ..protocol import core_worker as cw
from ..protocol import gcs as gcs_msg
from ..protocol import raylet as rl
from ..object_store.client import StoreClient
from ..object_store.layout import load_from_store
from ..protocol.common import VALUE_ERROR, VALUE_IN_STORE, Address, SerializedValue
from ..rpc.pool import Peers
from ..rpc.reconnecting import ReconnectingClient
from . import context
from .actor_submitter import ActorTaskSubmitter
from .dependency_resolver import DependencyResolver
from .event_loop import LoopThread
from .function_manager import FunctionManager
from .lineage import Lineage
from .memory_store import CallbackWaiter, CountdownWaiter, FailFastWaiter, MemoryStore
from .object_directory import ObjectDirectory
from .ownership import Ownership
from .process_info import LocalNode, ProcessInfo
from .reference_counter import ReferenceCounter
from .serialization import deserialize, inline_value, serialize_parts
from .task_events import task_event_buffer
from .task_submitter import NormalTaskSubmitter, PendingTask
from .log_printer import log_printer, print_error

logger = logging.getLogger(__name__)


#: Times one get() has lost values rebuilt before it gives up (see lineage.py).
_MAX_REBUILDS = 3


def _info_field(name: str) -> property:
    return property(lambda self: getattr(self.info, name),
                    lambda self, value: setattr(self.info, name, value))


def _raise_first_error(values: list) -> None:
    """Raise the error held by the first of ``values`` that is one, if any."""
    for value in values:
        if value is not None and value.kind == VALUE_ERROR:
            deserialize(value)  # raises it


class CoreWorker:
    """The assembly of this process's core-worker components, and its public operations.

    Each component gets, in its constructor, the few collaborators it uses
    (the I/O loop, the memory store, the reference counter, the connection
    pool, the GCS client, :class:`ProcessInfo`), never this object.
    """

    def __init__(self, *, is_driver: bool, node_id: bytes, node_ip: str,
                 raylet_socket: str, gcs_address: str, session_dir: str, make_ref,
                 worker_id: bytes | None = None, ports: WorkerPorts = WorkerPorts(),
                 port: int = 0):
        """``ports``: the node's worker port range, which this process listens on one
        of; ``port``: the one its raylet gave it (a worker), first to try."""
        self.info = info = ProcessInfo(worker_id or os.urandom(28), node_id, node_ip,
                                       is_driver, session_dir)
        #: Makes the ObjectRef of (object id, owner address): the public class,
        #: injected so that the core worker does not import the API above it.
        self.make_ref = make_ref
        self.raylet_socket = raylet_socket
        self.gcs_address = gcs_address
        self._listen_ports = listen_order(ports, port)
        self._port_range = ports
        #: Refs captured by remote functions and actor classes: held for good.
        self._captured: dict[bytes, object] = {}
        #: The TaskExecutor running tasks here (worker processes only; worker_main sets it).
        self.executor = None
        #: Package URIs this process knows the GCS holds (uploaded or checked).
        self.uploaded_packages: set[str] = set()
        self.ids = IdFactory()
        self.io = LoopThread("ember-io")
        #: RPC handlers of this process's server, one table: each component's
        #: handlers are added below, the executor's in worker processes.
        self.handlers: dict = {cw.GeneratorItem: self._handle_generator_item,
                               cw.CancelOwnedTask: self._handle_cancel_owned,
                               cw.GetCoreWorkerStats: self._handle_stats}
        gcs_handlers: dict = {gcs_msg.LogBatch: log_printer(node_ip),
                              gcs_msg.ErrorInfo: print_error}
        #: Requests issued before connect() wait in its backlog.
        self.gcs = ReconnectingClient(gcs_address, gcs_handlers, name="gcs",
                                      on_connected=self._gcs_reconnected)
        #: Connections to other processes. Peers publish their addresses only once
        #: serving, so a refused connection means the peer died: fail at once.
        self.peers = Peers(node_id, handlers=self.handlers, timeout=10.0,
                           already_listening=True)
        #: This node's raylet connection and store client, once connected.
        self.node = LocalNode()
        lock = threading.RLock()
        self.store = MemoryStore(lock)
        self.references = ReferenceCounter(lock, self.store, info.worker_id)
        self.functions = FunctionManager(self.io, self.gcs, self.store)
        self.dependencies = DependencyResolver(self.io, self.store, self.functions, info)
        #: A driver's (RegisterJob, Subscribe), sent again to a restarted GCS.
        self._job_subscription: tuple | None = None
        self._servers = []
        #: The task this thread is executing, set by the executor (worker only).
        self.task_context = threading.local()
        self.blocked_depth = 0
        #: Pulls of other nodes' objects, copy locations, and freeing every copy.
        self.objects = ObjectDirectory(self.io, info, self.node, self.gcs, self.references,
                                       self.peers, self.handlers)
        #: Specs of finished tasks whose stored results may need rebuilding.
        self.lineage = Lineage(self.store, self.references, self.objects.dead_nodes)
        self.ownership = Ownership(self.io, info, self.store, self.references, self.peers,
                                   self.lineage, self.handlers)
        self.submitter = NormalTaskSubmitter(self.io, info, self.node, self.peers, self.store,
                                             self.references, self.dependencies,
                                             self.ownership, self.objects, self.lineage)
        self.lineage.resubmit = self.submitter.submit
        self.lineage.node_died = self.submitter.node_died
        self.actor_submitter = ActorTaskSubmitter(self.io, info, self.gcs, self.peers,
                                                  self.references, self.dependencies,
                                                  self.ownership, self.submitter.store_returns)
        gcs_handlers[gcs_msg.ActorChanged] = self.actor_submitter.actor_changed
        #: Task state changes, flushed to the GCS's task-event store about once a second.
        self.task_events = task_event_buffer(node_id, info.worker_id)
        self.submitter.task_events = self.actor_submitter.task_events = self.task_events
        #: Runs store reads for callbacks that fire on the I/O thread (which must
        #: never wait on the raylet it serves).
        self._readers = None
        self.on_raylet_lost = None

    # --- who this process is (see ProcessInfo) ---------------------------------------

    is_driver = property(lambda self: self.info.is_driver)
    worker_id = property(lambda self: self.info.worker_id)
    node_id = property(lambda self: self.info.node_id)
    node_ip = property(lambda self: self.info.node_ip)
    session_dir = property(lambda self: self.info.session_dir)
    address = property(lambda self: self.info.address)

    @property
    def job_id(self) -> bytes:
        return self.info.job_id

    @job_id.setter
    def job_id(self, job_id: bytes) -> None:
        self.info.job_id = job_id
        self.ids.job_id = job_id

    @property
    def shutting_down(self) -> bool:
        return self.info.shutting_down

    namespace = _info_field("namespace")
    runtime_env = _info_field("runtime_env")
    actor_id = _info_field("actor_id")
    actor_placement_group_id = _info_field("actor_placement_group_id")
    lease_key = _info_field("lease_key")

    @property
    def actor(self):
        """The ActorRuntime of the actor this worker hosts, once its __init__ ran."""
        return self.executor.actor if self.executor is not None else None

    raylet = property(lambda self: self.node.raylet)
    object_store = property(lambda self: self.node.object_store)

    # --- connecting ---------------------------------------------------------------

    def connect(self, job_config: dict | None = None) -> None:
        """Start serving, connect to the raylet and the GCS, and register."""
        self.io.run(self._loop_connect(job_config))
        context.core = self

    async def _loop_connect(self, job_config) -> None:
        sock_dir = os.path.join(self.session_dir, "sockets")
        os.makedirs(sock_dir, exist_ok=True)
        unix_path = os.path.join(sock_dir, ("driver-" if self.is_driver else "worker-")
                                 + self.worker_id.hex()[:12])
        handlers = self.handlers
        self._servers.append(await rpc.serve("unix:" + unix_path, lambda: handlers,
                                             name="core-worker"))
        tcp = await self._serve_tcp(handlers)
        self._servers.append(tcp)
        self.info.address = Address(self.node_id, self.node_ip,
                                    tcp.sockets[0].getsockname()[1], unix_path, self.worker_id)
        self.node.raylet = await rpc.connect("unix:" + self.raylet_socket, self.handlers,
                                             name="raylet", on_close=self._raylet_lost)
        await self.gcs.start()
        self.task_events.start(self.io.loop, self.gcs)
        if self.is_driver:
            registration = gcs_msg.RegisterJob(
                driver_pid=os.getpid(), driver_address=self.address,
                namespace=job_config["namespace"],
                code_search_path=job_config["code_search_path"],
                entrypoint=" ".join(sys.argv),
                # Set by the Jobs API's supervisor (ember.dashboard.job_supervisor).
                submission_id=os.environ.get("EMBER_JOB_SUBMISSION_ID", ""))
            reply = await self.gcs.call(registration)
            self.job_id = reply.job_id
            self.namespace = job_config["namespace"]
            channels = [gcs_msg.CHANNEL_ERROR]
            if job_config.get("log_to_driver", True):
                channels.append(gcs_msg.CHANNEL_LOG)
            await self.gcs.call(gcs_msg.Subscribe(channels, self.job_id))
            registration.job_id = self.job_id
            self._job_subscription = (registration, gcs_msg.Subscribe(channels, self.job_id))
        reply = await self.raylet.call(rl.RegisterWorker(
            self.worker_id, os.getpid(), self.address, self.is_driver, self.job_id))
        self.lease_key = reply.lease_key
        if reply.store_fd >= 0:
            raylet = self.raylet
            self.node.object_store = StoreClient(
                reply.raylet_pid, reply.store_fd, reply.store_capacity,
                call=lambda m: self.io.run(raylet.call(m)),
                notify=lambda m: self.io.post(self._loop_notify, m), defer=self.io.post)

    async def _serve_tcp(self, handlers):
        """Listen on the first port of ``_listen_ports`` that no other process holds."""
        for port in self._listen_ports:
            try:
                return await rpc.serve(f"{self.node_ip}:{port}", lambda: handlers,
                                       name="core-worker")
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
        raise ConnectionError(
            f"{'driver' if self.is_driver else 'worker'} (pid {os.getpid()}) found no free "
            f"port on {self.node_ip} in the worker port range {self._port_range.source}: "
            "every port of it is in use. Widen the node's worker port range.")

    async def _gcs_reconnected(self, conn: rpc.Connection) -> None:
        """On a new GCS connection (a restarted GCS): take up the job and subscriptions.

        A restarted GCS reloaded the job from storage but knows no connection:
        the driver re-attaches to its job (so the job ends when this connection
        closes) and every process subscribes again to what it followed.
        """
        if self._job_subscription is not None:
            registration, subscription = self._job_subscription
            await conn.call(registration)
            await conn.call(subscription)
        await self.actor_submitter.resubscribe(conn)

    def _raylet_lost(self, conn) -> None:
        if not self.shutting_down and self.on_raylet_lost is not None:
            self.on_raylet_lost()

    # --- objects --------------------------------------------------------------------

    def owns(self, owner: Address | None) -> bool:
        return self.info.owns(owner)

    def put(self, value):
        """Store ``value`` with this process as its owner and return its ObjectRef."""
        return self.put_parts(*serialize_parts(value))

    def put_parts(self, data: bytes, buffers: list, refs: list, size: int):
        """``put`` of a value already serialized by ``serialize_parts``."""
        object_id = object_id_for_put(self.ids.task_id())
        serialized = self._place(object_id, self.address, data, buffers, refs, size)
        ref = self.make_ref(object_id, self.address)
        self.store.put(object_id, serialized)
        self.references.set_nested(object_id, serialized.nested_refs)
        if serialized.kind == VALUE_IN_STORE:
            self.references.owned_in_store(object_id, serialized.node_id)
        return ref

    def serialize_object(self, value, object_id: bytes, owner: Address) -> SerializedValue:
        """Serialize; a value above max_direct_call_object_size goes to this node's store.

        What comes back is either the value itself (small) or a marker naming
        the node whose store holds it. Not for the I/O thread.
        """
        return self._place(object_id, owner, *serialize_parts(value))

    def _place(self, object_id, owner, data, buffers, refs, size) -> SerializedValue:
        if size <= config.max_direct_call_object_size or self.object_store is None:
            return inline_value(data, buffers, refs, size)
        self.object_store.put(object_id, data, buffers, owner)
        return SerializedValue(VALUE_IN_STORE, nested_refs=refs, size=size,
                               node_id=self.node_id)

    def load(self, refs: list, values: list[SerializedValue]) -> list:
        """Python values for ``values`` (of ``refs``); reads the store in one batch."""
        in_store = [i for i, v in enumerate(values) if v.kind == VALUE_IN_STORE]
        if not in_store:
            return [deserialize(v) for v in values]
        views = self._read_store([refs[i] for i in in_store], [values[i] for i in in_store])
        out = []
        it = iter(views)
        for v in values:
            if v.kind == VALUE_IN_STORE:
                main, buffers = next(it)
                out.append(load_from_store(main, buffers))
            else:
                out.append(deserialize(v))
        return out

    def _read_store(self, refs: list, markers: list[SerializedValue]):
        """Views of stored values; those of other nodes are pulled here first (blocking)."""
        object_ids = [ref.object_id for ref in refs]
        remote = [(ref.object_id, m.node_id, ref.owner) for ref, m in zip(refs, markers)
                  if m.node_id != self.node_id]
        views = None
        for _ in range(2):  # a fresh copy may be evicted before we pin it: pull again
            if remote:
                blocked = self._notify_blocked()
                try:
                    self.objects.pull(remote)
                finally:
                    if blocked:
                        self._notify_unblocked()
            views = self.object_store.get(object_ids)
            missing = {oid for oid, view in zip(object_ids, views) if view is None}
            remote = [item for item in remote if item[0] in missing]
            if not remote:
                break
        for oid, view in zip(object_ids, views):
            if view is None:
                raise ObjectLostError(oid.hex(), message=(
                    f"Object {oid.hex()} is no longer in this node's object store: it was "
                    "freed because no reference to it was left."))
        return views

    def get(self, refs: list, timeout: float | None = None) -> list:
        """Values of ``refs``, in order; raises the first error found."""
        values = self.get_values(refs, timeout)
        if values is None:
            raise GetTimeoutError(f"get timed out after {timeout} s")
        return values

    def get_values(self, refs: list, timeout: float | None,
                   rebuilds_left: int = _MAX_REBUILDS) -> list | None:
        """Values of ``refs``, or None if ``timeout`` ran out.

        A value whose node died is rebuilt by running its task again, where
        its owner can (see lineage.py); this waits for the new value, up to
        ``timeout`` again, at most ``rebuilds_left`` times.
        """
        values = self.get_serialized(refs, timeout)
        if values is None:
            return None
        try:
            return self.load(refs, values)
        except ObjectLostError as exc:
            if rebuilds_left == 0 or not self._rebuild(refs, values, exc):
                raise
        return self.get_values(refs, timeout, rebuilds_left - 1)

    def _rebuild(self, refs: list, values: list, exc: ObjectLostError) -> bool:
        """After a failed pull: have the lost values made again. False if none can be."""
        remote = {ref.object_id: (ref, v) for ref, v in zip(refs, values)
                  if v.kind == VALUE_IN_STORE and v.node_id != self.node_id}
        if not remote:
            return False
        owned = [oid for oid, (ref, _) in remote.items() if self.owns(ref.owner)]
        borrowed = [ref for ref, _ in remote.values() if not self.owns(ref.owner)]
        if owned:
            outcome = self.io.run(self.lineage.loop_recover(owned), timeout=60)
            lost = bytes.fromhex(exc.object_ref_hex or "")
            if outcome.get(lost) and self.store.get(lost) is remote[lost][1]:
                return False  # its node lives: not a loss that running the task mends
            # Otherwise it is being made again, or now holds an error saying why not.
        for ref in borrowed:  # forget where it was; ask the owner again, saying lost
            self.store.delete(ref.object_id)
        if borrowed:
            self.io.post(self.ownership.loop_fetch, borrowed, True)
        return True

    def get_serialized(self, refs: list, timeout: float | None) -> list[SerializedValue] | None:
        """Serialized values of ``refs``, or None if ``timeout`` ran out."""
        store = self.store
        values = [store.get(ref.object_id) for ref in refs]
        missing = [ref for ref, v in zip(refs, values) if v is None]
        if missing:
            several = len(refs) > 1
            if several:
                _raise_first_error(values)  # known already: raised without waiting
            if not self._wait_for(missing, len({r.object_id for r in missing}), timeout,
                                  fetch=True, fail_fast=several):
                return None
            values = [v if v is not None else store.get(ref.object_id)
                      for ref, v in zip(refs, values)]
            if several:
                _raise_first_error(values)
            for ref, v in zip(refs, values):
                if v is None:  # freed while we waited
                    raise ObjectLostError(ref.hex())
        return values

    def _wait_for(self, refs: list, count: int, timeout: float | None,
                  fetch: bool, fail_fast: bool = False) -> bool:
        """Block until ``count`` of ``refs`` are in the memory store, or time out; with
        ``fail_fast``, also until one of them is an error."""
        ids = list({ref.object_id: None for ref in refs})
        waiter = FailFastWaiter(count, self.store) if fail_fast else CountdownWaiter(count)
        absent = self.store.wait_for(ids, waiter)
        waiter.satisfied(len(ids) - absent)
        if waiter.done:
            self.store.cancel_wait(ids, waiter)
            return True
        if fetch:
            borrowed = [ref for ref in refs if not self.owns(ref.owner)
                        and not self.store.contains(ref.object_id)]
            if borrowed:
                self.io.post(self.ownership.loop_fetch, borrowed)
        blocked = self._notify_blocked()
        try:
            ok = waiter.wait(timeout)
        finally:
            if blocked:
                self._notify_unblocked()
        if not ok:
            self.store.cancel_wait(ids, waiter)
            # The last object may have arrived between the timeout and the cancel.
            if sum(self.store.contains(i) for i in ids) >= count:
                return True
            return False
        if fail_fast and waiter.failed:  # woken early: still registered for the rest
            self.store.cancel_wait(ids, waiter)
        return True

    def wait_objects(self, refs: list, num_returns: int, timeout: float | None,
                     fetch_local: bool):
        """ray.wait: (ready, not_ready), each in the order of ``refs``."""
        ready_ids = {ref.object_id for ref in refs if self.store.contains(ref.object_id)}
        if len(ready_ids) < num_returns and (timeout is None or timeout > 0):
            self._wait_for(refs, num_returns, timeout, fetch=True)
        elif timeout == 0 and len(ready_ids) < num_returns:
            borrowed = [ref for ref in refs if not self.owns(ref.owner)
                        and ref.object_id not in ready_ids]
            if borrowed:
                self.io.post(self.ownership.loop_fetch, borrowed)
        ready, not_ready = [], []
        for ref in refs:
            if len(ready) < num_returns and self.store.contains(ref.object_id):
                ready.append(ref)
            else:
                not_ready.append(ref)
        return ready, not_ready

    def _handle_generator_item(self, conn, item: cw.GeneratorItem) -> None:
        task = self.submitter.tasks.get(item.task_id)
        if task is not None and task.generator is not None:
            # The generator holds the item's ref until its consumer takes it.
            ref = self.make_ref(item.value.object_id, self.address)
            self.submitter.store_result(item.value)
            task.generator.add_item(item.index, ref)

    def kill_actor(self, actor_id: bytes, *, no_restart: bool, reason: str) -> None:
        """Ask the GCS to kill an actor now (ember.kill), whatever it is doing."""
        self.io.run(self.gcs.call(gcs_msg.KillActor(
            actor_id, force=True, no_restart=no_restart, reason=reason)), timeout=30)

    def future_for(self, ref) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def ready(object_id, ref=ref):
            value = self.store.get(object_id)
            if value.kind == VALUE_IN_STORE and self.io.in_loop_thread():
                self._reader_pool().submit(resolve, value)
            else:
                resolve(value)

        def resolve(value, ref=ref):
            try:
                result, settle = self.load([ref], [value])[0], fut.set_result
            except BaseException as exc:  # noqa: BLE001 - the task's error
                result, settle = exc, fut.set_exception
            try:
                settle(result)
            except concurrent.futures.InvalidStateError:
                pass  # cancelled: its awaiter gave up (a timeout, or its loop closed)
        if self.store.wait_for([ref.object_id], CallbackWaiter(ready)) == 0:
            ready(ref.object_id)
        elif not self.owns(ref.owner):
            self.io.post(self.ownership.loop_fetch, [ref])
        return fut

    def _reader_pool(self):
        if self._readers is None:
            self._readers = concurrent.futures.ThreadPoolExecutor(
                max_workers=2, thread_name_prefix="ember-store-read")
        return self._readers

    # --- blocking -------------------------------------------------------------------

    def _notify_blocked(self) -> bool:
        """A worker's task is about to block: lend its CPU back to the raylet."""
        if self.is_driver or getattr(self.task_context, "task", None) is None:
            return False
        self.blocked_depth += 1
        if self.blocked_depth == 1:
            self.io.post(self._loop_notify, rl.NotifyBlocked())
        return True

    @contextlib.contextmanager
    def blocked(self):
        """While a task waits on something (not ``get``, which does this itself): its
        CPU is lent back to the raylet, so that what it waits for can run."""
        lent = self._notify_blocked()
        try:
            yield
        finally:
            if lent:
                self._notify_unblocked()

    def _notify_unblocked(self) -> None:
        self.blocked_depth -= 1
        if self.blocked_depth == 0:
            self.io.post(self._loop_notify, rl.NotifyUnblocked())

    def _loop_notify(self, message) -> None:
        if self.raylet is not None and not self.raylet.closed:
            self.raylet.notify(message)

    # --- tasks ----------------------------------------------------------------------

    def submit_task(self, spec: cw.TaskSpec, key, keep_alive, generator=None,
                    info=None) -> list:
        """Hand a built task to the submitter; returns the return ObjectRefs. ``info``:
        its task-event description, shared by the calls made alike."""
        n = spec.num_returns
        return_ids = [object_id_for_return(spec.task_id, i) for i in range(max(n, 1))]
        refs = [self.make_ref(oid, self.address) for oid in return_ids]
        task = PendingTask(spec, return_ids, keep_alive, key, self.current_task_id(), info)
        task.generator = generator
        self.io.post(self.submitter.submit, task)
        return refs

    def cancel(self, ref, force: bool, recursive: bool) -> None:
        """Cancel the task that makes ``ref``: an actor call, or a task (see ember.cancel)."""
        task_id = task_id_of(ref.object_id)
        if not self.owns(ref.owner):  # the owner submitted the task: it cancels it
            async def to_owner() -> None:
                owner = await self.peers.get(ref.owner, "owner")
                owner.notify(cw.CancelOwnedTask(task_id, force, recursive))
            self.io.run(to_owner(), timeout=30)
            return

        async def on_loop() -> str:
            if force and self.actor_submitter.is_pending(task_id):
                return "actor call"
            self._cancel_one(task_id, force, recursive)
            return ""
        if self.io.run(on_loop(), timeout=30) == "actor call":
            raise ValueError(
                "ember.cancel(force=True) is not supported for actor calls: an actor's "
                "process holds its state, and killing it would lose that. Cancel with "
                "force=False, or end the whole actor with ember.kill(actor).")

    def _cancel_one(self, task_id: bytes, force: bool, recursive: bool) -> None:
        # force does not apply to actor calls
        if not self.actor_submitter.cancel(task_id):
            self.submitter.cancel(task_id, force, recursive)

    def _handle_cancel_owned(self, conn, req: cw.CancelOwnedTask) -> None:
        if not (req.force and self.actor_submitter.is_pending(req.task_id)):
            self._cancel_one(req.task_id, req.force, req.recursive)

    def cancel_children(self, parent_id: bytes, force: bool) -> None:
        """I/O thread: a task running here was cancelled with ``recursive=True``:
        cancel every task and actor call it submitted that has not finished."""
        for task_id, task in list(self.submitter.tasks.items()):
            if task.parent == parent_id:
                self._cancel_one(task_id, force, True)

    def pin_captured(self, pickled: bytes, refs: list) -> bytes:
        """Hold the refs a remote function or actor class captured for the job's
        life (see serialization.dumps_definition); returns ``pickled``."""
        for info in refs:
            if info.object_id not in self._captured:
                self._captured[info.object_id] = self.make_ref(info.object_id, info.owner)
        return pickled

    def current_task_id(self) -> bytes | None:
        """The task this thread runs (None in a driver's main thread)."""
        return getattr(self.task_context, "task", None)

    # --- shutdown -------------------------------------------------------------------

    def shutdown(self) -> None:
        if self.shutting_down:
            return
        self.info.shutting_down = True
        try:
            self.io.run(self._loop_shutdown(), timeout=5)
        except Exception:
            pass
        self.io.stop()
        if context.core is self:
            context.core = None

    async def _loop_shutdown(self) -> None:
        if self.is_driver:
            await self.objects.loop_free_remote_copies()
        if self.gcs is not None:
            self.gcs.stop_reconnecting()
        self.task_events.stop()
        if self.is_driver and self.gcs is not None and self.gcs.connected:
            self.task_events.flush()
            try:
                await self.gcs.call(gcs_msg.MarkJobFinished(self.job_id), timeout=2)
            except Exception:
                pass
        for server in self._servers:
            server.close()
        self.peers.close_all()
        for conn in (self.raylet, self.gcs):
            if conn is not None:
                conn.close()
        try:
            os.unlink(self.address.unix)
        except (FileNotFoundError, AttributeError):
            pass

    def _handle_stats(self, conn, req) -> cw.CoreWorkerStatsReply:
        """The references this process holds (``ember memory``, ``list_objects``) and the
        runtime envs it set up (``list_runtime_envs``)."""
        infos = []
        for object_id, ref in self.references.snapshot():
            value = self.store.get(object_id)
            if ref.local:
                kind = "ACTOR_HANDLE" if is_actor_handle_id(object_id) else "LOCAL_REFERENCE"
            elif ref.contained:
                kind = "CAPTURED_IN_OBJECT"
            else:
                kind = "BORROWED_BY_OTHERS"
            owner = ref.owner.worker_id if ref.owner is not None else self.worker_id
            infos.append(cw.ReferenceInfo(
                object_id, kind, value.size if value is not None else -1, owner,
                value is not None and value.kind == VALUE_IN_STORE, ref.call_site))
        envs = self.executor.runtime_envs.uses() if self.executor is not None else []
        return cw.CoreWorkerStatsReply(self.worker_id, os.getpid(), self.is_driver, infos, envs)

    def debug_state(self) -> dict:
        return {"memory_store": self.store.debug_state(),
                "references": self.references.debug_state(),
                "submitter": self.submitter.debug_state()}
