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
import logging
import os
import sys
import threading

from .. import rpc
from ..config import config
from ..exceptions import GetTimeoutError, ObjectLostError, OwnerDiedError
from ..ids import IdFactory, object_id_for_put, object_id_for_return
from ..protocol import core_worker as cw
from ..protocol import gcs as gcs_msg
from ..protocol import raylet as rl
from ..protocol.common import VALUE_ERROR, Address, SerializedValue
from . import context
from .actor_submitter import ActorTaskSubmitter
from .dependency_resolver import DependencyResolver
from .event_loop import LoopThread
from .function_manager import FunctionManager
from .memory_store import CallbackWaiter, CountdownWaiter, MemoryStore
from .reference_counter import ReferenceCounter
from .serialization import deserialize, error_value, serialize
from .task_submitter import NormalTaskSubmitter, PendingTask

logger = logging.getLogger(__name__)


class CoreWorker:
    def __init__(self, *, is_driver: bool, node_id: bytes, node_ip: str,
                 raylet_socket: str, gcs_address: str, session_dir: str,
                 worker_id: bytes | None = None):
        self.is_driver = is_driver
        self.node_id = node_id
        self.node_ip = node_ip
        self.raylet_socket = raylet_socket
        self.gcs_address = gcs_address
        self.session_dir = session_dir
        self.worker_id = worker_id or os.urandom(28)
        self.job_id = b"\x00" * 4
        #: The actor this process hosts; b"" for drivers and task workers.
        self.actor_id = b""
        self.namespace = ""
        self.ids = IdFactory()
        self.io = LoopThread("ember-io")
        lock = threading.RLock()
        self.store = MemoryStore(lock)
        self.references = ReferenceCounter(lock, self.store)
        self.dependencies = DependencyResolver(self)
        self.submitter = NormalTaskSubmitter(self)
        self.actor_submitter = ActorTaskSubmitter(self)
        self.functions = FunctionManager(self)
        self.address: Address | None = None
        self.raylet: rpc.Connection | None = None
        self.gcs: rpc.Connection | None = None
        self._servers = []
        self._peer_conns: dict[str, rpc.Connection] = {}
        self._connecting: dict[str, object] = {}
        #: Extra RPC handlers, installed by the executor in worker processes.
        self.handlers: dict = {
            cw.GetObjectStatus: self._handle_get_object_status,
            cw.GeneratorItem: self._handle_generator_item,
        }
        #: The task this thread is executing, set by the executor (worker only).
        self.task_context = threading.local()
        self.blocked_depth = 0
        #: Refs nested in put values, kept alive as long as the outer value.
        self._nested_keepalive: dict[bytes, list] = {}
        #: Borrowed objects being fetched from their owners.
        self._fetching: set[bytes] = set()
        self.references.on_zero.append(self._nested_keepalive_drop)
        self.shutting_down = False
        self.on_raylet_lost = None

    # --- connecting ---------------------------------------------------------------

    def connect(self, job_config: dict | None = None) -> None:
        """Start serving, connect to the raylet and the GCS, and register."""
        self.io.run(self._loop_connect(job_config))
        self.references.own_address = self.address
        context.core = self

    async def _loop_connect(self, job_config) -> None:
        sock_dir = os.path.join(self.session_dir, "sockets")
        os.makedirs(sock_dir, exist_ok=True)
        unix_path = os.path.join(sock_dir, ("driver-" if self.is_driver else "worker-")
                                 + self.worker_id.hex()[:12])
        handlers = self.handlers
        self._servers.append(await rpc.serve("unix:" + unix_path, lambda: handlers,
                                             name="core-worker"))
        tcp = await rpc.serve(f"{self.node_ip}:0", lambda: handlers, name="core-worker")
        self._servers.append(tcp)
        self.address = Address(self.node_id, self.node_ip,
                               tcp.sockets[0].getsockname()[1], unix_path, self.worker_id)
        self.raylet = await rpc.connect("unix:" + self.raylet_socket, name="raylet",
                                        on_close=self._raylet_lost)
        self.gcs = await rpc.connect(self.gcs_address, self._gcs_handlers(), name="gcs")
        if self.is_driver:
            reply = await self.gcs.call(gcs_msg.RegisterJob(
                driver_pid=os.getpid(), driver_address=self.address,
                namespace=job_config["namespace"],
                code_search_path=job_config["code_search_path"],
                entrypoint=" ".join(sys.argv)))
            self.job_id = reply.job_id
            self.ids.job_id = self.job_id
            self.namespace = job_config["namespace"]
            channels = [gcs_msg.CHANNEL_ERROR]
            if job_config.get("log_to_driver", True):
                channels.append(gcs_msg.CHANNEL_LOG)
            await self.gcs.call(gcs_msg.Subscribe(channels, self.job_id))
        await self.raylet.call(rl.RegisterWorker(
            self.worker_id, os.getpid(), self.address, self.is_driver, self.job_id))

    def _gcs_handlers(self) -> dict:
        from . import log_printer
        return {gcs_msg.LogBatch: log_printer.print_logs,
                gcs_msg.ErrorInfo: log_printer.print_error,
                gcs_msg.ActorChanged: self.actor_submitter.actor_changed}

    def _raylet_lost(self, conn) -> None:
        if not self.shutting_down and self.on_raylet_lost is not None:
            self.on_raylet_lost()

    async def connect_raylet(self, address: Address) -> rpc.Connection:
        return await self._peer(address, "raylet")

    async def connect_worker(self, address: Address) -> rpc.Connection:
        return await self._peer(address, "worker")

    async def _peer(self, address: Address, name: str) -> rpc.Connection:
        """A cached connection to another process; one per address."""
        where = rpc.address_string(address, self.node_id)
        conn = self._peer_conns.get(where)
        if conn is not None and not conn.closed:
            return conn
        pending = self._connecting.get(where)
        if pending is not None:
            return await pending
        fut = self.io.loop.create_future()
        self._connecting[where] = fut
        try:
            conn = await rpc.connect(where, self.handlers, name=f"{name} {where}",
                                     timeout=10.0,
                                     on_close=lambda c, w=where: self._peer_closed(w, c))
            self._peer_conns[where] = conn
            fut.set_result(conn)
            return conn
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved
            raise
        finally:
            del self._connecting[where]

    def _peer_closed(self, where: str, conn) -> None:
        if self._peer_conns.get(where) is conn:
            del self._peer_conns[where]

    # --- objects --------------------------------------------------------------------

    def owns(self, owner: Address | None) -> bool:
        return owner is None or owner.worker_id == self.worker_id

    def put(self, value, _owner_ref_cls=None):
        """Store ``value`` in this process (the owner) and return its ObjectRef."""
        from ..object_ref import ObjectRef
        serialized = serialize(value)
        object_id = object_id_for_put(self.ids.task_id())
        ref = ObjectRef(object_id, self.address)
        self.store.put(object_id, serialized)
        keep = [ObjectRef(info.object_id, info.owner) for info in serialized.nested_refs]
        if keep:
            self._nested_keepalive[object_id] = keep
        return ref

    def _nested_keepalive_drop(self, object_id: bytes) -> None:
        if self._nested_keepalive:
            self._nested_keepalive.pop(object_id, None)

    def get(self, refs: list, timeout: float | None = None) -> list:
        """Values of ``refs``, in order; raises the first error found."""
        values = self.get_serialized(refs, timeout)
        if values is None:
            raise GetTimeoutError(f"get timed out after {timeout} s")
        return [deserialize(v) for v in values]

    def get_serialized(self, refs: list, timeout: float | None) -> list[SerializedValue] | None:
        """Serialized values of ``refs``, or None if ``timeout`` ran out."""
        store = self.store
        values = [store.get(ref._id) for ref in refs]
        missing = [ref for ref, v in zip(refs, values) if v is None]
        if missing:
            if not self._wait_for(missing, len({r._id for r in missing}), timeout,
                                  fetch=True):
                return None
            values = [v if v is not None else store.get(ref._id)
                      for ref, v in zip(refs, values)]
            for ref, v in zip(refs, values):
                if v is None:  # freed while we waited
                    raise ObjectLostError(ref.hex())
        return values

    def _wait_for(self, refs: list, count: int, timeout: float | None,
                  fetch: bool) -> bool:
        """Block until ``count`` of ``refs`` are in the memory store, or time out."""
        ids = list({ref._id: None for ref in refs})
        waiter = CountdownWaiter(count)
        absent = self.store.wait_for(ids, waiter)
        shortfall = count - (len(ids) - absent)
        if shortfall <= 0:
            self.store.cancel_wait(ids, waiter)
            return True
        waiter._remaining = shortfall
        if fetch:
            borrowed = [ref for ref in refs if not self.owns(ref._owner)
                        and not self.store.contains(ref._id)]
            if borrowed:
                self.io.post(self._loop_fetch, borrowed)
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
        return True

    def wait_objects(self, refs: list, num_returns: int, timeout: float | None,
                     fetch_local: bool):
        """ray.wait: (ready, not_ready), each in the order of ``refs``."""
        ready_ids = {ref._id for ref in refs if self.store.contains(ref._id)}
        if len(ready_ids) < num_returns and (timeout is None or timeout > 0):
            self._wait_for(refs, num_returns, timeout, fetch=True)
        elif timeout == 0 and len(ready_ids) < num_returns:
            borrowed = [ref for ref in refs if not self.owns(ref._owner)
                        and ref._id not in ready_ids]
            if borrowed:
                self.io.post(self._loop_fetch, borrowed)
        ready, not_ready = [], []
        for ref in refs:
            if len(ready) < num_returns and self.store.contains(ref._id):
                ready.append(ref)
            else:
                not_ready.append(ref)
        return ready, not_ready

    def _loop_fetch(self, refs: list) -> None:
        for ref in refs:
            if not self.store.contains(ref._id) and ref._id not in self._fetching:
                self._fetching.add(ref._id)
                self.io.loop.create_task(self._loop_fetch_one(ref._id, ref._owner))

    async def _loop_fetch_one(self, object_id: bytes, owner: Address) -> None:
        """Ask the owner of a borrowed object for its value."""
        try:
            conn = await self._peer(owner, "owner")
            reply = await conn.call(cw.GetObjectStatus(object_id))
            if reply.status == "ready":
                value = reply.value
            else:
                value = error_value(ObjectLostError(
                    object_id.hex(), message=f"Object {object_id.hex()} was freed by its "
                    f"owner (worker {owner.worker_id.hex()[:8]} at {owner.ip}) before it "
                    "could be read. Keep a reference to it in the owner while others use it."))
        except (ConnectionError, rpc.RemoteError) as exc:
            value = error_value(OwnerDiedError(
                object_id.hex(), message=f"The owner of object {object_id.hex()} (worker "
                f"{owner.worker_id.hex()[:8]} at {owner.ip}:{owner.port}) has died, so the "
                f"object cannot be read ({exc}). An object lives only as long as the process "
                "that created it with .remote() or put()."))
        finally:
            self._fetching.discard(object_id)
        self.references.put_if_referenced(object_id, value)

    def _handle_get_object_status(self, conn, req: cw.GetObjectStatus):
        value = self.store.get(req.object_id)
        if value is not None:
            return cw.GetObjectStatusReply("ready", value)
        if not self.references.is_referenced(req.object_id):
            return cw.GetObjectStatusReply("freed")
        fut = self.io.loop.create_future()

        def ready(object_id):
            self.io.post(_resolve, fut, self.store.get(object_id))
        self.store.wait_for([req.object_id], CallbackWaiter(ready))

        async def reply():
            value = await fut
            if value is None:
                return cw.GetObjectStatusReply("freed")
            return cw.GetObjectStatusReply("ready", value)
        return reply()

    def _handle_generator_item(self, conn, item: cw.GeneratorItem) -> None:
        task = self.submitter.tasks.get(item.task_id)
        if task is not None and task.generator is not None:
            self.store.put(item.value.object_id, item.value.value)
            task.generator.add_item(item.index, item.value.object_id)

    def future_for(self, ref) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def ready(object_id, ref=ref):
            value = self.store.get(object_id)
            try:
                fut.set_result(deserialize(value))
            except BaseException as exc:  # noqa: BLE001 - the task's error
                fut.set_exception(exc)
        if self.store.wait_for([ref._id], CallbackWaiter(ready)) == 0:
            ready(ref._id)
        elif not self.owns(ref._owner):
            self.io.post(self._loop_fetch, [ref])
        return fut

    # --- blocking -------------------------------------------------------------------

    def _notify_blocked(self) -> bool:
        """A worker's task is about to block: lend its CPU back to the raylet."""
        if self.is_driver or getattr(self.task_context, "task", None) is None:
            return False
        self.blocked_depth += 1
        if self.blocked_depth == 1:
            self.io.post(self._loop_notify, rl.NotifyBlocked())
        return True

    def _notify_unblocked(self) -> None:
        self.blocked_depth -= 1
        if self.blocked_depth == 0:
            self.io.post(self._loop_notify, rl.NotifyUnblocked())

    def _loop_notify(self, message) -> None:
        if self.raylet is not None and not self.raylet.closed:
            self.raylet.notify(message)

    # --- tasks ----------------------------------------------------------------------

    def submit_task(self, spec: cw.TaskSpec, key, keep_alive, generator=None) -> list:
        """Hand a built task to the submitter; returns the return ObjectRefs."""
        from ..object_ref import ObjectRef
        n = spec.num_returns
        return_ids = [object_id_for_return(spec.task_id, i) for i in range(max(n, 1))]
        refs = [ObjectRef(oid, self.address) for oid in return_ids]
        task = PendingTask(spec, return_ids, keep_alive, key)
        task.generator = generator
        self.io.post(self.submitter.submit, task)
        return refs

    def unresolved_dependencies(self, task: PendingTask) -> list[bytes]:
        deps = [arg.object_id for arg in task.spec.args
                if arg.object_id and self.owns(arg.owner)
                and not self.store.contains(arg.object_id)]
        export = self.functions.export_marker(task.spec.function_id)
        if export is not None and not self.store.contains(export):
            deps.append(export)
        return deps

    def inline_dependencies(self, spec: cw.TaskSpec):
        """Replace owned small ref arguments by their values.

        Returns the error returns if an argument holds an error: such a task
        fails with that error without running, as in Ray.
        """
        for arg in spec.args:
            if arg.object_id and self.owns(arg.owner):
                value = self.store.get(arg.object_id)
                if value is None:
                    continue
                if value.kind == VALUE_ERROR:
                    n = max(spec.num_returns, 1)
                    return [cw.ReturnObject(object_id_for_return(spec.task_id, i), value)
                            for i in range(n)]
                arg.value = value
                arg.object_id = b""
                arg.owner = None
        return None

    def cancel(self, ref, force: bool, recursive: bool) -> None:
        task_id = ref._id[:24]
        self.io.post(self.submitter.cancel, task_id, force)

    # --- shutdown -------------------------------------------------------------------

    def shutdown(self) -> None:
        if self.shutting_down:
            return
        self.shutting_down = True
        try:
            self.io.run(self._loop_shutdown(), timeout=5)
        except Exception:
            pass
        self.io.stop()
        if context.core is self:
            context.core = None

    async def _loop_shutdown(self) -> None:
        if self.is_driver and self.gcs is not None and not self.gcs.closed:
            try:
                await self.gcs.call(gcs_msg.MarkJobFinished(self.job_id), timeout=2)
            except Exception:
                pass
        for server in self._servers:
            server.close()
        for conn in list(self._peer_conns.values()):
            conn.close()
        for conn in (self.raylet, self.gcs):
            if conn is not None:
                conn.close()
        try:
            os.unlink(self.address.unix)
        except (FileNotFoundError, AttributeError):
            pass

    def debug_state(self) -> dict:
        return {"memory_store": self.store.debug_state(),
                "references": self.references.debug_state(),
                "submitter": self.submitter.debug_state()}


def _resolve(fut, value) -> None:
    if not fut.done():
        fut.set_result(value)


