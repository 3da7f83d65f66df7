"""The address `ember start --head` tells other machines to join at."""
import socket

import psutil
import pytest

from ember import node
from ember.cli import _join_instructions

ROUTES = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth1\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
"""


def test_default_route_interface_is_read_from_the_routing_table(tmp_path):
    table = tmp_path / "route"
    table.write_text(ROUTES)
    assert node._default_route_interface(str(table)) == "eth0"


def test_no_default_route_means_no_interface(tmp_path):
    table = tmp_path / "route"
    table.write_text(ROUTES.splitlines()[0] + "\n" + ROUTES.splitlines()[1] + "\n")
    assert node._default_route_interface(str(table)) is None
    assert node._default_route_interface(str(tmp_path / "missing")) is None


def test_default_node_ip_is_the_default_route_interface_address():
    interface = node._default_route_interface()
    if interface is None:
        pytest.skip("this machine has no IPv4 default route")
    addresses = {a.address for a in psutil.net_if_addrs()[interface]
                 if a.family == socket.AF_INET}
    assert node.default_node_ip() in addresses


def test_join_instructions_name_a_reachable_address_or_say_how_to_set_one():
    text = _join_instructions("10.1.2.3:6379", "10.1.2.3", "/s/auth_token")
    assert "ember start --address 10.1.2.3:6379 --token TOKEN" in text
    assert "/s/auth_token" in text and "ember get-auth-token" in text
    text = _join_instructions("127.0.0.1:6379", "10.1.2.3", "/s/auth_token")
    assert "loopback (127.0.0.1) only" in text
    assert "ember start --head --node-ip-address 10.1.2.3" in text
    text = _join_instructions("127.0.0.1:6379", "127.0.0.1", "/s/auth_token")
    assert "--node-ip-address ADDRESS" in text and "no network interface" in text


@pytest.fixture
def temp_dir(tmp_path, monkeypatch):
    from ember.config import config
    monkeypatch.setattr(config, "temp_dir", str(tmp_path))
    return tmp_path


def test_a_ray_client_address_names_the_cluster_started_here_by_its_client_port(temp_dir):
    from ember.worker import _resolve_address
    node.write_current_cluster("127.0.0.1:6379", str(temp_dir / "session"), client_port=10001)
    assert node.read_current_client_port() == 10001
    assert _resolve_address("ray://localhost:10001") == "127.0.0.1:6379"
    assert _resolve_address("ray://127.0.0.1:10001") == "127.0.0.1:6379"
    with pytest.raises(ConnectionError, match="--ray-client-server-port 10002"):
        _resolve_address("ray://localhost:10002")


def test_a_ray_client_address_without_a_cluster_here_says_how_to_start_one(temp_dir):
    from ember.worker import _resolve_address
    with pytest.raises(ConnectionError, match="ember start --head"):
        _resolve_address("ray://localhost:10001")
    node.write_current_cluster("127.0.0.1:6379", "")  # an old record: no client port
    with pytest.raises(ConnectionError, match="ember start --head"):
        _resolve_address("ray://localhost:10001")


def test_a_ray_client_address_of_another_machine_is_refused_with_what_to_do(temp_dir):
    from ember.worker import _resolve_address
    node.write_current_cluster("127.0.0.1:6379", "", client_port=10001)
    with pytest.raises(ConnectionError, match="no Ray Client server"):
        _resolve_address("ray://192.0.2.1:10001")  # TEST-NET-1: never this machine
    with pytest.raises(ValueError, match="ray://host:port"):
        _resolve_address("ray://localhost")
