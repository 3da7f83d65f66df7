"""Messages between core workers: task pushes, replies, object status, cancellation."""
from __future__ import annotations

import msgspec

from .common import Address, Message, SerializedValue


class TaskArg(msgspec.Struct, array_like=True, gc=False):
    """One argument: an inline value, or a reference the executor must fetch."""

    value: SerializedValue | None = None
    object_id: bytes = b""
    owner: Address | None = None


class TaskSpec(msgspec.Struct, array_like=True, gc=False):
    task_id: bytes
    job_id: bytes
    #: Key of the pickled function in the GCS key-value store.
    function_id: bytes
    #: Qualified name, shown in errors, logs and ``ember status``.
    function_name: str
    args: list[TaskArg]
    #: The last ``len(kwarg_names)`` args are keyword arguments.
    kwarg_names: list[str]
    #: >= 0 a fixed count; -1 a streaming generator.
    num_returns: int
    owner: Address
    resources: dict[str, float]
    max_retries: int = 0
    retry_exceptions: bool = False
    #: Pickled tuple of exception classes; b"" means any exception.
    retry_exception_allowlist: bytes = b""
    attempt: int = 0
    max_calls: int = 0
    name: str = ""
    # --- actor tasks ---
    actor_id: bytes = b""
    #: Per-caller sequence number for ordering actor calls.
    sequence_number: int = 0
    method_name: str = ""
    concurrency_group: str = ""
    is_actor_creation: bool = False
    #: Pickled actor creation options (max_concurrency, groups, ...).
    actor_options: bytes = b""
    #: The placement group the task runs in, and whether its children do too.
    placement_group_id: bytes = b""
    capture_child_tasks: bool = False
    #: The resolved runtime env (env vars, package URIs) as canonical JSON; ""
    #: for none. See ember/runtime_env.py.
    runtime_env: str = ""


class PushTask(Message):
    spec: TaskSpec
    #: GPU ids the lease holds, exported as CUDA_VISIBLE_DEVICES.
    gpu_ids: list[int] = []
    #: The lease this push runs under.
    lease_id: bytes = b""
    #: The raylet's grant of that lease (LeaseGranted.grant). Without a
    #: valid one a worker refuses the push; actor calls need none.
    grant: bytes = b""


class ReturnObject(msgspec.Struct, array_like=True, gc=False):
    object_id: bytes
    value: SerializedValue


class PushTaskReply(Message):
    returns: list[ReturnObject]
    #: The task raised; ``returns`` hold the error.
    is_application_error: bool = False
    #: The error matches retry_exceptions, so the owner may retry.
    retryable: bool = False
    #: The worker exits after this reply (max_calls reached, exit_actor).
    worker_exiting: bool = False
    #: Streaming generators: how many items were reported.
    num_generator_items: int = 0
    #: Seconds the task ran, so owners pipeline only short tasks.
    duration: float = 0.0


class GeneratorItem(Message):
    """One value yielded by a streaming generator task, sent as it is produced."""

    task_id: bytes
    index: int
    value: ReturnObject


class CancelTask(Message):
    task_id: bytes
    force: bool = False
    recursive: bool = True


class CancelOwnedTask(Message):
    """To a task's owner: cancel it (``ember.cancel`` of a ref borrowed elsewhere)."""

    task_id: bytes
    force: bool = False
    recursive: bool = True


class CancelTaskReply(Message):
    attempted: bool


class GetObjectStatus(Message):
    """A borrower asks the owner for objects; answered when all (or any) are ready.

    Before answering, the owner registers ``requester`` as a borrower of the
    refs nested in the values it returns (see reference_counter.py).
    """

    object_ids: list[bytes]
    requester: Address | None = None
    #: False: answer as soon as at least one is ready (ray.wait).
    wait_all: bool = True
    #: Objects the requester could not copy from the node the owner named: the
    #: owner rebuilds those whose node died (see core_worker/lineage.py).
    lost: list[bytes] = []


class GetObjectStatusReply(Message):
    #: Per object: "ready", "pending" (wait_all=False only) or "freed".
    statuses: list[str]
    values: list[SerializedValue | None]


class AddObjectLocation(Message):
    """Reader to owner (notification): a copy of this object now lives on ``node_id``.

    The owner deletes every copy it knows of when it frees the object; if it
    has freed it already, it deletes this copy at once.
    """

    object_id: bytes
    #: The node whose object store holds the new (secondary) copy.
    node_id: bytes


class AddBorrower(Message):
    """Owner: ``borrower`` is about to receive these refs; count it as a borrower."""

    object_ids: list[bytes]
    borrower: Address


class RemoveBorrower(Message):
    """Borrower to owner: I dropped these refs; ``counts[i]`` registrations end."""

    object_ids: list[bytes]
    counts: list[int]
    borrower_worker_id: bytes


class Exit(Message):
    """Ask a worker to exit (its job ended or the node stops)."""

    reason: str = ""


class ExitIfIdle(Message):
    """Raylet to an idle worker it would reap: exit, unless you must stay.

    A worker that owns objects someone still references stays, as in Ray: its
    death would make them unreadable (OwnerDiedError). It is asked again later.
    """


class ExitIfIdleReply(Message):
    #: True: the worker is exiting. False: it stays.
    exiting: bool
    #: Why it stays: how many objects it owns are still referenced.
    owned_in_use: int = 0


class ReferenceInfo(msgspec.Struct, array_like=True, gc=False):
    """One reference held by a core worker, for ``ember memory``."""

    object_id: bytes
    #: LOCAL_REFERENCE, ACTOR_HANDLE, USED_BY_PENDING_TASK, CAPTURED_IN_OBJECT,
    #: BORROWED_BY_OTHERS
    ref_type: str
    size: int
    owner_worker_id: bytes
    in_store: bool
    call_site: str = ""


class GetCoreWorkerStats(Message):
    """Raylet to core worker, over the worker's registration connection."""


class RuntimeEnvUse(msgspec.Struct, array_like=True, gc=False):
    """A runtime env a worker set up (``list_runtime_envs``)."""

    #: Its wire form (see ember/runtime_env.py).
    serialized: str
    success: bool
    #: Unix time in ms when this worker first set it up.
    created_ms: float
    error: str = ""
    #: Whether the worker is in it now.
    in_use: bool = False


class CoreWorkerStatsReply(Message):
    worker_id: bytes
    pid: int
    is_driver: bool
    references: list[ReferenceInfo]
    runtime_envs: list[RuntimeEnvUse] = []
