"""Following spillbacks (the asking side of a lease) and backoff, with fake raylets."""
import asyncio
import random

import pytest

from ember.protocol import framing
from ember.protocol import raylet as rl
from ember.protocol.common import Address, DefaultScheduling
from ember.raylet.lease_client import LeaseAttempt
from ember.rpc.backoff import Backoff


def address(name: bytes) -> Address:
    return Address(name * 28, "127.0.0.1", 1)


class FakeRaylet:
    def __init__(self, name: bytes, reply: rl.WorkerLeaseReply):
        self.name = name
        self.reply = reply
        self.asked = []

    async def call(self, request):
        self.asked.append(request.grant_or_reject)
        return self.reply


def request() -> rl.RequestWorkerLease:
    return rl.RequestWorkerLease(b"l" * 16, b"job", {"CPU": 1.0}, DefaultScheduling(), "f",
                                 address(b"o"))


GRANTED = rl.LeaseGranted(b"l" * 16, address(b"w"), 1)


def cluster(final: rl.WorkerLeaseReply = GRANTED):
    """Raylet a spills to b, which spills to c, which answers ``final``."""
    raylets = {
        b"a": FakeRaylet(b"a", rl.LeaseSpillback(address(b"b"))),
        b"b": FakeRaylet(b"b", rl.LeaseSpillback(address(b"c"))),
        b"c": FakeRaylet(b"c", final),
    }

    async def connect(addr):
        return raylets[addr.node_id[:1]]
    return raylets, connect


def test_spillbacks_are_followed_to_the_granting_node_as_grant_or_reject():
    raylets, connect = cluster()
    attempt = LeaseAttempt(request(), raylets[b"a"])
    reply = asyncio.run(attempt.run(connect))
    assert reply is GRANTED and attempt.raylet is raylets[b"c"]
    assert [r.asked for r in raylets.values()] == [[False], [True], [True]]


@pytest.mark.parametrize("final", [rl.LeaseRejected(), rl.LeaseFailed("never fits"),
                                   rl.LeaseCanceled()])
def test_the_last_nodes_answer_is_returned(final):
    raylets, connect = cluster(final)
    assert asyncio.run(LeaseAttempt(request(), raylets[b"a"]).run(connect)) is final


@pytest.mark.parametrize("reply", [GRANTED, rl.LeaseSpillback(address(b"b")), rl.LeaseRejected(),
                                   rl.LeaseFailed("never fits"), rl.LeaseCanceled()])
def test_every_reply_kind_crosses_the_wire_as_its_own_type(reply):
    """A reply's type is its status, and readers match on it."""
    envelope = framing.Envelope(framing.REPLY, 7, reply)
    assert framing.decoder.decode(framing.encoder.encode(envelope)).body == reply


def test_the_caller_can_stop_at_a_spillback():
    raylets, connect = cluster()
    seen = []

    def on_spillback(target, raylet):
        seen.append(target.node_id[:1])
        return False
    attempt = LeaseAttempt(request(), raylets[b"a"])
    assert asyncio.run(attempt.run(connect, on_spillback)) is None
    assert seen == [b"b"] and raylets[b"b"].asked == []


def test_a_failed_dial_leaves_no_raylet_to_blame():
    raylets, _ = cluster()

    async def unreachable(addr):
        raise ConnectionError("gone")
    attempt = LeaseAttempt(request(), raylets[b"a"])
    with pytest.raises(ConnectionError):
        asyncio.run(attempt.run(unreachable))
    assert attempt.raylet is None   # the local raylet did not fail


def test_backoff_doubles_up_to_its_cap_with_jitter():
    backoff = Backoff(0.1, 0.4, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(5)]
    bases = [0.1, 0.2, 0.4, 0.4, 0.4]
    assert all(0.5 * b <= d <= 1.5 * b for d, b in zip(delays, bases))
    backoff.reset()
    assert backoff.next_delay() <= 0.15
