"""GCS tables in Redis, so that a restarted GCS finds them again.

Why Redis: Ray keeps its GCS tables in Redis for fault tolerance, so operators
already run one next to their head node, and expect what they run in
production to work: a password (``requirepass`` or an ACL user), TLS, a
database number, Redis Sentinel for a highly available master. The client is
therefore redis-py's asyncio client (``redis.asyncio``), an optional
dependency (``pip install 'ember[redis]'``): a cluster without GCS fault
tolerance installs nothing more. Which URL selects what:

- ``redis://[[user]:password@]host[:port][/db]``: plain TCP (port 6379, db 0
  by default);
- ``rediss://...``: TLS, with redis-py's query options, e.g.
  ``?ssl_ca_certs=/path/ca.pem&ssl_certfile=...&ssl_keyfile=...``;
- ``redis+sentinel://[[user]:password@]host:port[,host:port...]/master[/db]``:
  ask these Sentinels for the current master of ``master``; the password is
  the master's (and is also sent to the Sentinels only if
  ``?sentinel_password=...`` is given).

Layout: one Redis hash per table, named ``ember:<namespace>:<table>``; its
fields are the table's keys. The namespace (config ``gcs_storage_namespace``)
separates clusters that share one Redis; a restarted GCS must use the same one
to find its tables.

Failure modes:

- redis-py not installed but a Redis storage asked for:
  :class:`~ember.gcs.storage.StorageConfigError` says what to install.
- Redis unreachable, or refusing the password, when the GCS starts:
  :meth:`RedisStoreClient.open` raises :class:`StorageUnavailableError` naming
  the address (never the password) and what to do, and the GCS exits rather
  than run without the fault tolerance it was asked for.
- The connection drops later (Redis restarted, failover, network blip): the
  command is sent again (redis-py reconnects), with backoff, until
  ``gcs_reconnect_timeout_s``. Every command used is idempotent, so a command
  whose reply was lost may safely run twice. A refused password is not retried.

Owner: one event loop (the GCS's). Commands run one at a time under a lock, in
the order they were issued, so two writes of one key land in issue order.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
import urllib.parse

from ..config import config
from .storage import StorageConfigError, StorageUnavailableError, StoreClient

logger = logging.getLogger(__name__)

SENTINEL_SCHEME = "redis+sentinel"


def _import_redis():
    try:
        import redis.asyncio
        import redis.asyncio.sentinel  # noqa: F401
        import redis.exceptions  # noqa: F401
    except ImportError as exc:
        raise StorageConfigError(
            "GCS storage in Redis needs the redis-py package, which is not installed "
            f"({exc}). Install it with `pip install 'ember[redis]'` (or `pip install "
            "redis`), or use EMBER_GCS_STORAGE=memory to run without GCS fault "
            "tolerance.") from None
    return redis


def redact(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url.split("?", 1)[0]
    user = parts.username or ""
    netloc = f"{user}:***@" + parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def parse_sentinel_url(url: str) -> dict:
    """The parts of a ``redis+sentinel://`` URL (see the module docstring)."""
    parts = urllib.parse.urlsplit(url)
    hosts = []
    for item in parts.netloc.rpartition("@")[2].split(","):
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "26379")
        if not host or not port.isdigit():
            raise StorageConfigError(f"Bad Sentinel address {item!r} in {redact(url)!r}: "
                                     "expected host:port.")
        hosts.append((host, int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise StorageConfigError(
            f"Bad GCS storage {redact(url)!r}: expected "
            "'redis+sentinel://[:password@]host:port[,host:port]/MASTER_NAME[/DB]'.")
    query = dict(urllib.parse.parse_qsl(parts.query))
    return {"sentinels": hosts, "master": path[0], "db": int(path[1]) if len(path) == 2 else 0,
            "username": urllib.parse.unquote(parts.username) if parts.username else None,
            "password": urllib.parse.unquote(parts.password) if parts.password else None,
            "sentinel_password": query.get("sentinel_password")}


def _client(url: str):
    """A redis.asyncio client for ``url``; StorageConfigError if it is malformed."""
    redis = _import_redis()
    if url.startswith(SENTINEL_SCHEME + "://"):
        spec = parse_sentinel_url(url)
        sentinel_kwargs = ({"password": spec["sentinel_password"]}
                           if spec["sentinel_password"] else {})
        sentinel = redis.asyncio.sentinel.Sentinel(
            spec["sentinels"], sentinel_kwargs=sentinel_kwargs, socket_timeout=5)
        return sentinel.master_for(spec["master"], db=spec["db"], username=spec["username"],
                                   password=spec["password"], socket_timeout=5)
    try:
        return redis.asyncio.Redis.from_url(url, socket_connect_timeout=5)
    except ValueError as exc:
        raise StorageConfigError(f"Bad GCS storage {redact(url)!r}: {exc}") from None


class RedisStoreClient(StoreClient):
    """The StoreClient interface over redis-py. See the module docstring."""

    def __init__(self, url: str, namespace: str = "default",
                 reconnect_timeout_s: float | None = None):
        self.url = url
        self.namespace = namespace
        self._reconnect_timeout_s = reconnect_timeout_s
        #: Made by open(), so that a missing redis-py or a malformed URL is
        #: reported where the GCS reports an unreachable Redis.
        self._client = None
        self._redis_errors = None
        self._lock = asyncio.Lock()

    @property
    def address(self) -> str:
        """The URL without its password."""
        return redact(self.url)

    def _hash(self, table: str) -> str:
        return f"ember:{self.namespace}:{table}"

    def _unavailable(self, exc: Exception, what: str) -> StorageUnavailableError:
        errors = self._redis_errors
        if isinstance(exc, errors.AuthenticationError) or "NOAUTH" in str(exc) or (
                "WRONGPASS" in str(exc)):
            advice = ("Redis refused the credentials: put the password in the URL, "
                      "'redis://:PASSWORD@host:port' (or 'redis://USER:PASSWORD@...' for an "
                      "ACL user), matching the server's requirepass")
        else:
            advice = ("Start redis-server there, or fix EMBER_GCS_STORAGE / `ember start "
                      "--storage`, or use 'memory' to run without GCS fault tolerance")
        return StorageUnavailableError(
            f"{what} Redis at {self.address} (gcs_storage={self.address!r}): {exc}. "
            f"{advice}.")

    # --- connection ---------------------------------------------------------------

    async def open(self) -> None:
        """Reach Redis once, now: a GCS told to use Redis must not start without it."""
        try:
            self._redis_errors = _import_redis().exceptions
            self._client = _client(self.url)
        except StorageConfigError as exc:
            raise StorageUnavailableError(str(exc)) from None
        try:
            async with self._lock:
                await self._client.ping()
        except (OSError, self._redis_errors.RedisError) as exc:
            raise self._unavailable(exc, "The GCS cannot reach") from exc

    async def _command(self, name: str, *args):
        """Run one command, retrying on connection loss until the reconnect timeout."""
        timeout = (config.gcs_reconnect_timeout_s if self._reconnect_timeout_s is None
                   else self._reconnect_timeout_s)
        deadline = time.monotonic() + timeout
        delay = 0.05
        errors = self._redis_errors
        async with self._lock:
            while True:
                try:
                    return await getattr(self._client, name)(*args)
                except errors.AuthenticationError as exc:
                    raise self._unavailable(exc, "Lost access to") from exc
                except (OSError, errors.ConnectionError, errors.TimeoutError) as exc:
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
        await self._command("hset", self._hash(table), key, value)

    async def get(self, table, key):
        return await self._command("hget", self._hash(table), key)

    async def delete(self, table, keys):
        if not keys:
            return 0
        return await self._command("hdel", self._hash(table), *keys)

    async def get_all(self, table):
        return await self._command("hgetall", self._hash(table))

    async def close(self):
        async with self._lock:
            if self._client is not None:
                await self._client.aclose()
