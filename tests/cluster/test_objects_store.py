"""Large objects through a real cluster's shared-memory store.

Zero-copy reads, a 1 GB round trip, freeing (checked through the store's own
counters), spilling and restoring under memory pressure, ObjectStoreFullError,
and corrupt spill files. Every check of the store's state goes through its
statistics (``StoreClient.stats()``), and every wait is for a state.
"""
from __future__ import annotations

import gc
import os
import shutil

import numpy as np
import psutil
import pytest

import ember as ray
from ember.core_worker import context
from ember.exceptions import ObjectLostError, ObjectStoreFullError, OwnerDiedError
from helpers import DriverProcess, wait_for_condition

MB = 1024 * 1024


def store_stats() -> dict:
    return context.core.object_store.stats()


def spill_dir() -> str:
    return os.path.join(context.core.session_dir, "spill")


def spill_files() -> list[str]:
    try:
        return sorted(os.listdir(spill_dir()))
    except FileNotFoundError:
        return []


def filled(nbytes: int, value: int) -> np.ndarray:
    return np.full(nbytes // 8, value, dtype=np.int64)


def wait_store_empty(timeout: float = 20.0) -> None:
    """Drop garbage, then wait until the store holds nothing and has no spill files."""
    gc.collect()

    last = {}

    def empty():
        last["stats"], last["files"] = stats, files = store_stats(), spill_files()
        return (stats["used"] == 0 and stats["num_objects"] == 0
                and stats["num_deleted_pinned"] == 0 and not files)
    try:
        wait_for_condition(empty, timeout, message="the store to be empty")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; store: {last.get('stats')}, spill files: "
                             f"{last.get('files')}") from None


@ray.remote
def inspect_array(array):
    return {"writeable": array.flags.writeable, "owndata": array.flags.owndata,
            "sum": int(array.sum()), "nbytes": array.nbytes}


@ray.remote
def anonymous_memory(array):
    """(pid, this worker's anonymous resident memory), with ``array`` held meanwhile."""
    return os.getpid(), anon_rss()


def anon_rss() -> int:
    """Bytes of private (not shared-memory) resident memory of this process."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no RssAnon in /proc/self/status")


@ray.remote
def identity(value):
    return value


@ray.remote
def make_array(nbytes, value):
    return np.full(nbytes // 8, value, dtype=np.int64)


# --- zero copy ------------------------------------------------------------------------


def test_get_returns_read_only_views_that_share_pages(shared):
    array = np.arange(2 * MB // 8, dtype=np.int64)
    ref = ray.put(array)
    first = ray.get(ref)
    second = ray.get(ref)
    np.testing.assert_array_equal(first, array)
    assert not first.flags.writeable and not second.flags.writeable
    assert np.shares_memory(first, second)
    with pytest.raises(ValueError, match="read-only"):
        first[0] = 1
    # Views inside containers come from the store too.
    pair = ray.get(ray.put({"a": array, "b": array[: 1000].copy()}))
    assert not pair["a"].flags.writeable
    np.testing.assert_array_equal(pair["a"], array)
    del first, second, pair, ref
    wait_store_empty()


def test_large_task_argument_arrives_without_a_copy(shared):
    array = np.ones(4 * MB // 8, dtype=np.int64)
    # By ref, and by value (the caller puts a large argument in the store).
    for arg in (ray.put(array), array):
        seen = ray.get(inspect_array.remote(arg))
        assert seen == {"writeable": False, "owndata": False, "sum": array.size,
                        "nbytes": array.nbytes}
    # A large result comes back as a read-only view as well.
    result = ray.get(identity.remote(array))
    assert not result.flags.writeable
    np.testing.assert_array_equal(result, array)
    del result, arg
    wait_store_empty()


# --- freeing ----------------------------------------------------------------------------


def test_dropped_objects_leave_the_store(shared):
    refs = [ray.put(filled(2 * MB, i)) for i in range(5)]
    refs += [make_array.remote(2 * MB, i) for i in range(5)]
    values = ray.get(refs)
    assert [int(v[0]) for v in values] == list(range(5)) * 2
    stats = store_stats()
    assert stats["num_objects"] == 10 and stats["used"] >= 20 * MB
    # The refs alone keep the objects; views alone keep only their memory.
    del refs
    gc.collect()
    wait_for_condition(lambda: store_stats()["num_objects"] == 0,
                       message="objects deleted once their refs are gone")
    assert store_stats()["used"] >= 20 * MB, "memory freed while views are alive"
    assert int(values[3][-1]) == 3
    del values
    wait_store_empty()
    # The raylet reports the same through GetMemoryInfo.
    from ember.state import fetch_memory
    [(_, reply)] = fetch_memory(ray.get_runtime_context().gcs_address)
    assert reply.store_stats["used"] == 0 and reply.stored == []


@pytest.mark.timeout(90)
def test_objects_of_a_driver_that_exits_are_freed(shared, tmp_path):
    driver = DriverProcess(tmp_path, f"""
        import os, sys
        import numpy as np
        import ember as ray
        ray.init(address={ray.get_runtime_context().gcs_address!r})
        refs = [ray.put(np.ones(5 * 1024 * 1024)) for _ in range(3)]
        print("READY", flush=True)
        sys.stdin.read()
        os._exit(0)  # no shutdown, no frees: the raylet must clean up
        """)
    try:
        driver.wait_for_line(lambda line: line == "READY")
        assert store_stats()["num_objects"] == 3
        driver.finish()
        wait_store_empty()
    finally:
        driver.kill()


def test_bad_object_size_is_refused_clearly(shared):
    """A create with an impossible size gets an error reply at once, not a hang."""
    from ember.protocol import object_store as msg
    client = context.core.object_store
    reply = client._call(msg.CreateObject(os.urandom(28), -5))
    assert reply.error_type == "ValueError" and "negative size (-5 bytes)" in reply.error_message
    # Larger than the store goes to a file of its own, unless the disk is too small.
    huge = shutil.disk_usage(context.core.session_dir).free + client.capacity + 1
    reply = client._call(msg.CreateObject(os.urandom(28), huge))
    assert reply.error_type == "ObjectStoreFullError"
    assert "more than the whole object store" in reply.error_message
    assert "Free disk space" in reply.error_message
    assert store_stats()["num_objects"] == 0 and spill_files() == []


@pytest.mark.timeout(180)
def test_one_gigabyte_round_trip(fresh):
    fresh(num_cpus=1, object_store_memory=2560 * MB)
    n = 1024 * MB // 8
    array = np.arange(n, dtype=np.int64)
    ref = ray.put(array)
    got = ray.get(ref)
    assert got.nbytes == 1024 * MB and not got.flags.writeable
    assert np.array_equal(got, array)
    del got
    # Through a task: the worker maps the store copy (its private memory does
    # not grow by a gigabyte) and returns a new one.
    pid, baseline = ray.get(anonymous_memory.remote(np.zeros(8)))
    same_pid, holding = ray.get(anonymous_memory.remote(ref))
    assert same_pid == pid, "the two tasks ran on different workers"
    assert holding - baseline < 64 * MB, f"the worker copied the argument: {holding - baseline}"
    seen = ray.get(inspect_array.remote(ref))
    assert seen["writeable"] is False and seen["nbytes"] == 1024 * MB
    assert seen["sum"] == n * (n - 1) // 2
    back_ref = identity.remote(ref)
    del ref
    back = ray.get(back_ref)
    assert np.array_equal(back, array)
    del array, back, back_ref
    wait_store_empty()


@pytest.mark.timeout(120)
def test_put_and_drop_loop_runs_in_a_small_store(fresh):
    fresh(num_cpus=1, object_store_memory=200 * MB)
    for i in range(40):  # 2 GB through a 200 MB store
        ref = ray.put(filled(50 * MB, i))
        value = ray.get(ref)
        assert value[0] == i and value[-1] == i
        del ref, value
    for i in range(20):
        value = ray.get(make_array.remote(50 * MB, i))
        assert value[0] == i and value[-1] == i
        del value
    stats = store_stats()
    # Freed objects made room for the next ones: nothing had to go to disk.
    assert stats["spilled"] == 0, stats
    assert stats["created"] == 60, stats
    wait_store_empty()


# --- spilling -----------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_spill_and_restore_more_than_the_store_holds(fresh):
    fresh(num_cpus=1, object_store_memory=200 * MB)
    refs = [ray.put(filled(20 * MB, i)) for i in range(25)]  # 500 MB live
    stats = store_stats()
    assert stats["num_objects"] == 25
    assert stats["spilled"] >= 15 and stats["num_spilled"] >= 15, stats
    assert stats["used"] <= 200 * MB
    assert len(spill_files()) >= 15
    for i, ref in enumerate(refs):
        value = ray.get(ref)
        assert value.shape == (20 * MB // 8,) and value[0] == i and value[-1] == i
        assert np.all(value == i)
        del value
    del ref
    stats = store_stats()
    assert stats["restored"] >= 15, stats
    # A task reads spilled objects too.
    sums = ray.get([inspect_array.remote(ref) for ref in refs[:5]])
    assert [s["sum"] for s in sums] == [i * (20 * MB // 8) for i in range(5)]
    del refs
    wait_store_empty()


def _spilled_object(refs):
    """A ref among ``refs`` whose object is only on disk now, and its spill file."""
    states = {o.object_id: o.state for o in context.core.object_store.list_objects()}
    for ref in refs:
        if states.get(ref.binary()) == "SPILLED":
            [name] = [f for f in spill_files() if ref.hex() in f]
            return ref, os.path.join(spill_dir(), name)
    raise AssertionError(f"no spilled object among {len(refs)}: {states}")


@pytest.mark.timeout(90)
def test_corrupt_or_truncated_spill_file_raises_a_clear_error(fresh):
    fresh(num_cpus=1, object_store_memory=100 * MB)
    refs = [ray.put(filled(20 * MB, i)) for i in range(8)]
    flipped, flipped_path = _spilled_object(refs)
    with open(flipped_path, "r+b") as f:
        f.seek(-100, os.SEEK_END)
        byte = f.read(1)
        f.seek(-100, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ObjectLostError) as info:
        ray.get(flipped, timeout=60)
    assert flipped_path in str(info.value) and "CRC32" in str(info.value)

    truncated, truncated_path = _spilled_object([r for r in refs if r != flipped])
    os.truncate(truncated_path, os.path.getsize(truncated_path) // 2)
    with pytest.raises(ObjectLostError) as info:
        ray.get(truncated, timeout=60)
    assert truncated_path in str(info.value) and "truncated" in str(info.value)

    # The other objects and the session are unharmed, and nothing stays behind.
    good = [r for r in refs if r not in (flipped, truncated)]
    for ref in good:
        value = ray.get(ref, timeout=60)
        assert value[0] == refs.index(ref)
        del value
    assert ray.get(identity.remote(7)) == 7
    # (The exceptions' tracebacks hold frames that hold the refs.)
    del refs, good, flipped, truncated, ref, info
    wait_store_empty()


# --- a full store -------------------------------------------------------------------------


def test_object_larger_than_the_store_lives_in_a_file_of_its_own(fresh):
    """As Ray's fallback allocation: a value larger than the whole store is put, passed
    to tasks and returned by them, from a file in the spill directory that goes when
    the object is freed."""
    fresh(num_cpus=1, object_store_memory=100 * MB)
    ref = ray.put(filled(150 * MB, 7))
    value = ray.get(ref)
    assert value.nbytes == 150 * MB and value[0] == 7 and value[-1] == 7
    assert not value.flags.writeable  # a read-only view of the file, not a copy
    assert store_stats()["on_disk_bytes"] >= 150 * MB and store_stats()["used"] == 0
    assert ray.get(inspect_array.remote(ref))["sum"] == 7 * (150 * MB // 8)
    returned = ray.get(make_array.remote(150 * MB, 1))  # a task's too-large result
    assert returned[-1] == 1 and store_stats()["created_on_disk"] == 2
    assert ray.get(identity.remote("still works")) == "still works"
    del value, returned, ref
    wait_store_empty()


def test_store_full_of_pinned_objects_raises_then_recovers(fresh):
    fresh(num_cpus=1, object_store_memory=100 * MB)
    refs = [ray.put(filled(20 * MB, i)) for i in range(4)]
    views = ray.get(refs)  # every object pinned by a live view: nothing may spill
    with pytest.raises(ObjectStoreFullError) as info:
        ray.put(filled(30 * MB, 9))
    message = str(info.value)
    assert "cannot allocate 30.0 MiB" in message and "pinned" in message
    assert "80.0 MiB" in message  # what the readers pin
    assert [int(v[0]) for v in views] == [0, 1, 2, 3]
    del views
    gc.collect()
    # Once the views are gone the same put spills instead of failing.
    extra = ray.put(filled(30 * MB, 9))
    assert ray.get(extra)[0] == 9
    assert store_stats()["spilled"] >= 1
    assert [int(ray.get(r)[1]) for r in refs] == [0, 1, 2, 3]
    # Reading a spilled object while views pin everything else cannot restore it.
    states = {o.object_id: o.state for o in context.core.object_store.list_objects()}
    spilled = [r for r in refs if states[r.binary()] == "SPILLED"]
    in_memory = [r for r in refs + [extra] if states[r.binary()] == "SEALED"]
    assert spilled and in_memory
    views = ray.get(in_memory)
    with pytest.raises(ObjectStoreFullError, match="Cannot restore spilled object") as info:
        ray.get(spilled[0], timeout=60)
    assert spilled[0].hex() in str(info.value) and "pinned" in str(info.value)
    del views
    gc.collect()
    assert ray.get(spilled[0], timeout=60)[2] == refs.index(spilled[0])
    del refs, extra, spilled, in_memory, info
    wait_store_empty()


# --- owners that die ------------------------------------------------------------------------


@ray.remote
class Putter:
    def put_many(self, n, nbytes):
        return [ray.put(filled(nbytes, i)) for i in range(n)]

    def pid(self):
        return os.getpid()


@pytest.mark.timeout(90)
def test_objects_and_spill_files_of_a_dead_owner_are_freed(fresh):
    fresh(num_cpus=1, object_store_memory=100 * MB)
    putter = Putter.remote()
    pid = ray.get(putter.pid.remote())
    refs = ray.get(putter.put_many.remote(8, 20 * MB))  # 160 MiB: some spill
    stats = store_stats()
    assert stats["num_objects"] == 8 and stats["num_spilled"] >= 3, stats
    assert spill_files()
    ray.kill(putter)
    wait_for_condition(lambda: not psutil.pid_exists(pid)
                       or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
                       message="the owner actor to die")
    wait_store_empty()
    with pytest.raises(OwnerDiedError):
        ray.get(refs[0], timeout=30)
