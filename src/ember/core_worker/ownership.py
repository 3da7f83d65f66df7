"""Ownership on the wire: fetching borrowed values, and registering borrowers.

The counting rules live in :mod:`.reference_counter`; this module is the part
that talks to other processes:

- **Fetching.** A process that needs the value of an object it does not own
  asks the owner (``GetObjectStatus``), batching all objects of one owner in
  one request, so that ``get`` of 10,000 borrowed refs is a few round trips.
  If the owner cannot be reached the value becomes an ``OwnerDiedError``.
- **Registering receivers.** Before a value containing refs leaves this
  process (task arguments, task results, answers to ``GetObjectStatus``), the
  receiver is registered as a borrower of each ref at its owner: directly for
  refs this process owns, by an acknowledged ``AddBorrower`` otherwise.
- **Giving back.** When this process's counts of a borrowed object reach zero,
  it returns its registrations to the owner with ``RemoveBorrower``.
- **Borrower death.** An owner watches the connection to each borrower; when it
  closes, that borrower's registrations are dropped.

Methods prefixed ``loop_`` run on the I/O thread; others say where they run.
"""
from __future__ import annotations

import asyncio
import collections
import logging

from .. import rpc
from ..exceptions import ObjectLostError, OwnerDiedError
from ..protocol import core_worker as cw
from ..protocol.common import Address, ObjectRefInfo, SerializedValue
from .memory_store import CallbackWaiter
from .serialization import serialize_error

logger = logging.getLogger(__name__)


class Ownership:
    def __init__(self, io, info, store, references, peers, lineage, handlers: dict):
        self._io = io
        self._info = info
        self._store = store
        self._peers = peers
        self._lineage = lineage
        self.references = references
        self.references.on_borrows_released = self._borrows_released
        #: Borrowed objects being fetched from their owners.
        self._fetching: set[bytes] = set()
        #: Borrowers whose connection we watch, by worker id.
        self._watched: set[bytes] = set()
        handlers[cw.GetObjectStatus] = self.handle_get_object_status
        handlers[cw.AddBorrower] = self.handle_add_borrower
        handlers[cw.RemoveBorrower] = self.handle_remove_borrower

    # --- fetching borrowed values -------------------------------------------------

    def loop_fetch(self, refs: list, lost: bool = False) -> None:
        """Ask owners for the values of ``refs`` not here yet, one request per owner.

        ``lost``: the locations the owners gave could not be read; they rebuild
        the values whose node died (see lineage.py).
        """
        by_owner: dict[Address, list[bytes]] = collections.defaultdict(list)
        store = self._store
        for ref in refs:
            oid = ref.object_id
            if not store.contains(oid) and oid not in self._fetching:
                self._fetching.add(oid)
                by_owner[ref.owner].append(oid)
        for owner, object_ids in by_owner.items():
            self._io.loop.create_task(self._fetch_from(owner, object_ids, lost))

    async def _fetch_from(self, owner: Address, object_ids: list[bytes],
                          lost: bool = False) -> None:
        try:
            conn = await self._peers.get(owner, "owner")
            reply = await conn.call(cw.GetObjectStatus(object_ids, self._info.address,
                                                       lost=object_ids if lost else []))
            values = [value if status == "ready" else _freed_error(oid, owner)
                      for oid, status, value in zip(object_ids, reply.statuses, reply.values)]
        except (ConnectionError, rpc.RemoteError) as exc:
            err = _owner_died_error(owner, exc)
            values = [err] * len(object_ids)
        finally:
            self._fetching.difference_update(object_ids)
        for oid, value in zip(object_ids, values):
            self.references.store_value(oid, value)

    def handle_get_object_status(self, conn, req: cw.GetObjectStatus):
        """Owner: answer with the values, once all (or, for wait, any) are ready."""
        if req.lost:
            return self._rebuild_then_answer(conn, req)
        store = self._store
        missing = [oid for oid in req.object_ids if not store.contains(oid)
                   and self.references.is_referenced(oid)]
        if missing and (req.wait_all or len(missing) == len(req.object_ids)):
            return self._answer_when_ready(req, missing)
        return self._answer(req)

    async def _rebuild_then_answer(self, conn, req: cw.GetObjectStatus):
        """The requester could not read ``req.lost``: rebuild what died, then answer."""
        await self._lineage.loop_recover(req.lost)
        return await self.handle_get_object_status(conn, cw.GetObjectStatus(
            req.object_ids, req.requester, req.wait_all))

    async def _answer_when_ready(self, req: cw.GetObjectStatus, missing: list[bytes]):
        loop = self._io.loop
        fut = loop.create_future()
        remaining = [len(missing) if req.wait_all else 1]

        def one_ready(_object_id):
            remaining[0] -= 1
            if remaining[0] == 0:
                self._io.post(_resolve, fut)
        waiter = CallbackWaiter(one_ready)
        absent = self._store.wait_for(missing, waiter)
        remaining[0] -= len(missing) - absent
        if remaining[0] <= 0:
            _resolve(fut)
        await fut
        self._store.cancel_wait(missing, waiter)
        return await self._answer(req)

    async def _answer(self, req: cw.GetObjectStatus) -> cw.GetObjectStatusReply:
        store = self._store
        statuses, values, nested = [], [], []
        for oid in req.object_ids:
            value = store.get(oid)
            if value is not None:
                statuses.append("ready")
                nested.extend(value.nested_refs)
            else:
                statuses.append("pending" if self.references.is_referenced(oid) else "freed")
            values.append(value)
        if nested and req.requester is not None:
            await self.loop_register(req.requester, nested)
        return cw.GetObjectStatusReply(statuses, values)

    # --- registering receivers as borrowers -------------------------------------------

    def register_local(self, receiver: Address, infos: list[ObjectRefInfo]) -> list:
        """Register ``receiver`` for the refs we own; return the infos we do not own.

        Any thread. Owned refs cost a dict update each and no message.
        """
        others = []
        my_id = self._info.worker_id
        for info in infos:
            if info.owner.worker_id == my_id:
                if self.references.add_borrower(info.object_id, receiver):
                    self._watch(receiver)
            elif info.owner.worker_id != receiver.worker_id:
                others.append(info)
        return others

    async def loop_register(self, receiver: Address, infos: list[ObjectRefInfo]) -> None:
        """Register ``receiver`` everywhere, returning once every owner acknowledged."""
        others = self.register_local(receiver, infos)
        if not others:
            return
        by_owner: dict[Address, list[bytes]] = collections.defaultdict(list)
        for info in others:
            by_owner[info.owner].append(info.object_id)
        await asyncio.gather(*(self._add_borrower(owner, ids, receiver)
                               for owner, ids in by_owner.items()))

    async def _add_borrower(self, owner: Address, object_ids: list[bytes], receiver: Address):
        try:
            conn = await self._peers.get(owner, "owner")
            await conn.call(cw.AddBorrower(object_ids, receiver))
        except (ConnectionError, rpc.RemoteError):
            pass  # the owner is gone; its objects are lost whoever borrows them

    def register_blocking(self, receiver: Address, infos: list[ObjectRefInfo]) -> None:
        """From a non-I/O thread (the executor): register, waiting for the acks."""
        if self.register_local(receiver, infos):
            self._io.run(self.loop_register(receiver, infos), timeout=60)

    def handle_add_borrower(self, conn, req: cw.AddBorrower) -> cw.CancelTaskReply:
        for oid in req.object_ids:
            if self.references.add_borrower(oid, req.borrower):
                self._watch(req.borrower)
        return cw.CancelTaskReply(True)

    def handle_remove_borrower(self, conn, req: cw.RemoveBorrower) -> None:
        for oid, count in zip(req.object_ids, req.counts):
            self.references.remove_borrower(oid, req.borrower_worker_id, count)

    def _watch(self, borrower: Address) -> None:
        """Drop ``borrower``'s registrations when its process goes away."""
        worker_id = borrower.worker_id
        if worker_id in self._watched or worker_id == self._info.worker_id:
            return
        self._watched.add(worker_id)
        self._io.post(self._loop_watch, borrower)

    def _loop_watch(self, borrower: Address) -> None:
        async def watch():
            try:
                conn = await self._peers.get(borrower, "borrower")
            except ConnectionError:
                self._borrower_gone(borrower.worker_id)
                return
            conn.add_close_callback(lambda c: self._borrower_gone(borrower.worker_id))
        self._io.loop.create_task(watch())

    def _borrower_gone(self, worker_id: bytes) -> None:
        self._watched.discard(worker_id)
        if not self._info.shutting_down:
            self.references.drop_borrower(worker_id)

    # --- giving registrations back ------------------------------------------------------

    def _borrows_released(self, released: list) -> None:
        """Any thread: send RemoveBorrower for objects this process stopped holding."""
        if self._info.shutting_down:
            return
        self._io.post(self._loop_send_removals, released)

    def _loop_send_removals(self, released: list) -> None:
        by_owner: dict[Address, tuple[list, list]] = {}
        for owner, oid, count in released:
            ids, counts = by_owner.setdefault(owner, ([], []))
            ids.append(oid)
            counts.append(count)
        for owner, (ids, counts) in by_owner.items():
            self._io.loop.create_task(self._remove_borrower(owner, ids, counts))

    async def _remove_borrower(self, owner: Address, ids: list, counts: list) -> None:
        try:
            conn = await self._peers.get(owner, "owner")
            conn.notify(cw.RemoveBorrower(ids, counts, self._info.worker_id))
        except ConnectionError:
            pass  # the owner is gone, and the objects with it

    # --- task results --------------------------------------------------------------------

    def result_object(self, object_id: bytes, value: SerializedValue,
                      caller: Address) -> cw.ReturnObject:
        """Executor thread: a task result, with its caller registered for the refs inside."""
        if value.nested_refs:
            self.register_blocking(caller, value.nested_refs)
        return cw.ReturnObject(object_id, value)


def _resolve(fut) -> None:
    if not fut.done():
        fut.set_result(None)


def _freed_error(object_id: bytes, owner: Address) -> SerializedValue:
    return serialize_error(ObjectLostError(
        object_id.hex(), message=f"Object {object_id.hex()} was freed by its owner (worker "
        f"{owner.worker_id.hex()[:8]} at {owner.ip}) before it could be read. Keep a "
        "reference to it in the owner while others use it."))


def _owner_died_error(owner: Address, exc) -> SerializedValue:
    return serialize_error(OwnerDiedError(
        "", message=f"The owner of this object (worker {owner.worker_id.hex()[:8]} at "
        f"{owner.ip}:{owner.port}) has died, so the object cannot be read ({exc}). An object "
        "lives only as long as the process that created it with .remote() or put(); to "
        "keep values past a task's end, return them instead of putting them."))
