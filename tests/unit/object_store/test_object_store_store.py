"""The node object store driven directly on an event loop: no raylet, no sockets.

Each test builds a small memfd arena (1 MiB, so four 256 KiB objects fill it)
and a store spilling into the test's tmp dir. The store's clock is a counter,
so "least recently used" is the order of operations, not of wall time.
"""
from __future__ import annotations

import asyncio
import itertools
import os
import re

import pytest

from ember.exceptions import (IllegalTransition, ObjectLostError, ObjectStoreFullError,
                              RaySystemError)
from ember.object_store.arena import Arena
from ember.object_store.spill import SpilledObjectCorruptError
from ember.object_store.store import Entry, ObjectExistsError, ObjectState, ObjectStore

KiB = 1024
CAPACITY = 1024 * KiB
SIZE = 256 * KiB


def oid(i: int) -> bytes:
    return i.to_bytes(4, "little") * 7  # 28 bytes, like Ray's object ids


def payload(i: int, size: int = SIZE) -> bytes:
    return (i.to_bytes(4, "little") + os.urandom(60)) * (size // 64)


@pytest.fixture
def make_store(tmp_path, caplog):
    made = []

    def make(capacity=CAPACITY, **kwargs):
        arena = Arena(capacity)
        counter = itertools.count()
        store = ObjectStore(arena, str(tmp_path / "spill"),
                            clock=lambda: float(next(counter)), **kwargs)
        made.append(store)
        return store
    yield make
    for store in made:
        store.close()
        store.arena.close()
    failed = [r for r in caplog.records if r.getMessage() == "object store task failed"]
    assert not failed, f"a background task of the store failed: {failed[0].exc_info}"


def run(coro):
    return asyncio.run(coro)


async def wait_until(predicate, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.001)


async def put(store, object_id, data, primary=True, client="writer"):
    offset = await store.create(object_id, len(data), owner=None, is_primary=primary,
                                client_id=client)
    store.arena.view[offset:offset + len(data)] = data
    store.seal(object_id)
    return offset


def read(store, entry) -> bytes:
    return bytes(store.arena.view[entry.offset:entry.offset + entry.size])


def spill_files(store) -> list[str]:
    try:
        return sorted(os.listdir(store.spill_dir))
    except FileNotFoundError:
        return []


def state(store, object_id):
    return {o.object_id: o for o in store.list_objects()}[object_id].state


# --- basics -----------------------------------------------------------------------


def test_create_seal_get_release(make_store):
    async def main():
        store = make_store()
        data = payload(1)
        await put(store, oid(1), data)
        [entry] = await store.get("reader", [oid(1)])
        assert read(store, entry) == data
        assert store.stats()["pinned"] == SIZE
        assert store.list_objects()[0].pins == 1
        store.release("reader", [oid(1)])
        assert store.stats()["pinned"] == 0
        assert store.contains(oid(1))
    run(main())


def test_get_of_unknown_object_is_none_at_once(make_store):
    async def main():
        store = make_store()
        await put(store, oid(1), payload(1))
        entries = await store.get("reader", [oid(2), oid(1), oid(3)], timeout=None)
        assert entries[0] is None and entries[2] is None
        assert entries[1].object_id == oid(1)
    run(main())


def test_bad_sizes_and_duplicate_ids_are_rejected_at_once(make_store):
    async def main():
        store = make_store()
        with pytest.raises(ValueError, match=f"Cannot create object {oid(1).hex()} with a "
                                             r"negative size \(-1 bytes\)"):
            await store.create(oid(1), -1)
        await put(store, oid(1), payload(1))
        with pytest.raises(ObjectExistsError, match="already in the object store"):
            await store.create(oid(1), 10)
        assert store.stats()["num_objects"] == 1
    run(main())


def test_seal_of_unknown_object_raises(make_store):
    async def main():
        store = make_store()
        with pytest.raises(ValueError, match="not being created"):
            store.seal(oid(9))
    run(main())


# --- eviction and spilling -------------------------------------------------------


def test_secondary_copies_are_evicted_in_lru_order(make_store):
    async def main():
        store = make_store()
        for i in range(4):
            await put(store, oid(i), payload(i), primary=False)
        for i in (0, 2, 1):  # use order: 3 is least recently used, then 0, 2, 1
            await store.get("r", [oid(i)])
            store.release("r", [oid(i)])
        await put(store, oid(10), payload(10))
        assert not store.contains(oid(3))
        await put(store, oid(11), payload(11))
        assert not store.contains(oid(0))
        assert store.contains(oid(2)) and store.contains(oid(1))
        stats = store.stats()
        assert stats["evicted"] == 2 and stats["spilled"] == 0
        assert spill_files(store) == []
    run(main())


def test_secondaries_go_before_any_primary_is_spilled(make_store):
    async def main():
        store = make_store()
        await put(store, oid(0), payload(0))                 # primary, oldest
        await put(store, oid(1), payload(1), primary=False)
        await put(store, oid(2), payload(2), primary=False)
        await put(store, oid(3), payload(3))
        await put(store, oid(4), payload(4))
        await put(store, oid(5), payload(5))
        stats = store.stats()
        assert stats["evicted"] == 2 and stats["spilled"] == 0
        await put(store, oid(6), payload(6))
        assert store.stats()["spilled"] == 1
        assert state(store, oid(0)) == "SPILLED"  # the LRU primary
    run(main())


def test_spilling_two_and_a_half_times_capacity_restores_identical_bytes(make_store):
    async def main():
        store = make_store()
        data = {i: payload(i) for i in range(10)}
        for i, d in data.items():
            await put(store, oid(i), d)
        stats = store.stats()
        assert stats["num_objects"] == 10
        assert stats["num_spilled"] == 6 and stats["spilled_bytes"] == 6 * SIZE
        assert len(spill_files(store)) == 6
        for i in range(10):  # each read restores (and spills another) transparently
            [entry] = await store.get("r", [oid(i)])
            assert read(store, entry) == data[i], f"object {i} came back different"
            store.release("r", [oid(i)])
        stats = store.stats()
        assert stats["restored"] >= 6
        assert stats["used"] <= CAPACITY and stats["pinned"] == 0
    run(main())


def test_restored_object_keeps_its_file_so_spilling_it_again_is_free(make_store):
    async def main():
        store = make_store()
        for i in range(5):
            await put(store, oid(i), payload(i))
        assert state(store, oid(0)) == "SPILLED"
        await store.get("r", [oid(0)])  # restores 0, spills 1
        store.release("r", [oid(0)])
        spilled_before = store.stats()["spilled"]
        await put(store, oid(5), payload(5))  # drops 0's memory copy: already on disk
        assert state(store, oid(0)) == "SPILLED"
        assert store.stats()["spilled"] == spilled_before
    run(main())


def test_pinned_objects_are_neither_spilled_nor_evicted(make_store):
    async def main():
        store = make_store()
        for i in range(4):
            await put(store, oid(i), payload(i), primary=(i % 2 == 0))
        await store.get("reader", [oid(i) for i in range(4)])
        with pytest.raises(ObjectStoreFullError) as info:
            await store.create(oid(9), SIZE)
        text = str(info.value)
        assert "cannot allocate 256.0 KiB" in text
        assert "capacity 1.0 MiB" in text and "1.0 MiB in use" in text
        assert "1.0 MiB is pinned by readers" in text
        assert "object_store_memory" in text and "free references" in text
        assert store.stats()["evicted"] == 0 and spill_files(store) == []
        store.release("reader", [oid(1)])  # an unpinned secondary can go now
        await put(store, oid(9), payload(9))
        assert not store.contains(oid(1))
        assert all(store.contains(oid(i)) for i in (0, 2, 3))
    run(main())


def test_objects_being_written_are_not_spilled(make_store):
    async def main():
        store = make_store()
        for i in range(4):
            await store.create(oid(i), SIZE, client_id="w")
        with pytest.raises(ObjectStoreFullError, match="1.0 MiB is being written"):
            await store.create(oid(9), SIZE)
    run(main())


def test_failed_spill_is_reported_in_the_full_error(make_store, tmp_path):
    async def main():
        blocker = tmp_path / "not-a-dir"
        blocker.write_text("")
        store = make_store()
        store.spill_dir = str(blocker / "spill")
        for i in range(4):
            await put(store, oid(i), payload(i))
        with pytest.raises(ObjectStoreFullError, match="Spilling to disk failed"):
            await store.create(oid(9), SIZE)
        assert all(store.contains(oid(i)) for i in range(4))
        [entry] = await store.get("r", [oid(0)])  # still intact in memory
        assert read(store, entry)[:4] == (0).to_bytes(4, "little")
    run(main())


# --- deleting ---------------------------------------------------------------------


def test_delete_frees_memory_and_removes_spill_files(make_store):
    async def main():
        store = make_store()
        for i in range(8):
            await put(store, oid(i), payload(i))
        assert len(spill_files(store)) == 4
        store.delete([oid(i) for i in range(8)] + [oid(99)])
        await store.drain_io()
        assert spill_files(store) == []
        stats = store.stats()
        assert stats["num_objects"] == 0 and stats["used"] == 0
        assert await store.get("r", [oid(0)]) == [None]
    run(main())


def test_delete_of_pinned_object_frees_memory_when_unpinned(make_store):
    async def main():
        store = make_store()
        await put(store, oid(1), payload(1))
        await store.get("reader", [oid(1)])
        store.delete([oid(1)])
        assert await store.get("other", [oid(1)]) == [None]
        stats = store.stats()
        assert stats["used"] == SIZE and stats["num_deleted_pinned"] == 1
        # The id can be created again while the old copy is still pinned.
        again = payload(2)
        await put(store, oid(1), again)
        assert store.stats()["used"] == 2 * SIZE
        store.release("reader", [oid(1)])
        stats = store.stats()
        assert stats["used"] == SIZE and stats["num_deleted_pinned"] == 0
        [entry] = await store.get("other", [oid(1)])
        assert read(store, entry) == again
    run(main())


def test_delete_while_being_written_frees_after_seal(make_store):
    async def main():
        store = make_store()
        await store.create(oid(1), SIZE, client_id="w")
        store.delete([oid(1)])
        assert store.stats()["used"] == SIZE
        store.seal(oid(1))
        assert store.stats()["used"] == 0
    run(main())


# --- corrupt spill files --------------------------------------------------------------


def _corrupt_flip(path):
    with open(path, "r+b") as f:
        f.seek(-100, os.SEEK_END)
        byte = f.read(1)
        f.seek(-100, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0xFF]))


def _corrupt_truncate(path):
    os.truncate(path, os.path.getsize(path) - 1000)


def _corrupt_remove(path):
    os.unlink(path)


def _corrupt_header(path):
    with open(path, "r+b") as f:
        f.write(b"garbage!")


@pytest.mark.parametrize("damage, reason", [
    (_corrupt_flip, r"is corrupt \(CRC32 of the data is 0x[0-9a-f]{8}, the header says"),
    (_corrupt_truncate, r"is truncated or padded \(\d+ bytes, expected \d+\)"),
    (_corrupt_remove, r"is missing"),
    (_corrupt_header, r"is not a spill file"),
])
def test_damaged_spill_file_gives_a_clear_error(make_store, damage, reason):
    async def main():
        store = make_store()
        for i in range(5):
            await put(store, oid(i), payload(i))
        [path] = [os.path.join(store.spill_dir, f) for f in spill_files(store)]
        assert oid(0).hex() in path
        damage(path)
        with pytest.raises(SpilledObjectCorruptError) as info:
            await store.get("r", [oid(4), oid(0)])
        assert isinstance(info.value, ObjectLostError)
        text = str(info.value)
        assert text.startswith(f"Object {oid(0).hex()} was spilled to disk, but its spill "
                               f"file {path} ")
        assert re.search(reason, text), text
        assert "the value is lost" in text
        stats = store.stats()
        assert stats["pinned"] == 0, "a failed get must not keep pins"
        # Object 1 was spilled to make room; the failed restore gave its space back.
        assert stats["used"] == 3 * SIZE
        with pytest.raises(SpilledObjectCorruptError):  # again: no hang, same error
            await store.get("r", [oid(0)])
    run(main())


# --- waiting ------------------------------------------------------------------------


def test_get_waits_for_the_seal(make_store):
    async def main():
        store = make_store()
        offset = await store.create(oid(1), 100, client_id="w")
        reader = asyncio.ensure_future(store.get("r", [oid(1)], timeout=None))
        await asyncio.sleep(0)
        assert not reader.done()
        store.arena.view[offset:offset + 5] = b"hello"
        store.seal(oid(1))
        [entry] = await reader
        assert read(store, entry)[:5] == b"hello"
        assert store.list_objects()[0].pins == 1
    run(main())


def test_get_timeout_on_unsealed_object_returns_none(make_store):
    async def main():
        store = make_store()
        await store.create(oid(1), 100, client_id="w")
        await put(store, oid(2), b"x" * 100)
        assert (await store.get("r", [oid(1)], timeout=0))[0] is None
        entries = await store.get("r", [oid(1), oid(2)], timeout=0.01)
        assert entries[0] is None and entries[1].object_id == oid(2)
        store.seal(oid(1))  # no stale waiter is woken or pinned
        assert [o.pins for o in store.list_objects()] == [0, 1]
    run(main())


def test_cancelled_get_drops_the_pins_it_took(make_store):
    async def main():
        store = make_store()
        await put(store, oid(1), payload(1))
        await store.create(oid(2), 100, client_id="w")
        reader = asyncio.ensure_future(store.get("r", [oid(1), oid(2)]))
        await asyncio.sleep(0)
        assert store.stats()["pinned"] == SIZE
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        assert store.stats()["pinned"] == 0
        store.seal(oid(2))
        assert store.stats()["pinned"] == 0
    run(main())


def test_release_client_drops_pins_and_aborts_what_it_was_writing(make_store):
    async def main():
        store = make_store()
        await put(store, oid(1), payload(1))
        await store.get("conn-a", [oid(1), oid(1)])
        await store.create(oid(2), SIZE, client_id="conn-a")
        waiter = asyncio.ensure_future(store.get("conn-b", [oid(2)]))
        await asyncio.sleep(0)
        store.release_client("conn-a")
        assert await waiter == [None]
        stats = store.stats()
        assert stats["pinned"] == 0 and stats["aborted"] == 1
        assert stats["used"] == SIZE and not store.contains(oid(2))
        store.release("conn-a", [oid(1)])  # late release after disconnect: harmless
        assert store.list_objects()[0].pins == 0
    run(main())


def test_concurrent_readers_share_one_restore(make_store):
    async def main():
        store = make_store()
        for i in range(5):
            await put(store, oid(i), payload(i))
        restores = []
        original = store._restore

        def counting_restore(entry):
            restores.append(entry.object_id)
            return original(entry)
        store._restore = counting_restore
        results = await asyncio.gather(store.get("a", [oid(0)]), store.get("b", [oid(0)]))
        assert restores == [oid(0)]
        assert results[0][0] is results[1][0]
        assert store.stats()["restored"] == 1
        listed = {o.object_id: o for o in store.list_objects()}
        assert listed[oid(0)].pins == 2
    run(main())


def test_get_of_deleted_object_while_restoring_returns_none(make_store):
    async def main():
        store = make_store()
        for i in range(5):
            await put(store, oid(i), payload(i))
        reader = asyncio.ensure_future(store.get("r", [oid(0)]))
        await asyncio.sleep(0)
        store.delete([oid(0)])
        assert await reader == [None]
        # The restore runs to its end, then frees its space and the file.
        await wait_until(lambda: store.stats()["num_deleted_pinned"] == 0)
        await store.drain_io()
        assert not any(oid(0).hex() in f for f in spill_files(store))
        assert store.stats()["used"] <= 4 * SIZE
    run(main())


# --- trimming and introspection --------------------------------------------------------


def test_trim_returns_long_free_pages_to_the_kernel(make_store):
    async def main():
        store = make_store(capacity=16 * 1024 * KiB, trim_after_s=5, trim_min_bytes=1)
        big = 8 * 1024 * KiB
        await put(store, oid(1), b"\x01" * big)
        assert store.arena.resident_bytes() >= big
        store.delete([oid(1)])
        assert await store.trim() == 0  # freed too recently (the clock counts calls)
        for _ in range(10):
            store._clock()
        released = await store.trim()
        assert released >= big - 8192
        assert store.arena.resident_bytes() < 64 * KiB
        assert await store.trim() == 0  # already clean
        assert store.stats()["trimmed_bytes"] == released
        await put(store, oid(2), b"\x02" * 1000)  # the range is usable again
    run(main())


def test_stats_and_list_objects(make_store):
    async def main():
        store = make_store()
        for i in range(5):
            await put(store, oid(i), payload(i))
        await store.create(oid(7), 10, client_id="w")
        stats = store.stats()
        for key in ("capacity", "used", "pinned", "num_objects", "num_spilled",
                    "spilled_bytes", "restored", "evicted"):
            assert key in stats
        assert stats["capacity"] == CAPACITY and stats["num_objects"] == 6
        listed = {o.object_id: o for o in store.list_objects()}
        assert listed[oid(0)].spilled and listed[oid(0)].state == "SPILLED"
        assert listed[oid(7)].state == ObjectState.CREATED.value
        assert listed[oid(4)].size == SIZE and listed[oid(4)].is_primary
        debug = store.debug_state()
        assert debug["allocator"]["capacity"] == CAPACITY
    run(main())


def test_an_object_larger_than_the_store_lives_in_a_file_of_its_own(make_store):
    """Ray's fallback allocation: refused only when the disk cannot hold it either."""
    async def main():
        store = make_store()
        await put(store, oid(1), payload(1))  # an arena object beside it stays put
        big = payload(2, 2 * CAPACITY)
        assert await store.create(oid(2), len(big), client_id="writer") == -1
        path = store.path_of(oid(2))
        assert os.path.exists(path) and os.path.dirname(path) == store.spill_dir
        store.contents(store.entry(oid(2)))[:] = big
        store.seal(oid(2))
        (entry,) = await store.get("reader", [oid(2)])
        assert entry.offset == -1 and bytes(store.contents(entry)) == big
        stats = store.stats()
        assert stats["created_on_disk"] == 1 and stats["on_disk_bytes"] == len(big)
        assert stats["used"] <= CAPACITY and stats["spilled"] == 0
        store.delete([oid(2)])
        assert os.path.exists(path)  # pinned by the reader: kept until released
        store.release("reader", [oid(2)])
        await store.drain_io()
        assert not os.path.exists(path)
        import shutil
        no_room = shutil.disk_usage(store.spill_dir).free + 1
        with pytest.raises(ObjectStoreFullError) as info:
            await store.create(oid(3), no_room)
        assert "more than the whole object store" in str(info.value)
        assert "Free disk space" in str(info.value)
        assert not store.contains(oid(3)) and spill_files(store) == []
    run(main())


def test_closing_the_store_removes_on_disk_objects(make_store):
    async def main():
        store = make_store()
        await store.create(oid(1), 2 * CAPACITY, client_id="writer")
        path = store.path_of(oid(1))
        store.close()
        assert not os.path.exists(path)
    run(main())


def test_an_object_moves_only_along_its_lifecycle():
    """CREATED -> SEALED <-> SPILLED; anything else is a bug in ember, named as such."""
    entry = Entry(oid(1), SIZE, 0, None, True, None, 0.0)
    for bad in (ObjectState.SPILLED, ObjectState.CREATED):
        with pytest.raises(IllegalTransition, match=r"object 01000000.*CREATED -> ") as info:
            entry.transition(bad)
        assert isinstance(info.value, RaySystemError)
    for good in (ObjectState.SEALED, ObjectState.SPILLED, ObjectState.SEALED):
        entry.transition(good)
        assert entry.state is good
    with pytest.raises(IllegalTransition, match="SEALED -> SEALED"):
        entry.transition(ObjectState.SEALED)
