"""Remote functions: @remote, options, return values, generators, arguments, nested tasks."""
from __future__ import annotations

import os
import time

import pytest

import ember as ray
from ember.object_ref import ObjectRef
from helpers import wait_for_file


def test_remote_without_and_with_options(shared):
    @ray.remote
    def plain(x, y=10):
        return x + y

    @ray.remote(num_cpus=0.5, max_retries=0)
    def with_options(x):
        return x * 3

    ref = plain.remote(1)
    assert isinstance(ref, ObjectRef)
    assert ray.get(ref) == 11
    assert ray.get(plain.remote(1, y=2)) == 3
    assert ray.get(plain.remote(x=5, y=5)) == 10
    assert ray.get(with_options.remote(4)) == 12
    assert ray.get(plain.options(num_cpus=1, name="renamed").remote(2)) == 12
    # .options() does not change the original function.
    assert ray.get(with_options.options(num_cpus=1).options(max_retries=1).remote(1)) == 3


def test_many_tasks_return_in_order(shared):
    @ray.remote
    def square(x):
        return x * x
    refs = [square.remote(i) for i in range(200)]
    assert ray.get(refs) == [i * i for i in range(200)]


def test_num_returns(shared):
    @ray.remote(num_returns=3)
    def three():
        return "a", "b", "c"
    refs = three.remote()
    assert isinstance(refs, list) and len(refs) == 3
    assert all(isinstance(r, ObjectRef) for r in refs)
    assert ray.get(refs) == ["a", "b", "c"]

    @ray.remote
    def pair():
        return 1, 2
    a, b = pair.options(num_returns=2).remote()
    assert ray.get(a) == 1 and ray.get(b) == 2
    single = pair.options(num_returns=1).remote()
    assert ray.get(single) == (1, 2)


def test_num_returns_mismatch_is_an_error(shared):
    @ray.remote(num_returns=2)
    def one_value():
        return [1, 2, 3]
    refs = one_value.remote()
    with pytest.raises(ray.exceptions.RayTaskError, match="num_returns=2"):
        ray.get(refs[0])


def test_generator_returns_refs_as_values_are_produced(shared, tmp_path):
    gate = str(tmp_path / "gate")

    @ray.remote
    def produce(gate):
        yield "first"
        # The second value waits until the driver has seen the first one: proof
        # that values stream out before the task ends.
        deadline = time.monotonic() + 30
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.01)
        yield "second"
        yield "third"

    gen = produce.remote(gate)
    assert isinstance(gen, ray.ObjectRefGenerator)
    first = next(gen)
    assert isinstance(first, ObjectRef)
    assert ray.get(first, timeout=30) == "first"
    assert not gen.completed()
    open(gate, "w").close()
    rest = [ray.get(ref) for ref in gen]
    assert rest == ["second", "third"]
    assert gen.completed()


def test_generator_with_num_returns_streaming(shared):
    @ray.remote(num_returns="streaming")
    def count(n):
        for i in range(n):
            yield i
    assert [ray.get(r) for r in count.remote(5)] == [0, 1, 2, 3, 4]
    assert list(count.remote(0)) == []


def test_generator_that_raises_midway(shared):
    @ray.remote
    def fails_after_two():
        yield 1
        yield 2
        raise ValueError("generator broke")

    refs = list(fails_after_two.remote())
    assert len(refs) == 3
    assert ray.get(refs[0]) == 1
    assert ray.get(refs[1]) == 2
    with pytest.raises(ValueError, match="generator broke") as info:
        ray.get(refs[2])
    assert isinstance(info.value, ray.exceptions.RayTaskError)


def test_generator_async_iteration(shared):
    import asyncio

    @ray.remote
    def letters():
        yield from "abc"

    async def collect():
        out = []
        async for ref in letters.remote():
            out.append(await ref)
        return out
    assert asyncio.run(collect()) == ["a", "b", "c"]


def test_top_level_refs_are_resolved_and_nested_refs_stay_refs(shared):
    @ray.remote
    def describe(top, nested, keyword=None):
        inner = nested[0]
        return (type(top).__name__, top, type(inner).__name__, ray.get(inner),
                type(keyword).__name__, keyword)

    top = ray.put(5)
    inner = ray.put("inside")
    kw = ray.put([1, 2])
    result = ray.get(describe.remote(top, [inner], keyword=kw))
    assert result == ("int", 5, "ObjectRef", "inside", "list", [1, 2])


def test_task_result_passed_to_another_task(shared):
    @ray.remote
    def slow_value():
        time.sleep(0.2)
        return 7

    @ray.remote
    def add(a, b):
        return a + b
    assert ray.get(add.remote(slow_value.remote(), slow_value.remote())) == 14
    # A chain of dependent tasks.
    ref = ray.put(0)
    for _ in range(10):
        ref = add.remote(ref, 1)
    assert ray.get(ref) == 10


def test_nested_tasks_do_not_deadlock_with_one_cpu(fresh):
    fresh(num_cpus=1)

    @ray.remote
    def leaf(x):
        return x + 1

    @ray.remote
    def middle(x):
        return ray.get(leaf.remote(x)) * 10

    @ray.remote
    def top(x):
        return ray.get([middle.remote(x), middle.remote(x + 1)])

    assert ray.get(top.remote(1), timeout=60) == [20, 30]


def test_max_calls_restarts_the_worker(shared):
    @ray.remote(max_calls=1)
    def pid():
        return os.getpid()
    pids = [ray.get(pid.remote()) for _ in range(3)]
    assert len(set(pids)) == 3

    @ray.remote(max_calls=2)
    def pid2():
        return os.getpid()
    pids = [ray.get(pid2.remote()) for _ in range(4)]
    assert pids[0] == pids[1] and pids[2] == pids[3] and pids[0] != pids[2]


def test_max_calls_with_many_tasks_in_flight(shared):
    # Submitted all at once: no task may be lost to a worker that exits after
    # its call, even with no retries to hide it.
    @ray.remote(max_calls=1, max_retries=0)
    def pid():
        return os.getpid()
    pids = ray.get([pid.remote() for _ in range(6)], timeout=60)
    assert len(set(pids)) == 6


def test_worker_is_reused_without_max_calls(shared):
    @ray.remote
    def pid():
        return os.getpid()
    pids = {ray.get(pid.remote()) for _ in range(5)}
    assert len(pids) <= 2
    assert os.getpid() not in pids


def test_scheduling_strategies(shared):
    @ray.remote
    def node():
        return ray.get_runtime_context().get_node_id()
    here = ray.get_runtime_context().get_node_id()
    assert ray.get(node.options(scheduling_strategy="DEFAULT").remote()) == here
    assert ray.get([node.options(scheduling_strategy="SPREAD").remote()
                    for _ in range(4)]) == [here] * 4
    from ember.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    strategy = NodeAffinitySchedulingStrategy(here, soft=False)
    assert ray.get(node.options(scheduling_strategy=strategy).remote()) == here


def test_resource_options_are_assigned(shared):
    @ray.remote
    def assigned():
        return ray.get_runtime_context().get_assigned_resources()
    assert ray.get(assigned.remote()) == {"CPU": 1.0}
    assert ray.get(assigned.options(num_cpus=0.5).remote()) == {"CPU": 0.5}
    assert ray.get(assigned.options(num_cpus=2).remote()) == {"CPU": 2.0}
    memory = 10 * 1024 * 1024
    assert ray.get(assigned.options(memory=memory).remote()) == {"CPU": 1.0,
                                                                  "memory": memory}


def test_custom_resources_and_gpus(fresh):
    fresh(num_cpus=2, num_gpus=1, resources={"accel": 2})

    @ray.remote(resources={"accel": 1})
    def uses_accel():
        return ray.get_runtime_context().get_assigned_resources()
    assert ray.get(uses_accel.remote()) == {"CPU": 1.0, "accel": 1.0}

    @ray.remote(num_gpus=1, num_cpus=0)
    def uses_gpu():
        return ray.get_gpu_ids()
    assert ray.get(uses_gpu.remote()) == [0]


def test_task_name_option(shared):
    @ray.remote
    def named():
        return ray.get_runtime_context().get_task_name()
    assert ray.get(named.options(name="my-task").remote()) == "my-task"
    assert ray.get(named.remote()).endswith("named")


def test_closures_and_lambdas_run_remotely(shared):
    offset = 100
    add_offset = ray.remote(lambda x: x + offset)
    assert ray.get(add_offset.remote(1)) == 101

    class Point:
        def __init__(self, x, y):
            self.x, self.y = x, y

    @ray.remote
    def norm1(p):
        return Point(abs(p.x) + abs(p.y), 0)
    result = ray.get(norm1.remote(Point(-3, 4)))
    assert (result.x, result.y) == (7, 0)


def test_task_returning_none_and_num_returns_zero(shared):
    @ray.remote
    def nothing():
        return None
    assert ray.get(nothing.remote()) is None

    @ray.remote(num_returns=0)
    def side_effect(path):
        open(path, "w").close()
    assert side_effect.remote(os.path.join(os.getcwd(), ".ember-nr0")) is None
    wait_for_file(os.path.join(os.getcwd(), ".ember-nr0"))
    os.unlink(os.path.join(os.getcwd(), ".ember-nr0"))
