"""The monitor's round with a fake provider and a fake GCS: no processes, a fake clock.

What is checked here is what the pure decision cannot show: failed launches
back off and are reported, drained nodes are removed only if still idle,
nodes that never join time out, and every action reaches the drivers.
"""
import asyncio

import msgspec

from ember.autoscaler.config import validate_config
from ember.autoscaler.monitor import DRAIN_CHECK_S, Monitor
from ember.autoscaler.node_status import NodeStatus
from ember.autoscaler.providers.base import (LABEL_NODE_TYPE, LABEL_PROVIDER_NODE_ID,
                                             NodeProvider, ProviderNode)
from ember.protocol import gcs as msg
from ember.protocol.common import Address


class FakeProvider(NodeProvider):
    def __init__(self):
        self.nodes: dict[str, ProviderNode] = {}
        self.created = 0
        self.terminated: list[str] = []
        self.fail_next = False

    def create_node(self, node_type, count):
        ids = []
        for _ in range(count):
            self.created += 1
            node_id = f"p{self.created}"
            status = NodeStatus.FAILED if self.fail_next else NodeStatus.RUNNING
            self.nodes[node_id] = ProviderNode(node_id, node_type.name, status,
                                               "boom" if self.fail_next else "")
            ids.append(node_id)
        return ids

    def terminate_node(self, node_id):
        self.terminated.append(node_id)
        self.nodes.pop(node_id, None)

    def non_terminated_nodes(self):
        return list(self.nodes.values())


class FakeGcs:
    def __init__(self):
        head = msg.NodeInfo(b"h" * 28, "127.0.0.1", "host", Address(b"h" * 28, "127.0.0.1", 1),
                            {"CPU": 1.0}, is_head=True)
        self.nodes = [head]
        self.available = {head.node_id: {"CPU": 0.0}}
        self.busy = {}
        self.tasks = []
        self.drains = []
        self.status = None

    def join(self, provider_id, node_type="cpu4", cpus=4.0):
        node_id = provider_id.encode().ljust(28, b"_")
        self.nodes.append(msg.NodeInfo(
            node_id, "127.0.0.1", "host", Address(node_id, "127.0.0.1", 2), {"CPU": cpus},
            labels={LABEL_PROVIDER_NODE_ID: provider_id, LABEL_NODE_TYPE: node_type}))
        self.available[node_id] = {"CPU": cpus}
        return node_id

    async def call(self, request):
        if isinstance(request, msg.GetClusterDemand):
            alive = [n.node_id for n in self.nodes if n.alive]
            return msg.ClusterDemandReply(self.nodes, self.available,
                                          {n: self.busy.get(n, []) for n in alive},
                                          self.tasks, [], [])
        if isinstance(request, msg.DrainNode):
            self.drains.append((request.node_id, request.draining))
            return msg.DrainNodeReply(True)
        if isinstance(request, msg.KVPut):
            self.status = msgspec.msgpack.decode(request.value, type=msg.AutoscalerStatus)
            return msg.KVPutReply(True)
        raise AssertionError(request)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def make_monitor(**provider_extra):
    config = validate_config({
        "max_workers": 4, "idle_timeout_minutes": 1.0, "head_node_type": "head",
        "provider": {"type": "local", "launch_backoff_s": 10.0, "launch_timeout_s": 30.0,
                     **provider_extra},
        "available_node_types": {"head": {"resources": {"CPU": 1}, "max_workers": 0},
                                 "cpu4": {"resources": {"CPU": 4}, "max_workers": 4}}})
    provider, gcs, clock, events = FakeProvider(), FakeGcs(), Clock(), []
    monitor = Monitor(config, provider, "unused", clock=clock, gcs_call=gcs.call,
                      publish=lambda m: events.append(m.info.message))
    return monitor, provider, gcs, clock, events


def run_round(monitor):
    asyncio.run(monitor.round())


def test_demand_launches_and_the_driver_hears_of_it():
    monitor, provider, gcs, clock, events = make_monitor()
    gcs.tasks = [msg.ResourceDemand({"CPU": 4.0}, 2)]
    run_round(monitor)
    assert provider.created == 2
    assert events == ["(autoscaler) Adding 2 node(s) of type cpu4."]
    assert gcs.status.nodes == []  # written before the launch
    run_round(monitor)  # launching nodes count as capacity: nothing more
    assert provider.created == 2
    assert sorted((n.node_type, n.status) for n in gcs.status.nodes) == \
        [("cpu4", "launching")] * 2


def test_a_failed_launch_is_reported_and_retried_after_a_backoff():
    monitor, provider, gcs, clock, events = make_monitor()
    gcs.tasks = [msg.ResourceDemand({"CPU": 4.0}, 1)]
    provider.fail_next = True
    run_round(monitor)  # launches p1, which fails
    clock.now += 1
    run_round(monitor)  # sees the failure: reported, terminated, backoff starts
    assert provider.terminated == ["p1"]
    assert any("Node p1 of type cpu4 failed: boom" in e for e in events)
    assert [f.error for f in gcs.status.failures] == ["boom"]
    for _ in range(4):  # within the backoff (10 s * at least 0.5): no new launch
        clock.now += 1
        run_round(monitor)
    assert provider.created == 1
    provider.fail_next = False
    clock.now += 20
    run_round(monitor)
    assert provider.created == 2


def test_the_backoff_doubles_while_launches_keep_failing():
    monitor, provider, gcs, clock, events = make_monitor()
    gcs.tasks = [msg.ResourceDemand({"CPU": 4.0}, 1)]
    provider.fail_next = True
    launches = []
    for _ in range(200):  # 200 s of rounds, one per second
        before = provider.created
        run_round(monitor)
        if provider.created > before:
            launches.append(clock.now)
        clock.now += 1
    gaps = [b - a for a, b in zip(launches, launches[1:])]
    assert len(launches) < 10, launches
    assert gaps[-1] > gaps[0]


def test_a_node_that_never_joins_times_out_as_failed():
    monitor, provider, gcs, clock, events = make_monitor()
    gcs.tasks = [msg.ResourceDemand({"CPU": 4.0}, 1)]
    run_round(monitor)
    clock.now += 31
    run_round(monitor)
    assert provider.terminated == ["p1"]
    assert "did not join the cluster within 30 s" in gcs.status.failures[0].error


def joined_idle_node(monitor, provider, gcs, clock):
    gcs.tasks = [msg.ResourceDemand({"CPU": 4.0}, 1)]
    run_round(monitor)
    gcs.tasks = []
    node_id = gcs.join("p1")
    run_round(monitor)  # joined, idle from now
    clock.now += 61
    run_round(monitor)  # idle past the timeout: drained
    assert gcs.drains == [(node_id, True)]
    return node_id


def test_an_idle_node_is_drained_then_removed_if_still_idle():
    monitor, provider, gcs, clock, events = make_monitor()
    node_id = joined_idle_node(monitor, provider, gcs, clock)
    run_round(monitor)  # too early to decide
    assert provider.terminated == []
    assert monitor.debug_state()["draining"] == ["p1"]
    clock.now += DRAIN_CHECK_S
    run_round(monitor)
    assert provider.terminated == ["p1"]
    assert events[-1] == "(autoscaler) Removing 1 node of type cpu4 (idle)."


def test_a_drained_node_that_got_work_is_kept_and_undrained():
    monitor, provider, gcs, clock, events = make_monitor()
    node_id = joined_idle_node(monitor, provider, gcs, clock)
    gcs.busy[node_id] = ["1 primary object copy"]
    clock.now += DRAIN_CHECK_S
    run_round(monitor)
    assert provider.terminated == []
    assert gcs.drains[-1] == (node_id, False)


def test_a_joined_node_that_dies_is_reported_failed():
    monitor, provider, gcs, clock, events = make_monitor()
    gcs.tasks = [msg.ResourceDemand({"CPU": 4.0}, 1)]
    run_round(monitor)
    gcs.join("p1")
    run_round(monitor)
    gcs.nodes[-1].alive = False
    gcs.nodes[-1].death_reason = "the raylet's connection to the GCS closed"
    clock.now += 1
    run_round(monitor)
    assert provider.terminated == ["p1"]
    assert "the node died: the raylet's connection" in gcs.status.failures[0].error


def test_infeasible_demand_is_reported_once_naming_the_shape():
    monitor, provider, gcs, clock, events = make_monitor()
    gcs.tasks = [msg.ResourceDemand({"CPU": 64.0}, 3, infeasible=True)]
    run_round(monitor)
    run_round(monitor)
    warnings = [e for e in events if "No node type can hold" in e]
    assert len(warnings) == 1
    assert "{'CPU': 64.0}" in warnings[0] and "'cpu4': {'CPU': 4.0}" in warnings[0]
    assert provider.created == 0
    assert gcs.status.infeasible == [{"CPU": 64.0}] * 3


def test_nodes_the_provider_does_not_know_count_as_capacity_and_are_kept():
    monitor, provider, gcs, clock, events = make_monitor()
    gcs.join("from-an-earlier-monitor")
    gcs.tasks = [msg.ResourceDemand({"CPU": 4.0}, 1)]
    run_round(monitor)
    assert provider.created == 0  # the demand fits the node already there
    gcs.tasks = []
    for _ in range(3):
        clock.now += 100
        run_round(monitor)
    assert gcs.drains == [] and provider.terminated == []


def test_the_monitor_stops_when_the_gcs_is_gone_for_good():
    monitor, provider, gcs, clock, events = make_monitor()

    async def unreachable(request):
        clock.now += 30
        raise ConnectionError("refused")
    monitor._gcs_call = unreachable
    asyncio.run(asyncio.wait_for(monitor.run(period=0), 5))  # returns: it gave up


def test_a_provider_that_raises_is_a_failed_launch_not_a_dead_monitor():
    monitor, provider, gcs, clock, events = make_monitor()
    gcs.tasks = [msg.ResourceDemand({"CPU": 4.0}, 1)]

    def broken(node_type, count):
        raise KeyError("zone")
    provider.create_node = broken
    run_round(monitor)
    assert gcs.status.failures[0].error == "the provider raised KeyError('zone')"
    assert provider.terminated == []
    assert "(autoscaler) A node of type cpu4 failed: the provider raised" in events[-1]


def test_a_node_left_draining_by_an_earlier_monitor_is_put_back_in_service():
    monitor, provider, gcs, clock, events = make_monitor()
    node_id = gcs.join("from-an-earlier-monitor")
    gcs.nodes[-1].draining = True
    run_round(monitor)
    assert gcs.drains == [(node_id, False)]
