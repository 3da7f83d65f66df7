"""ember.dag on a real cluster: chains, diamonds, inputs, actor DAGs, outputs, options, bad input."""
from __future__ import annotations

import pytest

import ember as ray
from ember.actor import ActorHandle
from ember.dag import ClassMethodNode, FunctionNode, InputNode, MultiOutputNode
from ember.exceptions import RayTaskError
from ember.object_ref import ObjectRef


@ray.remote
def add(x, inc=1):
    return x + inc


@ray.remote
def double(x):
    return x * 2


@ray.remote
def combine(*parts):
    return sum(parts)


@ray.remote
class Tally:
    """Counts the runs of the tasks that report to it."""

    def __init__(self):
        self.runs = 0

    def ran(self):
        self.runs += 1

    def count(self):
        return self.runs


@ray.remote
def reported(tally, value):
    ray.get(tally.ran.remote())
    return value


@ray.remote
class Accumulator:
    def __init__(self, start):
        self.value = start

    def inc(self, by):
        self.value += by
        return self.value

    def get(self):
        return self.value

    def actor_id(self):
        return ray.get_runtime_context().get_actor_id()

    @ray.method(num_returns=2)
    def pair(self, x):
        return x, x + 1


def test_a_chain_runs_upstream_first_and_returns_an_object_ref(shared):
    first = add.bind(1, inc=2)
    dag = double.bind(add.bind(first, inc=3))
    assert isinstance(dag, FunctionNode)
    ref = dag.execute()
    assert isinstance(ref, ObjectRef)
    assert ray.get(ref) == 12  # ((1 + 2) + 3) * 2
    # A node given as a keyword argument is replaced by its value too.
    assert ray.get(add.bind(first, inc=first).execute()) == 6


def test_a_shared_node_runs_once_per_execution(shared):
    tally = Tally.remote()
    source = reported.bind(tally, 5)
    dag = combine.bind(double.bind(source), add.bind(source), source)
    assert ray.get(dag.execute()) == 10 + 6 + 5
    assert ray.get(tally.count.remote()) == 1
    assert ray.get(dag.execute()) == 21
    assert ray.get(tally.count.remote()) == 2


def test_input_node_whole_indexed_and_by_name(shared):
    with InputNode() as inp:
        whole = double.bind(inp)
        parts = combine.bind(inp[0], inp[1], inp.z, inp["w"])
    assert ray.get(whole.execute(21)) == 42
    assert ray.get(whole.execute("ab")) == "abab"
    assert ray.get(parts.execute(1, 2, z=3, w=4)) == 10

    with InputNode() as inp:
        from_dict = combine.bind(inp["a"], inp["b"])
        from_list = combine.bind(inp[0], inp[2])
        from_object = double.bind(inp.real)
    # One argument is the input itself: keys, indexes and attributes read into it.
    assert ray.get(from_dict.execute({"a": 1, "b": 10})) == 11
    assert ray.get(from_list.execute([1, 2, 3])) == 4
    assert ray.get(from_object.execute(complex(4, 1))) == 8.0


def test_an_actor_dag_creates_the_actor_once_per_execution(shared):
    actor = Accumulator.bind(10)
    first_id = actor.actor_id.bind()
    actor.inc.bind(2)  # unused results: they run because later calls on it follow
    actor.inc.bind(4)
    dag = MultiOutputNode([actor.get.bind(), first_id, actor.actor_id.bind(), actor])
    assert isinstance(first_id, ClassMethodNode)

    value_ref, id_ref, same_id_ref, handle = dag.execute()
    assert ray.get(value_ref) == 16
    assert ray.get(id_ref) == ray.get(same_id_ref)
    assert isinstance(handle, ActorHandle)
    assert ray.get(handle.get.remote()) == 16  # the handle is the DAG's actor
    again = dag.execute()
    assert ray.get(again[1]) != ray.get(id_ref)  # a new actor for a new execution
    assert ray.get(again[0]) == 16


def test_rays_two_actor_example(shared):
    a1 = Accumulator.bind(10)
    a2 = Accumulator.bind(10)
    a1.inc.bind(2)
    a1.inc.bind(4)
    a2.inc.bind(6)
    dag = combine.bind(a1.get.bind(), a2.get.bind())
    assert ray.get(dag.execute()) == 32


def test_methods_of_an_existing_actor_take_the_input_each_execution(shared):
    actor = Accumulator.remote(0)
    with InputNode() as inp:
        dag = MultiOutputNode([actor.inc.bind(inp), double.bind(actor.get.bind())])
    assert ray.get(dag.execute(1)) == [1, 2]
    assert ray.get(dag.execute(5)) == [6, 12]
    assert ray.get(actor.get.remote()) == 6  # the same actor each time


def test_multi_output_node_returns_a_list_of_refs(shared):
    with InputNode() as inp:
        dag = MultiOutputNode([add.bind(inp["x"]), add.bind(inp["y"]), double.bind(3)])
    refs = dag.execute({"x": 1, "y": 2})
    assert isinstance(refs, list) and all(isinstance(r, ObjectRef) for r in refs)
    assert ray.get(refs) == [2, 3, 6]


@ray.remote
def what_arrived(items, mapping):
    # Nested refs arrive as refs (Ray's rule for any task argument).
    return ([type(i).__name__ for i in items], ray.get(items),
            {k: ray.get(v) for k, v in mapping.items()})


def test_nodes_nested_in_lists_and_dicts_arrive_as_refs(shared):
    one = double.bind(1)
    dag = what_arrived.bind([one, add.bind(one)], {"three": add.bind(2)})
    kinds, values, mapping = ray.get(dag.execute())
    assert kinds == ["ObjectRef", "ObjectRef"]
    assert values == [2, 3] and mapping == {"three": 3}


@ray.remote
def two_values():
    return "left", "right"


def test_options_given_before_bind_apply_when_the_dag_runs(shared):
    refs = two_values.options(num_returns=2).bind().execute()
    assert isinstance(refs, list) and ray.get(refs) == ["left", "right"]

    handle = Accumulator.options(name="dag-options-actor").bind(7).execute()
    assert ray.get(ray.get_actor("dag-options-actor").get.remote()) == 7
    ray.kill(handle)

    actor = Accumulator.bind(1)
    refs = actor.pair.bind(5).execute()  # @ray.method(num_returns=2) holds in a DAG
    assert ray.get(refs) == [5, 6]
    single = actor.pair.options(num_returns=1).bind(5).execute()
    assert ray.get(single) == (5, 6)


def test_a_handle_method_with_two_returns_binds_as_two_nodes(shared):
    actor = Accumulator.remote(0)
    with InputNode() as inp:
        low, high = actor.pair.bind(inp)
        assert low.is_class_method_output and high.get_args()[1] == 1
        dag = MultiOutputNode([double.bind(low), high])
    assert ray.get(dag.execute(3)) == [6, 4]


@ray.remote
def fails(x):
    raise ValueError(f"bad value {x}")


def test_bad_input_fails_at_bind_or_execute_with_rays_error_types(shared):
    with pytest.raises(TypeError, match="add.*too many positional arguments"):
        add.bind(1, 2, 3)
    with pytest.raises(TypeError, match="Accumulator.inc.*missing a required argument"):
        Accumulator.bind(0).inc.bind()
    with pytest.raises(AttributeError, match="has no method 'nope'"):
        Accumulator.bind(0).nope
    node = add.bind(1)
    with pytest.raises(AttributeError, match=r"\.remote\(\) cannot be used"):
        node.remote()
    with InputNode() as inp:
        needs_two = combine.bind(inp[0], inp[1])
        whole = double.bind(inp)
    with pytest.raises(IndexError, match="given 1 positional argument"):
        needs_two.execute(1, x=2)
    with pytest.raises(ValueError, match="without any"):
        whole.execute()
    # A task that fails fails its downstream tasks, as any dependency does.
    with pytest.raises(RayTaskError, match="bad value 3"):
        ray.get(double.bind(fails.bind(3)).execute())
    # The session goes on.
    assert ray.get(whole.execute(2)) == 4


@ray.remote
class Echo:
    def echo(self, value):
        return value


def test_a_compiled_dag_executes_like_the_dag_each_time(shared):
    a, b = Echo.remote(), Echo.remote()
    with InputNode() as inp:
        dag = MultiOutputNode([a.echo.bind(inp), b.echo.bind(add.bind(inp))])
    compiled = dag.experimental_compile()
    for i in range(3):
        assert ray.get(compiled.execute(i)) == [i, i + 1]
    compiled.teardown()
    with pytest.raises(RuntimeError, match="torn down"):
        compiled.execute(0)
    assert ray.get(a.echo.remote("alive"))  # teardown() leaves the actors alone


def test_a_compiled_dag_with_asyncio(shared):
    import asyncio
    actor = Echo.remote()
    with InputNode() as inp:
        compiled = actor.echo.bind(inp).experimental_compile(enable_asyncio=True)

    async def run(i):
        return await (await compiled.execute_async(i))
    assert asyncio.run(run(42)) == 42
    with pytest.raises(ValueError, match="execute_async"):
        compiled.execute(1)


def test_compiled_dag_teardown_can_kill_its_actors(shared):
    actor = Echo.remote()
    with InputNode() as inp:
        compiled = actor.echo.bind(inp).experimental_compile()
    assert ray.get(compiled.execute(1)) == 1
    compiled.teardown(kill_actors=True)
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(actor.echo.remote(2), timeout=30)


def test_compiled_dag_visualize_draws_every_call(shared, tmp_path):
    graphviz = pytest.importorskip("graphviz")
    a = Echo.remote()
    with InputNode() as inp:
        compiled = MultiOutputNode([a.echo.bind(inp), double.bind(inp)]).experimental_compile()
    try:
        path = compiled.visualize(str(tmp_path / "graph"), format="dot")
    except graphviz.ExecutableNotFound:
        pytest.skip("Graphviz's dot program is not installed")
    text = open(path).read()
    assert "Echo.echo" in text and "double" in text and "MultiOutputNode" in text
