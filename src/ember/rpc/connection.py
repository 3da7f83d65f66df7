"""A framed, bidirectional message channel on an asyncio transport.

Why a hand-written ``asyncio.Protocol`` and not streams or gRPC: on 2-core
machines a uvloop + msgspec round trip over a Unix socket runs at tens of
thousands per second, gRPC's at under two thousand, and ``StreamReader`` adds a
coroutine switch per read. The protocol below parses frames straight out of
``data_received`` and calls handlers synchronously.

Both ends of a connection are equal: either may send requests, replies and
notifications. A handler is a plain function ``handler(conn, msg)``; it returns
the reply (or ``None`` for notifications), or a coroutine when it must wait,
in which case the reply is sent when the coroutine finishes. Synchronous
handlers keep the hot path free of task creation.

A requester may name the memory that the raw buffers of the reply go to
(``request(..., into=[view, ...])``): the bytes are then copied from the
socket's data straight into place, and with the buffered front of
:mod:`.buffered` read into it by the kernel, with no copy at all. That is how
object chunks land in the object store.

Writes are coalesced: everything sent during one turn of the event loop leaves
in one ``write`` call at the end of that turn, so a burst of a thousand task
pushes costs one syscall, not a thousand.

Input is bounded: a frame (an envelope or one raw buffer) longer than
``config.max_frame_bytes`` is refused from its header, before any memory is
set aside for it, and so is a frame that does not decode. Either closes the
connection with one warning line naming the peer; nothing reaches the event
loop's exception handler, which would print "Fatal error on transport" and a
traceback on the console of whoever runs the process. Peers are
authenticated before their first frame (:mod:`.auth`), so these limits guard
against bugs and version skew more than against strangers.

Invariants:

- A connection belongs to the event loop that created it; only that loop's
  thread may call its methods.
- Every pending request is failed with ``ConnectionLost`` when the connection
  closes, so no caller waits forever on a dead peer.
"""
from __future__ import annotations

import asyncio
import logging
import struct
import typing

import msgspec

from ..config import config
from ..protocol import framing
from ..protocol.common import ErrorReply
from ..protocol.framing import ERROR, NOTIFY, REPLY, REQUEST, Envelope
from .auth import describe_peer

logger = logging.getLogger(__name__)

_unpack_header = struct.Struct("<I").unpack_from
_pack_header = struct.Struct("<I").pack_into
_encode_into = framing.encoder.encode_into
_decode = framing.decoder.decode
#: Read once: the limit is the same for the life of the process.
_MAX_FRAME = config.max_frame_bytes

Handler = typing.Callable[["Connection", typing.Any], typing.Any]


class ConnectionLost(ConnectionError):
    """The peer went away while a request was outstanding."""


class FrameTooLarge(ValueError):
    """A message or buffer is larger than ``config.max_frame_bytes``; it was not sent."""


class RemoteError(Exception):
    """The peer's handler raised; carries the remote exception's type name."""

    def __init__(self, error_type: str, message: str):
        self.error_type = error_type
        super().__init__(f"{error_type}: {message}")


class Connection(asyncio.Protocol):
    """One end of a framed message channel. See the module docstring."""

    def __init__(self, handlers: dict[type, Handler] | None = None,
                 on_close: typing.Callable[["Connection"], None] | None = None,
                 name: str = ""):
        self.handlers = handlers if handlers is not None else {}
        self._close_callbacks = [on_close] if on_close is not None else []
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.closed = False
        #: Anything the owner of this connection wants to remember (e.g. worker id).
        self.peer: typing.Any = None
        self._loop = asyncio.get_event_loop()
        self._pending: dict[int, asyncio.Future] = {}
        self._next_rid = 1
        self._rbuf = bytearray()
        self._wbuf = bytearray()
        self._wbuffers: list = []
        self._flush_scheduled = False
        # Raw buffer frames still expected for the envelope being received.
        self._awaiting: Envelope | None = None
        self._awaiting_lengths: list[int] = []
        self._awaiting_buffers: list = []
        #: rid -> writable views that the raw buffers of its reply are read into.
        self._into: dict[int, list] = {}
        #: The views for the envelope being received, or None; and how much of the
        #: current one is filled (-1: its 8-byte frame header is not read yet).
        self._awaiting_into: list | None = None
        self._into_pos = -1

    # --- asyncio.Protocol ----------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.closed = True
        pending, self._pending = self._pending, {}
        self._into.clear()
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(ConnectionLost(f"connection to {self.name or 'peer'} lost"))
        for callback in self._close_callbacks:
            try:
                callback(self)
            except Exception:
                logger.exception("close callback failed for %s", self.name)

    def add_close_callback(self, callback) -> None:
        """Call ``callback(conn)`` when the connection closes (now, if it has)."""
        if self.closed:
            callback(self)
        else:
            self._close_callbacks.append(callback)

    def data_received(self, data):
        buf = self._rbuf
        buf += data
        pos = 0
        end = len(buf)
        try:
            while True:
                if self._awaiting is not None:
                    if self._awaiting_into is not None:
                        filled = len(self._awaiting_buffers)
                        pos = self._fill_into(buf, pos, end)
                        if len(self._awaiting_buffers) == filled:
                            break  # the frame continues in later data
                    else:
                        need = self._awaiting_lengths[len(self._awaiting_buffers)]
                        if end - pos < framing.BUFFER_HEADER_SIZE + need:
                            break
                        start = pos + framing.BUFFER_HEADER_SIZE
                        self._awaiting_buffers.append(bytes(buf[start:start + need]))
                        pos = start + need
                    if len(self._awaiting_buffers) == len(self._awaiting_lengths):
                        self._dispatch_awaited()
                    continue
                if end - pos < 4:
                    break
                (n,) = _unpack_header(buf, pos)
                if n > _MAX_FRAME:
                    return self._reject_input(f"a frame header announcing {n} bytes, over "
                                              f"the limit of {_MAX_FRAME} (max_frame_bytes)")
                if end - pos - 4 < n:
                    break
                with memoryview(buf) as view:
                    env = _decode(view[pos + 4:pos + 4 + n])
                pos += 4 + n
                if env.buffers:
                    if any(b < 0 or b > _MAX_FRAME for b in env.buffers):
                        return self._reject_input(
                            f"buffers of {env.buffers} bytes announced, over the limit of "
                            f"{_MAX_FRAME} (max_frame_bytes)")
                    self._awaiting = env
                    self._awaiting_lengths = env.buffers
                    if self._into and env.kind == REPLY:
                        self._awaiting_into = self._sinks_for(env)
                    continue
                self._dispatch(env, None)
        except msgspec.DecodeError as exc:
            pos = 0
            self._reject_input(f"a frame that is not an ember message ({exc})")
        except Exception as exc:  # noqa: BLE001 - never let a bad frame reach the loop
            pos = 0
            logger.debug("handling input from %s failed", self.name, exc_info=exc)
            self._reject_input(f"handling its input raised {type(exc).__name__}: {exc}")
        finally:
            if pos:
                del buf[:pos]

    def _reject_input(self, reason: str) -> None:
        """Close the connection over input it must not accept: one warning line, no traceback."""
        transport = self.transport
        peer = describe_peer(transport) if transport is not None else "peer"
        logger.warning("%s: closing the connection from %s: it sent %s", self.name or "ember",
                       peer, reason)
        self._rbuf.clear()
        self._awaiting = None
        if transport is not None:
            transport.abort()

    def _sinks_for(self, env: Envelope) -> list | None:
        """The caller's views for this reply's buffers, if they match the announced sizes."""
        into = self._into.pop(env.rid, None)
        if into is None:
            return None
        if len(into) != len(env.buffers) or any(
                len(view) != n for view, n in zip(into, env.buffers)):
            logger.warning("reply %d on %s has buffers of %s bytes, not the %s expected; "
                           "receiving them into new memory", env.rid, self.name, env.buffers,
                           [len(v) for v in into])
            return None
        self._into_pos = -1
        return into

    def _fill_into(self, buf: bytearray, pos: int, end: int) -> int:
        """Copy what ``buf[pos:end]`` holds of the current raw frame into its view.

        Returns the new position. When the frame is complete its view joins
        ``_awaiting_buffers`` and ``_into_pos`` is -1 again.
        """
        if self._into_pos < 0:
            if end - pos < framing.BUFFER_HEADER_SIZE:
                return pos
            pos += framing.BUFFER_HEADER_SIZE
            self._into_pos = 0
        view = self._awaiting_into[len(self._awaiting_buffers)]
        take = min(len(view) - self._into_pos, end - pos)
        if take > 0:
            with memoryview(buf) as data:
                view[self._into_pos:self._into_pos + take] = data[pos:pos + take]
            pos += take
            self._into_pos += take
        if self._into_pos == len(view):
            self._into_pos = -1
            self._awaiting_buffers.append(view)
        return pos

    def sink_remaining(self) -> memoryview | None:
        """Where the next bytes from the socket belong, if they may be read there directly.

        That is the unfilled rest of a caller's view (see ``request(into=)``),
        when nothing is buffered ahead of it. Used by :mod:`.buffered`.
        """
        if self._awaiting_into is None or self._into_pos < 0 or self._rbuf:
            return None
        view = self._awaiting_into[len(self._awaiting_buffers)]
        return view[self._into_pos:]

    def sink_filled(self, n: int) -> None:
        """``n`` bytes were read into the view :meth:`sink_remaining` returned."""
        self._into_pos += n
        view = self._awaiting_into[len(self._awaiting_buffers)]
        if self._into_pos == len(view):
            self._into_pos = -1
            self._awaiting_buffers.append(view)
            if len(self._awaiting_buffers) == len(self._awaiting_lengths):
                self._dispatch_awaited()

    def _dispatch_awaited(self) -> None:
        env, self._awaiting = self._awaiting, None
        buffers, self._awaiting_buffers = self._awaiting_buffers, []
        self._awaiting_into = None
        self._dispatch(env, buffers)

    # --- sending ----------------------------------------------------------------

    def _send(self, kind: int, rid: int, body, buffers=None) -> None:
        if self.closed:
            raise ConnectionLost(f"connection to {self.name or 'peer'} is closed")
        wbuf = self._wbuf
        start = len(wbuf)
        env = Envelope(kind, rid, body, [len(b) for b in buffers] if buffers else [])
        _encode_into(env, wbuf, start + 4)
        size = len(wbuf) - start - 4
        if size > _MAX_FRAME or (buffers and max(env.buffers) > _MAX_FRAME):
            del wbuf[start:]
            raise FrameTooLarge(
                f"{type(body).__name__} is {max([size, *env.buffers])} bytes, over the frame "
                f"limit of {_MAX_FRAME} bytes. Pass large data with ember.put() and an "
                "ObjectRef, or raise EMBER_MAX_FRAME_BYTES on every node.")
        _pack_header(wbuf, start, size)
        if buffers:
            for b in buffers:
                wbuf += len(b).to_bytes(8, "little")
                # Large buffers leave as their own writes, never joined.
                self._wbuffers.append(bytes(wbuf))
                self._wbuffers.append(b)
                wbuf.clear()
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.closed or self.transport is None:
            return
        if self._wbuffers:
            pieces, self._wbuffers = self._wbuffers, []
            if self._wbuf:
                pieces.append(bytes(self._wbuf))
                self._wbuf.clear()
            self.transport.writelines(pieces)
        elif self._wbuf:
            data, self._wbuf = self._wbuf, bytearray()
            self.transport.write(data)

    def notify(self, body, buffers=None) -> None:
        """Send a one-way message."""
        self._send(NOTIFY, 0, body, buffers)

    def notify_frame(self, frame: bytes) -> None:
        """Send a one-way message encoded once by :func:`encode_notification`."""
        if self.closed:
            raise ConnectionLost(f"connection to {self.name or 'peer'} is closed")
        self._wbuf += frame
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def request(self, body, buffers=None, into: list | None = None) -> asyncio.Future:
        """Send a request; the future resolves to the reply message.

        A reply that carries raw buffers resolves to ``(message, buffers)``.
        ``into``: writable views, one per buffer the reply will carry, exactly
        sized; the buffers are received into them and they are what the
        future returns (new memory is used instead if the sizes differ).
        The views must stay valid until the future is done.
        """
        rid = self._next_rid
        self._next_rid = rid + 1
        fut = self._loop.create_future()
        self._pending[rid] = fut
        if into is not None:
            self._into[rid] = into
        self._send(REQUEST, rid, body, buffers)
        return fut

    async def call(self, body, timeout: float | None = None):
        """Send a request and wait for its reply."""
        fut = self.request(body)
        if timeout is None:
            return await fut
        return await asyncio.wait_for(fut, timeout)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self._flush()
            self.transport.close()

    # --- receiving --------------------------------------------------------------

    def _dispatch(self, env: Envelope, buffers) -> None:
        kind = env.kind
        if kind == REPLY or kind == ERROR:
            if self._into:
                self._into.pop(env.rid, None)
            fut = self._pending.pop(env.rid, None)
            if fut is None or fut.done():
                return
            if kind == REPLY:
                if buffers is not None:
                    fut.set_result((env.body, buffers))
                else:
                    fut.set_result(env.body)
            else:
                fut.set_exception(RemoteError(env.body.error_type, env.body.message))
            return
        body = env.body
        handler = self.handlers.get(type(body))
        if handler is None:
            if kind == REQUEST:
                self._send(ERROR, env.rid, ErrorReply(
                    "NotImplementedError", f"{self.name or 'peer'} has no handler for {type(body).__name__}"))
            else:
                logger.warning("no handler for %s on %s", type(body).__name__, self.name)
            return
        try:
            result = handler(self, body) if buffers is None else handler(self, body, buffers)
        except Exception as exc:
            self._reply_error(kind, env.rid, body, exc)
            return
        if kind == NOTIFY:
            if asyncio.iscoroutine(result):
                task = self._loop.create_task(result)
                task.add_done_callback(_log_task_error)
            return
        if isinstance(result, asyncio.Future):
            result.add_done_callback(
                lambda t, rid=env.rid, body=body: self._reply_from_task(t, rid, body))
        elif asyncio.iscoroutine(result):
            task = self._loop.create_task(result)
            task.add_done_callback(lambda t, rid=env.rid, body=body: self._reply_from_task(t, rid, body))
        else:
            self._reply(env.rid, result)

    def _reply(self, rid, result) -> None:
        if self.closed:
            return
        if isinstance(result, tuple):  # (message, buffers)
            self._send(REPLY, rid, result[0], result[1])
        else:
            self._send(REPLY, rid, result)

    def _reply_from_task(self, task: asyncio.Future, rid: int, body) -> None:
        if task.cancelled():
            self._reply_error(REQUEST, rid, body, asyncio.CancelledError("handler cancelled"))
            return
        exc = task.exception()
        if exc is not None:
            self._reply_error(REQUEST, rid, body, exc)
        else:
            self._reply(rid, task.result())

    def _reply_error(self, kind, rid, body, exc) -> None:
        if kind == NOTIFY:
            logger.error("handler for %s failed on %s", type(body).__name__, self.name,
                         exc_info=exc)
            return
        if not isinstance(exc, (ConnectionError, asyncio.CancelledError)):
            logger.debug("handler for %s raised", type(body).__name__, exc_info=exc)
        if not self.closed:
            self._send(ERROR, rid, ErrorReply(type(exc).__name__, str(exc)))



def encode_notification(body) -> bytes:
    """``body`` as a whole NOTIFY frame, for :meth:`Connection.notify_frame`.

    A message published to many connections (every raylet hears every node's
    resource changes) is encoded once, not once per connection: per
    connection, publishing to N nodes what N nodes reported costs N x N.
    """
    frame = bytearray(4)
    _encode_into(Envelope(NOTIFY, 0, body, []), frame, 4)
    size = len(frame) - 4
    if size > _MAX_FRAME:
        raise FrameTooLarge(f"{type(body).__name__} is {size} bytes, over the frame limit "
                            f"of {_MAX_FRAME} bytes.")
    _pack_header(frame, 0, size)
    return bytes(frame)


def _log_task_error(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("notification handler failed", exc_info=task.exception())
