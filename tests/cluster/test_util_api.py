"""The rest of ``ember.util``, as Ray's ``ray.util`` exports it: the placement
group functions, ``get_node_ip_address``, custom serializers and
``inspect_serializability``."""
from __future__ import annotations

import io
import threading

import pytest

import ember as ray


def test_placement_group_api_is_exported_from_util(shared):
    pg = ray.util.placement_group([{"CPU": 1}], strategy="PACK", name="util_pg")
    assert pg.wait(30)
    assert ray.util.get_placement_group("util_pg").id == pg.id
    table = ray.util.placement_group_table(pg)
    assert table["state"] == "CREATED"
    ray.util.remove_placement_group(pg)
    assert ray.util.get_current_placement_group() is None  # the driver is in none


def test_get_node_ip_address_is_the_node_of_the_process(shared):
    @ray.remote
    def ip():
        return ray.util.get_node_ip_address()
    here = ray.util.get_node_ip_address()
    assert here == ray.nodes()[0]["NodeManagerAddress"]
    assert ray.get(ip.remote()) == here


class Point:
    """Holds a lock, so it cannot be pickled as it is."""

    def __init__(self, x, y):
        self.x, self.y = x, y
        self.lock = threading.Lock()


def _rebuild_point(xy):
    return Point(*xy)


def test_registered_serializer_carries_an_unpicklable_type(shared):
    @ray.remote
    def norm(p):
        return p.x * p.x + p.y * p.y, type(p.lock).__name__

    with pytest.raises(TypeError, match="pickle"):
        ray.put(Point(1, 2))
    ray.util.register_serializer(Point, serializer=lambda p: (p.x, p.y),
                                 deserializer=_rebuild_point)
    try:
        assert ray.get(norm.remote(Point(3, 4))) == (25, "lock")
        back = ray.get(ray.put(Point(5, 6)))
        assert (back.x, back.y) == (5, 6)
    finally:
        ray.util.deregister_serializer(Point)
    with pytest.raises(TypeError, match="pickle"):
        ray.put(Point(1, 2))


def test_register_serializer_rejects_bad_input():
    with pytest.raises(TypeError, match="takes a class"):
        ray.util.register_serializer(Point(1, 2), serializer=str, deserializer=str)
    with pytest.raises(TypeError, match="deserializer must be callable"):
        ray.util.register_serializer(Point, serializer=str, deserializer=3)


def test_inspect_serializability_names_the_captured_culprit():
    lock = threading.Lock()
    fine = 42

    def task():
        return fine, lock

    out = io.StringIO()
    ok, failures = ray.util.inspect_serializability(task, print_file=out)
    assert not ok
    assert [f.name for f in failures] == ["lock"]
    assert "cannot pickle 'lock'" in out.getvalue()
    assert ray.util.inspect_serializability(lambda: fine, print_file=out) == (True, set())


def test_signal_actor_releases_waiting_tasks_and_wait_for_condition_sees_it(shared):
    from ember.util.testing import SignalActor, wait_for_condition

    @ray.remote
    def waits(signal):
        ray.get(signal.wait.remote())
        return "released"

    signal = SignalActor.remote()
    refs = [waits.remote(signal) for _ in range(2)]
    wait_for_condition(lambda: ray.get(signal.cur_num_waiters.remote()) == 2)
    assert ray.wait(refs, timeout=0)[0] == []
    ray.get(signal.send.remote())
    assert ray.get(refs, timeout=30) == ["released"] * 2
    with pytest.raises(RuntimeError, match="wasn't met"):
        wait_for_condition(lambda: False, timeout=0.2, retry_interval_ms=20)


def test_job_config_sets_the_jobs_runtime_env_and_namespace(fresh, tmp_path):
    from ember.job_config import JobConfig

    (tmp_path / "jobmod.py").write_text("VALUE = 7\n")
    fresh(num_cpus=1, job_config=JobConfig(runtime_env={"env_vars": {"JOB_FLAG": "on"}},
                                           ray_namespace="jobs",
                                           code_search_path=[str(tmp_path)]))

    @ray.remote
    def probe():
        import os

        import jobmod
        return os.environ.get("JOB_FLAG"), jobmod.VALUE

    assert ray.get(probe.remote(), timeout=60) == ("on", 7)
    assert ray.get_runtime_context().namespace == "jobs"
    with pytest.raises(ValueError, match="default_actor_lifetime"):
        JobConfig(default_actor_lifetime="forever")


def test_accelerator_type_asks_for_a_node_that_has_it(fresh):
    from ember.util.accelerators import NVIDIA_TESLA_V100

    fresh(num_cpus=1, resources={"accelerator_type:V100": 1})

    @ray.remote
    def on_v100():
        return "ran"

    assert ray.get(on_v100.options(accelerator_type=NVIDIA_TESLA_V100).remote(),
                   timeout=60) == "ran"
    missing = on_v100.options(accelerator_type="H100").remote()
    assert ray.wait([missing], timeout=1)[0] == []   # no node has one: it waits
    ray.cancel(missing)
