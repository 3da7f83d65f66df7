"""`ember start` / `ember stop`, and drivers connecting to a running cluster.

A head started with ``ember start --head`` outlives its drivers; drivers find
it with ``address="auto"``, ``address="host:port"`` or ``EMBER_ADDRESS``, and
``ember stop`` ends every process it started.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

import ember
import ember as ray
import ember.node
from helpers import ember_processes, run_driver, wait_no_ember_processes

pytestmark = pytest.mark.skipif(not hasattr(ember.node, "stop_all_processes"),
                                reason="the ember CLI (node.stop_all_processes) is not there yet")


def ember_cli(*args, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ember.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


#: What `ember start --head` printed.
HEAD_OUTPUT = {}


@pytest.fixture(scope="module")
def head(temp_root):
    port = ember.node.free_port()
    started = ember_cli("start", "--head", "--port", str(port), "--num-cpus", "2",
                        "--resources", '{"cli_head": 1}')
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert str(port) in started.stdout  # it tells the user where the head is
        HEAD_OUTPUT["stdout"] = started.stdout
        assert ember_processes(temp_root), "ember start left no process running"
        yield port
    finally:
        if ray.is_initialized():
            ray.shutdown()
        stopped = ember_cli("stop")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        wait_no_ember_processes(temp_root)


@ray.remote
def where():
    import os
    ctx = ray.get_runtime_context()
    return ctx.get_node_id(), os.getpid()


def test_connect_with_address_auto(head):
    ctx = ray.init(address="auto")
    try:
        assert ctx["gcs_address"].endswith(f":{head}")
        total = ray.cluster_resources()
        assert total["CPU"] == 2 and total["cli_head"] == 1
        node_id, _ = ray.get(where.remote(), timeout=60)
        assert node_id == ray.nodes()[0]["NodeID"]
    finally:
        ray.shutdown()
    # The driver is gone; the cluster is not.
    ray.init(address="auto")
    try:
        assert ray.get(where.remote(), timeout=60)[0] == node_id
    finally:
        ray.shutdown()


def test_connect_with_host_and_port(head):
    ctx = ray.init(address=f"127.0.0.1:{head}")
    try:
        assert ray.cluster_resources()["cli_head"] == 1
        assert ctx["gcs_address"] == f"127.0.0.1:{head}"
        assert ray.get(ray.put("through host:port")) == "through host:port"
    finally:
        ray.shutdown()


def test_connect_with_ember_address_env(head, tmp_path):
    result = run_driver(tmp_path, """
        import ember as ray
        ctx = ray.init()

        @ray.remote
        def f():
            return "ran on the running cluster"
        print(ctx["gcs_address"])
        print(ray.cluster_resources().get("cli_head"))
        print(ray.get(f.remote()))
        ray.shutdown()
    """, env={"EMBER_ADDRESS": f"127.0.0.1:{head}"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"127.0.0.1:{head}", "1.0",
                                          "ran on the running cluster"]


def test_two_drivers_share_the_cluster(head, tmp_path):
    code = """
        import ember as ray
        ray.init(address="auto")
        print(ray.get_runtime_context().get_job_id(), ray.get_runtime_context().get_node_id())
        ray.shutdown()
    """
    first = run_driver(tmp_path, code, name="first.py")
    second = run_driver(tmp_path, code, name="second.py")
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    job1, node1 = first.stdout.split()
    job2, node2 = second.stdout.split()
    assert job1 != job2
    assert node1 == node2


def test_resource_arguments_are_refused_when_connecting(head):
    with pytest.raises(ValueError, match="num_cpus"):
        ray.init(address="auto", num_cpus=2)
    assert not ray.is_initialized()


def test_microbenchmark_reports_progress_and_leaves_the_running_cluster_current(
        head, temp_root):
    latest = os.path.join(temp_root, "session_latest")
    before = os.readlink(latest)
    env = dict(os.environ, EMBER_BENCH_ROUND_S="0.1", EMBER_BENCH_ROUNDS="1",
               EMBER_BENCH_WARMUP_S="0.05")
    done = subprocess.run([sys.executable, "-m", "ember.cli", "microbenchmark", "--json",
                           "--filter", "single client tasks sync",
                           "--filter", "placement group"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    names = [json.loads(line)["name"] for line in done.stdout.splitlines()]
    assert names == ["init and first task (s)", "single client tasks sync",
                     "placement group create/removal"]
    assert "[1/2, 0:00] single client tasks sync" in done.stderr
    assert "[2/2, " in done.stderr and "] placement group create/removal" in done.stderr
    assert os.readlink(latest) == before
    assert "microbenchmark" in ember_cli("microbenchmark", "--help").stdout
    assert "four minutes" in ember_cli("microbenchmark", "--help").stdout


def test_the_head_listens_on_loopback_and_says_how_to_open_it(head):
    said = HEAD_OUTPUT["stdout"]
    assert "listens on loopback (127.0.0.1) only" in said
    assert "ember start --head --node-ip-address" in said
    path = re.search(r"stored in (\S+/auth_token)", said).group(1)
    assert os.stat(path).st_mode & 0o777 == 0o600
    printed = ember_cli("get-auth-token")
    assert printed.returncode == 0, printed.stderr
    with open(path) as f:
        assert printed.stdout.strip() == f.read().strip()


def test_a_node_joins_only_with_the_cluster_token(head):
    wrong = ember_cli("start", "--address", f"127.0.0.1:{head}", "--num-cpus", "1",
                      "--token", "not-the-token")
    assert wrong.returncode != 0
    assert "refused this process's cluster token" in wrong.stderr
    token = ember_cli("get-auth-token").stdout.strip()
    joined = ember_cli("start", "--address", f"127.0.0.1:{head}", "--num-cpus", "1",
                       "--resources", '{"joined": 1}', "--token", token)
    assert joined.returncode == 0, joined.stdout + joined.stderr
    ray.init(address="auto")
    try:
        assert ray.cluster_resources().get("joined") == 1
    finally:
        ray.shutdown()


def test_stop_ends_the_cluster(head, temp_root):
    # Runs last in this module: stop here, and check what `ember stop` leaves.
    assert ember_processes(temp_root)
    stopped = ember_cli("stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "Stopped" in stopped.stdout
    wait_no_ember_processes(temp_root)
    with pytest.raises(ConnectionError, match="ember start --head"):
        ray.init(address="auto")
    assert not ray.is_initialized()
