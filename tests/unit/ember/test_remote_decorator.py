"""``@ember.remote`` applied to something that is neither a function nor a class.

The error names the value and its type, whether the decorator is used bare
or with options; no cluster is needed to find the mistake.
"""
import pytest

import ember


@pytest.mark.parametrize("value, shown", [(42, "int (42)"), ("job", "str ('job')"),
                                          (None, "NoneType (None)")])
def test_bare_and_optioned_decorator_name_the_value_and_its_type(value, shown):
    for decorate in (ember.remote, ember.remote(num_cpus=1)):
        with pytest.raises(TypeError, match="function or a class") as info:
            decorate(value)
        assert shown in str(info.value)


def test_a_long_value_is_shortened_in_the_message():
    with pytest.raises(TypeError) as info:
        ember.remote(num_cpus=1)("x" * 1000)
    assert len(str(info.value)) < 200
    assert "got str ('xxx" in str(info.value)


def test_a_callable_instance_is_refused_with_the_same_message():
    class Callable:
        def __call__(self):
            return 1

    with pytest.raises(TypeError, match="got Callable"):
        ember.remote(Callable())


def test_functions_builtins_and_methods_become_remote_functions():
    class Holder:
        def method(self):
            return 1

    for obj in (lambda: 1, len, Holder().method):
        assert hasattr(ember.remote(obj), "remote")
        assert hasattr(ember.remote(num_cpus=1)(obj), "remote")
