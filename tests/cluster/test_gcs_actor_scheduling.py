"""The GCS actor scheduler against fake raylets: what a failed lease costs an actor.

A raylet that cannot be reached while an actor is being placed (it died just
after telling the GCS to go there) is not the actor's failure: the GCS asks
again and the actor is created, spending none of its ``max_restarts``, as in
Ray. A real cluster cannot time a node's death that precisely, so the raylets
here are fakes that answer (or refuse) on cue.
"""
from __future__ import annotations

import asyncio

from ember.gcs.actor_manager import Actor, ActorManager, ActorState
from ember.gcs.pubsub import Publisher
from ember.protocol import gcs as gcs_msg
from ember.protocol import raylet as rl
from ember.protocol.common import Address, DefaultScheduling


class Raylet:
    """Answers each lease request with the next of ``replies``."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.requests = []

    async def call(self, request, timeout=None):
        self.requests.append(request)
        return self.replies.pop(0)

    def notify(self, message) -> None:
        pass


def _actor(max_restarts: int = 0) -> Actor:
    owner = Address(b"n" * 28, "127.0.0.1", 1, worker_id=b"w" * 28)
    actor = Actor(gcs_msg.ActorInfo(actor_id=b"a" * 16, job_id=b"j" * 4, class_name="A",
                                    state="", owner=owner, max_restarts=max_restarts))
    actor.transition(ActorState.PENDING_CREATION)
    actor.create = gcs_msg.CreateActor(actor_id=b"a" * 16, creation_spec=b"",
                                       placement_resources={"CPU": 1.0},
                                       resources={"CPU": 1.0}, strategy=DefaultScheduling())
    return actor


def _request() -> rl.RequestWorkerLease:
    return rl.RequestWorkerLease(lease_id=b"l" * 20, job_id=b"j" * 4, resources={"CPU": 1.0},
                                 strategy=DefaultScheduling(), description="actor A",
                                 owner=Address(b"n" * 28, "127.0.0.1", 1))


def test_spillback_target_that_died_costs_the_actor_no_restart():
    granted = rl.LeaseGranted(b"l" * 20, Address(b"m" * 28, "127.0.0.1", 2), 1)
    gone = Address(b"d" * 28, "127.0.0.1", 3)
    head = Raylet([rl.LeaseSpillback(gone), granted])
    manager = ActorManager(Publisher(), node_manager=None)

    async def raylet_for(actor, req):
        return head

    async def connect(address):
        raise ConnectionRefusedError(f"raylet {address.port} is gone")
    manager._raylet_for = raylet_for
    manager._connect_raylet = connect
    actor = _actor(max_restarts=0)

    reply, raylet = asyncio.run(manager._lease(actor, _request()))
    assert (reply, raylet) == (granted, head)
    assert actor.state is ActorState.PENDING_CREATION and actor.info.num_restarts == 0
    # The second request was a fresh one, free to spill back again.
    assert [r.grant_or_reject for r in head.requests] == [False, False]


def test_lease_requests_stop_once_the_actor_is_dead():
    manager = ActorManager(Publisher(), node_manager=None)
    actor = _actor()

    async def raylet_for(actor_, req):
        actor.transition(ActorState.DEAD)  # killed while no node could be reached
        raise LookupError("no node is alive")
    manager._raylet_for = raylet_for
    assert asyncio.run(manager._lease(actor, _request())) == (None, None)
