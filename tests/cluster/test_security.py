"""The attacks of issue 12, rerun against a local cluster: each is refused, and the
cluster keeps running tasks.

An outsider is a plain socket that does not know the cluster token. An
insider holds the token (it is this driver) but no lease: it may talk to the
GCS and to workers, yet it must not replace a stored function or make a
worker run a task the raylet did not lease to it.
"""
from __future__ import annotations

import logging
import os
import socket
import struct

import cloudpickle
import psutil
import pytest
import uvloop

import ember as ray
from ember import rpc
from ember.core_worker import context
from ember.core_worker.function_manager import function_id_of
from ember.protocol import core_worker as cw
from ember.protocol import framing
from ember.protocol.gcs import GetAllNodes, KVDel, KVPut
from ember.protocol.raylet import GetNodeState
from ember.rpc import auth
from helpers import child_pid, run_driver, wait_for_condition


@pytest.fixture
def cluster(fresh):
    """A fresh cluster; yields its init() context (session_dir, gcs_address)."""
    return fresh(num_cpus=2)


@ray.remote
def whereami():
    """This worker's RPC address and pid."""
    from ember.core_worker import context as worker_context
    address = worker_context.core.address
    return address.ip, address.port, os.getpid()


@ray.remote
class Holder:
    def where(self):
        from ember.core_worker import context as worker_context
        address = worker_context.core.address
        return address.ip, address.port


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def frame(message) -> bytes:
    """A request as an old client (or an attacker) would frame it, without a handshake."""
    body = framing.encoder.encode(framing.Envelope(framing.REQUEST, 1, message, []))
    return struct.pack("<I", len(body)) + body



def send_and_read(address: tuple[str, int], data: bytes) -> tuple[bytes, str]:
    """Send ``data``; return what came back before the server closed, and our address."""
    with socket.create_connection(address, timeout=10) as sock:
        ours = "%s:%d" % sock.getsockname()
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received, ours


def log_text(session_dir: str, prefix: str) -> str:
    logs = os.path.join(session_dir, "logs")
    return "".join(open(os.path.join(logs, name), errors="replace").read()
                   for name in sorted(os.listdir(logs)) if name.startswith(prefix))


def cluster_token(session_dir: str) -> bytes:
    return auth.read_token_file(auth.token_path(session_dir)).encode()


def test_an_init_cluster_listens_on_loopback_only(cluster):
    ray.get([whereami.remote() for _ in range(4)])  # workers are up and serving
    mine = psutil.Process()
    listening = set()
    for proc in [mine] + mine.children(recursive=True):
        try:
            conns = proc.net_connections(kind="inet")
        except psutil.Error:
            continue
        listening |= {(c.laddr.ip, proc.pid) for c in conns if c.status == psutil.CONN_LISTEN}
    assert listening, "found no listening socket at all"
    assert {ip for ip, _ in listening} == {"127.0.0.1"}, listening
    sockets = os.path.join(cluster["session_dir"], "sockets")
    assert os.stat(sockets).st_mode & 0o777 == 0o700


def test_a_client_without_the_token_is_refused_before_any_request(cluster):
    session_dir = cluster["session_dir"]
    gcs = host_port(cluster["gcs_address"])
    raylet = ("127.0.0.1", ray.nodes()[0]["NodeManagerPort"])
    # The old attack: list the nodes with a bare frame.
    answer, ours = send_and_read(gcs, frame(GetAllNodes()))
    assert answer == b"EMBR" + bytes([auth.Refusal.BAD_HANDSHAKE])
    wait_for_condition(lambda: f"refused a connection from {ours}" in log_text(session_dir, "gcs"))
    answer, ours = send_and_read(raylet, auth.client_preamble(b"a guess") + frame(GetAllNodes()))
    assert answer == b"EMBR" + bytes([auth.Refusal.WRONG_TOKEN])
    wait_for_condition(lambda: f"refused a connection from {ours}: wrong cluster token"
                       in log_text(session_dir, "raylet"))
    assert ray.get(whereami.remote(), timeout=60)

    async def gcs_state():
        conn = await rpc.connect(cluster["gcs_address"], name="gcs")
        try:
            return (await conn.call(GetNodeState())).state["servers"]
        finally:
            conn.close()
    (served,) = uvloop.run(gcs_state())
    assert served["name"] == "gcs" and served["refused"] == 1 and served["open"] >= 2


def test_a_driver_with_another_token_gets_a_clear_error(cluster, tmp_path):
    result = run_driver(tmp_path, f"""
        import ember as ray
        ray.init(address={cluster["gcs_address"]!r})
    """, env={auth.ENV_TOKEN: "not-the-cluster-token"})
    assert result.returncode != 0
    assert "refused this process's cluster token. Set EMBER_AUTH_TOKEN" in result.stderr
    assert ray.get(whereami.remote(), timeout=60)


def test_a_stored_function_cannot_be_replaced(cluster):
    @ray.remote
    def innocent():
        return "innocent"
    assert ray.get(innocent.remote()) == "innocent"
    evil = cloudpickle.dumps(lambda: "evil")

    async def attack():
        conn = await rpc.connect(cluster["gcs_address"], name="gcs")
        try:
            with pytest.raises(rpc.RemoteError, match="PermissionError: refused to overwrite"):
                await conn.call(KVPut("fun", innocent._function_id, evil, overwrite=True))
            with pytest.raises(rpc.RemoteError, match="not the hash of the pickle"):
                await conn.call(KVPut("fun", os.urandom(20), evil))
            with pytest.raises(rpc.RemoteError, match="write-once"):
                await conn.call(KVDel("fun", innocent._function_id))
        finally:
            conn.close()
    uvloop.run(attack())
    assert ray.get(innocent.remote()) == "innocent"


def _spec(function_id: bytes, actor_id: bytes = b"") -> cw.TaskSpec:
    core = context.core
    return cw.TaskSpec(task_id=os.urandom(24), job_id=core.job_id, function_id=function_id,
                       function_name="evil", args=[], kwarg_names=[], num_returns=1,
                       owner=core.address, resources={}, actor_id=actor_id,
                       method_name="where" if actor_id else "")


def test_a_worker_runs_nothing_without_a_lease(cluster, tmp_path):
    marker = tmp_path / "ran"

    def evil():
        open(marker, "w").close()
    pickled = cloudpickle.dumps(evil)
    ip, port, _ = ray.get(whereami.remote())
    holder = Holder.remote()
    actor_ip, actor_port = ray.get(holder.where.remote())

    async def attack():
        # Storing a new function under its own hash is allowed: it runs nowhere by itself.
        gcs = await rpc.connect(cluster["gcs_address"], name="gcs")
        await gcs.call(KVPut("fun", function_id_of(pickled), pickled))
        gcs.close()
        worker = await rpc.connect(f"{ip}:{port}", name="worker")
        for lease_id, grant in ((b"", b""), (os.urandom(16), os.urandom(32))):
            with pytest.raises(rpc.RemoteError, match="without a lease on this worker"):
                await worker.call(cw.PushTask(_spec(function_id_of(pickled)), [], lease_id,
                                              grant))
        worker.close()
        actor = await rpc.connect(f"{actor_ip}:{actor_port}", name="actor")
        with pytest.raises(rpc.RemoteError, match="but this worker hosts actor"):
            await actor.call(cw.PushTask(_spec(function_id_of(pickled), os.urandom(16))))
        with pytest.raises(rpc.RemoteError, match="without a lease"):
            await actor.call(cw.PushTask(_spec(function_id_of(pickled))))
        actor.close()
    uvloop.run(attack())
    assert not marker.exists()
    wait_for_condition(lambda: "refused a task pushed by" in log_text(cluster["session_dir"],
                                                                        "worker-"))
    assert ray.get(holder.where.remote()) == (actor_ip, actor_port)
    assert len(ray.get([whereami.remote() for _ in range(4)])) == 4



def test_an_oversized_frame_costs_the_server_no_memory(cluster):
    session_dir = cluster["session_dir"]
    gcs = host_port(cluster["gcs_address"])
    gcs_process = psutil.Process(child_pid("ember.gcs"))
    before = gcs_process.memory_info().rss
    header = auth.client_preamble(cluster_token(session_dir)) + struct.pack("<I", 2**31)
    with socket.create_connection(gcs, timeout=10) as sock:
        sock.sendall(header)
        assert sock.recv(5) == b"EMBR\x00"
        try:
            for _ in range(64):  # 64 MiB more, if the server keeps reading
                sock.sendall(b"\0" * 2**20)
        except OSError:
            pass  # closed on us: the point
    wait_for_condition(lambda: f"announcing {2**31} bytes" in log_text(session_dir, "gcs"))
    assert gcs_process.memory_info().rss - before < 16 * 2**20
    assert ray.get(whereami.remote(), timeout=60)


def test_a_malformed_frame_prints_no_traceback(cluster, capfd):
    session_dir = cluster["session_dir"]
    driver = context.core.address
    ip, port, _ = ray.get(whereami.remote())
    junk = auth.client_preamble(cluster_token(session_dir)) + struct.pack("<I", 6) + b"\xc1" * 6
    for target in ((driver.ip, driver.port), (ip, port), host_port(cluster["gcs_address"])):
        answer, _ = send_and_read(target, junk)
        assert answer == b"EMBR\x00"  # accepted, then closed without an answer
    wait_for_condition(lambda: "not an ember message" in log_text(session_dir, "gcs"))
    assert ray.get(whereami.remote(), timeout=60)
    err = capfd.readouterr().err
    assert "Fatal error on transport" not in err and "Traceback" not in err
    logs = log_text(session_dir, "")
    assert "Fatal error on transport" not in logs and "Traceback" not in logs


def test_auth_can_be_disabled_with_a_warning(fresh, monkeypatch, caplog):
    monkeypatch.setenv(auth.ENV_MODE, "disabled")
    monkeypatch.setattr(auth, "_warned", set())
    logger = logging.getLogger("ember.rpc.auth")  # the driver's ember logger does not propagate
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level("WARNING", logger="ember.rpc.auth"):
            ctx = fresh(num_cpus=1)
            assert ray.get(whereami.remote(), timeout=60)
    finally:
        logger.removeHandler(caplog.handler)
    assert any("Token authentication is disabled" in r.getMessage() for r in caplog.records)
    answer, _ = send_and_read(host_port(ctx["gcs_address"]),
                              auth.client_preamble(b"") + struct.pack("<I", 6) + b"\xc1" * 6)
    assert answer == b"EMBR\x00"  # served without a token (then closed for the bad frame)
