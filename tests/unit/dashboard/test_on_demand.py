"""DashboardOnDemand: the process starts at the first connection, and only then."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading

import pytest

from ember.dashboard.on_demand import DashboardOnDemand

pytestmark = pytest.mark.timeout(30)


def listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock


class Spawner:
    """Starts a stand-in dashboard (it answers one connection with b"hi")."""

    def __init__(self):
        self.calls = 0
        self.started = threading.Event()

    def __call__(self, sock: socket.socket) -> subprocess.Popen:
        self.calls += 1
        code = ("import socket, sys, time; s = socket.socket(fileno=int(sys.argv[1])); "
                "c, _ = s.accept(); c.sendall(b'hi'); time.sleep(60)")
        proc = subprocess.Popen([sys.executable, "-c", code, str(sock.fileno())],
                                pass_fds=(sock.fileno(),))
        self.started.set()
        return proc


def test_first_connection_starts_the_process_which_serves_it():
    sock = listening()
    port = sock.getsockname()[1]
    spawn = Spawner()
    on_demand = DashboardOnDemand(sock, spawn)
    try:
        assert not spawn.started.wait(0.3) and on_demand.process is None
        with socket.create_connection(("127.0.0.1", port), timeout=20) as client:
            assert client.recv(2) == b"hi"  # the connection made before the process ran
        assert spawn.calls == 1
        process = on_demand.process
    finally:
        on_demand.stop(timeout=5)
    assert process.poll() is not None  # stopped with its head
    with pytest.raises(OSError):  # and the port is closed: the head's copy is gone too
        socket.create_connection(("127.0.0.1", port), timeout=2)


def test_stop_before_any_connection_starts_nothing_and_frees_the_port():
    sock = listening()
    port = sock.getsockname()[1]
    spawn = Spawner()
    on_demand = DashboardOnDemand(sock, spawn)
    on_demand.stop()
    on_demand.stop()  # twice is harmless
    assert spawn.calls == 0 and on_demand.process is None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
