"""Objects: put, get, wait, large values, and awaiting refs from asyncio."""
from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time

import numpy as np
import pytest

import helpers

import ember as ray
from ember.exceptions import GetTimeoutError, RayTaskError
from helpers import wait_for_condition


@ray.remote
def sleep_then(seconds, value):
    time.sleep(seconds)
    return value


wait_for_path = ray.remote(helpers.path_then)


def test_put_get_roundtrip(shared):
    values = [0, -1, 3.5, "text", b"bytes", None, True, [1, [2, 3]], (4, 5),
              {"a": {"b": [1, 2]}}, {1, 2, 3}, 10**40, np.arange(10)]
    for value in values:
        got = ray.get(ray.put(value))
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(got, value)
        else:
            assert got == value and type(got) is type(value)
    refs = [ray.put(i) for i in range(50)]
    assert ray.get(refs) == list(range(50))


def test_get_returns_a_copy_of_mutable_values(shared):
    data = {"k": [1, 2]}
    ref = ray.put(data)
    data["k"].append(3)
    first = ray.get(ref)
    assert first == {"k": [1, 2]}
    first["k"].append(99)
    assert ray.get(ref) == {"k": [1, 2]}


def test_put_value_containing_refs(shared):
    inner = ray.put("inner")
    outer = ray.put({"ref": inner, "list": [inner]})
    got = ray.get(outer)
    assert isinstance(got["ref"], ray.ObjectRef)
    assert ray.get(got["ref"]) == "inner"
    del inner, got
    # The outer value keeps the inner one alive.
    assert ray.get(ray.get(outer)["list"][0]) == "inner"


def test_get_timeout_raises_get_timeout_error(shared, tmp_path):
    ref = wait_for_path.remote(str(tmp_path / "never"), 1, timeout=5)
    start = time.monotonic()
    with pytest.raises(GetTimeoutError) as info:
        ray.get(ref, timeout=0.3)
    assert time.monotonic() - start >= 0.25  # it waited for its timeout
    assert isinstance(info.value, TimeoutError)
    assert "0.3" in str(info.value)
    with pytest.raises(GetTimeoutError):
        ray.get([ray.put(1), ref], timeout=0)
    open(tmp_path / "never", "w").close()
    assert ray.get(ref, timeout=30) == 1


def test_wait_num_returns_and_timeout(shared, tmp_path):
    gate = str(tmp_path / "gate")
    fast = [ray.put(i) for i in range(3)]
    slow = [wait_for_path.remote(gate, i) for i in range(2)]
    refs = [slow[0], fast[0], slow[1], fast[1], fast[2]]

    ready, not_ready = ray.wait(refs, num_returns=2, timeout=10)
    assert ready == [fast[0], fast[1]]
    assert not_ready == [slow[0], slow[1], fast[2]]

    start = time.monotonic()
    ready, not_ready = ray.wait(refs, num_returns=4, timeout=0.3)
    assert time.monotonic() - start >= 0.25  # it waited for its timeout
    assert ready == [fast[0], fast[1], fast[2]]
    assert not_ready == [slow[0], slow[1]]

    ready, not_ready = ray.wait(refs, num_returns=5, timeout=0)
    assert len(ready) == 3 and len(not_ready) == 2

    open(gate, "w").close()
    ready, not_ready = ray.wait(refs, num_returns=5, timeout=30)
    assert ready == refs and not_ready == []


def test_wait_returns_as_soon_as_enough_are_ready(shared):
    refs = [sleep_then.remote(0, "fast"), sleep_then.remote(30, "slow")]
    ready, not_ready = ray.wait(refs)  # num_returns=1, no timeout
    assert ready == [refs[0]] and not_ready == [refs[1]]
    assert ray.wait([refs[1]], timeout=0)[0] == []  # it did not wait for the slow one
    ray.cancel(refs[1], force=True)


def test_large_bytes_roundtrip(shared):
    payload = os.urandom(1024) * (50 * 1024)  # 50 MiB
    ref = ray.put(payload)
    assert ray.get(ref) == payload

    @ray.remote
    def length_and_tail(data):
        return len(data), data[-16:]
    assert ray.get(length_and_tail.remote(ref)) == (len(payload), payload[-16:])
    assert ray.get(length_and_tail.remote(payload)) == (len(payload), payload[-16:])


def test_large_numpy_roundtrip(shared):
    array = np.random.default_rng(0).random(50 * 1024 * 1024 // 8)  # 50 MiB of float64
    ref = ray.put(array)
    np.testing.assert_array_equal(ray.get(ref), array)

    @ray.remote
    def summary(a):
        return a.shape, a.dtype.str, float(a.sum())

    @ray.remote
    def make(n):
        return np.full(n, 7, dtype=np.int64)
    shape, dtype, total = ray.get(summary.remote(ref))
    assert shape == array.shape and dtype == array.dtype.str
    assert total == pytest.approx(float(array.sum()))
    made = ray.get(make.remote(6 * 1024 * 1024))
    assert made.shape == (6 * 1024 * 1024,) and int(made[-1]) == 7


def test_await_ref_in_asyncio(shared):
    @ray.remote
    def add(a, b):
        return a + b

    @ray.remote
    def fail():
        raise KeyError("from remote")

    async def main():
        single = await add.remote(1, 2)
        many = await asyncio.gather(*[add.remote(i, i) for i in range(5)])
        with pytest.raises(KeyError):
            await fail.remote()
        return single, many
    assert asyncio.run(main()) == (3, [0, 2, 4, 6, 8])


def test_await_does_not_block_the_event_loop(shared, tmp_path):
    gate = str(tmp_path / "gate")

    async def main():
        ref = wait_for_path.remote(gate, "done")
        waiter = asyncio.ensure_future(ref)
        await asyncio.sleep(0)
        assert not waiter.done()
        # The loop keeps running while the ref is pending: it opens the gate.
        open(gate, "w").close()
        return await asyncio.wait_for(waiter, 30)
    assert asyncio.run(main()) == "done"


def test_asyncio_wait_accepts_refs(shared, tmp_path):
    # Python 3.11's asyncio.wait() uses add_done_callback/done on what it is given.
    gate = str(tmp_path / "gate")

    @ray.remote
    def fail():
        raise KeyError("from remote")

    async def main():
        quick, slow = sleep_then.remote(0, "quick"), wait_for_path.remote(gate, "slow")
        done, pending = await asyncio.wait([quick, slow], timeout=30,
                                           return_when=asyncio.FIRST_COMPLETED)
        assert done == {quick} and pending == {slow}
        assert quick.done() and not slow.done() and quick.result() == "quick"
        open(gate, "w").close()
        done, pending = await asyncio.wait([slow], timeout=30)
        assert done == {slow} and not pending
        bad = fail.remote()
        done, _ = await asyncio.wait([bad], timeout=30, return_when=asyncio.FIRST_EXCEPTION)
        assert isinstance(bad.exception(), KeyError)
    asyncio.run(main())


def test_a_removed_done_callback_is_not_called(shared, tmp_path):
    gate = str(tmp_path / "gate")
    calls = []
    ref = wait_for_path.remote(gate, 1)
    ref.add_done_callback(calls.append)
    assert ref.remove_done_callback(calls.append) == 1
    ref.add_done_callback(lambda r: calls.append("kept"))
    open(gate, "w").close()
    assert ray.get(ref, timeout=30) == 1
    wait_for_condition(lambda: calls == ["kept"])


def test_a_ref_pickled_out_of_band_keeps_its_object_alive(shared):
    import gc
    import pickle
    ref = ray.put({"hello": "world"})
    by_cloudpickle = ray.cloudpickle.dumps(ref)
    by_pickle = pickle.dumps(ray.put([1, 2]))  # the only ref is dropped right away
    del ref
    gc.collect()
    assert ray.get(ray.cloudpickle.loads(by_cloudpickle), timeout=30) == {"hello": "world"}
    assert ray.get(pickle.loads(by_pickle), timeout=30) == [1, 2]


def test_ref_future(shared):
    @ray.remote
    def mul(a, b):
        return a * b

    @ray.remote
    def fail():
        raise ValueError("bad value")
    fut = mul.remote(6, 7).future()
    assert isinstance(fut, concurrent.futures.Future)
    assert fut.result(timeout=30) == 42
    err = fail.remote().future().exception(timeout=30)
    assert isinstance(err, ValueError) and isinstance(err, RayTaskError)
    done, _ = concurrent.futures.wait([mul.remote(i, 2).future() for i in range(4)],
                                      timeout=30)
    assert sorted(f.result() for f in done) == [0, 2, 4, 6]


def test_get_of_failed_dependency_raises_the_original_error(shared):
    @ray.remote
    def fail():
        raise ZeroDivisionError("first failure")

    @ray.remote
    def consume(x):
        return x
    with pytest.raises(ZeroDivisionError, match="first failure"):
        ray.get(consume.remote(fail.remote()))


def test_object_ref_identity(shared):
    ref = ray.put(1)
    assert len(ref.hex()) == 56
    assert ref == ray.ObjectRef(ref.binary(), ref.owner_address())
    assert len({ref, ref}) == 1


@ray.remote
def put_and_return(value):
    return ray.put(value)


@ray.remote
def submit_and_return(value):
    return sleep_then.remote(0.1, value)


def test_refs_returned_by_a_task_outlive_the_task(shared):
    # The task's worker owns these objects, and its own refs die with the task.
    inner = ray.get(put_and_return.remote("made by a task"))
    assert isinstance(inner, ray.ObjectRef)
    assert ray.get(inner, timeout=30) == "made by a task"
    child = ray.get(submit_and_return.remote("from a child task"))
    assert ray.get(child, timeout=30) == "from a child task"

    @ray.remote
    def read(refs):
        return ray.get(refs)
    # Passed on to another task, nested in a list.
    assert ray.get(read.remote([inner, child]), timeout=30) == ["made by a task",
                                                                 "from a child task"]


def test_objects_returned_by_a_task_are_freed_when_the_caller_drops_them(fresh):
    fresh(num_cpus=1)

    @ray.remote
    def owned_objects():
        from ember.core_worker import context
        return os.getpid(), len(context.core.store)

    pid, baseline = ray.get(owned_objects.remote())
    refs = [ray.get(put_and_return.remote(i)) for i in range(3)]
    assert ray.get(refs) == [0, 1, 2]
    held_pid, held = ray.get(owned_objects.remote())
    assert held_pid == pid, "the tasks ran on different workers"
    assert held == baseline + 3
    del refs
    wait_for_condition(lambda: ray.get(owned_objects.remote()) == (pid, baseline),
                       message="the worker to free the objects it returned")
