"""GCS tables in Redis, so that a restarted GCS finds them again.

Why Redis, and why this little client: Ray keeps its GCS tables in Redis for
fault tolerance, so operators already run one next to their head node. ember
must install anywhere with nothing compiled and no extra dependency, and the
GCS needs only five commands (HSET, HGET, HDEL, HGETALL, PING), so it speaks
RESP2 itself over an asyncio stream.

Layout: one Redis hash per table, named ``ember:<namespace>:<table>``; its
fields are the table's keys. The namespace (config ``gcs_storage_namespace``)
separates clusters that share one Redis; a restarted GCS must use the same one
to find its tables.

Failure modes:

- Redis unreachable when the GCS starts: :meth:`RedisStoreClient.open` raises
  :class:`StorageUnavailableError` naming the address and what to do, and the
  GCS exits rather than run without the fault tolerance it was asked for.
- The connection drops later (Redis restarted, network blip): the command is
  sent again on a new connection, with backoff, until
  ``gcs_reconnect_timeout_s``. Every command used is idempotent, so a command
  whose reply was lost may safely run twice.

Owner: one event loop (the GCS's). Commands run one at a time under a lock, in
the order they were issued, so two writes of one key land in issue order.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time

from ..config import config
from .storage import StorageUnavailableError, StoreClient

logger = logging.getLogger(__name__)


class RedisError(Exception):
    """Redis answered a command with an error reply."""


def encode_command(*args: bytes | str) -> bytes:
    """A RESP2 array of bulk strings: how every command travels to Redis."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        out.append(b"$%d\r\n" % len(arg))
        out.append(arg)
        out.append(b"\r\n")
    return b"".join(out)


async def read_reply(reader: asyncio.StreamReader):
    """One RESP2 reply: str (simple), int, bytes or None (bulk), list (array)."""
    line = await reader.readuntil(b"\r\n")
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return body.decode()
    if kind == b"-":
        raise RedisError(body.decode(errors="replace"))
    if kind == b":":
        return int(body)
    if kind == b"$":
        size = int(body)
        if size < 0:
            return None
        data = await reader.readexactly(size + 2)
        return data[:-2]
    if kind == b"*":
        count = int(body)
        if count < 0:
            return None
        return [await read_reply(reader) for _ in range(count)]
    raise ConnectionError(f"unexpected reply from Redis: {line[:80]!r}")


def parse_redis_url(spec: str) -> tuple[str, int]:
    """``redis://host:port`` -> (host, port); the port defaults to 6379."""
    rest = spec[len("redis://"):].rstrip("/")
    if "@" in rest or "/" in rest:
        raise ValueError(f"Unsupported GCS storage {spec!r}: expected 'redis://host:port' "
                         "(no password or database number).")
    host, _, port = rest.rpartition(":") if ":" in rest else (rest, "", "6379")
    if not host or not port.isdigit():
        raise ValueError(f"Bad GCS storage {spec!r}: expected 'redis://host:port'.")
    return host, int(port)


class RedisStoreClient(StoreClient):
    """The StoreClient interface over one Redis connection. See the module docstring."""

    def __init__(self, host: str, port: int, namespace: str = "default",
                 reconnect_timeout_s: float | None = None):
        self.host = host
        self.port = port
        self.namespace = namespace
        self._reconnect_timeout_s = reconnect_timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _hash(self, table: str) -> str:
        return f"ember:{self.namespace}:{table}"

    # --- connection ---------------------------------------------------------------

    async def open(self) -> None:
        """Connect once, now: a GCS told to use Redis must not start without it."""
        try:
            async with self._lock:
                await self._connect()
        except (OSError, asyncio.IncompleteReadError, RedisError) as exc:
            raise StorageUnavailableError(
                f"The GCS cannot reach Redis at {self.address} (gcs_storage="
                f"'redis://{self.address}'): {exc}. Start redis-server there, or fix "
                "EMBER_GCS_STORAGE / `ember start --storage`, or use 'memory' to run "
                "without GCS fault tolerance.") from exc

    async def _connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self._writer.write(encode_command("PING"))
        await self._writer.drain()
        await read_reply(self._reader)

    def _disconnect(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def _command(self, *args):
        """Send one command and read its reply, reconnecting on connection loss."""
        timeout = (config.gcs_reconnect_timeout_s if self._reconnect_timeout_s is None
                   else self._reconnect_timeout_s)
        deadline = time.monotonic() + timeout
        delay = 0.05
        async with self._lock:
            while True:
                try:
                    if self._writer is None:
                        await self._connect()
                    self._writer.write(encode_command(*args))
                    await self._writer.drain()
                    return await read_reply(self._reader)
                except (OSError, asyncio.IncompleteReadError) as exc:
                    self._disconnect()
                    if time.monotonic() + delay > deadline:
                        raise StorageUnavailableError(
                            f"Lost Redis at {self.address} and could not reconnect within "
                            f"{timeout:g} s: {exc}") from exc
                    logger.warning("Redis at %s unreachable (%s); retrying in %.2f s",
                                   self.address, exc, delay)
                    await asyncio.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, 1.0)

    # --- StoreClient ----------------------------------------------------------------

    async def put(self, table, key, value):
        await self._command("HSET", self._hash(table), key, value)

    async def get(self, table, key):
        return await self._command("HGET", self._hash(table), key)

    async def delete(self, table, keys):
        if not keys:
            return 0
        return await self._command("HDEL", self._hash(table), *keys)

    async def get_all(self, table):
        flat = await self._command("HGETALL", self._hash(table))
        return dict(zip(flat[::2], flat[1::2]))

    async def close(self):
        async with self._lock:
            self._disconnect()
