"""The GCS actor manager: the actor table, actor scheduling, restarts and deaths.

Lifecycle, with the only edges :meth:`Actor.transition` allows::

                        CreateActor
    DEPENDENCIES_UNREADY ──────────► PENDING_CREATION ──__init__ ok──► ALIVE
            │                          │        ▲                      │  ▲
            │                          │        └─── rescheduled ───┐  │  │ __init__ ok
            │                          │                            │  ▼  │
            │                          │       worker/node died,  RESTARTING
            │                          │       restarts left  ◄─────┘──┘
            ▼                          ▼                             │
           DEAD ◄──────────────────── DEAD ◄───────── no restarts left, killed,
                                                       exit_actor(), owner died

- DEPENDENCIES_UNREADY: registered (its name is taken) but its creation
  arguments are not ready yet; the owner sends CreateActor when they are.
- PENDING_CREATION: waiting for a lease, or running ``__init__``.
- ALIVE: callers send calls straight to its worker's address.
- RESTARTING: its process died and ``max_restarts`` allows another; it is
  being placed again and ``__init__`` runs again.
- DEAD: final. ``death_cause`` says why, in words the user reads.

Each change is published on the "actor" channel keyed by actor id, which is how
every handle holder learns the actor's address or its death.

Scheduling goes through raylets, not around them: the GCS asks the raylet of
the owner's node for a lease (or the node named by a node-affinity strategy),
follows spillback replies, then pushes the creation task to the granted worker.

Persistence: every change of state is written to the "actor" table with what a
restarted GCS needs to carry on (the CreateActor message, the lease and worker
of the live actor). On reload, ALIVE actors keep running where they are (their
raylet spares actor workers when the GCS disconnects), PENDING_CREATION and
RESTARTING ones are scheduled again, and names resolve as before.
"""
from __future__ import annotations

import asyncio
import enum
import logging

import msgspec

from .. import rpc
from ..exceptions import IllegalTransition
from ..protocol import core_worker as cw
from ..protocol import gcs as msg
from ..protocol import raylet as rl
from ..protocol.common import Address, PlacementGroupScheduling
from ..raylet.lease_client import LeaseAttempt
from ..raylet.policies import named_node
from ..rpc.backoff import Backoff
from ..rpc.pool import ConnectionPool
from .pubsub import Publisher
from .storage import InMemoryStoreClient, StoreClient

logger = logging.getLogger(__name__)

TABLE = "actor"


class ActorState(enum.Enum):
    DEPENDENCIES_UNREADY = "DEPENDENCIES_UNREADY"
    PENDING_CREATION = "PENDING_CREATION"
    ALIVE = "ALIVE"
    RESTARTING = "RESTARTING"
    DEAD = "DEAD"


_EDGES = {
    ActorState.DEPENDENCIES_UNREADY: {ActorState.PENDING_CREATION, ActorState.DEAD},
    ActorState.PENDING_CREATION: {ActorState.ALIVE, ActorState.RESTARTING, ActorState.DEAD},
    ActorState.ALIVE: {ActorState.RESTARTING, ActorState.DEAD},
    ActorState.RESTARTING: {ActorState.ALIVE, ActorState.DEAD},
    ActorState.DEAD: set(),
}


class Actor:
    """One actor's record and the lease that hosts it."""

    def __init__(self, info: msg.ActorInfo,
                 state: ActorState = ActorState.DEPENDENCIES_UNREADY):
        """``state``: a new actor's first, or a reloaded one's as stored."""
        self.info = info
        self.state = state
        info.state = state.name
        self.create: msg.CreateActor | None = None
        self.worker_id = b""
        self.lease_id = b""
        self.raylet: rpc.Connection | None = None
        #: Set by KillActor: the next death is final and reported with this reason.
        self.kill_reason = ""

    def transition(self, new: ActorState) -> None:
        if new not in _EDGES[self.state]:
            raise IllegalTransition(f"actor {self.describe()}", self.state, new)
        self.state = new
        self.info.state = new.name

    def describe(self) -> str:
        return self.info.describe()


class ActorTableData(msgspec.Struct, array_like=True, gc=False):
    """One actor as stored: enough for a restarted GCS to resume managing it."""

    info: msg.ActorInfo
    #: The creation request, once the owner sent it (needed to schedule again).
    create: msg.CreateActor | None = None
    #: The live actor's worker and lease, to kill it or return the lease.
    worker_id: bytes = b""
    lease_id: bytes = b""


class ActorManager:
    def __init__(self, publisher: Publisher, node_manager, store: StoreClient | None = None,
                 peers: ConnectionPool | None = None):
        self._publisher = publisher
        self._nodes = node_manager
        self._store = store or InMemoryStoreClient()
        self.actors: dict[bytes, Actor] = {}
        self._named: dict[tuple[str, str], bytes] = {}
        self._by_worker: dict[bytes, bytes] = {}
        #: node id -> ids of the actors placed there (entries of actors that moved or
        #: died since are skipped when read). A node's death reads its own, not
        #: every actor: deaths x actors when a hundred nodes die at once.
        self._by_node: dict[bytes, set[bytes]] = {}
        #: Connections to raylets (shared with the placement group manager).
        self._peers = peers or ConnectionPool(timeout=10)

    # --- persistence -----------------------------------------------------------------

    async def load(self) -> None:
        for raw in (await self._store.get_all(TABLE)).values():
            data = msgspec.msgpack.decode(raw, type=ActorTableData)
            actor = Actor(data.info, ActorState[data.info.state])
            actor.create = data.create
            actor.worker_id, actor.lease_id = data.worker_id, data.lease_id
            self.actors[data.info.actor_id] = actor
            if actor.state is ActorState.DEAD:
                continue
            if data.info.name:
                self._named[(data.info.namespace, data.info.name)] = data.info.actor_id
            if actor.worker_id:
                self._by_worker[actor.worker_id] = data.info.actor_id
            if data.info.node_id:
                self._by_node.setdefault(data.info.node_id, set()).add(data.info.actor_id)

    def start(self) -> None:
        """Resume reloaded actors: reach the raylets of live ones, place pending ones."""
        loop = asyncio.get_running_loop()
        for actor in self.actors.values():
            if actor.state is ActorState.ALIVE:
                loop.create_task(self._reattach(actor))
            elif (actor.state in (ActorState.PENDING_CREATION, ActorState.RESTARTING)
                  and actor.create is not None):
                loop.create_task(self._schedule(actor))

    async def _reattach(self, actor: Actor) -> None:
        """Reconnect to a reloaded live actor's raylet, to kill it or return its lease.

        If the node is gone, its health check timing out declares it dead, and
        the actor dies (or restarts) with it then.
        """
        node = self._nodes.nodes.get(actor.info.node_id)
        if node is None or not node.alive:
            return
        try:
            actor.raylet = await self._connect_raylet(node.raylet)
        except ConnectionError as exc:
            logger.info("actor %s: its raylet is unreachable for now: %s", actor.describe(),
                        exc)

    def _persist(self, actor: Actor) -> None:
        self._store.put_soon(TABLE, actor.info.actor_id, msgspec.msgpack.encode(
            ActorTableData(actor.info, actor.create, actor.worker_id, actor.lease_id)))

    # --- requests -----------------------------------------------------------------------

    def handlers(self):
        return {
            msg.RegisterActor: self.register,
            msg.CreateActor: self.create,
            msg.GetActorInfo: self.get_info,
            msg.GetNamedActor: self.get_named,
            msg.ListNamedActors: self.list_named,
            msg.ListActors: lambda conn, req: msg.ListActorsReply(
                [a.info for a in self.actors.values()]),
            msg.KillActor: self.kill,
        }

    # --- registration and creation ----------------------------------------------

    def register(self, conn, req: msg.RegisterActor) -> msg.RegisterActorReply:
        info = req.info
        known = self.actors.get(info.actor_id)
        if known is not None:  # sent again after a reconnection to the GCS
            return msg.RegisterActorReply(known.info)
        if info.name:
            existing_id = self._named.get((info.namespace, info.name))
            if existing_id is not None:
                existing = self.actors[existing_id]
                if req.get_if_exists:
                    return msg.RegisterActorReply(existing.info, existed=True)
                raise ValueError(
                    f"The name {info.name!r} (namespace {info.namespace!r}) is already taken "
                    f"by actor {existing.describe()}. Choose another name, kill that actor "
                    "first, or pass get_if_exists=True to get a handle to it.")
            self._named[(info.namespace, info.name)] = info.actor_id
        actor = self.actors[info.actor_id] = Actor(info)
        self._persist(actor)
        return msg.RegisterActorReply(info)

    def create(self, conn, req: msg.CreateActor) -> None:
        actor = self.actors.get(req.actor_id)
        if actor is None or actor.state is not ActorState.DEPENDENCIES_UNREADY:
            return
        actor.create = req
        self._set_state(actor, ActorState.PENDING_CREATION)
        asyncio.get_running_loop().create_task(self._schedule(actor))

    async def _schedule(self, actor: Actor) -> None:
        req = actor.create
        spec = msgspec.msgpack.decode(req.creation_spec, type=cw.TaskSpec)
        lease_id = actor.info.actor_id + actor.info.num_restarts.to_bytes(4, "little")
        request = rl.RequestWorkerLease(
            lease_id=lease_id, job_id=actor.info.job_id, resources=req.placement_resources,
            strategy=req.strategy, description=f"actor {actor.info.class_name}",
            owner=actor.info.owner, scheduling_key=b"actor:" + actor.info.actor_id,
            actor_id=actor.info.actor_id, running_resources=req.resources)
        reply, raylet = await self._lease(actor, request)
        if reply is None:
            return  # it died while waiting for a lease
        if actor.state is ActorState.DEAD:
            if type(reply) is rl.LeaseGranted:
                raylet.notify(rl.ReturnWorker(reply.lease_id))
            return
        if type(reply) is not rl.LeaseGranted:
            why = reply.message if type(reply) is rl.LeaseFailed else "its lease was canceled"
            self._died(actor, f"it cannot be scheduled: {why}", restartable=False)
            return
        actor.raylet = raylet
        actor.lease_id = reply.lease_id
        actor.worker_id = reply.worker.worker_id
        self._by_worker[actor.worker_id] = actor.info.actor_id
        actor.info.node_id = reply.worker.node_id
        self._by_node.setdefault(actor.info.node_id, set()).add(actor.info.actor_id)
        actor.info.pid = reply.worker_pid
        try:
            worker = await rpc.connect(rpc.address_string(reply.worker), name="actor worker",
                                       timeout=10)
            spec.attempt = actor.info.num_restarts
            result = await worker.call(cw.PushTask(spec, reply.gpu_ids, reply.lease_id,
                                                   reply.grant))
            worker.close()
        except (ConnectionError, rpc.RemoteError) as exc:
            # The worker died during __init__; its failure report decides what next.
            logger.info("actor %s died during creation: %s", actor.describe(), exc)
            return
        if actor.state is ActorState.DEAD:
            return
        if result.is_application_error:
            actor.info.creation_error = result.returns[0].value.data if result.returns else b""
            self._died(actor, "its __init__ raised an exception (see the error it carries)",
                       restartable=False)
            return
        actor.info.address = reply.worker
        self._set_state(actor, ActorState.ALIVE)

    async def _lease(self, actor: Actor, request: rl.RequestWorkerLease):
        """(reply, raylet) of a worker lease for the actor, following spillbacks.

        A raylet that cannot be reached (it died, perhaps just after sending a
        spillback to itself) or no node alive is not the actor's failure: the
        request goes again, after a pause, until it is answered or the actor
        is dead (killed, or its owner died). No restart is spent on it, as in
        Ray, since no process of the actor ever ran. Returns (None, None) then.
        A request rejected by the node it was spilled to goes again at once.
        """
        backoff = Backoff(0.05, 1.0)
        while actor.state is not ActorState.DEAD:
            try:
                attempt = LeaseAttempt(request, await self._raylet_for(actor, actor.create))
                reply = await attempt.run(self._connect_raylet)
                if type(reply) is not rl.LeaseRejected:
                    return reply, attempt.raylet
                # The node spilled to was taken meanwhile: ask again at once; the
                # first raylet now counts that node as busy.
                continue
            except (ConnectionError, rpc.RemoteError, LookupError) as exc:
                pause = backoff.next_delay()
                logger.info("scheduling actor %s again in %.2f s: %s", actor.describe(),
                            pause, exc)
                await asyncio.sleep(pause)
        return None, None

    async def _raylet_for(self, actor: Actor, req: msg.CreateActor) -> rpc.Connection:
        node_id = named_node(req.strategy) or actor.info.owner.node_id
        info = self._nodes.nodes.get(node_id)
        if info is None or not info.alive:
            alive = self._nodes.alive_nodes()
            if not alive:
                raise LookupError("no node is alive")
            info = alive[0]
        return await self._connect_raylet(info.raylet)

    async def _connect_raylet(self, address: Address) -> rpc.Connection:
        return await self._peers.get(f"{address.ip}:{address.port}", "raylet")

    # --- deaths ---------------------------------------------------------------------

    def worker_failed(self, conn, req: msg.ReportWorkerFailure) -> None:
        actor_id = self._by_worker.pop(req.worker_id, None)
        if actor_id is not None:
            actor = self.actors.get(actor_id)
            if actor is not None and actor.worker_id == req.worker_id:
                if req.intentional:
                    self._died(actor, "it exited via exit_actor()", restartable=False)
                else:
                    self._died(actor, f"its {req.cause}", restartable=True)
        self._owner_died(lambda owner: owner.worker_id == req.worker_id,
                         "its owner (the worker that created it) died")

    def node_died(self, info) -> None:
        for actor_id in self._by_node.pop(info.node_id, ()):
            actor = self.actors.get(actor_id)
            if actor is not None and actor.info.node_id == info.node_id and actor.state in (
                    ActorState.ALIVE, ActorState.PENDING_CREATION):
                self._died(actor, f"the node it ran on ({info.ip}) died: {info.death_reason}",
                           restartable=True)

    def job_finished(self, job_id: bytes) -> None:
        for actor in list(self.actors.values()):
            if (actor.info.job_id == job_id and not actor.info.is_detached
                    and actor.state is not ActorState.DEAD):
                self._kill(actor, "its owner's job finished (the driver exited); "
                                  "use lifetime='detached' to keep an actor alive")

    def _owner_died(self, is_owner, reason: str) -> None:
        for actor in list(self.actors.values()):
            if (not actor.info.is_detached and actor.state is not ActorState.DEAD
                    and is_owner(actor.info.owner)):
                self._kill(actor, reason)

    def placement_group_removed(self, pg_id: bytes) -> None:
        """Actors placed in a removed group die with it, without restarting."""
        for actor in list(self.actors.values()):
            create = actor.create
            if (create is not None and isinstance(create.strategy, PlacementGroupScheduling)
                    and create.strategy.placement_group_id == pg_id
                    and actor.state is not ActorState.DEAD):
                self._kill(actor, f"its placement group {pg_id.hex()} was removed")

    def kill(self, conn, req: msg.KillActor) -> msg.Ack:
        actor = self.actors.get(req.actor_id)
        if actor is not None and actor.state is not ActorState.DEAD:
            if req.no_restart:
                self._kill(actor, req.reason)
            elif actor.raylet is not None and actor.worker_id:
                actor.raylet.notify(rl.KillWorker(actor.worker_id, req.reason))
        return msg.Ack()

    def _kill(self, actor: Actor, reason: str) -> None:
        worker_id, raylet = actor.worker_id, actor.raylet
        self._died(actor, f"it was killed: {reason}", restartable=False)
        if raylet is not None and worker_id and not raylet.closed:
            raylet.notify(rl.KillWorker(worker_id, f"its actor was killed ({reason})"))

    def _died(self, actor: Actor, cause: str, restartable: bool) -> None:
        if actor.state is ActorState.DEAD:
            return
        self._by_worker.pop(actor.worker_id, None)
        if actor.raylet is not None and actor.lease_id and not actor.raylet.closed:
            actor.raylet.notify(rl.ReturnWorker(actor.lease_id, worker_failed=True))
        actor.raylet = None
        actor.lease_id = b""
        actor.worker_id = b""
        actor.info.address = None
        info = actor.info
        can_restart = restartable and actor.create is not None and (
            info.max_restarts == -1 or info.num_restarts < info.max_restarts)
        if can_restart:
            info.num_restarts += 1
            info.death_cause = cause
            logger.info("restarting actor %s (%d/%s): %s", actor.describe(),
                        info.num_restarts, info.max_restarts, cause)
            if actor.state is not ActorState.RESTARTING:
                self._set_state(actor, ActorState.RESTARTING)
            else:
                self._persist(actor)
            asyncio.get_running_loop().create_task(self._schedule(actor))
            return
        if restartable and info.max_restarts:
            cause += f"; it was restarted {info.num_restarts} time(s), max_restarts=" \
                     f"{info.max_restarts}"
        info.death_cause = f"The actor {actor.describe()} died: {cause}."
        if info.name:
            self._named.pop((info.namespace, info.name), None)
        self._set_state(actor, ActorState.DEAD)

    def _set_state(self, actor: Actor, state: ActorState) -> None:
        actor.transition(state)
        actor.info.version += 1
        self._persist(actor)
        self._publisher.publish(msg.CHANNEL_ACTOR, msg.ActorChanged(actor.info),
                                key=actor.info.actor_id)

    # --- queries --------------------------------------------------------------------

    def get_info(self, conn, req: msg.GetActorInfo) -> msg.GetActorInfoReply:
        actor = self.actors.get(req.actor_id)
        return msg.GetActorInfoReply(actor.info if actor else None)

    def get_named(self, conn, req: msg.GetNamedActor) -> msg.GetActorInfoReply:
        actor_id = self._named.get((req.namespace, req.name))
        return msg.GetActorInfoReply(self.actors[actor_id].info if actor_id else None)

    def list_named(self, conn, req: msg.ListNamedActors) -> msg.ListNamedActorsReply:
        return msg.ListNamedActorsReply([
            (ns, name) for (ns, name), actor_id in self._named.items()
            if req.all_namespaces or ns == req.namespace])

    def debug_state(self) -> dict:
        states: dict[str, int] = {}
        for actor in self.actors.values():
            states[actor.state.name] = states.get(actor.state.name, 0) + 1
        return states
