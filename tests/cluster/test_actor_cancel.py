"""Cancelling actor calls with ``ember.cancel``, as Ray does.

- A call not started yet (held at the caller for an argument, or queued at
  the actor behind a busy call) never runs and raises TaskCancelledError.
- A running call of an async actor is cancelled as an asyncio task.
- A running call of a plain or threaded actor is not interrupted: it sees
  ``get_runtime_context().is_canceled()`` turn true, and its caller gets
  TaskCancelledError.
- ``force=True`` is refused with ValueError; a finished call keeps its value.

Each test waits on files that the calls write, never on timing, and checks
that the actor still serves calls afterwards.
"""
from __future__ import annotations

import asyncio
import os
import time

import pytest

import ember as ray
from ember.exceptions import TaskCancelledError
from helpers import path_then, wait_for_file

WAIT_S = 30


@ray.remote
class Plain:
    def __init__(self):
        self.calls = []

    def block(self, started: str, release: str):
        """Run until ``release`` exists; write ``started`` first."""
        open(started, "w").close()
        wait_for_file(release, WAIT_S)
        return "released"

    def until_cancelled(self, started: str, saw: str):
        open(started, "w").close()
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if ray.get_runtime_context().is_canceled():
                open(saw, "w").close()
                return "stopped early"
            time.sleep(0.01)
        return "never cancelled"

    def record(self, value):
        self.calls.append(value)
        return value

    def history(self):
        return list(self.calls)


@ray.remote
class Async:
    async def sleep(self, started: str, saw: str):
        open(started, "w").close()
        try:
            await asyncio.sleep(WAIT_S)
        except asyncio.CancelledError:
            open(saw, "w").close()
            raise
        return "slept"

    async def ping(self):
        return "pong"


def test_call_held_at_the_caller_for_its_argument_never_runs(shared, tmp_path):
    actor = Plain.remote()
    gate = str(tmp_path / "gate")
    slow_arg = ray.remote(path_then).remote(gate, "late")
    held = actor.record.remote(slow_arg)        # waits here for its argument
    behind = actor.record.remote("behind")      # ordered after the held call
    ray.cancel(held)
    with pytest.raises(TaskCancelledError) as info:
        ray.get(held, timeout=WAIT_S)
    assert "record" in str(info.value) and "before it ran" in str(info.value)
    # The call behind it is not held up by the cancelled one.
    assert ray.get(behind, timeout=WAIT_S) == "behind"
    open(gate, "w").close()
    assert ray.get(actor.history.remote()) == ["behind"]


def test_call_queued_at_a_busy_actor_never_runs(shared, tmp_path):
    actor = Plain.remote()
    started, release = str(tmp_path / "started"), str(tmp_path / "release")
    busy = actor.block.remote(started, release)
    wait_for_file(started)
    queued = actor.record.remote("queued")
    ray.cancel(queued)
    open(release, "w").close()
    assert ray.get(busy, timeout=WAIT_S) == "released"
    with pytest.raises(TaskCancelledError):
        ray.get(queued, timeout=WAIT_S)
    assert ray.get(actor.record.remote("after")) == "after"
    assert ray.get(actor.history.remote()) == ["after"]


@pytest.mark.parametrize("max_concurrency", [1, 2], ids=["serial", "threaded"])
def test_running_call_of_a_plain_actor_sees_is_canceled(shared, tmp_path, max_concurrency):
    actor = Plain.options(max_concurrency=max_concurrency).remote()
    started, saw = str(tmp_path / "started"), str(tmp_path / "saw")
    ref = actor.until_cancelled.remote(started, saw)
    wait_for_file(started)
    ray.cancel(ref)
    with pytest.raises(TaskCancelledError) as info:
        ray.get(ref, timeout=WAIT_S)
    assert "while it ran" in str(info.value)
    assert os.path.exists(saw)  # it ran on, saw the flag and stopped by itself
    assert ray.get(actor.record.remote("alive")) == "alive"


def test_running_call_of_an_async_actor_is_cancelled(shared, tmp_path):
    actor = Async.remote()
    started, saw = str(tmp_path / "started"), str(tmp_path / "saw")
    ref = actor.sleep.remote(started, saw)
    wait_for_file(started)
    ray.cancel(ref)
    with pytest.raises(TaskCancelledError):
        ray.get(ref, timeout=WAIT_S)
    assert os.path.exists(saw)  # asyncio.CancelledError was raised inside the call
    assert ray.get(actor.ping.remote()) == "pong"


def test_async_call_waiting_for_its_turn_never_runs(shared, tmp_path):
    actor = Async.options(max_concurrency=1).remote()
    started, saw = str(tmp_path / "started"), str(tmp_path / "saw")
    first = actor.sleep.remote(started, saw)
    wait_for_file(started)
    second_started = str(tmp_path / "second")
    second = actor.sleep.remote(second_started, str(tmp_path / "second_saw"))
    ray.cancel(second)
    with pytest.raises(TaskCancelledError):
        ray.get(second, timeout=WAIT_S)
    assert not os.path.exists(second_started)
    ray.cancel(first)
    with pytest.raises(TaskCancelledError):
        ray.get(first, timeout=WAIT_S)
    assert ray.get(actor.ping.remote()) == "pong"


def test_force_cancel_of_an_actor_call_is_refused(shared, tmp_path):
    actor = Plain.remote()
    started, release = str(tmp_path / "started"), str(tmp_path / "release")
    ref = actor.block.remote(started, release)
    wait_for_file(started)
    with pytest.raises(ValueError, match=r"force=True\) is not supported for actor calls.*"
                                         r"ember\.kill"):
        ray.cancel(ref, force=True)
    open(release, "w").close()
    assert ray.get(ref, timeout=WAIT_S) == "released"  # untouched


def test_cancel_of_a_finished_call_keeps_its_value(shared):
    actor = Plain.remote()
    ref = actor.record.remote(7)
    assert ray.get(ref) == 7
    ray.cancel(ref)
    ray.cancel(ref, force=True)  # finished: nothing to refuse either
    assert ray.get(ref) == 7


def test_is_canceled_outside_a_task_says_where_it_works(shared):
    with pytest.raises(RuntimeError, match="inside a task or an actor method"):
        ray.get_runtime_context().is_canceled()
