"""Checks made at ``.remote()`` and on options, before anything is sent (as Ray makes them).

No cluster is needed: a call that cannot bind to the signature, or a bad
``label_selector`` / ``fallback_strategy``, fails in the caller.
"""
import pytest

import ember
from ember import options as opts
from ember.label_selector import constraints
from ember.protocol.common import NodeLabelScheduling


@ember.remote
def add(a, b=1, *, scale=1):
    return (a + b) * scale


@ember.remote
class Counter:
    def __init__(self, start):
        self.value = start

    def incr(self, by=1):
        self.value += by

    @staticmethod
    def helper(x):
        return x


@pytest.mark.parametrize("args, kwargs, problem", [
    ((), {}, "missing a required argument: 'a'"),
    ((1, 2, 3), {}, "too many positional arguments"),
    ((1,), {"c": 2}, "unexpected keyword argument 'c'"),
])
def test_a_call_that_does_not_bind_is_a_type_error_naming_the_function(args, kwargs, problem):
    with pytest.raises(TypeError, match=problem) as info:
        add.remote(*args, **kwargs)
    assert "remote function" in str(info.value) and "add" in str(info.value)
    with pytest.raises(TypeError, match=problem):  # the verdict is remembered, same error
        add.options(num_cpus=1).remote(*args, **kwargs)


def test_actor_constructor_and_method_calls_are_checked():
    with pytest.raises(TypeError, match=r"Counter.__init__: missing a required argument"):
        Counter.remote()
    meta = Counter._methods
    assert str(meta["incr"]["signature"]) == "(by=<default>)"   # self is not asked for
    assert str(meta["helper"]["signature"]) == "(x)"             # a static method has no self


@pytest.mark.parametrize("selector, problem", [
    ({"zone": "in()"}, "invalid label selector value"),
    ({"zone": "-a"}, "invalid label selector value"),
    ({"-bad": "a"}, "invalid label key"),
    ({"zone": 3}, "invalid label selector value"),
])
def test_bad_label_selectors_are_refused_naming_the_value(selector, problem):
    with pytest.raises(ValueError, match=problem):
        opts.validate({"label_selector": selector}, opts.TASK_OPTIONS, "remote function f")


def test_fallback_strategy_is_a_valid_option_and_checked():
    opts.validate({"fallback_strategy": [{"label_selector": {"zone": "b"}}]},
                  opts.TASK_OPTIONS, "f")
    with pytest.raises(ValueError, match="only 'label_selector'"):
        opts.validate({"fallback_strategy": [{"memory": 1}]}, opts.ACTOR_OPTIONS, "A")


def test_selectors_become_policy_constraints():
    assert constraints({"a": "x", "b": "!y", "c": "in(p, q)", "d": "!in(r,s)"}) == {
        "a": ("in", ["x"]), "b": ("not_in", ["y"]), "c": ("in", ["p", "q"]),
        "d": ("not_in", ["r", "s"])}
    strategy = opts.scheduling_strategy(
        {"label_selector": {"zone": "a"},
         "fallback_strategy": [{"label_selector": {"zone": "b"}}]}, "f")
    assert type(strategy) is NodeLabelScheduling and strategy.hard_labels == {"zone": ("in", ["a"])}
    assert strategy.fallback_labels == [{"zone": ("in", ["b"])}]
    with pytest.raises(ValueError, match="cannot be combined with the SPREAD"):
        opts.scheduling_strategy({"label_selector": {"zone": "a"},
                                  "scheduling_strategy": "SPREAD"}, "f")


def test_node_affinity_takes_a_node_id_object_as_ray_does():
    from ember.ids import NodeID
    from ember.scheduling_strategies import NodeAffinitySchedulingStrategy
    node_id = NodeID(bytes(range(28)))
    strategy = NodeAffinitySchedulingStrategy(node_id=node_id, soft=True)
    assert strategy.node_id == node_id.hex()
    with pytest.raises(TypeError, match="hex string or a NodeID"):
        NodeAffinitySchedulingStrategy(node_id=12, soft=False)
