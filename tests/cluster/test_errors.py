"""Failures: task errors, worker crashes, retries, cancellation, timeouts."""
from __future__ import annotations

import os
import signal
import time

import pytest

import ember as ray
from ember.exceptions import (GetTimeoutError, RayError, RayTaskError, TaskCancelledError,
                              WorkerCrashedError)
from helpers import run_driver, wait_for_condition, wait_for_file


class CustomError(Exception):
    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


def _attempts(path) -> int:
    """Append one line per attempt to ``path``; return this attempt's number (1-based)."""
    with open(path, "a") as f:
        f.write("x\n")
    with open(path) as f:
        return len(f.readlines())


def _count(path) -> int:
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return len(f.readlines())


def test_task_error_is_both_ray_task_error_and_its_cause(shared):
    @ray.remote
    def divide(a, b):
        return a / b

    with pytest.raises(ZeroDivisionError) as info:
        ray.get(divide.remote(1, 0))
    err = info.value
    assert isinstance(err, RayTaskError)
    assert isinstance(err, RayError)
    text = str(err)
    assert "Traceback (most recent call last)" in text
    assert "divide" in text
    assert "return a / b" in text
    assert "ZeroDivisionError: division by zero" in text
    assert isinstance(err.cause, ZeroDivisionError)


def test_custom_exception_keeps_its_class_and_attributes(shared):
    @ray.remote
    def raise_custom():
        raise CustomError("custom failure", code=42)

    with pytest.raises(CustomError) as info:
        ray.get(raise_custom.remote())
    assert isinstance(info.value, RayTaskError)
    assert info.value.code == 42
    assert "custom failure" in str(info.value)
    # The session keeps working after an error.

    @ray.remote
    def ok():
        return "ok"
    assert ray.get(ok.remote()) == "ok"


def test_memory_error_reaches_get_with_its_remote_traceback(shared):
    # MemoryError has a C-level __new__ that refuses to build an instance of a
    # class whose first base is RayTaskError ("is not safe"): the error must
    # still arrive as both a RayTaskError and a MemoryError, traceback intact.
    @ray.remote(max_retries=0)
    def allocate_too_much():
        raise MemoryError("could not allocate the buffer")

    with pytest.raises(MemoryError) as info:
        ray.get(allocate_too_much.remote())
    err = info.value
    assert isinstance(err, RayTaskError)
    text = str(err)
    assert "Traceback (most recent call last)" in text
    assert 'raise MemoryError("could not allocate the buffer")' in text
    assert "MemoryError: could not allocate the buffer" in text
    # The dual class pickles as a RayTaskError, e.g. when a task passes it on.
    import pickle
    again = pickle.loads(pickle.dumps(err))
    assert isinstance(again, RayTaskError) and isinstance(again.cause, MemoryError)


def test_exception_that_cannot_be_subclassed_arrives_as_ray_task_error(shared):
    # ExceptionGroup's instance layout cannot be combined with RayTaskError's:
    # get raises a plain RayTaskError that still names the cause and its traceback.
    @ray.remote(max_retries=0)
    def raise_group():
        raise ExceptionGroup("several failures", [ValueError("one"), KeyError("two")])

    with pytest.raises(RayTaskError) as info:
        ray.get(raise_group.remote())
    assert isinstance(info.value.cause, ExceptionGroup)
    text = str(info.value)
    assert "raise ExceptionGroup" in text and "several failures" in text


def test_error_from_a_nested_task_reaches_the_driver(shared):
    @ray.remote
    def inner():
        raise IndexError("deep problem")

    @ray.remote
    def outer():
        return ray.get(inner.remote())

    with pytest.raises(IndexError) as info:
        ray.get(outer.remote())
    assert isinstance(info.value, RayTaskError)
    assert "deep problem" in str(info.value)


def test_get_list_raises_the_error_of_a_failed_task(shared):
    @ray.remote
    def maybe_fail(i):
        if i == 2:
            raise ValueError(f"item {i} failed")
        return i
    with pytest.raises(ValueError, match="item 2 failed"):
        ray.get([maybe_fail.remote(i) for i in range(4)])


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_worker_death_without_retries_is_worker_crashed_error(shared, how):
    @ray.remote(max_retries=0)
    def die(how):
        if how == "exit":
            os._exit(1)
        os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(WorkerCrashedError) as info:
        ray.get(die.remote(how), timeout=60)
    message = str(info.value)
    assert "die" in message
    assert ("exit code 1" in message) if how == "exit" else ("SIGKILL" in message)

    @ray.remote
    def ok():
        return 1
    assert ray.get(ok.remote(), timeout=30) == 1


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_worker_death_is_retried(shared, tmp_path, how):
    marker = str(tmp_path / "attempts")

    @ray.remote(max_retries=2)
    def die_once(marker, how):
        if _attempts(marker) == 1:
            if how == "exit":
                os._exit(1)
            os.kill(os.getpid(), signal.SIGKILL)
        return "survived"

    assert ray.get(die_once.remote(marker, how), timeout=60) == "survived"
    assert _count(marker) == 2


def test_worker_death_exhausts_retries(shared, tmp_path):
    marker = str(tmp_path / "attempts")

    @ray.remote(max_retries=2)
    def always_die(marker):
        _attempts(marker)
        os._exit(1)

    with pytest.raises(WorkerCrashedError):
        ray.get(always_die.remote(marker), timeout=60)
    assert _count(marker) == 3


def test_application_errors_are_not_retried_by_default(shared, tmp_path):
    marker = str(tmp_path / "attempts")

    @ray.remote(max_retries=3)
    def flaky(marker):
        if _attempts(marker) < 3:
            raise ValueError("flaky")
        return "ok"

    with pytest.raises(ValueError):
        ray.get(flaky.remote(marker))
    assert _count(marker) == 1


def test_retry_exceptions_true_retries_application_errors(shared, tmp_path):
    marker = str(tmp_path / "attempts")

    @ray.remote(max_retries=3, retry_exceptions=True)
    def flaky(marker):
        if _attempts(marker) < 3:
            raise ValueError("flaky")
        return "ok"

    assert ray.get(flaky.remote(marker)) == "ok"
    assert _count(marker) == 3

    marker2 = str(tmp_path / "attempts2")
    with pytest.raises(ValueError):
        ray.get(flaky.options(max_retries=1).remote(marker2))
    assert _count(marker2) == 2


def test_retry_exceptions_list_retries_only_listed_types(shared, tmp_path):
    @ray.remote(max_retries=3, retry_exceptions=[KeyError])
    def fail_with(marker, exc_type):
        if _attempts(marker) < 3:
            raise exc_type("flaky")
        return "ok"

    listed = str(tmp_path / "listed")
    assert ray.get(fail_with.remote(listed, KeyError)) == "ok"
    assert _count(listed) == 3

    unlisted = str(tmp_path / "unlisted")
    with pytest.raises(TypeError):
        ray.get(fail_with.remote(unlisted, TypeError))
    assert _count(unlisted) == 1

    subclass = str(tmp_path / "subclass")

    class MyKeyError(KeyError):
        pass
    assert ray.get(fail_with.remote(subclass, MyKeyError)) == "ok"
    assert _count(subclass) == 3


@ray.remote
def sleep_forever(started):
    open(started, "w").close()
    time.sleep(600)
    return "not cancelled"


@pytest.mark.parametrize("force", [False, True])
def test_cancel_running_task(shared, tmp_path, force):
    started = str(tmp_path / "started")
    ref = sleep_forever.remote(started)
    wait_for_file(started)
    ray.cancel(ref, force=force)
    with pytest.raises(TaskCancelledError):
        ray.get(ref, timeout=30)

    @ray.remote
    def ok():
        return "still working"
    assert ray.get(ok.remote(), timeout=30) == "still working"


def test_cancel_queued_task(shared, tmp_path):
    # Two tasks take both CPUs; the third waits in the queue and is cancelled there.
    started = [str(tmp_path / f"started{i}") for i in range(2)]
    running = [sleep_forever.remote(path) for path in started]
    for path in started:
        wait_for_file(path)
    queued_marker = str(tmp_path / "queued")
    queued = sleep_forever.remote(queued_marker)
    ray.cancel(queued)
    with pytest.raises(TaskCancelledError):
        ray.get(queued, timeout=30)
    assert not os.path.exists(queued_marker)
    for ref in running:
        ray.cancel(ref, force=True)
    for ref in running:
        with pytest.raises(TaskCancelledError):
            ray.get(ref, timeout=30)


def test_cancel_finished_task_keeps_its_value(shared):
    @ray.remote
    def quick():
        return 5
    ref = quick.remote()
    assert ray.get(ref) == 5
    ray.cancel(ref)
    assert ray.get(ref) == 5


def test_cancelled_task_is_not_retried(shared, tmp_path):
    marker = str(tmp_path / "attempts")
    started = str(tmp_path / "started")

    @ray.remote(max_retries=3, retry_exceptions=True)
    def counted_sleep(marker, started):
        _attempts(marker)
        open(started, "w").close()
        time.sleep(600)

    ref = counted_sleep.remote(marker, started)
    wait_for_file(started)
    ray.cancel(ref)
    with pytest.raises(TaskCancelledError):
        ray.get(ref, timeout=30)
    assert _count(marker) == 1


@ray.remote
def child_until(folder):
    """Wait for ``folder/release``; note in ``folder`` how it ended."""
    open(os.path.join(folder, "child_started"), "w").close()
    try:
        wait_for_file(os.path.join(folder, "release"), 60)
    except TaskCancelledError:
        open(os.path.join(folder, "child_cancelled"), "w").close()
        raise
    open(os.path.join(folder, "child_done"), "w").close()


@ray.remote
def parent_of_child(folder):
    return ray.get(child_until.remote(folder))


@pytest.mark.parametrize("recursive", [True, False])
def test_cancel_reaches_the_children_of_a_task_when_recursive(shared, tmp_path, recursive):
    folder = str(tmp_path)
    ref = parent_of_child.remote(folder)
    wait_for_file(os.path.join(folder, "child_started"))
    ray.cancel(ref, recursive=recursive)
    with pytest.raises(TaskCancelledError):
        ray.get(ref, timeout=30)
    if recursive:
        wait_for_file(os.path.join(folder, "child_cancelled"))
    else:  # the child runs on, to its normal end
        open(os.path.join(folder, "release"), "w").close()
        wait_for_file(os.path.join(folder, "child_done"))
        assert not os.path.exists(os.path.join(folder, "child_cancelled"))


def test_get_timeout_error(shared, tmp_path):
    started = str(tmp_path / "started")
    ref = sleep_forever.remote(started)
    with pytest.raises(GetTimeoutError):
        ray.get(ref, timeout=0.2)
    with pytest.raises(TimeoutError):
        ray.get([ref], timeout=0.01)
    ray.cancel(ref, force=True)
    with pytest.raises(TaskCancelledError):
        ray.get(ref, timeout=30)


def test_unserializable_return_value_is_reported(shared):
    import threading

    @ray.remote
    def returns_lock():
        return threading.Lock()
    with pytest.raises(RayError) as info:
        ray.get(returns_lock.remote())
    assert "lock" in str(info.value).lower()


def test_available_resources_recover_after_failures(shared):
    @ray.remote(max_retries=0)
    def crash():
        os._exit(1)

    @ray.remote
    def fail():
        raise RuntimeError("x")
    for _ in range(2):
        with pytest.raises(WorkerCrashedError):
            ray.get(crash.remote(), timeout=60)
        with pytest.raises(RuntimeError):
            ray.get(fail.remote())
    wait_for_condition(lambda: ray.available_resources().get("CPU") == 2.0,
                       message="both CPUs free again")


def test_driver_script_with_its_own_modules_and_exceptions(tmp_path):
    # The usual user layout: a script and a module beside it. Workers import the
    # module from the script's directory; exceptions keep their classes.
    (tmp_path / "mylib.py").write_text(
        "class AppError(Exception):\n"
        "    def __init__(self, what, code):\n"
        "        super().__init__(what)\n"
        "        self.code = code\n"
        "\n"
        "def check(x):\n"
        "    if x < 0:\n"
        "        raise AppError(f'negative: {x}', code=7)\n"
        "    return x\n")
    result = run_driver(tmp_path, """
        import ember as ray
        import mylib

        class LocalError(Exception):
            pass

        @ray.remote
        def task(x):
            if x == 0:
                raise LocalError("zero")
            return mylib.check(x)

        ray.init(num_cpus=1)
        assert ray.get(task.remote(3)) == 3
        try:
            ray.get(task.remote(-2))
        except mylib.AppError as e:
            assert e.code == 7 and "negative: -2" in str(e), str(e)
            print("caught AppError")
        try:
            ray.get(task.remote(0))
        except LocalError as e:
            print("caught LocalError")
        ray.shutdown()
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["caught AppError", "caught LocalError"]
