"""``ray.util.state.common``: the state API's records (defined in ember.observability.schemas)."""
from __future__ import annotations

from ...observability.schemas import (DEFAULT_LIMIT, DEFAULT_RPC_TIMEOUT, PREDICATES,  # noqa: F401
                                      RESOURCES, ActorState, JobState, NodeState, ObjectState,
                                      PlacementGroupState, RuntimeEnvState, StateSchema,
                                      TaskState, WorkerState)
