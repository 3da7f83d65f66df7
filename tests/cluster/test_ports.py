"""Port options on real clusters: every port chosen, reported, and checked.

- ``init()`` and ``ember start`` put the raylet, its workers and the driver on
  the ports they are given, and the node table says which (``ember.nodes()``,
  ``ember status``).
- A worker range that is used up fails the task that waits for a worker, with
  the range in the message.
- A port that is taken, or a bad value, is one line naming the option, and
  nothing is left running.

The cross-machine firewall test is in test_netns.py.
"""
from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import sys

import pytest

import ember
from ember import port_check
from ember.core_worker import context
from helpers import ember_processes, wait_no_ember_processes


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free now, from 20000-29999: outside Ray's default worker
    range, and below the kernel's ephemeral range (32768 up), so that no outgoing
    connection of another program takes one before the test binds it."""
    chosen: list[int] = []
    for port in random.sample(range(20000, 30000), 500):
        if port_check.is_free("127.0.0.1", port):
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise RuntimeError(f"fewer than {count} free ports in 20000-29999")


@contextlib.contextmanager
def port_held():
    """A port some other program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


def ember_cli(*args, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ember.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


@ember.remote
def my_port():
    return context.core.address.port


@ember.remote
class Holder:
    def port(self):
        return context.core.address.port


@pytest.mark.timeout(120)
def test_init_puts_every_process_on_its_ports(fresh):
    node_manager, metrics, *worker_list = free_ports(6)
    fresh(num_cpus=2, node_manager_port=node_manager, _metrics_export_port=metrics,
          worker_port_list=",".join(map(str, worker_list)), include_dashboard=False)
    [node] = ember.nodes()
    assert node["NodeManagerPort"] == node["ObjectManagerPort"] == node_manager
    assert node["MetricsExportPort"] == metrics
    assert node["WorkerPorts"] == ",".join(map(str, worker_list))
    assert context.core.address.port in worker_list  # the driver too
    holder = Holder.remote()
    ports = {ember.get(holder.port.remote(), timeout=60),
             *ember.get([my_port.remote() for _ in range(4)], timeout=60)}
    assert ports <= set(worker_list), (ports, worker_list)
    # The GCS's worker table knows every process's port: none has to be guessed.
    from ember.util import state
    table = {w.pid: w for w in state.list_workers(limit=0) if w.is_alive}
    driver = table[os.getpid()]
    assert driver.worker_type == "DRIVER"
    listed = {(w.worker_id, w.pid) for w in table.values()}
    from ember.observability.cluster import query_gcs
    from ember.protocol import gcs as gcs_msg
    (reply,) = query_gcs(None, [gcs_msg.GetAllWorkerInfo()], 10)
    rows = {w.worker_id.hex(): w for w in reply.workers if w.is_alive}
    assert {(k, w.pid) for k, w in rows.items()} == listed
    assert {w.port for w in rows.values()} >= ports | {context.core.address.port}


@pytest.mark.timeout(120)
def test_a_used_up_worker_range_fails_the_waiting_task_naming_it(fresh):
    # Two ports: the driver takes one, the first worker the other.
    low, high = sorted(free_ports(2))
    fresh(num_cpus=2, worker_port_list=f"{low},{high}", include_dashboard=False)
    holder = Holder.remote()  # the one worker there can be, kept by the actor
    assert ember.get(holder.port.remote(), timeout=60) in (low, high)
    with pytest.raises(ember.exceptions.TaskUnschedulableError) as caught:
        ember.get(my_port.remote(), timeout=60)
    assert (f"no port is free for a new worker in the worker port range {low}, {high} "
            "(worker_port_list): this node's workers hold 1 of its 2 port(s)") in str(caught.value)
    # An actor too: its creation fails, and says why.
    with pytest.raises(ember.exceptions.ActorDiedError, match=(
            rf"it cannot be scheduled: .*no port is free for a new worker in the worker port "
            rf"range {low}, {high} \(worker_port_list\)")):
        ember.get(Holder.remote().port.remote(), timeout=60)


@pytest.mark.timeout(120)
def test_workers_pass_over_ports_other_programs_hold(fresh):
    with port_held() as held:
        ports = free_ports(3)
        fresh(num_cpus=2, worker_port_list=[held, *ports], include_dashboard=False)
        got = set(ember.get([my_port.remote() for _ in range(4)], timeout=60))
        got.add(context.core.address.port)
        assert held not in got and got <= set(ports), (held, got, ports)


@pytest.mark.timeout(60)
def test_init_refuses_a_taken_port_and_starts_nothing(fresh, temp_root):
    with port_held() as port:
        with pytest.raises(ValueError, match=(
                rf"^Port {port} \(node_manager_port\) is already in use on 127\.0\.0\.1 "
                rf"by pid \d+ \(.*\): stop that process or choose another node_manager_port\.$")):
            fresh(node_manager_port=port)
    assert not ember.is_initialized()
    assert not ember_processes(temp_root)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kwargs,message", [
    ({"min_worker_port": 20000, "max_worker_port": 10002},
     "min_worker_port (20000) is above max_worker_port (10002)"),
    ({"worker_port_list": "30001,30001"}, "worker_port_list lists port(s) 30001 more than once"),
    ({"node_manager_port": 70000}, "node_manager_port must be a port number from 0 to 65535"),
    ({"_metrics_export_port": -2}, "_metrics_export_port must be a port number"),
    ({"node_manager_port": 30001, "object_manager_port": 30002},
     "object_manager_port (30002) differs from node_manager_port (30001)"),
])
def test_init_names_the_argument_of_a_bad_value(fresh, temp_root, kwargs, message):
    with pytest.raises(ValueError) as caught:
        fresh(**kwargs)
    assert message in str(caught.value)
    assert not ember.is_initialized()
    assert not ember_processes(temp_root)


@pytest.mark.timeout(180)
def test_ember_start_uses_and_shows_the_ports(temp_root):
    gcs, node_manager, metrics = free_ports(3)
    low = next(p for p in range(30000 - 4, 20000, -4)
               if all(port_check.is_free("127.0.0.1", q) and q not in (gcs, node_manager, metrics)
                      for q in range(p, p + 4)))
    started = ember_cli("start", "--head", "--port", str(gcs), "--num-cpus", "1",
                        "--node-manager-port", str(node_manager),
                        "--metrics-export-port", str(metrics), "--include-dashboard", "false",
                        "--min-worker-port", str(low), "--max-worker-port", str(low + 3))
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        status = ember_cli("status")
        assert status.returncode == 0, status.stderr
        assert (f"  ports: gcs {gcs}, node manager {node_manager}, object manager "
                f"{node_manager}, metrics {metrics}, workers {low}-{low + 3}") in status.stdout
        # Taken now by that head: a second one is refused in one line, nothing started.
        before = {p.pid for p in ember_processes(temp_root)}
        again = ember_cli("start", "--head", "--port", "0", "--node-manager-port",
                          str(node_manager))
        assert again.returncode != 0
        lines = again.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(
            f"Error: Port {node_manager} (--node-manager-port) is already in use on "
            f"127.0.0.1 by pid "), again.stderr
        assert "ember.raylet" in lines[0]
        assert {p.pid for p in ember_processes(temp_root)} == before
    finally:
        ember_cli("stop")
        wait_no_ember_processes(temp_root)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("args,message", [
    (["--head", "--min-worker-port", "30", "--max-worker-port", "20"],
     "--min-worker-port (30) is above --max-worker-port (20)"),
    (["--head", "--worker-port-list", "30001,30002,30001"],
     "--worker-port-list lists port(s) 30001 more than once"),
    (["--head", "--port", "65536"], "--port must be a port number from 0 to 65535"),
    (["--head", "--metrics-export-port", "-1"], "--metrics-export-port must be a port number"),
    (["--head", "--dashboard-port", "99999"], "--dashboard-port must be a port number"),
    (["--head", "--min-worker-port", "0"], "--min-worker-port is 0 (any port) but "
                                           "--max-worker-port is not"),
    (["--head", "--port", "30001", "--node-manager-port", "30001"],
     "--port and --node-manager-port are both 30001"),
    (["--head", "--node-manager-port", "15000"],
     "--node-manager-port (15000) is in the worker port range 10002-19999"),
    (["--address", "127.0.0.1:1", "--port", "30001"], "--port is for --head"),
])
def test_ember_start_names_the_option_of_a_bad_value(temp_root, args, message):
    result = ember_cli("start", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert not ember_processes(temp_root)


@pytest.mark.timeout(120)
def test_cluster_add_node_takes_rays_port_arguments():
    from ember.cluster_utils import Cluster
    head_nm, node_nm, *workers = free_ports(4)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "node_manager_port": head_nm, "min_worker_port": 0,
        "max_worker_port": 0})
    try:
        node = cluster.add_node(num_cpus=1, resources={"second": 1},
                                object_manager_port=node_nm,
                                worker_port_list=workers)
        ember.init(address=cluster.address)
        by_id = {n["NodeID"]: n for n in ember.nodes()}
        assert by_id[cluster.head_node.node_id]["NodeManagerPort"] == head_nm
        assert by_id[cluster.head_node.node_id]["WorkerPorts"] == ""
        assert by_id[node.node_id]["ObjectManagerPort"] == node_nm
        assert by_id[node.node_id]["WorkerPorts"] == ",".join(map(str, workers))
        assert ember.get(my_port.options(resources={"second": 1}).remote(),
                         timeout=60) in workers
        with pytest.raises(ValueError, match=r"min_worker_port \(9\) is above max_worker_port"):
            cluster.add_node(min_worker_port=9, max_worker_port=8)
    finally:
        ember.shutdown()
        cluster.shutdown()


@pytest.mark.timeout(60)
def test_a_port_taken_after_the_check_is_reported_by_the_raylet(monkeypatch, temp_root):
    """A race the check cannot see (the port taken between check and bind): the start
    ends at once, with the raylet's one line, instead of waiting for a registration."""
    import ember.node
    monkeypatch.setattr(ember.port_check, "is_free", lambda host, port: True)
    with port_held() as port:
        procs = ember.node.start_head(num_cpus=1, ports=ember.ports.node_ports(
            node_manager_port=port))
        try:
            assert not ember.node.wait_for_registration(procs.gcs_address, procs.node_id,
                                                        timeout=50, processes=procs.processes)
            said = ember.node.gcs_startup_error(procs.session_dir)
        finally:
            procs.stop()
    assert said == (f"\nember raylet: could not start: port {port} (--node-manager-port) is "
                    "already in use on 127.0.0.1")
