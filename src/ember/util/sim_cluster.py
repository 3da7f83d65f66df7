"""Simulated raylets: many nodes in one process, to load a real GCS at scale.

Why: the GCS's cost per node (registration, health checks, resource reports,
the broadcasts of them, placement and actor scheduling, death detection) only
shows at hundreds or thousands of nodes, and a real raylet is a process with a
worker pool and an object store: a 2-core machine runs a handful. A simulated
node is one asyncio object; a few hundred share a process and event loop.

What is real: the GCS process and everything it does; every connection (one
TCP connection to the GCS and one listening port per node, as a raylet has);
every message is the one a raylet sends or answers (``ember.protocol``).

What is faked, per node:

- no worker processes: a granted lease names the node's *fake worker*, a
  listener of its own (as each worker has), which answers an actor's creation push (``PushTask``)
  with success at once, so the GCS marks the actor ALIVE;
- no object store, no task execution, no log or metrics export;
- scheduling is minimal: a lease that fits here is granted, one that does not
  spills back to a node that fits in the process's view of the cluster (built
  from the GCS's resource broadcasts, as a raylet's is), and waits if none does;
  placement-group bundles are prepared, committed and cancelled with real
  resource accounting, but leases inside bundles are not served.

Reports follow the raylet: on change (leading-edge throttle of
``resource_report_period_s``), and, when ``report_period_s`` is set, also
every that many seconds, as a loaded raylet whose availability keeps moving
does. A node can *crash* (its connections close, as when its process dies) or
*hang* (it stops answering health checks, as a stopped process or a network
partition does).

Run ``python -m ember.util.sim_cluster --gcs HOST:PORT --nodes 250``; it
reads commands on stdin and answers with one JSON line each on stdout (see
:func:`_serve_commands`). :class:`SimProcess` drives one from a test or a
benchmark. ``benchmarks/thousand_nodes.py`` uses it at 1,000 nodes and
``tests/cluster/test_sim_nodes.py`` at 100.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import secrets
import subprocess
import sys
import threading
import time
import uvloop

import msgspec

from .. import rpc
from ..config import config
from ..protocol import core_worker as cw
from ..protocol import gcs as gcs_msg
from ..protocol import raylet as rl
from ..protocol.common import Address, DefaultScheduling
from ..rpc.throttle import Throttle

HOST = "127.0.0.1"


def _fits(available: dict[str, float], request: dict[str, float]) -> bool:
    return all(available.get(k, 0.0) + 1e-9 >= v for k, v in request.items() if v)


def _add(available: dict[str, float], request: dict[str, float], sign: float) -> None:
    for k, v in request.items():
        available[k] = available.get(k, 0.0) + sign * v


class ClusterView:
    """What the nodes of one process know of the cluster, from the GCS's broadcasts.

    Shared by the process's nodes (they all hear the same broadcasts): only
    one live node, ``feeder``, feeds it, so a broadcast is applied once per
    process. When the feeder crashes or hangs, another takes over.
    """

    def __init__(self):
        self.feeder: SimNode | None = None
        self.raylets: dict[bytes, Address] = {}
        self.available: dict[bytes, dict[str, float]] = {}

    def node_changed(self, info: gcs_msg.NodeInfo) -> None:
        if info.alive:
            self.raylets[info.node_id] = info.raylet
            self.available.setdefault(info.node_id, dict(info.resources_total))
        else:
            self.raylets.pop(info.node_id, None)
            self.available.pop(info.node_id, None)

    def resources_changed(self, m: gcs_msg.ResourcesChanged) -> None:
        for node_id, available in m.available.items():
            if node_id in self.raylets:
                self.available[node_id] = available

    def pick(self, request: dict[str, float], exclude: bytes) -> Address | None:
        fits = [n for n, a in self.available.items() if n != exclude and _fits(a, request)]
        return self.raylets[random.choice(fits)] if fits else None


class SimNode:
    """One simulated raylet. Owned by the process's event loop."""

    def __init__(self, gcs_address: str, resources: dict[str, float], view: ClusterView,
                 report_period_s: float | None):
        self.node_id = secrets.token_bytes(28)
        self.gcs_address = gcs_address
        self.total = dict(resources)
        self.available = dict(resources)
        self._view = view
        self._worker_server = None
        self._worker_port = 0
        #: Actor creation tasks the fake worker accepted.
        self.creations = 0
        self._report_period_s = report_period_s
        self.gcs: rpc.Connection | None = None
        self._server = None
        self.address: Address | None = None
        #: lease id -> resources it holds; worker id -> lease id.
        self.leases: dict[bytes, dict[str, float]] = {}
        self._workers: dict[bytes, bytes] = {}
        #: (group id, bundle index) -> resources, prepared or committed here.
        self.bundles: dict[tuple[bytes, int], dict[str, float]] = {}
        self.hung = False
        self.dead = False
        self._throttle = Throttle(config.resource_report_period_s, self._report)
        self._tasks: list[asyncio.Task] = []
        self._inbound: list[rpc.Connection] = []

    # --- life -----------------------------------------------------------------

    async def start(self) -> None:
        handlers = {
            rl.RequestWorkerLease: self.request_lease,
            rl.ReturnWorker: self.return_worker,
            rl.CancelWorkerLease: lambda conn, req: rl.CancelWorkerLeaseReply(False),
            rl.KillWorker: self.kill_worker,
            rl.PrepareBundleResources: self.prepare_bundles,
            rl.CommitBundleResources: lambda conn, req: None,
            rl.CancelResourceReserve: self.cancel_bundles,
            rl.GetNodeState: lambda conn, req: rl.GetNodeStateReply(self.debug_state()),
        }
        self._server = await rpc.serve(f"{HOST}:0", lambda: handlers, name="sim raylet",
                                       on_connect=self._inbound.append)
        port = self._server.sockets[0].getsockname()[1]
        self.address = Address(self.node_id, HOST, port)
        self._worker_server = await rpc.serve(
            f"{HOST}:0", lambda: {cw.PushTask: self._push_task}, name="sim worker",
            on_connect=self._inbound.append)
        self._worker_port = self._worker_server.sockets[0].getsockname()[1]
        self.gcs = await rpc.connect(self.gcs_address, {
            gcs_msg.CheckAlive: self._check_alive,
            gcs_msg.NodeChanged: self._node_changed,
            gcs_msg.ResourcesChanged: self._resources_changed,
            gcs_msg.JobFinished: lambda conn, m: None,
            gcs_msg.ReportWorkerFailure: lambda conn, m: None,
        }, name="gcs", timeout=60)
        info = gcs_msg.NodeInfo(node_id=self.node_id, ip=HOST, hostname="sim",
                                raylet=self.address, resources_total=dict(self.total),
                                start_time=time.time())
        # Subscribed first, as the raylet does: no node registering meanwhile is missed.
        await self.gcs.call(gcs_msg.Subscribe([gcs_msg.CHANNEL_NODE, gcs_msg.CHANNEL_JOB,
                                               gcs_msg.CHANNEL_WORKER,
                                               gcs_msg.CHANNEL_RESOURCES]))
        reply = await self.gcs.call(gcs_msg.RegisterNode(info))
        for node in reply.nodes:
            self._node_changed(None, gcs_msg.NodeChanged(node))
        if self._report_period_s:
            self._tasks.append(asyncio.get_running_loop().create_task(self._report_loop()))

    def crash(self) -> None:
        """Die as a raylet process does: every connection closes at once."""
        self.dead = True
        for task in self._tasks:
            task.cancel()
        self._server.close()
        self._worker_server.close()
        for conn in self._inbound:
            conn.close()
        self.gcs.close()

    def hang(self) -> None:
        """Stop answering and reporting, connections open: found by the health check."""
        self.hung = True

    # --- GCS side -------------------------------------------------------------

    def _check_alive(self, conn, req):
        if self.hung:
            return asyncio.get_running_loop().create_future()  # never answered
        return gcs_msg.CheckAliveReply(self.node_id)

    def _node_changed(self, conn, m: gcs_msg.NodeChanged) -> None:
        if self._view.feeder is self:
            self._view.node_changed(m.info)

    def _resources_changed(self, conn, m: gcs_msg.ResourcesChanged) -> None:
        if self._view.feeder is self:
            self._view.resources_changed(m)

    def _changed(self) -> None:
        if not self.dead:
            self._throttle.poke()

    def _report(self) -> None:
        if self.dead or self.hung or self.gcs.closed:
            return
        self.gcs.notify(gcs_msg.ReportResources(self.node_id, dict(self.available)))

    async def _report_loop(self) -> None:
        await asyncio.sleep(random.random() * self._report_period_s)
        while True:
            self._report()
            await asyncio.sleep(self._report_period_s)

    # --- raylet service ---------------------------------------------------------

    async def request_lease(self, conn, req: rl.RequestWorkerLease) -> rl.WorkerLeaseReply:
        hold = req.running_resources if req.running_resources is not None else req.resources
        while not self.dead:
            if _fits(self.available, req.resources):
                _add(self.available, hold, -1)
                self.leases[req.lease_id] = hold
                worker_id = secrets.token_bytes(28)
                self._workers[worker_id] = req.lease_id
                self._changed()
                worker = Address(self.node_id, HOST, self._worker_port, worker_id=worker_id)
                return rl.LeaseGranted(req.lease_id, worker, os.getpid())
            if req.grant_or_reject:
                return rl.LeaseRejected()
            target = self._view.pick(req.resources, self.node_id)
            if target is not None:
                return rl.LeaseSpillback(target)
            await asyncio.sleep(0.1)  # nothing fits anywhere yet: wait, as a raylet queues
        raise ConnectionError("the node died")

    def _push_task(self, conn, req: cw.PushTask) -> cw.PushTaskReply:
        self.creations += 1
        return cw.PushTaskReply([])

    def return_worker(self, conn, req: rl.ReturnWorker) -> None:
        hold = self.leases.pop(req.lease_id, None)
        if hold is not None:
            _add(self.available, hold, +1)
            self._changed()

    def kill_worker(self, conn, req: rl.KillWorker) -> gcs_msg.Ack:
        lease_id = self._workers.pop(req.worker_id, None)
        if lease_id is not None:
            self.return_worker(conn, rl.ReturnWorker(lease_id))
            self.gcs.notify(gcs_msg.ReportWorkerFailure(
                req.worker_id, self.node_id, f"worker was killed: {req.reason}"))
        return gcs_msg.Ack()

    def prepare_bundles(self, conn, req: rl.PrepareBundleResources):
        need: dict[str, float] = {}
        for _, res in req.bundles:
            _add(need, res, +1)
        if not _fits(self.available, need):
            return rl.PrepareBundleResourcesReply(False, f"{need} does not fit {self.available}")
        for index, res in req.bundles:
            self.bundles[(req.placement_group_id, index)] = res
        _add(self.available, need, -1)
        self._changed()
        return rl.PrepareBundleResourcesReply(True)

    def cancel_bundles(self, conn, req: rl.CancelResourceReserve) -> None:
        for index in req.bundle_indexes:
            res = self.bundles.pop((req.placement_group_id, index), None)
            if res is not None:
                _add(self.available, res, +1)
                self._changed()

    def debug_state(self) -> dict:
        return {"node_id": self.node_id.hex(), "available": self.available,
                "leases": len(self.leases), "bundles": len(self.bundles)}


class SimHost:
    """The nodes of one process."""

    def __init__(self, gcs_address: str, resources: dict[str, float],
                 report_period_s: float | None = None):
        self.gcs_address = gcs_address
        self.resources = resources
        self.report_period_s = report_period_s
        self.view = ClusterView()
        self.nodes: list[SimNode] = []

    async def add_nodes(self, count: int, concurrency: int = 50) -> list[SimNode]:
        new = [SimNode(self.gcs_address, self.resources, self.view,
                       report_period_s=self.report_period_s) for _ in range(count)]
        if self.view.feeder is None:
            self.view.feeder = new[0]
        self.nodes.extend(new)
        gate = asyncio.Semaphore(concurrency)

        async def start(node):
            async with gate:
                await node.start()
        await asyncio.gather(*(start(n) for n in new))
        return new

    def live(self) -> list[SimNode]:
        return [n for n in self.nodes if not n.dead and not n.hung]


async def _serve_commands(host: SimHost) -> None:
    """One JSON line out per line in. Commands:

    - ``add N``: start N nodes; -> {"added": N, "seconds": s, "node_ids": [hex]}
    - ``crash N`` / ``hang N``: the first N live nodes -> {"node_ids": [hex]}
    - ``stats``: -> {"live": n, "leases": n, "bundles": n, "creations": n}
    - ``quit``: exit.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def say(obj) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()
    say({"ready": True, "pid": os.getpid()})
    while True:
        line = (await reader.readline()).decode().split()
        if not line or line[0] == "quit":
            return
        if line[0] == "add":
            t0 = time.perf_counter()
            new = await host.add_nodes(int(line[1]))
            say({"added": len(new), "seconds": time.perf_counter() - t0,
                 "node_ids": [n.node_id.hex() for n in new]})
        elif line[0] in ("crash", "hang"):
            victims = host.live()[:int(line[1])]
            for node in victims:
                node.crash() if line[0] == "crash" else node.hang()
            if host.view.feeder in victims and host.live():
                host.view.feeder = host.live()[0]
            say({"node_ids": [n.node_id.hex() for n in victims]})
        elif line[0] == "stats":
            live = host.live()
            say({"live": len(live), "leases": sum(len(n.leases) for n in live),
                 "bundles": sum(len(n.bundles) for n in live),
                 "creations": sum(n.creations for n in host.nodes)})


async def _main(args) -> None:
    host = SimHost(args.gcs, json.loads(args.resources), args.report_period)
    await _serve_commands(host)
    for node in host.live():
        node.crash()


class SimProcess:
    """A ``python -m ember.util.sim_cluster`` child, driven over its stdin/stdout."""

    def __init__(self, gcs_address: str, resources: dict[str, float] | None = None,
                 report_period_s: float | None = None, env: dict | None = None):
        cmd = [sys.executable, "-m", "ember.util.sim_cluster", "--gcs", gcs_address,
               "--resources", json.dumps(resources or {"CPU": 4.0})]
        if report_period_s:
            cmd += ["--report-period", str(report_period_s)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)
        self.pid = self.proc.pid
        hello = self._read()
        assert hello.get("ready"), hello

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"simulated nodes process {self.pid} exited "
                               f"(code {self.proc.poll()})")
        return json.loads(line)

    def command(self, text: str) -> dict:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        return self._read()

    def send(self, text: str) -> None:
        """Send a command without waiting for its answer (read it with :meth:`answer`)."""
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def answer(self) -> dict:
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(10)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def start_gcs(log_dir: str, env: dict) -> tuple[subprocess.Popen, str]:
    """A real GCS process alone (no raylet), as ``ember start --head`` starts one."""
    port_file = os.path.join(log_dir, "gcs.port")
    log = open(os.path.join(log_dir, "gcs.out"), "ab")
    proc = subprocess.Popen([sys.executable, "-m", "ember.gcs", "--port", "0",
                             "--port-file", port_file, "--log-file",
                             os.path.join(log_dir, "gcs.log")],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + 60
    while not os.path.exists(port_file):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"the GCS did not start; see {log_dir}/gcs.out")
        time.sleep(0.05)
    with open(port_file) as f:
        return proc, f"{HOST}:{f.read().strip()}"


class SimDriver:
    """Sends the GCS what a driver sends to create placement groups and actors.

    A real driver needs a raylet on its node (its object store); the
    simulated cluster has none, so this speaks to the GCS directly: the same
    CreatePlacementGroup / WaitPlacementGroupReady, RegisterActor /
    CreateActor and keyed actor subscription as ``ember.util.placement_group``
    and an actor's owner. Its loop runs on a thread of its own; the methods
    are synchronous.
    """

    def __init__(self, gcs_address: str):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                        name="sim driver")
        self._thread.start()
        self.job_id = secrets.token_bytes(4)
        self.worker_id = secrets.token_bytes(28)
        #: actor id -> its latest ActorInfo, from the actor channel.
        self.actors: dict[bytes, gcs_msg.ActorInfo] = {}
        self.gcs = self.run(rpc.connect(gcs_address, {
            gcs_msg.ActorChanged: self._actor_changed}, name="gcs", timeout=30))

    def run(self, coro, timeout: float | None = None):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def _actor_changed(self, conn, m: gcs_msg.ActorChanged) -> None:
        known = self.actors.get(m.info.actor_id)
        if known is None or m.info.version >= known.version:
            self.actors[m.info.actor_id] = m.info

    def alive_nodes(self) -> list[gcs_msg.NodeInfo]:
        reply = self.run(self.gcs.call(gcs_msg.GetAllNodes()))
        return [n for n in reply.nodes if n.alive]

    def create_placement_groups(self, count: int, bundles: list[dict[str, float]],
                                strategy: str = "PACK") -> list[bytes]:
        """Create ``count`` groups and wait until every one is CREATED; their ids."""
        async def go():
            ids = [secrets.token_bytes(18) for _ in range(count)]
            for pg_id in ids:
                self.gcs.notify(gcs_msg.CreatePlacementGroup(gcs_msg.PlacementGroupInfo(
                    pg_id, "", "", [dict(b) for b in bundles], strategy, "PENDING",
                    self.job_id)))
            replies = await asyncio.gather(*(self.gcs.call(
                gcs_msg.WaitPlacementGroupReady(pg_id)) for pg_id in ids))
            bad = [r for r in replies if r.state != "CREATED"]
            if bad:
                raise RuntimeError(f"{len(bad)} groups not created: {bad[0]}")
            return ids
        return self.run(go())

    def placement_groups(self) -> list[gcs_msg.PlacementGroupInfo]:
        return self.run(self.gcs.call(gcs_msg.GetAllPlacementGroups())).groups

    def create_actors(self, count: int, owners: list[gcs_msg.NodeInfo],
                      max_restarts: int = 0) -> list[bytes]:
        """Register and create ``count`` actors, owned round-robin from ``owners``' nodes.

        As in Ray, an actor asks for 1 CPU to be placed and holds none running.
        """
        async def go():
            ids = [secrets.token_bytes(16) for _ in range(count)]
            for start in range(0, count, 1000):
                await self.gcs.call(gcs_msg.Subscribe([gcs_msg.CHANNEL_ACTOR],
                                                      keys=ids[start:start + 1000]))
            calls = []
            for i, actor_id in enumerate(ids):
                node = owners[i % len(owners)]
                owner = Address(node.node_id, HOST, 1, worker_id=self.worker_id)
                info = gcs_msg.ActorInfo(actor_id, self.job_id, "SimActor", "", owner,
                                         max_restarts=max_restarts)
                spec = cw.TaskSpec(task_id=secrets.token_bytes(24), job_id=self.job_id,
                                   function_id=b"sim", function_name="SimActor.__init__",
                                   args=[], kwarg_names=[], num_returns=0, owner=owner,
                                   resources={}, actor_id=actor_id, is_actor_creation=True)
                calls.append(self.gcs.request(gcs_msg.RegisterActor(info)))
                self.gcs.notify(gcs_msg.CreateActor(
                    actor_id, msgspec.msgpack.encode(spec), {"CPU": 1.0}, {},
                    DefaultScheduling()))
            await asyncio.gather(*calls)
            return ids
        return self.run(go())

    def actor_states(self, ids) -> dict[str, int]:
        states: dict[str, int] = {}
        for actor_id in ids:
            info = self.actors.get(actor_id)
            state = info.state if info else "UNKNOWN"
            states[state] = states.get(state, 0) + 1
        return states

    def gcs_actor_states(self, ids) -> dict[str, int]:
        """What the GCS's table says (the notifications above are what an owner hears)."""
        wanted = set(ids)
        states: dict[str, int] = {}
        for info in self.run(self.gcs.call(gcs_msg.ListActors())).actors:
            if info.actor_id in wanted:
                states[info.state] = states.get(info.state, 0) + 1
        return states

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.gcs.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="ember.util.sim_cluster")
    parser.add_argument("--gcs", required=True, help="the GCS's host:port")
    parser.add_argument("--resources", default='{"CPU": 4.0}')
    parser.add_argument("--report-period", type=float, default=None,
                        help="also report resources every this many seconds")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    uvloop.run(_main(args))


if __name__ == "__main__":
    main()
