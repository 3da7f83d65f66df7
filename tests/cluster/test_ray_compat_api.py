"""Ray API details that Ray programs and Ray's own tests rely on (issue 16)."""
from __future__ import annotations

import os
import time

import pytest

import ember as ray
from ember.actor import ActorClassInheritanceException
from helpers import wait_for_condition


@ray.remote
class Settings:
    """Docs of the actor."""

    LIMIT = 5

    @staticmethod
    def double(x):
        return 2 * x

    def limit(self):
        return self.LIMIT


def test_an_actor_class_shows_the_class_attributes_and_static_methods(shared):
    assert Settings.LIMIT == 5 and Settings.double(4) == 8
    assert Settings.__ray_metadata__.class_name == "Settings"
    assert Settings.__ray_metadata__.modified_class.LIMIT == 5
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        Settings.nope
    handle = Settings.remote()
    assert "limit" in dir(handle) and ray.get(handle.limit.remote()) == 5


def test_subclassing_an_actor_class_is_refused_with_rays_exception():
    with pytest.raises(ActorClassInheritanceException, match="Settings"):
        class More(Settings):
            pass
    assert issubclass(ActorClassInheritanceException, TypeError)


@ray.remote
class Leaver:
    def __init__(self, flag):
        import atexit
        atexit.register(lambda: open(flag, "w").close())

    def leave(self):
        ray.actor.exit_actor()


def test_exit_actor_runs_the_actors_atexit_handlers(shared, tmp_path):
    flag = str(tmp_path / "atexit-ran")
    actor = Leaver.remote(flag)
    with pytest.raises(ray.exceptions.ActorDiedError):
        ray.get(actor.leave.remote())
    wait_for_condition(lambda: os.path.exists(flag), timeout=10,
                       message="the actor's atexit handler to run")


def test_object_ref_constructors_and_the_object_id_alias(shared):
    a, b = ray.ObjectRef.from_random(), ray.ObjectRef.from_random()
    assert a != b and len(a.binary()) == len(ray.put(1).binary())
    assert ray.ObjectRef.nil().is_nil() and not a.is_nil()
    assert ray.ObjectRef.from_binary(a.binary()) == a
    with pytest.raises(ValueError, match="from_binary"):
        ray.ObjectRef.from_binary(b"short")
    assert ray.ObjectID is ray.ObjectRef
    with pytest.raises(ray.exceptions.GetTimeoutError):
        ray.get(a, timeout=0.1)  # refers to nothing: never ready


@ray.remote
def slow_numbers(n: int, pause: float):
    for i in range(n):
        time.sleep(pause)
        yield i


def test_get_returns_a_generator_and_wait_takes_generators(shared):
    gen = slow_numbers.options(num_returns="streaming").remote(2, 0.5)
    assert ray.get(gen) is gen
    ready, not_ready = ray.wait([gen], timeout=0.05)
    assert (ready, not_ready) == ([], [gen])  # its first value is half a second away
    ref = ray.put("here")
    ready, not_ready = ray.wait([gen, ref], num_returns=1, timeout=10)
    assert ready == [ref] and not_ready == [gen]
    ready, _ = ray.wait([gen], timeout=10)
    assert ready == [gen] and ray.get(next(gen)) == 0
    assert [ray.get(r) for r in gen] == [1]
    assert gen.is_finished() and ray.wait([gen], timeout=0)[0] == [gen]


def test_valid_placement_group_strategies_are_importable():
    from ember.util.placement_group import VALID_PLACEMENT_GROUP_STRATEGIES
    assert set(VALID_PLACEMENT_GROUP_STRATEGIES) == {"PACK", "SPREAD", "STRICT_PACK",
                                                     "STRICT_SPREAD"}


@ray.remote(num_returns="dynamic")
def tens(n: int):
    for i in range(n):
        yield i * 10


@ray.remote(num_returns="dynamic")
def fails_after_one():
    yield 1
    raise ValueError("second value refused")


@ray.remote
def add_up(generator) -> int:
    return sum(ray.get(list(generator)))


def test_dynamic_generator_tasks_give_one_ref_to_all_their_values(shared):
    generator = ray.get(tens.remote(3))
    assert isinstance(generator, ray.DynamicObjectRefGenerator) and len(generator) == 3
    assert [ray.get(ref) for ref in generator] == [0, 10, 20]
    assert ray.get(add_up.remote(tens.remote(4))) == 60  # the ref travels as an argument
    first, failed = ray.get(fails_after_one.remote())
    assert ray.get(first) == 1
    with pytest.raises(ValueError, match="second value refused"):
        ray.get(failed)


@ray.remote
def two_then_fails():
    yield 0
    yield 1
    raise ValueError("third value refused")


def test_a_generator_with_num_returns_keeps_the_values_it_yielded_before_failing(shared):
    first, second, third, fourth = two_then_fails.options(num_returns=4).remote()
    assert ray.get([first, second]) == [0, 1]
    for ref in (third, fourth):
        with pytest.raises(ValueError, match="third value refused"):
            ray.get(ref)
    # Failing after all its returns were yielded: the values stand (Ray logs the error).
    assert ray.get(list(two_then_fails.options(num_returns=2).remote())) == [0, 1]


def test_util_submodules_are_attributes_after_import_ember_as_in_ray():
    import subprocess
    import sys
    code = ("import ember; ember.util.scheduling_strategies.NodeAffinitySchedulingStrategy;"
            " ember.util.accelerators.NVIDIA_TESLA_V100")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@ray.remote
def waits_for(signal):
    ray.get(signal.wait.remote())
    return "released"


@ray.remote
def refuses():
    raise KeyError("refused at once")


@ray.remote
def echo(value):
    return value


@pytest.mark.timeout(60)
def test_get_of_several_raises_the_first_error_without_waiting_for_the_rest(shared):
    from ember.util.testing import SignalActor
    signal = SignalActor.remote()
    never = waits_for.remote(signal)
    with pytest.raises(KeyError, match="refused at once"):
        ray.get([never, refuses.remote()])  # `never` waits until the signal below
    with pytest.raises(KeyError):
        ray.get([refuses.remote(), never])
    ray.get(signal.send.remote())
    assert ray.get(never) == "released"


@pytest.mark.timeout(60)
def test_cancelling_a_task_whose_argument_is_pending_ends_it_at_once(shared):
    from ember.util.testing import SignalActor
    signal = SignalActor.remote()
    pending = waits_for.remote(signal)
    child = echo.remote(pending)
    ray.cancel(child)
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(child)
    ray.get(signal.send.remote())
    assert ray.get(pending) == "released" and ray.get(echo.remote(pending)) == "released"


@ray.remote
def what_the_task_sees():
    import psutil
    return (ray.get_runtime_context().get_assigned_resources(),
            os.environ.get("OMP_NUM_THREADS"), psutil.Process().name())


def test_a_task_sees_its_resources_thread_count_and_name_as_in_ray(shared):
    from ember.util.placement_group import placement_group, remove_placement_group
    from ember.util.scheduling_strategies import PlacementGroupSchedulingStrategy
    assigned, threads, name = ray.get(what_the_task_sees.options(num_cpus=2).remote())
    assert assigned == {"CPU": 2.0} and threads == "2"
    assert name == "ember::what_the_t"[:15]
    pg = placement_group([{"CPU": 1}])
    ray.get(pg.ready())
    try:
        assigned, threads, _ = ray.get(what_the_task_sees.options(
            scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 0)).remote())
        assert assigned == {"CPU": 1.0} and threads == "1"
    finally:
        remove_placement_group(pg)
    env = {"env_vars": {"OMP_NUM_THREADS": "7"}}
    assert ray.get(what_the_task_sees.options(runtime_env=env).remote())[1] == "7"


def test_decorating_wrongly_is_refused():
    with pytest.raises(TypeError, match="no arguments and no parentheses"):
        @ray.remote()
        def f():
            pass
    with pytest.raises(ValueError, match="async def"):
        @ray.remote
        async def g():
            pass


@ray.remote
class Switch:
    def __init__(self):
        self.stop = "an attribute"

    def stop(self):  # noqa: F811 - the attribute set in __init__ must not hide it
        return "the method"

    def where(self):
        return ray.get_runtime_context().get_task_function_name()


@ray.remote
def connected() -> bool:
    return ray.is_initialized()


def test_methods_resolve_on_the_class_and_name_themselves_with_the_module(shared):
    switch = Switch.remote()
    assert ray.get(switch.stop.remote()) == "the method"
    assert ray.get(switch.where.remote()) == f"{__name__}.Switch.where"
    assert ray.get(connected.remote()) is True


def test_ids_know_their_job_and_small_modules_import(shared):
    job = ray.get_runtime_context().get_job_id()
    ref = ray.put(1)
    assert ref.job_id().hex() == ref.task_id().job_id().hex() == job
    assert Switch.remote()._ray_actor_id.job_id.hex() == job
    from ember.cloudpickle import dumps, loads
    assert loads(dumps(lambda: 7))() == 7
    from ember.util.annotations import PublicAPI, RayDeprecationWarning

    @PublicAPI(stability="beta")
    def api():
        return 1
    assert api() == 1 and issubclass(RayDeprecationWarning, DeprecationWarning)


def test_runtime_context_connects_and_names_the_dashboard(fresh):
    assert not ray.is_initialized()
    ray.get_runtime_context()
    assert ray.is_initialized()
    ray.shutdown()
    fresh(include_dashboard=False)
    assert ray.get_runtime_context().get_dashboard_url() == ""


@ray.remote(num_cpus=1)
def inner_numbers(n):
    for i in range(n):
        yield i


@ray.remote(num_cpus=1)
def outer_sum(n):
    return sum(ray.get(ref) for ref in inner_numbers.remote(n))


@pytest.mark.timeout(60)
def test_a_task_iterating_a_generator_lends_its_cpu(fresh):
    fresh(num_cpus=1)  # the inner generator task needs the CPU the outer one holds
    assert ray.get(outer_sum.remote(4)) == 6


@ray.remote
def cancel_first(refs) -> bool:
    ray.cancel(refs[0])  # a ref this task borrows: its owner (the driver) cancels it
    return True


@pytest.mark.timeout(60)
def test_a_borrower_can_cancel_a_task(shared):
    # Asks for a resource no node has: it stays queued at its owner until cancelled.
    pending = echo.options(resources={"no-such-resource": 1}).remote(1)
    assert ray.get(cancel_first.remote([pending]))
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(pending)


@ray.remote
class Named:
    def my_name(self):
        return ray.get_runtime_context().get_actor_name()


def test_an_actor_knows_its_name(shared):
    assert ray.get(Named.options(name="called-so").remote().my_name.remote()) == "called-so"
    assert ray.get(Named.remote().my_name.remote()) == ""
    assert ray.get_runtime_context().get_actor_name() is None  # the driver is no actor
