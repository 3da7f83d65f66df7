"""The object store inside a real raylet: register, map the arena, put and get 20 MB.

Starts a GCS and a raylet (no ember.init, no driver job), connects to the
raylet like a driver's core worker would, and talks to its store with a
StoreClient. Then stops the processes and checks that nothing is left: no
process, and no /dev/shm entry (the arena is a memfd, which has no name).
"""
from __future__ import annotations

import os

import numpy as np

import ember.node
from ember import rpc
from ember.core_worker.event_loop import LoopThread
from ember.core_worker.serialization import serialize_to_store
from ember.object_store import layout
from ember.object_store.client import StoreClient
from ember.protocol import raylet as rl
from ember.protocol.common import Address
from helpers import ember_processes, ember_shm_entries, wait_for_condition


def test_put_and_get_20_mb_through_a_real_raylet():
    shm_before = ember_shm_entries()
    procs = ember.node.start_head(num_cpus=1, object_store_memory=64 * 1024 * 1024)
    io = LoopThread("store-integration")
    try:
        assert ember.node.wait_for_socket(procs.raylet_socket, timeout=20)
        conn = io.run(rpc.connect("unix:" + procs.raylet_socket, name="raylet"))
        worker_id = os.urandom(28)
        reply = io.run(conn.call(rl.RegisterWorker(
            worker_id, os.getpid(), Address(procs.node_id, "127.0.0.1", 0, "", worker_id),
            is_driver=True)), timeout=30)
        assert reply.store_fd >= 0 and reply.raylet_pid > 0
        assert reply.store_capacity == 64 * 1024 * 1024
        client = StoreClient(reply.raylet_pid, reply.store_fd, reply.store_capacity,
                             call=lambda m: io.run(conn.call(m), timeout=30),
                             notify=lambda m: io.post(conn.notify, m), defer=io.post)

        array = np.random.default_rng(1).integers(0, 1000, 20 * 1024 * 1024 // 8)
        oid = os.urandom(28)
        main, buffers = serialize_to_store(array)
        assert client.put(oid, main, buffers) >= array.nbytes

        first = layout.load_from_store(*client.get([oid])[0])
        second = layout.load_from_store(*client.get([oid])[0])
        np.testing.assert_array_equal(first, array)
        assert not first.flags.writeable
        assert np.shares_memory(first, second)
        stats = client.stats()
        assert stats["num_objects"] == 1 and stats["pinned"] >= array.nbytes
        del first, second
        wait_for_condition(lambda: client.stats()["pinned"] == 0, message="pins released")

        client.delete([oid])
        assert client.stats()["used"] == 0
        client.close()
        io.post(conn.close)
    finally:
        io.stop()
        procs.stop()
    wait_for_condition(lambda: not ember_processes(procs.session_dir), timeout=15,
                       message="no ember process left")
    assert ember_shm_entries() == shm_before
