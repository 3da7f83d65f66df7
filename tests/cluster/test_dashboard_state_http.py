"""The state API over HTTP, against the dashboard a real cluster's head starts.

Requests go over real HTTP to the dashboard process (``ember.init()`` starts
it and reports its URL); answers are checked in Ray's envelope
(``{"result", "msg", "data": {"result": ...}}``) and shapes, as Ray's own
clients and scripts read them.
"""
from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

import ember as ray
from helpers import cluster_with_dashboard, wait_for_condition

pytest.importorskip("aiohttp")


@pytest.fixture(scope="module")
def dashboard():
    """A cluster of this module's own, and its dashboard's URL (``http://HOST:PORT``)."""
    with cluster_with_dashboard(num_cpus=2) as url:
        yield url


def get(url: str, path: str, params=()) -> tuple[int, dict]:
    """``(status, JSON body)``; params are (key, value) pairs (keys may repeat)."""
    query = "?" + urllib.parse.urlencode(list(params)) if params else ""
    try:
        with urllib.request.urlopen(url + path + query, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def listing(url: str, resource: str, *filters, **params) -> dict:
    """A list route's ``data.result``; filters are (key, predicate, value)."""
    pairs = list(params.items())
    for key, predicate, value in filters:
        pairs += [("filter_keys", key), ("filter_predicates", predicate), ("filter_values", value)]
    status, body = get(url, f"/api/v0/{resource}", pairs)
    assert status == 200 and body["result"] is True and body["msg"] == "", body
    return body["data"]["result"]


@ray.remote
def square(x):
    return x * x


@ray.remote
class Greeter:
    def __init__(self, greeting):
        self.greeting = greeting

    def greet(self, name):
        print(f"{self.greeting}, {name}", flush=True)
        return name


@ray.remote
class Other:
    def ping(self):
        return "pong"


def test_actors_filtered_by_class_and_state_with_limit(dashboard):
    greeters = [Greeter.remote("hi") for _ in range(3)]
    other = Other.remote()
    ray.get([g.greet.remote("x") for g in greeters] + [other.ping.remote()])
    ray.kill(greeters[0])
    dead_id = greeters[0]._actor_id.hex()
    wait_for_condition(lambda: listing(dashboard, "actors", ("actor_id", "=", dead_id))
                       ["result"][0]["state"] == "DEAD", message="the killed actor DEAD")

    alive = listing(dashboard, "actors", ("class_name", "=", "Greeter"), ("state", "=", "ALIVE"))
    assert sorted(a["actor_id"] for a in alive["result"]) == sorted(
        g._actor_id.hex() for g in greeters[1:])
    assert alive["num_filtered"] == 2 and alive["num_after_truncation"] == 2
    not_greeters = listing(dashboard, "actors", ("class_name", "!=", "greeter"))  # any case
    assert {a["class_name"] for a in not_greeters["result"]} == {"Other"}

    limited = listing(dashboard, "actors", ("class_name", "=", "Greeter"), limit=2)
    assert len(limited["result"]) == 2 and limited["num_filtered"] == 3
    assert any("More than 2 actors match" in w for w in limited["warnings"])

    row = alive["result"][0]
    assert row["pid"] > 0 and row["node_id"] and "death_cause" not in row  # detail only
    detailed = listing(dashboard, "actors", ("actor_id", "=", dead_id), detail="true")
    assert detailed["result"][0]["death_cause"]["error_message"]
    for g in greeters[1:] + [other]:
        ray.kill(g)


def test_tasks_filters_limit_detail_and_summary(dashboard):
    ray.get([square.remote(i) for i in range(5)])
    finished = ("func_or_class_name", "=", "square"), ("state", "=", "FINISHED")
    wait_for_condition(lambda: len(listing(dashboard, "tasks", *finished)["result"]) >= 5,
                       timeout=15, message="five finished square tasks")

    rows = listing(dashboard, "tasks", *finished)["result"]
    assert {r["name"] for r in rows} == {"square"} and "events" not in rows[0]
    limited = listing(dashboard, "tasks", *finished, limit=3)
    assert len(limited["result"]) == 3
    assert any("More than 3 tasks match" in w for w in limited["warnings"])
    detailed = listing(dashboard, "tasks", *finished, limit=1, detail="1")["result"][0]
    assert [e["state"] for e in detailed["events"]][-1] == "FINISHED"
    assert detailed["creation_time_ms"] <= detailed["end_time_ms"]

    status, body = get(dashboard, "/api/v0/tasks/summarize")
    assert status == 200 and body["result"] is True
    summary = body["data"]["result"]["result"]["node_id_to_summary"]["cluster"]["summary"]
    assert summary["square"]["state_counts"]["FINISHED"] >= 5


def test_nodes_workers_jobs_objects_placement_groups(dashboard):
    from ember.util.placement_group import placement_group, remove_placement_group
    ref = ray.put(b"x" * 1000)
    pg = placement_group([{"CPU": 1}])
    ray.get(pg.ready())
    try:
        (node,) = listing(dashboard, "nodes")["result"]
        assert node["is_head_node"] is True and node["state"] == "ALIVE"
        assert node["resources_total"]["CPU"] == 2

        workers = listing(dashboard, "workers")["result"]
        assert workers and {w["worker_type"] for w in workers} == {"WORKER"}  # exclude_driver
        with_driver = listing(dashboard, "workers", exclude_driver="false")["result"]
        assert os.getpid() in {w["pid"] for w in with_driver if w["worker_type"] == "DRIVER"}

        job_id = ray.get_runtime_context().get_job_id()
        (job,) = listing(dashboard, "jobs", ("job_id", "=", job_id))["result"]
        assert job["status"] == "RUNNING" and job["type"] == "DRIVER"

        objects = listing(dashboard, "objects", ("object_id", "=", ref.hex()))["result"]
        assert [o["pid"] for o in objects] == [os.getpid()]

        (group,) = listing(dashboard, "placement_groups",
                           ("placement_group_id", "=", pg.id.hex()))["result"]
        assert group["state"] == "CREATED"
    finally:
        remove_placement_group(pg)


def test_logs_listing_and_an_actor_log_streamed_and_followed(dashboard):
    greeter = Greeter.remote("hello")
    ray.get(greeter.greet.remote("first"))
    actor_id = greeter._actor_id.hex()

    status, body = get(dashboard, "/api/v0/logs")
    assert status == 200 and "gcs.log" in body["data"]["result"]["gcs_server"]

    def actor_log(**params) -> bytes:
        query = urllib.parse.urlencode({"actor_id": actor_id, **params})
        with urllib.request.urlopen(f"{dashboard}/api/v0/logs/file?{query}", timeout=30) as r:
            return r.read()
    wait_for_condition(lambda: b"hello, first" in actor_log(format="text"), timeout=10,
                       message="the actor's print in its log")
    assert actor_log().startswith(b"1")  # Ray's leading_1 format, the default

    # interval=: the stream stays open and carries what is printed after.
    query = urllib.parse.urlencode({"actor_id": actor_id, "format": "text", "lines": "0",
                                    "interval": "0.1"})
    with urllib.request.urlopen(f"{dashboard}/api/v0/logs/file?{query}", timeout=30) as stream:
        ray.get(greeter.greet.remote("second"))
        assert stream.readline() == b"hello, second\n"
    ray.kill(greeter)


def test_a_jobs_driver_log_by_submission_id(dashboard):
    from ember.job_submission import JobStatus, JobSubmissionClient
    client = JobSubmissionClient(dashboard)
    submission_id = client.submit_job(entrypoint="echo from-the-job")
    wait_for_condition(lambda: client.get_job_status(submission_id) == JobStatus.SUCCEEDED,
                       timeout=60, interval=0.5, message="the job to succeed")
    query = urllib.parse.urlencode({"submission_id": submission_id, "format": "text"})
    with urllib.request.urlopen(f"{dashboard}/api/v0/logs/file?{query}", timeout=30) as r:
        assert b"from-the-job" in r.read()


@pytest.mark.parametrize("path, params, names", [
    ("/api/v0/tasks", [("limit", "abc")], "limit"),
    ("/api/v0/actors", [("limit", "0")], "limit"),
    ("/api/v0/actors", [("limit", "100001")], "limit"),
    ("/api/v0/actors", [("detail", "maybe")], "detail"),
    ("/api/v0/actors", [("timeout", "-1")], "timeout"),
    ("/api/v0/actors", [("filter_keys", "state"), ("filter_predicates", ">"),
                        ("filter_values", "ALIVE")], "filter_predicates"),
    ("/api/v0/actors", [("filter_keys", "state"), ("filter_predicates", "=")], "filter_values"),
    ("/api/v0/actors", [("filter_keys", "colour"), ("filter_predicates", "="),
                        ("filter_values", "red")], "colour"),
    ("/api/v0/logs/file", [], "filename"),
    ("/api/v0/logs/file", [("filename", "../../../etc/passwd")], "log file name"),
    ("/api/v0/logs/file", [("filename", "gcs.log"), ("interval", "soon")], "interval"),
    ("/api/v0/logs/file", [("submission_id", "no-such-job")], "job-driver-no-such-job.log"),
])
def test_bad_parameters_are_400_naming_the_parameter(dashboard, path, params, names):
    status, body = get(dashboard, path, params)
    assert status == 400 and body["result"] is False
    assert names in body["msg"], body["msg"]
    assert get(dashboard, "/api/version")[0] == 200  # and the dashboard keeps serving


def test_cluster_status_has_nodes_usage_and_unmet_demand(dashboard):
    ref = square.options(num_cpus=64).remote(2)  # no node can hold it

    def demand():
        status, body = get(dashboard, "/api/cluster_status")
        assert status == 200 and body["result"] is True
        return body["data"]["clusterStatus"]
    wait_for_condition(
        lambda: any(d["shape"] == {"CPU": 64.0} for d in demand()["demands"]["tasks"]),
        timeout=15, message="the 64-CPU task in the demand")
    status = demand()
    (node,) = status["nodes"]
    assert node["is_head_node"] and node["state"] == "ALIVE"
    assert node["object_store"]["capacity"] > 0
    assert status["usage"]["CPU"][1] == 2
    ray.cancel(ref)

    _, body = get(dashboard, "/api/cluster_status", [("format", "1")])
    assert "Cluster status" in body["data"]["autoscalingStatus"]


def test_metrics_history_samples_tasks_and_each_node(dashboard):
    import numpy as np
    ray.get([square.remote(i) for i in range(3)])
    held = ray.put(np.zeros(4 * 1024 * 1024, dtype=np.uint8))  # in the shared-memory store
    started = time.time()

    def latest():
        _, body = get(dashboard, "/api/v0/metrics_history")
        samples = [s for s in body["data"]["result"]["samples"] if s["time"] > started]
        return samples[-1] if samples else None
    wait_for_condition(lambda: latest() is not None, timeout=15, message="a new sample")
    sample = latest()
    assert sample["tasks"].get("FINISHED", 0) >= 3
    (node,) = sample["nodes"].values()
    assert node["object_store_used"] >= 4 * 1024 * 1024
    assert 0 <= node["cpu_percent"] <= 100 and node["mem_total"] > node["mem_used"] > 0
    del held
