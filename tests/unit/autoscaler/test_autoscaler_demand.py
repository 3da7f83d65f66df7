"""The demand's way to the autoscaler, with no processes: the raylet's idleness, the
GCS's aggregation, request_resources' checks, and the status section's layout."""
import asyncio

import msgspec
import pytest

from ember.autoscaler.sdk import validate_request
from ember.autoscaler.status import format_autoscaler, format_demand
from ember.gcs.autoscaler_state import AutoscalerStateManager, merge_demand
from ember.gcs.kv_manager import KVManager
from ember.gcs.node_manager import NodeManager
from ember.gcs.placement_group_manager import PlacementGroup, PlacementGroupManager
from ember.gcs.pubsub import Publisher
from ember.gcs.storage import InMemoryStoreClient
from ember.protocol import gcs as msg
from ember.protocol.common import Address
from ember.raylet.node_usage import NodeUsage


# --- the raylet: is this node idle? ----------------------------------------------------

class Fake:
    def __init__(self, **attrs):
        self.__dict__.update(attrs)


def test_node_usage_names_what_keeps_a_node_busy_and_reports_changes():
    leases = Fake(granted={})
    bundles = Fake(num_committed=lambda: 0)
    objects = []
    store = Fake(num_primary=lambda: sum(1 for o in objects if o.is_primary))
    demand = []
    reports = []
    usage = NodeUsage(leases, bundles, store, lambda: list(demand),
                      lambda: reports.append(1), 1.0)
    usage.check()
    assert usage.busy == [] and reports == []
    leases.granted = {b"l": object()}
    bundles.num_committed = lambda: 2
    objects += [Fake(is_primary=True), Fake(is_primary=False)]
    usage.check()
    assert usage.busy == ["1 leased worker", "2 placement group bundles",
                          "1 primary object copy"]
    assert len(reports) == 1
    usage.check()
    assert len(reports) == 1  # nothing changed: no report
    demand.append(msg.ResourceDemand({"CPU": 1.0}, 1))
    usage.check()
    assert len(reports) == 2  # the demand differs from the last report
    assert usage.demand() == [msg.ResourceDemand({"CPU": 1.0}, 1)]
    usage.check()
    assert len(reports) == 2


# --- the GCS: one cluster-wide view -----------------------------------------------------

def test_merge_demand_sums_equal_shapes_across_raylets():
    merged = merge_demand([[msg.ResourceDemand({"CPU": 1.0}, 2),
                            msg.ResourceDemand({"CPU": 9.0}, 1, True)],
                           [msg.ResourceDemand({"CPU": 1.0}, 3)]])
    assert merged == [msg.ResourceDemand({"CPU": 1.0}, 5),
                      msg.ResourceDemand({"CPU": 9.0}, 1, True)]


def test_the_gcs_view_has_leases_pending_groups_and_requests_and_drains_nodes():
    async def main():
        store = InMemoryStoreClient()
        nodes = NodeManager(store, Publisher())
        groups = PlacementGroupManager(nodes, None, store)
        kv = KVManager(store)
        manager = AutoscalerStateManager(nodes, groups, kv)
        node_id = b"n" * 28
        info = msg.NodeInfo(node_id, "127.0.0.1", "h", Address(node_id, "127.0.0.1", 1),
                            {"CPU": 2.0})
        nodes.nodes[node_id] = info
        nodes.report_resources(None, msg.ReportResources(
            node_id, {"CPU": 0.0}, demand=[msg.ResourceDemand({"CPU": 2.0}, 4)],
            busy=["1 leased worker"]))
        pending = msg.PlacementGroupInfo(b"g" * 18, "", "", [{"CPU": 1.0}, {"CPU": 1.0}],
                                         "STRICT_SPREAD", "PENDING", b"job")
        groups.groups[pending.placement_group_id] = PlacementGroup(pending)
        await kv.put(None, msg.KVPut(msg.AUTOSCALER_KV_NAMESPACE, msg.REQUEST_RESOURCES_KEY,
                                     msgspec.msgpack.encode([{"GPU": 1.0}])))
        view = manager.cluster_demand(None, msg.GetClusterDemand())
        assert view.tasks == [msg.ResourceDemand({"CPU": 2.0}, 4)]
        assert view.busy == {node_id: ["1 leased worker"]}
        assert view.placement_groups == [msg.PlacementGroupDemand(
            pending.placement_group_id, [{"CPU": 1.0}, {"CPU": 1.0}], "STRICT_SPREAD")]
        assert view.requested == [{"GPU": 1.0}]
        assert (await manager.drain(None, msg.DrainNode(node_id))).accepted
        assert nodes.nodes[node_id].draining
        assert not (await manager.drain(None, msg.DrainNode(b"x" * 28))).accepted
    asyncio.run(main())


# --- request_resources ----------------------------------------------------------------

def test_request_resources_turns_cpus_into_bundles():
    assert validate_request(2, [{"GPU": 1}]) == [{"CPU": 1.0}, {"CPU": 1.0}, {"GPU": 1.0}]
    assert validate_request(None, None) == []


@pytest.mark.parametrize("num_cpus, bundles, message", [
    (-1, None, "num_cpus must be a non-negative integer, got -1."),
    (1.5, None, "num_cpus must be a non-negative integer, got 1.5."),
    (None, {"CPU": 1}, "bundles must be a list of resource dicts"),
    (None, [{"CPU": -2}], "bundles[0]['CPU'] must be a non-negative number, got -2."),
    (None, [["CPU"]], "bundles[0] must be a dict of resource amounts"),
])
def test_request_resources_rejects_bad_input(num_cpus, bundles, message):
    with pytest.raises(ValueError) as info:
        validate_request(num_cpus, bundles)
    assert message in str(info.value)


# --- ember status ----------------------------------------------------------------------

def test_status_section_in_rays_layout():
    head = msg.NodeInfo(b"h" * 28, "127.0.0.1", "h", Address(b"h" * 28, "127.0.0.1", 1),
                        {"CPU": 1.0}, is_head=True)
    status = msg.AutoscalerStatus(
        0.0, "demo",
        [msg.AutoscalerNodeReport("p1", "cpu4", "running"),
         msg.AutoscalerNodeReport("p2", "cpu4", "launching")],
        [msg.AutoscalerNodeReport("p0", "gpu", "failed", error="quota exceeded")],
        infeasible=[{"CPU": 64.0}])
    demand = msg.ClusterDemandReply(
        [head], {}, {}, [msg.ResourceDemand({"CPU": 4.0}, 3),
                         msg.ResourceDemand({"CPU": 64.0}, 1, True)],
        [msg.PlacementGroupDemand(b"g", [{"CPU": 1.0}, {"CPU": 1.0}], "PACK")],
        [{"CPU": 1.0}] * 8)
    text = "\n".join(format_autoscaler(status, demand))
    assert "Healthy:\n 1 cpu4\n 1 head\nPending:\n cpu4, 1 launching\n" in text
    assert "Recent failures:\n gpu (p0): quota exceeded" in text
    assert " {'CPU': 4.0}: 3+ pending tasks\n" in text
    assert " {'CPU': 64.0}: 1+ pending tasks (no node type can hold it)" in text
    assert " {'CPU': 1.0} + {'CPU': 1.0} (PACK): 1+ pending placement groups" in text
    assert " {'CPU': 1.0} * 8: from request_resources()" in text
    assert "no autoscaler" in format_autoscaler(None, demand)[1]
    assert format_demand(msg.ClusterDemandReply([], {}, {}, [], [], [])) == []
