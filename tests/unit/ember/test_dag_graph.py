"""ember.dag without a cluster: the walk, the inputs and the checks made at bind time.

Nodes call ``.remote()`` on what they were bound to, so fakes stand in for
remote functions and actors here: each records its calls in a shared log and
returns a token, which shows what each node was given and in which order the
nodes ran. tests/cluster/test_dag.py runs the same shapes on a real cluster.
"""
import pytest

import ember
from ember.dag import (PARENT_CLASS_NODE_KEY, PREV_CLASS_METHOD_CALL_KEY, ClassMethodNode,
                       ClassNode, DAGInputData, DAGNode, FunctionNode, InputAttributeNode,
                       InputNode, MultiOutputNode)


class FakeFunction:
    """A stand-in for a RemoteFunction: ``.remote()`` logs the call, returns a token."""

    def __init__(self, name, log):
        self.name = name
        self.log = log

    def remote(self, *args, **kwargs):
        self.log.append((self.name, args, kwargs))
        return f"<{self.name}#{len(self.log)}>"

    def bind(self, *args, **kwargs):
        return FunctionNode(self, args, kwargs, {}, self.name)


class FakeHandle:
    def __init__(self, name, log):
        self.name = name
        self.log = log

    def __getattr__(self, method):
        return FakeFunction(f"{self.name}.{method}", self.log)


class FakeActorClass:
    """A stand-in for an ActorClass: ``.remote()`` logs the creation, returns a FakeHandle."""

    def __init__(self, name, log, methods=("inc", "get")):
        self.name = name
        self.log = log
        self.methods = {m: {"signature": None} for m in methods}
        self.created = 0

    def remote(self, *args, **kwargs):
        self.created += 1
        handle_name = f"{self.name}{self.created}"
        self.log.append((f"new {handle_name}", args, kwargs))
        return FakeHandle(handle_name, self.log)

    def bind(self, *args, **kwargs):
        return ClassNode(self, self.name, self.methods, args, kwargs, {})


@pytest.fixture
def log():
    return []


def test_a_shared_node_runs_once_and_upstream_nodes_run_first(log):
    f = FakeFunction("f", log)
    g = FakeFunction("g", log)
    source = f.bind(1)
    dag = g.bind(f.bind(source), f.bind(source))  # a diamond

    assert dag.execute() == "<g#4>"
    assert log == [("f", (1,), {}), ("f", ("<f#1>",), {}), ("f", ("<f#1>",), {}),
                   ("g", ("<f#2>", "<f#3>"), {})]
    log.clear()
    dag.execute()  # each execution runs every node again
    assert [name for name, _, _ in log] == ["f", "f", "f", "g"]


class Box:
    def __init__(self, content):
        self.content = content


def test_nodes_nested_anywhere_in_arguments_are_replaced_by_their_result(log):
    f = FakeFunction("f", log)
    a, b, c = f.bind("a"), f.bind("b"), f.bind("c")
    unrelated = ["kept", "as", "is"]
    dag = f.bind([a, (b, {"key": c})], unrelated, box=Box(a))

    dag.execute()
    name, args, kwargs = log[-1]
    assert args[0] == ["<f#1>", ("<f#2>", {"key": "<f#3>"})]
    assert args[1] is unrelated  # no node inside: passed as it was, not copied
    assert kwargs["box"].content == "<f#1>"
    assert len(log) == 4  # a ran once although bound twice


def test_kwargs_and_options_are_kept_on_the_node(log):
    f = FakeFunction("f", log)
    node = FunctionNode(f, (1,), {"y": 2}, {"num_cpus": 2}, "f")
    assert node.get_args() == (1,)
    assert node.get_kwargs() == {"y": 2}
    assert node.get_options() == {"num_cpus": 2}
    assert isinstance(node, DAGNode) and len(node.get_stable_uuid()) == 32


def test_a_long_chain_runs_without_recursion(log):
    f = FakeFunction("f", log)
    node = f.bind(0)
    for _ in range(5000):
        node = f.bind(node)
    assert node.execute() == "<f#5001>"


def test_input_node_single_value_many_values_and_attributes(log):
    f = FakeFunction("f", log)
    with InputNode() as inp:
        whole = f.bind(inp)
        parts = MultiOutputNode([inp[0], inp[1], inp.x, inp["x"]])
        items = MultiOutputNode([inp[0], inp["x"]])

    assert whole.execute(5) == "<f#1>" and log[-1][1] == (5,)
    # One positional argument is the input itself: indexing reads into it.
    assert items.execute({0: "zero", "x": "ex"}) == ["zero", "ex"]
    # Several arguments: [i] is the i-th positional one, .x and ["x"] the keyword one.
    assert parts.execute(1, 2, x=3) == [1, 2, 3, 3]
    assert isinstance(inp[0], InputAttributeNode) and inp[0] is inp[0]
    assert inp[0].key == 0


def test_input_attribute_reads_an_object_attribute():
    with InputNode() as inp:
        dag = MultiOutputNode([inp.content])
    assert dag.execute(Box("inside")) == ["inside"]


def test_missing_inputs_fail_with_the_lookups_error_type_and_say_what_was_given(log):
    f = FakeFunction("f", log)
    with InputNode() as inp:
        second = f.bind(inp[1])
        keyed = f.bind(inp.k)
        whole = f.bind(inp)

    with pytest.raises(IndexError, match=r"reads its input \[1\].*given 0 positional"):
        second.execute()
    with pytest.raises(KeyError, match="no keyword argument 'k'"):
        keyed.execute(1, 2)
    with pytest.raises(ValueError, match="without any"):
        whole.execute()
    with pytest.raises(TypeError):  # one argument is the input itself, and 7[1] fails
        second.execute(7)
    assert log == []


def test_input_node_misuse_has_rays_error_types(log):
    f = FakeFunction("f", log)
    with pytest.raises(ValueError, match="InputNode should not take any args or kwargs"):
        InputNode(0)
    with pytest.raises(AssertionError, match="only used in context manager"):
        f.bind(InputNode()).execute(1)
    with InputNode() as first:
        a = f.bind(first)
    with InputNode() as second:
        dag = f.bind(a, f.bind(second))
    with pytest.raises(AssertionError, match="only have one unique InputNode"):
        dag.execute(1)
    with pytest.raises(AssertionError, match="int index or str"):
        first[(1, 2)]
    with pytest.raises(ValueError, match="Invalid input type"):
        MultiOutputNode(f.bind(1))


def test_a_node_cannot_be_bound_again_or_called_remotely(log):
    node = FakeFunction("f", log).bind(1)
    with pytest.raises(AttributeError, match=r"\.remote\(\) cannot be used on FunctionNode"):
        node.remote()
    with pytest.raises(AttributeError, match=r"\.bind\(\) cannot be used again"):
        node.bind()
    with InputNode() as inp:
        with pytest.raises(AttributeError, match="execute"):
            inp.remote()


def test_actor_created_once_and_calls_run_in_bind_order(log):
    Actor = FakeActorClass("A", log)
    actor = Actor.bind(10)
    first = actor.get.bind()
    actor.inc.bind(2)  # result unused: runs because a later call follows it
    actor.inc.bind(4)
    dag = MultiOutputNode([actor.get.bind(), first, actor])

    get_ref, first_ref, handle = dag.execute()
    assert [entry[0] for entry in log] == ["new A1", "A1.get", "A1.inc", "A1.inc", "A1.get"]
    assert Actor.created == 1 and handle.name == "A1"
    assert (first_ref, get_ref) == ("<A1.get#2>", "<A1.get#5>")
    dag.execute()
    assert Actor.created == 2  # one actor per execution, as in Ray


def test_a_method_call_names_its_actor_and_the_call_before_it(log):
    actor = FakeActorClass("A", log).bind()
    first = actor.inc.options(name="first").bind()
    second = actor.get.bind()
    other = second.get_other_args_to_resolve()
    assert other[PARENT_CLASS_NODE_KEY] is actor
    assert other[PREV_CLASS_METHOD_CALL_KEY] is first
    assert first.get_other_args_to_resolve()[PREV_CLASS_METHOD_CALL_KEY] is None


def test_actor_bind_misuse(log):
    Actor = FakeActorClass("A", log)
    node = Actor.bind()
    with pytest.raises(AttributeError, match="A has no method 'nope'"):
        node.nope
    with pytest.raises(AttributeError, match=r"\.remote\(\) cannot be used on ClassMethodNodes"):
        node.get.remote()
    with pytest.raises(AttributeError, match=r"\.remote\(\) cannot be used on ClassNode"):
        node.remote()
    with InputNode() as inp:
        with pytest.raises(ValueError, match="cannot be used as args"):
            Actor.bind(inp)
        Actor.bind(inp[0])  # Ray allows a part of the input (it is only not checked)
    call = node.get.options(num_returns=1).bind()
    assert isinstance(call, ClassMethodNode) and call.get_options() == {"num_returns": 1}
    assert call.get_method_name() == "get"


# --- real remote functions and actor classes: what bind checks needs no cluster ---

@ember.remote
def add(a, b=1):
    return a + b


@ember.remote
class Counter:
    def __init__(self, start):
        self.value = start

    def incr(self, by=1):
        self.value += by


def test_bind_checks_the_signature_and_names_the_callee():
    with pytest.raises(TypeError, match="add.*too many positional arguments"):
        add.bind(1, 2, 3)
    with pytest.raises(TypeError, match="Counter.__init__.*missing a required argument"):
        Counter.bind()
    with pytest.raises(TypeError, match="Counter.incr.*unexpected keyword argument 'x'"):
        Counter.bind(0).incr.bind(x=1)
    with pytest.raises(AttributeError):
        (lambda x: x).bind  # a plain function has no bind: it must be @ember.remote


def test_options_before_bind_are_carried_to_the_node():
    node = add.options(num_cpus=0.5, name="adder").bind(1)
    assert isinstance(node, FunctionNode)
    assert node.get_options() == {"num_cpus": 0.5, "name": "adder"}
    actor = Counter.options(max_concurrency=2).bind(0)
    assert actor.get_options() == {"max_concurrency": 2}


def test_dag_input_data_refuses_other_keys():
    with pytest.raises(ValueError, match="int index or str"):
        DAGInputData(1)[1.5]
