"""The records the state API returns, with Ray's names and fields (``ray.util.state.common``).

Each record is a dataclass that also reads like a dict (``task["state"]``), as
Ray's do, so programs written against either style run unchanged. A field's
metadata says whether it is shown without ``detail=True`` and whether it can
be filtered on; the API checks filter keys against these lists and names the
valid ones when a key is wrong.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

#: Ray's default ``limit`` of the list APIs.
DEFAULT_LIMIT = 100
#: Ray's default ``timeout`` (seconds) of the state APIs.
DEFAULT_RPC_TIMEOUT = 30
#: The predicates a filter may use.
PREDICATES = ("=", "!=")


def column(*, detail: bool = False, filterable: bool = True, default=None):
    """A record field: shown in the base view unless ``detail``; filterable or not."""
    return dataclasses.field(default=default,
                             metadata={"detail": detail, "filterable": filterable})


class StateSchema:
    """Base of every record: dict-style access and the column lists of its class."""

    @classmethod
    def list_columns(cls, detail: bool = True) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)
                if detail or not f.metadata.get("detail", False)]

    @classmethod
    def columns(cls) -> set[str]:
        return set(cls.list_columns())

    @classmethod
    def base_columns(cls) -> set[str]:
        return set(cls.list_columns(detail=False))

    @classmethod
    def filterable_columns(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls) if f.metadata.get("filterable")}

    def asdict(self) -> dict:
        return dataclasses.asdict(self)

    def __getitem__(self, key):
        return getattr(self, key)

    def __setitem__(self, key, value):
        setattr(self, key, value)

    def __contains__(self, key) -> bool:
        return hasattr(self, key)

    def get(self, key, default=None):
        return getattr(self, key, default)


@dataclasses.dataclass
class ActorState(StateSchema):
    actor_id: str = column()
    class_name: str = column()
    #: DEPENDENCIES_UNREADY, PENDING_CREATION, ALIVE, RESTARTING or DEAD
    state: str = column()
    job_id: str = column()
    name: Optional[str] = column()
    node_id: Optional[str] = column()
    pid: Optional[int] = column()
    ray_namespace: Optional[str] = column()
    serialized_runtime_env: Optional[str] = column(detail=True, filterable=False)
    required_resources: Optional[dict] = column(detail=True, filterable=False)
    death_cause: Optional[dict] = column(detail=True, filterable=False)
    is_detached: Optional[bool] = column(detail=True, filterable=False)
    placement_group_id: Optional[str] = column(detail=True)
    repr_name: Optional[str] = column(detail=True)
    num_restarts: int = column(detail=True, filterable=False, default=0)
    num_restarts_due_to_lineage_reconstruction: int = column(detail=True, filterable=False,
                                                             default=0)


@dataclasses.dataclass
class PlacementGroupState(StateSchema):
    placement_group_id: str = column()
    name: str = column()
    creator_job_id: str = column()
    #: PENDING, CREATED, REMOVED or RESCHEDULING
    state: str = column()
    bundles: Optional[list] = column(detail=True, filterable=False)
    is_detached: Optional[bool] = column(detail=True)
    stats: Optional[dict] = column(detail=True, filterable=False)


@dataclasses.dataclass
class NodeState(StateSchema):
    node_id: str = column()
    node_ip: str = column()
    is_head_node: bool = column()
    #: ALIVE or DEAD
    state: str = column()
    state_message: Optional[str] = column(filterable=False)
    node_name: str = column()
    resources_total: dict = column(filterable=False)
    labels: dict = column(filterable=False)
    start_time_ms: Optional[int] = column(detail=True, filterable=False)
    end_time_ms: Optional[int] = column(detail=True, filterable=False)


@dataclasses.dataclass
class JobState(StateSchema):
    job_id: str = column()
    submission_id: Optional[str] = column()
    entrypoint: str = column(filterable=False)
    #: DRIVER (a script that called init) or SUBMISSION
    type: str = column()
    #: PENDING, RUNNING, STOPPED, SUCCEEDED or FAILED
    status: str = column()
    message: Optional[str] = column(filterable=False)
    error_type: Optional[str] = column(filterable=False)
    driver_info: Optional[dict] = column(filterable=False)
    start_time: Optional[int] = column(detail=True, filterable=False)
    end_time: Optional[int] = column(detail=True, filterable=False)
    metadata: Optional[dict] = column(detail=True, filterable=False)
    runtime_env: Optional[dict] = column(detail=True, filterable=False)
    driver_node_id: Optional[str] = column(detail=True, filterable=False)


@dataclasses.dataclass
class WorkerState(StateSchema):
    worker_id: str = column()
    is_alive: bool = column()
    #: WORKER or DRIVER
    worker_type: str = column()
    exit_type: Optional[str] = column()
    node_id: str = column()
    ip: str = column()
    pid: int = column()
    exit_detail: Optional[str] = column(detail=True, filterable=False)
    worker_launch_time_ms: Optional[int] = column(detail=True, filterable=False)
    worker_launched_time_ms: Optional[int] = column(detail=True, filterable=False)
    start_time_ms: Optional[int] = column(detail=True, filterable=False)
    end_time_ms: Optional[int] = column(detail=True, filterable=False)


@dataclasses.dataclass
class TaskState(StateSchema):
    task_id: str = column()
    attempt_number: int = column()
    name: str = column()
    #: PENDING_ARGS_AVAIL, PENDING_NODE_ASSIGNMENT, SUBMITTED_TO_WORKER, RUNNING,
    #: FINISHED or FAILED
    state: str = column()
    job_id: str = column()
    actor_id: Optional[str] = column()
    #: NORMAL_TASK, ACTOR_CREATION_TASK or ACTOR_TASK
    type: str = column()
    func_or_class_name: str = column()
    parent_task_id: str = column()
    node_id: Optional[str] = column()
    worker_id: Optional[str] = column()
    worker_pid: Optional[int] = column()
    error_type: Optional[str] = column()
    language: Optional[str] = column(detail=True)
    required_resources: Optional[dict] = column(detail=True, filterable=False)
    runtime_env_info: Optional[dict] = column(detail=True, filterable=False)
    placement_group_id: Optional[str] = column(detail=True)
    events: Optional[list] = column(detail=True, filterable=False)
    profiling_data: Optional[dict] = column(detail=True, filterable=False)
    creation_time_ms: Optional[int] = column(detail=True, filterable=False)
    start_time_ms: Optional[int] = column(detail=True, filterable=False)
    end_time_ms: Optional[int] = column(detail=True, filterable=False)
    task_log_info: Optional[dict] = column(detail=True, filterable=False)
    error_message: Optional[str] = column(detail=True, filterable=False)
    is_debugger_paused: Optional[bool] = column(detail=True)


@dataclasses.dataclass
class ObjectState(StateSchema):
    object_id: str = column()
    object_size: int = column()
    task_status: str = column()
    #: LOCAL_REFERENCE, ACTOR_HANDLE, USED_BY_PENDING_TASK, CAPTURED_IN_OBJECT, ...
    reference_type: str = column()
    call_site: str = column()
    #: WORKER or DRIVER: the kind of process holding the reference
    type: str = column()
    pid: int = column()
    ip: str = column()
    attempt_number: int = column(default=0)


@dataclasses.dataclass
class RuntimeEnvState(StateSchema):
    runtime_env: dict = column()
    success: bool = column()
    creation_time_ms: Optional[float] = column(filterable=False)
    node_id: str = column()
    ref_cnt: Optional[int] = column(detail=True, filterable=False)
    error: Optional[str] = column(detail=True)


#: Resource name (as the CLI and errors spell it) -> record class.
RESOURCES = {
    "actors": ActorState, "tasks": TaskState, "objects": ObjectState, "nodes": NodeState,
    "workers": WorkerState, "jobs": JobState, "placement-groups": PlacementGroupState,
    "runtime-envs": RuntimeEnvState,
}
