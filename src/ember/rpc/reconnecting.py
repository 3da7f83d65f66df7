"""A client connection that survives its server restarting: how everyone talks to the GCS.

The GCS may be killed and started again on the same address, reloading its
tables from Redis. Raylets and core workers must not lose their work over it,
so their connection to the GCS is a :class:`ReconnectingClient`:

- When the connection drops, it dials again every 0.2 s (a restarted GCS
  should be found within a fraction of a second) until ``reconnect_timeout_s`` passes (config
  ``gcs_reconnect_timeout_s``, as Ray's gcs_rpc_server_reconnect_timeout_s).
- On each new connection, ``on_connected(conn)`` runs before anything else is
  sent: the owner re-registers (its node, its job) and re-subscribes there,
  because a restarted server remembers no connection-scoped state.
- Requests whose connection dropped before a reply are sent again on the next
  connection, and requests and notifications issued while disconnected wait
  for it, in issue order. The server's handlers must therefore tolerate a
  request arriving twice (the GCS's do: registrations are idempotent by id).
- If the timeout passes, or the server refuses the re-registration (a node
  it already declared dead), every waiting request fails with ConnectionError,
  ``closed`` becomes true and ``on_give_up(exc)`` runs: a raylet stops then.

Owner: one event loop. The interface is the subset of :class:`Connection`
that callers of the GCS use (``call``, ``request``, ``notify``, ``closed``,
``close``), so they need not know about reconnection at all.
"""
from __future__ import annotations

import asyncio
import enum
import logging
import time

from ..config import config
from . import connect
from .connection import Connection, ConnectionLost

logger = logging.getLogger(__name__)

#: Notifications kept while disconnected; older ones are dropped beyond this.
MAX_BACKLOG = 10_000


class ClientState(enum.Enum):
    CONNECTED = "CONNECTED"        # requests go straight to the connection
    RECONNECTING = "RECONNECTING"  # the connection dropped; requests wait
    CLOSED = "CLOSED"              # closed by its owner, or gave up: final


class ReconnectingClient:
    def __init__(self, addr: str, handlers: dict, *, name: str, on_connected=None,
                 on_give_up=None, reconnect_timeout_s: float | None = None):
        self.addr = addr
        self.name = name
        self._handlers = handlers
        self._on_connected = on_connected
        self._on_give_up = on_give_up
        self._reconnect_timeout_s = reconnect_timeout_s
        self.state = ClientState.RECONNECTING
        #: The live connection; None unless CONNECTED.
        self._conn: Connection | None = None
        #: Sends issued while not CONNECTED, in issue order: (body, future or None).
        self._backlog: list[tuple[object, asyncio.Future | None]] = []
        self._task: asyncio.Task | None = None
        self.reconnects = 0
        #: False once the owner is shutting down: a drop then closes for good.
        self._reconnect_enabled = True

    @property
    def closed(self) -> bool:
        return self.state is ClientState.CLOSED

    @property
    def connected(self) -> bool:
        return self.state is ClientState.CONNECTED

    @property
    def reconnect_timeout_s(self) -> float:
        return (config.gcs_reconnect_timeout_s if self._reconnect_timeout_s is None
                else self._reconnect_timeout_s)

    async def start(self, timeout: float | None = None) -> None:
        """Connect the first time; errors propagate (there is nothing to keep yet)."""
        conn = await connect(self.addr, self._handlers, name=self.name, timeout=timeout,
                             on_close=self._lost)
        await self._attach(conn)

    async def _attach(self, conn: Connection) -> None:
        if self._on_connected is not None:
            await self._on_connected(conn)
        if conn.closed:
            raise ConnectionLost(f"connection to {self.name} lost while re-registering")
        self._conn = conn
        self.state = ClientState.CONNECTED
        backlog, self._backlog = self._backlog, []
        for body, outer in backlog:
            if outer is None:
                conn.notify(body)
            elif not outer.done():
                self._send(body, outer)

    # --- sending ----------------------------------------------------------------

    def notify(self, body) -> None:
        if self.state is ClientState.CONNECTED:
            self._conn.notify(body)
        elif self.state is ClientState.RECONNECTING:
            if len(self._backlog) >= MAX_BACKLOG:
                logger.warning("dropping a %s message to %s: too many wait for the "
                               "reconnection", type(self._backlog[0][0]).__name__, self.name)
                self._backlog.pop(0)
            self._backlog.append((body, None))
        else:
            raise ConnectionLost(f"connection to {self.name} is closed")

    def request(self, body) -> asyncio.Future:
        outer = asyncio.get_running_loop().create_future()
        self._send(body, outer)
        return outer

    async def call(self, body, timeout: float | None = None):
        fut = self.request(body)
        if timeout is None:
            return await fut
        return await asyncio.wait_for(fut, timeout)

    def _send(self, body, outer: asyncio.Future) -> None:
        if self.state is ClientState.CLOSED:
            outer.set_exception(ConnectionLost(f"connection to {self.name} is closed"))
        elif self.state is ClientState.RECONNECTING:
            self._backlog.append((body, outer))
        else:
            inner = self._conn.request(body)
            inner.add_done_callback(lambda f: self._settle(f, body, outer))

    def _settle(self, inner: asyncio.Future, body, outer: asyncio.Future) -> None:
        if outer.done():  # the caller stopped waiting
            return
        if inner.cancelled():
            outer.cancel()
        elif isinstance(inner.exception(), ConnectionLost) and not self.closed:
            self._send(body, outer)  # waits for the next connection
        elif inner.exception() is not None:
            outer.set_exception(inner.exception())
        else:
            outer.set_result(inner.result())

    # --- reconnecting -------------------------------------------------------------

    def stop_reconnecting(self) -> None:
        """The owner is shutting down: its last messages may close the connection."""
        self._reconnect_enabled = False

    def _lost(self, conn: Connection) -> None:
        if conn is not self._conn or self.state is not ClientState.CONNECTED:
            return
        self._conn = None
        if not self._reconnect_enabled:
            self._close(ConnectionLost(f"connection to {self.name} closed"))
            return
        self.state = ClientState.RECONNECTING
        logger.warning("lost the connection to %s at %s; reconnecting for up to %g s",
                       self.name, self.addr, self.reconnect_timeout_s)
        self._task = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        deadline = time.monotonic() + self.reconnect_timeout_s
        while self.state is ClientState.RECONNECTING:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise ConnectionError(f"not back within {self.reconnect_timeout_s:g} s")
                conn = await connect(self.addr, self._handlers, name=self.name,
                                     timeout=remaining, on_close=self._lost)
                try:
                    await asyncio.wait_for(self._attach(conn), max(remaining, 1.0))
                except BaseException:
                    conn.close()
                    raise
                self.reconnects += 1
                logger.info("reconnected to %s at %s", self.name, self.addr)
                return
            except (ConnectionError, OSError, asyncio.TimeoutError) as exc:
                if time.monotonic() < deadline:
                    await asyncio.sleep(min(0.2, max(deadline - time.monotonic(), 0)))
                    continue
                self._give_up(f"could not reconnect within {self.reconnect_timeout_s:g} s: "
                              f"{exc}")
            except Exception as exc:  # noqa: BLE001 - the server refused to re-register
                self._give_up(f"reconnected, but it refused to take this process back: {exc}")

    def _give_up(self, why: str) -> None:
        if self.state is ClientState.CLOSED:
            return
        error = ConnectionLost(f"lost the connection to {self.name} at {self.addr} and {why}")
        self._close(error)
        logger.error("%s", error)
        if self._on_give_up is not None:
            self._on_give_up(error)

    def _close(self, error: BaseException) -> None:
        self.state = ClientState.CLOSED
        backlog, self._backlog = self._backlog, []
        for _, outer in backlog:
            if outer is not None and not outer.done():
                outer.set_exception(error)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._close(ConnectionLost(f"connection to {self.name} is closed"))

    def debug_state(self) -> dict:
        return {"state": self.state.name, "reconnects": self.reconnects,
                "backlog": len(self._backlog)}
