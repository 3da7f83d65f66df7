"""A raylet and its workers with no processes, for unit tests of the task submitter.

The submitter talks to two kinds of peers: its node's raylet (lease requests,
lease returns and cancels, "why did this worker die") and the workers it
leases (pushes and cancels). :class:`FakeNode` answers both with the real
messages of :mod:`ember.protocol`, over real connections joined in memory
(:mod:`ember.rpc.inprocess`), so the submitter runs unchanged and every
message it sends crosses an encoder as it would on the wire. Its ``peers``
stands in for :class:`ember.rpc.pool.Peers`.

What takes a process or time in a real node is a call here, made by the test
when it wants it to happen: :meth:`FakeNode.grant` (a held lease request is
granted), :meth:`FakeWorker.release` (held task replies are sent),
:meth:`FakeWorker.die` (the worker's connections close, as when its process
exits). By default leases are granted at once and tasks reply at once, with
the task's function name as each of its returns (a small inline value).
"""
from __future__ import annotations

import asyncio
import itertools
import typing

from ..ids import object_id_for_return
from ..protocol import core_worker as cw
from ..protocol import raylet as rl
from ..protocol.common import Address
from ..rpc.connection import ConnectionLost
from ..rpc.inprocess import connection_pair
from .serialization import serialize

#: What a fake worker's task returns: the spec in, the Python value of each return out.
TaskBody = typing.Callable[[cw.TaskSpec], object]


class FakeWorker:
    """A leased worker that runs every pushed task by calling ``body`` on its spec."""

    def __init__(self, address: Address, pid: int, lease_id: bytes, body: TaskBody,
                 hold_replies: bool):
        self.address = address
        #: The lease the worker was lent under.
        self.lease_id = lease_id
        self.pid = pid
        self.body = body
        #: While True, replies wait until :meth:`release`.
        self.hold_replies = hold_replies
        #: Every PushTask received, in order.
        self.pushes: list[cw.PushTask] = []
        #: Every CancelTask received, in order.
        self.cancels: list[cw.CancelTask] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.dead = False
        self._held: list[tuple[cw.PushTask, asyncio.Future]] = []
        self.connections: list = []

    @property
    def handlers(self) -> dict:
        return {cw.PushTask: self._push, cw.CancelTask: self._cancel}

    def _push(self, conn, msg: cw.PushTask):
        self.pushes.append(msg)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        if not self.hold_replies:
            self.in_flight -= 1
            return self._reply(msg.spec)
        fut = asyncio.get_running_loop().create_future()
        self._held.append((msg, fut))
        return fut

    def _reply(self, spec: cw.TaskSpec) -> cw.PushTaskReply:
        value = serialize(self.body(spec))
        return cw.PushTaskReply(
            [cw.ReturnObject(object_id_for_return(spec.task_id, i), value)
             for i in range(max(spec.num_returns, 1))], duration=0.001)

    def _cancel(self, conn, msg: cw.CancelTask) -> None:
        self.cancels.append(msg)

    @property
    def held(self) -> list[cw.TaskSpec]:
        """The specs of the tasks whose replies are held, oldest first."""
        return [msg.spec for msg, _ in self._held]

    def release(self, n: int | None = None) -> None:
        """Send the replies of the ``n`` oldest held tasks (all by default)."""
        count = len(self._held) if n is None else n
        release, self._held = self._held[:count], self._held[count:]
        for msg, fut in release:
            self.in_flight -= 1
            if not fut.done():
                fut.set_result(self._reply(msg.spec))

    def die(self) -> None:
        """The worker's process is gone: every connection to it closes."""
        self.dead = True
        self._held.clear()
        for conn in self.connections:
            conn.close()


class FakeNode:
    """One node's raylet and the workers it lends, in this process.

    ``grant_leases``: grant each lease request as it comes (else they wait
    for :meth:`grant`). ``hold_replies``: the workers hold task replies
    until released. ``body``: what every task returns, by default its
    function name.
    """

    def __init__(self, node_id: bytes = b"n" * 28, grant_leases: bool = True,
                 hold_replies: bool = False, body: TaskBody | None = None):
        self.node_id = node_id
        self.grant_leases = grant_leases
        self.hold_replies = hold_replies
        self.body = body or (lambda spec: spec.function_name)
        self.address = Address(node_id, "127.0.0.1", 7000)
        #: worker id -> worker, every one ever leased.
        self.workers: dict[bytes, FakeWorker] = {}
        #: lease id -> worker, leases not returned yet.
        self.leases: dict[bytes, FakeWorker] = {}
        #: Lease requests waiting for :meth:`grant`, oldest first.
        self.waiting: dict[bytes, asyncio.Future] = {}
        #: What the owner sent, in order.
        self.requests: list[rl.RequestWorkerLease] = []
        self.returned: list[rl.ReturnWorker] = []
        self.cancelled: list[bytes] = []
        self.killed: list[rl.KillWorker] = []
        self._ids = itertools.count(1)
        self._raylet_conns: list = []
        self.peers = FakePeers(self)

    # --- the raylet ---------------------------------------------------------------------

    def connect_raylet(self):
        """The owner's end of a new connection to this raylet."""
        owner_end, raylet_end = connection_pair(None, {
            rl.RequestWorkerLease: self._request_lease,
            rl.ReturnWorker: self._return_worker,
            rl.CancelWorkerLease: self._cancel_lease,
            rl.KillWorker: self._kill_worker,
            rl.GetWorkerFailureCause: self._failure_cause,
        }, name_a="raylet", name_b="owner")
        self._raylet_conns.append(raylet_end)
        return owner_end

    def _request_lease(self, conn, msg: rl.RequestWorkerLease):
        self.requests.append(msg)
        if self.grant_leases:
            return self._granted(msg.lease_id)
        fut = asyncio.get_running_loop().create_future()
        self.waiting[msg.lease_id] = fut
        return fut

    def grant(self, n: int = 1) -> list[FakeWorker]:
        """Grant the ``n`` oldest waiting lease requests; returns their workers."""
        granted = []
        for lease_id in list(self.waiting)[:n]:
            reply = self._granted(lease_id)
            self.waiting.pop(lease_id).set_result(reply)
            granted.append(self.leases[lease_id])
        return granted

    def _granted(self, lease_id: bytes) -> rl.LeaseGranted:
        n = next(self._ids)
        worker = FakeWorker(Address(self.node_id, "127.0.0.1", 8000 + n,
                                    worker_id=n.to_bytes(28, "big")),
                            1000 + n, lease_id, self.body, self.hold_replies)
        self.workers[worker.address.worker_id] = worker
        self.leases[lease_id] = worker
        return rl.LeaseGranted(lease_id, worker.address, worker.pid)

    def _return_worker(self, conn, msg: rl.ReturnWorker) -> None:
        self.returned.append(msg)
        self.leases.pop(msg.lease_id, None)

    def _cancel_lease(self, conn, msg: rl.CancelWorkerLease) -> None:
        self.cancelled.append(msg.lease_id)
        fut = self.waiting.pop(msg.lease_id, None)
        if fut is not None:
            fut.set_result(rl.LeaseCanceled())

    def _kill_worker(self, conn, msg: rl.KillWorker) -> None:
        self.killed.append(msg)
        worker = self.workers.get(msg.worker_id)
        if worker is not None:
            worker.die()

    def _failure_cause(self, conn, msg: rl.GetWorkerFailureCause):
        worker = self.workers.get(msg.worker_id)
        cause = "the worker's process died (fake node)" if worker and worker.dead else ""
        return rl.GetWorkerFailureCauseReply(cause)

    def live_workers(self) -> list[FakeWorker]:
        return [w for w in self.workers.values() if not w.dead]


class FakePeers:
    """Connections to a fake node's raylet and workers, by address, as ``Peers.get``."""

    def __init__(self, node: FakeNode):
        self._node = node
        #: worker id -> the owner's end of the connection to that worker.
        self._workers: dict[bytes, object] = {}

    async def get(self, address: Address, role: str):
        if not address.worker_id:
            return self._node.connect_raylet()
        worker = self._node.workers.get(address.worker_id)
        if worker is None or worker.dead:
            raise ConnectionLost(f"connection to {role} refused")
        conn = self._workers.get(address.worker_id)
        if conn is None or conn.closed:
            conn, worker_end = connection_pair(None, worker.handlers, name_a=role,
                                               name_b="owner")
            worker.connections.append(worker_end)
            self._workers[address.worker_id] = conn
        return conn
