"""The session's log files: which exist on a node, and reading one (``ember logs``).

Every process of a node writes to ``<session dir>/logs/``: ``gcs.*``,
``raylet-<node>.*``, and ``worker-<first 12 hex of the worker id>.out/.err``.
So a worker's, an actor's or a task's log is found from its worker id: the
actor table and the task-event store both hold it. The files are read through
the node's raylet (``ember/raylet/log_files.py``), not from this machine's
disk: a node on another machine keeps them there.
"""
from __future__ import annotations

import asyncio
import time

from .. import rpc
from ..protocol import raylet as rl
from .cluster import run
from .errors import RayStateApiException


async def _ask(node_info, request, timeout: float):
    where = f"{node_info.raylet.ip}:{node_info.raylet.port}"
    try:
        raylet = await rpc.connect(where, name="raylet", timeout=min(timeout, 5.0))
    except (OSError, asyncio.TimeoutError) as exc:
        raise RayStateApiException(
            f"Could not reach the raylet of node {node_info.node_id.hex()} at {where} to read "
            f"its logs: {exc or type(exc).__name__}.") from None
    try:
        return await raylet.call(request, timeout=timeout)
    except (ConnectionError, asyncio.TimeoutError) as exc:
        raise RayStateApiException(
            f"The raylet of node {node_info.node_id.hex()} at {where} did not answer: "
            f"{exc or type(exc).__name__}.") from None
    finally:
        raylet.close()


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
    reply = run(_ask, node_info, rl.ListLogFiles(glob_filter), timeout)
    found: dict[str, list[str]] = {}
    for name in reply.names:
        found.setdefault(category(name), []).append(name)
    return found


def worker_log_name(worker_id: bytes, suffix: str = "out") -> str:
    if suffix not in ("out", "err"):
        raise ValueError(f"Invalid suffix {suffix!r}; valid: 'out', 'err'.")
    return f"worker-{worker_id.hex()[:12]}.{suffix}"


def read_lines(node_info, name: str, tail: int = 1000, follow: bool = False,
               interval: float = 0.5, timeout: float = 30):
    """The last ``tail`` lines of log file ``name`` on the node (all if tail < 0), then,
    with ``follow``, each line appended after, until the caller stops iterating.

    Raises FileNotFoundError (with the raylet's reason) if there is no such file.
    """
    reply = run(_ask, node_info, rl.ReadLogFile(name, -1, tail), timeout)
    if reply.error:
        raise FileNotFoundError(reply.error)
    partial = b""
    while True:
        lines = (partial + reply.data).split(b"\n")
        partial = lines.pop()  # "" after a complete line; else a line still being written
        for line in lines:
            yield line.decode(errors="replace")
        if not follow:
            if partial:
                yield partial.decode(errors="replace")
            return
        offset = reply.offset
        while True:
            time.sleep(interval)
            reply = run(_ask, node_info, rl.ReadLogFile(name, offset), timeout)
            if reply.error:
                raise FileNotFoundError(reply.error)
            if reply.data:
                break
