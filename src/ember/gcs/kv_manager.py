"""The GCS key-value store: namespaced bytes, used for functions, names and user data.

Functions exported by drivers live here (namespace "fun"), so any worker on any
node can load a function by its id. Keys are kept in memory for lookups and
written through to the store client for persistence.

Function and class pickles are write-once and content-addressed: a put in the
function namespace must be under the hash of its value, an existing id is
never overwritten, and none is deleted. Workers run whatever pickle is stored
under the id a task names, so a peer that could replace one, or store one
ahead of the driver under an id it predicted, would run its code in the
driver's tasks.
"""
from __future__ import annotations

from ..core_worker.function_manager import NAMESPACE as FUNCTION_NAMESPACE
from ..core_worker.function_manager import function_id_of
from ..protocol import gcs as msg
from .storage import StoreClient

TABLE = "kv"


def _key(namespace: str, key: bytes) -> bytes:
    return namespace.encode() + b"\x00" + key


class KVManager:
    def __init__(self, store: StoreClient):
        self._store = store
        self._data: dict[bytes, bytes] = {}

    async def load(self) -> None:
        self._data = await self._store.get_all(TABLE)

    def handlers(self):
        return {
            msg.KVPut: self.put,
            msg.KVGet: self.get,
            msg.KVDel: self.delete,
            msg.KVKeys: self.keys,
            msg.KVExists: self.exists,
        }

    async def put(self, conn, req: msg.KVPut) -> msg.KVPutReply:
        k = _key(req.namespace, req.key)
        if req.namespace == FUNCTION_NAMESPACE:
            if req.overwrite and k in self._data:
                raise PermissionError(
                    f"refused to overwrite function {req.key.hex()}: stored functions and "
                    "classes are write-once")
            if function_id_of(req.value) != req.key:
                raise PermissionError(
                    f"refused to store a function under id {req.key.hex()}: that is not the "
                    "hash of the pickle given (function ids name their content)")
        if not req.overwrite and k in self._data:
            return msg.KVPutReply(added=False)
        added = k not in self._data
        self._data[k] = req.value
        await self._store.put(TABLE, k, req.value)
        return msg.KVPutReply(added=added)

    def get(self, conn, req: msg.KVGet) -> msg.KVGetReply:
        return msg.KVGetReply(self._data.get(_key(req.namespace, req.key)))

    async def delete(self, conn, req: msg.KVDel) -> msg.KVDelReply:
        if req.namespace == FUNCTION_NAMESPACE:
            raise PermissionError("refused to delete from the function namespace: stored "
                                  "functions and classes are write-once")
        k = _key(req.namespace, req.key)
        doomed = [x for x in self._data if x.startswith(k)] if req.by_prefix else (
            [k] if k in self._data else [])
        for x in doomed:
            del self._data[x]
        if doomed:
            await self._store.delete(TABLE, doomed)
        return msg.KVDelReply(len(doomed))

    def keys(self, conn, req: msg.KVKeys) -> msg.KVKeysReply:
        k = _key(req.namespace, req.prefix)
        cut = len(req.namespace) + 1
        return msg.KVKeysReply([x[cut:] for x in self._data if x.startswith(k)])

    def exists(self, conn, req: msg.KVExists) -> msg.KVExistsReply:
        return msg.KVExistsReply(_key(req.namespace, req.key) in self._data)

    def debug_state(self) -> dict:
        return {"keys": len(self._data)}
