"""What a submitted job is: its status, its record, and what a submission may ask.

These are the Jobs API's data, shared by the dashboard (which stores them in
the GCS key-value store) and :class:`~ember.job_submission.JobSubmissionClient`
(which reads them as JSON). Field names, JSON shapes and default messages
are Ray's, so that clients written for Ray's Jobs API read ember's answers.

A job's lifecycle (:meth:`JobInfo.transition` is the only place it changes)::

    PENDING ──> RUNNING ──> SUCCEEDED   (the entrypoint exited with 0)
       │           ├──────> FAILED      (a non-zero exit, or the supervisor died)
       │           └──────> STOPPED     (stop_job: SIGTERM, then SIGKILL)
       ├──────────────────> FAILED      (its supervisor could not start)
       └──────────────────> STOPPED     (stopped before it started)

PENDING: the supervisor actor waits for its node, resources or runtime_env.
The three terminal states never change again, and give the job its end_time.
"""
from __future__ import annotations

import dataclasses
import enum
import json
import re
import secrets
import time
import typing


class JobStatus(str, enum.Enum):
    """The status of a submitted job (Ray's names and values)."""

    PENDING = "PENDING"      # accepted; its entrypoint has not started yet
    RUNNING = "RUNNING"      # its entrypoint runs
    STOPPED = "STOPPED"      # stopped by a user
    SUCCEEDED = "SUCCEEDED"  # its entrypoint exited with status 0
    FAILED = "FAILED"        # it exited with another status, or could not run

    def __str__(self) -> str:
        return self.value

    def is_terminal(self) -> bool:
        """Whether the status can never change again (STOPPED, SUCCEEDED, FAILED)."""
        return self in _TERMINAL


_TERMINAL = frozenset({JobStatus.STOPPED, JobStatus.SUCCEEDED, JobStatus.FAILED})
_ALLOWED = {
    JobStatus.PENDING: {JobStatus.RUNNING, JobStatus.FAILED, JobStatus.STOPPED},
    JobStatus.RUNNING: {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED},
}
_DEFAULT_MESSAGES = {
    JobStatus.PENDING: "Job has not started yet.",
    JobStatus.RUNNING: "Job is currently running.",
    JobStatus.STOPPED: "Job was intentionally stopped.",
    JobStatus.SUCCEEDED: "Job finished successfully.",
    JobStatus.FAILED: "Job failed.",
}


class JobType(str, enum.Enum):
    SUBMISSION = "SUBMISSION"  # submitted through the Jobs API
    DRIVER = "DRIVER"          # a driver started by hand (not listed by this API)


class InvalidTransition(Exception):
    """A status change the lifecycle does not allow (e.g. out of a terminal state)."""


@dataclasses.dataclass
class JobInfo:
    """A submitted job's record, as stored in the GCS and served as JSON."""

    status: JobStatus
    entrypoint: str
    message: str | None = None
    error_type: str | None = None
    start_time: int | None = None   # Unix ms, when it was submitted
    end_time: int | None = None     # Unix ms, when it reached a terminal state
    metadata: dict[str, str] | None = None
    runtime_env: dict[str, typing.Any] | None = None
    entrypoint_num_cpus: float | None = None
    entrypoint_num_gpus: float | None = None
    entrypoint_memory: int | None = None
    entrypoint_resources: dict[str, float] | None = None
    driver_agent_http_address: str | None = None
    driver_node_id: str | None = None  # hex; set when the entrypoint starts
    driver_exit_code: int | None = None

    def __post_init__(self):
        self.status = JobStatus(self.status)
        if self.message is None:
            self.message = _DEFAULT_MESSAGES[self.status]

    def transition(self, status: JobStatus, message: str | None = None,
                   now_ms: int | None = None, **fields) -> "JobInfo":
        """This record moved to ``status`` (a new record); raises InvalidTransition."""
        status = JobStatus(status)
        if status is not self.status and status not in _ALLOWED.get(self.status, ()):
            raise InvalidTransition(
                f"a job cannot go from {self.status.value} to {status.value}")
        changed = dataclasses.replace(self, status=status,
                                      message=message or _DEFAULT_MESSAGES[status], **fields)
        if status.is_terminal() and changed.end_time is None:
            changed.end_time = now_ms if now_ms is not None else int(time.time() * 1000)
        return changed

    def to_json(self) -> dict:
        fields = dataclasses.asdict(self)
        fields["status"] = self.status.value
        return fields

    @classmethod
    def from_json(cls, fields: dict) -> "JobInfo":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in fields.items() if k in known})


@dataclasses.dataclass
class DriverInfo:
    id: str
    node_ip_address: str
    pid: str


@dataclasses.dataclass
class JobDetails(JobInfo):
    """A job as ``GET /api/jobs/`` lists it: its record with its ids and type (Ray's fields)."""

    type: JobType = JobType.SUBMISSION
    job_id: str | None = None
    submission_id: str | None = None
    driver_info: DriverInfo | None = None

    def __post_init__(self):
        super().__post_init__()
        self.type = JobType(self.type)
        if isinstance(self.driver_info, dict):
            self.driver_info = DriverInfo(**self.driver_info)

    def to_json(self) -> dict:
        fields = super().to_json()
        fields["type"] = self.type.value
        return fields

    @classmethod
    def of(cls, submission_id: str, info: JobInfo) -> "JobDetails":
        return cls(**dataclasses.asdict(info), submission_id=submission_id)


# --- submissions ----------------------------------------------------------------------

_SUBMISSION_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


class BadRequest(ValueError):
    """A submission the API refuses (HTTP 400); its text says what to change."""


@dataclasses.dataclass
class JobSubmitRequest:
    """``POST /api/jobs/``'s body (Ray's fields; ``job_id`` is Ray's old name of submission_id)."""

    entrypoint: str
    submission_id: str | None = None
    job_id: str | None = None
    runtime_env: dict | None = None
    metadata: dict[str, str] | None = None
    entrypoint_num_cpus: float | None = None
    entrypoint_num_gpus: float | None = None
    entrypoint_memory: int | None = None
    entrypoint_resources: dict[str, float] | None = None

    @classmethod
    def parse(cls, body: typing.Any) -> "JobSubmitRequest":
        """Check a decoded JSON body; raises BadRequest naming the first thing wrong."""
        if not isinstance(body, dict):
            raise BadRequest("The request body must be a JSON object with an 'entrypoint'.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(body) - known)
        if unknown:
            raise BadRequest(f"Unknown field(s) {unknown}; the fields are {sorted(known)}.")
        entrypoint = body.get("entrypoint")
        if not isinstance(entrypoint, str) or not entrypoint.strip():
            raise BadRequest("'entrypoint' must be a non-empty string (a shell command).")
        request = cls(**body)
        if request.submission_id is None:
            request.submission_id = request.job_id
        if request.submission_id is not None and (
                not isinstance(request.submission_id, str)
                or not _SUBMISSION_ID.match(request.submission_id)):
            raise BadRequest(
                f"submission_id {request.submission_id!r} must be 1 to 128 letters, digits, "
                "'_', '.' or '-'.")
        for name in ("runtime_env", "metadata", "entrypoint_resources"):
            value = getattr(request, name)
            if value is not None and not isinstance(value, dict):
                raise BadRequest(f"'{name}' must be a JSON object, got {json.dumps(value)}.")
        if request.metadata and not all(isinstance(k, str) and isinstance(v, str)
                                        for k, v in request.metadata.items()):
            raise BadRequest("'metadata' must map strings to strings.")
        for name in ("entrypoint_num_cpus", "entrypoint_num_gpus", "entrypoint_memory"):
            value = getattr(request, name)
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, (int, float)) or value < 0):
                raise BadRequest(f"'{name}' must be a non-negative number, got {value!r}.")
        for name, value in (request.entrypoint_resources or {}).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise BadRequest(f"entrypoint_resources[{name!r}] must be a non-negative "
                                 f"number, got {value!r}.")
        return request


def new_submission_id() -> str:
    """A fresh submission id, in Ray's form (``raysubmit_`` and 16 random characters)."""
    alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "raysubmit_" + "".join(secrets.choice(alphabet) for _ in range(16))
