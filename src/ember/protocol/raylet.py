"""Messages of the raylet service: worker registration, leases, node state."""
from __future__ import annotations

from .common import Address, Message, SchedulingStrategy
from .core_worker import CoreWorkerStatsReply


class RegisterWorker(Message):
    """The first message a worker or driver sends on its raylet connection."""

    worker_id: bytes
    pid: int
    address: Address
    is_driver: bool
    job_id: bytes = b""


class RegisterWorkerReply(Message):
    node_id: bytes
    gcs_address: str
    session_dir: str
    resources_total: dict[str, float]
    #: The object store arena: a client opens /proc/<raylet_pid>/fd/<store_fd>
    #: and maps ``store_capacity`` bytes (see ember.object_store.arena).
    store_fd: int = -1
    store_capacity: int = 0
    raylet_pid: int = 0
    #: The key the raylet signs this worker's lease grants with (see
    #: ``LeaseGranted.grant``); empty for drivers.
    lease_key: bytes = b""


class RequestWorkerLease(Message):
    """Ask for a worker that holds ``resources`` for as long as the lease lasts."""

    lease_id: bytes
    job_id: bytes
    resources: dict[str, float]
    strategy: SchedulingStrategy
    #: What the lease is for, for warnings and ``ember status`` ("f", "Actor.__init__").
    description: str
    owner: Address
    #: When true the raylet must not spill back: the owner already chose this node.
    grant_or_reject: bool = False
    #: Scheduling key: the raylet batches lease requests with the same key.
    scheduling_key: bytes = b""
    #: For an actor: its id. The worker serves only that actor and is not reused.
    actor_id: bytes = b""
    #: Resources held once granted, when smaller than ``resources`` (which
    #: choose the node). Ray's default actors: 1 CPU to place, 0 to run.
    running_resources: dict[str, float] | None = None
    #: Whether the owner retries the lease's tasks if the worker dies
    #: (max_retries != 0); the memory monitor kills such workers first.
    retriable: bool = True


class LeaseGranted(Message):
    """The lease is granted: ``worker`` holds the resources until the lease is returned."""

    lease_id: bytes
    worker: Address
    worker_pid: int
    #: The GPUs the worker may use (its CUDA_VISIBLE_DEVICES).
    gpu_ids: list[int] = []
    #: Proof for the worker that this lease is real; the owner sends it with
    #: each PushTask (see ember.rpc.auth.lease_grant).
    grant: bytes = b""


class LeaseSpillback(Message):
    """Ask the raylet at ``retry_at`` instead, as grant-or-reject (ember.raylet.lease_client)."""

    retry_at: Address


class LeaseRejected(Message):
    """A grant-or-reject request that does not fit now: ask your own raylet again."""


class LeaseCanceled(Message):
    """The request was canceled (CancelWorkerLease) before it was granted."""


class LeaseFailed(Message):
    """The request can never be granted; ``message`` says why, for the user."""

    message: str


#: How a raylet answers a lease request: the reply's type is its status, and
#: each kind carries only what matters for it. Readers match on the type.
WorkerLeaseReply = LeaseGranted | LeaseSpillback | LeaseRejected | LeaseCanceled | LeaseFailed


class ReturnWorker(Message):
    lease_id: bytes
    #: The owner saw the worker fail; do not give it to anyone else.
    worker_failed: bool = False


class CancelWorkerLease(Message):
    lease_id: bytes


class CancelWorkerLeaseReply(Message):
    canceled: bool


class WorkerExiting(Message):
    """The worker is about to exit on purpose (exit_actor(), max_calls): not a crash.

    Only this makes an exit intentional; a process that ends with status 0
    without saying so (``os._exit(0)`` in user code) died, and its actor may
    restart, as in Ray.
    """


class NotifyBlocked(Message):
    """The worker's task blocks in ``get``; lend its CPUs to other work."""


class NotifyUnblocked(Message):
    pass


class KillWorker(Message):
    worker_id: bytes
    reason: str = ""


class GetWorkerFailureCause(Message):
    worker_id: bytes


class GetWorkerFailureCauseReply(Message):
    #: "" when the raylet knows nothing of the worker's death (yet).
    cause: str
    exit_code: int | None = None
    #: The memory monitor killed the worker; ``cause`` is the OutOfMemoryError
    #: message. Known from the moment of the kill, before the worker has exited.
    out_of_memory: bool = False
    #: For an out-of-memory kill: whether the owner should retry the task
    #: (see ember.raylet.memory_monitor.choose_worker_to_kill).
    retry: bool = False


class GetNodeState(Message):
    pass


class GetNodeStateReply(Message):
    state: dict


class ShutdownRaylet(Message):
    reason: str = ""


class GetMemoryInfo(Message):
    """``ember memory``: every reference held on this node, and the store's state."""


class GetMemoryInfoReply(Message):
    #: One per driver and worker on the node.
    workers: list[CoreWorkerStatsReply]
    store_stats: dict
    #: (object id, size, owner worker id, state, spilled) per stored object
    stored: list


class PrepareBundleResources(Message):
    """Phase one of placing a group: reserve these bundles' resources here."""

    placement_group_id: bytes
    #: (bundle index, resources) pairs
    bundles: list[tuple[int, dict[str, float]]]


class PrepareBundleResourcesReply(Message):
    success: bool
    message: str = ""


class CommitBundleResources(Message):
    """Phase two: turn the reservations into the group's own resources."""

    placement_group_id: bytes
    bundle_indexes: list[int]


class CancelResourceReserve(Message):
    """Roll back a prepare, or remove a group's bundles; kills the work inside them."""

    placement_group_id: bytes
    bundle_indexes: list[int]
    #: The group is gone for good: refuse later requests for its resources.
    removed: bool = False


class ListLogFiles(Message):
    """The names of the node's log files matching ``glob_filter``."""

    glob_filter: str = "*"


class ListLogFilesReply(Message):
    names: list[str]


class ReadLogFile(Message):
    """A piece of one of the node's log files (``ember logs``, ``get_log``).

    ``offset`` < 0 asks for the last ``tail`` lines (all of them if ``tail`` <
    0); else the bytes from ``offset`` on, at most ``max_bytes``.
    """

    name: str
    offset: int = -1
    tail: int = 1000
    max_bytes: int = 1 << 20


class ReadLogFileReply(Message):
    data: bytes = b""
    #: Where the next read continues (the end of what was sent).
    offset: int = 0
    #: Why nothing could be read (no such file, say); "" if it could.
    error: str = ""
