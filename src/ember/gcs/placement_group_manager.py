"""The GCS placement group manager: place bundles on nodes, all or nothing.

Lifecycle::

    PENDING ──all bundles prepared and committed──► CREATED ──remove──► REMOVED
       │  ▲                                            │
       │  └──── a node holding a bundle died ──── RESCHEDULING
       └──────────────────────── remove ──────────────────────────► REMOVED

Placing a group is a two-phase commit across raylets: choose a node for each
bundle from the GCS's view of available resources, ask each chosen raylet to
*prepare* (reserve) its bundles, and only if every raylet succeeded, *commit*
on all of them. If any prepare fails (the view was stale, or a raylet died),
every reservation made is cancelled and the group stays PENDING; it is tried
again whenever a node joins or reports freed resources, so a group that does
not fit now is created as soon as capacity arrives.

Retries cost what the waiting groups cost, not what the cluster does. Every
node's report is a chance that a waiting group fits, so reports only poke a
throttle: at most one retry pass per ``resource_report_period_s``, in one
task, over the groups that wait (an index of them, not a scan of every group),
one at a time. Retrying each waiting group on each report spawned reports x
groups placements a second, each over every node: at 250 simulated nodes, 250
groups took nine minutes to place (benchmarks/thousand_nodes.py).

Bundle choice per strategy, over nodes in a stable order:

- STRICT_PACK: every bundle on one node.
- PACK: one node if possible; otherwise greedily fill node after node.
- STRICT_SPREAD: every bundle on a different node.
- SPREAD: different nodes where possible, then reuse the least loaded.

Persistence: each group is written to the "placement_group" table whenever its
state or bundle placement changes. Committed bundles live on at their raylets
while the GCS restarts, so a reloaded CREATED group stays CREATED; PENDING and
RESCHEDULING ones are placed again by the retry loop.
"""
from __future__ import annotations

import asyncio
import enum
import logging

import msgspec

from .. import rpc
from ..config import config
from ..protocol import gcs as msg
from ..protocol import raylet as rl
from ..rpc.pool import ConnectionPool
from ..rpc.throttle import Throttle
from .storage import InMemoryStoreClient, StoreClient

logger = logging.getLogger(__name__)

TABLE = "placement_group"

RETRY_PERIOD_S = 1.0


class PlacementGroupState(enum.Enum):
    PENDING = "PENDING"
    CREATED = "CREATED"
    RESCHEDULING = "RESCHEDULING"
    REMOVED = "REMOVED"


_EDGES = {
    PlacementGroupState.PENDING: {PlacementGroupState.CREATED, PlacementGroupState.REMOVED},
    PlacementGroupState.CREATED: {PlacementGroupState.RESCHEDULING,
                                  PlacementGroupState.REMOVED},
    PlacementGroupState.RESCHEDULING: {PlacementGroupState.CREATED,
                                       PlacementGroupState.REMOVED},
    PlacementGroupState.REMOVED: set(),
}


class PlacementGroup:
    def __init__(self, info: msg.PlacementGroupInfo):
        self.info = info
        self.state = PlacementGroupState.PENDING
        self.waiters: list[asyncio.Future] = []
        self.scheduling = False
        if not info.bundle_nodes:
            info.bundle_nodes = [b""] * len(info.bundles)

    def transition(self, new: PlacementGroupState) -> None:
        if new not in _EDGES[self.state]:
            raise RuntimeError(f"placement group {self.info.placement_group_id.hex()}: "
                               f"illegal transition {self.state.name} -> {new.name}")
        self.state = new
        self.info.state = new.name
        if new in (PlacementGroupState.CREATED, PlacementGroupState.REMOVED):
            waiters, self.waiters = self.waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(new.name)


def _fits(available: dict[str, float], request: dict[str, float]) -> bool:
    return all(available.get(k, 0.0) + 1e-9 >= v for k, v in request.items() if v)


def _take(available: dict[str, float], request: dict[str, float]) -> None:
    for k, v in request.items():
        available[k] = available.get(k, 0.0) - v


class _CopyOnTake(dict):
    """A view of every node's availability that copies a node's only when it is taken from.

    Choosing nodes must not change the caller's view, and copying every
    node's resources for each group placed costs O(nodes) per group.
    """

    def __init__(self, available: dict[bytes, dict[str, float]]):
        super().__init__()
        self._source = available

    def __missing__(self, node: bytes) -> dict[str, float]:
        return self._source[node]

    def taken(self, node: bytes) -> dict[str, float]:
        if not dict.__contains__(self, node):
            self[node] = dict(self._source[node])
        return self[node]


def choose_nodes(bundles: list[dict[str, float]], strategy: str,
                 available: dict[bytes, dict[str, float]],
                 todo: list[int]) -> dict[int, bytes] | None:
    """Pick a node for each bundle index in ``todo``; None if the strategy cannot."""
    avail = _CopyOnTake(available)
    nodes = sorted(available)
    choice: dict[int, bytes] = {}
    if strategy in ("STRICT_PACK", "PACK"):
        need: dict[str, float] = {}
        for i in todo:
            _take(need, {k: -v for k, v in bundles[i].items()})
        for node in nodes:
            if _fits(avail[node], need):
                return {i: node for i in todo}
        if strategy == "STRICT_PACK":
            return None
        for i in todo:
            node = next((n for n in nodes if _fits(avail[n], bundles[i])), None)
            if node is None:
                return None
            _take(avail.taken(node), bundles[i])
            choice[i] = node
        return choice
    used: set[bytes] = set()
    for i in todo:
        fresh = [n for n in nodes if n not in used and _fits(avail[n], bundles[i])]
        if fresh:
            node = fresh[0]
        elif strategy == "STRICT_SPREAD":
            return None
        else:
            fits = [n for n in nodes if _fits(avail[n], bundles[i])]
            if not fits:
                return None
            node = max(fits, key=lambda n: sum(avail[n].values()))
        _take(avail.taken(node), bundles[i])
        used.add(node)
        choice[i] = node
    return choice


class PlacementGroupManager:
    def __init__(self, node_manager, actor_manager, store: StoreClient | None = None,
                 peers: ConnectionPool | None = None):
        self._nodes = node_manager
        self._actors = actor_manager
        self._store = store or InMemoryStoreClient()
        self.groups: dict[bytes, PlacementGroup] = {}
        self._named: dict[tuple[str, str], bytes] = {}
        #: Connections to raylets (shared with the actor manager).
        self._peers = peers or ConnectionPool(timeout=10)
        self._retry_task: asyncio.Task | None = None
        #: node id -> ids of the groups with bundles committed there (entries of
        #: groups moved or removed since are skipped when read), so that a
        #: node's death reads its own groups, not every group.
        self._by_node: dict[bytes, set[bytes]] = {}
        #: The groups waiting for a placement (PENDING or RESCHEDULING), oldest first.
        self._unplaced: dict[bytes, PlacementGroup] = {}
        self._retry_throttle = Throttle(config.resource_report_period_s, self._start_retry)
        self._retry_pass: asyncio.Task | None = None
        #: Set when capacity changed during a retry pass: run another after it.
        self._retry_again = False

    def handlers(self):
        return {
            msg.CreatePlacementGroup: self.create,
            msg.RemovePlacementGroup: self.remove,
            msg.GetPlacementGroup: self.get,
            msg.WaitPlacementGroupReady: self.wait_ready,
            msg.GetAllPlacementGroups: lambda conn, req: msg.GetAllPlacementGroupsReply(
                [g.info for g in self.groups.values()]),
        }

    async def load(self) -> None:
        for raw in (await self._store.get_all(TABLE)).values():
            info = msgspec.msgpack.decode(raw, type=msg.PlacementGroupInfo)
            group = self.groups[info.placement_group_id] = PlacementGroup(info)
            group.state = PlacementGroupState[info.state]
            if info.name and group.state is not PlacementGroupState.REMOVED:
                self._named[(info.namespace, info.name)] = info.placement_group_id
            if group.state in (PlacementGroupState.PENDING, PlacementGroupState.RESCHEDULING):
                self._unplaced[info.placement_group_id] = group
            for node_id in info.bundle_nodes:
                if node_id:
                    self._by_node.setdefault(node_id, set()).add(info.placement_group_id)

    def _persist(self, group: PlacementGroup) -> None:
        self._store.put_soon(TABLE, group.info.placement_group_id,
                             msgspec.msgpack.encode(group.info))

    def _set_state(self, group: PlacementGroup, state: PlacementGroupState) -> None:
        group.transition(state)
        if state in (PlacementGroupState.CREATED, PlacementGroupState.REMOVED):
            self._unplaced.pop(group.info.placement_group_id, None)
        else:
            self._unplaced[group.info.placement_group_id] = group
        self._persist(group)

    def start(self) -> None:
        self._retry_task = asyncio.get_running_loop().create_task(self._retry_loop())

    def stop(self) -> None:
        for task in (self._retry_task, self._retry_pass):
            if task is not None:
                task.cancel()

    # --- requests ---------------------------------------------------------------------

    def create(self, conn, req: msg.CreatePlacementGroup) -> msg.Ack:
        info = req.info
        if info.name:
            key = (info.namespace, info.name)
            if key in self._named:
                raise ValueError(f"A placement group named {info.name!r} already exists in "
                                 f"namespace {info.namespace!r}.")
            self._named[key] = info.placement_group_id
        info.state = PlacementGroupState.PENDING.name
        group = self.groups[info.placement_group_id] = PlacementGroup(info)
        self._unplaced[info.placement_group_id] = group
        self._persist(group)
        asyncio.get_running_loop().create_task(self._schedule(group))
        return msg.Ack()

    async def remove(self, conn, req: msg.RemovePlacementGroup) -> msg.Ack:
        group = self.groups.get(req.placement_group_id)
        if group is None or group.state is PlacementGroupState.REMOVED:
            return msg.Ack()
        group.info.message = "removed by remove_placement_group()"
        self._set_state(group, PlacementGroupState.REMOVED)
        if group.info.name:
            self._named.pop((group.info.namespace, group.info.name), None)
        self._actors.placement_group_removed(req.placement_group_id)
        await self._cancel(group, list(range(len(group.info.bundles))), removed=True)
        return msg.Ack()

    def get(self, conn, req: msg.GetPlacementGroup) -> msg.GetPlacementGroupReply:
        pg_id = req.placement_group_id or self._named.get((req.namespace, req.name), b"")
        group = self.groups.get(pg_id)
        return msg.GetPlacementGroupReply(group.info if group else None)

    async def wait_ready(self, conn, req: msg.WaitPlacementGroupReady):
        group = self.groups.get(req.placement_group_id)
        if group is None:
            return msg.WaitPlacementGroupReadyReply("REMOVED", "no such placement group")
        if group.state in (PlacementGroupState.CREATED, PlacementGroupState.REMOVED):
            return msg.WaitPlacementGroupReadyReply(group.state.name, group.info.message)
        fut = asyncio.get_running_loop().create_future()
        group.waiters.append(fut)
        try:
            state = await asyncio.wait_for(asyncio.shield(fut), req.timeout)
        except asyncio.TimeoutError:
            return msg.WaitPlacementGroupReadyReply("", group.info.message)
        return msg.WaitPlacementGroupReadyReply(state, group.info.message)

    # --- scheduling -------------------------------------------------------------------

    def capacity_changed(self, node_id: bytes) -> None:
        """A node joined or reported: waiting groups may fit now (see the docstring)."""
        if self._unplaced:
            self._retry_throttle.poke()

    def _start_retry(self) -> None:
        if self._retry_pass is not None and not self._retry_pass.done():
            self._retry_again = True
            return
        self._retry_pass = asyncio.get_running_loop().create_task(self._retry_unplaced())

    async def _retry_unplaced(self) -> None:
        """Try each waiting group once, in order; again if capacity changed meanwhile."""
        while True:
            self._retry_again = False
            for group in list(self._unplaced.values()):
                await self._schedule(group)
            if not (self._retry_again and self._unplaced):
                return

    async def _retry_loop(self) -> None:
        while True:
            await asyncio.sleep(RETRY_PERIOD_S)
            self.capacity_changed(b"")

    async def _schedule(self, group: PlacementGroup) -> None:
        if group.scheduling or group.state not in (PlacementGroupState.PENDING,
                                                   PlacementGroupState.RESCHEDULING):
            return
        group.scheduling = True
        try:
            await self._try_place(group)
        finally:
            group.scheduling = False

    async def _try_place(self, group: PlacementGroup) -> None:
        info = group.info
        todo = [i for i, node in enumerate(info.bundle_nodes) if not node]
        available = {n.node_id: self._nodes.available.get(n.node_id, n.resources_total)
                     for n in self._nodes.alive_nodes() if not n.draining}
        choice = choose_nodes(info.bundles, info.strategy, available, todo)
        if choice is None:
            info.message = (f"waiting for resources: no {info.strategy} placement of "
                            f"{[info.bundles[i] for i in todo]} fits the cluster now")
            return
        by_node: dict[bytes, list[int]] = {}
        for index, node_id in choice.items():
            by_node.setdefault(node_id, []).append(index)
        # Count the reservation in the view now, before any prepare is awaited,
        # so that groups placed meanwhile see it and choose other nodes (when it
        # was counted after the prepare, a thousand groups created at once all
        # chose the same node, and all but one waited for the retry pass).
        # Given back on failure, unless a report has replaced the view since.
        reserved: dict[bytes, tuple[dict[str, float], dict[str, float]]] = {}
        for node_id, indexes in by_node.items():
            view = self._nodes.available.get(node_id)
            if view is not None:
                need: dict[str, float] = {}
                for i in indexes:
                    _take(need, {k: -v for k, v in info.bundles[i].items()})
                _take(view, need)
                reserved[node_id] = (view, need)
        prepared: dict[bytes, list[int]] = {}
        ok = True
        for node_id, indexes in by_node.items():
            try:
                conn = await self._raylet(node_id)
                reply = await conn.call(rl.PrepareBundleResources(
                    info.placement_group_id, [(i, info.bundles[i]) for i in indexes]), timeout=10)
            except (ConnectionError, rpc.RemoteError, asyncio.TimeoutError, LookupError) as exc:
                ok, info.message = False, f"preparing bundles failed: {exc}"
                break
            if not reply.success:
                ok, info.message = False, f"preparing bundles failed: {reply.message}"
                break
            prepared[node_id] = indexes
        if ok and group.state is not PlacementGroupState.REMOVED:
            for node_id, indexes in prepared.items():
                conn = await self._raylet(node_id)
                conn.notify(rl.CommitBundleResources(info.placement_group_id, indexes))
                for i in indexes:
                    info.bundle_nodes[i] = node_id
                self._by_node.setdefault(node_id, set()).add(info.placement_group_id)
            info.message = ""
            self._set_state(group, PlacementGroupState.CREATED)
            return
        for node_id, (view, need) in reserved.items():
            if self._nodes.available.get(node_id) is view:
                _take(view, {k: -v for k, v in need.items()})
        for node_id, indexes in prepared.items():  # roll back
            try:
                conn = await self._raylet(node_id)
                conn.notify(rl.CancelResourceReserve(info.placement_group_id, indexes))
            except (ConnectionError, LookupError):
                pass

    async def _cancel(self, group: PlacementGroup, indexes: list[int], removed: bool) -> None:
        by_node: dict[bytes, list[int]] = {}
        for i in indexes:
            node_id = group.info.bundle_nodes[i]
            if node_id:
                by_node.setdefault(node_id, []).append(i)
        if removed:
            # Every raylet learns of the removal, not only the bundles' nodes: a
            # request for the group's resources waiting (infeasible) at any raylet
            # must fail rather than wait forever, and later ones be refused.
            targets = {n.node_id: by_node.get(n.node_id, [])
                       for n in self._nodes.alive_nodes()}
        else:
            targets = by_node or {n.node_id: indexes for n in self._nodes.alive_nodes()}
        for node_id, node_indexes in targets.items():
            try:
                conn = await self._raylet(node_id)
                conn.notify(rl.CancelResourceReserve(group.info.placement_group_id,
                                                     node_indexes, removed=removed))
            except (ConnectionError, LookupError):
                pass

    async def _raylet(self, node_id: bytes) -> rpc.Connection:
        info = self._nodes.nodes.get(node_id)
        if info is None or not info.alive:
            raise LookupError(f"node {node_id.hex()} is not alive")
        return await self._peers.get(f"{info.raylet.ip}:{info.raylet.port}", "raylet")

    # --- failures ---------------------------------------------------------------------

    def node_died(self, node) -> None:
        for pg_id in self._by_node.pop(node.node_id, ()):
            group = self.groups.get(pg_id)
            if group is None:
                continue
            lost = [i for i, n in enumerate(group.info.bundle_nodes) if n == node.node_id]
            if lost and group.state is PlacementGroupState.CREATED:
                for i in lost:
                    group.info.bundle_nodes[i] = b""
                self._set_state(group, PlacementGroupState.RESCHEDULING)
                asyncio.get_running_loop().create_task(self._schedule(group))

    def job_finished(self, job_id: bytes) -> None:
        for group in list(self.groups.values()):
            if (group.info.job_id == job_id and not group.info.is_detached
                    and group.state is not PlacementGroupState.REMOVED):
                asyncio.get_running_loop().create_task(
                    self.remove(None, msg.RemovePlacementGroup(group.info.placement_group_id)))

    def debug_state(self) -> dict:
        states: dict[str, int] = {}
        for group in self.groups.values():
            states[group.state.name] = states.get(group.state.name, 0) + 1
        return states
