"""`ember memory` and `ember status`, run as the user runs them: a subprocess.

`ember memory` lists every reference held in the cluster, per process, with
its type, size, owner and location (inline, store, spilled), then a summary
of each node's object store. The rows are checked against what the store
itself reports, so the test does not depend on which objects the store
chose to spill.
"""
from __future__ import annotations

import gc
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import ember as ray
from ember.core_worker import context
from helpers import DriverProcess, wait_for_condition

MB = 1024 * 1024


def ember_cli(*args, timeout=60) -> str:
    done = subprocess.run([sys.executable, "-m", "ember.cli", *args], capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def gcs_address() -> str:
    return ray.get_runtime_context().gcs_address


def rows_by_holder(output: str) -> dict[str, dict[str, list[str]]]:
    """``{"driver pid=N": {object id hex: [type, size, owner, where, call site]}}``."""
    holders: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in output.splitlines():
        if line.startswith("--- "):
            current = holders.setdefault(line.split(" (")[0][4:], {})
        elif current is not None and len(line) > 58 and line[:56].isalnum():
            object_id, ref_type, size, owner, where, call_site = line.split(None, 5)
            current[object_id] = [ref_type, size, owner, where, call_site]
        elif line.startswith("("):
            current = None
    return holders


@ray.remote
class Owner:
    def put(self, value):
        return [ray.put(value)]

    def pid(self):
        return os.getpid()


def test_memory_lists_refs_with_type_size_owner_and_location(fresh):
    fresh(num_cpus=1, object_store_memory=100 * MB)
    me = f"pid={os.getpid()}"
    small = ray.put("small")
    inner = ray.put(np.zeros(MB // 8))
    outer = ray.put([inner])
    inner_hex = inner.hex()
    del inner  # now only captured in ``outer``
    big = [ray.put(np.full(20 * MB // 8, i)) for i in range(6)]  # 120 MiB: some spill
    owner = Owner.remote()
    owner_pid = ray.get(owner.pid.remote())
    [borrowed] = ray.get(owner.put.remote(np.ones(2 * MB // 8)))

    output = ember_cli("memory", "--address", gcs_address())
    states = {o.object_id.hex(): o.state for o in context.core.object_store.list_objects()}
    assert "SPILLED" in states.values(), states

    def where(object_hex):
        return "spilled" if states[object_hex] == "SPILLED" else "store"
    rows = rows_by_holder(output)
    driver = rows[f"driver {me}"]
    serialized = len(pickle.dumps("small", 5))  # sizes are of the serialized value
    assert driver[small.hex()][:4] == ["LOCAL_REFERENCE", f"{serialized}B", me, "inline"]
    assert driver[inner_hex][:4] == ["CAPTURED_IN_OBJECT", "1.0MiB", me, where(inner_hex)]
    assert driver[outer.hex()][0] == "LOCAL_REFERENCE"
    assert driver[outer.hex()][2:4] == [me, "inline"]
    for ref in big:
        assert driver[ref.hex()][:4] == ["LOCAL_REFERENCE", "20.0MiB", me, where(ref.hex())]
    # A borrowed ref not read yet: its size and place come from the store.
    assert driver[borrowed.hex()][:4] == ["LOCAL_REFERENCE", "2.0MiB",
                                          f"pid={owner_pid}", where(borrowed.hex())]
    assert rows[f"worker pid={owner_pid}"][borrowed.hex()][0] == "BORROWED_BY_OTHERS"
    # The actor's handle: held by the driver, which keeps the actor alive with it.
    handles = [row for row in driver.values() if row[0] == "ACTOR_HANDLE"]
    assert [row[2] for row in handles] == [me]
    assert all(row[4] == "-" for row in driver.values())  # call sites are off by default

    # It ends with each node's store summary.
    summary = output.rstrip().splitlines()[-2:]
    stats = context.core.object_store.stats()
    node = ray.get_runtime_context().get_node_id()[:12]
    assert summary[0] == "======== Object store per node ========"
    assert summary[1].startswith(f"node_{node} (")
    assert "used of 100.0MiB" in summary[1]
    assert f"({stats['num_objects']} objects" in summary[1]
    assert f"spilled {stats['num_spilled']} objects" in summary[1]


@pytest.mark.timeout(90)
def test_memory_shows_call_sites_when_recorded(shared, tmp_path):
    driver = DriverProcess(tmp_path, f"""
        import sys
        import numpy as np
        import ember as ray
        ray.init(address={gcs_address()!r})
        small = ray.put("made on line six")
        large = ray.put(np.zeros(1024 * 1024))
        print("READY", small.hex(), large.hex(), flush=True)
        sys.stdin.read()
        ray.shutdown()
        """, env={"EMBER_RECORD_REF_CREATION_SITES": "1"})
    try:
        _, small_hex, large_hex = driver.wait_for_line(
            lambda line: line.startswith("READY")).split()
        rows = rows_by_holder(ember_cli("memory", "--address", gcs_address()))
        held = rows[f"driver pid={driver.proc.pid}"]
        script = str(tmp_path / "driver.py")
        assert held[small_hex][3:] == ["inline", f"{script}:6 in <module>"]
        assert held[large_hex][3:] == ["store", f"{script}:7 in <module>"]
        # This driver does not record call sites.
        mine = context.core.references
        ref = ray.put("no site")
        assert mine.refs[ref.binary()].call_site == ""
        _, err = driver.finish()
        assert driver.proc.returncode == 0, err
    finally:
        driver.kill()


def test_status_shows_object_store_usage(fresh):
    fresh(num_cpus=1, object_store_memory=100 * MB)
    refs = [ray.put(np.ones(10 * MB // 8)) for _ in range(3)]
    node = ray.get_runtime_context().get_node_id()[:12]
    output = ember_cli("status", "--address", gcs_address())
    lines = output.splitlines()
    section = lines[lines.index("Object store:") + 1]
    assert section.startswith(f" node_{node}: 30.0MiB used of 100.0MiB, 3 objects")
    assert section.endswith("0B spilled to disk")
    del refs
    gc.collect()
    wait_for_condition(lambda: context.core.object_store.stats()["num_objects"] == 0,
                       message="the objects freed")
    output = ember_cli("status", "--address", gcs_address())
    assert f" node_{node}: 0B used of 100.0MiB, 0 objects" in output
