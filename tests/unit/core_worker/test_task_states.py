"""A pending task's state moves only along the submitter's diagram; any other
move is a bug, reported with the task and both states."""
import pytest

from ember.core_worker.task_submitter import PendingTask, TaskState
from ember.exceptions import IllegalTransition, RaySystemError
from ember.protocol import core_worker as cw
from ember.protocol.common import Address

OWNER = Address(b"n" * 28, "127.0.0.1", 1)


def task() -> PendingTask:
    spec = cw.TaskSpec(b"t" * 24, b"job", b"f" * 28, "module.f", [], [], 1, OWNER, {})
    return PendingTask(spec, [b"r" * 28], None, None)


@pytest.mark.parametrize("path", [
    ["QUEUED", "RUNNING", "FINISHED"],                         # runs once
    ["QUEUED", "RUNNING", "QUEUED", "RUNNING", "FINISHED"],    # retried
    ["FINISHED"],                                              # cancelled while waiting
    ["QUEUED", "FINISHED"],                                    # cancelled while queued
    ["QUEUED", "RUNNING", "FINISHED", "WAITING_FOR_DEPENDENCIES", "QUEUED"],  # lineage
])
def test_the_moves_of_the_diagram_are_allowed(path):
    t = task()
    assert t.state is TaskState.WAITING_FOR_DEPENDENCIES
    for name in path:
        t.transition(TaskState[name])
        assert t.state is TaskState[name]


@pytest.mark.parametrize("path", [
    ["RUNNING"],                       # pushed before its arguments resolved
    ["QUEUED", "WAITING_FOR_DEPENDENCIES"],
    ["FINISHED", "FINISHED"],          # its returns stored twice
    ["FINISHED", "QUEUED"],
])
def test_any_other_move_raises_naming_the_task_and_both_states(path):
    t = task()
    for name in path[:-1]:
        t.transition(TaskState[name])
    before = t.state
    with pytest.raises(IllegalTransition) as info:
        t.transition(TaskState[path[-1]])
    assert str(info.value) == (
        f"System error: task module.f ({(b't' * 24).hex()}): illegal state transition "
        f"{before.name} -> {path[-1]} (a bug in ember; please report it with this message)")
    assert isinstance(info.value, RaySystemError) and t.state is before
