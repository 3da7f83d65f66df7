"""Random, truncated and oversized input thrown at every kind of ember server.

Targets: the GCS, the raylet and a worker, each on its TCP port. Each example
opens a connection, with or without the cluster token, sends what hypothesis
made, and hangs up. Afterwards every target is alive, the cluster runs
tasks, and no target's memory grew beyond noise: a server sets nothing aside
for a frame it will refuse.
"""
from __future__ import annotations

import os
import socket
import struct

import psutil
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ember as ray
from ember.config import config
from ember.rpc import auth
from helpers import child_pid

MAX_FRAME = config.max_frame_bytes


@ray.remote
def whereami():
    from ember.core_worker import context
    address = context.core.address
    return address.ip, address.port, os.getpid()



def _header(n: int) -> bytes:
    return struct.pack("<I", n)


# One frame's worth of bytes, of the kinds a broken or hostile peer sends.
random_bytes = st.binary(max_size=2048)
truncated = st.builds(lambda n, body: _header(n) + body[:max(0, n - 1)],
                      st.integers(1, 4096), st.binary(max_size=4096))
oversized = st.builds(lambda n, junk: _header(n) + junk,
                      st.integers(MAX_FRAME + 1, 2**32 - 1), st.binary(max_size=65536))
# A well-formed frame whose content is msgpack-ish garbage (an array of numbers, a bad tag).
plausible = st.builds(lambda items: (lambda body: _header(len(body)) + body)(
    bytes([0x90 + len(items)]) + b"".join(bytes([i & 0x7F]) for i in items)),
    st.lists(st.integers(0, 127), max_size=15))
payloads = st.lists(st.one_of(random_bytes, truncated, oversized, plausible),
                    min_size=1, max_size=4)


def _throw(target: tuple[str, int], token: bytes | None, frames: list[bytes]) -> None:
    with socket.create_connection(target, timeout=10) as sock:
        try:
            if token is not None:
                sock.sendall(auth.client_preamble(token))
            for data in frames:
                sock.sendall(data)
        except OSError:
            pass  # the server hung up on us, as it should


def test_servers_survive_random_truncated_and_oversized_frames(shared):
    ray.get([whereami.remote() for _ in range(2)])
    worker_ip, worker_port, worker_pid = ray.get(whereami.remote())
    gcs_host, _, gcs_port = ray.get_runtime_context().gcs_address.rpartition(":")
    session_dir = ray.init(ignore_reinit_error=True)["session_dir"]
    token = auth.read_token_file(auth.token_path(session_dir)).encode()
    targets = {
        "gcs": ((gcs_host, int(gcs_port)), child_pid("ember.gcs")),
        "raylet": (("127.0.0.1", ray.nodes()[0]["NodeManagerPort"]), child_pid("ember.raylet")),
        "worker": ((worker_ip, worker_port), worker_pid),
    }
    processes = {name: psutil.Process(pid) for name, (_, pid) in targets.items()}
    before = {name: proc.memory_info().rss for name, proc in processes.items()}

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(target=st.sampled_from(sorted(targets)), authenticated=st.booleans(),
           frames=payloads)
    def fuzz(target, authenticated, frames):
        _throw(targets[target][0], token if authenticated else None, frames)

    fuzz()
    for name, proc in processes.items():
        assert proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE, name
    assert sorted(ray.get([whereami.remote() for _ in range(4)], timeout=60))
    grown = {name: (proc.memory_info().rss - before[name]) // 2**20
             for name, proc in processes.items()}
    assert all(mib < 32 for mib in grown.values()), f"MiB grown: {grown}"
    logs = os.path.join(session_dir, "logs")
    for name in os.listdir(logs):
        with open(os.path.join(logs, name), errors="replace") as f:
            text = f.read()
        assert "Fatal error on transport" not in text and "Traceback" not in text, name
