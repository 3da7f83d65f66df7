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
