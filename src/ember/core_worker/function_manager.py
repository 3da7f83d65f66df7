"""Moving functions and classes from drivers to workers, through the GCS.

A driver pickles a remote function once (cloudpickle, by value) and stores it in
the GCS key-value store under its id, a hash of the pickle. Workers load it on
first use and cache it for the life of the process. Tasks of a function are
not pushed until the store has acknowledged the export, so a worker never asks
for a function the GCS does not have yet: the export is modelled as a
dependency of the task, a marker object in the memory store.
"""
from __future__ import annotations

import hashlib
import logging

import cloudpickle

from ..protocol import gcs as gcs_msg
from ..protocol.common import VALUE_PICKLE, SerializedValue

logger = logging.getLogger(__name__)

NAMESPACE = "fun"
_EXPORTED = SerializedValue(VALUE_PICKLE)


def function_id_of(pickled: bytes) -> bytes:
    return hashlib.blake2b(pickled, digest_size=20).digest()


class FunctionManager:
    def __init__(self, io, gcs, store):
        self._io = io
        self._gcs = gcs
        self._store = store
        #: function id -> marker object id, for exports in flight or done.
        self._markers: dict[bytes, bytes] = {}
        #: function id -> loaded function (workers).
        self._loaded: dict[bytes, object] = {}

    # --- exporting (any process that submits) ---------------------------------------

    def export(self, function_id: bytes, pickled: bytes) -> None:
        """Start exporting; idempotent. Call from any thread."""
        if function_id in self._markers:
            return
        marker = b"export:" + function_id
        self._markers[function_id] = marker
        self._io.post(self._loop_export, function_id, pickled, marker)

    def _loop_export(self, function_id: bytes, pickled: bytes, marker: bytes) -> None:
        fut = self._gcs.request(gcs_msg.KVPut(NAMESPACE, function_id, pickled,
                                                   overwrite=False))

        def done(f):
            if f.exception() is not None:
                logger.error("exporting a function failed: %s", f.exception())
            self._store.put(marker, _EXPORTED)
        fut.add_done_callback(done)

    def export_marker(self, function_id: bytes) -> bytes | None:
        return self._markers.get(function_id)

    # --- loading (workers) -------------------------------------------------------------

    def is_loaded(self, function_id: bytes) -> bool:
        return function_id in self._loaded

    async def fetch(self, function_id: bytes) -> bytes:
        reply = await self._gcs.call(gcs_msg.KVGet(NAMESPACE, function_id))
        if reply.value is None:
            raise RuntimeError(f"function {function_id.hex()} is not in the GCS")
        return reply.value

    def load(self, function_id: bytes, pickled: bytes | None):
        fn = self._loaded.get(function_id)
        if fn is None:
            fn = self._loaded[function_id] = cloudpickle.loads(pickled)
        return fn
