"""Bad input gets Ray's exception type, a message naming what was wrong, and no harm done.

Every test ends by running a task, because a mistake must never break the session.
"""
from __future__ import annotations

import threading

import pytest

import ember as ray


@ray.remote
def echo(x=None):
    return x


def still_works():
    assert ray.get(echo.remote("ok"), timeout=30) == "ok"


def test_calling_a_remote_function_directly(shared):
    with pytest.raises(TypeError, match=r"echo\.remote\(\)"):
        echo(1)
    with pytest.raises(TypeError, match=r"\.remote\(\)"):
        echo.options(num_cpus=1)(1)
    still_works()


@pytest.mark.parametrize("options, named", [
    ({"num_cpus": -1}, "num_cpus"),
    ({"num_gpus": -1}, "num_gpus"),
    ({"memory": -5}, "memory"),
    ({"resources": {"custom": -1}}, "custom"),
    ({"max_retries": -2}, "max_retries"),
    ({"max_calls": -1}, "max_calls"),
])
def test_negative_values_are_value_errors(shared, options, named):
    with pytest.raises(ValueError, match=named):
        echo.options(**options)
    with pytest.raises(ValueError, match=named):
        ray.remote(**options)(lambda: None)
    still_works()


def test_cpu_and_gpu_in_resources_are_refused(shared):
    with pytest.raises(ValueError, match="num_cpus"):
        echo.options(resources={"CPU": 1})
    with pytest.raises(ValueError, match="num_gpus"):
        echo.options(resources={"GPU": 1})
    still_works()


def test_bad_num_returns(shared):
    with pytest.raises(ValueError, match="num_returns"):
        echo.options(num_returns=-1)
    with pytest.raises(ValueError, match="num_returns"):
        echo.options(num_returns="many")
    with pytest.raises(TypeError, match="num_returns"):
        echo.options(num_returns=1.5)
    with pytest.raises(TypeError, match="num_returns"):
        echo.options(num_returns=True)
    still_works()


def test_get_of_something_that_is_not_a_ref(shared):
    with pytest.raises(ValueError, match="int"):
        ray.get(1)
    with pytest.raises(ValueError, match="str"):
        ray.get("not a ref")
    with pytest.raises(TypeError, match="'oops'"):
        ray.get([echo.remote(1), "oops"])
    still_works()


def test_bad_wait_arguments(shared):
    ref = echo.remote(1)
    with pytest.raises(TypeError, match="list"):
        ray.wait(ref)
    with pytest.raises(TypeError, match="int"):
        ray.wait([ref, 3])
    with pytest.raises(ValueError, match="num_returns"):
        ray.wait([ref], num_returns=2)
    with pytest.raises(ValueError, match="num_returns"):
        ray.wait([ref], num_returns=0)
    with pytest.raises(ValueError, match="unique"):
        ray.wait([ref, ref], num_returns=1)
    with pytest.raises(ValueError, match="timeout"):
        ray.get(ref, timeout=-1)
    still_works()


def test_unpicklable_argument_names_the_object(shared):
    lock = threading.Lock()
    with pytest.raises(TypeError, match="lock"):
        echo.remote(lock)
    with pytest.raises(TypeError, match=r"item 1, key 'inner'.*lock"):
        echo.remote([1, {"inner": lock}])
    with pytest.raises(TypeError, match="lock"):
        echo.remote(x=lock)
    with pytest.raises(TypeError, match="lock"):
        ray.put(lock)
    still_works()


def test_unpicklable_closure_names_the_variable(shared):
    lock = threading.Lock()

    def uses_lock():
        with lock:
            return 1
    with pytest.raises(TypeError, match=r"captured variable 'lock'.*lock"):
        ray.remote(uses_lock).remote()
    still_works()


def test_unknown_option_names_it(shared):
    with pytest.raises(ValueError, match="'num_cpu'"):
        echo.options(num_cpu=1)
    with pytest.raises(ValueError, match="'bogus'"):
        ray.remote(bogus=1)(lambda: None)
    still_works()


def test_bad_option_types_and_values(shared):
    with pytest.raises(TypeError, match="retry_exceptions"):
        echo.options(retry_exceptions="yes")
    with pytest.raises(ValueError, match="retry_exceptions"):
        echo.options(retry_exceptions=[1])
    with pytest.raises(ValueError, match="BOGUS"):
        echo.options(scheduling_strategy="BOGUS").remote()
    with pytest.raises(TypeError, match="num_cpus"):
        echo.options(num_cpus="two")
    still_works()


def test_bad_decorator_usage(shared):
    with pytest.raises(TypeError, match="@ember.remote"):
        ray.remote(1, 2)
    with pytest.raises(TypeError):
        ray.remote(42)
    still_works()


def test_put_of_a_ref_and_cancel_of_a_non_ref(shared):
    with pytest.raises(TypeError, match="ObjectRef"):
        ray.put(echo.remote(1))
    with pytest.raises(TypeError, match="int"):
        ray.cancel(1)
    still_works()


def test_bad_init_arguments(fresh):
    with pytest.raises(ValueError, match="num_cpus"):
        ray.init(num_cpus=-1)
    with pytest.raises(ValueError, match="'x'"):
        ray.init(resources={"x": -1})
    with pytest.raises(ValueError, match="'nope'"):
        ray.init(address="nope")
    with pytest.raises(TypeError, match="bogus_arg"):
        ray.init(bogus_arg=1)
    assert not ray.is_initialized()
    fresh(num_cpus=1)
    still_works()



def test_wait_on_no_refs_returns_empty_lists_whatever_num_returns(shared):
    assert ray.wait([]) == ([], [])
    assert ray.wait([], num_returns=3, timeout=0) == ([], [])


def test_a_call_that_does_not_bind_fails_at_the_call_and_the_session_goes_on(shared):
    @ray.remote
    def two(a, b):
        return a + b

    @ray.remote
    class Box:
        def __init__(self, item):
            self.item = item

        def put(self, item):
            self.item = item
            return item

    with pytest.raises(TypeError, match="missing a required argument: 'b'"):
        two.remote(1)
    box = Box.remote(1)
    with pytest.raises(TypeError, match=r"Box.put: too many positional arguments"):
        box.put.remote(1, 2)
    assert ray.get([two.remote(1, 2), box.put.remote(5)]) == [3, 5]
    still_works()
