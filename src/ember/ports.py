"""Port policy: which TCP ports ember's processes may listen on. Pure: no I/O.

Why ports are chosen, not left to the kernel: an operator who puts a firewall
between machines must know, before the cluster starts, every port another
machine will connect to. Ray's options say it (``--port``,
``--node-manager-port``, ``--min-worker-port`` ...) and so do ours, with Ray's
defaults:

=====================  =======================  ==================================
port                   option                   default
=====================  =======================  ==================================
GCS                    ``--port``               6379 (``ember start``), any (init)
node manager (raylet)  ``--node-manager-port``  0: any free port
object manager         ``--object-manager-port``  the node manager's port (below)
workers and drivers    ``--min/max-worker-port``  10002-19999; ``--worker-port-list``
metrics                ``--metrics-export-port``  none served
dashboard              ``--dashboard-port``     8265 (head only)
=====================  =======================  ==================================

ember's object manager is served by the raylet on the node manager's port: a
node has one listener, not two. ``--object-manager-port`` is accepted for
Ray's command lines; it sets that one port when ``--node-manager-port`` does
not, and must equal it when both are given.

Every worker and every driver listens on one port from its node's worker
range. The raylet hands each new worker the next port of the range that none
of its workers holds (:class:`WorkerPortAllocator`); a port some other process
holds is skipped (the raylet tries to bind it first). When the range is used
up, a lease that needs a new worker fails with an error naming the range,
instead of waiting for a port that will not come.

Errors name the option as the user wrote it: ``--min-worker-port`` for the
command line, ``min_worker_port`` for ``ember.init()`` (see :data:`CLI` and
:data:`INIT`). They are ``ValueError``; the command line turns them into
click's usage errors.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Mapping

MAX_PORT = 65535
DEFAULT_GCS_PORT = 6379
DEFAULT_MIN_WORKER_PORT = 10002
DEFAULT_MAX_WORKER_PORT = 19999
DEFAULT_DASHBOARD_PORT = 8265

#: How each port option is named on the command line and in ``ember.init()``.
CLI: Mapping[str, str] = {
    "gcs": "--port", "node_manager": "--node-manager-port",
    "object_manager": "--object-manager-port", "min_worker": "--min-worker-port",
    "max_worker": "--max-worker-port", "worker_list": "--worker-port-list",
    "metrics_export": "--metrics-export-port", "dashboard": "--dashboard-port"}
INIT: Mapping[str, str] = {
    "gcs": "port", "node_manager": "node_manager_port",
    "object_manager": "object_manager_port", "min_worker": "min_worker_port",
    "max_worker": "max_worker_port", "worker_list": "worker_port_list",
    "metrics_export": "_metrics_export_port", "dashboard": "dashboard_port"}


def check_port(value, option: str, allow_zero: bool = True) -> int:
    """``value`` as a port number, or a ValueError naming ``option``."""
    lowest = 0 if allow_zero else 1
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= MAX_PORT:
        any_port = " (0: any free port)" if allow_zero else ""
        raise ValueError(f"{option} must be a port number from {lowest} to {MAX_PORT}"
                         f"{any_port}, got {value!r}.")
    return value


@dataclasses.dataclass(frozen=True)
class WorkerPorts:
    """The ports a node's workers and drivers may listen on.

    Invariant: ``ports`` has no duplicates, each in 1..65535; empty means any
    free port (the kernel picks).
    """

    ports: tuple[int, ...] = ()
    #: How the user gave them, for errors: "10002-19999 (--min-worker-port/--max-worker-port)".
    source: str = "any free port"

    @property
    def spec(self) -> str:
        """A compact form for command lines, environment variables and the GCS node
        table: "" (any), "LOW-HIGH" (a contiguous range) or "P1,P2,...". """
        if not self.ports:
            return ""
        low, high = self.ports[0], self.ports[-1]
        if len(self.ports) > 1 and self.ports == tuple(range(low, high + 1)):
            return f"{low}-{high}"
        return ",".join(map(str, self.ports))

    @classmethod
    def from_spec(cls, spec: str, source: str = "") -> "WorkerPorts":
        """The inverse of :attr:`spec`."""
        spec = spec.strip()
        if not spec:
            return cls()
        if "-" in spec:
            low, high = (int(p) for p in spec.split("-", 1))
            ports = tuple(range(low, high + 1))
        else:
            ports = tuple(int(p) for p in spec.split(","))
        return cls(ports, source or spec)


def worker_ports(min_port=DEFAULT_MIN_WORKER_PORT, max_port=DEFAULT_MAX_WORKER_PORT,
                 port_list: str | Iterable[int] | None = None,
                 names: Mapping[str, str] = CLI) -> WorkerPorts:
    """The worker ports of a node from Ray's three options, checked.

    ``port_list`` (a comma-separated string or a list) wins over the range, as
    in Ray. ``min_port`` and ``max_port`` both 0 means any free port; None
    means Ray's default for that end.
    """
    if port_list is not None and port_list != "":
        option = names["worker_list"]
        items = port_list.split(",") if isinstance(port_list, str) else list(port_list)
        if not items:
            raise ValueError(f"{option} is empty: give at least one port.")
        ports = tuple(check_port(p.strip() if isinstance(p, str) else p, option,
                                 allow_zero=False) for p in items)
        duplicates = sorted({p for p in ports if ports.count(p) > 1})
        if duplicates:
            raise ValueError(f"{option} lists port(s) {', '.join(map(str, duplicates))} more "
                             "than once: give each port once.")
        return WorkerPorts(ports, f"{', '.join(map(str, ports))} ({option})")
    low_name, high_name = names["min_worker"], names["max_worker"]
    low = check_port(DEFAULT_MIN_WORKER_PORT if min_port is None else min_port, low_name)
    high = check_port(DEFAULT_MAX_WORKER_PORT if max_port is None else max_port, high_name)
    if low == 0 and high == 0:
        return WorkerPorts()
    if low == 0 or high == 0:
        zero, other = (low_name, high_name) if low == 0 else (high_name, low_name)
        raise ValueError(f"{zero} is 0 (any port) but {other} is not: give both as 0 for any "
                         "free port, or both as the ends of a range.")
    if low > high:
        raise ValueError(f"{low_name} ({low}) is above {high_name} ({high}): the range of "
                         "worker ports would be empty.")
    return WorkerPorts(tuple(range(low, high + 1)),
                       f"{low}-{high} ({low_name}/{high_name})")


def node_manager_port_of(node_manager, object_manager, names: Mapping[str, str] = CLI) -> int:
    """The raylet's one TCP port, from ``--node-manager-port`` and ``--object-manager-port``
    (ember serves the object manager on the node manager's port)."""
    nm = check_port(node_manager or 0, names["node_manager"])
    om = check_port(object_manager or 0, names["object_manager"])
    if nm and om and nm != om:
        raise ValueError(
            f"{names['object_manager']} ({om}) differs from {names['node_manager']} ({nm}): "
            "ember's raylet serves the object manager on the node manager's port, so give "
            "one of them, or the same port to both.")
    return nm or om


def check_distinct(ports: Mapping[str, int], names: Mapping[str, str] = CLI) -> None:
    """A ValueError if two options fixed the same port (0, any port, may repeat)."""
    seen: dict[int, str] = {}
    for key, port in ports.items():
        if port and port in seen:
            raise ValueError(f"{names[seen[port]]} and {names[key]} are both {port}: each "
                             "process needs a port of its own.")
        seen.setdefault(port, key)


def listen_order(ports: WorkerPorts, given: int = 0) -> list[int]:
    """The ports a worker or driver tries to listen on, in order ([0]: any port).

    A worker tries the port its raylet gave it first, then the rest of the
    range after it (the port was free when the raylet looked, but another
    program may have taken it since). A driver (``given`` 0) is given none: it
    tries the range from the top down, away from where the raylet hands out
    workers' ports from the bottom up.
    """
    candidates = list(ports.ports)
    if not candidates:
        return [0]
    if given in candidates:
        index = candidates.index(given)
        return candidates[index:] + candidates[:index]
    return candidates[::-1]


class WorkerPortAllocator:
    """Which port of the range the next worker of a node gets. Owned by the raylet's loop.

    Invariant: ``held`` is a subset of the range; a port in ``held`` is given
    to no second worker until :meth:`release`.
    """

    def __init__(self, ports: WorkerPorts):
        self.ports = ports
        self.held: set[int] = set()
        #: Where the next search starts: ports are handed out round-robin, so a port
        #: just released (its old connections perhaps still closing) is taken last.
        self._next = 0

    def acquire(self, is_free: Callable[[int], bool]) -> int | None:
        """A port for a new worker, now held; 0 for any port; None when none is free.

        ``is_free(port)`` says whether another process holds it (the raylet
        tries to bind it); it is asked only about ports no worker holds.
        """
        candidates = self.ports.ports
        if not candidates:
            return 0
        for step in range(len(candidates)):
            index = (self._next + step) % len(candidates)
            port = candidates[index]
            if port in self.held or not is_free(port):
                continue
            self._next = index + 1
            self.held.add(port)
            return port
        return None

    def hold(self, port: int) -> None:
        """A worker ended up on ``port`` (it had to pass over the one it was given)."""
        if port in self.ports.ports:
            self.held.add(port)

    def release(self, port: int) -> None:
        self.held.discard(port)

    def exhausted_message(self) -> str:
        """Why no new worker can start, naming the range, for the lease's error."""
        count = len(self.ports.ports)
        return (f"no port is free for a new worker in the worker port range "
                f"{self.ports.source}: this node's workers hold {len(self.held)} of its "
                f"{count} port(s) and other processes the rest. Widen the range, or run "
                "fewer workers at once on this node.")

    def debug_state(self) -> dict:
        return {"range": self.ports.spec or "any", "held": len(self.held)}


@dataclasses.dataclass(frozen=True)
class NodePorts:
    """The ports one node's processes listen on, checked. 0: any free port."""

    #: The GCS (a head only).
    gcs: int = 0
    #: The raylet's TCP port: node manager and object manager.
    node_manager: int = 0
    #: The node's Prometheus endpoint; None: as ``EMBER_METRICS_EXPORT_PORT`` says
    #: (by default none is served).
    metrics_export: int | None = None
    #: The dashboard (a head only); None: 8265, else the next free port.
    dashboard: int | None = None
    workers: WorkerPorts = WorkerPorts(
        tuple(range(DEFAULT_MIN_WORKER_PORT, DEFAULT_MAX_WORKER_PORT + 1)),
        f"{DEFAULT_MIN_WORKER_PORT}-{DEFAULT_MAX_WORKER_PORT} (the default worker port range)")
    #: How the user named the options (:data:`CLI` or :data:`INIT`), for errors.
    names: Mapping[str, str] = dataclasses.field(default_factory=lambda: CLI)

    def fixed(self) -> dict[str, int]:
        """The ports the user fixed, by option key (not the workers')."""
        return {key: port for key, port in (
            ("gcs", self.gcs), ("node_manager", self.node_manager),
            ("metrics_export", self.metrics_export), ("dashboard", self.dashboard)) if port}


def node_ports(*, port=0, node_manager_port=None, object_manager_port=None,
               min_worker_port=None, max_worker_port=None, worker_port_list=None,
               metrics_export_port=None, dashboard_port=None,
               names: Mapping[str, str] = CLI) -> NodePorts:
    """Every port option of a node, checked (ranges, duplicates, one port per process)."""
    ports = NodePorts(
        gcs=check_port(port or 0, names["gcs"]),
        node_manager=node_manager_port_of(node_manager_port, object_manager_port, names),
        metrics_export=None if metrics_export_port is None else check_port(
            metrics_export_port, names["metrics_export"]),
        dashboard=None if dashboard_port is None else check_port(dashboard_port,
                                                                 names["dashboard"]),
        workers=worker_ports(min_worker_port, max_worker_port, worker_port_list, names),
        names=names)
    check_distinct(ports.fixed(), names)
    for key, port_number in ports.fixed().items():
        if port_number in ports.workers.ports:
            raise ValueError(f"{names[key]} ({port_number}) is in the worker port range "
                             f"{ports.workers.source}: a worker could take it.")
    return ports
