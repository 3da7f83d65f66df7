"""What the GCS does per resource report must not grow with nodes x nodes or reports x groups.

Found with the 1,000 simulated nodes of benchmarks/thousand_nodes.py; these
pin the fixes without processes: counted work, not time.
"""
from __future__ import annotations

import asyncio

import msgspec

from ember.gcs.actor_manager import ActorManager, ActorTableData
from ember.gcs.node_manager import NodeManager
from ember.gcs.placement_group_manager import PlacementGroup, PlacementGroupManager
from ember.gcs.pubsub import Publisher
from ember.gcs.storage import InMemoryStoreClient
from ember.protocol import framing
from ember.protocol import gcs as msg
from ember.protocol import raylet as rl
from ember.protocol.common import Address
from ember.rpc.connection import encode_notification


class RecordingConnection:
    """A subscriber that keeps the frames published to it."""

    def __init__(self):
        self.frames: list[bytes] = []
        self.closed = False

    def notify_frame(self, frame: bytes) -> None:
        self.frames.append(frame)

    def messages(self) -> list:
        return [framing.decoder.decode(f[framing.HEADER_SIZE:]).body for f in self.frames]


def node(n: int) -> msg.NodeInfo:
    node_id = bytes([n]) * 28
    return msg.NodeInfo(node_id, "127.0.0.1", "h", Address(node_id, "127.0.0.1", 1),
                        {"CPU": 4.0})


def test_a_published_message_is_encoded_once_for_every_subscriber(monkeypatch):
    publisher = Publisher()
    subscribers = [RecordingConnection() for _ in range(3)]
    for conn in subscribers:
        publisher.subscribe(conn, msg.Subscribe([msg.CHANNEL_RESOURCES]))
    encodes = []
    original = encode_notification

    def counting(body):
        encodes.append(body)
        return original(body)
    monkeypatch.setattr("ember.gcs.pubsub.encode_notification", counting)
    change = msg.ResourcesChanged({b"n" * 28: {"CPU": 1.0}}, {})
    publisher.publish(msg.CHANNEL_RESOURCES, change)
    assert len(encodes) == 1
    for conn in subscribers:
        assert conn.messages() == [change]
    assert subscribers[0].frames[0] is subscribers[2].frames[0]


def test_every_report_is_broadcast_even_unchanged_in_one_message_per_period():
    """Not deduplicated: a raylet counts a node it spilled to as busy until that
    node's next report reaches it, changed or not."""
    async def main():
        publisher = Publisher()
        nodes = NodeManager(InMemoryStoreClient(), publisher)
        raylet = RecordingConnection()
        publisher.subscribe(raylet, msg.Subscribe([msg.CHANNEL_RESOURCES]))
        a, b = node(1), node(2)
        for info in (a, b):
            nodes.nodes[info.node_id] = info
        for _ in range(3):
            for info in (a, b):
                nodes.report_resources(None, msg.ReportResources(info.node_id, {"CPU": 4.0}))
            nodes._broadcast_resources()
        assert [m.available for m in raylet.messages()] == [
            {a.node_id: {"CPU": 4.0}, b.node_id: {"CPU": 4.0}}] * 3
    asyncio.run(main())


def test_reports_retry_waiting_groups_in_one_throttled_pass():
    """Before: each report started a placement per waiting group, each over every node."""
    async def main():
        nodes = NodeManager(InMemoryStoreClient(), Publisher())
        manager = PlacementGroupManager(nodes, actor_manager=None)
        for n in range(1, 4):
            info = node(n)
            nodes.nodes[info.node_id] = info
            nodes.available[info.node_id] = {"CPU": 0.0}
        placements = []

        async def try_place(group):
            placements.append(group.info.placement_group_id)
        manager._try_place = try_place
        waiting = []
        for g in range(20):
            info = msg.PlacementGroupInfo(bytes([g]) * 18, "", "", [{"CPU": 1.0}], "PACK",
                                          "PENDING", b"job")
            group = manager.groups[info.placement_group_id] = PlacementGroup(info)
            manager._unplaced[info.placement_group_id] = group
            waiting.append(info.placement_group_id)
        created = manager.groups[waiting[0]]
        manager._set_state(created, created.state.__class__.CREATED)
        assert waiting[0] not in manager._unplaced

        for _ in range(100):  # a hundred reports in one burst
            manager.capacity_changed(b"")
        await asyncio.sleep(0.01)
        await manager._retry_pass
        assert placements == waiting[1:]  # one pass: each waiting group once, in order
    asyncio.run(main())


class SlowRaylet:
    """Answers prepares only once released, as a raylet across a busy network does."""

    def __init__(self, ok: bool = True):
        self.ok = ok
        self.released = asyncio.Event()
        self.prepared: list[bytes] = []

    async def call(self, request, timeout=None):
        await self.released.wait()
        if self.ok:
            self.prepared.append(request.placement_group_id)
        return rl.PrepareBundleResourcesReply(self.ok, "" if self.ok else "does not fit")

    def notify(self, message) -> None:
        pass


def test_groups_placed_at_once_see_each_others_reservations():
    """Before: the view counted a reservation only once prepared, so every group
    created in one burst chose the same node, and all but one had to wait."""
    async def main():
        nodes = NodeManager(InMemoryStoreClient(), Publisher())
        raylets = {}
        for n in (1, 2):
            info = node(n)
            nodes.nodes[info.node_id] = info
            nodes.available[info.node_id] = {"CPU": 2.0}
            raylets[info.node_id] = SlowRaylet()
        manager = PlacementGroupManager(nodes, actor_manager=None)

        async def raylet(node_id):
            return raylets[node_id]
        manager._raylet = raylet
        groups = [PlacementGroup(msg.PlacementGroupInfo(
            bytes([g]) * 18, "", "", [{"CPU": 1.0}, {"CPU": 1.0}], "STRICT_PACK", "PENDING",
            b"job")) for g in range(2)]
        placing = [asyncio.ensure_future(manager._try_place(g)) for g in groups]
        await asyncio.sleep(0)
        assert all(view == {"CPU": 0.0} for view in nodes.available.values())
        for r in raylets.values():
            r.released.set()
        await asyncio.gather(*placing)
        assert [g.state.name for g in groups] == ["CREATED", "CREATED"]
        assert groups[0].info.bundle_nodes[0] != groups[1].info.bundle_nodes[0]
    asyncio.run(main())


def test_a_failed_prepare_gives_its_reservation_back_to_the_view():
    async def main():
        nodes = NodeManager(InMemoryStoreClient(), Publisher())
        info = node(1)
        nodes.nodes[info.node_id] = info
        nodes.available[info.node_id] = {"CPU": 2.0}
        refusing = SlowRaylet(ok=False)
        refusing.released.set()
        manager = PlacementGroupManager(nodes, actor_manager=None)

        async def raylet(node_id):
            return refusing
        manager._raylet = raylet
        group = PlacementGroup(msg.PlacementGroupInfo(
            b"g" * 18, "", "", [{"CPU": 1.0}], "PACK", "PENDING", b"job"))
        await manager._try_place(group)
        assert group.state.name == "PENDING"
        assert nodes.available[info.node_id] == {"CPU": 2.0}
    asyncio.run(main())


class NoScan(dict):
    """A table that fails the test if it is scanned whole."""

    def values(self):
        raise AssertionError("scanned every entry")

    def __iter__(self):
        raise AssertionError("scanned every entry")


def test_a_node_death_reads_the_actors_and_groups_of_that_node_only():
    async def main():
        store = InMemoryStoreClient()
        a, b = node(1), node(2)
        owner = Address(a.node_id, "127.0.0.1", 1, worker_id=b"w" * 28)
        for n, where in enumerate((a, a, b)):
            info = msg.ActorInfo(bytes([n]) * 16, b"job", "A", "ALIVE", owner,
                                 node_id=where.node_id)
            await store.put("actor", info.actor_id, msgspec.msgpack.encode(
                ActorTableData(info, worker_id=bytes([n]) * 28)))
        for n, where in enumerate((a, b)):
            group = msg.PlacementGroupInfo(bytes([n]) * 18, "", "", [{"CPU": 1.0}], "PACK",
                                           "CREATED", b"job", bundle_nodes=[where.node_id])
            await store.put("placement_group", group.placement_group_id,
                            msgspec.msgpack.encode(group))
        actors = ActorManager(Publisher(), None, store)
        groups = PlacementGroupManager(None, actors, store)
        await actors.load()
        await groups.load()
        actors.actors = NoScan(actors.actors)
        groups.groups = NoScan(groups.groups)
        groups._schedule = lambda group: asyncio.sleep(0)

        actors.node_died(msg.NodeInfo(a.node_id, "127.0.0.1", "h", a.raylet, {}, alive=False))
        groups.node_died(msg.NodeInfo(a.node_id, "127.0.0.1", "h", a.raylet, {}, alive=False))
        states = {k: v.state.name for k, v in dict.items(actors.actors)}
        assert states == {bytes([0]) * 16: "DEAD", bytes([1]) * 16: "DEAD",
                          bytes([2]) * 16: "ALIVE"}
        assert {k: v.state.name for k, v in dict.items(groups.groups)} == {
            bytes([0]) * 18: "RESCHEDULING", bytes([1]) * 18: "CREATED"}
    asyncio.run(main())
