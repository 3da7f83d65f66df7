"""Objects across nodes: pulls between the stores of a two-node ``Cluster``.

The driver sits on the head node; tasks pinned to the second node make or
read large values, so every ``get`` of such a value, and every large
argument, crosses nodes through the raylets' object managers. What each
test checks goes through the raylets' own counters (``debug_state()``:
object store and object manager), never through timing.

Every test runs twice: with the raylets copying through shared memory, as
nodes on one machine do, and through TCP, as nodes on separate machines do
(``EMBER_OBJECT_TRANSFER_SAME_HOST=0``).
"""
from __future__ import annotations

import gc
import os
import time
import zlib

import numpy as np
import pytest

import ember
from ember.cluster_utils import Cluster
from ember.core_worker import context
from ember.exceptions import ObjectLostError
from ember.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from helpers import wait_for_condition

MB = 1024 * 1024
STORE = 2560 * MB


PATHS = {"shared memory": "1", "tcp": "0"}


@pytest.fixture(scope="module", params=list(PATHS))
def _cluster(request):
    ember.shutdown()
    os.environ["EMBER_OBJECT_TRANSFER_SAME_HOST"] = PATHS[request.param]
    try:
        cluster = Cluster()
        head = cluster.add_node(num_cpus=1, object_store_memory=STORE)
        second = cluster.add_node(num_cpus=2, object_store_memory=STORE)
    finally:
        del os.environ["EMBER_OBJECT_TRANSFER_SAME_HOST"]
    yield cluster, head, second, request.param
    ember.shutdown()
    cluster.shutdown()


@pytest.fixture
def two_nodes(_cluster):
    """A head (1 CPU) and a second node (2 CPUs), 2.5 GiB stores; the driver on the head."""
    cluster = _cluster[0]
    core = context.core
    if not ember.is_initialized() or core.gcs_address != cluster.address:
        ember.shutdown()
        ember.init(address=cluster.address)
    return _cluster[:3]


@pytest.fixture
def path(_cluster) -> str:
    """How the raylets of this run copy objects: "shared memory" or "tcp"."""
    return _cluster[3]


def on(node, **options):
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node.node_id, soft=False),
            **options}


@ember.remote
def make_range(nbytes: int):
    return np.arange(nbytes // 8, dtype=np.int64)


@ember.remote
def checksum(array) -> int:
    return zlib.crc32(array)


def equals_range(array: np.ndarray, chunk: int = 16 * MB // 8) -> bool:
    """``array == arange(len(array))`` without allocating a second array of its size."""
    expected = np.arange(chunk, dtype=np.int64)
    scratch = np.empty(chunk, dtype=np.int64)
    for start in range(0, len(array), chunk):
        part = array[start:start + chunk]
        np.add(expected[:len(part)], start, out=scratch[:len(part)])
        if not np.array_equal(part, scratch[:len(part)]):
            return False
    return True


def manager(node) -> dict:
    return node.debug_state()["object_manager"]


def store(node) -> dict:
    return node.debug_state()["object_store"]


def copied(stats: dict) -> int:
    """Bytes an object manager copied in, by either path."""
    return stats["bytes_received"] + stats["bytes_copied_same_host"]


def stores_empty(*nodes) -> bool:
    return all(store(n)["num_objects"] == 0 and store(n)["used"] == 0 for n in nodes)


def test_driver_gets_array_made_on_other_node(two_nodes, path):
    cluster, head, second = two_nodes
    before = manager(head)
    ref = make_range.options(**on(second)).remote(64 * MB)
    array = ember.get(ref)
    assert array.nbytes == 64 * MB and not array.flags.writeable
    assert equals_range(array)
    after = manager(head)
    assert after["transfers_completed"] == before["transfers_completed"] + 1
    assert copied(after) - copied(before) >= 64 * MB
    assert after["last_transfer"]["path"] == path
    # The head holds a secondary copy; the second node keeps the primary.
    assert store(head)["num_objects"] == 1 and store(second)["num_objects"] == 1
    # A second get is served from the local copy: no new transfer.
    assert equals_range(ember.get(ref))
    assert manager(head)["transfers_started"] == after["transfers_started"]
    del array, ref
    gc.collect()
    wait_for_condition(lambda: stores_empty(head, second), timeout=20,
                       message="both stores to be empty")


def test_large_argument_put_on_head_is_read_on_other_node(two_nodes):
    cluster, head, second = two_nodes
    value = np.random.default_rng(5).integers(0, 255, 48 * MB, dtype=np.uint8)
    ref = ember.put(value)
    before = manager(second)
    assert ember.get(checksum.options(**on(second)).remote(ref)) == zlib.crc32(value)
    after = manager(second)
    assert after["transfers_completed"] == before["transfers_completed"] + 1
    assert copied(after) - copied(before) >= 48 * MB
    del ref
    wait_for_condition(lambda: stores_empty(head, second), timeout=20,
                       message="both stores to be empty")


def test_freeing_deletes_copies_on_every_node(two_nodes):
    cluster, head, second = two_nodes
    # Primary on the second node, copies pulled to the head (driver) and back.
    made = make_range.options(**on(second)).remote(32 * MB)
    put = ember.put(np.arange(32 * MB // 8, dtype=np.int64))  # primary on the head
    assert equals_range(ember.get(made))
    assert ember.get(checksum.options(**on(second)).remote(put)) == \
        zlib.crc32(np.arange(32 * MB // 8, dtype=np.int64))
    assert store(head)["num_objects"] == 2 and store(second)["num_objects"] == 2
    del made, put
    gc.collect()
    wait_for_condition(lambda: stores_empty(head, second), timeout=20,
                       message="every copy on both nodes to be deleted")
    assert store(head)["deleted"] >= 2 and store(second)["deleted"] >= 2


def test_concurrent_readers_on_one_node_share_one_transfer(two_nodes, tmp_path):
    """Two tasks on the second node read the same 200 MB object of the head at once."""
    cluster, head, second = two_nodes
    size = 200 * MB
    ref = ember.put(np.ones(size, dtype=np.uint8))
    barrier = str(tmp_path)

    @ember.remote(num_cpus=1)
    def read_together(refs, name):
        # Both readers get the object at the same moment: wait for each other first.
        open(os.path.join(barrier, name), "w").close()
        deadline = time.monotonic() + 60
        while len(os.listdir(barrier)) < 2 and time.monotonic() < deadline:
            time.sleep(0.001)
        array = ember.get(refs[0])
        return int(array[::4096].sum()), array.nbytes

    before = manager(second)
    results = ember.get([read_together.options(**on(second)).remote([ref], name)
                         for name in ("a", "b")])
    assert results == [(size // 4096, size)] * 2
    after = manager(second)
    assert after["pull_requests"] - before["pull_requests"] == 2
    assert after["transfers_started"] - before["transfers_started"] == 1
    assert copied(after) - copied(before) == _stored_size(second, ref)
    # The second reader joined the transfer, or found its result already there.
    assert (after["pulls_joined"] + after["pulls_already_local"]
            - before["pulls_joined"] - before["pulls_already_local"]) == 1
    del ref
    wait_for_condition(lambda: stores_empty(head, second), timeout=20,
                       message="both stores to be empty")


def _stored_size(node, ref) -> int:
    """Size in the store (value plus its header) of ``ref``'s copy on ``node``."""
    state = node.debug_state()["object_manager"]["last_transfer"]
    assert state["object_id"] == ref.hex()
    return state["bytes"]


@pytest.mark.timeout(180)
def test_gigabyte_object_crosses_nodes(two_nodes, path):
    cluster, head, second = two_nodes
    size = 1024 * MB
    ref = make_range.options(**on(second)).remote(size)
    array = ember.get(ref, timeout=150)
    assert array.nbytes == size
    assert equals_range(array)
    last = manager(head)["last_transfer"]
    assert last["object_id"] == ref.hex() and last["bytes"] >= size
    assert last["path"] == path
    del array, ref
    wait_for_condition(lambda: stores_empty(head, second), timeout=30,
                       message="both stores to be empty")


def test_driver_shutdown_frees_its_objects_on_other_nodes(two_nodes):
    cluster, head, second = two_nodes
    refs = [make_range.options(**on(second)).remote(8 * MB) for _ in range(2)]
    ember.wait(refs, num_returns=2)
    assert store(second)["num_objects"] == 2
    ember.shutdown()
    wait_for_condition(lambda: stores_empty(head, second), timeout=20,
                       message="the second node to free the objects of the driver that left")
    del refs


def test_node_removed_with_only_copy_raises_object_lost(temp_root):
    ember.shutdown()
    cluster = Cluster()
    try:
        cluster.add_node(num_cpus=1, object_store_memory=256 * MB)
        doomed = cluster.add_node(num_cpus=1, object_store_memory=256 * MB)
        ember.init(address=cluster.address)
        ref = make_range.options(**on(doomed, max_retries=0)).remote(8 * MB)
        ember.wait([ref])
        cluster.remove_node(doomed, allow_graceful=False)
        cluster.wait_for_nodes()
        with pytest.raises(ObjectLostError) as info:  # not GetTimeoutError: it knows
            ember.get(ref, timeout=60)
        message = str(info.value)
        assert ref.hex() in message
        assert doomed.node_id[:12] in message
    finally:
        ember.shutdown()
        cluster.shutdown()


def test_objects_larger_than_the_stores_cross_nodes(temp_root):
    """Values larger than every node's store live in files of their own (Ray's fallback
    allocation), and still cross nodes both ways: over the socket, into a file."""
    ember.shutdown()
    cluster = Cluster()
    try:
        head = cluster.add_node(num_cpus=1, object_store_memory=64 * MB)
        other = cluster.add_node(num_cpus=1, object_store_memory=64 * MB)
        ember.init(address=cluster.address)
        made_there = make_range.options(**on(other)).remote(96 * MB)
        array = ember.get(made_there)
        assert equals_range(array) and store(head)["on_disk_bytes"] >= 96 * MB
        put_here = ember.put(np.arange(96 * MB // 8, dtype=np.int64))
        assert ember.get(checksum.options(**on(other)).remote(put_here)) == zlib.crc32(array)
        assert store(other)["created_on_disk"] == 2  # its result, and the copy of ours
        del array, made_there, put_here
        gc.collect()
        spill = os.path.join(context.core.session_dir, "spill")
        wait_for_condition(lambda: stores_empty(head, other) and all(
            store(n)["on_disk_bytes"] == 0 for n in (head, other))
            and (not os.path.isdir(spill) or os.listdir(spill) == []),
            message="both nodes' on-disk objects and their files freed")
    finally:
        ember.shutdown()
        cluster.shutdown()
