"""The session's log files: which exist on a node, and reading one (``ember logs``).

Every process of a node writes to ``<session dir>/logs/``: ``gcs.*``,
``raylet-<node>.*``, and ``worker-<first 12 hex of the worker id>.out/.err``.
So a worker's, an actor's or a task's log is found from its worker id: the
actor table and the task-event store both hold it. Files are read from this
machine's disk, which is where every node of a local cluster keeps them; a node
on another machine must be asked there (its session directory is not here).
"""
from __future__ import annotations

import fnmatch
import os
import time

from .errors import RayStateApiException


def logs_dir(node_info) -> str:
    path = os.path.join(node_info.session_dir, "logs")
    if not node_info.session_dir or not os.path.isdir(path):
        raise RayStateApiException(
            f"The logs of node {node_info.node_id.hex()} ({node_info.ip}) are not on this "
            f"machine (expected in {path or 'its session directory'}); run `ember logs` "
            "on that node.")
    return path


def category(name: str) -> str:
    """Ray's grouping of a log file name in ``list_logs``."""
    if name.startswith("worker-"):
        return "worker_out" if name.endswith(".out") else "worker_err"
    if name.startswith("raylet"):
        return "raylet"
    if name.startswith("gcs"):
        return "gcs_server"
    return "internal"


def list_files(node_info, glob_filter: str = "*") -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name in sorted(os.listdir(logs_dir(node_info))):
        if fnmatch.fnmatch(name, glob_filter):
            found.setdefault(category(name), []).append(name)
    return found


def worker_log_name(worker_id: bytes, suffix: str = "out") -> str:
    if suffix not in ("out", "err"):
        raise ValueError(f"Invalid suffix {suffix!r}; valid: 'out', 'err'.")
    return f"worker-{worker_id.hex()[:12]}.{suffix}"


class LogFollower:
    """Reads one log file: its last lines, then whatever is appended after.

    The reading is split from the waiting so that a blocking reader
    (:func:`read_lines`, ``ember logs --follow``) and an asynchronous one (the
    dashboard's ``/api/v0/logs/file``, which must not hold a thread per open
    stream) share it: each calls :meth:`poll` and waits its own way between.
    """

    def __init__(self, path: str):
        self._file = open(path, "r", errors="replace")  # FileNotFoundError: the caller's
        self._partial = ""

    def last_lines(self, tail: int = 1000) -> list[str]:
        """The last ``tail`` lines (all if tail < 0, none if 0); moves to the end."""
        lines = self._file.read().splitlines()
        return lines if tail < 0 else lines[-tail:] if tail else []

    def poll(self) -> list[str]:
        """The complete lines appended since the last call (a partial last line waits)."""
        self._partial += self._file.read()
        *lines, self._partial = self._partial.split("\n")
        return lines

    def close(self) -> None:
        self._file.close()


def read_lines(path: str, tail: int = 1000, follow: bool = False, interval: float = 0.5):
    """The last ``tail`` lines of ``path`` (all if tail < 0), then, with ``follow``,
    each line appended after, until the caller stops iterating."""
    follower = LogFollower(path)
    try:
        yield from follower.last_lines(tail)
        while follow:
            lines = follower.poll()
            yield from lines
            if not lines:
                time.sleep(interval)
    finally:
        follower.close()
