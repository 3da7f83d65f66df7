"""The object manager without a cluster: two stores in one process, joined by real TCP.

One node's :class:`ObjectManager` serves objects of its store; the other
pulls them into its own. This pins down what a multi-node cluster cannot
show deterministically: that pulls issued together share one transfer, that
every chunk lands in place (with small chunks and a window of them in
flight), that the source's pins are dropped, and that each failure (object
missing, node dead, connection lost mid-transfer) is an ObjectLostError
naming the object and the node, with nothing left allocated. Both ways of
copying: chunks through TCP, and (both nodes being on this host) one memcpy
from the source's arena mapped here. Also the
connection feature underneath: reply buffers received ``into`` given views,
through the plain and the buffered protocol.
"""
from __future__ import annotations

import asyncio
import os

import pytest
import uvloop

from ember import rpc
from ember.config import config
from ember.object_store.arena import Arena
from ember.object_store import object_manager
from ember.object_store.object_manager import ObjectManager
from ember.object_store.store import ObjectStore
from ember.protocol import object_store as msg
from ember.protocol.common import Address
from ember.protocol.gcs import KVGet, KVGetReply

MB = 1024 * 1024


class Node:
    """A store, its arena and its object manager, serving on a TCP port."""

    def __init__(self, tmp_path, name: str, capacity: int = 64 * MB):
        self.node_id = os.urandom(28)
        self.arena = Arena(capacity)
        self.store = ObjectStore(self.arena, str(tmp_path / name / "spill"))
        self.manager = ObjectManager(self.store, self.arena, self.node_id)
        self.server = None
        self.address: Address | None = None

    async def serve(self, before_chunk=None) -> None:
        """Serve on a new port. ``before_chunk(n)`` runs before the n-th chunk is
        served; if it returns True, the connection is cut instead (the node vanishes)."""
        handlers = self.manager.handlers()
        if before_chunk is not None:
            serve_chunk, calls = self.manager.handle_get_chunk, [0]

            def chunk(conn, req):
                calls[0] += 1
                if before_chunk(calls[0]):
                    conn.transport.abort()
                    return None
                return serve_chunk(conn, req)
            handlers[msg.GetObjectChunk] = chunk
        self.server = await rpc.serve("127.0.0.1:0", lambda: handlers,
                                      on_close=self._closed, name="raylet")
        port = self.server.sockets[0].getsockname()[1]
        self.address = Address(self.node_id, "127.0.0.1", port)

    def _closed(self, conn) -> None:
        self.store.release_client(conn)
        self.manager.connection_closed(conn)

    def put(self, object_id: bytes, data: bytes) -> None:
        offset = self.store.create_nowait(object_id, len(data))
        self.arena.view[offset:offset + len(data)] = data
        self.store.seal(object_id)

    def read(self, object_id: bytes) -> bytes:
        (entry,) = self.store.get_nowait("test", [object_id])
        try:
            return bytes(self.arena.view[entry.offset:entry.offset + entry.size])
        finally:
            self.store.release("test", [object_id])

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        self.manager.close()
        self.store.close()
        self.arena.close()


@pytest.fixture
def small_chunks(monkeypatch):
    """Through TCP (as between hosts), in 64 KiB chunks, 3 in flight: a 1 MiB
    object takes 16 chunks through the window."""
    monkeypatch.setattr(config, "object_transfer_same_host", False)
    monkeypatch.setattr(config, "object_transfer_chunk_size", 64 * 1024)
    monkeypatch.setattr(config, "object_transfer_chunks_in_flight", 3)


def run(tmp_path, scenario, before_chunk=None):
    """Run ``scenario(source, dest)`` on uvloop with two fresh nodes; see Node.serve."""
    async def main():
        source, dest = Node(tmp_path, "a"), Node(tmp_path, "b")
        try:
            await source.serve(before_chunk)
            return await scenario(source, dest)
        finally:
            source.close()
            dest.close()
    return uvloop.run(main())


def pattern(size: int, seed: int = 1) -> bytes:
    block = bytes((i * 7 + seed) % 251 for i in range(4096))
    return (block * (size // len(block) + 1))[:size]


def test_concurrent_pulls_share_one_transfer(tmp_path, small_chunks):
    oid = os.urandom(28)
    data = pattern(MB + 123)  # not a multiple of the chunk size

    async def scenario(source, dest):
        source.put(oid, data)
        request = msg.PullObject(oid, source.address, None)
        replies = await asyncio.gather(dest.manager.handle_pull(None, request),
                                       dest.manager.handle_pull(None, request))
        assert [r.error_type for r in replies] == ["", ""]
        assert dest.read(oid) == data
        stats = dest.manager.debug_state()
        assert stats["transfers_started"] == 1
        assert stats["pulls_joined"] == 1
        assert stats["transfers_completed"] == 1
        assert stats["chunks_received"] == 17
        assert stats["bytes_received"] == len(data)
        # A third pull finds the copy and starts nothing.
        reply = dest.manager.handle_pull(None, request)
        assert reply.error_type == ""
        assert dest.manager.debug_state()["pulls_already_local"] == 1
        # The copy is secondary (evictable); the source's transfer pin is gone.
        (info,) = dest.store.list_objects()
        assert (info.object_id, info.is_primary, info.state) == (oid, False, "SEALED")
        await _until(lambda: source.store.stats()["pinned"] == 0)
        assert source.manager.debug_state()["objects_being_served"] == 0
        assert source.manager.debug_state()["bytes_sent"] == len(data)
    run(tmp_path, scenario)


def _store_mappings() -> int:
    """Mappings of an object store arena (a memfd) in this process."""
    with open("/proc/self/maps") as f:
        return sum("memfd:ember-store" in line for line in f)


def test_same_host_pull_copies_from_the_mapped_source_arena(tmp_path, monkeypatch):
    monkeypatch.setattr(object_manager, "SHARED_COPY_STEP", 256 * 1024)
    first, second = os.urandom(28), os.urandom(28)
    data = pattern(MB + 777, seed=5)  # 5 steps, the last one short

    async def scenario(source, dest):
        source.put(first, data)
        source.put(second, data[::-1])
        before = _store_mappings()
        for oid, expected in ((first, data), (second, data[::-1])):
            reply = await dest.manager.handle_pull(None, msg.PullObject(oid, source.address))
            assert reply.error_type == ""
            assert dest.read(oid) == expected
        stats = dest.manager.debug_state()
        assert stats["transfers_same_host"] == 2
        assert stats["bytes_copied_same_host"] == 2 * len(data)
        assert stats["chunks_received"] == 0 and stats["bytes_received"] == 0
        assert stats["last_transfer"]["path"] == "shared memory"
        # One mapping of the source's arena serves every pull from it...
        assert stats["peer_arenas_mapped"] == 1
        assert _store_mappings() == before + 1
        # ...the transfers' pins at the source are dropped...
        await _until(lambda: source.store.stats()["pinned"] == 0)
        assert source.manager.debug_state()["objects_being_served"] == 0
        # ...and the mapping goes when the source node dies, so its memory can.
        dest.manager.node_removed(source.node_id, source.address)
        assert dest.manager.debug_state()["peer_arenas_mapped"] == 0
        assert _store_mappings() == before
    run(tmp_path, scenario)


def test_same_host_pull_falls_back_to_tcp_when_the_arena_cannot_be_mapped(tmp_path):
    """The arena the source describes is not the file found at its /proc path (as
    through another pid namespace): the copy goes through TCP, and still arrives."""
    oid = os.urandom(28)
    data = pattern(2 * MB + 1, seed=6)

    async def scenario(source, dest):
        shared = source.manager._shared
        source.manager._shared = msg.SharedArena(shared.pid, shared.fd, shared.capacity,
                                                 shared.device, shared.inode + 1)
        source.put(oid, data)
        reply = await dest.manager.handle_pull(None, msg.PullObject(oid, source.address))
        assert reply.error_type == ""
        assert dest.read(oid) == data
        stats = dest.manager.debug_state()
        assert stats["transfers_same_host"] == 0
        assert stats["bytes_received"] == len(data)
        assert stats["last_transfer"]["path"] == "tcp"
        assert stats["peer_arenas_mapped"] == 0
    run(tmp_path, scenario)


def test_pull_of_object_missing_at_source_is_lost(tmp_path):
    oid = os.urandom(28)

    async def scenario(source, dest):
        reply = await dest.manager.handle_pull(None, msg.PullObject(oid, source.address, None))
        assert reply.error_type == "ObjectLostError"
        assert oid.hex() in reply.error_message
        assert source.node_id.hex()[:12] in reply.error_message
        assert "not in the object store of node" in reply.error_message
        assert dest.store.stats()["num_objects"] == 0
    run(tmp_path, scenario)


def test_pull_from_dead_node_fails_at_once(tmp_path):
    oid = os.urandom(28)

    async def scenario(source, dest):
        source.put(oid, b"x" * 1000)
        dest.manager.node_removed(source.node_id, source.address)
        reply = await asyncio.wait_for(
            dest.manager.handle_pull(None, msg.PullObject(oid, source.address, None)), 5)
        assert reply.error_type == "ObjectLostError"
        assert f"its node {source.node_id.hex()[:12]} (127.0.0.1) died" in reply.error_message
        assert oid.hex() in reply.error_message
    run(tmp_path, scenario)


def test_connection_lost_mid_transfer_aborts_the_copy(tmp_path, small_chunks):
    oid = os.urandom(28)

    async def scenario(source, dest):
        source.put(oid, pattern(MB))
        reply = await asyncio.wait_for(
            dest.manager.handle_pull(None, msg.PullObject(oid, source.address, None)), 10)
        assert reply.error_type == "ObjectLostError"
        assert oid.hex() in reply.error_message
        assert source.node_id.hex()[:12] in reply.error_message
        # The half-written copy is gone, and its memory with it.
        assert dest.store.stats()["num_objects"] == 0
        assert dest.store.stats()["used"] == 0
        assert dest.manager.debug_state()["transfers_failed"] == 1
        await _until(lambda: source.store.stats()["pinned"] == 0)
    run(tmp_path, scenario, before_chunk=lambda n: n == 5)


@pytest.mark.parametrize("fails", [False, True])
def test_copy_deleted_during_its_transfer_is_freed(tmp_path, small_chunks, fails):
    """The owner frees the object while this node pulls it: no copy stays, either way."""
    oid = os.urandom(28)

    nodes = {}

    def before_chunk(n: int) -> bool:
        if n == 3:
            nodes["dest"].store.delete([oid])  # DeleteObjects from the owner arrives
        return fails and n == 6

    async def scenario(source, dest):
        nodes["dest"] = dest
        source.put(oid, pattern(MB))
        reply = await dest.manager.handle_pull(None, msg.PullObject(oid, source.address, None))
        assert reply.error_type == ("ObjectLostError" if fails else "")
        assert dest.store.stats()["num_objects"] == 0
        assert dest.store.stats()["num_deleted_pinned"] == 0
        assert dest.store.stats()["used"] == 0
    run(tmp_path, scenario, before_chunk)


@pytest.mark.parametrize("buffered", [False, True])
def test_reply_buffers_are_received_into_given_views(tmp_path, buffered):
    """``request(into=...)``: raw buffers land in the caller's memory, whole or in pieces."""
    payloads = [pattern(3 * MB + 5, seed=3), b"", pattern(100, seed=4)]

    async def main():
        def handler(conn, req):
            return KVGetReply(req.key), payloads
        server = await rpc.serve("127.0.0.1:0", lambda: {KVGet: handler}, name="server")
        port = server.sockets[0].getsockname()[1]
        conn = await rpc.connect(f"127.0.0.1:{port}", buffered=buffered)
        try:
            for round_ in range(3):
                memory = bytearray(sum(len(p) for p in payloads) + 10)
                view = memoryview(memory)
                into = [view[:len(payloads[0])], view[len(payloads[0]):len(payloads[0])],
                        view[len(payloads[0]) + 10:]]
                key = b"k%d" % round_
                body, buffers = await conn.request(KVGet("ns", key), into=into)
                assert body.value == key
                assert all(b is v for b, v in zip(buffers, into))
                assert [bytes(b) for b in buffers] == payloads
                assert memory[len(payloads[0]):len(payloads[0]) + 10] == bytes(10)
            # Sizes that do not match: received into new memory, correctly.
            body, buffers = await conn.request(KVGet("ns", b"x"), into=[memoryview(bytearray(1))])
            assert [bytes(b) for b in buffers] == payloads
            # Without ``into``: as before.
            body, buffers = await conn.request(KVGet("ns", b"y"))
            assert [bytes(b) for b in buffers] == payloads
        finally:
            conn.close()
            server.close()
    uvloop.run(main())


async def _until(predicate, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)
