"""Placement groups: creation, readiness, strategies across nodes, scheduling into
bundles, removal, lookup, child-task capture, bad input, and the GCS's rollback
of a failed two-phase placement.

The module shares a three-node ``Cluster`` (2 CPUs each, the driver on the
head); tests remove the groups and nodes they create. The rollback test drives
the GCS manager with fake raylets, without processes.
"""
from __future__ import annotations

import asyncio
import time

import pytest

import helpers

import ember as ray
from ember.cluster_utils import Cluster
from ember.exceptions import ActorDiedError
from ember.gcs.placement_group_manager import (PlacementGroup as GcsPlacementGroup,
                                               PlacementGroupManager, choose_nodes)
from ember.protocol import gcs as gcs_msg
from ember.protocol import raylet as rl
from ember.util.placement_group import PlacementGroup, PlacementGroupID
# As in Ray, ember.util exports the placement group API itself.
from ember.util import (get_current_placement_group, get_placement_group, placement_group,
                        placement_group_table, remove_placement_group)
from ember.util.scheduling_strategies import PlacementGroupSchedulingStrategy
from helpers import wait_for_condition

CPUS_PER_NODE = 2


@pytest.fixture(scope="module")
def _cluster():
    ray.shutdown()
    cluster = Cluster()
    for _ in range(3):
        cluster.add_node(num_cpus=CPUS_PER_NODE)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture
def cluster(_cluster):
    """The three-node cluster; this process is its driver. Groups left over are removed."""
    helpers.drive(_cluster)
    yield _cluster
    for row in placement_group_table().values():
        if row["state"] != "REMOVED":
            remove_placement_group(PlacementGroup(
                PlacementGroupID(bytes.fromhex(row["placement_group_id"]))))
    total = CPUS_PER_NODE * len(_cluster.list_all_nodes())
    wait_for_condition(lambda: ray.available_resources().get("CPU") == total,
                       message="every CPU to be free again")


@ray.remote(num_cpus=1)
def where() -> str:
    return ray.get_runtime_context().get_node_id()


@ray.remote(num_cpus=1)
class Where:
    def node(self) -> str:
        return ray.get_runtime_context().get_node_id()


def bundle_nodes(pg) -> dict[int, str]:
    return placement_group_table(pg)["bundles_to_node_id"]


def in_bundle(pg, index: int = -1, capture: bool | None = None):
    return PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=index,
                                            placement_group_capture_child_tasks=capture)


def test_create_ready_and_remove_frees_resources(cluster):
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="PACK")
    assert ray.get(pg.ready(), timeout=30) == pg
    assert pg.wait(timeout_seconds=5)
    row = placement_group_table(pg)
    assert row["state"] == "CREATED"
    assert row["bundles"] == {0: {"CPU": 1}, 1: {"CPU": 1}}
    assert row["strategy"] == "PACK"
    assert pg.bundle_count == 2 and pg.bundle_specs == [{"CPU": 1}, {"CPU": 1}]
    wait_for_condition(lambda: ray.available_resources().get("CPU") == 6 - 2,
                       message="the group's CPUs to be reserved")
    remove_placement_group(pg)
    assert placement_group_table(pg)["state"] == "REMOVED"
    wait_for_condition(lambda: ray.available_resources().get("CPU") == 6,
                       message="the group's CPUs to be freed")
    assert not [k for k in ray.available_resources() if "_group_" in k]


def test_wait_times_out_for_a_group_that_does_not_fit(cluster):
    pg = placement_group([{"CPU": CPUS_PER_NODE + 1}])
    start = time.monotonic()
    assert not pg.wait(timeout_seconds=1)
    assert time.monotonic() - start >= 0.9  # it waited for its timeout
    ready, _ = ray.wait([pg.ready()], timeout=0.5)
    assert not ready
    row = placement_group_table(pg)
    assert row["state"] == "PENDING" and row["bundles_to_node_id"] == {}
    assert "waiting for resources" in row["stats"]["message"]
    remove_placement_group(pg)


@pytest.mark.parametrize("strategy", ["PACK", "STRICT_PACK"])
def test_pack_strategies_put_bundles_on_one_node(cluster, strategy):
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy=strategy)
    assert pg.wait(30)
    nodes = bundle_nodes(pg)
    assert len(nodes) == 2 and len(set(nodes.values())) == 1
    remove_placement_group(pg)


def test_pack_falls_back_to_several_nodes_strict_pack_waits(cluster):
    pg = placement_group([{"CPU": 2}, {"CPU": 2}], strategy="PACK")
    assert pg.wait(30)
    assert len(set(bundle_nodes(pg).values())) == 2
    remove_placement_group(pg)
    strict = placement_group([{"CPU": 2}, {"CPU": 2}], strategy="STRICT_PACK")
    assert not strict.wait(1)
    remove_placement_group(strict)


@pytest.mark.parametrize("strategy", ["SPREAD", "STRICT_SPREAD"])
def test_spread_strategies_put_bundles_on_different_nodes(cluster, strategy):
    pg = placement_group([{"CPU": 1}] * 3, strategy=strategy)
    assert pg.wait(30)
    nodes = bundle_nodes(pg)
    assert set(nodes.values()) == {n.node_id for n in cluster.list_all_nodes()}
    remove_placement_group(pg)


def test_spread_reuses_nodes_when_there_are_more_bundles_than_nodes(cluster):
    pg = placement_group([{"CPU": 1}] * 4, strategy="SPREAD")
    assert pg.wait(30)
    assert len(set(bundle_nodes(pg).values())) == 3
    remove_placement_group(pg)


@pytest.mark.timeout(90)
def test_strict_spread_waits_for_a_node(cluster):
    pg = placement_group([{"CPU": 1}] * 4, strategy="STRICT_SPREAD")
    assert not pg.wait(1)
    assert placement_group_table(pg)["state"] == "PENDING"
    node = cluster.add_node(num_cpus=1)
    try:
        assert pg.wait(30)
        nodes = bundle_nodes(pg)
        assert len(set(nodes.values())) == 4 and node.node_id in nodes.values()
        remove_placement_group(pg)
    finally:
        cluster.remove_node(node)
        cluster.wait_for_nodes()


def test_task_and_actor_run_on_their_bundles_node(cluster):
    pg = placement_group([{"CPU": 1}] * 3, strategy="STRICT_SPREAD")
    assert pg.wait(30)
    nodes = bundle_nodes(pg)
    for index in range(3):
        strategy = in_bundle(pg, index)
        assert ray.get(where.options(scheduling_strategy=strategy).remote(),
                       timeout=30) == nodes[index]
        actor = Where.options(scheduling_strategy=strategy).remote()
        assert ray.get(actor.node.remote(), timeout=30) == nodes[index]
        ray.kill(actor)
    # Any bundle: one of the group's nodes.
    assert ray.get(where.options(scheduling_strategy=in_bundle(pg)).remote(),
                   timeout=30) in set(nodes.values())
    remove_placement_group(pg)


def test_removing_a_group_kills_its_actor(cluster):
    pg = placement_group([{"CPU": 1}])
    assert pg.wait(30)
    actor = Where.options(scheduling_strategy=in_bundle(pg, 0)).remote()
    assert ray.get(actor.node.remote(), timeout=30) == bundle_nodes(pg)[0]
    remove_placement_group(pg)
    with pytest.raises(ActorDiedError, match="placement group") as info:
        for _ in range(100):
            ray.get(actor.node.remote(), timeout=30)
            time.sleep(0.05)
    assert pg.id.hex() in str(info.value)
    wait_for_condition(lambda: ray.available_resources().get("CPU") == 6,
                       message="the group's CPUs to be freed")


def test_task_of_a_removed_group_fails(cluster):
    pg = placement_group([{"CPU": 1}])
    assert pg.wait(30)
    remove_placement_group(pg)
    with pytest.raises(Exception, match="placement group"):
        ray.get(where.options(scheduling_strategy=in_bundle(pg, 0)).remote(), timeout=30)


def test_named_group_lookup_and_table(cluster):
    pg = placement_group([{"CPU": 1}], name="pg-lookup")
    assert pg.wait(30)
    assert get_placement_group("pg-lookup") == pg
    table = placement_group_table()
    assert table[pg.id.hex()]["name"] == "pg-lookup"
    assert table[pg.id.hex()]["state"] == "CREATED"
    with pytest.raises(ValueError, match="already exists"):
        placement_group([{"CPU": 1}], name="pg-lookup")
    remove_placement_group(pg)
    with pytest.raises(ValueError, match="'pg-lookup'"):
        get_placement_group("pg-lookup")
    with pytest.raises(ValueError, match="'never-made'"):
        get_placement_group("never-made")


def test_current_group_and_child_task_capture(cluster):
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_PACK")
    assert pg.wait(30)
    group_node = bundle_nodes(pg)[0]

    @ray.remote(num_cpus=0)
    def child():
        current = get_current_placement_group()
        return current.id.hex() if current else None, ray.get_runtime_context().get_node_id()

    @ray.remote(num_cpus=1)
    def parent():
        current = get_current_placement_group()
        return current.id.hex() if current else None, ray.get(child.remote())

    assert get_current_placement_group() is None
    captured = parent.options(scheduling_strategy=in_bundle(pg, capture=True)).remote()
    mine, (childs, child_node) = ray.get(captured, timeout=30)
    assert mine == pg.id.hex() and childs == pg.id.hex() and child_node == group_node

    # Without capture, the child is not in the group.
    free = parent.options(scheduling_strategy=in_bundle(pg, 1)).remote()
    mine, (childs, _) = ray.get(free, timeout=30)
    assert mine == pg.id.hex() and childs is None
    remove_placement_group(pg)


@pytest.mark.parametrize("bundles, strategy, match", [
    ([], "PACK", "'bundles' must be a non-empty list"),
    ({"CPU": 1}, "PACK", "'bundles' must be a non-empty list"),
    ([{}], "PACK", "bundle 0 must be a non-empty dict"),
    ([{"CPU": 1}, {"CPU": -1}], "PACK", "bundle 1 resource 'CPU' must be a non-negative"),
    ([{"CPU": "1"}], "PACK", "bundle 0 resource 'CPU' must be a non-negative"),
    ([{"CPU": 0}], "PACK", "bundle 0 .* reserves nothing"),
    ([{"CPU": 1}], "SPREAD_OUT", "strategy 'SPREAD_OUT' is not one of"),
])
def test_bad_input_raises_value_error(cluster, bundles, strategy, match):
    with pytest.raises(ValueError, match=match):
        placement_group(bundles, strategy=strategy)


def test_bad_bundle_index_and_lifetime(cluster):
    pg = placement_group([{"CPU": 1}])
    with pytest.raises(ValueError, match="out of range: the group has 1 bundle"):
        PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=1)
    with pytest.raises(ValueError, match="lifetime must be None or 'detached'"):
        placement_group([{"CPU": 1}], lifetime="forever")
    remove_placement_group(pg)


# --- the GCS manager's two-phase placement, with fake raylets ----------------------------


def test_choose_nodes_per_strategy():
    avail = {b"a": {"CPU": 2.0}, b"b": {"CPU": 2.0}, b"c": {"CPU": 1.0}}
    two = [{"CPU": 1.0}, {"CPU": 1.0}]
    assert choose_nodes(two, "STRICT_PACK", avail, [0, 1]) == {0: b"a", 1: b"a"}
    assert choose_nodes(two, "STRICT_SPREAD", avail, [0, 1]) == {0: b"a", 1: b"b"}
    assert choose_nodes([{"CPU": 1.0}] * 4, "STRICT_SPREAD", avail, [0, 1, 2, 3]) is None
    assert choose_nodes([{"CPU": 2.0}] * 2, "STRICT_PACK", avail, [0, 1]) is None
    assert set(choose_nodes([{"CPU": 2.0}] * 2, "PACK", avail, [0, 1]).values()) == {
        b"a", b"b"}
    assert avail == {b"a": {"CPU": 2.0}, b"b": {"CPU": 2.0}, b"c": {"CPU": 1.0}}


class FakeRaylet:
    """A raylet connection that answers prepares as told and records the rest."""

    def __init__(self, prepare_ok: bool = True):
        self.prepare_ok = prepare_ok
        self.received: list = []
        self.closed = False

    async def call(self, request, timeout=None):
        self.received.append(request)
        if self.prepare_ok:
            return rl.PrepareBundleResourcesReply(True)
        return rl.PrepareBundleResourcesReply(False, "bundle 1 does not fit")

    def notify(self, message) -> None:
        self.received.append(message)


class FakeNodeManager:
    def __init__(self, node_ids):
        self.nodes = {n: gcs_msg.NodeInfo(node_id=n, ip="127.0.0.1", hostname="h",
                                          raylet=None, resources_total={"CPU": 1.0})
                      for n in node_ids}
        self.available = {n: {"CPU": 1.0} for n in node_ids}

    def alive_nodes(self):
        return list(self.nodes.values())


def test_failed_prepare_rolls_back_and_a_retry_commits():
    raylets = {b"a": FakeRaylet(), b"b": FakeRaylet(prepare_ok=False)}
    manager = PlacementGroupManager(FakeNodeManager(raylets), actor_manager=None)

    async def fake_raylet(node_id):
        return raylets[node_id]
    manager._raylet = fake_raylet
    info = gcs_msg.PlacementGroupInfo(placement_group_id=b"g" * 18, name="", namespace="",
                                      bundles=[{"CPU": 1.0}, {"CPU": 1.0}],
                                      strategy="STRICT_SPREAD", state="PENDING", job_id=b"j")
    group = GcsPlacementGroup(info)

    asyncio.run(manager._try_place(group))
    assert group.state.name == "PENDING" and info.bundle_nodes == [b"", b""]
    assert "preparing bundles failed: bundle 1 does not fit" in info.message
    prepare, cancel = raylets[b"a"].received
    assert isinstance(prepare, rl.PrepareBundleResources)
    assert isinstance(cancel, rl.CancelResourceReserve)
    assert cancel.bundle_indexes == [0] and not cancel.removed
    assert not any(isinstance(m, rl.CommitBundleResources)
                   for r in raylets.values() for m in r.received)

    for raylet in raylets.values():
        raylet.prepare_ok, raylet.received = True, []
    manager._nodes.available = {n: {"CPU": 1.0} for n in raylets}
    asyncio.run(manager._try_place(group))
    assert group.state.name == "CREATED" and info.bundle_nodes == [b"a", b"b"]
    for node_id, index in ((b"a", 0), (b"b", 1)):
        kinds = [type(m) for m in raylets[node_id].received]
        assert kinds == [rl.PrepareBundleResources, rl.CommitBundleResources]
        assert raylets[node_id].received[1].bundle_indexes == [index]
