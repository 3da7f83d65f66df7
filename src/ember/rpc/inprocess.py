"""Two real :class:`Connection` ends joined in memory, for tests with no sockets.

Why not a hand-written fake connection: the submitter and everything else in
ember depend on exact connection behaviour (a request's future is resolved a
loop turn after the send, never during it; a message arrives as a copy; a
closed connection fails every pending request with ``ConnectionLost`` and
refuses new sends; a handler may answer with a value, a future or a
coroutine). A fake would have to copy all of it, and would drift. Here the
protocol object is the real one, and only the bottom layer, the
``asyncio.Transport``, is replaced by one that hands the written bytes to the
other end's ``data_received`` on the next loop turn, as a socket would (the
same idea as dask's ``comm/inproc.py``). Every frame is really encoded and
decoded, so a message that would not cross the wire fails here too.

Closing either end closes both, on the next loop turn: that is how a test
makes a peer die (the connection's owner sees ``closed`` and its pending
requests fail).

Both ends belong to the event loop running when :func:`connection_pair` is
called.
"""
from __future__ import annotations

import asyncio

from .connection import Connection, Handler


class _MemoryTransport(asyncio.Transport):
    """The write side of one end: bytes go to the other end a loop turn later."""

    def __init__(self, loop: asyncio.AbstractEventLoop, protocol: Connection):
        super().__init__()
        self._loop = loop
        self._protocol = protocol
        self.peer: _MemoryTransport | None = None
        self._closing = False

    def write(self, data) -> None:
        if self._closing:
            return
        peer = self.peer
        self._loop.call_soon(peer._deliver, bytes(data))

    def writelines(self, list_of_data) -> None:
        self.write(b"".join(bytes(d) for d in list_of_data))

    def _deliver(self, data: bytes) -> None:
        if not self._closing:
            self._protocol.data_received(data)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Close both ends, as a socket's peer sees its end close."""
        for end in (self, self.peer):
            if not end._closing:
                end._closing = True
                self._loop.call_soon(end._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def get_extra_info(self, name, default=None):
        return default


def connection_pair(handlers_a: dict[type, Handler] | None = None,
                    handlers_b: dict[type, Handler] | None = None,
                    name_a: str = "", name_b: str = "") -> tuple[Connection, Connection]:
    """Two connected ends: a request sent on one runs a handler of the other.

    ``name_a`` names end ``a``'s peer in its errors ("connection to <name>
    lost"), as a real connection is named after whom it reaches.
    """
    loop = asyncio.get_running_loop()
    a = Connection(handlers_a, name=name_a)
    b = Connection(handlers_b, name=name_b)
    transport_a = _MemoryTransport(loop, a)
    transport_b = _MemoryTransport(loop, b)
    transport_a.peer, transport_b.peer = transport_b, transport_a
    a.connection_made(transport_a)
    b.connection_made(transport_b)
    return a, b
