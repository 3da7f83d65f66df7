"""Actors: creation and options, method calls, ordering, handles, named actors, bad input."""
from __future__ import annotations

import os
import threading
import time

import psutil
import pytest

import ember as ray
from ember.exceptions import PendingCallsLimitExceeded, RayActorError, RayTaskError
from ember.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from helpers import wait_for_condition


@ray.remote
class Counter:
    def __init__(self, start=0, step=1):
        self.value = start
        self.step = step

    def incr(self, times=1):
        self.value += self.step * times
        return self.value

    def read(self):
        return self.value

    def pid(self):
        return os.getpid()


@ray.remote
class Log:
    def __init__(self):
        self.items = []

    def append(self, item):
        self.items.append(item)
        return len(self.items)

    def items_(self):
        return self.items


def wait_for_gate(gate: str, value=None):
    """In a task or actor: wait until the test creates the file ``gate``."""
    deadline = time.monotonic() + 30
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.005)
    return value


def test_actor_keeps_state_between_calls(shared):
    counter = Counter.remote(10, step=2)
    assert ray.get(counter.incr.remote()) == 12
    assert ray.get(counter.incr.remote(times=3)) == 18
    assert ray.get(counter.read.remote()) == 18
    # Each actor is its own process with its own state.
    other = Counter.remote()
    assert ray.get(other.read.remote()) == 0
    assert ray.get(counter.pid.remote()) != ray.get(other.pid.remote())
    assert ray.get(counter.pid.remote()) != os.getpid()


def test_calls_from_one_caller_run_in_submission_order(shared):
    log = Log.remote()
    refs = [log.append.remote(i) for i in range(500)]
    # Each call saw exactly the calls before it: the n-th call ran n-th.
    assert ray.get(refs) == list(range(1, 501))
    assert ray.get(log.items_.remote()) == list(range(500))


def test_calls_from_several_callers_each_keep_their_order(shared):
    @ray.remote
    def caller(log, tag, n):
        ray.get([log.append.remote((tag, i)) for i in range(n)])
        return tag

    log = Log.remote()
    assert ray.get([caller.remote(log, tag, 100) for tag in "ab"]) == ["a", "b"]
    items = ray.get(log.items_.remote())
    for tag in "ab":
        assert [i for t, i in items if t == tag] == list(range(100))


def test_calls_go_straight_to_the_actor_worker(shared):
    """With the GCS and the raylet frozen (SIGSTOP), calls still run: they go
    from the caller to the actor's worker and involve neither."""
    counter = Counter.remote()
    assert ray.get(counter.incr.remote()) == 1
    daemons = [p for p in psutil.Process().children()
               if any(m in " ".join(p.cmdline()) for m in ("ember.gcs", "ember.raylet"))]
    assert len(daemons) == 2
    try:
        for proc in daemons:
            proc.suspend()
        refs = [counter.incr.remote() for _ in range(200)]
        assert ray.get(refs, timeout=20) == list(range(2, 202))
    finally:
        for proc in daemons:
            proc.resume()
    assert ray.get(counter.incr.remote()) == 202


def test_calls_whose_arguments_are_not_ready_still_run_in_order(shared, tmp_path):
    """A call waiting on an argument holds back the later calls of the same caller."""
    gate = str(tmp_path / "gate")

    slow_value = ray.remote(wait_for_gate)
    log = Log.remote()
    log.append.remote("first")
    log.append.remote(slow_value.remote(gate, "slow"))
    log.append.remote("third")
    items = log.items_.remote()
    ready, _ = ray.wait([items], timeout=0.3)
    assert not ready, "a call ran before an earlier call whose argument was pending"
    open(gate, "w").close()
    assert ray.get(items) == ["first", "slow", "third"]


def test_creation_arguments_may_be_pending_object_refs(shared, tmp_path):
    gate = str(tmp_path / "gate")

    later = ray.remote(wait_for_gate)
    # Top-level refs, positional or keyword, are passed as their values.
    counter = Counter.remote(later.remote(gate, 10), step=ray.put(5))
    calls = [counter.incr.remote() for _ in range(3)]
    ready, _ = ray.wait(calls, timeout=0.2)
    assert not ready
    open(gate, "w").close()
    assert ray.get(calls) == [15, 20, 25]


def test_failed_creation_argument_fails_the_actor(shared):
    @ray.remote
    def broken():
        raise ValueError("no value for you")

    counter = Counter.remote(broken.remote())
    with pytest.raises(RayActorError, match="no value for you"):
        ray.get(counter.incr.remote())


def test_object_refs_as_method_arguments(shared):
    @ray.remote
    class Echo:
        def echo(self, value):
            return value

    echo = Echo.remote()
    ref = ray.put([1, 2, 3])
    assert ray.get(echo.echo.remote(ref)) == [1, 2, 3]  # resolved at top level
    nested = ray.get(echo.echo.remote([ref]))  # passed through inside a list
    assert ray.get(nested[0]) == [1, 2, 3]
    # A large return value travels through the object store.
    big = ray.get(echo.echo.remote(b"x" * (2 * 1024 * 1024)))
    assert len(big) == 2 * 1024 * 1024


def test_actor_handle_repr_equality_and_id(shared):
    counter = Counter.remote()
    assert "Counter" in repr(counter)
    assert counter == counter and hash(counter) == hash(counter)
    assert counter != Counter.remote()
    assert counter._ray_actor_id.hex() == ray.get(_actor_id_of.remote(counter))


@ray.remote
def _actor_id_of(handle):
    return handle._ray_actor_id.hex()


def test_inherited_methods_and_class_attributes(shared):
    class Base:
        greeting = "hello"

        def greet(self, who):
            return f"{self.greeting} {who}"

    @ray.remote
    class Child(Base):
        greeting = "hi"

        def shout(self, who):
            return self.greet(who).upper()

    child = Child.remote()
    assert ray.get(child.greet.remote("ann")) == "hi ann"
    assert ray.get(child.shout.remote("bob")) == "HI BOB"


def test_method_num_returns_from_decorator_and_options(shared):
    @ray.remote
    class Splitter:
        @ray.method(num_returns=2)
        def two(self):
            return "a", "b"

        def three(self):
            return [1, 2, 3]

    splitter = Splitter.remote()
    a, b = splitter.two.remote()
    assert ray.get([a, b]) == ["a", "b"]
    refs = splitter.three.options(num_returns=3).remote()
    assert len(refs) == 3 and ray.get(refs) == [1, 2, 3]
    assert ray.get(splitter.three.remote()) == [1, 2, 3]
    whole = splitter.two.options(num_returns=1).remote()
    assert ray.get(whole) == ("a", "b")
    # num_returns=0: the call runs, and returns nothing to wait for.
    log = Log.remote()
    assert log.append.options(num_returns=0).remote("x") is None
    assert ray.get(log.items_.remote()) == ["x"]


def test_generator_method_streams_values(shared):
    @ray.remote
    class Source:
        def numbers(self, n):
            for i in range(n):
                yield i * 10

    source = Source.remote()
    assert [ray.get(ref) for ref in source.numbers.remote(4)] == [0, 10, 20, 30]


def test_method_exception_raises_at_get_and_the_actor_keeps_serving(shared):
    class Custom(Exception):
        pass

    @ray.remote
    class Fragile:
        def __init__(self):
            self.calls = 0

        def fail(self, kind):
            self.calls += 1
            if kind == "zero":
                return 1 / 0
            raise Custom("custom failure")

        def calls_(self):
            return self.calls

    actor = Fragile.remote()
    with pytest.raises(ZeroDivisionError) as info:
        ray.get(actor.fail.remote("zero"))
    assert isinstance(info.value, RayTaskError)
    assert "Fragile.fail" in str(info.value) and "division by zero" in str(info.value)
    with pytest.raises(Custom, match="custom failure"):
        ray.get(actor.fail.remote("custom"))
    with pytest.raises(RayTaskError):
        ray.get(actor.fail.remote("zero"))
    # The actor is alive, with its state intact.
    assert ray.get(actor.calls_.remote()) == 3


def test_actor_options_resources_and_scheduling(fresh):
    fresh(num_cpus=2, num_gpus=1, resources={"custom": 2}, _memory=4 * 1024 ** 3)

    @ray.remote
    class Probe:
        def assigned(self):
            ctx = ray.get_runtime_context()
            return {"gpu_ids": ray.get_gpu_ids(), "node": ctx.get_node_id(),
                    "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
                    "actor_id": ctx.get_actor_id()}

        def resources(self):
            return ray.get_runtime_context().get_assigned_resources()

    node_id = ray.get_runtime_context().get_node_id()
    # Ray's rule: an actor that names a resource holds 1 CPU unless num_cpus says otherwise.
    gpu_actor = Probe.options(num_gpus=1).remote()
    info = ray.get(gpu_actor.assigned.remote())
    assert info["gpu_ids"] == [0] and info["cuda"] == "0"
    assert info["actor_id"] == gpu_actor._ray_actor_id.hex()
    assert ray.get(gpu_actor.resources.remote()) == {"CPU": 1.0, "GPU": 1.0}
    custom = Probe.options(resources={"custom": 2}, memory=1024 ** 3, num_cpus=0,
                           scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
                           runtime_env={"env_vars": {"UNUSED": "1"}}).remote()
    assert ray.get(custom.assigned.remote())["node"] == node_id
    assert ray.get(custom.resources.remote()) == {"custom": 2.0, "memory": 1024.0 ** 3}
    spread = Probe.options(scheduling_strategy="SPREAD", num_cpus=0).remote()
    assert ray.get(spread.assigned.remote())["node"] == node_id

    # While they live, the actors hold what they asked for.
    def held():
        available = ray.available_resources()
        return (available.get("GPU", 0) == 0 and available.get("custom", 0) == 0
                and available.get("CPU", 0) == 1)
    wait_for_condition(held, message="actor resources to be held")
    ray.kill(gpu_actor)
    ray.kill(custom)
    wait_for_condition(lambda: ray.available_resources().get("GPU") == 1
                       and ray.available_resources().get("custom") == 2
                       and ray.available_resources().get("CPU") == 2,
                       message="resources of killed actors to be freed")


def test_actor_without_num_cpus_needs_a_cpu_to_start_but_holds_none(fresh):
    """Ray's default: 1 CPU to place an actor, 0 while it runs."""
    fresh(num_cpus=1)
    actors = [Counter.remote() for _ in range(3)]
    assert ray.get([a.incr.remote() for a in actors]) == [1, 1, 1]
    wait_for_condition(lambda: ray.available_resources().get("CPU") == 1,
                       message="the placement CPU to be free again")


def test_max_pending_calls(shared, tmp_path):
    gate = str(tmp_path / "gate")

    @ray.remote(max_pending_calls=2)
    class Busy:
        def wait(self, gate):
            return wait_for_gate(gate, "done")

        def ping(self):
            return "pong"

    busy = Busy.remote()
    first = busy.wait.remote(gate)
    second = busy.ping.remote()
    with pytest.raises(PendingCallsLimitExceeded, match="max_pending_calls"):
        busy.ping.remote()
    open(gate, "w").close()
    assert ray.get([first, second]) == ["done", "pong"]
    # Once results are back, new calls are accepted again.
    assert ray.get([busy.ping.remote(), busy.ping.remote()]) == ["pong", "pong"]


# --- handles travel ------------------------------------------------------------------


def test_handle_passed_to_a_task(shared):
    @ray.remote
    def bump(counter, n):
        return ray.get([counter.incr.remote() for _ in range(n)])[-1]

    counter = Counter.remote()
    assert ray.get(bump.remote(counter, 5)) == 5
    assert ray.get(counter.read.remote()) == 5


def test_handle_passed_to_and_stored_in_another_actor(shared):
    @ray.remote
    class Holder:
        def __init__(self, counter):
            self.counter = counter

        def bump_stored(self):
            return ray.get(self.counter.incr.remote())

        def bump_given(self, counters):
            return ray.get([c.incr.remote() for c in counters])

    counter = Counter.remote()
    holder = Holder.remote(counter)
    assert ray.get(holder.bump_stored.remote()) == 1
    assert ray.get(holder.bump_stored.remote()) == 2
    assert ray.get(holder.bump_given.remote([counter])) == [3]
    assert ray.get(counter.read.remote()) == 3


def test_handle_returned_from_a_task_and_actor_created_in_a_task(shared):
    @ray.remote
    def make_counter(start):
        counter = Counter.remote(start)
        ray.get(counter.incr.remote())
        return counter

    counter = ray.get(make_counter.remote(100))
    assert ray.get(counter.incr.remote()) == 102


def test_actor_created_inside_an_actor(shared):
    @ray.remote
    class Parent:
        def __init__(self):
            self.child = Counter.remote(7)

        def child_incr(self):
            return ray.get(self.child.incr.remote())

        def child_handle(self):
            return self.child

    parent = Parent.remote()
    assert ray.get(parent.child_incr.remote()) == 8
    child = ray.get(parent.child_handle.remote())
    assert ray.get(child.incr.remote()) == 9
    assert ray.get(parent.child_incr.remote()) == 10


# --- named actors ------------------------------------------------------------------------


def test_named_actor_get_actor_and_list(shared):
    named = Counter.options(name="test-named-counter").remote(5)
    handle = ray.get_actor("test-named-counter")
    assert ray.get(handle.incr.remote()) == 6
    assert ray.get(named.read.remote()) == 6
    assert "test-named-counter" in ray.util.list_named_actors()
    namespace = ray.get_runtime_context().namespace
    assert {"name": "test-named-counter", "namespace": namespace} in \
        ray.util.list_named_actors(all_namespaces=True)
    # A name is refused while its actor lives.
    with pytest.raises(ValueError, match="test-named-counter.*already taken"):
        Counter.options(name="test-named-counter").remote()
    # get_if_exists returns the living actor rather than making another.
    again = Counter.options(name="test-named-counter", get_if_exists=True).remote(1000)
    assert ray.get(again.read.remote()) == 6
    ray.kill(named)
    wait_for_condition(lambda: "test-named-counter" not in ray.util.list_named_actors(),
                       message="the killed actor's name to be released")
    with pytest.raises(ValueError, match="test-named-counter"):
        ray.get_actor("test-named-counter")
    # The name is free again.
    fresh_one = Counter.options(name="test-named-counter", get_if_exists=True).remote(1)
    assert ray.get(fresh_one.read.remote()) == 1
    ray.kill(fresh_one)


def test_named_actor_in_an_explicit_namespace(shared):
    actor = Counter.options(name="ns-counter", namespace="elsewhere").remote(3)
    assert ray.get(actor.read.remote()) == 3
    with pytest.raises(ValueError, match="ns-counter"):
        ray.get_actor("ns-counter")
    assert ray.get(ray.get_actor("ns-counter", namespace="elsewhere").read.remote()) == 3
    assert "ns-counter" not in ray.util.list_named_actors()
    assert {"name": "ns-counter", "namespace": "elsewhere"} in \
        ray.util.list_named_actors(all_namespaces=True)
    # The same name in another namespace is a different actor.
    mine = Counter.options(name="ns-counter").remote(4)
    assert ray.get(ray.get_actor("ns-counter").read.remote()) == 4
    ray.kill(actor)
    ray.kill(mine)


def test_named_actor_is_reachable_from_a_task(shared):
    Counter.options(name="task-visible").remote(40)

    @ray.remote
    def bump_by_name():
        return ray.get(ray.get_actor("task-visible").incr.remote())

    assert ray.get(bump_by_name.remote()) == 41
    ray.kill(ray.get_actor("task-visible"))


# --- bad input -------------------------------------------------------------------------


def test_calling_an_actor_class_or_method_directly_is_a_type_error(shared):
    with pytest.raises(TypeError, match=r"Counter\.remote\(\)"):
        Counter()
    counter = Counter.remote()
    with pytest.raises(TypeError, match="remote"):
        counter.incr()
    assert ray.get(counter.incr.remote()) == 1


def test_missing_method_is_an_attribute_error_naming_it(shared):
    counter = Counter.remote()
    with pytest.raises(AttributeError, match="no_such_method"):
        counter.no_such_method.remote()
    with pytest.raises(AttributeError, match="_hidden"):
        counter._hidden.remote()
    assert not hasattr(counter, "__wrapped__")
    assert ray.get(counter.incr.remote()) == 1


def test_underscore_methods_can_be_called(shared):
    @ray.remote
    class Private:
        def _helper(self, x):
            return x + 1

    assert ray.get(Private.remote()._helper.remote(1)) == 2


def test_invalid_actor_options_are_refused(shared):
    with pytest.raises(ValueError, match="get_if_exists"):
        Counter.options(get_if_exists=True).remote()
    with pytest.raises(ValueError, match="max_concurrency"):
        Counter.options(max_concurrency=0)
    with pytest.raises(ValueError, match="lifetime"):
        Counter.options(lifetime="forever")
    with pytest.raises(ValueError, match="not_an_option"):
        Counter.options(not_an_option=1)
    with pytest.raises(ValueError, match="not_an_option"):
        Counter.remote().incr.options(not_an_option=1)
    with pytest.raises(TypeError, match="num_cpus"):
        Counter.options(num_cpus="two")
    # The session keeps working.
    assert ray.get(Counter.remote().incr.remote()) == 1


def test_remote_on_something_neither_class_nor_function_is_a_type_error(shared):
    for bad in (42, "text", None):
        with pytest.raises(TypeError, match="function or a class"):
            ray.remote(bad)


def test_kill_of_a_non_handle_is_a_type_error(shared):
    @ray.remote
    def task():
        return 1

    ref = task.remote()
    with pytest.raises(TypeError, match="actor"):
        ray.kill(ref)
    with pytest.raises(TypeError, match="actor"):
        ray.kill("not an actor")
    assert ray.get(ref) == 1


def test_get_actor_with_bad_names(shared):
    with pytest.raises(ValueError, match="never-created"):
        ray.get_actor("never-created")
    with pytest.raises(ValueError):
        ray.get_actor("")
    assert ray.get(Counter.remote().incr.remote()) == 1


def test_handle_is_usable_from_threads(shared):
    counter = Counter.remote()
    results = []

    def worker():
        results.append(ray.get([counter.incr.remote() for _ in range(50)]))
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert ray.get(counter.read.remote()) == 200
    # Each thread's own calls ran in its order.
    assert all(r == sorted(r) for r in results)


def test_actor_error_types_are_related():
    assert issubclass(ray.exceptions.ActorDiedError, RayActorError)


def test_every_actor_has_rays_builtin_methods(shared):
    @ray.remote
    class Plain:
        def __init__(self):
            self.value = 41

        def pid(self):
            return os.getpid()

    actor = Plain.remote()
    assert ray.get(actor.__ray_ready__.remote()) is True
    assert ray.get(actor.__ray_call__.remote(lambda self, k: self.value + k, 1)) == 42
    with pytest.raises(ray.exceptions.RayActorError, match="exit_actor"):
        ray.get(actor.__ray_terminate__.remote())
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(actor.pid.remote(), timeout=30)


def test_max_task_retries_is_accepted_without_max_restarts(shared):
    @ray.remote(max_task_retries=2)
    class Retrying:
        def ok(self):
            return "ok"

    assert ray.get(Retrying.remote().ok.remote()) == "ok"
