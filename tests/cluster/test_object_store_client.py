"""StoreClient against a StoreService over a real ember.rpc Unix socket, in one process.

No raylet: the service runs on a LoopThread of the test process, so the client
maps the arena through /proc/<this pid>/fd/<fd>, exactly as a worker maps its
raylet's. This covers the wire messages, zero-copy reads, pin release when
views die, and errors, in milliseconds.
"""
from __future__ import annotations

import gc
import os
import pickle

import numpy as np
import pytest

from ember import rpc
from ember.core_worker.event_loop import LoopThread
from ember.core_worker.serialization import serialize_to_store
from ember.exceptions import ObjectStoreFullError
from ember.object_store import layout
from ember.object_store.client import StoreClient
from ember.object_store.service import StoreService
from ember.protocol import object_store as msg
from helpers import wait_for_condition

MiB = 1024 * 1024


class Harness:
    """A store service and clients connected to it, all in this process."""

    def __init__(self, tmp_path, capacity):
        self.io = LoopThread("store-test")
        self.tmp_path = tmp_path
        self.socket = str(tmp_path / "store.sock")
        self.service = self.io.run(self._start(capacity))
        self.clients = []

    async def _start(self, capacity):
        service = StoreService.for_node(capacity, str(self.tmp_path))
        handlers = service.handlers()
        self.server = await rpc.serve("unix:" + self.socket, lambda: handlers,
                                      on_close=service.connection_closed, name="store")
        return service

    def client(self) -> StoreClient:
        conn = self.io.run(rpc.connect("unix:" + self.socket, name="store"))
        io = self.io
        client = StoreClient(os.getpid(), self.service.arena.fd, self.service.arena.capacity,
                             call=lambda m: io.run(conn.call(m)),
                             notify=lambda m: io.post(conn.notify, m), defer=io.post)
        client.conn = conn
        self.clients.append(client)
        return client

    def store_stats(self) -> dict:
        async def stats():
            return self.service.store.stats()
        return self.io.run(stats())

    def pins(self, object_id: bytes) -> int:
        async def pins():
            return {o.object_id: o.pins for o in self.service.store.list_objects()}[object_id]
        return self.io.run(pins())

    def close(self):
        for client in self.clients:
            client.close()
            self.io.post(client.conn.close)

        async def stop():
            self.server.close()
            self.service.close()
        self.io.run(stop())
        self.io.stop()


@pytest.fixture
def harness(tmp_path):
    made = []

    def make(capacity=64 * MiB):
        h = Harness(tmp_path, capacity)
        made.append(h)
        return h
    yield make
    for h in made:
        h.close()


def put_value(client, object_id, value):
    main, buffers = serialize_to_store(value)
    return client.put(object_id, main, buffers)


def get_value(client, object_id, timeout=None):
    [got] = client.get([object_id], timeout)
    if got is None:
        return None
    return layout.load_from_store(*got)


def test_numpy_round_trip_is_read_only_and_zero_copy(harness):
    h = harness()
    client = h.client()
    array = np.random.default_rng(0).standard_normal((512, 300))
    size = put_value(client, b"a" * 28, {"x": array, "tag": "hello"})
    assert size >= array.nbytes
    first = get_value(client, b"a" * 28)
    second = get_value(client, b"a" * 28)
    assert first["tag"] == "hello"
    np.testing.assert_array_equal(first["x"], array)
    assert not first["x"].flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        first["x"][0, 0] = 1.0
    assert np.shares_memory(first["x"], second["x"])
    assert (first["x"].__array_interface__["data"][0]
            == second["x"].__array_interface__["data"][0])
    assert first["x"].__array_interface__["data"][0] % 64 == 0


def test_pin_is_released_when_the_last_view_dies(harness):
    h = harness()
    client = h.client()
    oid = b"p" * 28
    put_value(client, oid, np.arange(100_000))
    value = get_value(client, oid)
    alias = get_value(client, oid)   # second get in the process: same pin
    view = value[10:20]               # derived views keep it pinned too
    del value
    gc.collect()
    assert h.pins(oid) == 1
    del alias
    assert h.pins(oid) == 1
    del view
    wait_for_condition(lambda: h.pins(oid) == 0, message="pin released")
    assert h.store_stats()["pinned"] == 0


def test_duplicate_ids_in_one_get_take_one_pin(harness):
    h = harness()
    client = h.client()
    oid = b"d" * 28
    put_value(client, oid, np.ones(1000))
    results = client.get([oid, oid, oid])
    assert h.pins(oid) == 1
    del results
    wait_for_condition(lambda: h.pins(oid) == 0, message="pin released")


def test_many_buffers_are_each_64_byte_aligned(harness):
    h = harness()
    client = h.client()
    parts = (np.arange(7, dtype=np.int8), np.arange(13, dtype=np.float32),
             np.asfortranarray(np.arange(12.0).reshape(3, 4)),
             np.arange(30)[::3],  # not contiguous: pickled in band
             b"raw bytes", bytearray(b"mutable"))
    put_value(client, b"m" * 28, parts)
    [(main, buffers)] = client.get([b"m" * 28])
    for buf in buffers:
        address = np.frombuffer(buf, dtype=np.uint8).__array_interface__["data"][0]
        assert address % 64 == 0
    back = layout.load_from_store(main, buffers)
    for original, restored in zip(parts, back):
        if isinstance(original, np.ndarray):
            np.testing.assert_array_equal(original, restored)
        else:
            assert original == restored
    assert back[2].flags.f_contiguous


def test_plain_values_and_raw_buffers(harness):
    h = harness()
    client = h.client()
    client.put(b"r" * 28, pickle.dumps("just a string"), [])
    assert get_value(client, b"r" * 28) == "just a string"
    big = os.urandom(3 * MiB)
    client.put(b"b" * 28, b"", [big])
    [(main, [buf])] = client.get([b"b" * 28])
    assert main.nbytes == 0 and buf.readonly and bytes(buf) == big


def test_put_of_an_existing_id_is_a_no_op(harness):
    h = harness()
    client = h.client()
    put_value(client, b"e" * 28, [1, 2, 3])
    put_value(client, b"e" * 28, [1, 2, 3])
    assert get_value(client, b"e" * 28) == [1, 2, 3]
    assert h.store_stats()["num_objects"] == 1


def test_unknown_and_unsealed_objects_read_as_none(harness):
    h = harness()
    client = h.client()
    assert client.get([b"u" * 28], timeout=0) == [None]
    reply = client._call(msg.CreateObject(b"w" * 28, 100))
    assert reply.error_type == "" and reply.offset >= 0
    assert client.get([b"w" * 28], timeout=0.05) == [None]


def test_full_store_raises_object_store_full_error_with_advice(harness):
    h = harness(capacity=4 * MiB)
    client = h.client()
    # Larger than the whole store: a file of its own, read through the client too.
    big = np.arange(5 * MiB // 8, dtype=np.float64)
    put_value(client, b"f" * 28, big)
    assert np.array_equal(get_value(client, b"f" * 28), big)
    assert h.store_stats()["on_disk_bytes"] >= big.nbytes and h.store_stats()["used"] == 0
    client.delete([b"f" * 28])
    keep = []
    for i in range(2):
        put_value(client, bytes([i]) * 28, np.zeros(MiB // 8 * 3 // 2))  # 1.5 MiB each
        keep.append(get_value(client, bytes([i]) * 28))
    with pytest.raises(ObjectStoreFullError) as info:
        put_value(client, b"g" * 28, np.zeros(MiB // 8 * 3 // 2))
    assert "pinned by readers" in str(info.value)
    assert "object_store_memory" in str(info.value)
    del keep
    wait_for_condition(lambda: h.store_stats()["pinned"] == 0, message="pins released")
    put_value(client, b"g" * 28, np.zeros(MiB // 8 * 3 // 2))  # spills one now


def test_spilled_objects_come_back_through_the_client(harness):
    h = harness(capacity=4 * MiB)
    client = h.client()
    arrays = [np.full(MiB // 8, i, dtype=np.float64) for i in range(10)]
    for i, array in enumerate(arrays):
        put_value(client, bytes([i]) * 28, array)
    assert h.store_stats()["num_spilled"] >= 6
    for i, array in enumerate(arrays):
        np.testing.assert_array_equal(get_value(client, bytes([i]) * 28), array)
    stats = client.stats()
    assert stats["restored"] >= 6


def test_delete_and_list_objects(harness):
    h = harness()
    client = h.client()
    put_value(client, b"x" * 28, np.zeros(1000))
    [info] = client.list_objects()
    assert info.object_id == b"x" * 28 and info.state == "SEALED" and info.pins == 0
    client.delete([b"x" * 28])
    assert client.get([b"x" * 28], timeout=0) == [None]
    assert client.stats()["num_objects"] == 0


def test_disconnect_drops_the_clients_pins(harness):
    h = harness()
    reader = h.client()
    writer = h.client()
    put_value(writer, b"c" * 28, np.zeros(10_000))
    held = get_value(reader, b"c" * 28)
    assert h.pins(b"c" * 28) == 1
    h.io.post(reader.conn.close)
    wait_for_condition(lambda: h.pins(b"c" * 28) == 0, message="pins dropped")
    assert held.sum() == 0  # the views stay valid: the memory is merely unpinned


def test_two_clients_see_the_same_pages(harness):
    h = harness()
    a, b = h.client(), h.client()
    put_value(a, b"s" * 28, np.arange(50_000))
    x, y = get_value(a, b"s" * 28), get_value(b, b"s" * 28)
    np.testing.assert_array_equal(x, y)
    assert h.pins(b"s" * 28) == 2
