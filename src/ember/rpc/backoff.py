"""Waiting between attempts: exponential, capped, with jitter.

Every retry loop of ember (dialling a peer that is starting, asking a raylet
for an actor's lease again) waits the same way, so that one place decides how
hard a restarting cluster is hammered. Jitter spreads the retries of many
clients that failed at the same moment.
"""
from __future__ import annotations

import asyncio
import random


class Backoff:
    """Delays ``initial``, ``2*initial``, ... up to ``maximum``, each scaled by 0.5-1.5."""

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None):
        self.initial = initial
        self.maximum = maximum
        self._next = initial
        self._rng = rng or random

    def next_delay(self) -> float:
        """The delay before the next attempt; each call doubles the base, up to the cap."""
        delay = self._next * (0.5 + self._rng.random())
        self._next = min(self._next * 2, self.maximum)
        return delay

    async def sleep(self) -> None:
        await asyncio.sleep(self.next_delay())

    def reset(self) -> None:
        self._next = self.initial
