"""What backs ember's public calls in a driver: init, shutdown, get, put, wait, ...

These functions validate their arguments (with Ray's exception types and
messages that name what was wrong), then hand the work to this process's
:class:`~ember.core_worker.core_worker.CoreWorker`.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import time

from . import dashboard
from . import node as node_mod
from . import options as opts
from . import ports as ports_mod
from . import process_setup
from . import runtime_env as runtime_env_mod
from ._version import __version__
from .job_config import JobConfig
from .core_worker import context
from .rpc import auth
from .exceptions import GetTimeoutError
from .generator import ObjectRefGenerator
from .object_ref import ObjectRef
from .ports import WorkerPorts
from .actor import ActorHandle, actor_id_of, handle_from_info
from .config import config
from .core_worker.core_worker import CoreWorker
from .protocol import gcs as gcs_msg

logger = logging.getLogger("ember")

_local_node: node_mod.NodeProcesses | None = None
#: Set by a job's supervisor (ember.dashboard.job_supervisor): the job's resolved runtime_env.
ENV_JOB_RUNTIME_ENV = "EMBER_JOB_RUNTIME_ENV"


class EmberContext(dict):
    """What ``init()`` returns: address info, usable as a context manager."""

    def __init__(self, address_info: dict):
        super().__init__(address_info)
        self.address_info = address_info
        self.dashboard_url = address_info.get("webui_url")
        self.python_version = ".".join(map(str, sys.version_info[:3]))
        self.ray_version = self.ember_version = __version__

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        shutdown()

    def disconnect(self):
        shutdown()



def is_initialized() -> bool:
    """Whether this process is part of a cluster: a driver after init(), or any task's
    or actor's worker (as in Ray)."""
    return context.core is not None


def init(address: str | None = None, *, num_cpus=None, num_gpus=None, resources=None,
         labels=None, object_store_memory=None, namespace=None, ignore_reinit_error=False,
         log_to_driver=True, logging_level=logging.INFO, logging_format=None,
         configure_logging=True, runtime_env=None, include_dashboard=None,
         local_mode=False, _memory=None, _temp_dir=None, _node_ip_address=None,
         **kwargs) -> EmberContext:
    """Start a local cluster, or connect to a running one, and make this process its driver.

    ``address``: None starts a new local cluster (unless ``EMBER_ADDRESS`` is set);
    "auto" connects to the cluster started by ``ember start`` on this machine;
    "host:port" connects to the GCS at that address.

    ``include_dashboard``: a new local cluster serves the dashboard (the Jobs
    API, ``ember.dashboard``; its process starts at the first connection)
    unless False; None serves it if aiohttp is installed. ``dashboard_host``
    and ``dashboard_port`` (127.0.0.1, 8265 or the next free port) say where;
    the returned context's ``dashboard_url`` says where it went.
    """
    global _local_node
    if is_initialized():
        if ignore_reinit_error:
            logger.info("Calling ember.init() again after it has already been called.")
            return EmberContext(_address_info(context.core))
        raise RuntimeError(
            "Maybe you called ember.init twice by accident? This error can be suppressed "
            "by passing in 'ignore_reinit_error=True' or by calling 'ember.shutdown()' "
            "prior to 'ember.init()'.")
    unknown = set(kwargs) - {"dashboard_host", "dashboard_port", "job_config",
                             "_system_config", "_enable_object_reconstruction",
                             "_plasma_directory", "_redis_password", "storage",
                             "_metrics_export_port", "enable_resource_isolation",
                             *_PORT_ARGS}
    if unknown:
        raise TypeError(f"init() got unexpected keyword argument(s): {sorted(unknown)}")
    job_config = kwargs.get("job_config")
    if job_config is not None:
        if not isinstance(job_config, JobConfig):
            raise TypeError("init(): job_config must be an ember.job_config.JobConfig, got "
                            f"{type(job_config).__name__}.")
        runtime_env = runtime_env if runtime_env is not None else job_config.runtime_env
        namespace = namespace if namespace is not None else job_config.ray_namespace
    if local_mode:
        logger.warning("local_mode is deprecated in Ray and not supported by ember; "
                       "starting a normal local cluster instead.")
    if namespace is not None and not isinstance(namespace, str):
        raise TypeError(f"namespace must be a str, got {type(namespace).__name__}.")
    if runtime_env is None and os.environ.get(ENV_JOB_RUNTIME_ENV):
        # A driver started by the Jobs API runs in its job's env (packages already in the GCS).
        runtime_env = json.loads(os.environ[ENV_JOB_RUNTIME_ENV])
    opts.validate({"runtime_env": runtime_env},
                  {"runtime_env": opts.COMMON_OPTIONS["runtime_env"]}, "ember.init()")
    if configure_logging:
        _configure_logging(logging_level, logging_format)
    if _temp_dir:
        config.temp_dir = _temp_dir

    if address is None:
        address = os.environ.get("EMBER_ADDRESS") or None
    if address in ("local",):
        address = None
    if address is not None:
        if num_cpus is not None or num_gpus is not None or resources or object_store_memory:
            raise ValueError(
                "When connecting to an existing cluster, num_cpus, num_gpus, resources and "
                "object_store_memory must not be provided: they are set where each node "
                "is started (`ember start --num-cpus ...`).")
        given_ports = sorted(k for k in _PORT_ARGS
                             if k != "dashboard_port" and kwargs.get(k) is not None)
        if given_ports:
            raise ValueError(
                f"When connecting to an existing cluster, {', '.join(given_ports)} must not "
                "be provided: each node's ports are set where it is started "
                "(`ember start --node-manager-port ...`).")
        gcs_address = _resolve_address(address)
        token = node_mod.find_token(gcs_address)
        if token:
            auth.set_token(token)
        node_info = _find_local_node(gcs_address)
        session_dir, node_id = node_info.session_dir, node_info.node_id
        raylet_socket, node_ip = node_info.raylet.unix, node_info.ip
        # Its node's worker port range, as the GCS has it: a firewall lets only it through.
        worker_ports = WorkerPorts.from_spec(node_info.worker_ports)
    else:
        node_ip = _node_ip_address or "127.0.0.1"
        node_ports = ports_mod.node_ports(
            names=ports_mod.INIT, metrics_export_port=kwargs.get("_metrics_export_port"),
            dashboard_port=kwargs.get("dashboard_port"),
            **{k: kwargs.get(k) for k in _PORT_ARGS if k != "dashboard_port"})
        _local_node = node_mod.start_head(
            num_cpus=num_cpus, num_gpus=num_gpus, resources=resources, memory=_memory,
            object_store_memory=object_store_memory, labels=labels, node_ip=node_ip,
            include_dashboard=include_dashboard,
            dashboard_host=kwargs.get("dashboard_host") or "127.0.0.1", ports=node_ports)
        session_dir, node_id = _local_node.session_dir, _local_node.node_id
        raylet_socket, gcs_address = _local_node.raylet_socket, _local_node.gcs_address
        worker_ports = node_ports.workers

    process_setup.raise_open_file_limit()  # a connection per actor called
    process_setup.tune_gc()
    core = CoreWorker(is_driver=True, node_id=node_id, node_ip=node_ip,
                      raylet_socket=raylet_socket, gcs_address=gcs_address,
                      session_dir=session_dir, make_ref=ObjectRef, ports=worker_ports)
    try:
        core.connect({"namespace": namespace or _anonymous_namespace(),
                      "code_search_path": _code_search_path(job_config),
                      "log_to_driver": log_to_driver})
        # The job's env: every task and actor of the job runs in it (merged with
        # their own). Packaged now, so a bad working_dir fails init().
        core.runtime_env = runtime_env_mod.resolve(core, runtime_env, "", "ember.init()")
    except BaseException:
        core.shutdown()
        if _local_node is not None:
            _local_node.stop()
            _local_node = None
        raise
    atexit.register(shutdown)
    return EmberContext(_address_info(core))


#: ``init()``'s port arguments for a new local cluster: Ray's (``dashboard_port``,
#: ``_metrics_export_port``), and the node options of ``ember start`` under the names
#: of Ray's ``cluster_utils.Cluster.add_node`` (see ember.ports).
_PORT_ARGS = ("node_manager_port", "object_manager_port", "min_worker_port",
              "max_worker_port", "worker_port_list", "dashboard_port")


def dashboard_url(session_dir: str) -> str | None:
    """The head's dashboard as Ray reports it ("ip:port"), when this machine runs the head."""
    if _local_node is not None:
        return _local_node.dashboard_url
    url = dashboard.read_url(session_dir)
    return url.partition("://")[2] if url else None


def _configure_logging(level, fmt) -> None:
    ember_logger = logging.getLogger("ember")
    ember_logger.setLevel(level)
    if not ember_logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(fmt or "%(asctime)s %(levelname)s %(message)s"))
        ember_logger.addHandler(handler)
        ember_logger.propagate = False


def _anonymous_namespace() -> str:
    return "anon-" + os.urandom(8).hex()


def _code_search_path(job_config=None) -> list[str]:
    paths = list(job_config.code_search_path) if job_config is not None else []
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    if main_file:
        paths.append(os.path.dirname(os.path.abspath(main_file)))
    paths.append(os.getcwd())
    return list(dict.fromkeys(paths))


def _resolve_address(address: str) -> str:
    if address == "auto":
        found = node_mod.read_current_cluster()
        if found is None:
            raise ConnectionError(
                "Could not find any running ember cluster on this machine. Start one with "
                "`ember start --head`, or call ember.init() without an address to start a "
                "local one.")
        return found
    if address.startswith(("ray://", "ember://")):
        return _resolve_client_address(address)
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"address {address!r} is not 'auto' or 'host:port'.")
    return address


def _resolve_client_address(address: str) -> str:
    """The GCS address of the cluster a ``ray://host:port`` (Ray Client) address names.

    ember has no client server: a driver always connects directly, and needs a
    node on its machine. So ``ray://`` works for the cluster that ``ember start
    --head`` started on this machine, named by its ``--ray-client-server-port``
    (10001 by default, as Ray's).
    """
    host, _, port = address.partition("://")[2].rpartition(":")
    if not port.isdigit():
        raise ValueError(f"address {address!r} is not 'ray://host:port'.")
    recorded = node_mod.read_current_cluster()
    if not node_mod.is_local_host(host):
        raise ConnectionError(
            f"Cannot connect to {address}: ember has no Ray Client server, so a driver must "
            "run on a machine of the cluster. Run this program on a node of it (with "
            "address='auto'), or submit it as a job (`ember job submit`).")
    if recorded is None or node_mod.read_current_client_port() != int(port):
        raise ConnectionError(
            f"No cluster on this machine is reachable as {address}: start one with "
            f"`ember start --head --ray-client-server-port {port}`.")
    return recorded


def _find_local_node(gcs_address: str):
    """The node of this cluster whose raylet socket exists on this machine.

    When several do (a ``cluster_utils.Cluster`` runs many raylets on one
    machine), the head node is preferred, as in Ray: a driver's objects and
    tasks then start where the GCS lives.
    """
    reply = node_mod.query_nodes(gcs_address, timeout=10)
    local = [info for info in reply.nodes
             if info.alive and info.raylet.unix and os.path.exists(info.raylet.unix)]
    if local:
        return min(local, key=lambda info: (not info.is_head, info.start_time))
    raise ConnectionError(
        f"The cluster at {gcs_address} has no node on this machine, so this process cannot "
        "be its driver. Run `ember start --address "
        f"{gcs_address}` here first to add this machine as a node.")


def _address_info(core) -> dict:
    return {"node_ip_address": core.node_ip, "gcs_address": core.gcs_address,
            "address": core.gcs_address, "session_dir": core.session_dir,
            "node_id": core.node_id.hex(), "raylet_socket_name": core.raylet_socket,
            "webui_url": dashboard_url(core.session_dir)}


def shutdown(_exiting_interpreter: bool = False) -> None:
    """Disconnect this driver; stop the local cluster if this driver started it."""
    global _local_node
    core = context.core
    if core is not None and core.is_driver:
        core.shutdown()
    if _local_node is not None:
        node, _local_node = _local_node, None
        node.stop()
    atexit.unregister(shutdown)


# --- objects ---------------------------------------------------------------------


def put(value, *, _owner=None) -> ObjectRef:
    core = context.require_core("ember.put()", auto_init=True)
    if isinstance(value, ObjectRef):
        raise TypeError(
            "Calling 'put' on an ObjectRef is not allowed. If you really want to do this, "
            "you can wrap the ObjectRef in a list and call 'put' on it.")
    return core.put(value)


def get(object_refs, *, timeout: float | None = None):
    core = context.require_core("ember.get()", auto_init=True)
    single = isinstance(object_refs, ObjectRef)
    if single:
        refs = [object_refs]
    elif isinstance(object_refs, list):
        refs = object_refs
        for ref in refs:
            if not isinstance(ref, ObjectRef):
                raise TypeError(
                    f"Attempting to call `get` on the value {ref!r}, which is not an "
                    "ObjectRef. ember.get() takes an ObjectRef or a list of ObjectRefs.")
    elif isinstance(object_refs, ObjectRefGenerator):
        return object_refs  # as Ray: a generator is its own value; iterate it for refs
    else:
        raise ValueError(
            f"Invalid type of object refs, {type(object_refs).__name__}, is given. "
            "'object_refs' must either be an ObjectRef or a list of ObjectRefs.")
    _check_timeout(timeout, "get")
    loaded = core.get_values(refs, timeout)
    if loaded is None:
        raise GetTimeoutError(
            f"ember.get() timed out after {timeout} s: "
            f"{sum(not core.store.contains(r.object_id) for r in refs)} of {len(refs)} "
            "object(s) are not ready.")
    return loaded[0] if single else loaded


def wait(object_refs, *, num_returns: int = 1, timeout: float | None = None,
         fetch_local: bool = True):
    core = context.require_core("ember.wait()", auto_init=True)
    if isinstance(object_refs, ObjectRef) or not isinstance(object_refs, list):
        raise TypeError(f"wait() expected a list of ObjectRef, got {type(object_refs).__name__}.")
    for ref in object_refs:
        if not isinstance(ref, (ObjectRef, ObjectRefGenerator)):
            raise TypeError(
                f"wait() expected a list of ObjectRef or ObjectRefGenerator, got list "
                f"containing {type(ref).__name__}.")
    if not object_refs:
        return [], []  # as Ray: nothing to wait for, whatever num_returns says
    if not isinstance(num_returns, int) or isinstance(num_returns, bool) or num_returns <= 0:
        raise ValueError(f"Invalid number of objects to return {num_returns!r}: "
                         "num_returns must be a positive integer.")
    if num_returns > len(object_refs):
        raise ValueError("num_returns cannot be greater than the number of objects "
                         f"provided to ember.wait ({num_returns} > {len(object_refs)}).")
    if len({r.object_id if isinstance(r, ObjectRef) else id(r) for r in object_refs}) != len(
            object_refs):
        raise ValueError("Wait requires a list of unique object refs.")
    _check_timeout(timeout, "wait")
    if any(isinstance(r, ObjectRefGenerator) for r in object_refs):
        return _wait_with_generators(core, object_refs, num_returns, timeout, fetch_local)
    return core.wait_objects(object_refs, num_returns, timeout, fetch_local)


#: How often wait() looks at generators again while it waits on them.
_GENERATOR_POLL_S = 0.01


def _wait_with_generators(core, items: list, num_returns: int, timeout, fetch_local: bool):
    """wait() over refs and generators: a generator is ready when its next ref is (or
    when it has ended, so that next() does not block), as in Ray."""
    refs = [r for r in items if isinstance(r, ObjectRef)]
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        ready_ids = {r.object_id for r in refs if core.store.contains(r.object_id)}
        ready = [r for r in items if (r.object_id in ready_ids if isinstance(r, ObjectRef)
                                      else r.next_ready())][:num_returns]
        left = None if deadline is None else deadline - time.monotonic()
        if len(ready) == num_returns or (left is not None and left <= 0):
            chosen = {id(r) for r in ready}
            return ready, [r for r in items if id(r) not in chosen]
        step = _GENERATOR_POLL_S if left is None else min(_GENERATOR_POLL_S, left)
        unready = [r for r in refs if r.object_id not in ready_ids]
        if unready:  # sleeps until one is ready or ``step`` passed; fetches borrowed ones
            core.wait_objects(unready, 1, step, fetch_local)
        else:
            time.sleep(step)


def _check_timeout(timeout, what: str) -> None:
    if timeout is None:
        return
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool):
        raise TypeError(f"{what}(): 'timeout' must be a number or None, got "
                        f"{type(timeout).__name__}.")
    if timeout < 0:
        raise ValueError(f"{what}(): 'timeout' must be a non-negative number, got {timeout}.")


def cancel(object_ref, *, force: bool = False, recursive: bool = True) -> None:
    """Cancel the task or actor call that makes ``object_ref``; ``get`` of it then
    raises TaskCancelledError (unless it had finished: its value stays).

    A task not started never runs; a running one is interrupted (force=True:
    its worker is killed). An actor call not started never runs; a running
    async one is cancelled as an asyncio task; a running plain one is not
    interrupted but sees ``get_runtime_context().is_canceled()``. ``recursive``
    also cancels what the task submitted. Cancelled tasks are not retried.
    """
    core = context.require_core("ember.cancel()")
    if not isinstance(object_ref, ObjectRef):
        raise TypeError(
            "ember.cancel() only supports ObjectRefs returned by a task, got "
            f"{type(object_ref).__name__}.")
    core.cancel(object_ref, force, recursive)


# --- cluster information ------------------------------------------------------------


def _all_nodes():
    core = context.require_core("this call")
    return core.io.run(core.gcs.call(gcs_msg.GetAllNodes()), timeout=30)


def nodes() -> list[dict]:
    reply = _all_nodes()
    out = []
    for info in reply.nodes:
        out.append({
            "NodeID": info.node_id.hex(),
            "Alive": info.alive,
            "NodeManagerAddress": info.ip,
            "NodeManagerHostname": info.hostname,
            "NodeManagerPort": info.raylet.port,
            # ember's object manager is served on the node manager's port.
            "ObjectManagerPort": info.raylet.port,
            "MetricsExportPort": info.metrics_export_port,
            # ember's, not Ray's: where this node's workers and drivers listen.
            "WorkerPorts": info.worker_ports,
            "ObjectStoreSocketName": info.raylet.unix,
            "RayletSocketName": info.raylet.unix,
            "NodeName": info.ip,
            "Resources": dict(info.resources_total) if info.alive else {},
            "Labels": dict(info.labels),
            "alive": info.alive,
            "IsHead": info.is_head,
            "DeathReason": info.death_reason,
            "start_time": info.start_time,
            "end_time": info.end_time,
        })
    return out


def cluster_resources() -> dict[str, float]:
    totals: dict[str, float] = {}
    for info in _all_nodes().nodes:
        if info.alive:
            for k, v in info.resources_total.items():
                totals[k] = totals.get(k, 0.0) + v
    return totals


def available_resources() -> dict[str, float]:
    reply = _all_nodes()
    totals: dict[str, float] = {}
    for info in reply.nodes:
        if info.alive:
            for k, v in reply.available.get(info.node_id, {}).items():
                if v > 0:
                    totals[k] = totals.get(k, 0.0) + v
    return totals


def get_gpu_ids() -> list[int]:
    core = context.require_core("ember.get_gpu_ids()")
    ids = getattr(core.task_context, "gpu_ids", None)
    return list(ids or [])


# --- actors -----------------------------------------------------------------------


def kill(actor, *, no_restart: bool = True) -> None:
    """Kill an actor now, whatever it is doing. With no_restart=False it may restart."""
    core = context.require_core("ember.kill()")
    if not isinstance(actor, ActorHandle):
        raise TypeError(f"ember.kill() only supports actors; for tasks use ember.cancel(). "
                        f"Got {type(actor).__name__}.")
    core.kill_actor(actor_id_of(actor), no_restart=no_restart,
                    reason="ember.kill() was called on it")


def get_actor(name: str, namespace: str | None = None):
    """A handle to the live actor named ``name`` in ``namespace`` (default: this job's)."""
    core = context.require_core("ember.get_actor()")
    if not isinstance(name, str) or not name:
        raise ValueError(f"get_actor() needs a non-empty actor name, got {name!r}.")
    if namespace is not None and not isinstance(namespace, str):
        raise TypeError(f"namespace must be a str, got {type(namespace).__name__}.")
    namespace = core.namespace if namespace is None else namespace
    reply = core.io.run(core.gcs.call(gcs_msg.GetNamedActor(name, namespace)), timeout=30)
    if reply.info is None:
        raise ValueError(
            f"Failed to look up actor with name {name!r} in namespace {namespace!r}. It was "
            "never created there, it died, or it lives in another namespace (pass "
            "namespace=...).")
    return handle_from_info(reply.info)


def list_named_actors(all_namespaces: bool = False):
    core = context.require_core("list_named_actors()")
    reply = core.io.run(core.gcs.call(gcs_msg.ListNamedActors(core.namespace, all_namespaces)),
                        timeout=30)
    if all_namespaces:
        return [{"name": name, "namespace": ns} for ns, name in reply.actors]
    return [name for _, name in reply.actors]


context.set_auto_init(init)
