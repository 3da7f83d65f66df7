"""The GCS job table: one job per connected driver.

A job starts when a driver registers and finishes when it says so or when its
connection to the GCS closes (the driver exited, cleanly or not). Raylets learn
of finished jobs through the "job" channel and stop that job's workers.

After a GCS restart (tables reloaded from Redis) no driver is connected. A
driver that reconnects registers again with its job id and takes its job up
again; a running job whose driver has not come back within
``gcs_reconnect_timeout_s`` is finished, as if its connection had closed.
"""
from __future__ import annotations

import asyncio
import logging
import time

import msgspec

from ..config import config
from ..protocol import gcs as msg
from .pubsub import Publisher
from .storage import StoreClient

logger = logging.getLogger(__name__)

TABLE = "job"

class JobManager:
    def __init__(self, store: StoreClient, publisher: Publisher):
        self._store = store
        self._publisher = publisher
        self.jobs: dict[bytes, msg.JobInfo] = {}
        self._next_job = 1
        #: Callbacks run with the job id of a job that just finished.
        self.on_job_finished: list = []
        #: Running jobs reloaded from storage whose driver has not reconnected.
        self._awaiting_driver: set[bytes] = set()
        self._expiry: asyncio.TimerHandle | None = None

    async def load(self) -> None:
        for raw in (await self._store.get_all(TABLE)).values():
            info = msgspec.msgpack.decode(raw, type=msg.JobInfo)
            self.jobs[info.job_id] = info
            self._next_job = max(self._next_job, int.from_bytes(info.job_id, "little") + 1)
            if not info.is_dead:
                self._awaiting_driver.add(info.job_id)

    def start(self) -> None:
        if self._awaiting_driver:
            self._expiry = asyncio.get_running_loop().call_later(
                config.gcs_reconnect_timeout_s, self._expire_absent_drivers)

    def stop(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()

    def _expire_absent_drivers(self) -> None:
        absent, self._awaiting_driver = self._awaiting_driver, set()
        for job_id in absent:
            logger.info("job %s: its driver did not reconnect within %g s", job_id.hex(),
                        config.gcs_reconnect_timeout_s)
            asyncio.get_running_loop().create_task(self._finish(job_id))

    def handlers(self):
        return {
            msg.RegisterJob: self.register,
            msg.MarkJobFinished: self.mark_finished,
            msg.GetJobInfo: self.get_info,
            msg.GetAllJobs: self.get_all,
        }

    async def register(self, conn, req: msg.RegisterJob) -> msg.RegisterJobReply:
        if req.job_id:
            known = self.jobs.get(req.job_id)
            if known is None:
                raise RuntimeError(
                    f"job {req.job_id.hex()} is unknown to this GCS: it restarted without "
                    "the tables of the previous one (set gcs_storage to a Redis address "
                    "for GCS fault tolerance)")
            if known.is_dead:
                raise RuntimeError(f"job {req.job_id.hex()} already finished; its driver "
                                   "reconnected too late")
            self._awaiting_driver.discard(req.job_id)
            conn.peer = ("job", req.job_id)
            return msg.RegisterJobReply(req.job_id)
        job_id = self._next_job.to_bytes(4, "little")
        self._next_job += 1
        info = msg.JobInfo(job_id=job_id, driver_pid=req.driver_pid,
                           driver_address=req.driver_address, namespace=req.namespace,
                           code_search_path=req.code_search_path, start_time=time.time(),
                           entrypoint=req.entrypoint, submission_id=req.submission_id)
        self.jobs[job_id] = info
        conn.peer = ("job", job_id)
        await self._store.put(TABLE, job_id, msgspec.msgpack.encode(info))
        return msg.RegisterJobReply(job_id)

    async def mark_finished(self, conn, req: msg.MarkJobFinished) -> msg.Ack:
        await self._finish(req.job_id)
        return msg.Ack()

    def get_info(self, conn, req: msg.GetJobInfo) -> msg.GetJobInfoReply:
        return msg.GetJobInfoReply(self.jobs.get(req.job_id))

    def get_all(self, conn, req) -> msg.GetAllJobsReply:
        return msg.GetAllJobsReply(list(self.jobs.values()))

    async def _finish(self, job_id: bytes) -> None:
        info = self.jobs.get(job_id)
        if info is None or info.is_dead:
            return
        info.is_dead = True
        info.end_time = time.time()
        await self._store.put(TABLE, job_id, msgspec.msgpack.encode(info))
        logger.info("job %s finished", job_id.hex())
        self._publisher.publish(msg.CHANNEL_JOB, msg.JobFinished(
            job_id, info.driver_address.worker_id))
        for callback in self.on_job_finished:
            callback(job_id)

    async def connection_closed(self, conn) -> None:
        peer = conn.peer
        if peer and peer[0] == "job":
            await self._finish(peer[1])

    def debug_state(self) -> dict:
        return {"jobs": len(self.jobs), "running": sum(not j.is_dead for j in self.jobs.values())}
