"""Where submitted jobs are kept: the GCS key-value store, one JSON record per job.

Why the GCS: a job must outlive the process that served its submission (the
dashboard may restart) and, with Redis storage, the GCS itself, as in Ray
(which keeps them under ``_ray_internal_job_info_<id>`` in the KV store).
Records are JSON (``JobInfo.to_json``) so they read the same from any version.

Who writes a record:

- the dashboard creates it (PENDING), and writes a terminal state only when
  the job's supervisor actor is gone (it died, or the job was stopped before
  it ran);
- otherwise the job's supervisor actor writes RUNNING and the terminal state.

So a record has one writer at a time, and a read-modify-write needs no lock.

The store is written against one coroutine, ``call(request) -> reply`` (a GCS
client's ``call``), so the dashboard (on its aiohttp loop) and a supervisor
(through its core worker) share it, and a test can give it a dict-backed fake.
"""
from __future__ import annotations

import json
import typing

from ..job_submission.models import JobInfo, JobStatus
from ..protocol import gcs as gcs_msg

#: The KV namespace of job records (Ray's KV_NAMESPACE_JOB).
NAMESPACE = "job"
KEY_PREFIX = b"_ember_job_info_"


class JobStore:
    def __init__(self, call: typing.Callable[[object], typing.Awaitable]):
        self._call = call

    async def get(self, submission_id: str) -> JobInfo | None:
        reply = await self._call(gcs_msg.KVGet(NAMESPACE, KEY_PREFIX + submission_id.encode()))
        return None if reply.value is None else JobInfo.from_json(json.loads(reply.value))

    async def create(self, submission_id: str, info: JobInfo) -> bool:
        """Store a new record; False if ``submission_id`` is taken (nothing is changed)."""
        reply = await self._call(gcs_msg.KVPut(NAMESPACE, KEY_PREFIX + submission_id.encode(),
                                               _encode(info), overwrite=False))
        return reply.added

    async def put(self, submission_id: str, info: JobInfo) -> None:
        await self._call(gcs_msg.KVPut(NAMESPACE, KEY_PREFIX + submission_id.encode(),
                                       _encode(info)))

    async def transition(self, submission_id: str, status: JobStatus,
                         message: str | None = None, **fields) -> JobInfo | None:
        """Move a job to ``status``; None (and nothing written) if it is already terminal.

        Raises InvalidTransition for an edge the lifecycle does not have, and
        KeyError for an unknown job.
        """
        info = await self.get(submission_id)
        if info is None:
            raise KeyError(submission_id)
        if info.status.is_terminal():
            return None
        changed = info.transition(status, message, **fields)
        await self.put(submission_id, changed)
        return changed

    async def delete(self, submission_id: str) -> bool:
        reply = await self._call(gcs_msg.KVDel(NAMESPACE, KEY_PREFIX + submission_id.encode()))
        return reply.deleted > 0

    async def list(self) -> dict[str, JobInfo]:
        """Every job record, by submission id."""
        reply = await self._call(gcs_msg.KVKeys(NAMESPACE, KEY_PREFIX))
        jobs = {}
        for key in reply.keys:
            submission_id = key[len(KEY_PREFIX):].decode()
            info = await self.get(submission_id)
            if info is not None:  # deleted between the two calls
                jobs[submission_id] = info
        return jobs


def _encode(info: JobInfo) -> bytes:
    return json.dumps(info.to_json()).encode()
