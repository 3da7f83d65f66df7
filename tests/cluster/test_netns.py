"""A real network between two nodes: a head and a worker raylet in two network
namespaces joined by a veth pair, each with its own address.

Nothing here can take a shortcut through loopback: the worker node reaches the
GCS, and the driver reaches the worker node's raylet, workers and object store,
only through the veth link. Both namespaces share this machine's memory, so
the raylets would copy objects through it (see object_manager); the test
turns that off (``EMBER_OBJECT_TRANSFER_SAME_HOST=0``), as on two machines,
and checks that the bytes went through the link. Needs root (``ip netns``); skipped, with the reason,
where namespaces cannot be created.

Behind a firewall: the same two nodes started with fixed ports and worker
port ranges, and nftables in each namespace dropping every TCP connection
from the other except to the ports README's "Ports and firewalls" lists. The
cluster must work with exactly those open (needs ``nft``: Debian's nftables).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import uuid

import pytest

from helpers import make_tls_files

HEAD_IP, WORKER_IP = "10.211.7.1", "10.211.7.2"


def _run(*args, check=True, **kwargs):
    return subprocess.run(list(args), capture_output=True, text=True, check=check, **kwargs)


def _can_make_namespaces() -> str:
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"embprobe{uuid.uuid4().hex[:6]}"
    made = _run("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot create network namespaces here: {made.stderr.strip()}"
    _run("ip", "netns", "del", probe, check=False)
    return ""


_why_not = _can_make_namespaces()
pytestmark = pytest.mark.skipif(bool(_why_not), reason=_why_not or "")


@pytest.fixture
def two_hosts():
    tag = uuid.uuid4().hex[:6]
    head_ns, worker_ns = f"emb-h-{tag}", f"emb-w-{tag}"
    veth_h, veth_w = f"vh{tag}", f"vw{tag}"
    temp_dir = tempfile.mkdtemp(prefix="ember-netns-", dir="/tmp")
    try:
        for ns in (head_ns, worker_ns):
            _run("ip", "netns", "add", ns)
            _run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        _run("ip", "link", "add", veth_h, "type", "veth", "peer", "name", veth_w)
        _run("ip", "link", "set", veth_h, "netns", head_ns)
        _run("ip", "link", "set", veth_w, "netns", worker_ns)
        for ns, dev, ip in ((head_ns, veth_h, HEAD_IP), (worker_ns, veth_w, WORKER_IP)):
            _run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ip}/24", "dev", dev)
            _run("ip", "netns", "exec", ns, "ip", "link", "set", dev, "up")
        yield head_ns, worker_ns, temp_dir
    finally:
        env = dict(os.environ, EMBER_TEMP_DIR=temp_dir)
        for ns in (worker_ns, head_ns):
            _run("ip", "netns", "exec", ns, sys.executable, "-m", "ember.cli", "stop",
                 "--force", env=env, check=False, timeout=60)
        for ns in (head_ns, worker_ns):
            _run("ip", "netns", "del", ns, check=False)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _start_head_and_node(head_ns, worker_ns, env, temp_dir, port, far, head_flags=(),
                         node_flags=()):
    """``ember start`` a 1-CPU head in ``head_ns`` and a 1-CPU node with ``far`` units of
    resource "far" in ``worker_ns``, each with its extra flags."""
    started = _run("ip", "netns", "exec", head_ns, sys.executable, "-m", "ember.cli", "start",
                   "--head", "--port", str(port), "--num-cpus", "1",
                   "--node-ip-address", HEAD_IP, *head_flags, env=env, timeout=60)
    assert "head node" in started.stdout
    token = _run("ip", "netns", "exec", head_ns, sys.executable, "-m", "ember.cli",
                 "get-auth-token", env=env, timeout=60).stdout.strip()
    # The joining machine knows the cluster only by its address and token. (A short
    # name: the sessions' Unix socket paths must stay under 108 bytes.)
    joiner_env = dict(env, EMBER_TEMP_DIR=os.path.join(temp_dir, "j"))
    joined = _run("ip", "netns", "exec", worker_ns, sys.executable, "-m", "ember.cli", "start",
                  "--address", f"{HEAD_IP}:{port}", "--num-cpus", "1", "--token", token,
                  "--resources", json.dumps({"far": far}), "--node-ip-address", WORKER_IP,
                  *node_flags, env=joiner_env, timeout=60)
    assert "joined" in joined.stdout, joined.stdout + joined.stderr


@pytest.mark.timeout(180)
@pytest.mark.parametrize("use_tls", [False, True], ids=["plain", "tls"])
def test_tasks_and_objects_cross_a_real_network(two_hosts, tmp_path, use_tls):
    head_ns, worker_ns, temp_dir = two_hosts
    env = dict(os.environ, EMBER_TEMP_DIR=temp_dir, EMBER_OBJECT_TRANSFER_SAME_HOST="0")
    if use_tls:
        env.update(make_tls_files(tmp_path, ips=(HEAD_IP, WORKER_IP)))
    port = 26379
    _start_head_and_node(head_ns, worker_ns, env, temp_dir, port, far=1)

    driver = textwrap.dedent(f"""
        import numpy as np
        import ember as ray
        ray.init(address="{HEAD_IP}:{port}")
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2

        @ray.remote(resources={{"far": 1}})
        def where_and_make(n):
            import socket
            return ray.get_runtime_context().get_node_id(), np.arange(n, dtype=np.int64)

        @ray.remote(resources={{"far": 1}})
        def total(arr):
            return int(arr.sum())

        node_id, arr = ray.get(where_and_make.remote(2_000_000))   # 16 MB back over veth
        assert node_id != ray.get_runtime_context().get_node_id()
        assert arr[-1] == 1_999_999
        big = ray.put(np.ones(3_000_000, dtype=np.int64))         # 24 MB out over veth
        assert ray.get(total.remote(big)) == 3_000_000
        from ember.protocol.raylet import GetNodeState
        from ember.state import ask_every_raylet
        _, states = ask_every_raylet("{HEAD_IP}:{port}", GetNodeState())
        received = sum(s.state["object_manager"]["bytes_received"] for s in states.values())
        same_host = sum(s.state["object_manager"]["transfers_same_host"]
                        for s in states.values())
        assert received >= 40_000_000 and same_host == 0, (received, same_host)
        print("CROSSED", node_id)
        ray.shutdown()
    """)
    result = _run("ip", "netns", "exec", head_ns, sys.executable, "-c", driver, env=env,
                  check=False, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "CROSSED" in result.stdout


# --- behind a firewall: only the documented ports open ------------------------------------

#: The ports each node is started with; the firewall opens exactly these (README, "Ports").
GCS_PORT = 26379
FIREWALL_PORTS = {
    "head": {"--node-manager-port": 26380, "--metrics-export-port": 26390,
             "--min-worker-port": 27000, "--max-worker-port": 27019},
    "worker": {"--node-manager-port": 26381, "--metrics-export-port": 26391,
               "--min-worker-port": 27100, "--max-worker-port": 27119},
}


def _open_ports(role: str) -> str:
    """The TCP ports a node of ``role`` must accept connections on, as nft's set syntax."""
    ports = FIREWALL_PORTS[role]
    opened = [str(ports["--node-manager-port"]), str(ports["--metrics-export-port"]),
              f"{ports['--min-worker-port']}-{ports['--max-worker-port']}"]
    return ", ".join(([str(GCS_PORT)] if role == "head" else []) + opened)


def _firewall(ns: str, open_ports: str) -> None:
    """Drop every TCP connection into ``ns`` from outside except to ``open_ports``
    (replies to its own connections pass: conntrack)."""
    rules = textwrap.dedent(f"""
        table inet ember_firewall {{
            chain input {{
                type filter hook input priority 0; policy accept;
                iifname "lo" accept
                ct state established,related accept
                tcp dport {{ {open_ports} }} accept
                meta l4proto tcp drop
            }}
        }}
    """)
    _run("ip", "netns", "exec", ns, "nft", "-f", "-", input=rules)


def _blocked(from_ns: str, to_ip: str, port: int) -> bool:
    """Whether a TCP connection from ``from_ns`` to ``to_ip:port`` gets no answer."""
    probe = (f"import socket\ntry:\n    socket.create_connection(('{to_ip}', {port}), 2)\n"
             "except socket.timeout:\n    print('BLOCKED')\nexcept OSError as e:\n"
             "    print('REFUSED', e)\nelse:\n    print('OPEN')")
    return _run("ip", "netns", "exec", from_ns, sys.executable, "-c", probe,
                timeout=30).stdout.strip() == "BLOCKED"


@pytest.mark.timeout(240)
@pytest.mark.skipif(shutil.which("nft") is None,
                    reason="the `nft` command (Debian package nftables) is not installed")
def test_a_cluster_works_with_only_the_documented_ports_open(two_hosts):
    head_ns, worker_ns, temp_dir = two_hosts
    _firewall(head_ns, _open_ports("head"))
    _firewall(worker_ns, _open_ports("worker"))
    # The firewall works: a port outside the list is dropped, one inside refused
    # (nothing listens there yet), both ways.
    assert _blocked(worker_ns, HEAD_IP, 26999)
    assert not _blocked(worker_ns, HEAD_IP, 27000)
    assert _blocked(head_ns, WORKER_IP, 27099)
    assert not _blocked(head_ns, WORKER_IP, 27100)

    env = dict(os.environ, EMBER_TEMP_DIR=temp_dir, EMBER_OBJECT_TRANSFER_SAME_HOST="0")
    flags = {role: [str(a) for item in ports.items() for a in item]
             for role, ports in FIREWALL_PORTS.items()}
    _start_head_and_node(head_ns, worker_ns, env, temp_dir, GCS_PORT, far=4,
                         head_flags=["--include-dashboard", "false", *flags["head"]],
                         node_flags=flags["worker"])
    status = _run("ip", "netns", "exec", head_ns, sys.executable, "-m", "ember.cli", "status",
                  env=env, timeout=60).stdout
    assert (f"ports: node manager 26381, object manager 26381, metrics 26391, "
            "workers 27100-27119") in status, status

    driver = textwrap.dedent(f"""
        import numpy as np
        import ember as ray
        from ember.core_worker import context
        ray.init(address="{HEAD_IP}:{GCS_PORT}")
        assert 27000 <= context.core.address.port <= 27019   # the driver, in its range
        nodes = {{n["NodeManagerAddress"]: n for n in ray.nodes() if n["Alive"]}}
        assert nodes["{WORKER_IP}"]["NodeManagerPort"] == 26381
        assert nodes["{WORKER_IP}"]["ObjectManagerPort"] == 26381
        assert nodes["{HEAD_IP}"]["MetricsExportPort"] == 26390

        @ray.remote(resources={{"far": 1}})
        def far(n):
            return ray.get_runtime_context().get_node_id(), np.arange(n, dtype=np.int64)

        @ray.remote(resources={{"far": 1}})
        def total(arr):
            return int(arr.sum())

        @ray.remote(resources={{"far": 1}})
        class Counter:
            def __init__(self):
                self.n = 0
            def add(self, k):
                self.n += k
                return self.n

        @ray.remote(resources={{"far": 1}})
        def make(n):
            return np.arange(n, dtype=np.int64)

        @ray.remote(resources={{"node:{HEAD_IP}": 0.01}})
        def near_total(arr):   # on the head: its raylet pulls from the worker node's
            return int(arr.sum())

        node_id, arr = ray.get(far.remote(1_000_000), timeout=60)    # 8 MB back
        assert node_id == nodes["{WORKER_IP}"]["NodeID"] and arr[-1] == 999_999
        big = ray.put(np.ones(2_000_000, dtype=np.int64))              # 16 MB out
        assert ray.get(total.remote(big), timeout=60) == 2_000_000
        assert ray.get(near_total.remote(make.remote(1_500_000)),
                       timeout=60) == sum(range(1_500_000))
        counter = Counter.remote()
        assert ray.get([counter.add.remote(1) for _ in range(5)], timeout=60)[-1] == 5
        print("THROUGH THE FIREWALL")
        ray.shutdown()
    """)
    result = _run("ip", "netns", "exec", head_ns, sys.executable, "-c", driver, env=env,
                  check=False, timeout=180)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "THROUGH THE FIREWALL" in result.stdout
