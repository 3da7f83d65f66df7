"""Folding bursts of changes into few messages, without delaying a lone change."""
from __future__ import annotations

import asyncio
import typing


class Throttle:
    """Run ``action`` after each :meth:`poke`, at most once per ``period`` seconds.

    Why leading-edge: reports of resource availability feed other nodes'
    scheduling decisions, so a single change (a lease returned on an idle node)
    must travel at once; only a burst of changes is folded into one run at the
    end of the period. The run happens at the end of the current loop turn,
    never inside the caller, so ``action`` sees a consistent state.
    """

    def __init__(self, period: float, action: typing.Callable[[], None]):
        self.period = period
        self._action = action
        self._last = float("-inf")
        self._scheduled = False

    def poke(self) -> None:
        if self._scheduled:
            return
        self._scheduled = True
        loop = asyncio.get_running_loop()
        wait = self._last + self.period - loop.time()
        if wait > 0:
            loop.call_later(wait, self._run)
        else:
            loop.call_soon(self._run)

    def _run(self) -> None:
        self._scheduled = False
        self._last = asyncio.get_running_loop().time()
        self._action()
