"""The dashboard's side of the Jobs API: accept, start, stop, delete and watch jobs.

What it holds, and on which thread:

- a :class:`~.job_store.JobStore` over the dashboard's own connection to the
  GCS (a ``ReconnectingClient``, so it rides out a GCS restart), used on the
  aiohttp event loop;
- an ember driver (``ember.init(address=<gcs>)``), made at the first
  submission rather than at start-up: a dashboard nobody submits to costs the
  cluster no driver. Supervisor actors can only be created by a core worker.
  Every ember call runs on :attr:`_ember`, a one-thread executor, so the
  event loop never blocks on one and the calls need no lock;
- the supervisors this dashboard started, watched by :meth:`_watch` on that
  thread: when a supervisor's ``run()`` fails (its actor died, or could not
  enter the job's runtime_env), the job becomes FAILED with the cause, unless
  the supervisor recorded an end first.

Submission order, so that a crash between two steps leaves a record that says
what happened: validate, create the PENDING record (refused if the id
exists), then create the supervisor; if that fails, the job becomes FAILED.

A dashboard that restarts takes up the jobs that have not ended: it finds
their supervisors by name and watches their ``wait()`` instead of ``run()``;
a job whose supervisor is gone becomes FAILED.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
import logging
import os
import time

import ember

from .. import runtime_env as runtime_env_mod
from ..job_submission.models import (BadRequest, DriverInfo, JobDetails, JobInfo, JobStatus,
                                     JobSubmitRequest, new_submission_id)
from ..protocol import gcs as gcs_msg
from ..rpc.reconnecting import ReconnectingClient
from ..scheduling_strategies import NodeAffinitySchedulingStrategy
from ..util.state import api as state_api
from .job_store import JobStore
from .job_supervisor import JobSupervisor, log_file_name

logger = logging.getLogger(__name__)

#: The namespace of supervisor actors (Ray's SUPERVISOR_ACTOR_RAY_NAMESPACE).
SUPERVISOR_NAMESPACE = "SUPERVISOR_ACTOR_RAY_NAMESPACE"
#: Seconds between SIGTERM and SIGKILL when a job is stopped.
STOP_GRACE_S = 3.0
#: Seconds a request to the GCS may wait (a restarting GCS is waited for that long).
GCS_TIMEOUT_S = 30.0
#: Seconds a request may wait for the dashboard's first connection to the GCS.
FIRST_CONNECT_WAIT_S = 10.0


class NotFound(LookupError):
    """No job has that submission id (HTTP 404)."""


def supervisor_name(submission_id: str) -> str:
    return f"_ember_job_supervisor_{submission_id}"


class JobManager:
    def __init__(self, gcs_address: str, session_dir: str):
        self._gcs_address = gcs_address
        self._session_dir = session_dir
        self._gcs = ReconnectingClient(gcs_address, {}, name="gcs")
        self.store = JobStore(self._call_gcs)
        self._ember = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ember")
        self._is_driver = False  # whether this process called ember.init(); ember thread
        #: submission id -> (supervisor handle, ObjectRef of its run()); ember thread only.
        self._running: dict[str, tuple] = {}
        #: Supervisors killed on purpose (a stop while PENDING); ember thread only.
        self._killed: set[str] = set()
        self._watching = False
        self._adoption: asyncio.Future | None = None
        #: Set once the GCS was reached; until then a request waits FIRST_CONNECT_WAIT_S.
        self._gcs_reached = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Connect to the GCS in the background: the dashboard serves at once (requests
        wait for the connection, up to GCS_TIMEOUT_S), and serves without a GCS too."""
        self._loop = asyncio.get_running_loop()
        self._adoption = asyncio.ensure_future(self._connect_then_adopt())

    async def _call_gcs(self, request):
        if not self._gcs_reached.is_set():  # the GCS may be starting with the dashboard
            try:
                await asyncio.wait_for(self._gcs_reached.wait(), FIRST_CONNECT_WAIT_S)
            except asyncio.TimeoutError:
                raise ConnectionError(f"the dashboard has not reached the GCS at "
                                      f"{self._gcs_address} yet") from None
        return await self._gcs.call(request, timeout=GCS_TIMEOUT_S)

    async def _connect_then_adopt(self) -> None:
        """Connect (again and again, until the GCS answers), then watch the supervisors
        of the jobs a previous dashboard started that have not ended."""
        for attempt in itertools.count():
            try:
                await self._gcs.start(timeout=5)
                self._gcs_reached.set()
                break
            except (ConnectionError, OSError, asyncio.TimeoutError) as exc:
                if attempt % 30 == 2:  # the GCS starts alongside: say so only if it lasts
                    logger.warning("job manager: cannot reach the GCS at %s yet (%s); "
                                   "retrying", self._gcs_address, exc)
                await asyncio.sleep(0.2 if attempt < 10 else 1.0)
        try:
            jobs = await self.store.list()
            running = [i for i, info in jobs.items() if not info.status.is_terminal()]
            if running:
                await self._in_ember(self._adopt, running)
        except Exception:  # noqa: BLE001 - the jobs still record their own end
            logger.exception("job manager: could not take up the running jobs")

    async def close(self) -> None:
        self._watching = False
        if self._adoption is not None:
            self._adoption.cancel()
        self._gcs.close()
        # Not waiting: an ember call in flight may wait on a raylet that is going away.
        self._ember.shutdown(wait=False, cancel_futures=True)

    # --- the API --------------------------------------------------------------------

    async def submit(self, request: JobSubmitRequest) -> str:
        """Accept a job and start its supervisor; returns its submission id.

        Raises BadRequest for a malformed runtime_env, a package that was not
        uploaded, or a submission id that is taken.
        """
        runtime_env = request.runtime_env or {}
        try:
            runtime_env_mod.validate(runtime_env)
        except (TypeError, ValueError) as exc:
            raise BadRequest(f"Invalid runtime_env: {exc}") from None
        await self._check_packages(runtime_env)
        submission_id = request.submission_id or new_submission_id()
        info = JobInfo(
            status=JobStatus.PENDING, entrypoint=request.entrypoint,
            start_time=int(time.time() * 1000), metadata=request.metadata or {},
            runtime_env=runtime_env, entrypoint_num_cpus=request.entrypoint_num_cpus,
            entrypoint_num_gpus=request.entrypoint_num_gpus,
            entrypoint_memory=request.entrypoint_memory,
            entrypoint_resources=request.entrypoint_resources,
            message=_pending_message(request, runtime_env))
        if not await self.store.create(submission_id, info):
            raise BadRequest(f"Job with submission_id {submission_id} already exists. "
                             "Please use a different submission_id.")
        try:
            await self._in_ember(self._start_supervisor, submission_id, request, runtime_env)
        except Exception as exc:  # noqa: BLE001 - whatever it was, the job failed to start
            logger.exception("job %s: could not start its supervisor", submission_id)
            await self.store.transition(submission_id, JobStatus.FAILED,
                                        f"Could not start the job's supervisor: {exc}")
        return submission_id

    async def get(self, submission_id: str) -> JobDetails:
        info = await self.store.get(submission_id)
        if info is None:
            raise NotFound(f"Job {submission_id} does not exist.")
        return JobDetails.of(submission_id, info)

    async def get_with_driver(self, submission_id: str) -> JobDetails:
        """The job, with the id and process of its driver (if its entrypoint called init)."""
        job = await self.get(submission_id)
        return _with_driver(job, await self._drivers())

    async def list(self) -> list[JobDetails]:
        jobs, drivers = await self.store.list(), await self._drivers()
        return sorted((_with_driver(JobDetails.of(i, info), drivers) for i, info in jobs.items()),
                      key=lambda job: (job.start_time or 0, job.submission_id))

    async def _drivers(self) -> dict[str, object]:
        """Submission id -> the GCS's record of the last driver that ran for it."""
        reply = await self._call_gcs(gcs_msg.GetAllJobs())
        drivers = {}
        for driver in sorted(reply.jobs, key=lambda info: info.start_time):
            if driver.submission_id:
                drivers[driver.submission_id] = driver
        return drivers

    async def stop(self, submission_id: str) -> bool:
        """Stop a job; False if it had already ended."""
        job = await self.get(submission_id)
        if job.status.is_terminal():
            return False
        if job.status is JobStatus.PENDING:
            # Not started. Recorded first: a supervisor that comes up now finds the job
            # ended and starts nothing, and the watcher does not call its death a failure.
            if await self.store.transition(submission_id, JobStatus.STOPPED) is not None:
                await self._in_ember(self._kill_supervisor, submission_id)
                return True
            job = await self.get(submission_id)  # it started meanwhile, or ended
            if job.status.is_terminal():
                return False
        stopped = await self._in_ember(self._stop_supervisor, submission_id)
        if not stopped:  # the supervisor is gone: record the stop ourselves
            await self.store.transition(submission_id, JobStatus.STOPPED)
        return True

    async def delete(self, submission_id: str) -> bool:
        job = await self.get(submission_id)
        if not job.status.is_terminal():
            raise BadRequest(
                f"Attempted to delete job with submission_id {submission_id}, but it is in "
                f"a non-terminal state {job.status.value}. Stop it first.")
        deleted = await self.store.delete(submission_id)
        try:
            os.unlink(self.log_path(submission_id))
        except FileNotFoundError:
            pass
        return deleted

    def log_path(self, submission_id: str) -> str:
        """The job's log file, when its entrypoint runs on this (the head) node."""
        return os.path.join(self._session_dir, "logs", log_file_name(submission_id))

    async def remote_log(self, job: JobDetails) -> bytes:
        """The whole log of a job whose entrypoint ran on another node (via its raylet)."""
        def read() -> bytes:
            lines = state_api.get_log(address=self._gcs_address, node_id=job.driver_node_id,
                                      filename=log_file_name(job.submission_id),
                                      tail=-1, errors="replace")
            return "".join(line if line.endswith("\n") else line + "\n"
                           for line in lines).encode()
        return await self._loop.run_in_executor(None, read)

    # --- packages -------------------------------------------------------------------

    async def upload_package(self, uri: str, data: bytes) -> None:
        """Store a runtime_env package (``PUT /api/packages/...``); ValueError if malformed."""
        runtime_env_mod.parse_uri(uri)
        if len(data) > runtime_env_mod.MAX_PACKAGE_SIZE:
            raise ValueError(f"The package is over the limit of "
                             f"{runtime_env_mod.MAX_PACKAGE_SIZE // (1 << 20)} MiB.")
        await self._call_gcs(gcs_msg.KVPut(runtime_env_mod.KV_NAMESPACE,
                                           runtime_env_mod.kv_key(uri), data, overwrite=False))

    async def package_exists(self, uri: str) -> bool:
        runtime_env_mod.parse_uri(uri)
        reply = await self._call_gcs(gcs_msg.KVExists(runtime_env_mod.KV_NAMESPACE,
                                                      runtime_env_mod.kv_key(uri)))
        return reply.exists

    async def _check_packages(self, runtime_env: dict) -> None:
        uris = ([runtime_env["working_dir"]] if runtime_env.get("working_dir") else []) + \
            list(runtime_env.get("py_modules") or ())
        for uri in uris:
            try:
                exists = await self.package_exists(uri)
            except ValueError:
                raise BadRequest(
                    f"Invalid runtime_env: {uri!r} is a local path on the submitting "
                    "machine; JobSubmissionClient and `ember job submit` upload it and "
                    "send its gcs:// URI.") from None
            if not exists:
                raise BadRequest(f"Invalid runtime_env: the package {uri} was not uploaded "
                                 "(PUT /api/packages/... first).")

    # --- on the ember thread ----------------------------------------------------------

    async def _in_ember(self, fn, *args):
        return await self._loop.run_in_executor(self._ember, fn, *args)

    def _driver(self):
        """ember, with this process its driver (connected at the first call)."""
        if not self._is_driver:
            ember.init(address=self._gcs_address, namespace=SUPERVISOR_NAMESPACE,
                       log_to_driver=False, configure_logging=False)
            self._is_driver = True
        return ember

    def _start_supervisor(self, submission_id: str, request: JobSubmitRequest,
                          runtime_env: dict) -> None:
        ember = self._driver()
        wants_resources = any((request.entrypoint_num_cpus, request.entrypoint_num_gpus,
                               request.entrypoint_memory, request.entrypoint_resources))
        options = dict(
            name=supervisor_name(submission_id), namespace=SUPERVISOR_NAMESPACE,
            lifetime="detached", max_concurrency=3, runtime_env=runtime_env or None,
            num_cpus=request.entrypoint_num_cpus or 0,
            num_gpus=request.entrypoint_num_gpus or 0,
            memory=request.entrypoint_memory or None,
            resources=request.entrypoint_resources or None)
        if not wants_resources:  # the head node: this process's node
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                ember.get_runtime_context().get_node_id(), soft=False)
        supervisor = ember.remote(JobSupervisor).options(**options).remote(
            submission_id, request.entrypoint,
            json.dumps(runtime_env) if runtime_env else "", STOP_GRACE_S)
        self._running[submission_id] = (supervisor, supervisor.run.remote())
        self._start_watching()

    def _adopt(self, submission_ids: list[str]) -> None:
        ember = self._driver()
        for submission_id in submission_ids:
            if submission_id in self._running:
                continue
            try:
                supervisor = ember.get_actor(supervisor_name(submission_id),
                                             SUPERVISOR_NAMESPACE)
            except ValueError:
                self._record(submission_id, JobStatus.FAILED,
                             "The job's supervisor is gone: it died while no dashboard "
                             "was watching it.")
                continue
            self._running[submission_id] = (supervisor, supervisor.wait.remote())
        self._start_watching()

    def _start_watching(self) -> None:
        if self._running and not self._watching:
            self._watching = True
            self._loop.call_soon_threadsafe(
                lambda: self._loop.run_in_executor(self._ember, self._watch))

    def _watch(self) -> None:
        """Settle the supervisors whose run() ended; re-queued while any runs.

        Re-queued rather than looping, so that submissions and stops, queued
        on the same thread, go between two rounds.
        """
        try:
            self._settle_ended_supervisors()
        except Exception:  # noqa: BLE001 - keep watching the others
            logger.exception("job manager: settling supervisors failed")
        if self._running and self._watching:
            self._loop.call_soon_threadsafe(
                lambda: self._loop.run_in_executor(self._ember, self._watch))
        else:
            self._watching = False

    def _settle_ended_supervisors(self) -> None:
        refs = {ref: sid for sid, (_, ref) in self._running.items()}
        ready, _ = ember.wait(list(refs), num_returns=len(refs), timeout=0.2)
        for ref in ready:
            submission_id = refs[ref]
            supervisor, _ = self._running.pop(submission_id)
            try:
                ember.get(ref)
            except Exception as exc:  # noqa: BLE001 - the cause goes into the record
                if submission_id in self._killed:  # stopped while PENDING: not a failure
                    self._killed.discard(submission_id)
                    self._record(submission_id, JobStatus.STOPPED)
                else:
                    self._record(submission_id, JobStatus.FAILED, _failure_message(exc))
            ember.kill(supervisor)

    def _record(self, submission_id: str, status: JobStatus, message: str | None = None):
        """Write a job's status from the ember thread (the store lives on the event loop)."""
        future = asyncio.run_coroutine_threadsafe(
            self.store.transition(submission_id, status, message), self._loop)
        return future.result(30)

    def _supervisor(self, submission_id: str):
        ember = self._driver()
        if submission_id in self._running:
            return self._running[submission_id][0]
        try:
            return ember.get_actor(supervisor_name(submission_id), SUPERVISOR_NAMESPACE)
        except ValueError:
            return None

    def _kill_supervisor(self, submission_id: str) -> None:
        supervisor = self._supervisor(submission_id)
        if supervisor is not None:
            self._killed.add(submission_id)
            self._driver().kill(supervisor)

    def _stop_supervisor(self, submission_id: str) -> bool:
        """Ask the job's supervisor to stop it; False if the supervisor is gone."""
        ember = self._driver()
        supervisor = self._supervisor(submission_id)
        if supervisor is None:
            return False
        try:
            ember.get(supervisor.stop.remote(), timeout=STOP_GRACE_S + 10)
        except Exception:  # noqa: BLE001 - dead or unreachable: kill it, the group goes too
            self._killed.add(submission_id)
            ember.kill(supervisor)
            return False
        return True

    def debug_state(self) -> dict:
        return {"supervisors_watched": len(self._running), "driver": self._is_driver,
                "gcs": self._gcs.debug_state()}


def _with_driver(job: JobDetails, drivers: dict) -> JobDetails:
    driver = drivers.get(job.submission_id)
    if driver is not None:
        job.job_id = driver.job_id.hex()
        job.driver_info = DriverInfo(id=driver.driver_address.worker_id.hex(),
                                     node_ip_address=driver.driver_address.ip,
                                     pid=str(driver.driver_pid))
    return job


def _failure_message(exc: BaseException) -> str:
    """A FAILED record's message for a supervisor that died: the cause's last line."""
    text = str(exc).strip()
    cause = text.splitlines()[-1] if text else type(exc).__name__
    return f"The job's supervisor failed ({type(exc).__name__}): {cause}"


def _pending_message(request: JobSubmitRequest, runtime_env: dict) -> str:
    """Ray's PENDING message, naming what the job may be waiting for."""
    message = "Job has not started yet."
    if any((request.entrypoint_num_cpus, request.entrypoint_num_gpus,
            request.entrypoint_memory, request.entrypoint_resources)):
        message += (" It may be waiting for resources (CPUs, GPUs, memory, custom "
                    "resources) to become available.")
    if runtime_env:
        message += " It may be waiting for the runtime environment to be set up."
    return message
