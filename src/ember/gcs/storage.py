"""Where the GCS keeps its tables.

The GCS managers hold their tables in memory and write every change through a
:class:`StoreClient`. The default, :class:`InMemoryStoreClient`, keeps nothing
beyond the process. A persistent client (Redis) lets a restarted GCS reload the
tables and carry on, which is the whole of GCS fault tolerance.

Tables are flat: ``table name -> key bytes -> value bytes``. Values are
msgpack-encoded by the managers, so a store never needs to know their types.
"""
from __future__ import annotations

import abc
import asyncio
import logging

logger = logging.getLogger(__name__)


class StoreClient(abc.ABC):
    """The narrow interface every GCS storage backend implements."""

    async def open(self) -> None:
        """Reach the backend once at GCS start; raise if it cannot be reached."""

    @abc.abstractmethod
    async def put(self, table: str, key: bytes, value: bytes) -> None: ...

    @abc.abstractmethod
    async def get(self, table: str, key: bytes) -> bytes | None: ...

    @abc.abstractmethod
    async def delete(self, table: str, keys: list[bytes]) -> int: ...

    @abc.abstractmethod
    async def get_all(self, table: str) -> dict[bytes, bytes]: ...

    async def close(self) -> None:
        pass

    def put_soon(self, table: str, key: bytes, value: bytes) -> None:
        """Write in the background, for managers whose handlers are synchronous.

        ``value`` is encoded by the caller now, so a later change of the record
        is not written by this call. Writes are issued in call order and every
        backend applies them in that order, so the last write of a key wins.
        """
        task = asyncio.get_running_loop().create_task(self.put(table, key, value))
        task.add_done_callback(_log_failed_write)


class InMemoryStoreClient(StoreClient):
    """Tables in a dict: fast, and gone when the GCS exits."""

    def __init__(self):
        self._tables: dict[str, dict[bytes, bytes]] = {}

    async def put(self, table, key, value):
        self._tables.setdefault(table, {})[key] = value

    async def get(self, table, key):
        return self._tables.get(table, {}).get(key)

    async def delete(self, table, keys):
        t = self._tables.get(table, {})
        return sum(t.pop(k, None) is not None for k in keys)

    async def get_all(self, table):
        return dict(self._tables.get(table, {}))


def _log_failed_write(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("writing GCS storage failed: %s", task.exception())


class StorageUnavailableError(ConnectionError):
    """The GCS storage (Redis) cannot be reached."""


class StorageConfigError(ValueError):
    """The ``gcs_storage`` setting names no usable store (malformed, or a client missing)."""


#: URL schemes served by RedisStoreClient.
REDIS_SCHEMES = ("redis://", "rediss://", "redis+sentinel://")
