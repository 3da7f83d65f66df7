"""``ember.util.multiprocessing.Pool`` as a drop-in for ``multiprocessing.Pool``, and the
joblib backend on top of it, against a real 2-CPU cluster."""
from __future__ import annotations

import multiprocessing
import os
import threading

import pytest

import ember as ray
from ember.util.multiprocessing import Pool
from helpers import wait_for_condition


def square(x):
    return x * x


def pid_of(_):
    return os.getpid()


def invert(x):
    return 1 / x


def _remember(value):
    # Process-wide state: a function pickled by value has globals of its own.
    os.environ["POOL_PROCESS_STATE"] = value


def process_state(_):
    return os.environ.get("POOL_PROCESS_STATE")


def wait_for_file(path):
    import time
    while not os.path.exists(path):
        time.sleep(0.01)
    return path


@pytest.fixture
def pool(shared):
    with Pool(processes=2) as p:
        yield p


def test_map_starmap_and_apply_give_multiprocessings_results(pool):
    assert pool.map(square, range(20)) == [x * x for x in range(20)]
    assert pool.map(square, range(7), chunksize=3) == [x * x for x in range(7)]
    assert pool.map(square, []) == []
    assert pool.starmap(pow, [(2, 3), (3, 2), (5, 0)]) == [8, 9, 1]
    assert pool.apply(square, (9,)) == 81
    assert pool.apply(int, ("ff",), {"base": 16}) == 255


def test_items_run_in_every_process_of_the_pool(pool):
    assert len(set(pool.map(pid_of, range(16), chunksize=1))) == 2


def test_imap_is_ordered_and_lazy_and_imap_unordered_gives_every_result(pool):
    consumed = []

    def numbers():
        for i in range(1000):
            consumed.append(i)
            yield i
    results = pool.imap(square, numbers())
    assert [next(results) for _ in range(3)] == [0, 1, 4]
    assert len(consumed) < 20  # only a few chunks ahead of the consumer
    assert sorted(pool.imap_unordered(square, range(30), chunksize=4)) == sorted(
        x * x for x in range(30))


def test_an_item_that_raises_raises_its_own_exception(pool):
    with pytest.raises(ZeroDivisionError):
        pool.map(invert, [1, 0, 2])
    result = pool.map_async(invert, [1, 0])
    result.wait(30)
    assert result.ready() and not result.successful()
    # As Ray's imap: a failed item's exception is its value, and the others follow.
    results = list(pool.imap(invert, [1, 0, 2], chunksize=2))
    assert results[0] == 1.0 and isinstance(results[1], ZeroDivisionError)
    assert results[2] == 0.5
    with pytest.warns(DeprecationWarning, match="non-iterable"):
        assert list(pool.imap_unordered(square, 3)) == [9]
    assert pool.map(square, [3]) == [9]  # the pool still works


def test_async_callbacks_fire_without_get(pool):
    got, errors = [], []
    done = threading.Event()
    pool.map_async(square, range(4), callback=lambda v: (got.append(v), done.set()))
    pool.apply_async(invert, (0,), error_callback=lambda e: errors.append(e))
    assert done.wait(30)
    assert got == [[0, 1, 4, 9]]
    wait_for_condition(lambda: errors, timeout=30, message="the error callback")
    assert isinstance(errors[0], ZeroDivisionError)


def test_get_with_a_timeout_raises_multiprocessings_timeout(pool, tmp_path):
    flag = str(tmp_path / "go")
    result = pool.apply_async(wait_for_file, (flag,))
    with pytest.raises(multiprocessing.TimeoutError):
        result.get(timeout=0.2)
    assert not result.ready()
    with pytest.raises(ValueError, match="not ready"):
        result.successful()
    open(flag, "w").close()
    assert result.get(timeout=30) == flag


def test_initializer_runs_once_in_each_process(shared):
    with Pool(2, initializer=_remember, initargs=("ready",)) as p:
        assert set(p.map(process_state, range(8), chunksize=1)) == {"ready"}


def test_maxtasksperchild_replaces_processes(shared):
    with Pool(1, maxtasksperchild=1) as p:
        pids = {p.apply(pid_of, (i,)) for i in range(3)}
    assert len(pids) == 3


def test_close_then_join_and_a_closed_pool_takes_no_work(shared):
    p = Pool(2)
    assert p.map(square, [2]) == [4]
    with pytest.raises(ValueError, match="still running"):
        p.join()
    p.close()
    with pytest.raises(ValueError, match="Pool not running"):
        p.map(square, [1])
    p.join()
    assert ray.available_resources().get("CPU") == 2  # pool processes hold no CPU


def test_bad_sizes_are_refused(shared):
    with pytest.raises(ValueError, match="only 2 CPUs"):
        Pool(processes=3)
    with pytest.raises(ValueError, match="at least 1"):
        Pool(processes=0)
    with Pool(1) as p, pytest.raises(ValueError, match="chunksize"):
        p.map(square, [1], chunksize=0)


def test_joblib_runs_on_the_cluster(shared):
    joblib = pytest.importorskip("joblib")
    from ember.util.joblib import register_ray
    register_ray()
    with joblib.parallel_backend("ray"):
        pids = joblib.Parallel(n_jobs=-1)(joblib.delayed(pid_of)(i) for i in range(8))
        assert os.getpid() not in pids
        assert joblib.Parallel(n_jobs=2)(joblib.delayed(square)(i) for i in range(5)) == [
            0, 1, 4, 9, 16]
        with pytest.raises(ZeroDivisionError):
            joblib.Parallel(n_jobs=2)(joblib.delayed(invert)(i) for i in (1, 0))
