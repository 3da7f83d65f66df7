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


class StoreClient(abc.ABC):
    """The narrow interface every GCS storage backend implements."""

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


def make_store_client(spec: str) -> StoreClient:
    """Build the store client named by the ``gcs_storage`` config value."""
    if spec == "memory":
        return InMemoryStoreClient()
    raise ValueError(
        f"Unknown GCS storage {spec!r}; expected 'memory'."
    )
