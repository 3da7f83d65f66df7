"""An actor's state in the GCS moves only along the actor manager's diagram."""
import pytest

from ember.exceptions import IllegalTransition
from ember.gcs.actor_manager import Actor, ActorState
from ember.protocol import gcs as msg
from ember.protocol.common import Address

OWNER = Address(b"n" * 28, "127.0.0.1", 1)


def actor(state=ActorState.DEPENDENCIES_UNREADY) -> Actor:
    return Actor(msg.ActorInfo(b"a" * 16, b"job", "Counter", "", OWNER), state)


def test_a_new_actor_and_its_record_start_with_unready_dependencies():
    a = actor()
    assert a.state is ActorState.DEPENDENCIES_UNREADY and a.info.state == "DEPENDENCIES_UNREADY"


def test_a_reloaded_actor_resumes_in_its_stored_state():
    a = actor(ActorState.ALIVE)
    assert a.state is ActorState.ALIVE and a.info.state == "ALIVE"


@pytest.mark.parametrize("path", [
    ["PENDING_CREATION", "ALIVE", "RESTARTING", "ALIVE", "DEAD"],
    ["PENDING_CREATION", "RESTARTING", "DEAD"],
    ["DEAD"],
])
def test_the_moves_of_the_diagram_are_allowed_and_recorded(path):
    a = actor()
    for name in path:
        a.transition(ActorState[name])
        assert a.state is ActorState[name] and a.info.state == name


@pytest.mark.parametrize("path", [["ALIVE"], ["DEAD", "ALIVE"], ["PENDING_CREATION",
                                                                 "DEPENDENCIES_UNREADY"]])
def test_any_other_move_raises_naming_the_actor_and_both_states(path):
    a = actor()
    for name in path[:-1]:
        a.transition(ActorState[name])
    before = a.state
    with pytest.raises(IllegalTransition, match=(
            rf"actor Counter \(id={(b'a' * 16).hex()}\): illegal state transition "
            rf"{before.name} -> {path[-1]} ")):
        a.transition(ActorState[path[-1]])
    assert a.state is before and a.info.state == before.name
