"""Whether this node is idle, as the autoscaler needs to know before removing it.

A node may be removed only when nothing would be lost with it:

- no leased workers (a running task or actor would fail);
- no committed placement-group bundles (the group would have to be placed again);
- no primary object copies. A primary copy is the one its owner relies on;
  a spilled one lives in this node's spill directory, which goes with the
  node. Counting every primary copy is conservative: an object copied
  elsewhere still keeps the node, but none that is referenced is lost.

The queued demand (lease shapes) is watched the same way, since requests
leave the queues on paths that change no resources.

Why a poll and not a hook on every change: leases and bundles already trigger
a resource report, but objects come and go on paths (seal, free, spill) that
the report must stay off. One look per ``autoscaler_usage_period_s`` costs a
count over the store's table and nothing on the object path; the report goes
out only when the answer changes.
"""
from __future__ import annotations

import asyncio
import typing


class NodeUsage:
    def __init__(self, leases, bundles, store, demand: typing.Callable[[], list],
                 changed: typing.Callable[[], None], period_s: float):
        self._demand = demand
        self._last_demand: list = []
        self._leases = leases
        self._bundles = bundles
        self._store = store
        self._changed = changed
        self._period_s = period_s
        #: The reasons last reported; empty means idle.
        self.busy: list[str] = []

    def reasons(self) -> list[str]:
        """Why the node is not idle, in words for ``ember status``; [] when idle."""
        found = []
        leased = len(self._leases.granted)
        if leased:
            found.append(f"{leased} leased worker{'s' * (leased != 1)}")
        bundles = self._bundles.num_committed()
        if bundles:
            found.append(f"{bundles} placement group bundle{'s' * (bundles != 1)}")
        primaries = self._store.num_primary()
        if primaries:
            found.append(f"{primaries} primary object cop{'ies' if primaries != 1 else 'y'}")
        return found

    def demand(self) -> list:
        """The queued demand to report now; remembered, so that :meth:`check` can tell
        when the GCS's copy went stale."""
        self._last_demand = self._demand()
        return self._last_demand

    def check(self) -> None:
        """Report when idleness or the queued demand changed since the last report.
        Demand also changes without a resource change (an infeasible request placed
        after a node joined), so it is compared with what was last reported."""
        reasons = self.reasons()
        if reasons != self.busy or self._demand() != self._last_demand:
            self.busy = reasons
            self._changed()

    async def run(self) -> None:
        while True:
            self.check()
            await asyncio.sleep(self._period_s)
