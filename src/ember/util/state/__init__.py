"""``ember.util.state``: the state API, with ``ray.util.state``'s names (see :mod:`.api`)."""
from __future__ import annotations

from .api import (get_actor, get_log, get_node, get_objects, get_placement_group, get_task,
                  get_worker, list_actors, list_jobs, list_logs, list_nodes, list_objects,
                  list_placement_groups, list_runtime_envs, list_tasks, list_workers,
                  summarize_actors, summarize_objects, summarize_tasks)
from .common import (ActorState, JobState, NodeState, ObjectState, PlacementGroupState,
                     RuntimeEnvState, TaskState, WorkerState)
from .exception import RayStateApiException

__all__ = ["ActorState", "JobState", "NodeState", "ObjectState", "PlacementGroupState",
           "RayStateApiException", "RuntimeEnvState", "TaskState", "WorkerState", "get_actor",
           "get_log", "get_node", "get_objects", "get_placement_group", "get_task",
           "get_worker", "list_actors", "list_jobs", "list_logs", "list_nodes", "list_objects",
           "list_placement_groups", "list_runtime_envs", "list_tasks", "list_workers",
           "summarize_actors", "summarize_objects", "summarize_tasks"]
