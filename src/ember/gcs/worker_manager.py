"""The GCS worker table: every worker and driver process, alive or recently dead.

Raylets register each process that connects to them (its node, address, port,
pid and job) and report each death with Ray's exit type. The table is what
``ember.util.state.list_workers`` reads, as Ray's state API reads Ray's: it
shows workers that have exited, and why, which no raylet remembers for long.

Bounded: at most ``maximum_gcs_dead_worker_cached_count`` dead workers are
kept, the oldest dropped first; live ones are always kept. Held in memory
only, as task events are: a restarted GCS hears of live workers again as they
register, and forgets the dead.
"""
from __future__ import annotations

import collections
import time

from ..config import config
from ..protocol import gcs as msg


class WorkerManager:
    def __init__(self, max_dead: int | None = None):
        self.max_dead = config.maximum_gcs_dead_worker_cached_count if max_dead is None \
            else max_dead
        #: worker_id -> row, in registration order.
        self.workers: dict[bytes, msg.WorkerTableData] = {}
        #: Ids of dead workers, in the order they died (may hold ids dropped since).
        self._dead: collections.deque = collections.deque()

    def handlers(self):
        return {msg.AddWorkerInfo: self.add, msg.GetAllWorkerInfo: self.get_all}

    def add(self, conn, req: msg.AddWorkerInfo) -> None:
        info = req.info
        if not info.start_time:
            info.start_time = time.time()
        self.workers[info.worker_id] = info

    def worker_failed(self, req: msg.ReportWorkerFailure) -> None:
        info = self.workers.get(req.worker_id)
        if info is None or not info.is_alive:
            return
        self._ended(info, req.exit_type or (
            "INTENDED_USER_EXIT" if req.intentional else "SYSTEM_ERROR"), req.cause)

    def node_died(self, node: msg.NodeInfo) -> None:
        for info in [w for w in self.workers.values()
                     if w.node_id == node.node_id and w.is_alive]:
            self._ended(info, "SYSTEM_ERROR", "its node died")

    def job_finished(self, job_id: bytes) -> None:
        """A job's driver is gone once its job is (raylets do not report drivers)."""
        for info in [w for w in self.workers.values()
                     if w.job_id == job_id and w.worker_type == "DRIVER" and w.is_alive]:
            self._ended(info, "INTENDED_USER_EXIT", "its job finished")

    def _ended(self, info: msg.WorkerTableData, exit_type: str, detail: str) -> None:
        info.is_alive = False
        info.exit_type = exit_type
        info.exit_detail = detail
        info.end_time = time.time()
        self._dead.append(info.worker_id)
        while len(self._dead) > self.max_dead:
            gone = self.workers.get(self._dead.popleft())
            if gone is not None and not gone.is_alive:
                del self.workers[gone.worker_id]

    def get_all(self, conn, req: msg.GetAllWorkerInfo) -> msg.GetAllWorkerInfoReply:
        rows = list(self.workers.values())
        return msg.GetAllWorkerInfoReply(rows[:req.limit] if req.limit else rows,
                                         total=len(rows))

    def debug_state(self) -> dict:
        alive = sum(w.is_alive for w in self.workers.values())
        return {"alive": alive, "dead": len(self.workers) - alive}
