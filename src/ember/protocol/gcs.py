"""Messages of the GCS service: nodes, jobs, key-value store, pub/sub, health."""
from __future__ import annotations

from .common import Address, Message
import msgspec


class NodeInfo(msgspec.Struct, array_like=True, gc=False):
    node_id: bytes
    ip: str
    hostname: str
    #: The raylet's RPC address.
    raylet: Address
    resources_total: dict[str, float]
    labels: dict[str, str] = {}
    alive: bool = True
    is_head: bool = False
    start_time: float = 0.0
    end_time: float = 0.0
    death_reason: str = ""
    object_store_memory: int = 0
    session_dir: str = ""


class JobInfo(msgspec.Struct, array_like=True, gc=False):
    job_id: bytes
    driver_pid: int
    driver_address: Address
    namespace: str
    #: Directories the driver imports from; workers put them on sys.path.
    code_search_path: list[str]
    start_time: float
    end_time: float = 0.0
    is_dead: bool = False
    entrypoint: str = ""


# --- nodes ------------------------------------------------------------------

class RegisterNode(Message):
    info: NodeInfo


class RegisterNodeReply(Message):
    #: Every node known at registration time, so the raylet starts with a view.
    nodes: list[NodeInfo]


class UnregisterNode(Message):
    node_id: bytes
    reason: str = "node stopped"


class GetAllNodes(Message):
    pass


class GetAllNodesReply(Message):
    nodes: list[NodeInfo]
    #: node_id -> available resources, as last reported.
    available: dict[bytes, dict[str, float]]


class ReportResources(Message):
    """A raylet's current availability; sent when it changes, at most every period."""

    node_id: bytes
    available: dict[str, float]
    #: Demand that fits nowhere locally: list of resource dicts.
    pending_demand: list[dict[str, float]] = []


class CheckAlive(Message):
    """The GCS's health check of a raylet."""


class CheckAliveReply(Message):
    node_id: bytes


# --- jobs -------------------------------------------------------------------

class RegisterJob(Message):
    driver_pid: int
    driver_address: Address
    namespace: str
    code_search_path: list[str]
    entrypoint: str = ""


class RegisterJobReply(Message):
    job_id: bytes


class MarkJobFinished(Message):
    job_id: bytes


class GetJobInfo(Message):
    job_id: bytes


class GetJobInfoReply(Message):
    info: JobInfo | None


class GetAllJobs(Message):
    pass


class GetAllJobsReply(Message):
    jobs: list[JobInfo]


# --- key-value store ----------------------------------------------------------

class KVPut(Message):
    namespace: str
    key: bytes
    value: bytes
    overwrite: bool = True


class KVPutReply(Message):
    added: bool


class KVGet(Message):
    namespace: str
    key: bytes


class KVGetReply(Message):
    value: bytes | None


class KVDel(Message):
    namespace: str
    key: bytes
    by_prefix: bool = False


class KVDelReply(Message):
    deleted: int


class KVKeys(Message):
    namespace: str
    prefix: bytes


class KVKeysReply(Message):
    keys: list[bytes]


class KVExists(Message):
    namespace: str
    key: bytes


class KVExistsReply(Message):
    exists: bool


# --- pub/sub ----------------------------------------------------------------

class Subscribe(Message):
    """Ask for the messages of ``channels`` on this connection.

    ``job_id`` filters per-job channels (logs, errors); b"" means all jobs.
    """

    channels: list[str]
    job_id: bytes = b""


class SubscribeReply(Message):
    pass


class NodeChanged(Message):
    """Published on channel "node" when a node joins or dies."""

    info: NodeInfo


class LogBatch(Message):
    """Lines a worker printed; published on channel "log" for the job's driver."""

    job_id: bytes
    pid: int
    ip: str
    task_name: str
    is_err: bool
    lines: list[str]


class PublishLogs(Message):
    batches: list[LogBatch]


class ErrorInfo(Message):
    """A warning or error for a job's driver; published on channel "error"."""

    job_id: bytes
    kind: str
    message: str


class PublishError(Message):
    info: ErrorInfo


class JobFinished(Message):
    """Published on channel "job" when a job ends."""

    job_id: bytes


class Ack(Message):
    """A reply that carries nothing but success."""


CHANNEL_NODE = "node"
CHANNEL_LOG = "log"
CHANNEL_ERROR = "error"
CHANNEL_JOB = "job"
