"""Lineage reconstruction: running a task again when the node holding its result died.

As in Ray, the owner of a task's results keeps the task's specification (its
*lineage*) for as long as one of its results that lives in an object store is
referenced. When the node holding such a result dies, the owner submits the
task again, and everyone reading the result waits for the new value instead
of failing. Each re-run spends one of the task's ``max_retries``, the same
budget that worker failures use; a task with ``max_retries=0`` is never
re-run.

Not recoverable, as in Ray: ``put`` values (no task made them) and results
of actor calls (re-running one would apply it twice to the actor's state).
Reading those after their node died raises ObjectLostError, saying why.

How a loss is found, and by whom:

- **The owner reads it.** Its pull fails with ObjectLostError; the owner asks
  the GCS whether the node died (:meth:`loop_recover`), re-runs the task, and
  waits for the value again.
- **A borrower reads it** (for example a task given the ref as an argument).
  Its pull fails; it drops the location it was told and asks the owner again,
  saying the object is lost (``GetObjectStatus.lost``). The owner checks with
  the GCS and re-runs the task, and answers once the new value exists; or, if
  it cannot, answers an ObjectLostError that says why.

A re-run task's arguments are fetched like any task's: an argument lost on
the same node is rebuilt the same way, first. An argument nobody refers to
any more was freed, and the re-run fails with that error.

Threads: :meth:`record` and ``loop_`` methods run on the I/O thread;
:meth:`_freed` on any thread (it is a reference-counter callback).
"""
from __future__ import annotations

import logging
import threading

from ..exceptions import ObjectLostError
from ..ids import is_put_id, task_id_of
from ..protocol.common import VALUE_IN_STORE
from .serialization import serialize_error

logger = logging.getLogger(__name__)


class Lineage:
    def __init__(self, store, references, dead_nodes):
        self._store = store
        self._references = references
        #: async (node ids) -> the dead ones among them (the object directory's).
        self._dead_nodes = dead_nodes
        #: Submits a task again (the normal task submitter's submit), wired after.
        self.resubmit = None
        #: Called with a dead node's id before its results are made again: the
        #: submitter lets go of the workers it leased there (set by the core worker).
        self.node_died = None
        self._lock = threading.Lock()
        #: task id -> the finished task, kept while a result of it in a store is referenced.
        self._tasks: dict = {}
        #: task id -> ids of its results in a store, still referenced.
        self._stored: dict[bytes, set[bytes]] = {}
        #: Task ids being run again.
        self._rerunning: set[bytes] = set()
        references.on_free.append(self._freed)

    def record(self, task, returns) -> None:
        """A task's results are stored: keep what it takes to run it again."""
        spec = task.spec
        self._rerunning.discard(spec.task_id)
        if spec.actor_id or spec.num_returns == -1 or task.retries_left == 0:
            return
        stored = {r.object_id for r in returns if r.value.kind == VALUE_IN_STORE}
        stored = {oid for oid in stored if self._references.is_referenced(oid)}
        if not stored:
            return
        with self._lock:
            self._tasks[spec.task_id] = task
            self._stored[spec.task_id] = stored

    def _freed(self, object_id: bytes, ref) -> None:
        task_id = task_id_of(object_id)
        with self._lock:
            stored = self._stored.get(task_id)
            if stored is None:
                return
            stored.discard(object_id)
            if not stored:
                del self._stored[task_id]
                self._tasks.pop(task_id, None)

    async def loop_recover(self, object_ids: list[bytes]) -> dict[bytes, str]:
        """Re-run the tasks of those ``object_ids`` (owned here) whose node died.

        Returns, for each id, "" if its value is (being) made again, else why
        it cannot be: the caller's ObjectLostError says so.
        """
        store = self._store
        markers = {oid: store.get(oid) for oid in object_ids}
        nodes = {v.node_id for v in markers.values()
                 if v is not None and v.kind == VALUE_IN_STORE}
        dead = await self._dead_nodes(nodes)
        for node_id in dead:
            self.node_died(node_id)
        outcome = {}
        for oid, value in markers.items():
            task_id = task_id_of(oid)
            if task_id in self._rerunning:
                outcome[oid] = ""
            elif value is None or value.kind != VALUE_IN_STORE:
                outcome[oid] = "" if value is not None else "it was freed"
            elif value.node_id not in dead:
                outcome[oid] = (f"its node {value.node_id.hex()[:12]} is alive, but the "
                                "object is not in its store")
            else:
                why = outcome[oid] = self._rerun(oid, value.node_id)
                if why:  # lost for good: every reader gets the error from now on
                    store.put(oid, serialize_error(lost_error(oid, value.node_id, why)))
        return outcome

    def _rerun(self, object_id: bytes, node_id: bytes) -> str:
        task_id = task_id_of(object_id)
        with self._lock:
            task = self._tasks.get(task_id)
        if task is None:
            return self._why_not(object_id)
        if task.retries_left == 0:
            return (f"the task that made it, {task.spec.function_name}, has no retries "
                    f"left (max_retries={task.spec.max_retries}); raise max_retries to "
                    "let ember rebuild its results")
        logger.info("re-running task %s: its result %s was lost with node %s",
                    task.spec.function_name, object_id.hex(), node_id.hex()[:12])
        if task.retries_left > 0:
            task.retries_left -= 1
        task.spec.attempt += 1
        self._rerunning.add(task_id)
        for oid in task.return_ids:
            self._store.delete(oid)  # readers now wait for the new value
        task.cancelled = False
        task.worker = None
        self.resubmit(task)
        return ""

    def _why_not(self, object_id: bytes) -> str:
        if is_put_id(object_id):
            return ("it was made by put(), which ember cannot run again; keep objects "
                    "that must outlive a node on a node that stays")
        return ("it was made by an actor call or a task with max_retries=0, which ember "
                "does not run again")

    def debug_state(self) -> dict:
        return {"tasks_kept": len(self._tasks), "rerunning": len(self._rerunning)}


def lost_error(object_id: bytes, node_id: bytes, why: str) -> ObjectLostError:
    return ObjectLostError(object_id.hex(), message=(
        f"Object {object_id.hex()} is lost: its only copy was in the object store of "
        f"node {node_id.hex()[:12]}, which died, and ember cannot rebuild it: {why}."))
