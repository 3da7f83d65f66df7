"""The actor that runs one job's entrypoint and records how it ended.

One supervisor per job, created by the dashboard's job manager as a detached
actor (``num_cpus=0`` unless the submission asked for entrypoint resources)
on the head node, or on a node that has the requested entrypoint resources.
It is created with the job's ``runtime_env``, so its worker has entered it
before :meth:`JobSupervisor.run` starts: the working_dir is the cwd and the
env_vars are in ``os.environ``, and the entrypoint inherits both.

The entrypoint runs in a shell under ``job_launcher.py``, the leader of a new
process group; stdout and stderr go to ``<session>/logs/job-driver-<id>.log``
on the supervisor's node. The environment adds ``EMBER_ADDRESS`` and
``RAY_ADDRESS`` (the GCS), so ``ember.init()`` in the entrypoint joins this
cluster, and ``EMBER_JOB_RUNTIME_ENV`` (the job's resolved runtime_env), so
that driver's tasks and actors run in the job's env as Ray's do. The worker's
own identity variables are left out: the entrypoint is a driver, not this
worker.

The supervisor writes the job's RUNNING and terminal records (see
``job_store.py``). Its actor is a threaded one (``max_concurrency=3``), so
that :meth:`stop` and :meth:`wait` can run while :meth:`run` waits for the
entrypoint.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

from ..core_worker import context
from ..worker import ENV_JOB_RUNTIME_ENV
from ..job_submission.models import JobStatus
from .job_store import JobStore

#: The variables a worker is started with that say which worker it is.
_WORKER_IDENTITY = ("EMBER_GCS_ADDRESS", "EMBER_NODE_ID", "EMBER_NODE_IP",
                    "EMBER_RAYLET_SOCKET", "EMBER_SESSION_DIR", "EMBER_WORKER_ID")
#: How much of the end of the log a FAILED job's message quotes.
_LOG_TAIL_CHARS = 2000
_LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "job_launcher.py")


def log_file_name(submission_id: str) -> str:
    """The name of a job's log file in its node's ``logs`` directory (Ray's name)."""
    return f"job-driver-{submission_id}.log"


class JobSupervisor:
    def __init__(self, submission_id: str, entrypoint: str, runtime_env_json: str,
                 stop_grace_s: float):
        self._id = submission_id
        self._entrypoint = entrypoint
        self._runtime_env_json = runtime_env_json
        self._grace_s = stop_grace_s
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None  # set once, under _lock
        self._stopping = False  # set by stop(), under _lock
        self._ended = threading.Event()  # set when run() has recorded the job's end
        self._status = ""  # the final status, once _ended is set

    def run(self) -> str:
        """Run the entrypoint to its end and record it; returns the final status."""
        try:
            self._status = self._run()
            return self._status
        finally:
            self._ended.set()

    def wait(self) -> str:
        """Return the final status once run() has recorded it (for a restarted dashboard)."""
        self._ended.wait()
        return self._status

    def _run(self) -> str:
        core = context.require_core("JobSupervisor.run")
        store = JobStore(core.gcs.call)
        log_path = os.path.join(core.session_dir, "logs", log_file_name(self._id))
        # RUNNING first: if the job was stopped while PENDING, it stays STOPPED and
        # nothing starts.
        if self._record(core, store, JobStatus.RUNNING, driver_node_id=core.node_id.hex()) \
                is None:
            return store_status(core, store, self._id)
        with self._lock:
            if self._stopping:
                self._record(core, store, JobStatus.STOPPED)
                return JobStatus.STOPPED.value
            # Started from run()'s thread, which waits for it below: Linux sends the
            # launcher's parent-death signal when the thread that started it ends.
            with open(log_path, "ab") as log:
                self._process = subprocess.Popen(
                    [sys.executable, "-S", _LAUNCHER, str(self._grace_s), self._entrypoint],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True, close_fds=True, env=self._environment(core))
        code = self._process.wait()
        with self._lock:
            stopped = self._stopping
        if stopped:
            status, message = JobStatus.STOPPED, None
        elif code == 0:
            status, message = JobStatus.SUCCEEDED, None
        else:
            status, message = JobStatus.FAILED, failure_message(code, log_path)
        self._record(core, store, status, message, driver_exit_code=code)
        return status.value

    def stop(self) -> bool:
        """SIGTERM the job's process group, SIGKILL it after the grace period.

        Returns when the entrypoint has exited; False if it had already.
        """
        with self._lock:
            self._stopping = True
            process = self._process
        if process is None or process.poll() is not None:
            return process is None
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        try:
            process.wait(self._grace_s + 1.0)  # the launcher enforces the grace itself
        except subprocess.TimeoutExpired:
            pass
        try:  # anything left has had its grace period
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return True

    def _environment(self, core) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in _WORKER_IDENTITY}
        env.update(EMBER_ADDRESS=core.gcs_address, RAY_ADDRESS=core.gcs_address,
                   EMBER_JOB_SUBMISSION_ID=self._id, RAY_JOB_SUBMISSION_ID=self._id,
                   PYTHONUNBUFFERED="1")
        if self._runtime_env_json:
            env[ENV_JOB_RUNTIME_ENV] = self._runtime_env_json
        # The env's packages (working_dir, py_modules) are on this worker's sys.path;
        # the entrypoint's Python must find them too.
        resources = os.path.join(core.session_dir, "runtime_resources", "")
        packages = [p for p in sys.path if p.startswith(resources)]
        if packages:
            env["PYTHONPATH"] = os.pathsep.join(
                packages + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        return env

    def _record(self, core, store: JobStore, status: JobStatus, message: str | None = None,
                **fields):
        """Write the job's new status; None if it had ended already (nothing written)."""
        return core.io.run(store.transition(self._id, status, message, **fields), 30)


def store_status(core, store: JobStore, submission_id: str) -> str:
    return core.io.run(store.get(submission_id), 30).status.value


def failure_message(code: int, log_path: str) -> str:
    """What a FAILED job says: its exit code, and the end of its log."""
    if code > 128:
        try:
            how = f" (killed by {signal.Signals(code - 128).name})"
        except ValueError:
            how = ""
    else:
        how = ""
    message = f"Job entrypoint command failed with exit code {code}{how}."
    try:
        with open(log_path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - _LOG_TAIL_CHARS))
            tail = f.read().decode(errors="replace").strip()
    except OSError:
        tail = ""
    if tail:
        message += f" Last lines of its log:\n{tail}"
    return message
