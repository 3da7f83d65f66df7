"""Port policy (ember.ports): options checked with their names, worker ports handed out.

Pure functions: no sockets. Messages are matched exactly where a user reads them.
"""
import re
import socket

import pytest

from ember import port_check
from ember import ports
from ember.ports import (CLI, INIT, NodePorts, WorkerPortAllocator, WorkerPorts, check_port,
                         listen_order, node_ports, worker_ports)


# --- single ports -------------------------------------------------------------------------

@pytest.mark.parametrize("value", [-1, 65536, 70000, "x", 1.5, True, None])
def test_a_port_out_of_range_names_the_option(value):
    with pytest.raises(ValueError, match=re.escape(
            "--node-manager-port must be a port number from 0 to 65535 (0: any free port), "
            f"got {value!r}.")):
        check_port(value, "--node-manager-port")


def test_zero_is_any_port_where_allowed():
    assert check_port(0, "--port") == 0
    assert check_port("8080", "--port") == 8080
    with pytest.raises(ValueError, match="from 1 to 65535, got 0"):
        check_port(0, "--worker-port-list", allow_zero=False)


# --- worker ports -------------------------------------------------------------------------

def test_the_default_worker_range_is_rays():
    got = worker_ports()
    assert got.ports == tuple(range(10002, 20000))
    assert got.spec == "10002-19999"
    assert NodePorts().workers.spec == "10002-19999"


def test_both_ends_zero_mean_any_port():
    assert worker_ports(0, 0) == WorkerPorts()
    assert WorkerPorts().spec == ""
    assert listen_order(WorkerPorts()) == [0]


@pytest.mark.parametrize("low,high,names,message", [
    (30, 20, CLI, "--min-worker-port (30) is above --max-worker-port (20): the range of "
                  "worker ports would be empty."),
    (30, 20, INIT, "min_worker_port (30) is above max_worker_port (20): the range of "
                   "worker ports would be empty."),
    (0, 20, CLI, "--min-worker-port is 0 (any port) but --max-worker-port is not: give both "
                 "as 0 for any free port, or both as the ends of a range."),
    (20, 0, CLI, "--max-worker-port is 0 (any port) but --min-worker-port is not: give both "
                 "as 0 for any free port, or both as the ends of a range."),
    (-5, 20, CLI, "--min-worker-port must be a port number from 0 to 65535 (0: any free "
                  "port), got -5."),
    (20, 99999, INIT, "max_worker_port must be a port number from 0 to 65535 (0: any free "
                      "port), got 99999."),
])
def test_a_bad_range_names_the_options(low, high, names, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        worker_ports(low, high, names=names)


def test_a_port_list_wins_over_the_range():
    got = worker_ports(10002, 19999, "10005, 10003,10009")
    assert got.ports == (10005, 10003, 10009)
    assert got.spec == "10005,10003,10009"
    assert worker_ports(port_list=[7000, 7001]).spec == "7000-7001"


@pytest.mark.parametrize("port_list,message", [
    ("1,2,2,3,3", "--worker-port-list lists port(s) 2, 3 more than once: give each port "
                  "once."),
    ("1,0", "--worker-port-list must be a port number from 1 to 65535, got 0."),
    ("1,a", "--worker-port-list must be a port number from 1 to 65535, got 'a'."),
    ("1,70000", "--worker-port-list must be a port number from 1 to 65535, got 70000."),
    ([], "--worker-port-list is empty: give at least one port."),
])
def test_a_bad_port_list_names_the_option(port_list, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        worker_ports(port_list=port_list)


@pytest.mark.parametrize("spec", ["", "10002-19999", "5,9,7", "42"])
def test_the_spec_round_trips(spec):
    assert WorkerPorts.from_spec(spec).spec == spec


# --- a node's ports -------------------------------------------------------------------------

def test_the_object_manager_port_is_the_node_managers():
    assert node_ports(object_manager_port=7100).node_manager == 7100
    assert node_ports(node_manager_port=7100).node_manager == 7100
    assert node_ports(node_manager_port=7100, object_manager_port=7100).node_manager == 7100
    with pytest.raises(ValueError, match=re.escape(
            "--object-manager-port (7101) differs from --node-manager-port (7100): ember's "
            "raylet serves the object manager on the node manager's port, so give one of "
            "them, or the same port to both.")):
        node_ports(node_manager_port=7100, object_manager_port=7101)


def test_two_options_on_one_port_are_refused():
    with pytest.raises(ValueError, match=re.escape(
            "--port and --metrics-export-port are both 7000: each process needs a port of "
            "its own.")):
        node_ports(port=7000, metrics_export_port=7000)
    with pytest.raises(ValueError, match=re.escape(
            "node_manager_port and dashboard_port are both 7000")):
        node_ports(node_manager_port=7000, dashboard_port=7000, names=INIT)


def test_a_fixed_port_inside_the_worker_range_is_refused():
    with pytest.raises(ValueError, match=re.escape(
            "--node-manager-port (10005) is in the worker port range 10002-19999 "
            "(--min-worker-port/--max-worker-port): a worker could take it.")):
        node_ports(node_manager_port=10005)


def test_unset_ports_stay_unset():
    got = node_ports()
    assert (got.gcs, got.node_manager, got.metrics_export, got.dashboard) == (0, 0, None, None)
    assert got.fixed() == {}


# --- handing out worker ports ---------------------------------------------------------------

def test_workers_get_the_range_in_turn_skipping_taken_ports():
    allocator = WorkerPortAllocator(worker_ports(7000, 7003))
    taken_elsewhere = {7001}
    free = lambda port: port not in taken_elsewhere  # noqa: E731
    assert allocator.acquire(free) == 7000
    assert allocator.acquire(free) == 7002
    assert allocator.acquire(free) == 7003
    assert allocator.acquire(free) is None
    allocator.release(7000)
    assert allocator.acquire(free) == 7000
    assert allocator.held == {7000, 7002, 7003}


def test_a_released_port_is_taken_last():
    allocator = WorkerPortAllocator(worker_ports(7000, 7002))
    always = lambda port: True  # noqa: E731
    assert [allocator.acquire(always) for _ in range(2)] == [7000, 7001]
    allocator.release(7000)
    assert allocator.acquire(always) == 7002
    assert allocator.acquire(always) == 7000


def test_any_port_is_never_used_up():
    allocator = WorkerPortAllocator(WorkerPorts())
    assert [allocator.acquire(lambda port: False) for _ in range(3)] == [0, 0, 0]


def test_the_exhausted_message_names_the_range():
    allocator = WorkerPortAllocator(worker_ports(7000, 7001))
    allocator.hold(7000)
    allocator.hold(9999)  # outside the range: not counted
    assert allocator.exhausted_message() == (
        "no port is free for a new worker in the worker port range 7000-7001 "
        "(--min-worker-port/--max-worker-port): this node's workers hold 1 of its 2 port(s) "
        "and other processes the rest. Widen the range, or run fewer workers at once on this "
        "node.")


def test_a_worker_tries_its_port_then_the_rest_and_a_driver_from_the_top():
    ports_ = worker_ports(7000, 7003)
    assert listen_order(ports_, 7002) == [7002, 7003, 7000, 7001]
    assert listen_order(ports_) == [7003, 7002, 7001, 7000]


# --- checking a port on this machine ----------------------------------------------------------

def test_a_taken_port_is_named_with_its_option_and_holder():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        assert not port_check.is_free("127.0.0.1", port)
        with pytest.raises(port_check.PortInUseError) as caught:
            port_check.ensure_free("127.0.0.1", port, "--node-manager-port")
    message = str(caught.value)
    assert message.startswith(f"Port {port} (--node-manager-port) is already in use on "
                              "127.0.0.1 by pid ")
    assert message.endswith(": stop that process or choose another --node-manager-port.")
    assert "\n" not in message
    port_check.ensure_free("127.0.0.1", port, "--port")  # free again
    port_check.ensure_free("127.0.0.1", 0, "--port")  # 0: nothing to check
    assert ports.DEFAULT_DASHBOARD_PORT == 8265
