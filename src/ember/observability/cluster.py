"""Reaching the cluster for state queries, from a driver, a task, an actor or a shell.

Each query opens its own short connections to the GCS (and, for workers,
objects and logs, to every live raylet) on a private event loop, rather than
borrowing a driver's core worker: that works the same in a process that never
called ``init``, and never puts a slow query on a core worker's I/O thread. A
caller inside a running event loop (an async actor) has the query run on a
helper thread, since one thread cannot run two loops.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import os

import uvloop

from .. import rpc
from ..core_worker import context
from ..protocol import gcs as gcs_msg
from ..rpc import auth
from .errors import RayStateApiException


def resolve_address(address: str | None) -> str:
    """The GCS address to query, with this process's token set for it.

    ``None`` or ``"auto"``: the cluster this process is connected to, else
    ``EMBER_ADDRESS`` / ``RAY_ADDRESS``, else the one ``ember start`` recorded.
    """
    from .. import node as node_mod
    if address in (None, "", "auto"):
        core = context.core
        if core is not None:
            return core.gcs_address
        address = (os.environ.get("EMBER_ADDRESS") or os.environ.get("RAY_ADDRESS")
                   or node_mod.read_current_cluster())
        if not address or address == "auto":
            raise ConnectionError(
                "No running ember cluster found: start one with `ember start --head`, "
                "call ember.init() first, or pass address='HOST:PORT'.")
    token = node_mod.find_token(address)
    if token:
        auth.set_token(token)
    return address


def run(coro_fn, *args):
    """Run ``coro_fn(*args)`` to completion on a private loop; returns its result."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return uvloop.run(coro_fn(*args))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(uvloop.run, coro_fn(*args)).result()


async def connect_gcs(address: str, timeout: float):
    """A connection to the GCS; a ConnectionError that names the address if none."""
    try:
        return await rpc.connect(address, name="gcs", timeout=min(timeout, 5.0))
    except (OSError, asyncio.TimeoutError) as exc:  # ConnectionError says it well already
        if isinstance(exc, ConnectionError):
            raise
        raise ConnectionError(f"Could not reach an ember cluster at {address}: {exc}") from None


async def ask_gcs(address: str, requests: list, timeout: float) -> list:
    """The GCS's replies to ``requests``, in order."""
    conn = await connect_gcs(address, timeout)
    try:
        return list(await asyncio.gather(*(conn.call(r, timeout=timeout) for r in requests)))
    finally:
        conn.close()


async def ask_raylets(address: str, request, timeout: float):
    """The GCS's node table, and ``request``'s reply from each live raylet (None if it
    did not answer), as ``(GetAllNodesReply, {node_id: reply})``."""
    (table,) = await ask_gcs(address, [gcs_msg.GetAllNodes()], timeout)

    async def one(info):
        try:
            return await ask_raylet(info, request, timeout, connect_timeout=2.0)
        except (RayStateApiException, rpc.RemoteError):
            return None
    alive = [info for info in table.nodes if info.alive]
    replies = await asyncio.gather(*(one(info) for info in alive))
    return table, {info.node_id: reply for info, reply in zip(alive, replies)}


async def ask_raylet(node_info, request, timeout: float, connect_timeout: float = 5.0):
    """``request``'s reply from one node's raylet; RayStateApiException naming the node
    if it cannot be reached or does not answer."""
    where = f"{node_info.raylet.ip}:{node_info.raylet.port}"
    try:
        raylet = await rpc.connect(where, name="raylet",
                                   timeout=min(timeout, connect_timeout))
    except (OSError, asyncio.TimeoutError) as exc:
        raise RayStateApiException(
            f"Could not reach the raylet of node {node_info.node_id.hex()} at {where}: "
            f"{exc or type(exc).__name__}.") from None
    try:
        return await raylet.call(request, timeout=timeout)
    except (ConnectionError, asyncio.TimeoutError) as exc:
        raise RayStateApiException(
            f"The raylet of node {node_info.node_id.hex()} at {where} did not answer: "
            f"{exc or type(exc).__name__}.") from None
    finally:
        raylet.close()


def query_gcs(address: str | None, requests: list, timeout: float) -> list:
    """The GCS's replies to ``requests`` (see :func:`resolve_address` for ``address``)."""
    return run(ask_gcs, resolve_address(address), requests, timeout)


def fetch_task_events(address: str | None, timeout: float, request):
    """The task-event store's raw records (the state API and the timeline read them)."""
    (reply,) = query_gcs(address, [request], timeout)
    return reply
