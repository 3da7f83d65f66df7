"""GCS fault tolerance: the GCS's tables in a real Redis, and a GCS killed and restarted.

A module fixture runs ``redis-server`` on a free port with persistence off
(``--save "" --appendonly no``) in a temporary directory, and stops it after.
The cluster tests kill the GCS with SIGKILL and start a new one on the same
port: raylets, the driver and a detached actor must carry on.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time

import psutil
import pytest

import ember
import ember as ray
import ember.config
import ember.node
from ember.cluster_utils import Cluster
from ember.core_worker import context
from ember.gcs.redis_store import RedisStoreClient
from ember.gcs.storage import StorageUnavailableError
from ember.protocol import gcs as gcs_msg
from helpers import wait_for_condition

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not installed (apt-get install "
                                       "redis-server)")


PASSWORD = "s3cret-gcs-pw"


class RedisServer:
    """A redis-server process of the test's own, with a password, restartable on its port.

    ``tls`` (a (cert, key) pair of PEM paths) serves TLS only; ``sentinel_of``
    (another RedisServer) runs this one as a Sentinel watching that master.
    """

    def __init__(self, directory, tls=None, sentinel_of=None):
        self.directory = str(directory)
        self.port = ember.node.free_port()
        self.tls = tls
        self.sentinel_of = sentinel_of
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://:{PASSWORD}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ["redis-server"]
        if self.sentinel_of is not None:
            conf = os.path.join(self.directory, "sentinel.conf")
            with open(conf, "w") as f:
                f.write(f"port {self.port}\nbind 127.0.0.1\n"
                        f"sentinel monitor gcs 127.0.0.1 {self.sentinel_of.port} 1\n"
                        f"sentinel auth-pass gcs {PASSWORD}\n")
            args = ["redis-server", conf, "--sentinel"]
        else:
            args += ["--bind", "127.0.0.1", "--requirepass", PASSWORD, "--save", "",
                     "--appendonly", "no", "--dir", self.directory]
            if self.tls is not None:
                cert, key = self.tls
                args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", cert,
                         "--tls-key-file", key, "--tls-ca-cert-file", cert,
                         "--tls-auth-clients", "no"]
            else:
                args += ["--port", str(self.port)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, cwd=self.directory)
        wait_for_condition(self._listening, timeout=10, message="redis-server to listen")

    def _listening(self) -> bool:
        assert self.proc.poll() is None, "redis-server exited"
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def run(coro):
    return asyncio.run(coro)


# --- RedisStoreClient against the real server ------------------------------------------

async def exercise_tables(url: str, namespace: str) -> None:
    """Every StoreClient operation through ``url``, checked against what was written."""
    store = RedisStoreClient(url, namespace=namespace)
    other = RedisStoreClient(url, namespace=namespace + "-other")
    await store.open()
    await other.open()
    await store.put("t", b"a", b"1")
    await store.put("t", b"b\x00\xff", b"\x00" * 1000)
    await store.put("u", b"a", b"elsewhere")
    await other.put("t", b"a", b"other cluster")
    assert await store.get("t", b"a") == b"1"
    assert await store.get("t", b"missing") is None
    assert await store.get_all("t") == {b"a": b"1", b"b\x00\xff": b"\x00" * 1000}
    assert await store.delete("t", [b"a", b"missing"]) == 1
    assert await store.delete("t", []) == 0
    assert await store.get_all("t") == {b"b\x00\xff": b"\x00" * 1000}
    assert await store.get_all("empty") == {}
    assert await other.get_all("t") == {b"a": b"other cluster"}
    await store.close()
    await other.close()


@pytest.mark.timeout(30)
def test_redis_store_client_tables_with_a_password(redis):
    run(exercise_tables(redis.url, "unit"))


@pytest.mark.timeout(30)
def test_database_number_separates_tables(redis):
    async def scenario():
        one = RedisStoreClient(redis.url[:-2] + "/1", namespace="db")
        two = RedisStoreClient(redis.url[:-2] + "/2", namespace="db")
        await one.open()
        await two.open()
        await one.put("t", b"k", b"in db 1")
        assert await two.get("t", b"k") is None
        assert await one.get("t", b"k") == b"in db 1"
        await one.close()
        await two.close()
    run(scenario())


@pytest.mark.timeout(30)
@pytest.mark.parametrize("credentials", ["", ":wrong-password@"], ids=["none", "wrong"])
def test_refused_password_is_a_clear_error(redis, credentials):
    async def scenario():
        store = RedisStoreClient(f"redis://{credentials}127.0.0.1:{redis.port}")
        with pytest.raises(StorageUnavailableError) as info:
            await store.open()
        await store.close()
        return str(info.value)
    text = run(scenario())
    assert f"127.0.0.1:{redis.port}" in text
    assert "refused the credentials" in text and "redis://:PASSWORD@host:port" in text
    assert "wrong-password" not in text  # a password never reaches a log or console


@pytest.mark.timeout(60)
def test_redis_over_tls(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make a test certificate")
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    server = RedisServer(tmp_path, tls=(cert, key))
    server.start()
    try:
        url = f"rediss://:{PASSWORD}@127.0.0.1:{server.port}/0?ssl_ca_certs={cert}"
        run(exercise_tables(url, "tls"))
        # The same server refuses a client that does not speak TLS.
        plain = RedisStoreClient(f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0",
                                 reconnect_timeout_s=1)
        with pytest.raises(StorageUnavailableError):
            run(plain.open())
    finally:
        server.stop()


@pytest.mark.timeout(60)
def test_redis_through_sentinel(redis, tmp_path):
    sentinel = RedisServer(tmp_path, sentinel_of=redis)
    sentinel.start()
    try:
        url = f"redis+sentinel://:{PASSWORD}@127.0.0.1:{sentinel.port}/gcs/0"
        run(exercise_tables(url, "sentinel"))

        async def same_data():  # the master Sentinel named is the server itself
            direct = RedisStoreClient(redis.url, namespace="sentinel")
            await direct.open()
            value = await direct.get_all("t")
            await direct.close()
            return value
        assert run(same_data()) == {b"b\x00\xff": b"\x00" * 1000}
    finally:
        sentinel.stop()


def test_malformed_sentinel_url_says_what_is_expected():
    with pytest.raises(StorageUnavailableError, match="MASTER_NAME"):
        run(RedisStoreClient("redis+sentinel://:pw@127.0.0.1:26379").open())


@pytest.mark.timeout(60)
def test_redis_store_client_reconnects_after_the_server_restarts(redis):
    async def before():
        store = RedisStoreClient(redis.url, namespace="restart")
        await store.open()
        await store.put("t", b"k", b"before")
        return store

    async def scenario():
        store = await before()
        # Restart Redis under the open client (it comes back empty: no persistence).
        redis.stop()
        restart = asyncio.get_running_loop().run_in_executor(None, redis.start)
        await store.put("t", b"k", b"after")  # retried until the server is back
        await restart
        assert await store.get("t", b"k") == b"after"
        await store.close()
    run(scenario())


@pytest.mark.timeout(30)
def test_unreachable_redis_is_a_clear_error_at_gcs_start(tmp_path):
    port = ember.node.free_port()

    async def scenario():
        with pytest.raises(StorageUnavailableError, match=f"127.0.0.1:{port}.*redis-server"):
            await RedisStoreClient(f"redis://127.0.0.1:{port}").open()
    run(scenario())
    gcs = subprocess.run([sys.executable, "-m", "ember.gcs", "--port", "0", "--storage",
                          f"redis://127.0.0.1:{port}"], capture_output=True, text=True,
                         timeout=20)
    assert gcs.returncode == 1
    assert f"cannot reach Redis at redis://127.0.0.1:{port}" in gcs.stderr


@pytest.mark.timeout(30)
def test_missing_redis_py_is_a_clear_error_at_gcs_start(tmp_path):
    # A `redis` package that fails to import stands for redis-py not being installed.
    fake = tmp_path / "redis"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('No module named redis')\n")
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    gcs = subprocess.run([sys.executable, "-m", "ember.gcs", "--port", "0", "--storage",
                          f"redis://:{PASSWORD}@127.0.0.1:6379"], capture_output=True,
                         text=True, timeout=20, env=env)
    assert gcs.returncode == 1
    assert "pip install 'ember[redis]'" in gcs.stderr
    assert PASSWORD not in gcs.stderr


# --- a GCS killed and restarted under a running cluster --------------------------------

@contextlib.contextmanager
def cluster_on(redis, monkeypatch, **settings):
    """A Cluster whose GCS keeps its tables in ``redis``, under a namespace of its own.

    Its processes (the GCS above all) read the storage and ``settings`` from
    the environment. The cluster is shut down after.
    """
    monkeypatch.setenv("EMBER_GCS_STORAGE", redis.url)
    monkeypatch.setenv("EMBER_GCS_STORAGE_NAMESPACE", f"test-{time.monotonic_ns()}")
    for name, value in settings.items():
        monkeypatch.setenv(f"EMBER_{name.upper()}", str(value))
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster()
    try:
        yield cluster
    finally:
        cluster.shutdown()


@pytest.fixture
def redis_cluster(redis, monkeypatch):
    """A two-node cluster whose GCS keeps its tables in Redis."""
    with cluster_on(redis, monkeypatch) as cluster:
        cluster.add_node(num_cpus=2)
        cluster.add_node(num_cpus=1)
        yield cluster


@ray.remote
class Keeper:
    def __init__(self):
        self.count = 0

    def incr(self):
        self.count += 1
        return self.count


@ray.remote
def square(x):
    return x * x


def _raylets(cluster) -> list[psutil.Process]:
    return [psutil.Process(node._processes.processes[0].pid)
            for node in cluster.list_all_nodes()]


@pytest.mark.timeout(90)
def test_cluster_survives_a_gcs_restart(redis_cluster):
    cluster = redis_cluster
    ray.init(address=cluster.address, namespace="ft")
    keeper = Keeper.options(name="keeper", lifetime="detached").remote()
    assert ray.get(keeper.incr.remote(), timeout=30) == 1
    assert ray.get(square.remote(3), timeout=30) == 9
    core = context.core
    core.io.run(core.gcs.call(gcs_msg.KVPut("test", b"key", b"value")), timeout=10)
    raylets = _raylets(cluster)

    cluster.head_node.kill_gcs_server()
    # While the GCS is down, the running actor still answers (calls go to its worker).
    assert ray.get(keeper.incr.remote(), timeout=30) == 2
    cluster.head_node.start_gcs_server()

    assert all(r.is_running() and r.status() != psutil.STATUS_ZOMBIE for r in raylets)
    assert ray.get(keeper.incr.remote(), timeout=30) == 3
    found = ray.get_actor("keeper")
    assert ray.get(found.incr.remote(), timeout=30) == 4
    assert [ray.get(square.remote(i), timeout=30) for i in range(4)] == [0, 1, 4, 9]
    wait_for_condition(lambda: sorted(n["Alive"] for n in ray.nodes()) == [True, True],
                       timeout=20, message="both nodes alive in ember.nodes()")
    reply = core.io.run(core.gcs.call(gcs_msg.KVGet("test", b"key")), timeout=10)
    assert reply.value == b"value"
    # A new actor can be created and named after the restart.
    fresh = Keeper.options(name="fresh").remote()
    assert ray.get(fresh.incr.remote(), timeout=30) == 1
    ray.kill(found)
    ray.shutdown()


@pytest.mark.timeout(60)
def test_raylet_gives_up_when_the_gcs_does_not_come_back(redis, monkeypatch):
    with cluster_on(redis, monkeypatch, gcs_reconnect_timeout_s=1) as cluster:
        head = cluster.add_node(num_cpus=1)
        raylet = head._processes.processes[0]
        head.kill_gcs_server()
        assert raylet.poll() is None  # still reconnecting
        raylet.wait(15)
        with open(f"{head.session_dir}/logs/raylet-{head.node_id[:12]}.log") as f:
            assert "could not reconnect within 1 s" in f.read()


# --- reloading the GCS managers from storage (no processes) -----------------------------

class _Nodes:
    """The node manager as the actor manager sees it: no node known."""

    nodes: dict = {}


@pytest.mark.timeout(30)
def test_actor_and_placement_group_tables_reload_from_storage():
    from ember.gcs.actor_manager import ActorManager, ActorState
    from ember.gcs.placement_group_manager import PlacementGroupManager
    from ember.gcs.pubsub import Publisher
    from ember.gcs.storage import InMemoryStoreClient
    from ember.protocol.common import Address, DefaultScheduling

    store = InMemoryStoreClient()
    owner = Address(b"n" * 28, "127.0.0.1", 1, worker_id=b"w" * 28)

    def info(actor_id: bytes, name: str) -> gcs_msg.ActorInfo:
        return gcs_msg.ActorInfo(actor_id=actor_id, job_id=b"j" * 4, class_name="A",
                                 state="", owner=owner, name=name, namespace="ns",
                                 is_detached=True)

    async def before():
        actors = ActorManager(Publisher(), _Nodes(), store)
        actors.register(None, gcs_msg.RegisterActor(info(b"a" * 16, "alive")))
        actors.register(None, gcs_msg.RegisterActor(info(b"d" * 16, "dead")))
        alive, dead = actors.actors[b"a" * 16], actors.actors[b"d" * 16]
        alive.create = gcs_msg.CreateActor(b"a" * 16, b"", {}, {}, DefaultScheduling())
        alive.worker_id, alive.lease_id = b"x" * 28, b"l" * 20
        actors._set_state(alive, ActorState.PENDING_CREATION)
        actors._set_state(alive, ActorState.ALIVE)
        actors._died(dead, "it was killed: test", restartable=False)
        groups = PlacementGroupManager(_Nodes(), actors, store)
        groups._schedule = lambda group: asyncio.sleep(0)  # no raylets here
        groups.create(None, gcs_msg.CreatePlacementGroup(gcs_msg.PlacementGroupInfo(
            b"p" * 18, "pg", "ns", [{"CPU": 1.0}], "PACK", "", b"j" * 4)))
        await asyncio.sleep(0.01)  # the background writes

    async def after():
        actors = ActorManager(Publisher(), _Nodes(), store)
        await actors.load()
        groups = PlacementGroupManager(_Nodes(), actors, store)
        await groups.load()
        return actors, groups

    run(before())
    actors, groups = run(after())
    alive = actors.actors[b"a" * 16]
    assert alive.state is ActorState.ALIVE and alive.create is not None
    assert (alive.worker_id, alive.lease_id) == (b"x" * 28, b"l" * 20)
    assert actors._by_worker == {b"x" * 28: b"a" * 16}
    assert actors.get_named(None, gcs_msg.GetNamedActor("alive", "ns")).info.actor_id \
        == b"a" * 16
    assert actors.get_named(None, gcs_msg.GetNamedActor("dead", "ns")).info is None
    assert actors.actors[b"d" * 16].state is ActorState.DEAD
    # A registration sent again after a reconnection is not a name clash.
    again = actors.register(None, gcs_msg.RegisterActor(info(b"a" * 16, "alive")))
    assert again.info.state == "ALIVE"
    reply = groups.get(None, gcs_msg.GetPlacementGroup(name="pg", namespace="ns"))
    assert reply.info.placement_group_id == b"p" * 18 and reply.info.state == "PENDING"


@pytest.mark.timeout(30)
def test_a_driver_takes_its_job_up_again_or_it_finishes(monkeypatch):
    from ember.gcs.job_manager import JobManager
    from ember.gcs.pubsub import Publisher
    from ember.gcs.storage import InMemoryStoreClient
    from ember.protocol.common import Address

    monkeypatch.setattr(ember.config.config, "gcs_reconnect_timeout_s", 0.05)
    store = InMemoryStoreClient()

    class Conn:
        peer = None

    def registration(job_id=b""):
        return gcs_msg.RegisterJob(1, Address(b"n" * 28, "127.0.0.1", 1, worker_id=b"w" * 28),
                                   "ns", [], job_id=job_id)

    async def scenario():
        first = JobManager(store, Publisher())
        one = (await first.register(Conn(), registration())).job_id
        two = (await first.register(Conn(), registration())).job_id
        restarted = JobManager(store, Publisher())
        await restarted.load()
        restarted.start()
        conn = Conn()
        assert (await restarted.register(conn, registration(one))).job_id == one
        assert conn.peer == ("job", one)
        await asyncio.sleep(0.2)  # job two's driver never came back
        assert not restarted.jobs[one].is_dead and restarted.jobs[two].is_dead
        fresh = JobManager(InMemoryStoreClient(), Publisher())
        with pytest.raises(RuntimeError, match="unknown to this GCS"):
            await fresh.register(Conn(), registration(one))
    run(scenario())


# --- the reconnecting client against a real server that restarts ------------------------

@pytest.mark.timeout(30)
def test_reconnecting_client_retries_across_a_server_restart():
    from ember import rpc
    from ember.rpc.reconnecting import ReconnectingClient

    port = ember.node.free_port()
    addr = f"127.0.0.1:{port}"

    async def scenario():
        held = asyncio.Event()

        async def get_info(conn, req):
            if req.actor_id == b"hold":
                await held.wait()  # never answered by the first server
            return gcs_msg.GetActorInfoReply(None)
        handlers = {gcs_msg.GetActorInfo: get_info}
        server = await rpc.serve(addr, lambda: handlers)
        connected = []

        async def on_connected(conn):
            connected.append(conn)
        client = ReconnectingClient(addr, {}, name="test server", on_connected=on_connected,
                                    reconnect_timeout_s=10)
        await client.start()
        in_flight = client.request(gcs_msg.GetActorInfo(b"hold"))
        await asyncio.sleep(0.05)
        server.close()
        connected[0].transport.abort()  # as if the server process died
        await asyncio.sleep(0.05)
        assert not client.connected and not client.closed
        client.notify(gcs_msg.GetActorInfo(b"queued"))  # waits for the new connection
        handlers[gcs_msg.GetActorInfo] = lambda conn, req: gcs_msg.GetActorInfoReply(None)
        server = await rpc.serve(addr, lambda: handlers)
        assert (await asyncio.wait_for(in_flight, 10)).info is None
        assert len(connected) == 2 and client.connected and client.reconnects == 1
        client.close()
        server.close()
        assert client.closed
        with pytest.raises(ConnectionError):
            await client.call(gcs_msg.GetActorInfo(b"after close"))

    run(scenario())


@pytest.mark.timeout(30)
def test_reconnecting_client_gives_up_after_its_timeout():
    from ember import rpc
    from ember.rpc.reconnecting import ReconnectingClient

    addr = f"127.0.0.1:{ember.node.free_port()}"

    async def scenario():
        server = await rpc.serve(addr, lambda: {})
        gave_up = []
        conns = []

        async def on_connected(conn):
            conns.append(conn)
        client = ReconnectingClient(addr, {}, name="test server", on_connected=on_connected,
                                    on_give_up=gave_up.append, reconnect_timeout_s=0.3)
        await client.start()
        server.close()
        conns[0].transport.abort()
        waiting = client.request(gcs_msg.GetActorInfo(b"x"))
        with pytest.raises(ConnectionError, match="could not reconnect within 0.3 s"):
            await asyncio.wait_for(waiting, 10)
        assert client.closed and len(gave_up) == 1
    run(scenario())


@pytest.mark.timeout(60)
def test_a_node_that_does_not_come_back_is_declared_dead(redis, monkeypatch):
    with cluster_on(redis, monkeypatch, health_check_timeout_s=2) as cluster:
        head = cluster.add_node(num_cpus=1)
        lost = cluster.add_node(num_cpus=1)
        head.kill_gcs_server()
        cluster.remove_node(lost, allow_graceful=False)  # dies while there is no GCS
        head.start_gcs_server()
        cluster.wait_for_nodes(timeout=20)  # the head back alive, the lost node dead
        reply = ember.node.query_nodes(cluster.address)
        alive = {n.node_id.hex(): n.alive for n in reply.nodes}
        assert alive == {head.node_id: True, lost.node_id: False}
        assert "health checks" in next(n.death_reason for n in reply.nodes if not n.alive)
