"""The asking side of a worker lease: follow spillbacks to the node that grants.

Owners of tasks (core workers) and of actors (the GCS) ask a raylet for a
worker. The raylet answers with a grant, or with "spillback" naming a better
node; the request then goes to that node as grant-or-reject, so that it runs
there or comes back "rejected" rather than wait behind that node's own work.
Both owners follow these replies the same way, here.
"""
from __future__ import annotations

import typing

from ..protocol import raylet as rl
from ..protocol.common import Address


class LeaseAttempt:
    """One lease request on its way from raylet to raylet.

    ``raylet`` is the connection the request was last sent on, or None while
    the next one is being dialled: a caller that catches a connection error
    tells from it whether its own raylet failed or a node spilled to.
    """

    def __init__(self, request: rl.RequestWorkerLease, raylet):
        self.request = request
        self.raylet = raylet

    async def run(self, connect: typing.Callable[[Address], typing.Awaitable],
                  on_spillback: typing.Callable[[Address, object], bool] | None = None
                  ) -> rl.WorkerLeaseReply | None:
        """The final reply: any kind but a spillback.

        ``connect(address)`` gives a connection to a raylet. ``on_spillback``
        (target address, its connection) is called before each spilled request
        is sent; if it returns False the attempt stops and None is returned.
        """
        self.request.grant_or_reject = False
        reply = await self.raylet.call(self.request)
        while type(reply) is rl.LeaseSpillback:
            target = reply.retry_at
            self.raylet = None
            self.raylet = await connect(target)
            if on_spillback is not None and not on_spillback(target, self.raylet):
                return None
            self.request.grant_or_reject = True
            reply = await self.raylet.call(self.request)
        return reply
