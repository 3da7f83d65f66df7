"""``ember.util.testing.wait_for_condition`` as Ray test suites use it."""
import gc
import weakref

import pytest

from ember.util.testing import wait_for_condition


class Handle:
    """Stands for an actor handle: the actor lives as long as the handle does."""


def _wait_on_a_handle() -> weakref.ref:
    """Waits with a predicate that holds a handle and raises once; a weak ref to it."""
    handle = Handle()
    calls = []

    def ready():
        calls.append(handle)
        if len(calls) == 1:
            raise RuntimeError("not yet")
        return True
    wait_for_condition(ready, timeout=5, retry_interval_ms=1)
    return weakref.ref(handle)


def test_a_predicate_that_raised_once_leaves_nothing_alive():
    gc.disable()  # what is freed must be freed by reference counting alone
    try:
        assert _wait_on_a_handle()() is None
    finally:
        gc.enable()


def test_timeout_names_the_last_exception():
    def never():
        raise KeyError("missing")
    with pytest.raises(RuntimeError, match="KeyError"):
        wait_for_condition(never, timeout=0.05, retry_interval_ms=1)
