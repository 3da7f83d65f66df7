"""Messages of the GCS service: nodes, jobs, key-value store, pub/sub, health."""
from __future__ import annotations

import msgspec

from .common import Address, Message, SchedulingStrategy


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
    #: Marked by the autoscaler before it removes the node: no new work goes there.
    draining: bool = False
    #: The ports its workers and drivers listen on (``ember.ports.WorkerPorts.spec``):
    #: "" any, "LOW-HIGH" or "P1,P2,...".
    worker_ports: str = ""
    #: Its Prometheus endpoint's port; 0 if it serves none.
    metrics_export_port: int = 0
    #: The dashboard's port, on the head when it serves one; else 0.
    dashboard_port: int = 0
    #: The GCS's port, on the head; else 0.
    gcs_port: int = 0


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
    #: The Jobs API submission this driver runs for ("" for a driver started by hand).
    submission_id: str = ""


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


class ResourceDemand(msgspec.Struct, array_like=True, gc=False):
    """``count`` lease requests of one resource shape, queued at a raylet."""

    shape: dict[str, float]
    count: int
    #: No node of the cluster can hold it (the raylet's infeasible queue).
    infeasible: bool = False


class ReportResources(Message):
    """A raylet's current availability; sent when it changes, at most every period."""

    node_id: bytes
    available: dict[str, float]
    #: Demand that fits nowhere locally: list of resource dicts.
    pending_demand: list[dict[str, float]] = []
    #: The node's totals, when they changed (placement group bundles come and go).
    total: dict[str, float] | None = None
    #: Every lease request queued here, by shape (infeasible ones included).
    demand: list[ResourceDemand] = []
    #: Why the node is not idle ("2 leased workers", "1 primary object"); empty if idle.
    busy: list[str] = []


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
    #: Set when a driver reconnects to a restarted GCS: take up this job again.
    job_id: bytes = b""
    #: The Jobs API submission the driver runs for (its EMBER_JOB_SUBMISSION_ID), or "".
    submission_id: str = ""


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
    ``keys`` limits keyed channels (actor) to those keys; empty means all.
    """

    channels: list[str]
    job_id: bytes = b""
    keys: list[bytes] = []


class Unsubscribe(Message):
    channel: str
    keys: list[bytes] = []


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
    #: The job's driver, whose objects every raylet can now free.
    driver_worker_id: bytes = b""


class Ack(Message):
    """A reply that carries nothing but success."""


class ResourcesChanged(Message):
    """Published on channel "resources": the nodes whose availability changed lately.

    Batched by the GCS (one message per report period, whatever the number of
    nodes), so that every raylet's view of the others stays fresh for its
    spillback decisions without polling.
    """

    #: node id -> available resources.
    available: dict[bytes, dict[str, float]]
    #: node id -> total resources, for the nodes whose totals changed.
    total: dict[bytes, dict[str, float]] = {}


CHANNEL_NODE = "node"
CHANNEL_RESOURCES = "resources"
CHANNEL_LOG = "log"
CHANNEL_ERROR = "error"
CHANNEL_JOB = "job"
#: ReportWorkerFailure, as raylets report it: other raylets free the objects the
#: dead worker owned (it may have owned primaries on any node).
CHANNEL_WORKER = "worker"


# --- actors -----------------------------------------------------------------

class ActorInfo(msgspec.Struct, array_like=True, gc=False):
    """The GCS's record of one actor. ``state`` is an ActorState name."""

    actor_id: bytes
    job_id: bytes
    class_name: str
    state: str
    owner: Address
    name: str = ""
    namespace: str = ""
    is_detached: bool = False
    max_restarts: int = 0
    num_restarts: int = 0
    #: The actor's worker, once ALIVE.
    address: Address | None = None
    node_id: bytes = b""
    pid: int = 0
    #: Why the actor is DEAD (or last restarted), in words for the user.
    death_cause: str = ""
    #: Pickled RayTaskError when __init__ raised; b"" otherwise.
    creation_error: bytes = b""
    #: Pickled method metadata, so that get_actor() can build a handle.
    method_meta: bytes = b""
    #: Pickled actor options a handle needs (max_task_retries, ...).
    handle_meta: bytes = b""
    #: Bumped with every change the GCS publishes. A subscriber's first look
    #: (a GetActorInfo reply) can cross a newer publication on the way, and
    #: this is how it tells the stale one.
    version: int = 0

    def describe(self) -> str:
        """How every error names an actor: its class, id, and name if it has one."""
        name = f", name={self.name!r}" if self.name else ""
        return f"{self.class_name} (id={self.actor_id.hex()}{name})"


class RegisterActor(Message):
    """Record a new actor (state DEPENDENCIES_UNREADY); refused if its name is taken."""

    info: ActorInfo
    #: With get_if_exists: return the existing actor of that name instead of failing.
    get_if_exists: bool = False


class RegisterActorReply(Message):
    #: The registered actor, or the existing one when get_if_exists matched.
    info: ActorInfo
    existed: bool = False


class CreateActor(Message):
    """The actor's dependencies are ready: schedule it and run its __init__."""

    actor_id: bytes
    #: ember.protocol.core_worker.TaskSpec of the creation task, msgpack-encoded.
    creation_spec: bytes
    #: Resources that choose the node, and those held while the actor lives.
    placement_resources: dict[str, float]
    resources: dict[str, float]
    strategy: SchedulingStrategy


class GetActorInfo(Message):
    actor_id: bytes


class GetActorInfoReply(Message):
    info: ActorInfo | None


class GetNamedActor(Message):
    name: str
    namespace: str


class ListNamedActors(Message):
    namespace: str
    all_namespaces: bool = False


class ListNamedActorsReply(Message):
    #: (namespace, name) pairs of live named actors.
    actors: list[tuple[str, str]]


class ListActors(Message):
    pass


class ListActorsReply(Message):
    actors: list[ActorInfo]


class KillActor(Message):
    actor_id: bytes
    force: bool = True
    no_restart: bool = True
    #: Who asked, in words: "ray.kill()", "its last handle went out of scope", ...
    reason: str = "killed by ember.kill()"


class ActorChanged(Message):
    """Published on channel "actor" (keyed by actor id) at each state change."""

    info: ActorInfo


class ReportWorkerFailure(Message):
    """A raylet tells the GCS that one of its workers died, and how."""

    worker_id: bytes
    node_id: bytes
    cause: str
    #: The worker exited on purpose (exit_actor, max_calls), not by a crash.
    intentional: bool = False
    #: Ray's exit type: SYSTEM_ERROR, INTENDED_SYSTEM_EXIT, USER_ERROR,
    #: INTENDED_USER_EXIT or NODE_OUT_OF_MEMORY ("" from older senders).
    exit_type: str = ""


# --- workers ------------------------------------------------------------------

class WorkerTableData(msgspec.Struct, array_like=True, gc=False):
    """One worker or driver process, as the GCS's worker table holds it."""

    worker_id: bytes
    node_id: bytes
    #: Where its core worker listens: every worker's port is known here, so an
    #: operator (or a firewall rule) never has to guess one.
    ip: str
    port: int
    pid: int
    #: "WORKER" or "DRIVER"
    worker_type: str
    job_id: bytes = b""
    is_alive: bool = True
    exit_type: str = ""
    exit_detail: str = ""
    #: Unix times, seconds.
    start_time: float = 0.0
    end_time: float = 0.0


class AddWorkerInfo(Message):
    """A raylet registers a worker or driver that connected to it (a notification)."""

    info: WorkerTableData


class GetAllWorkerInfo(Message):
    #: 0: no limit.
    limit: int = 0


class GetAllWorkerInfoReply(Message):
    workers: list[WorkerTableData]
    #: Workers in the table, beyond ``limit`` too.
    total: int = 0


CHANNEL_ACTOR = "actor"


# --- placement groups ---------------------------------------------------------

class PlacementGroupInfo(msgspec.Struct, array_like=True, gc=False):
    placement_group_id: bytes
    name: str
    namespace: str
    #: One resource dict per bundle.
    bundles: list[dict[str, float]]
    #: PACK, SPREAD, STRICT_PACK or STRICT_SPREAD
    strategy: str
    #: A PlacementGroupState name.
    state: str
    job_id: bytes
    is_detached: bool = False
    #: Node id of each bundle once placed; b"" while not.
    bundle_nodes: list[bytes] = []
    creator: Address | None = None
    #: Why it is still pending, or why it was removed.
    message: str = ""


class CreatePlacementGroup(Message):
    info: PlacementGroupInfo


class RemovePlacementGroup(Message):
    placement_group_id: bytes


class GetPlacementGroup(Message):
    """By id, or by name (and namespace) when the id is b""."""

    placement_group_id: bytes = b""
    name: str = ""
    namespace: str = ""


class GetPlacementGroupReply(Message):
    info: PlacementGroupInfo | None


class WaitPlacementGroupReady(Message):
    placement_group_id: bytes
    #: None waits as long as it takes.
    timeout: float | None = None


class WaitPlacementGroupReadyReply(Message):
    #: CREATED, REMOVED, or "" on timeout.
    state: str
    message: str = ""


class GetAllPlacementGroups(Message):
    pass


class GetAllPlacementGroupsReply(Message):
    groups: list[PlacementGroupInfo]


# --- autoscaler -------------------------------------------------------------------

class PlacementGroupDemand(msgspec.Struct, array_like=True, gc=False):
    """A placement group the GCS could not place yet: what it needs, and how."""

    placement_group_id: bytes
    bundles: list[dict[str, float]]
    #: PACK, SPREAD, STRICT_PACK or STRICT_SPREAD
    strategy: str


class GetClusterDemand(Message):
    """The autoscaler's one question per round: nodes, usage and every demand."""


class ClusterDemandReply(Message):
    nodes: list[NodeInfo]
    #: node_id -> available resources, as last reported.
    available: dict[bytes, dict[str, float]]
    #: node_id -> why it is not idle; an idle node has an empty list.
    busy: dict[bytes, list[str]]
    #: Queued lease shapes of every raylet, merged by shape.
    tasks: list[ResourceDemand]
    placement_groups: list[PlacementGroupDemand]
    #: The standing ``request_resources`` bundles.
    requested: list[dict[str, float]]


class DrainNode(Message):
    """Mark a node draining (``draining=True``) or back in service (False)."""

    node_id: bytes
    draining: bool = True


class DrainNodeReply(Message):
    #: False when the node is not alive.
    accepted: bool


class AutoscalerNodeReport(msgspec.Struct, array_like=True, gc=False):
    """One node of the autoscaler's, as ``ember status`` lists it."""

    provider_node_id: str
    node_type: str
    #: An ember.autoscaler.node_status.NodeStatus value.
    status: str
    #: The GCS node id once it joined; b"" before.
    node_id: bytes = b""
    #: Why a failed node failed.
    error: str = ""
    #: Wall-clock time of the last change, for "recently failed".
    time: float = 0.0


class AutoscalerStatus(msgspec.Struct, array_like=True, gc=False):
    """What the monitor last saw and did; kept in the KV store for ``ember status``."""

    time: float
    cluster_name: str
    nodes: list[AutoscalerNodeReport]
    #: Launch failures of the last hour, newest last.
    failures: list[AutoscalerNodeReport]
    #: Demand no node type can hold.
    infeasible: list[dict[str, float]] = []
    #: The config's head_node_type, the name ``ember status`` gives the head.
    head_node_type: str = "head"


#: KV namespace and key of the standing request_resources bundles (msgpack list of dicts).
AUTOSCALER_KV_NAMESPACE = "autoscaler"
REQUEST_RESOURCES_KEY = b"request_resources"
#: The monitor's last status (msgpack-encoded dict), for ``ember status``.
AUTOSCALER_STATUS_KEY = b"status"
