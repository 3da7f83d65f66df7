"""The session's log files: which exist on a node, and reading one (``ember logs``).

Every process of a node writes to ``<session dir>/logs/``: ``gcs.*``,
``raylet-<node>.*``, and ``worker-<first 12 hex of the worker id>.out/.err``.
So a worker's, an actor's or a task's log is found from its worker id: the
actor table and the task-event store both hold it. The files are read through
the node's raylet (``ember/raylet/log_files.py``), not from this machine's
disk: a node on another machine keeps them there.
"""
from __future__ import annotations

import time

from ..protocol import raylet as rl
from .cluster import ask_raylet, run


def category(name: str) -> str:
    """Ray's grouping of a log file name in ``list_logs``."""
    if name.startswith("worker-"):
        return "worker_out" if name.endswith(".out") else "worker_err"
    if name.startswith("raylet"):
        return "raylet"
    if name.startswith("gcs"):
        return "gcs_server"
    return "internal"


def list_files(node_info, glob_filter: str = "*", timeout: float = 30) -> dict[str, list[str]]:
    reply = run(ask_raylet, node_info, rl.ListLogFiles(glob_filter), timeout)
    found: dict[str, list[str]] = {}
    for name in reply.names:
        found.setdefault(category(name), []).append(name)
    return found


def worker_log_name(worker_id: bytes, suffix: str = "out") -> str:
    if suffix not in ("out", "err"):
        raise ValueError(f"Invalid suffix {suffix!r}; valid: 'out', 'err'.")
    return f"worker-{worker_id.hex()[:12]}.{suffix}"


class LogFollower:
    """Reads one log file: its last lines, then whatever is appended after.

    ``read(offset, tail)`` fetches a piece of the file (a ReadLogFileReply;
    see :func:`remote_reader`): with ``offset`` < 0 its last ``tail`` lines,
    else what follows ``offset``. The reading is split from the waiting so
    that a blocking reader (:func:`read_lines`, ``ember logs --follow``) and an
    asynchronous one (the dashboard's ``/api/v0/logs/file``, which must not
    hold a thread per open stream) share it: each calls :meth:`poll` and waits
    its own way between. Raises FileNotFoundError with the node's reason.
    """

    def __init__(self, read):
        self._read = read
        self._offset = 0
        self._partial = b""

    def _fetch(self, offset: int, tail: int):
        reply = self._read(offset, tail)
        if reply.error:
            raise FileNotFoundError(reply.error)
        self._offset = reply.offset
        return reply.data

    def last_lines(self, tail: int = 1000) -> list[str]:
        """The last ``tail`` lines (all if tail < 0, none if 0); moves to the end."""
        data = self._fetch(-1, tail)
        return data.decode(errors="replace").splitlines()

    def poll(self) -> list[str]:
        """The complete lines appended since the last call (a partial last line waits)."""
        self._partial += self._fetch(self._offset, 0)
        *lines, self._partial = self._partial.split(b"\n")
        return [line.decode(errors="replace") for line in lines]

    def close(self) -> None:
        """Nothing is held open between reads (each is one request to the node)."""


def remote_reader(node_info, name: str, timeout: float = 30):
    """The ``read`` of a :class:`LogFollower` of file ``name`` on the node, through its
    raylet. Blocking: call it off an event loop (``asyncio.to_thread``)."""
    def read(offset: int, tail: int):
        return run(ask_raylet, node_info, rl.ReadLogFile(name, offset, tail), timeout)
    return read


def read_lines(node_info, name: str, tail: int = 1000, follow: bool = False,
               interval: float = 0.5, timeout: float = 30):
    """The last ``tail`` lines of log file ``name`` on the node (all if tail < 0), then,
    with ``follow``, each line appended after, until the caller stops iterating.

    Raises FileNotFoundError (with the raylet's reason) if there is no such file.
    """
    follower = LogFollower(remote_reader(node_info, name, timeout))
    yield from follower.last_lines(tail)
    while follow:
        lines = follower.poll()
        yield from lines
        if not lines:
            time.sleep(interval)
