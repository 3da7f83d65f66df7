"""``ember list|get|summary|logs|timeline`` against a cluster started with ``ember start --head``.

Each command's output is parsed as a user's script would (json, yaml) or read
as a table; bad input ends in one ``Error:`` line naming what is valid, with
exit status 1 or 2, and the cluster keeps working.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

import ember
from helpers import run_driver, wait_for_condition, wait_no_ember_processes


def ember_cli(*args, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ember.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def ok(*args) -> str:
    proc = ember_cli(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def error(*args) -> str:
    proc = ember_cli(*args)
    assert proc.returncode != 0, proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


DRIVER = """
    import ember
    ember.init(address="auto")

    @ember.remote
    def cli_square(x):
        print("cli_square says", x)
        return x * x

    @ember.remote
    class CliCounter:
        def inc(self):
            print("CliCounter inc")
            return 1

    c = CliCounter.options(name="cli-counter", lifetime="detached").remote()
    print(sum(ember.get([cli_square.remote(i) for i in range(4)] + [c.inc.remote()])))
    # A job's task workers are stopped when its driver exits: give them the second
    # they take to flush their half of the task events (see README, Observability).
    import time
    time.sleep(1.5)
"""


@pytest.fixture(scope="module")
def head(temp_root, tmp_path_factory):
    port = ember.node.free_port()
    started = ember_cli("start", "--head", "--port", str(port), "--num-cpus", "2",
                        "--metrics-export-port", "0")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        proc = run_driver(tmp_path_factory.mktemp("cli"), DRIVER)
        assert proc.returncode == 0, proc.stderr
        assert "15" in proc.stdout.strip().splitlines()
        yield f"127.0.0.1:{port}"
    finally:
        stopped = ember_cli("stop")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        wait_no_ember_processes(temp_root)


def listed(*args):
    return json.loads(ok("list", *args, "--format", "json"))


def test_list_tasks_table_json_yaml(head):
    wait_for_condition(lambda: len([t for t in listed("tasks", "--filter", "name=cli_square")
                                    if t["state"] == "FINISHED"]) == 4, timeout=10,
                       message="4 finished cli_square tasks")
    table = ok("list", "tasks", "--filter", "name=cli_square")
    assert "Total: 4" in table and "FINISHED" in table
    assert max(len(line) for line in table.splitlines()) <= 80
    rows = yaml.safe_load(ok("list", "tasks", "--detail", "--limit", "2"))
    assert len(rows) == 2 and "required_resources" in rows[0] and "events" in rows[0]
    assert len(listed("tasks", "--limit", "1")) == 1
    assert all(t["name"] != "cli_square"
               for t in listed("tasks", "--filter", "name!=cli_square"))


def test_list_every_resource(head):
    actors = listed("actors", "--filter", "state=ALIVE")
    assert [a["name"] for a in actors] == ["cli-counter"]
    (node,) = listed("nodes")
    assert node["state"] == "ALIVE" and node["is_head_node"] is True
    assert listed("jobs")[0]["type"] == "DRIVER"
    assert any(w["worker_type"] == "WORKER" for w in listed("workers"))
    assert isinstance(listed("objects"), list)
    assert listed("placement-groups") == []
    for resource in ("actors", "nodes", "workers", "jobs", "objects"):
        assert "Total:" in ok("list", resource)


def test_get_by_id_and_prefix(head):
    (actor,) = listed("actors", "--filter", "name=cli-counter")
    full = yaml.safe_load(ok("get", "actors", actor["actor_id"]))
    assert full[0]["class_name"] == "CliCounter" and full[0]["pid"] > 0
    assert yaml.safe_load(ok("get", "actors", actor["actor_id"][:12]))[0]["actor_id"] == \
        actor["actor_id"]
    (node,) = listed("nodes")
    assert yaml.safe_load(ok("get", "nodes", node["node_id"]))[0]["node_ip"] == "127.0.0.1"
    task = listed("tasks", "--filter", "name=cli_square")[0]
    assert yaml.safe_load(ok("get", "tasks", task["task_id"]))[0]["func_or_class_name"] == \
        "cli_square"


def test_summary(head):
    wait_for_condition(lambda: json.loads(ok("summary", "tasks", "--format", "json"))
                       ["cluster"]["summary"].get("cli_square", {}).get("state_counts", {})
                       .get("FINISHED") == 4, timeout=10, message="the task summary")
    assert "cli_square" in ok("summary", "tasks")
    actors = json.loads(ok("summary", "actors", "--format", "json"))["cluster"]
    assert actors["summary"]["CliCounter"]["state_counts"] == {"ALIVE": 1}
    assert "total_objects" in ok("summary", "objects")


def test_logs(head):
    listing = ok("logs", "cluster")
    assert "gcs_server:" in listing and "worker_out:" in listing
    assert ok("logs", "cluster", "gcs.out") is not None
    (actor,) = listed("actors", "--filter", "name=cli-counter")
    wait_for_condition(lambda: "CliCounter inc" in ok("logs", "actor", "--id",
                                                      actor["actor_id"]),
                       timeout=10, message="the actor's print in `ember logs actor`")
    task = [t for t in listed("tasks", "--filter", "name=cli_square", "--detail")
            if t["worker_pid"]][0]
    assert "cli_square says" in ok("logs", "task", "--id", task["task_id"])
    assert "CliCounter inc" in ok("logs", "worker", "--pid", str(actor["pid"]), "--tail", "5")


def test_timeline_writes_chrome_trace(head, tmp_path):
    path = tmp_path / "timeline.json"
    out = ok("timeline", "--output", str(path))
    assert str(path) in out
    events = json.loads(path.read_text())
    spans = [e for e in events if e["ph"] == "X"]
    names = {e["name"] for e in spans}
    assert {"cli_square", "CliCounter.inc"} <= names
    rows = {(e["pid"], e["tid"]) for e in spans}
    assert len(rows) >= 1 and all(e["dur"] >= 0 for e in spans)


@pytest.mark.parametrize("args, expected", [
    (("list", "bogus"), "'bogus' is not one of 'tasks', 'actors'"),
    (("list", "tasks", "--filter", "state"), "malformed filter 'state'"),
    (("list", "actors", "--filter", "colour=red"), "Unknown filter key 'colour' for actors; "
                                                   "valid keys: actor_id, class_name"),
    (("get", "actors", "00000000deadbeef"), "No actor with actor_id '00000000deadbeef'"),
    (("get", "widgets", "1"), "'widgets' is not one of"),
    (("summary", "nodes"), "'nodes' is not one of 'tasks', 'actors', 'objects'"),
    (("logs", "actor", "--id", "00" * 16), "No actor with id"),
    (("list", "nodes", "--address", "127.0.0.1:9"), "127.0.0.1:9"),
])
def test_bad_input_is_one_clear_line(head, args, expected):
    assert expected in error(*args)
    assert listed("nodes")[0]["state"] == "ALIVE"  # the cluster keeps working


def test_status_shows_the_metrics_endpoint_and_it_serves(head):
    import urllib.request
    from prometheus_client.parser import text_string_to_metric_families
    status = ok("status")
    (url,) = [w for line in status.splitlines() for w in line.split() if w.endswith("/metrics")]
    assert url.startswith("http://127.0.0.1:")
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"ember_node_cpu_utilization", "ember_tasks", "ember_actors"} <= names
