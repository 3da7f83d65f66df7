"""Spill files do not outlive their cluster.

A full object store spills primary copies to ``<session_dir>/spill/``. Those
files are the session's: ``shutdown()`` of the driver that started the
cluster removes them, and so does ``ember stop`` for the clusters it stops,
even when it has to kill the raylet that wrote them (``--force``).
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import ember as ray
import ember.node
from ember import worker
from helpers import wait_for_condition, wait_no_ember_processes

MiB = 1024 * 1024
STORE = 64 * MiB


def spill_files(session_dir: str) -> list[str]:
    try:
        return os.listdir(os.path.join(session_dir, "spill"))
    except FileNotFoundError:
        return []


def fill_store(count: int = 10) -> list:
    """Put ``count`` 10 MiB arrays into a 64 MiB store: the oldest spill."""
    return [ray.put(np.full(10 * MiB // 8, i, dtype=np.int64)) for i in range(count)]


def test_shutdown_removes_the_sessions_spill_files(fresh):
    fresh(num_cpus=1, object_store_memory=STORE)
    session_dir = worker._local_node.session_dir
    refs = fill_store()
    wait_for_condition(lambda: len(spill_files(session_dir)) >= 3)
    assert ray.get(refs[0])[0] == 0  # spilled values come back
    # Objects freed just before shutdown queue the removal of their files on the
    # store's I/O thread; shutdown must not drop those removals.
    del refs[:5]
    ray.shutdown()
    assert spill_files(session_dir) == []
    assert not os.path.exists(os.path.join(session_dir, "spill"))


def ember_cli(*args, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ember.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("force", [False, True], ids=["stop", "stop-force"])
def test_ember_stop_removes_spill_files_of_the_clusters_it_stops(temp_root, force):
    port = ember.node.free_port()
    started = ember_cli("start", "--head", "--port", str(port), "--num-cpus", "1",
                        "--object-store-memory", str(STORE))
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        ray.init(address="auto")
        session_dir = os.path.realpath(os.path.join(temp_root, "session_latest"))
        refs = fill_store()
        wait_for_condition(lambda: len(spill_files(session_dir)) >= 3)
        # With --force the raylet is killed with the files still referenced: only
        # `ember stop` itself can remove them.
        stopped = ember_cli("stop", *(["--force"] if force else []))
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert spill_files(session_dir) == []
        del refs
    finally:
        ray.shutdown()
        ember_cli("stop", "--force")
        wait_no_ember_processes(temp_root)
