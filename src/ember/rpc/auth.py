"""Who may talk to an ember process: the cluster token and the connection handshake.

Why: every ember port runs code. A GCS port lets its peers write function
pickles that workers will load, a worker's port takes ``PushTask``, and a
raylet's hands out workers. Before this module any process that could reach a
port could do all of that, and the GCS listened on every interface. As in Ray
2.60 (``RAY_AUTH_MODE``), each cluster therefore has a secret token, and every
connection, TCP or Unix socket, must present it before a single frame is read.

Where the token comes from (:func:`current_token`), in order:

1. the token this process was given (:func:`set_token`: ``ember.init()`` and
   ``ember start`` set the one they made or were given);
2. ``EMBER_AUTH_TOKEN``;
3. the file named by ``EMBER_AUTH_TOKEN_FILE``: every daemon of a node gets
   ``<session_dir>/auth_token`` (mode 0600) this way, and its workers inherit
   the variable;
4. none: the process makes a random token of its own, so it can still talk to
   itself (servers and clients in one test) but to no cluster.

The handshake is once per connection, so the task path pays nothing for it:

    client -> server   b"EMBR" | version (1 byte) | length (2 bytes, big-endian) | token
    server -> client   b"EMBR" | status (1 byte)

Status 0 accepts; the connection then carries frames (``connection.py``).
Any other status says why it was refused (:class:`Refusal`), and the server
closes the connection: it has read nothing but the handshake, so an
unauthenticated peer can make it hold at most about 1 KiB (a token is at
most ``_MAX_TOKEN`` bytes).
The server also refuses peers that do not finish the handshake within
``config.handshake_timeout_s``, and connections beyond
``config.max_unauthenticated_connections`` pending or
``config.max_connections_per_server`` open. Each refusal is one warning line
naming the peer (a TCP address, or the pid and command of a Unix-socket peer).

Tokens are compared with :func:`hmac.compare_digest`, in constant time.
The token travels in clear on TCP unless TLS is on (:mod:`.tls`); the
threat it closes is other users and programs on the machine or network, not
an eavesdropper on the wire.

``EMBER_AUTH_MODE=disabled`` turns the check off (with a warning, once per
process): clients send an empty token and servers accept any. The handshake
itself, its timeout and the connection caps still apply.
"""
from __future__ import annotations

import asyncio
import enum
import hmac
import logging
import os
import secrets
import socket
import struct
import typing

from .. import exceptions
from ..config import config
from .tls import ENV_USE_TLS

logger = logging.getLogger(__name__)

TOKEN_FILE = "auth_token"
ENV_TOKEN = "EMBER_AUTH_TOKEN"
ENV_TOKEN_FILE = "EMBER_AUTH_TOKEN_FILE"
ENV_MODE = "EMBER_AUTH_MODE"

MAGIC = b"EMBR"
VERSION = 1
_CLIENT_HEADER = struct.Struct(">4sBH")
_MAX_TOKEN = 1024
_SERVER_REPLY_SIZE = len(MAGIC) + 1


class Refusal(enum.IntEnum):
    """The server's answer to a handshake; anything but ACCEPTED closes the connection."""

    ACCEPTED = 0
    WRONG_TOKEN = 1      # a token that is not the cluster's
    NO_TOKEN = 2         # an empty token: the client runs with EMBER_AUTH_MODE=disabled
    BUSY = 3             # too many connections open or pending on this server
    BAD_HANDSHAKE = 4    # not an ember handshake (wrong magic or version, too long)


# A server refused this process's cluster token (a ConnectionError, and Ray's
# ray.exceptions.AuthenticationError). Retrying cannot help.
AuthenticationError = exceptions.AuthenticationError


def client_preamble(token: bytes) -> bytes:
    """The bytes a client sends first: the handshake that presents ``token``."""
    return _CLIENT_HEADER.pack(MAGIC, VERSION, len(token)) + token


# --- the token ---------------------------------------------------------------

_token: bytes | None = None
#: Modes already warned about, so each warning is given once per process.
_warned: set[str] = set()


def enabled() -> bool:
    """Whether connections must carry the cluster token (``EMBER_AUTH_MODE``).

    Read at each handshake, never raising: a mistyped mode keeps the check on.
    """
    mode = os.environ.get(ENV_MODE, "token").strip().lower()
    if mode in ("token", ""):
        return True
    if mode not in _warned:
        _warned.add(mode)
        if mode == "disabled":
            logger.warning("Token authentication is disabled (%s=disabled): any program "
                           "that can reach this cluster's ports can run code as this user.",
                           ENV_MODE)
        else:
            logger.warning("%s=%r is not 'token' or 'disabled'; token authentication stays "
                           "on.", ENV_MODE, mode)
    return mode != "disabled"


def set_token(token: str | bytes) -> None:
    """Use ``token`` for every connection this process makes or accepts from now on."""
    global _token
    _token = _validated(token.encode() if isinstance(token, str) else token)


def current_token() -> bytes:
    """This process's cluster token; see the module docstring for where it comes from."""
    global _token
    if _token is None:
        from_env = os.environ.get(ENV_TOKEN)
        path = os.environ.get(ENV_TOKEN_FILE)
        if from_env:
            _token = _validated(from_env.encode())
        elif path:
            _token = _validated(read_token_file(path).encode())
        else:
            _token = secrets.token_hex(32).encode()
    return _token


def _validated(token: bytes) -> bytes:
    token = token.strip()
    if not token or len(token) > _MAX_TOKEN:
        raise ValueError(f"A cluster token must be 1 to {_MAX_TOKEN} bytes long, "
                         f"not {len(token)}.")
    return token


def new_token() -> str:
    """``EMBER_AUTH_TOKEN`` if set, else a fresh random token (256 bits)."""
    return os.environ.get(ENV_TOKEN, "").strip() or secrets.token_hex(32)


def token_path(session_dir: str) -> str:
    return os.path.join(session_dir, TOKEN_FILE)


def write_token_file(session_dir: str, token: str) -> str:
    """Store ``token`` in the session directory, readable by this user only; its path."""
    path = token_path(session_dir)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, token.encode())
    finally:
        os.close(fd)
    return path


def read_token_file(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as exc:
        raise AuthenticationError(
            f"Cannot read the cluster token from {path}: {exc}. Set {ENV_TOKEN} to the "
            "cluster's token (`ember get-auth-token` on the head node prints it).") from exc


def child_env(session_dir: str, environ: typing.Mapping[str, str] = os.environ) -> dict:
    """The environment for a daemon of this node: it reads the token from the session."""
    env = {k: v for k, v in environ.items() if k != ENV_TOKEN}
    env[ENV_TOKEN_FILE] = token_path(session_dir)
    return env


# --- lease grants ------------------------------------------------------------
#
# A worker runs a task only if the pusher shows that the raylet leased the
# worker to it. The raylet gives each worker a random key when it registers
# and, with each lease it grants, an HMAC of the lease id under that key. The
# owner sends it with every PushTask; the worker checks it in constant time.
# Nothing but the raylet and the worker knows the key, so a peer that holds no
# lease on this worker cannot make one up.

def lease_grant(worker_key: bytes, lease_id: bytes) -> bytes:
    """The raylet's proof that it leased the worker holding ``worker_key`` under ``lease_id``."""
    return hmac.new(worker_key, lease_id, "sha256").digest()


def grant_is_valid(worker_key: bytes, lease_id: bytes, grant: bytes) -> bool:
    return bool(worker_key) and hmac.compare_digest(lease_grant(worker_key, lease_id), grant)


# --- peers -------------------------------------------------------------------

def describe_peer(transport: asyncio.BaseTransport) -> str:
    """A TCP peer's address, or a Unix-socket peer's pid and command, for log lines."""
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    sock = transport.get_extra_info("socket")
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _ = struct.unpack("3i", creds)
        with open(f"/proc/{pid}/comm") as f:
            comm = f.read().strip()
        return f"pid {pid} ({comm}, uid {uid}) on a Unix socket"
    except (OSError, AttributeError):
        return "a Unix-socket peer"


# --- server side ---------------------------------------------------------------

class Gate:
    """One server's connection counts: what it admits and what it refuses.

    Invariants: ``pending`` counts connections in the handshake, ``open``
    those past it; both only change on the server's event loop. ``token`` is
    the process's token when the server started: a driver that later joins
    another cluster does not change what its running servers accept.
    """

    def __init__(self, name: str, token: bytes):
        self.name = name
        self.token = token
        self.pending = 0
        self.open = 0
        self.refused = 0

    def refuse_log(self, peer: str, reason: str) -> None:
        """One warning per refusal; past 20, one per thousand, so a flood cannot fill the log."""
        self.refused += 1
        if self.refused <= 20 or self.refused % 1000 == 0:
            logger.warning("%s refused a connection from %s: %s (%d refused so far)",
                           self.name or "server", peer, reason, self.refused)

    def debug_state(self) -> dict:
        return {"name": self.name, "pending": self.pending, "open": self.open,
                "refused": self.refused}


class ServerHandshake(asyncio.Protocol):
    """What an accepted socket talks to until it has shown the token.

    On success the transport is handed to the protocol ``make_protocol()``
    builds (a Connection), with ``transport.set_protocol``: the frame parser
    never sees an unauthenticated byte, and costs nothing extra afterwards.
    """

    def __init__(self, make_protocol: typing.Callable[[], asyncio.Protocol], gate: Gate):
        self._make_protocol = make_protocol
        self._gate = gate
        self._buf = bytearray()
        self._transport = None
        self._timer = None
        self._counted = False

    def connection_made(self, transport) -> None:
        self._transport = transport
        gate = self._gate
        if (gate.pending >= config.max_unauthenticated_connections
                or gate.pending + gate.open >= config.max_connections_per_server):
            self._refuse(Refusal.BUSY, f"too many connections ({gate.open} open, "
                                       f"{gate.pending} in the handshake)")
            return
        gate.pending += 1
        self._counted = True
        self._timer = asyncio.get_running_loop().call_later(
            config.handshake_timeout_s, self._expire)

    def data_received(self, data) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        buf = self._buf
        buf += data
        if len(buf) >= len(MAGIC) and buf[:len(MAGIC)] != MAGIC:
            self._refuse(Refusal.BAD_HANDSHAKE, "it is not an ember client "
                         f"(first bytes {bytes(buf[:8])!r})")
            return
        if len(buf) < _CLIENT_HEADER.size:
            return
        _, version, length = _CLIENT_HEADER.unpack_from(buf)
        if version != VERSION or length > _MAX_TOKEN:
            self._refuse(Refusal.BAD_HANDSHAKE,
                         f"handshake version {version} with a {length}-byte token")
            return
        end = _CLIENT_HEADER.size + length
        if len(buf) < end:
            return
        token, rest = bytes(buf[_CLIENT_HEADER.size:end]), bytes(buf[end:])
        self._buf = bytearray()
        if enabled():
            if not token:
                self._refuse(Refusal.NO_TOKEN, "it presented no cluster token (is "
                             f"{ENV_MODE}=disabled there?)")
                return
            if not hmac.compare_digest(token, self._gate.token):
                self._refuse(Refusal.WRONG_TOKEN, "wrong cluster token")
                return
        self._accept(rest)

    def _accept(self, rest: bytes) -> None:
        self._end_handshake()
        gate = self._gate
        gate.open += 1
        transport = self._transport
        transport.write(MAGIC + bytes([Refusal.ACCEPTED]))
        protocol = self._make_protocol()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        protocol.add_close_callback(_closed_callback(gate))
        if rest:
            protocol.data_received(rest)

    def _refuse(self, why: Refusal, reason: str) -> None:
        self._end_handshake()
        self._gate.refuse_log(describe_peer(self._transport), reason)
        try:
            self._transport.write(MAGIC + bytes([why]))
        finally:
            self._transport.close()

    def _expire(self) -> None:
        self._timer = None
        self._refuse(Refusal.BAD_HANDSHAKE,
                     f"no handshake within {config.handshake_timeout_s:g} s")

    def _end_handshake(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._counted:
            self._counted = False
            self._gate.pending -= 1

    def connection_lost(self, exc) -> None:
        self._end_handshake()


def _closed_callback(gate: Gate):
    def closed(conn) -> None:
        gate.open -= 1
    return closed


# --- client side ---------------------------------------------------------------

class ClientHandshake(asyncio.Protocol):
    """What a new outgoing socket talks to until the server accepts its token.

    ``done`` resolves to the protocol ``make_protocol()`` built, now attached
    to the transport, or fails with :class:`AuthenticationError` (the token)
    or ``ConnectionError`` (closed early, busy: worth a retry).
    """

    def __init__(self, make_protocol: typing.Callable[[], asyncio.Protocol], what: str):
        self._make_protocol = make_protocol
        self._what = what
        self._buf = bytearray()
        self._transport = None
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self._transport = transport
        token = current_token() if enabled() else b""
        transport.write(client_preamble(token))

    def data_received(self, data) -> None:
        if self.done.done():
            return
        buf = self._buf
        buf += data
        if len(buf) < _SERVER_REPLY_SIZE:
            return
        if buf[:len(MAGIC)] != MAGIC:
            self._fail(ConnectionError(f"{self._what} did not answer ember's handshake; "
                                       "is that the address of an ember process?"))
            return
        status, rest = buf[len(MAGIC)], bytes(buf[_SERVER_REPLY_SIZE:])
        if status != Refusal.ACCEPTED:
            self._fail(self._refusal_error(status))
            return
        protocol = self._make_protocol()
        self._transport.set_protocol(protocol)
        protocol.connection_made(self._transport)
        if rest:
            getattr(protocol, "conn", protocol).data_received(rest)
        self.done.set_result(protocol)

    def _refusal_error(self, status: int) -> ConnectionError:
        if status == Refusal.WRONG_TOKEN:
            return AuthenticationError(
                f"{self._what} refused this process's cluster token. Set {ENV_TOKEN} to "
                "the token of that cluster (`ember get-auth-token` on its head node prints "
                "it; `ember start --address ... --token ...` for a joining node).")
        if status == Refusal.NO_TOKEN:
            return AuthenticationError(
                f"{self._what} requires the cluster token, and this process has "
                f"{ENV_MODE}=disabled. Unset it and set {ENV_TOKEN} to the cluster's token.")
        if status == Refusal.BUSY:
            return ConnectionError(f"{self._what} has too many connections open "
                                   "(config max_connections_per_server); try again later")
        return AuthenticationError(f"{self._what} refused the handshake as malformed "
                                   f"(status {status}); are both sides the same ember version?")

    def _fail(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(exc)
        self._transport.close()

    def abandon(self) -> None:
        """Give up waiting (the caller timed out): close the socket."""
        self.done.cancel()
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionResetError(
                f"{self._what} closed the connection during the handshake (if it keeps "
                f"doing so, check that {ENV_USE_TLS} is set alike on every node)"))
