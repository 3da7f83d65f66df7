"""The local lease manager: grant workers to owners as resources allow.

A lease request that the cluster scheduler placed on this node waits here until
(1) its resources can be allocated and (2) an idle worker of its job exists.
Requests are queued per scheduling key, so a large request that cannot fit
does not block small requests of another key behind it (no head-of-line
blocking across keys), while requests of one key keep their order.

Resources are allocated before a worker is found: a request that holds its
resources while a worker starts cannot be overtaken, which keeps big requests
from starving.

A worker whose task blocks in ``ray.get`` lends its CPUs back (NotifyBlocked)
so that the tasks it waits on can run; it takes them back when it unblocks,
even if that briefly oversubscribes the node. Without this, nested tasks
deadlock a full pool.

Events in, instructions out
---------------------------
This module is policy only, with no event loop and no clock of its own (as in
dask's ``worker_state_machine``): every event is a method call (``queue``,
``cancel``, ``dispatch``, ``return_worker``, ``worker_died``, ...), and what
must then happen outside is appended to an outbox that the caller empties with
:meth:`LocalLeaseManager.drain`, as :data:`Instruction` values:

- :class:`Reply`: answer a lease request (granted, canceled or failed). The
  manager holds no futures: who waits for a reply, and how, is the caller's
  business (:mod:`.lease_service` keeps an asyncio future per waiting lease);
- :class:`KillAfter`: kill a worker after a delay, which needs a timer;
- :class:`DispatchSoon`: run :meth:`~LocalLeaseManager.dispatch` at the end
  of this loop turn. Workers registering, bundles committing and cancels all
  ask for it; the manager emits it once until that dispatch runs, so a burst
  of them costs one pass over the queues;
- :class:`AvailabilityChanged`: the node's available resources changed; other
  nodes place their work by the report it leads to. Emitted at most once per
  drain.

So every rule here (order per key, lending, cancel, owner gone, port
exhaustion) is tested by calling methods and reading the instructions, with
no loop, no sleeps and no processes; the raylet's shell only carries them out.

The worker pool stays a direct call, through the narrow :class:`LeaseWorkers`
interface (with :class:`~.fake_worker_pool.FakeWorkerPool` beside it): the
manager needs its answers at once (``pop`` gives the worker to grant,
``start_worker`` returning None means the port range is used up and the
waiting leases must fail), so making those instructions would split one
dispatch pass into a round trip of events and let another event run between
allocating and granting. ``kill`` stays with its siblings so that every change
to a worker goes through one interface; only the delayed kill, which needs a
timer, is an instruction. Instructions are immutable ``msgspec`` structs, and
the two without fields are shared singletons (:data:`DISPATCH_SOON`,
:data:`AVAILABILITY_CHANGED`): the instructions add one small :class:`Reply`
per answered lease to a dispatch pass, and nothing else. (The clock is passed
in too, for the grant times the memory monitor orders its victims by.)

A lease's life here (:class:`LeaseState`; :meth:`Lease.transition` allows only
these edges)::

    PENDING ──queue──► QUEUED ──allocate──► WAITING_FOR_WORKER ──pop──► GRANTED
       ▲                 │  │                   │                        │
       └──take_waiting───┘  └─cancel / fail─────┴──► CANCELED / FAILED   │
                                                                         ▼
                             returned, worker died, owner gone ──► RETURNED

Every lease that leaves QUEUED or WAITING_FOR_WORKER other than by
``take_waiting`` gets exactly one :class:`Reply`; every lease that reaches a
final state has given its resources back.
"""
from __future__ import annotations

import collections
import enum
import logging
import signal
import time
import typing

import msgspec

from ..exceptions import IllegalTransition
from ..protocol import raylet as msg
from ..rpc.auth import lease_grant
from .resources import Allocation, NodeResources, fixed_request
from .worker_pool import WorkerHandle

logger = logging.getLogger(__name__)

#: How long a worker its owner reported failed may take to exit on its own.
FAILED_WORKER_GRACE_S = 1.0


class LeaseState(enum.Enum):
    PENDING = "pending"          # not (or no longer) queued here: the cluster lease
                                 # manager decides where it goes
    QUEUED = "queued"            # in its key's queue, waiting for resources
    WAITING_FOR_WORKER = "waiting for worker"  # holds its resources; a worker starts
    GRANTED = "granted"          # a worker is lent to the owner
    RETURNED = "returned"        # the worker came back, died, or its owner went away
    CANCELED = "canceled"        # the owner cancelled it (or went away) while queued
    FAILED = "failed"            # it cannot run here (no port for a worker, group gone)


#: The moves of the diagram in the module docstring: state -> the states it may go to next.
_LEASE_EDGES = {
    LeaseState.PENDING: frozenset({LeaseState.QUEUED}),
    LeaseState.QUEUED: frozenset({LeaseState.WAITING_FOR_WORKER, LeaseState.PENDING,
                                  LeaseState.CANCELED, LeaseState.FAILED}),
    LeaseState.WAITING_FOR_WORKER: frozenset({LeaseState.GRANTED, LeaseState.CANCELED,
                                              LeaseState.FAILED}),
    LeaseState.GRANTED: frozenset({LeaseState.RETURNED}),
    LeaseState.RETURNED: frozenset(),
    LeaseState.CANCELED: frozenset(),
    LeaseState.FAILED: frozenset(),
}


class Lease:
    """One lease request, from queued to granted to returned."""

    __slots__ = ("request", "fixed", "allocation", "worker", "owner_conn", "lent",
                 "granted_at", "state")

    def __init__(self, request: msg.RequestWorkerLease, owner_conn):
        #: Changed only by :meth:`transition`.
        self.state = LeaseState.PENDING
        self.request = request
        self.fixed = fixed_request(request.resources)
        #: Held from QUEUED -> WAITING_FOR_WORKER until the lease ends; None otherwise.
        self.allocation: Allocation | None = None
        self.worker: WorkerHandle | None = None
        self.owner_conn = owner_conn
        #: CPU amount lent back while the worker is blocked; 0 unless ``allocation`` is held.
        self.lent = 0
        #: When a worker was granted (the manager's clock); the memory monitor kills the
        #: newest first.
        self.granted_at = 0.0

    @property
    def lease_id(self) -> bytes:
        return self.request.lease_id

    def transition(self, new: LeaseState) -> None:
        """The only way ``state`` changes: along an edge of ``_LEASE_EDGES``."""
        if new not in _LEASE_EDGES[self.state]:
            raise IllegalTransition(f"lease {self.lease_id.hex()} ({self.request.description})",
                                    self.state, new)
        self.state = new


# --- instructions: what the manager asks its caller to do ----------------------------


class Reply(msgspec.Struct, frozen=True):
    """Answer ``lease``'s request; each lease gets one, when it is granted or ends queued."""

    lease: Lease
    reply: msg.LeaseGranted | msg.LeaseCanceled | msg.LeaseFailed


class KillAfter(msgspec.Struct, frozen=True):
    """Kill ``worker`` (through the pool) once ``delay_s`` has passed, if it still runs."""

    worker: WorkerHandle
    delay_s: float
    reason: str


class DispatchSoon(msgspec.Struct, frozen=True):
    """Call :meth:`LocalLeaseManager.dispatch` at the end of this loop turn."""


class AvailabilityChanged(msgspec.Struct, frozen=True):
    """The node's available resources changed: report them (other nodes place work by it)."""


#: The instructions without fields are shared: emitting them allocates nothing.
DISPATCH_SOON = DispatchSoon()
AVAILABILITY_CHANGED = AvailabilityChanged()

Instruction = Reply | KillAfter | DispatchSoon | AvailabilityChanged

_NOTHING: tuple = ()


class LeaseWorkers(typing.Protocol):
    """What the lease manager needs of a worker pool: :class:`~.worker_pool.WorkerPool` in the
    raylet, :class:`~ember.raylet.fake_worker_pool.FakeWorkerPool` in unit tests."""

    def pop(self, job_id: bytes) -> WorkerHandle | None:
        """An idle worker, now LEASED and bound to ``job_id``; None if there is none."""

    def push(self, handle: WorkerHandle) -> None:
        """A lease ended: the worker goes back to idle (unless it died meanwhile)."""

    def num_starting(self) -> int:
        """Workers started and not registered yet."""

    def start_worker(self) -> WorkerHandle | None:
        """Start one more worker; None when no port is left for it."""

    def ports_exhausted(self) -> str:
        """Why start_worker returned None, for the error the leases fail with."""

    def kill(self, handle: WorkerHandle, reason: str, sig: int = signal.SIGKILL) -> None:
        """Signal the worker's process; its death is reported later (worker_died)."""


class LocalLeaseManager:
    """The leases of one node: queued per scheduling key, granted, and ended.

    Owned by one thread (the raylet's loop); every method is an event and
    returns at once. What it asks of the outside waits in the outbox until
    :meth:`drain`.
    """

    def __init__(self, resources: NodeResources, pool: LeaseWorkers, max_starting: int,
                 clock: typing.Callable[[], float] = time.monotonic):
        self.resources = resources
        self.pool = pool
        self.max_starting = max(1, max_starting)
        self._clock = clock
        #: Scheduling key -> its queued leases in arrival order; never an empty deque.
        self._queues: dict[bytes, collections.deque[Lease]] = {}
        #: Granted leases by id: exactly the leases in state GRANTED.
        self.granted: dict[bytes, Lease] = {}
        #: Queued leases by id: exactly those in the deques of ``_queues``.
        self._queued_ids: dict[bytes, Lease] = {}
        self._outbox: list[Instruction] = []
        #: A DISPATCH_SOON was emitted and its dispatch has not run yet.
        self._dispatch_scheduled = False
        #: An AVAILABILITY_CHANGED waits in the outbox.
        self._availability_pending = False

    def drain(self) -> typing.Sequence[Instruction]:
        """The instructions emitted since the last drain, oldest first; the caller runs
        them in this order."""
        if not self._outbox:
            return _NOTHING
        out, self._outbox = self._outbox, []
        self._availability_pending = False
        return out

    def _reply(self, lease: Lease, reply) -> None:
        self._outbox.append(Reply(lease, reply))

    def _availability_changed(self) -> None:
        if not self._availability_pending:
            self._availability_pending = True
            self._outbox.append(AVAILABILITY_CHANGED)

    # --- queueing ---------------------------------------------------------------

    def queue(self, lease: Lease) -> None:
        lease.transition(LeaseState.QUEUED)
        key = lease.request.scheduling_key
        self._queues.setdefault(key, collections.deque()).append(lease)
        self._queued_ids[lease.lease_id] = lease
        self.dispatch()

    def cancel(self, lease_id: bytes) -> bool:
        """Cancel a queued request (answered LeaseCanceled); False if none is queued."""
        lease = self._queued_ids.get(lease_id)
        if lease is None:
            return False
        self._unqueue(lease)
        lease.transition(LeaseState.CANCELED)
        self._release(lease)
        self._reply(lease, msg.LeaseCanceled())
        self.dispatch_soon()
        return True

    def _unqueue(self, lease: Lease) -> None:
        del self._queued_ids[lease.lease_id]
        key = lease.request.scheduling_key
        queue = self._queues[key]
        queue.remove(lease)
        if not queue:
            del self._queues[key]

    def dispatch_soon(self) -> None:
        """Dispatch at the end of this loop turn, once, however often it is asked."""
        if not self._dispatch_scheduled:
            self._dispatch_scheduled = True
            self._outbox.append(DISPATCH_SOON)

    def dispatch(self) -> None:
        """Grant what resources and idle workers allow, each key's queue in order."""
        self._dispatch_scheduled = False
        changed = False
        need_workers: dict[bytes, int] = {}
        for key, queue in list(self._queues.items()):
            while queue:
                lease = queue[0]
                if lease.allocation is None:
                    lease.allocation = self.resources.allocate(lease.fixed)
                    if lease.allocation is None:
                        break
                    lease.transition(LeaseState.WAITING_FOR_WORKER)
                    changed = True
                worker = self.pool.pop(lease.request.job_id)
                if worker is None:
                    job = lease.request.job_id
                    need_workers[job] = need_workers.get(job, 0) + 1
                    break
                queue.popleft()
                del self._queued_ids[lease.lease_id]
                self._grant(lease, worker)
            if not queue:
                del self._queues[key]
        if need_workers:
            self._start_workers(sum(need_workers.values()), set(need_workers))
        if changed:
            self._availability_changed()

    def _start_workers(self, wanted: int, jobs: set[bytes]) -> None:
        """Start workers for ``jobs``' queued leases. When the worker port range is used
        up and no worker is on its way, those leases fail (naming the range): waiting
        would hang them, since a port comes free only when a worker exits."""
        starting = self.pool.num_starting()
        for _ in range(min(wanted, self.max_starting) - starting):
            if self.pool.start_worker() is None:
                if self.pool.num_starting() == 0:
                    self.fail_where(lambda lease: lease.allocation is not None
                                    and lease.request.job_id in jobs,
                                    self.pool.ports_exhausted())
                return

    def _grant(self, lease: Lease, worker: WorkerHandle) -> None:
        lease.transition(LeaseState.GRANTED)
        worker.lease = lease
        worker.actor_id = lease.request.actor_id
        lease.worker = worker
        lease.granted_at = self._clock()
        running = lease.request.running_resources
        if running is not None:
            self.resources.shrink(lease.allocation, fixed_request(running))
            self._availability_changed()
        self.granted[lease.lease_id] = lease
        self._reply(lease, _granted_reply(lease))

    def regrant(self, request: msg.RequestWorkerLease, owner_conn) -> msg.LeaseGranted | None:
        """The reply to an actor's lease asked for again, if it is granted here already.

        A restarted GCS schedules again an actor whose creation its previous
        self had begun, with the same lease id. The worker granted then is
        still here (actor leases outlive their owner's connection, see
        owner_gone): it is granted again, to the new connection, rather than a
        second worker started while the first one holds its resources for ever.
        None when there is no such lease. The reply is returned, not emitted:
        it answers this very request, which has no lease of its own here.
        """
        lease = self.granted.get(request.lease_id)
        if lease is None or not request.actor_id or lease.request.actor_id != request.actor_id:
            return None
        lease.owner_conn = owner_conn
        return _granted_reply(lease)

    # --- ending -----------------------------------------------------------------

    def return_worker(self, lease_id: bytes, worker_failed: bool) -> None:
        lease = self.granted.pop(lease_id, None)
        if lease is None:
            return
        lease.transition(LeaseState.RETURNED)
        self._release(lease)
        worker = lease.worker
        if worker_failed:
            # The owner saw the worker's connection drop, which usually means it is
            # dying on its own, and its exit status will say why. Kill it only if it
            # is still alive after a grace period: then it is hung, not dead.
            self._outbox.append(KillAfter(worker, FAILED_WORKER_GRACE_S,
                                          "its owner reported it failed"))
        elif worker.actor_id:
            self.pool.kill(worker, "its actor ended")
        else:
            self.pool.push(worker)
        self.dispatch()

    def worker_died(self, worker: WorkerHandle) -> None:
        lease = worker.lease
        if lease is not None and self.granted.pop(lease.lease_id, None) is not None:
            lease.transition(LeaseState.RETURNED)
            self._release(lease)
        self.dispatch()

    def owner_gone(self, conn) -> None:
        """An owner disconnected: cancel its queued requests, stop its leased workers.

        Actors' workers are spared: their leases are the GCS's, and a GCS that
        disconnects may be restarting; the restarted one reloads the actor and
        ends it through KillWorker / ReturnWorker when its time comes.
        """
        for lease in list(self._queued_ids.values()):
            if lease.owner_conn is conn:
                self.cancel(lease.lease_id)
        for lease in list(self.granted.values()):
            if lease.owner_conn is conn and not lease.request.actor_id:
                del self.granted[lease.lease_id]
                lease.transition(LeaseState.RETURNED)
                self._release(lease)
                self.pool.kill(lease.worker, "the owner of its lease exited", signal.SIGTERM)
        self.dispatch()

    def _release(self, lease: Lease) -> None:
        """Give a lease's resources back, and say so: other nodes' views count on it."""
        if lease.allocation is not None:
            if lease.lent:
                self.resources.reclaim(lease.lent)
                lease.lent = 0
            self.resources.release(lease.allocation)
            lease.allocation = None
            self._availability_changed()

    def fail_where(self, predicate, reason: str) -> None:
        """Answer "failed" to every queued request matching ``predicate``."""
        for lease in list(self._queued_ids.values()):
            if predicate(lease):
                self._unqueue(lease)
                lease.transition(LeaseState.FAILED)
                self._release(lease)
                self._reply(lease, msg.LeaseFailed(
                    f"{lease.request.description} cannot run: {reason}"))

    def kill_where(self, predicate, reason: str) -> None:
        """Kill the workers of every granted lease matching ``predicate``."""
        for lease in list(self.granted.values()):
            if predicate(lease):
                self.pool.kill(lease.worker, reason)

    # --- blocking ---------------------------------------------------------------

    def blocked(self, worker: WorkerHandle) -> None:
        lease = worker.lease
        if lease is None or lease.allocation is None or lease.lent:
            return
        lease.lent = self.resources.lend(lease.allocation)
        if lease.lent:
            self.dispatch()
            self._availability_changed()

    def unblocked(self, worker: WorkerHandle) -> None:
        lease = worker.lease
        if lease is None or not lease.lent:
            return
        self.resources.reclaim(lease.lent)
        lease.lent = 0
        self._availability_changed()

    def take_waiting(self, lease_id: bytes) -> Lease | None:
        """Unqueue a request that still waits for resources here, to send it elsewhere.

        None if it holds resources already (it waits only for a worker, which
        comes soon) or is not queued. It is not answered: the caller answers it.
        """
        lease = self._queued_ids.get(lease_id)
        if lease is None or lease.allocation is not None:
            return None
        self._unqueue(lease)
        lease.transition(LeaseState.PENDING)
        return lease

    # --- introspection ----------------------------------------------------------

    def queued(self) -> list[Lease]:
        return list(self._queued_ids.values())

    def debug_state(self) -> dict:
        return {
            "queued": len(self._queued_ids),
            "granted": len(self.granted),
            "queued_by_key": {
                (q[0].request.description if q else "?"): len(q)
                for q in self._queues.values()
            },
        }


def _granted_reply(lease: Lease) -> msg.LeaseGranted:
    worker = lease.worker
    return msg.LeaseGranted(lease.lease_id, worker.address, worker.pid,
                            gpu_ids=lease.allocation.instance_ids("GPU"),
                            grant=lease_grant(worker.lease_key, lease.lease_id))
