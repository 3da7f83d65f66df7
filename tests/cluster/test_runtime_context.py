"""get_runtime_context() and GPU assignment, in the driver and inside tasks."""
from __future__ import annotations

import os
import re

import pytest

import ember as ray

HEX = re.compile(r"^[0-9a-f]+$")


@ray.remote
def context_in_task():
    ctx = ray.get_runtime_context()
    return {"node": ctx.get_node_id(), "job": ctx.get_job_id(), "task": ctx.get_task_id(),
            "worker": ctx.get_worker_id(), "resources": ctx.get_assigned_resources(),
            "pid": os.getpid()}


def test_runtime_context_in_driver(shared):
    ctx = ray.get_runtime_context()
    assert ctx.get_task_id() is None
    assert HEX.match(ctx.get_node_id()) and len(ctx.get_node_id()) == 56
    assert HEX.match(ctx.get_job_id()) and len(ctx.get_job_id()) == 8
    assert HEX.match(ctx.get_worker_id()) and len(ctx.get_worker_id()) == 56
    assert ctx.get_node_id() == ray.nodes()[0]["NodeID"]
    assert ray.get_gpu_ids() == []


def test_runtime_context_in_task(shared):
    driver = ray.get_runtime_context()
    first, second = ray.get([context_in_task.remote(), context_in_task.remote()])
    for info in (first, second):
        assert info["node"] == driver.get_node_id()
        assert info["job"] == driver.get_job_id()
        assert HEX.match(info["task"]) and len(info["task"]) == 48
        assert HEX.match(info["worker"]) and info["worker"] != driver.get_worker_id()
        assert info["resources"] == {"CPU": 1.0}
    assert first["task"] != second["task"]
    half = ray.get(context_in_task.options(num_cpus=0.5).remote())
    assert half["resources"] == {"CPU": 0.5}


def test_task_id_matches_its_object_ref(shared):
    ref = context_in_task.remote()
    assert ray.get(ref)["task"] == ref.task_id().hex()


def test_gpu_ids_and_cuda_visible_devices(fresh, tmp_path):
    fresh(num_cpus=2, num_gpus=2)

    @ray.remote(num_gpus=1)
    def gpu_task(directory, me):
        # Wait until both tasks hold a GPU, so they must hold different ones.
        open(os.path.join(directory, f"gpu-{me}"), "w").close()
        import time
        deadline = time.monotonic() + 30
        while len(os.listdir(directory)) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        return (ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES"),
                ray.get_runtime_context().get_assigned_resources(),
                ray.get_runtime_context().get_accelerator_ids())

    results = ray.get([gpu_task.remote(str(tmp_path), i) for i in range(2)], timeout=60)
    ids = sorted(r[0][0] for r in results)
    assert ids == [0, 1]
    for gpu_ids, visible, resources, accelerators in results:
        assert len(gpu_ids) == 1
        assert visible == str(gpu_ids[0])
        assert resources == {"CPU": 1.0, "GPU": 1.0}
        assert accelerators["GPU"] == [str(gpu_ids[0])]

    @ray.remote(num_gpus=2)
    def two_gpus():
        return ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")
    gpu_ids, visible = ray.get(two_gpus.remote(), timeout=60)
    assert sorted(gpu_ids) == [0, 1]
    assert sorted(visible.split(",")) == ["0", "1"]

    @ray.remote(num_gpus=0.5)
    def half_gpu():
        return ray.get_gpu_ids()
    assert len(ray.get(half_gpu.remote(), timeout=60)) == 1


def test_cluster_without_gpus_has_no_gpu_ids(shared):
    @ray.remote
    def gpu_ids():
        return ray.get_gpu_ids()
    assert ray.get(gpu_ids.remote()) == []
    assert "GPU" not in ray.cluster_resources()


def test_ray_style_names_properties_and_get(shared):
    @ray.remote
    def inner():
        ctx = ray.get_runtime_context()
        return ctx.get_task_name(), ctx.get_task_function_name(), sorted(ctx.get())

    name, function_name, keys = ray.get(inner.remote())
    module = __name__
    assert name == function_name == f"{module}.inner"   # no "<locals>" qualifier
    assert keys == ["job_id", "namespace", "node_id", "task_id"]
    ctx = ray.get_runtime_context()
    assert sorted(ctx.get()) == ["job_id", "namespace", "node_id"]   # no task in a driver
    # Ray's older properties still answer, and warn that they are deprecated.
    with pytest.warns(DeprecationWarning, match=r"Use get_node_id\(\) instead"):
        assert ctx.node_id.hex() == ctx.get_node_id()
    with pytest.warns(DeprecationWarning, match=r"Use get_job_id\(\) instead"):
        assert ctx.job_id.hex() == ctx.get_job_id()
    with pytest.warns(DeprecationWarning):
        assert ctx.task_id is None and ctx.actor_id is None
    assert ctx.get_node_labels() == {}


def test_current_actor_is_a_handle_to_the_actor_itself(shared):
    @ray.remote
    class Echo:
        def me(self):
            return ray.get_runtime_context().current_actor

        def hello(self):
            return "hello"

    actor = Echo.remote()
    handle = ray.get(actor.me.remote())
    assert handle._actor_id == actor._actor_id
    assert ray.get(handle.hello.remote()) == "hello"
    with pytest.raises(RuntimeError, match="inside an actor"):
        ray.get_runtime_context().current_actor


def test_placement_group_id_is_that_of_the_running_task(shared):
    from ember.util.placement_group import placement_group, remove_placement_group
    from ember.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    pg = placement_group([{"CPU": 1}])
    pg.wait(timeout_seconds=30)

    @ray.remote(num_cpus=1)
    def pg_of():
        return ray.get_runtime_context().get_placement_group_id()

    strategy = PlacementGroupSchedulingStrategy(pg)
    assert ray.get(pg_of.options(scheduling_strategy=strategy).remote()) == pg.id.hex()
    assert ray.get(pg_of.remote()) is None
    remove_placement_group(pg)
