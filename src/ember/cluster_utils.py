"""A multi-node cluster on one machine, for tests and experiments: ``Cluster``.

As in Ray's ``ray.cluster_utils.Cluster``, every node is a real raylet process
with its own resources, worker pool and object store, so scheduling across
nodes, spillback, node affinity, cross-node object transfer and node failure
can be exercised on a laptop::

    from ember.cluster_utils import Cluster

    cluster = Cluster()
    head = cluster.add_node(num_cpus=1)          # GCS + raylet
    worker = cluster.add_node(num_cpus=2)        # a raylet joining the head
    ember.init(address=cluster.address)          # the driver uses the head's raylet
    ...
    cluster.remove_node(worker)                  # SIGTERM; allow_graceful=False: SIGKILL
    cluster.shutdown()

Why the nodes share the head's session directory: one place holds every log
and socket of the cluster, so ``ember stop`` and the tests' leftover checks
find all of it. Sockets and logs are named by node id, so nodes never
collide there. All nodes listen on 127.0.0.1 and reach each other over TCP,
exactly as separate machines would; only their Unix sockets are local.

Every process is started with the parent-death signal (not detached), so a
test process that dies takes its cluster with it; ``shutdown()`` is also
registered with ``atexit`` unless ``shutdown_at_exit=False``.

Threads: a Cluster is meant to be driven from one thread. It does not need
a driver: the GCS is queried over a connection of its own.
"""
from __future__ import annotations

import atexit
import logging
import signal
import subprocess

from . import node as node_mod
import uvloop

from . import ports as ports_mod
from . import rpc, worker
from .autoscaler.config import validate_config
from .autoscaler.launcher import start_with_autoscaler
from .core_worker import context
from .protocol import raylet as rl

logger = logging.getLogger(__name__)

#: Arguments of ``add_node`` that ember maps onto its node settings.
_NODE_ARGS = {"num_cpus", "num_gpus", "resources", "memory", "_memory",
              "object_store_memory", "labels", "node_ip_address"}
#: Arguments of the head's ``add_node`` for its dashboard (off unless include_dashboard=True).
_DASHBOARD_ARGS = {"include_dashboard", "dashboard_host", "dashboard_port"}
#: Ray-only knobs that ``add_node`` accepts and ignores, so Ray test code runs unchanged.
_IGNORED_ARGS = {"_system_config", "node_name", "redis_port",
                 "dashboard_agent_listen_port", "enable_object_reconstruction"}
#: Ray's port arguments of ``add_node`` (see ember.ports); errors name them so.
_PORT_ARGS = {"node_manager_port", "object_manager_port", "min_worker_port",
              "max_worker_port", "worker_port_list", "metrics_export_port"}
_PORT_NAMES = {**ports_mod.INIT, "metrics_export": "metrics_export_port"}


class ClusterNode:
    """One node that a :class:`Cluster` started: a raylet, plus the GCS for the head.

    Mirrors the attributes of Ray's ``ray._private.node.Node`` that tests use.
    """

    def __init__(self, processes: node_mod.NodeProcesses, is_head: bool, node_args: dict):
        self._processes = processes
        #: The node's id, hex, as ``ember.nodes()`` and NodeAffinitySchedulingStrategy use it.
        self.node_id: str = processes.node_id.hex()
        #: Ray's name for the same id.
        self.unique_id: str = self.node_id
        self.is_head = is_head
        #: The GCS address of the cluster ("host:port").
        self.address: str = processes.gcs_address
        self.gcs_address: str = processes.gcs_address
        self.node_ip_address: str = processes.node_ip
        self.raylet_socket_name: str = processes.raylet_socket
        self.plasma_store_socket_name: str = processes.raylet_socket
        self.session_dir: str = processes.session_dir
        #: The arguments it was added with.
        self.node_args = dict(node_args)

    def all_processes_alive(self) -> bool:
        return all(proc.poll() is None for proc in self._processes.processes)

    def debug_state(self, timeout: float = 10.0) -> dict:
        """The raylet's ``debug_state()``: leases, worker pool, object store, object manager."""


        async def query():
            conn = await rpc.connect("unix:" + self.raylet_socket_name, name="raylet",
                                     timeout=timeout)
            try:
                return (await conn.call(rl.GetNodeState(), timeout=timeout)).state
            finally:
                conn.close()
        return uvloop.run(query())

    def kill_all_processes(self, allow_graceful: bool = True, timeout: float = 10.0) -> None:
        """Stop the node: SIGTERM (the raylet stops its workers), or SIGKILL if not graceful.

        A SIGKILLed raylet's workers die with it (their parent-death signal).
        """
        if allow_graceful:
            self._processes.stop(timeout)
            return
        for proc in self._processes.processes:
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for proc in self._processes.processes:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("process %d of node %s did not exit after SIGKILL", proc.pid,
                               self.node_id[:12])

    def kill_gcs_server(self, timeout: float = 10.0) -> None:
        """SIGKILL the head's GCS (a GCS crash), as Ray's ``Node.kill_gcs_server``.

        Raylets and drivers keep running and try to reconnect for
        ``gcs_reconnect_timeout_s``; start a new GCS with :meth:`start_gcs_server`.
        """
        gcs = self._gcs_process()
        if gcs.poll() is None:
            gcs.send_signal(signal.SIGKILL)
        gcs.wait(timeout)

    def start_gcs_server(self, timeout: float = 30.0) -> None:
        """Start a GCS again on the same address; with Redis storage it reloads the tables."""
        gcs = self._gcs_process()
        if gcs.poll() is None:
            raise RuntimeError("The GCS of this node is still running; kill it first.")
        port = int(self.gcs_address.rpartition(":")[2])
        proc, _ = node_mod.start_gcs(self.session_dir, port, detached=False)
        self._processes.processes[self._processes.processes.index(gcs)] = proc
        try:
            node_mod.query_nodes(self.gcs_address, timeout)
        except ConnectionError as exc:
            raise RuntimeError(f"The restarted GCS did not come up at {self.gcs_address}: "
                               f"{exc}; see {self.session_dir}/logs/gcs.log"
                               + node_mod.gcs_startup_error(self.session_dir)) from exc

    def _gcs_process(self) -> subprocess.Popen:
        if not self.is_head:
            raise ValueError(f"{self!r} is not the head node; only the head runs the GCS.")
        return next(p for p in self._processes.processes if "ember.gcs" in p.args)

    def __repr__(self) -> str:
        return f"ClusterNode({self.node_id[:12]}, head={self.is_head})"


class Cluster:
    """A cluster of several nodes on this machine. See the module docstring."""

    def __init__(self, initialize_head: bool = False, connect: bool = False,
                 head_node_args: dict | None = None, shutdown_at_exit: bool = True):
        self.head_node: ClusterNode | None = None
        self.worker_nodes: list[ClusterNode] = []
        #: Nodes removed from the cluster, which the GCS must list as dead.
        self._removed: list[ClusterNode] = []
        self.connected = False
        self._shutdown_at_exit = shutdown_at_exit
        if shutdown_at_exit:
            atexit.register(self.shutdown)
        if connect and not initialize_head:
            logger.warning("Cluster(connect=True) without initialize_head=True does nothing "
                           "(as in Ray): there is no node to connect to yet. Call "
                           "cluster.connect() after add_node().")
        if initialize_head:
            self.add_node(**(head_node_args or {}))
            if connect:
                self.connect()

    # --- properties ------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The GCS address ("host:port") that ``ember.init(address=...)`` takes."""
        if self.head_node is None:
            raise RuntimeError("The cluster has no head node yet; call add_node() first.")
        return self.head_node.address

    gcs_address = address

    def list_all_nodes(self) -> list[ClusterNode]:
        """Every node of the cluster still running, the head first."""
        return ([self.head_node] if self.head_node is not None else []) + self.worker_nodes

    # --- nodes -------------------------------------------------------------------------

    def add_node(self, wait: bool = True, **node_args) -> ClusterNode:
        """Start a node: the head (GCS and raylet) if there is none, else a raylet joining it.

        ``node_args``: num_cpus, num_gpus, resources, memory, object_store_memory,
        labels, node_ip_address, Ray's port arguments (node_manager_port,
        object_manager_port, min_worker_port, max_worker_port, worker_port_list,
        metrics_export_port); for the head, include_dashboard (default False:
        test clusters start many heads), dashboard_host, dashboard_port. With
        ``wait``, return once the GCS lists the node as alive.
        """
        unknown = set(node_args) - _NODE_ARGS - _DASHBOARD_ARGS - _IGNORED_ARGS - _PORT_ARGS
        if unknown:
            raise TypeError(f"add_node() got unsupported argument(s) {sorted(unknown)}; "
                            f"ember supports {sorted(_NODE_ARGS)}.")
        ignored = sorted(set(node_args) & _IGNORED_ARGS)
        if ignored:
            logger.info("add_node(): ignoring Ray-only argument(s) %s", ignored)
        settings = dict(num_cpus=node_args.get("num_cpus"), num_gpus=node_args.get("num_gpus"),
                        resources=node_args.get("resources"),
                        memory=node_args.get("memory", node_args.get("_memory")),
                        object_store_memory=node_args.get("object_store_memory"),
                        labels=node_args.get("labels"),
                        node_ip=node_args.get("node_ip_address") or "127.0.0.1",
                        ports=ports_mod.node_ports(
                            names=_PORT_NAMES, dashboard_port=node_args.get("dashboard_port"),
                            **{k: node_args.get(k) for k in _PORT_ARGS}))
        if self.head_node is None:
            processes = node_mod.start_head(
                detached=False, include_dashboard=bool(node_args.get("include_dashboard")),
                dashboard_host=node_args.get("dashboard_host") or "127.0.0.1", **settings)
            node = ClusterNode(processes, True, node_args)
            self.head_node = node
        else:
            processes = node_mod.start_worker_node(
                gcs_address=self.head_node.address, detached=False,
                session_dir=self.head_node.session_dir, **settings)
            node = ClusterNode(processes, False, node_args)
            self.worker_nodes.append(node)
        if wait and not node_mod.wait_for_registration(node.address, processes.node_id):
            alive = node.all_processes_alive()
            raise RuntimeError(
                f"Node {node.node_id[:12]} did not register with the GCS at {node.address} "
                f"in time ({'its processes are running' if alive else 'it exited'}); see "
                f"the logs in {node.session_dir}/logs.")
        return node

    def remove_node(self, node: ClusterNode, allow_graceful: bool = True) -> None:
        """Stop ``node``: SIGTERM if ``allow_graceful``, else SIGKILL (a node failure).

        Does not wait for the GCS to notice; use :meth:`wait_for_nodes` for that.
        """
        if node is self.head_node:
            self.head_node = None
        elif node in self.worker_nodes:
            self.worker_nodes.remove(node)
        else:
            raise ValueError(f"{node!r} is not a node of this cluster.")
        node.kill_all_processes(allow_graceful)
        self._removed.append(node)

    def wait_for_nodes(self, timeout: float = 30) -> None:
        """Block until the GCS lists every node of the cluster as alive, and removed ones
        as dead. Raises TimeoutError naming the nodes it still waits for."""
        if self.head_node is None:
            return
        def waiting_for(reply) -> list[str]:
            alive = {info.node_id.hex(): info.alive for info in reply.nodes}
            return ([n.node_id[:12] for n in self.list_all_nodes() if not alive.get(n.node_id)]
                    + [n.node_id[:12] + " (to be dead)" for n in self._removed
                       if alive.get(n.node_id)])
        try:
            reply = node_mod.query_nodes(self.address, timeout,
                                         until=lambda r: not waiting_for(r))
        except ConnectionError as exc:
            raise TimeoutError(f"Could not reach the GCS at {self.address}: {exc}") from exc
        waiting = waiting_for(reply)
        if waiting:
            raise TimeoutError(f"Timed out after {timeout} s waiting for nodes {waiting} to "
                               "reach their state in the GCS.")

    # --- drivers -----------------------------------------------------------------------

    def connect(self, namespace: str | None = None, **init_kwargs):
        """Make this process a driver of the cluster (``ember.init(address=...)``)."""
        context = worker.init(address=self.address, namespace=namespace, **init_kwargs)
        self.connected = True
        return context

    def shutdown(self) -> None:
        """Disconnect this process's driver (if connected here) and stop every node."""
        core = context.core
        if worker.is_initialized() and (self.connected or (
                self.head_node is not None and core.gcs_address == self.head_node.address)):
            worker.shutdown()  # a driver of a cluster that is going away
        self.connected = False
        for node in reversed(self.worker_nodes):
            node.kill_all_processes(allow_graceful=True)
        self.worker_nodes = []
        if self.head_node is not None:
            self.head_node.kill_all_processes(allow_graceful=True)
            self.head_node = None
        self._removed = []
        if self._shutdown_at_exit:
            atexit.unregister(self.shutdown)
            self._shutdown_at_exit = False


class AutoscalingCluster:
    """A head node and an autoscaler that adds worker nodes on this machine, as Ray's.

    ::

        cluster = AutoscalingCluster(
            head_resources={"CPU": 2},
            worker_node_types={"cpu_node": {"resources": {"CPU": 4}, "node_config": {},
                                            "min_workers": 0, "max_workers": 2}},
            idle_timeout_minutes=0.1)
        cluster.start()
        ember.init("auto")        # tasks that need 4 CPUs make cpu_node nodes appear
        ...
        ember.shutdown()
        cluster.shutdown()

    ``config_kwargs`` are top-level fields of the cluster config
    (``idle_timeout_minutes``, ``upscaling_speed``, ``max_workers``, ...); the
    config is validated here, so a mistake raises ValueError before anything
    starts. The worker nodes come from the ``local`` provider (Ray's fake
    multi-node provider): real raylets that join the head over TCP. The global
    ``max_workers`` defaults to the sum of the types' maxima, so that each
    type's own limit is the one that binds.
    """

    HEAD_NODE_TYPE = "ray.head.default"

    def __init__(self, head_resources: dict, worker_node_types: dict,
                 autoscaler_v2: bool = False, **config_kwargs):
        node_types = {name: dict(spec) for name, spec in worker_node_types.items()}
        node_types[self.HEAD_NODE_TYPE] = {"resources": dict(head_resources),
                                           "node_config": {}, "max_workers": 0}
        raw = {"cluster_name": "autoscaling-cluster",
               "max_workers": sum(int(spec.get("max_workers", 0))
                                  for spec in worker_node_types.values()),
               "upscaling_speed": 1.0, "idle_timeout_minutes": 1.0,
               "provider": {"type": "local"}, "head_node_type": self.HEAD_NODE_TYPE,
               "available_node_types": node_types}
        raw.update(config_kwargs)
        self.config = validate_config(raw)
        self._processes: node_mod.NodeProcesses | None = None

    @property
    def address(self) -> str:
        if self._processes is None:
            raise RuntimeError("The cluster is not started; call start() first.")
        return self._processes.gcs_address

    def start(self, _system_config=None, override_env=None) -> None:
        """Start the head and the autoscaler; ``ember.init("auto")`` then connects."""
        if self._processes is not None:
            raise RuntimeError("The cluster is already started.")
        if _system_config:
            logger.info("AutoscalingCluster.start(): ignoring Ray's _system_config %s",
                        sorted(_system_config))
        # As Ray's: a head without CPU or GPU in head_resources has none of them.
        head = self.config.node_types[self.HEAD_NODE_TYPE].resources
        self._processes = start_with_autoscaler(
            self.config, detached=False,
            head_args={"num_cpus": head.get("CPU", 0), "num_gpus": head.get("GPU", 0)})
        node_mod.write_current_cluster(self._processes.gcs_address,
                                       self._processes.session_dir)

    def shutdown(self) -> None:
        """Disconnect this process's driver from the cluster, then stop every node."""
        if self._processes is None:
            return
        core = context.core
        if worker.is_initialized() and core.gcs_address == self._processes.gcs_address:
            worker.shutdown()
        self._processes.stop(timeout=30)
        if node_mod.read_current_cluster() == self._processes.gcs_address:
            node_mod.clear_current_cluster()
        self._processes = None
