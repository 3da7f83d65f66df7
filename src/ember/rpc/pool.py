"""Cached outgoing connections: one per address, shared by every caller.

Connecting costs a round trip (more while a peer starts and ``connect``
retries), so a component that talks to many peers keeps one connection to
each. Callers that ask for the same address while it is being dialled wait
for that one attempt instead of opening their own. A connection leaves the
pool when it closes; the next ``get`` dials again.

Threads: a pool belongs to the event loop that uses it.
"""
from __future__ import annotations

import asyncio

from ..protocol.common import Address
from . import address_string, connect
from .connection import Connection


class ConnectionPool:
    """See the module docstring. ``connect_options`` go to :func:`ember.rpc.connect`."""

    def __init__(self, **connect_options):
        self._options = connect_options
        #: address -> open connection.
        self.connections: dict[str, Connection] = {}
        self._dialling: dict[str, asyncio.Future] = {}

    async def get(self, where: str, name: str = "") -> Connection:
        """The open connection to ``where``, dialling it if there is none."""
        conn = self.connections.get(where)
        if conn is not None and not conn.closed:
            return conn
        pending = self._dialling.get(where)
        if pending is not None:
            return await asyncio.shield(pending)
        fut = asyncio.get_running_loop().create_future()
        self._dialling[where] = fut
        try:
            conn = await connect(where, name=name or where,
                                 on_close=lambda c, w=where: self._closed(w, c),
                                 **self._options)
        except GeneratorExit:  # closed unfinished at loop teardown: nobody waits
            raise
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: a pool with no waiters must not warn
            raise
        finally:
            del self._dialling[where]
        self.connections[where] = conn
        fut.set_result(conn)
        return conn

    def close(self, where: str) -> None:
        """Close the connection to ``where`` (its pending requests fail with ConnectionLost)."""
        conn = self.connections.pop(where, None)
        if conn is not None:
            conn.close()

    def close_all(self) -> None:
        for where in list(self.connections):
            self.close(where)

    def _closed(self, where: str, conn: Connection) -> None:
        if self.connections.get(where) is conn:
            del self.connections[where]


class Peers:
    """Connections to other ember processes, by :class:`Address`, through one pool.

    A peer on this node is reached over its Unix socket, others over TCP. The
    role ("owner", "raylet", ...) only names the connection in errors and logs.
    """

    def __init__(self, local_node_id: bytes, **connect_options):
        self.local_node_id = local_node_id
        self.pool = ConnectionPool(**connect_options)

    async def get(self, address: Address, role: str) -> Connection:
        where = address_string(address, self.local_node_id)
        return await self.pool.get(where, f"{role} {where}")

    def close_all(self) -> None:
        self.pool.close_all()
