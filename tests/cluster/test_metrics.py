"""Each node's Prometheus endpoint: system metrics, and user metrics from tasks, actors and
the driver (``ember.util.metrics``), scraped over real HTTP and parsed with
``prometheus_client.parser``."""
from __future__ import annotations

import glob
import os
import urllib.request

import pytest

import ember as ray
from ember.util.metrics import Counter, Gauge, Histogram
from helpers import wait_for_condition

parser = pytest.importorskip("prometheus_client.parser")


@pytest.fixture
def metrics_cluster(fresh, monkeypatch):
    monkeypatch.setenv("EMBER_METRICS_EXPORT_PORT", "0")  # the raylet reads it at start
    fresh(num_cpus=2)
    session = ray.get_runtime_context()._core().session_dir
    wait_for_condition(lambda: glob.glob(os.path.join(session, "metrics_export_address_*")),
                       message="the metrics address file")
    (path,) = glob.glob(os.path.join(session, "metrics_export_address_*"))
    with open(path) as f:
        yield f.read().strip()


def scrape(address) -> dict:
    """{sample name: [(labels, value)]} from the endpoint."""
    text = urllib.request.urlopen(f"http://{address}/metrics", timeout=10).read().decode()
    samples: dict = {}
    for family in parser.text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


@ray.remote
def record_in_task():
    from ember.util.metrics import Counter, Histogram
    Counter("test_task_requests", description="from a task", tag_keys=("route",)).inc(
        2, tags={"route": "/a"})
    Histogram("test_task_latency", boundaries=[0.5, 5.0]).observe(1.0)
    return True


@ray.remote
class Recorder:
    def __init__(self):
        from ember.util.metrics import Gauge
        self.gauge = Gauge("test_actor_queue", tag_keys=("actor",))
        self.gauge.set_default_tags({"actor": "recorder"})

    def set(self, value):
        self.gauge.set(value)
        return value


def test_user_metrics_from_task_actor_and_driver(metrics_cluster):
    ray.get([record_in_task.remote() for _ in range(3)])
    actor = Recorder.remote()
    ray.get(actor.set.remote(7))
    Counter("test_driver_events").inc(5)

    def exported():
        s = scrape(metrics_cluster)
        return (s.get("test_task_requests_total") == [({"route": "/a"}, 6.0)]
                and s.get("test_actor_queue") == [({"actor": "recorder"}, 7.0)]
                and s.get("test_driver_events_total") == [({}, 5.0)]
                and ({"le": "5.0"}, 3.0) in s.get("test_task_latency_bucket", [])
                and s.get("test_task_latency_sum") == [({}, 3.0)])
    wait_for_condition(exported, timeout=10, message="user metrics on the endpoint")


def test_system_metrics(metrics_cluster):
    ray.get(record_in_task.remote())
    host = metrics_cluster.rpartition(":")[0]
    assert host == "127.0.0.1"  # the node's bound address, not 0.0.0.0

    def exported():
        s = scrape(metrics_cluster)
        cpu = sum(v for labels, v in s["ember_resources"] if labels["Name"] == "CPU")
        return (s["ember_node_mem_total"][0][1] > 0 and cpu == 2.0
                and any(labels["State"] == "FINISHED" and v >= 1
                        for labels, v in s.get("ember_tasks", [])))
    wait_for_condition(exported, timeout=10, message="system metrics")
    s = scrape(metrics_cluster)
    for name in ("ember_node_cpu_utilization", "ember_node_mem_used",
                 "ember_object_store_memory", "ember_workers", "ember_scheduler_queued_leases",
                 "ember_gcs_request_latency_seconds_count", "ember_resources"):
        assert name in s, name
    assert {labels["Location"] for labels, _ in s["ember_object_store_memory"]} == {
        "MMAP_SHM", "SPILLED"}


def test_metric_argument_checks():
    with pytest.warns(UserWarning, match="Invalid metric name 'bad-name'"):
        Gauge("bad-name")
    with pytest.raises(ValueError, match="Empty name"):
        Counter("")
    with pytest.raises(ValueError, match="boundaries"):
        Histogram("h", boundaries=[])
    with pytest.raises(ValueError, match="Unrecognized tag key 'other'"):
        Counter("c", tag_keys=("a",)).set_default_tags({"other": "x"})
    with pytest.raises(ValueError, match=r"Missing value for tag key\(s\) \['a'\]"):
        Counter("c2", tag_keys=("a",)).inc()
    with pytest.raises(TypeError, match="tag_keys must be a tuple"):
        Counter("c3", tag_keys=["a"])
    assert Counter("c4", description="d", tag_keys=("a",)).info["description"] == "d"


def test_grafana_dashboard_charts_exported_metrics(metrics_cluster):
    """Every ember_ metric the sample dashboard queries is one the endpoint serves."""
    import json
    import re
    path = os.path.join(os.path.dirname(__file__), "..", "..", "dashboards", "grafana", "ember.json")
    with open(path) as f:
        dashboard = json.load(f)
    used = {re.sub(r"_(bucket|count|sum)$", "", name)
            for panel in dashboard["panels"] for target in panel["targets"]
            for name in re.findall(r"ember_[a-z_]+", target["expr"])}
    ray.get(record_in_task.remote())
    recorder = Recorder.remote()
    ray.get(recorder.set.remote(1))
    wait_for_condition(lambda: {"ember_tasks", "ember_actors"} <= set(scrape(metrics_cluster)),
                       timeout=10, message="the head's task and actor counts")
    exported = {re.sub(r"_(bucket|count|sum)$", "", name) for name in scrape(metrics_cluster)}
    assert used and used <= exported, used - exported


@ray.remote(num_cpus=1)
def placed_task():
    return True


@ray.remote(num_cpus=0)
class Placed:
    def ping(self):
        return True


def test_each_node_exports_its_own_tasks_and_actors(monkeypatch):
    """Summed over nodes, ``ember_tasks`` counts each attempt once (the head also
    counts what is on no node yet), as Ray's per-node ``ray_tasks`` does."""
    from ember.cluster_utils import Cluster
    from ember.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    import helpers

    monkeypatch.setenv("EMBER_METRICS_EXPORT_PORT", "0")
    ray.shutdown()
    cluster = Cluster()
    try:
        head = cluster.add_node(num_cpus=1)
        other = cluster.add_node(num_cpus=1)
        helpers.drive(cluster)
        session = ray.get_runtime_context()._core().session_dir

        def address(node):
            paths = glob.glob(os.path.join(session, f"metrics_export_address_{node.node_id[:12]}"))
            if paths:
                with open(paths[0]) as f:
                    return f.read().strip()
        wait_for_condition(lambda: address(head) and address(other),
                           message="both nodes' metrics address files")
        on_other = NodeAffinitySchedulingStrategy(other.node_id, soft=False)
        ray.get([placed_task.options(scheduling_strategy=on_other).remote() for _ in range(3)])
        actor = Placed.options(scheduling_strategy=on_other).remote()
        ray.get(actor.ping.remote())
        infeasible = placed_task.options(num_cpus=64).remote()  # on no node: the head's

        def counts(node, metric, name):
            return {labels["State"]: v for labels, v in scrape(address(node)).get(metric, [])
                    if labels["Name"] == name}
        wait_for_condition(lambda: counts(other, "ember_tasks", "placed_task").get(
            "FINISHED") == 3, timeout=15, message="the other node's finished tasks")
        wait_for_condition(lambda: counts(other, "ember_actors", "Placed") == {"ALIVE": 1},
                           timeout=15, message="the other node's actor")
        wait_for_condition(lambda: counts(head, "ember_tasks", "placed_task").get(
            "PENDING_NODE_ASSIGNMENT") == 1, timeout=15, message="the head's unplaced task")
        assert "FINISHED" not in counts(head, "ember_tasks", "placed_task")
        assert counts(head, "ember_actors", "Placed") == {}
        ray.cancel(infeasible)
    finally:
        ray.shutdown()
        cluster.shutdown()
