"""Connections, servers and clients: the one place where ember does network I/O setup.

Addresses are strings: ``"unix:/path/to/socket"`` for a Unix socket (used
within a node) or ``"host:port"`` for TCP (used between nodes). Connecting
retries with exponential backoff and jitter until a deadline, because every
ember process starts in parallel with its peers and must tolerate a server
that is not listening yet.

Every connection, on either transport, begins with the handshake of
:mod:`.auth` (the cluster token) before its first frame; TCP connections are
wrapped in TLS first when ``EMBER_USE_TLS`` is set (:mod:`.tls`).
"""
from __future__ import annotations

import asyncio
import os
import socket
import ssl
import time
import typing

from ..config import config
from ..protocol.common import Address
from . import auth, tls
from .auth import AuthenticationError
from .backoff import Backoff
from .buffered import BufferedFront
from .connection import Connection, ConnectionLost, Handler, RemoteError

__all__ = ["Connection", "ConnectionLost", "RemoteError", "AuthenticationError", "connect",
           "serve", "address_string", "servers_debug_state"]

#: The connection counts of every server this process started (for debug_state()).
_gates: list[auth.Gate] = []


def servers_debug_state() -> list[dict]:
    """Each server's connections: open, in the handshake, and refused so far."""
    return [gate.debug_state() for gate in _gates]


def address_string(address: Address, local_node_id: bytes | None = None) -> str:
    """The string to dial for ``address``: its Unix socket when on the same node."""
    if address.unix and (local_node_id is None or address.node_id == local_node_id):
        return "unix:" + address.unix
    return f"{address.ip}:{address.port}"



def _split(addr: str):
    if addr.startswith("unix:"):
        return "unix", addr[5:]
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"Bad address {addr!r}: expected 'host:port' or 'unix:/path'.")
    return "tcp", (host, int(port))


async def connect(addr: str, handlers: dict[type, Handler] | None = None, *,
                  timeout: float | None = None, on_close=None,
                  name: str = "", already_listening: bool = False,
                  buffered: bool = False) -> Connection:
    """Open a connection to ``addr``, retrying until ``timeout`` seconds pass.

    ``already_listening``: the server is known to have been listening (its
    address was handed out only after it started serving, as a core worker's
    is). Then a refused connection or a missing Unix socket means its process
    is gone, and waiting cannot change that: fail at once, so that a reader of
    a dead owner's object learns it now rather than after the whole timeout.

    ``buffered``: read replies' raw buffers in place (see :mod:`.buffered`),
    for connections that pull bulk data with ``request(..., into=...)``.
    """
    loop = asyncio.get_running_loop()
    kind, where = _split(addr)
    deadline = time.monotonic() + (config.connect_timeout_s if timeout is None else timeout)
    backoff = Backoff(config.connect_backoff_initial_s, config.connect_backoff_max_s)

    def factory():
        conn = Connection(handlers, on_close=on_close, name=name or addr)
        return BufferedFront(conn) if buffered else conn
    what = f"{name or 'server'} at {addr}"
    while True:
        try:
            if kind == "unix":
                _, handshake = await loop.create_unix_connection(
                    lambda: auth.ClientHandshake(factory, what), where)
            else:
                _, handshake = await loop.create_connection(
                    lambda: auth.ClientHandshake(factory, what), where[0], where[1],
                    ssl=tls.client_context() if tls.enabled() else None)
            conn = await _finish_handshake(handshake, deadline)
            if buffered:
                conn = conn.conn
            if kind != "unix":
                sock = conn.transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return conn
        except AuthenticationError:
            raise
        except ssl.SSLCertVerificationError as exc:
            raise AuthenticationError(
                f"TLS with {what} failed: {exc.verify_message}. Every node's certificate "
                f"must be signed by the CA in {tls.ENV_CA}.") from exc
        except (ConnectionError, FileNotFoundError, OSError, asyncio.TimeoutError) as exc:
            gone = already_listening and isinstance(exc, (ConnectionRefusedError,
                                                          FileNotFoundError))
            if gone:
                raise ConnectionError(
                    f"Could not connect to {name or 'server'} at {addr}: {exc}. It was "
                    "listening before, so its process has exited.") from exc
            delay = backoff.next_delay()
            if time.monotonic() + delay > deadline:
                raise ConnectionError(
                    f"Could not connect to {name or 'server'} at {addr}: {exc}. "
                    "Is the cluster running? Start one with `ember start --head` "
                    "or call ember.init() without an address."
                ) from exc
            await asyncio.sleep(delay)


async def _finish_handshake(handshake: auth.ClientHandshake, deadline: float):
    """Wait for the server's answer, at most the handshake timeout (or what remains)."""
    wait = max(min(config.handshake_timeout_s, deadline - time.monotonic()), 0.1)
    try:
        return await asyncio.wait_for(asyncio.shield(handshake.done), wait)
    except asyncio.TimeoutError:
        handshake.abandon()
        raise


async def serve(addr: str, make_handlers: typing.Callable[[], dict[type, Handler]], *,
                on_connect=None, on_close=None, name: str = ""):
    """Listen on ``addr``; each accepted connection gets ``make_handlers()``.

    A connection is handed its handlers only after the handshake of
    :mod:`.auth` admitted it. For TCP, port 0 picks a free port; read it back
    from the returned server's ``sockets[0].getsockname()``.
    """
    loop = asyncio.get_running_loop()
    gate = auth.Gate(name, auth.current_token())
    _gates.append(gate)

    def factory():
        conn = Connection(make_handlers(), on_close=on_close, name=name)
        if on_connect is not None:
            original = conn.connection_made

            def made(transport, _original=original, _conn=conn):
                _original(transport)
                on_connect(_conn)
            conn.connection_made = made
        return conn

    def handshake():
        return auth.ServerHandshake(factory, gate)

    kind, where = _split(addr)
    if kind == "unix":
        try:
            os.unlink(where)
        except FileNotFoundError:
            pass
        server = await loop.create_unix_server(handshake, where, backlog=1024)
    else:
        server = await loop.create_server(
            handshake, where[0], where[1], backlog=1024, reuse_address=True,
            ssl=tls.server_context() if tls.enabled() else None)
        for sock in server.sockets:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return server
