"""The local lease manager on the event loop: it runs what the manager asks for.

:class:`~.lease_manager.LocalLeaseManager` is policy with no I/O: events in,
instructions out. This is the thin shell that the raylet's components call
instead. Each event method passes the event on, then carries out the
instructions it produced, in order:

- ``Reply``: resolves the future of whoever waits for that lease's answer
  (:meth:`LocalLeaseService.waiting_for_reply`). Futures are kept by
  :class:`~.lease_manager.Lease` object, not by lease id: a restarted GCS may
  ask again with the same id while its first request still waits, and the
  first one's cancel must not answer the second.
- ``KillAfter``: a timer on the loop, then the pool's kill.
- ``DispatchSoon``: ``call_soon`` of :meth:`LocalLeaseService.dispatch`, so a
  burst of reasons to dispatch in one loop turn costs one pass.
- ``AvailabilityChanged``: the raylet's resource report is poked.

Everything here runs on the raylet's loop. Read-only questions (granted
leases, queued leases, debug state) go to :attr:`LocalLeaseService.manager`.
"""
from __future__ import annotations

import asyncio
import contextlib
import typing

from ..protocol import raylet as msg
from .lease_manager import (AvailabilityChanged, DispatchSoon, KillAfter, Lease,
                            LocalLeaseManager, Reply)
from .worker_pool import WorkerHandle

T = typing.TypeVar("T")


class LocalLeaseService:
    """Feeds events to one :class:`LocalLeaseManager` and carries out its instructions."""

    def __init__(self, manager: LocalLeaseManager,
                 kill: typing.Callable[[WorkerHandle, str], None],
                 on_availability_changed: typing.Callable[[], None]):
        self.manager = manager
        self._kill = kill
        self._on_availability_changed = on_availability_changed
        #: The future of each lease whose requester waits for its reply; an entry
        #: lives exactly as long as the wait (see waiting_for_reply).
        self._waiting: dict[Lease, asyncio.Future] = {}

    # --- replies ------------------------------------------------------------------

    @contextlib.contextmanager
    def waiting_for_reply(self, lease: Lease) -> typing.Iterator[asyncio.Future]:
        """A future that ``lease``'s reply resolves, for the duration of the block.

        Enter it before the lease is queued: the manager may grant it at once.
        """
        future = asyncio.get_running_loop().create_future()
        self._waiting[lease] = future
        try:
            yield future
        finally:
            self._waiting.pop(lease, None)

    def answer(self, lease: Lease, reply: msg.WorkerLeaseReply) -> None:
        """Reply to ``lease``'s requester (the cluster lease manager answers leases that
        never reached the manager: infeasible ones, spilled ones). Nobody waiting: dropped."""
        future = self._waiting.pop(lease, None)
        if future is not None and not future.done():
            future.set_result(reply)

    # --- events -------------------------------------------------------------------

    def queue(self, lease: Lease) -> None:
        self._then_run(self.manager.queue(lease))

    def cancel(self, lease_id: bytes) -> bool:
        return self._then_run(self.manager.cancel(lease_id))

    def dispatch(self) -> None:
        self._then_run(self.manager.dispatch())

    def dispatch_soon(self) -> None:
        self._then_run(self.manager.dispatch_soon())

    def return_worker(self, lease_id: bytes, worker_failed: bool) -> None:
        self._then_run(self.manager.return_worker(lease_id, worker_failed))

    def worker_died(self, worker: WorkerHandle) -> None:
        self._then_run(self.manager.worker_died(worker))

    def owner_gone(self, conn) -> None:
        self._then_run(self.manager.owner_gone(conn))

    def blocked(self, worker: WorkerHandle) -> None:
        self._then_run(self.manager.blocked(worker))

    def unblocked(self, worker: WorkerHandle) -> None:
        self._then_run(self.manager.unblocked(worker))

    def fail_where(self, predicate, reason: str) -> None:
        self._then_run(self.manager.fail_where(predicate, reason))

    def kill_where(self, predicate, reason: str) -> None:
        self._then_run(self.manager.kill_where(predicate, reason))

    def take_waiting(self, lease_id: bytes) -> Lease | None:
        return self._then_run(self.manager.take_waiting(lease_id))

    def regrant(self, request: msg.RequestWorkerLease, owner_conn) -> msg.LeaseGranted | None:
        return self._then_run(self.manager.regrant(request, owner_conn))

    def debug_state(self) -> dict:
        return {**self.manager.debug_state(), "awaiting_reply": len(self._waiting)}

    # --- instructions -------------------------------------------------------------

    def _then_run(self, result: T) -> T:
        """Carry out what the event just handled asked for; pass its result through."""
        for instruction in self.manager.drain():
            if type(instruction) is Reply:
                self.answer(instruction.lease, instruction.reply)
            elif type(instruction) is DispatchSoon:
                asyncio.get_running_loop().call_soon(self.dispatch)
            elif type(instruction) is AvailabilityChanged:
                self._on_availability_changed()
            elif type(instruction) is KillAfter:
                asyncio.get_running_loop().call_later(
                    instruction.delay_s, self._kill, instruction.worker, instruction.reason)
            else:
                raise TypeError(f"unknown lease manager instruction {instruction!r}")
        return result
