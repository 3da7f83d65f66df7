"""Starting and stopping the processes of a node: GCS (head only) and raylet.

``ember.init()`` with no address starts a head node whose processes die with
the driver (Linux parent-death signal), so nothing outlives a driver killed
with SIGKILL. ``ember start`` starts the same processes detached, in their own
session, and records the address in ``<temp_dir>/ember_current_cluster`` for
``address="auto"`` and ``ember stop``.

Every process of a node reads the cluster token from ``<session>/auth_token``
(mode 0600; see ``ember.rpc.auth``): the head makes it, a joining node is
given it. A head started by ``init()`` listens on 127.0.0.1 only.

Why the GCS and the raylet start in parallel: each takes ~50 ms of Python
start-up. The GCS port is chosen up front so the raylet can be told it, and
the raylet retries its connection until the GCS listens. The head's
dashboard (``ember.dashboard``) has its port bound up front (8265, else the
next free one); ``ember start`` starts it in parallel, ``init()`` at the
first connection to it (``dashboard/on_demand.py``), so nothing waits for it.
"""
from __future__ import annotations

import asyncio
import dataclasses
import datetime
import functools
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import uvloop

from . import dashboard, port_check, rpc
from .config import config
from .dashboard.on_demand import DashboardOnDemand
from .object_store import spill
from .ports import NodePorts
from .protocol import gcs as gcs_msg
from .rpc import auth

CURRENT_CLUSTER_FILE = "ember_current_cluster"
#: In a head's session directory: the GCS address, so a driver can find the token.
GCS_ADDRESS_FILE = "gcs_address"


@dataclasses.dataclass
class NodeProcesses:
    session_dir: str
    gcs_address: str
    node_id: bytes
    raylet_socket: str
    node_ip: str
    processes: list[subprocess.Popen]
    #: Whether these processes made the session (a head, or a node in a session
    #: of its own): then stopping them ends the session and its spill files go.
    owns_session: bool = True

    #: The head's dashboard, e.g. "127.0.0.1:8265" (as Ray reports it), or None.
    dashboard_url: str | None = None
    #: A head started by init(): its dashboard, started at the first connection.
    dashboard: DashboardOnDemand | None = None

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the dashboard and the raylet first (it stops its workers), then the GCS.

        A raylet removes its spill files as it stops; one that had to be
        killed cannot, so the session's owner sweeps the spill directory last.
        """
        if self.dashboard is not None:
            self.dashboard.stop(timeout)
        for proc in self.processes:
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
                _wait(proc, timeout)
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if self.owns_session:
            remove_spill_files(self.session_dir)


def remove_spill_files(session_dir: str) -> None:
    """Remove a stopped session's spill files (``<session_dir>/spill``)."""
    spill.remove_all(os.path.join(session_dir, "spill"))


def _wait(proc: subprocess.Popen, timeout: float) -> None:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass


def new_session_dir() -> str:
    root = config.temp_dir
    os.makedirs(root, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S_%f")
    session = os.path.join(root, f"session_{stamp}_{os.getpid()}")
    os.makedirs(os.path.join(session, "logs"))
    # Only this user may even reach the node's Unix sockets; the token is checked too.
    os.makedirs(os.path.join(session, "sockets"), mode=0o700)
    if not config.update_session_latest:
        return session
    latest = os.path.join(root, "session_latest")
    tmp = latest + f".{os.getpid()}"
    try:
        os.symlink(session, tmp)
        os.replace(tmp, latest)
    except OSError:
        pass
    return session


def free_port(host: str = "") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def total_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def available_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def default_object_store_memory() -> int:
    """30% of RAM, as in Ray, capped by config.object_store_memory_cap."""
    return min(int(total_memory() * 0.3), config.object_store_memory_cap)


def detect_gpus() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None or visible.strip() in ("", "NoDevFiles"):
        return 0
    return len([d for d in visible.split(",") if d.strip()])


def node_resources(num_cpus=None, num_gpus=None, resources=None, memory=None,
                   object_store_memory=None, node_ip="127.0.0.1",
                   is_head=False) -> tuple[dict[str, float], int]:
    """The total resources a new node advertises, with Ray's defaults and names."""
    resources = dict(resources or {})
    for name in ("CPU", "GPU"):
        if name in resources:
            raise ValueError(
                f"Use the num_{name.lower()}s argument instead of {name!r} in 'resources'.")
    for name, value in resources.items():
        if not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"Resource {name!r} must be a non-negative number, got {value!r}.")
    for name, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus)):
        if value is not None and (not isinstance(value, (int, float)) or value < 0):
            raise ValueError(f"{name} must be a non-negative number, got {value!r}.")
    store = object_store_memory or default_object_store_memory()
    total = {
        "CPU": float(os.cpu_count() if num_cpus is None else num_cpus),
        "GPU": float(detect_gpus() if num_gpus is None else num_gpus),
        "memory": float(memory if memory is not None else int(available_memory() * 0.7)),
        "object_store_memory": float(store),
        f"node:{node_ip}": 1.0,
    }
    if is_head:
        total["node:__internal_head__"] = 1.0
    total.update({k: float(v) for k, v in resources.items()})
    return {k: v for k, v in total.items() if v > 0}, store


def _log_path(session_dir: str, name: str) -> str:
    return os.path.join(session_dir, "logs", name)


def _spawn(args: list[str], session_dir: str, name: str, detached: bool,
           niceness: int = 0, pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
    """Start ``python -m ARGS``; with ``niceness``, at that lower priority (via nice(1),
    which execs it: the pid and command line stay the daemon's)."""
    out = open(_log_path(session_dir, name + ".out"), "ab")
    nice = ["nice", "-n", str(niceness)] if niceness and shutil.which("nice") else []
    try:
        return subprocess.Popen(
            nice + [sys.executable, "-m", *args, "--log-file",
                    _log_path(session_dir, name + ".log")]
            + ([] if detached else ["--die-with-parent"]),
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=detached, close_fds=True, pass_fds=pass_fds,
            env=auth.child_env(session_dir))
    finally:
        out.close()


def start_gcs(session_dir: str, port: int, detached: bool, host: str = "127.0.0.1",
              storage: str | None = None):
    port = port or free_port()
    proc = _spawn(["ember.gcs", "--host", host, "--port", str(port)]
                  + (["--storage", storage] if storage else []), session_dir, "gcs", detached)
    return proc, port


def start_raylet(*, session_dir: str, gcs_address: str, node_ip: str, resources: dict,
                 labels: dict | None, object_store_memory: int, is_head: bool,
                 detached: bool, ports: NodePorts | None = None,
                 dashboard_port: int = 0, node_id: bytes | None = None):
    """Start a raylet on ``ports.node_manager`` whose workers listen on ``ports.workers``;
    ``dashboard_port`` (a head's) is only reported to the GCS."""
    ports = ports or NodePorts()
    node_id = node_id or os.urandom(28)
    metrics = ([] if ports.metrics_export is None
               else ["--metrics-export-port", str(ports.metrics_export)])
    proc = _spawn(["ember.raylet", "--node-id", node_id.hex(), "--gcs-address", gcs_address,
                   "--session-dir", session_dir, "--node-ip", node_ip,
                   "--port", str(ports.node_manager), "--worker-ports", ports.workers.spec,
                   "--worker-ports-source", ports.workers.source,
                   "--dashboard-port", str(dashboard_port),
                   "--resources", json.dumps(resources), "--labels", json.dumps(labels or {}),
                   "--object-store-memory", str(int(object_store_memory))]
                  + metrics + (["--head"] if is_head else []),
                  session_dir, f"raylet-{node_id.hex()[:12]}", detached)
    socket_path = os.path.join(session_dir, "sockets", f"raylet-{node_id.hex()[:12]}")
    return proc, node_id, socket_path


def ensure_ports_free(ports: NodePorts, node_ip: str, gcs_host: str = "") -> None:
    """A :class:`~ember.port_check.PortInUseError` if a port ``ports`` fixes is taken
    (the dashboard's is checked as it is bound)."""
    port_check.ensure_free(gcs_host or node_ip, ports.gcs, ports.names["gcs"])
    port_check.ensure_free(node_ip, ports.node_manager, ports.names["node_manager"])
    port_check.ensure_free(node_ip, ports.metrics_export or 0, ports.names["metrics_export"])


def dashboard_available() -> bool:
    """Whether the dashboard can run here: it needs aiohttp (``pip install ember[dashboard]``)."""
    try:
        return importlib.util.find_spec("aiohttp") is not None
    except ValueError:  # sys.modules["aiohttp"] is None: imports of it are blocked
        return False


def listen_for_dashboard(host: str, port: int | None,
                         option: str = "--dashboard-port") -> socket.socket:
    """A socket listening on ``port`` at ``host``; with ``port`` None, on 8265 or else
    the next free port (as Ray does); 0 means any free port. A port the user gave
    that is taken is a :class:`~ember.port_check.PortInUseError` naming ``option``.

    Bound by the head and handed to the dashboard process (``--fd``): the port
    is taken from the moment it is chosen, so two heads starting at once
    cannot both pick it while their dashboards import aiohttp, and a request
    that comes before the dashboard is ready waits in the backlog instead of
    being refused. SO_REUSEADDR as aiohttp sets it: a port whose last
    connections are in TIME_WAIT is free.
    """
    bind_host = "" if host in ("0.0.0.0", "::") else host
    if port is not None:
        port_check.ensure_free(host, port, option)
    else:
        port = dashboard.DEFAULT_PORT
    for candidate in ([0] if port == 0 else range(port, min(port + 100, 65536))):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((bind_host, candidate))
            sock.listen(128)
        except OSError:
            sock.close()
            continue
        return sock
    raise OSError(f"No free port for the dashboard on {host} from {port} to {port + 99}.")


def spawn_dashboard(sock: socket.socket, *, session_dir: str, gcs_address: str,
                    node_ip: str, host: str, detached: bool) -> subprocess.Popen:
    """Start the dashboard process, serving on ``sock`` (:func:`listen_for_dashboard`).

    Why at nice 10: its start-up (Python, ember, aiohttp: about half a CPU
    second) would otherwise compete with the cluster's own processes on a
    small machine; the dashboard is an observer, so it yields the CPU to them.
    """
    return _spawn(["ember.dashboard", "--gcs-address", gcs_address, "--session-dir",
                   session_dir, "--node-ip", node_ip, "--host", host,
                   "--port", str(sock.getsockname()[1]), "--fd", str(sock.fileno())],
                  session_dir, "dashboard", detached, niceness=10, pass_fds=(sock.fileno(),))


def _dashboard_url(sock: socket.socket, host: str, node_ip: str, session_dir: str) -> str:
    """The dashboard's URL as Ray reports it ("ip:port"); with its scheme, it goes to
    ``<session_dir>/dashboard_url`` for ``ember dashboard`` and job clients."""
    url = f"{node_ip if host in ('0.0.0.0', '::') else host}:{sock.getsockname()[1]}"
    with open(os.path.join(session_dir, dashboard.URL_FILE), "w") as f:
        f.write(f"http://{url}\n")
    return url


def start_head(*, num_cpus=None, num_gpus=None, resources=None, memory=None,
               object_store_memory=None, labels=None, port: int = 0,
               node_ip: str = "127.0.0.1", detached: bool = False,
               storage: str | None = None, gcs_host: str | None = None,
               token: str | None = None, include_dashboard: bool | None = False,
               dashboard_host: str = "127.0.0.1",
               dashboard_port: int | None = None,
               ports: NodePorts | None = None) -> NodeProcesses:
    """Start a GCS and a raylet; they listen on ``node_ip`` (the GCS on ``gcs_host``).

    ``ports`` (checked by :func:`ember.ports.node_ports`) fixes the ports;
    ``port`` and ``dashboard_port`` are the GCS's and the dashboard's when
    ``ports`` is not given. A fixed port that is taken is a ValueError naming
    its option, before any process starts.

    The cluster token is ``token``, else ``EMBER_AUTH_TOKEN``, else a new
    random one; it is stored in the session directory and this process uses it.

    ``include_dashboard``: True starts the dashboard (an error without
    aiohttp), None starts it if aiohttp is installed, False does not.
    """
    total, store = node_resources(num_cpus, num_gpus, resources, memory,
                                  object_store_memory, node_ip, is_head=True)
    if include_dashboard and not dashboard_available():  # before any process starts
        raise ValueError("include_dashboard=True needs aiohttp: "
                         "pip install 'ember[dashboard]'.")
    if include_dashboard is None:
        include_dashboard = dashboard_available()
        if not include_dashboard:
            logging.getLogger("ember").info(
                "Not starting the dashboard: it needs aiohttp "
                "(pip install 'ember[dashboard]').")
    dashboard_host = dashboard_host or "127.0.0.1"
    ports = ports or NodePorts(gcs=port, dashboard=dashboard_port)
    # Checked first: a port that cannot be had fails the start before any process runs.
    ensure_ports_free(ports, node_ip, gcs_host or node_ip)
    dashboard_socket = listen_for_dashboard(
        dashboard_host, ports.dashboard, ports.names["dashboard"]
    ) if include_dashboard else None
    session_dir = new_session_dir()
    token = token or auth.new_token()
    auth.write_token_file(session_dir, token)
    auth.set_token(token)
    gcs_proc, gcs_port = start_gcs(session_dir, ports.gcs, detached,
                                   host=gcs_host or node_ip, storage=storage)
    gcs_address = f"{node_ip}:{gcs_port}"
    with open(os.path.join(session_dir, GCS_ADDRESS_FILE), "w") as f:
        f.write(gcs_address)
    raylet_proc, node_id, socket_path = start_raylet(
        session_dir=session_dir, gcs_address=gcs_address, node_ip=node_ip, resources=total,
        labels=labels, object_store_memory=store, is_head=True, detached=detached,
        ports=ports, dashboard_port=dashboard_socket.getsockname()[1] if dashboard_socket else 0)
    processes = [raylet_proc, gcs_proc]
    dashboard_url, on_demand = None, None
    if dashboard_socket is not None:
        dashboard_url = _dashboard_url(dashboard_socket, dashboard_host, node_ip, session_dir)
        spawn = functools.partial(spawn_dashboard, session_dir=session_dir,
                                  gcs_address=gcs_address, node_ip=node_ip,
                                  host=dashboard_host, detached=detached)
        if detached:  # `ember start` exits: nothing would be left to watch the socket
            with dashboard_socket:
                processes.insert(0, spawn(dashboard_socket))
        else:
            on_demand = DashboardOnDemand(dashboard_socket, spawn)
    # Raylet before the GCS in the list: it is stopped first, so it can stop its workers.
    return NodeProcesses(session_dir, gcs_address, node_id, socket_path, node_ip,
                         processes, dashboard_url=dashboard_url, dashboard=on_demand)


def start_monitor(session_dir: str, gcs_address: str, config_path: str,
                  detached: bool) -> subprocess.Popen:
    """Start the autoscaler (ember.autoscaler.monitor) for the cluster at ``gcs_address``.

    The nodes it launches with the ``local`` provider die with it.
    """
    return _spawn(["ember.autoscaler.monitor", "--gcs-address", gcs_address,
                   "--config", os.path.abspath(config_path), "--session-dir", session_dir],
                  session_dir, "monitor", detached)


def write_current_cluster(gcs_address: str, session_dir: str = "",
                          client_port: int | None = None) -> None:
    """Record the cluster ``ember start`` made: its address, its session directory, and
    the port that ``ray://`` addresses name it by (Ray's client server port)."""
    os.makedirs(config.temp_dir, exist_ok=True)
    with open(os.path.join(config.temp_dir, CURRENT_CLUSTER_FILE), "w") as f:
        f.write(f"{gcs_address}\n{session_dir}\n{client_port or ''}\n")


def _current_cluster_record() -> list[str]:
    try:
        with open(os.path.join(config.temp_dir, CURRENT_CLUSTER_FILE)) as f:
            return [line.strip() for line in f.read().splitlines()]
    except FileNotFoundError:
        return []


def read_current_cluster() -> str | None:
    record = _current_cluster_record()
    return (record[0] or None) if record else None


def read_current_session_dir() -> str | None:
    """The session directory of the cluster ``ember start`` recorded, if any."""
    record = _current_cluster_record()
    return (record[1] or None) if len(record) > 1 else None


def read_current_client_port() -> int | None:
    """The ``ray://`` port of the cluster ``ember start --head`` recorded, if any."""
    record = _current_cluster_record()
    return int(record[2]) if len(record) > 2 and record[2].isdigit() else None


def find_token(gcs_address: str) -> str | None:
    """The token for the cluster at ``gcs_address``, for a driver or a joining node.

    ``EMBER_AUTH_TOKEN`` if set; else, when the head of that cluster runs on
    this machine under this temp dir, the token in its session directory
    (the one ``ember start`` recorded, or any whose GCS has that address).
    """
    from_env = os.environ.get(auth.ENV_TOKEN, "").strip()
    if from_env:
        return from_env
    record = _current_cluster_record()
    sessions = [record[1]] if len(record) > 1 and record[0] == gcs_address and record[1] else []
    try:
        with os.scandir(config.temp_dir) as entries:
            found = [e.path for e in entries if e.name.startswith("session_2")]
    except OSError:
        found = []
    sessions += sorted(found, reverse=True)  # newest first: the name starts with the time
    for session in sessions:
        try:
            with open(os.path.join(session, GCS_ADDRESS_FILE)) as f:
                if f.read().strip() != gcs_address:
                    continue
        except OSError:
            continue
        path = auth.token_path(session)
        if os.path.exists(path):
            return auth.read_token_file(path)
    return None


def clear_current_cluster() -> None:
    try:
        os.unlink(os.path.join(config.temp_dir, CURRENT_CLUSTER_FILE))
    except FileNotFoundError:
        pass


def wait_for_socket(path: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def start_worker_node(*, gcs_address: str, num_cpus=None, num_gpus=None, resources=None,
                      memory=None, object_store_memory=None, labels=None,
                      node_ip: str = "127.0.0.1", detached: bool = True,
                      session_dir: str | None = None, token: str | None = None,
                      ports: NodePorts | None = None) -> NodeProcesses:
    """Start a raylet that joins the cluster whose GCS is at ``gcs_address``.

    With ``session_dir`` (a node on the head's machine, as in
    ``cluster_utils``) the token there is used; otherwise ``token``, or what
    :func:`find_token` finds, is stored in a new session directory.
    """
    total, store = node_resources(num_cpus, num_gpus, resources, memory,
                                  object_store_memory, node_ip, is_head=False)
    ports = ports or NodePorts()
    ensure_ports_free(ports, node_ip)
    owns_session = session_dir is None
    if session_dir is None:
        token = token or find_token(gcs_address)
        if not token:
            raise ValueError(
                f"Joining the cluster at {gcs_address} needs its token: pass --token TOKEN "
                f"or set {auth.ENV_TOKEN} (`ember get-auth-token` on the head prints it).")
        session_dir = new_session_dir()
        auth.write_token_file(session_dir, token)
        auth.set_token(token)
    proc, node_id, socket_path = start_raylet(
        session_dir=session_dir, gcs_address=gcs_address, node_ip=node_ip, resources=total,
        labels=labels, object_store_memory=store, is_head=False, detached=detached,
        ports=ports)
    return NodeProcesses(session_dir, gcs_address, node_id, socket_path, node_ip, [proc],
                         owns_session=owns_session)


def query_nodes(gcs_address: str, timeout: float = 10.0, until=None):
    """The GCS node table (a GetAllNodesReply), from a process that need not be a driver.

    With ``until``, poll (over one connection) until ``until(reply)`` is true or
    ``timeout`` seconds pass, and return the last reply. Raises ConnectionError
    when the GCS cannot be reached.
    """



    async def poll():
        deadline = time.monotonic() + timeout
        conn = await rpc.connect(gcs_address, name="gcs", timeout=timeout)
        try:
            while True:
                reply = await conn.call(gcs_msg.GetAllNodes(), timeout=timeout)
                if until is None or until(reply) or time.monotonic() > deadline:
                    return reply
                await asyncio.sleep(0.01)
        finally:
            conn.close()
    return uvloop.run(poll())


def wait_for_registration(gcs_address: str, node_id: bytes, timeout: float = 30.0,
                          processes=()) -> bool:
    """Block until the GCS lists ``node_id`` as alive; False at ``timeout``, or as soon as
    one of ``processes`` (the node's) exits.

    Raises AuthenticationError when the GCS refuses this process's token.
    """
    def registered(reply) -> bool:
        return any(n.node_id == node_id and n.alive for n in reply.nodes)

    def settled(reply) -> bool:
        return registered(reply) or any(p.poll() is not None for p in processes)
    try:
        return registered(query_nodes(gcs_address, timeout, until=settled))
    except auth.AuthenticationError:
        raise
    except ConnectionError:
        return False


def gcs_startup_error(session_dir: str) -> str:
    """What a GCS or raylet that failed to start said (Redis unreachable, a port taken),
    or ""."""
    said = []
    try:
        names = sorted(os.listdir(os.path.join(session_dir, "logs")))
    except FileNotFoundError:
        return ""
    for name in names:
        if name == "gcs.out" or (name.startswith("raylet-") and name.endswith(".out")):
            with open(_log_path(session_dir, name), errors="replace") as f:
                said += [line.strip() for line in f
                         if line.startswith(("ember GCS:", "ember raylet:"))]
    return ("\n" + "\n".join(said)) if said else ""


#: Command-line markers of ember's daemon processes, for `ember stop`.
PROCESS_MARKERS = ("ember.gcs", "ember.raylet", "ember.core_worker.worker_main",
                   "ember.core_worker.zygote", "ember.autoscaler.monitor", "ember.dashboard")


def find_ember_processes(temp_dir: str | None = None) -> list:
    """ember daemons on this machine; with ``temp_dir``, only those whose session is in it."""
    import psutil  # 22 ms: imported when used, not by `import ember`
    prefix = None if temp_dir is None else os.path.abspath(temp_dir) + os.sep
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if proc.pid == os.getpid() or not any(
                a == "-m" and i + 1 < len(cmdline) and cmdline[i + 1] in PROCESS_MARKERS
                for i, a in enumerate(cmdline)):
            continue
        if prefix is not None and not _in_session_under(proc, cmdline, prefix):
            continue
        found.append(proc)
    return found


def _in_session_under(proc, cmdline: list[str], prefix: str) -> bool:
    if any(arg.startswith(prefix) for arg in cmdline):
        return True  # gcs and raylet name their session dir or log file
    try:
        session = proc.environ().get("EMBER_SESSION_DIR", "")  # workers
    except Exception:  # noqa: BLE001 - exited, or not ours to read
        return False
    return session.startswith(prefix)


def stop_all_processes(force: bool = False, grace_period: float = 10.0,
                       everywhere: bool = False) -> int:
    """Stop the ember daemons of this temp dir's sessions (all of them if ``everywhere``).

    Raylets go first, so that they stop their own workers.
    """
    import psutil  # 22 ms: imported when used, not by `import ember`
    procs = find_ember_processes(None if everywhere else config.temp_dir)
    order = {m: i for i, m in enumerate(("ember.autoscaler.monitor", "ember.dashboard",
                                          "ember.raylet",
                                          "ember.core_worker.zygote",
                                          "ember.core_worker.worker_main", "ember.gcs"))}

    def rank(p):
        try:
            cmd = p.cmdline()
        except psutil.Error:
            return 9
        return min((order[m] for m in order if m in cmd), default=9)
    procs.sort(key=rank)
    sessions = {session for session in map(_session_dir_of, procs) if session}
    for proc in procs:
        try:
            proc.send_signal(signal.SIGKILL if force else signal.SIGTERM)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_period)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)
    for session in sessions:
        remove_spill_files(session)
    return len(procs)


def _session_dir_of(proc) -> str | None:
    """The session directory a raylet was started with (``--session-dir``), else None."""
    import psutil  # 22 ms: imported when used, not by `import ember`
    try:
        cmdline = proc.cmdline()
    except psutil.Error:
        return None
    if "ember.raylet" in cmdline and "--session-dir" in cmdline:
        index = cmdline.index("--session-dir") + 1
        return cmdline[index] if index < len(cmdline) else None
    return None


def default_node_ip() -> str:
    """This machine's address as other machines would reach it; loopback if none is found.

    The address of the interface that the default route leaves through: a
    hostname lookup often yields 127.0.1.1 or 127.0.0.1, which no other machine
    can reach. Read from the routing table, so nothing is sent anywhere.
    """
    import psutil  # not at module level: drivers import this module at start-up
    interface = _default_route_interface()
    if interface is not None:
        for addr in psutil.net_if_addrs().get(interface, ()):
            if addr.family == socket.AF_INET:
                return addr.address
    try:
        ip = socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"
    return "127.0.0.1" if ip.startswith("127.") else ip


def is_local_host(host: str) -> bool:
    """Whether ``host`` (a name or an IPv4 address) is this machine."""
    import psutil  # 22 ms: imported when used, not by `import ember`
    try:
        ip = socket.gethostbyname(host)
    except OSError:
        return False
    if ip.startswith("127."):
        return True
    return any(addr.address == ip for addrs in psutil.net_if_addrs().values()
               for addr in addrs if addr.family == socket.AF_INET)


def _default_route_interface(route_table: str = "/proc/net/route") -> str | None:
    """The interface of the IPv4 default route (Linux), or None."""
    try:
        with open(route_table) as f:
            rows = [line.split() for line in f.readlines()[1:]]
    except OSError:
        return None
    for row in rows:
        # Destination 0.0.0.0 with the RTF_UP flag (0x1).
        if len(row) > 3 and row[1] == "00000000" and int(row[3], 16) & 1:
            return row[0]
    return None
