"""``ember.get_runtime_context()``: what the current driver, task or actor is."""
from __future__ import annotations

import copy
import re
import warnings

from . import actor as actor_mod
from . import worker
from .core_worker import context
from .ids import ActorID, JobID, NodeID, PlacementGroupID, TaskID
from .placement_group import ungroup_resources
from .runtime_env import RuntimeEnv, decode

#: "module.outer.<locals>.f" -> "module.f": names as Ray shows them.
_LOCALS = re.compile(r"[^.]*\.<locals>\.")


class RuntimeContext:
    """A view of the current process's identity; values are read live."""

    def _core(self):
        return context.require_core("get_runtime_context()")

    def _spec(self):
        return getattr(self._core().task_context, "spec", None)

    def get_job_id(self) -> str:
        return self._core().job_id.hex()

    def get_node_id(self) -> str:
        return self._core().node_id.hex()

    def get_worker_id(self) -> str:
        return self._core().worker_id.hex()

    def get_task_id(self) -> str | None:
        spec = self._spec()
        return spec.task_id.hex() if spec is not None else None

    def get_task_name(self) -> str | None:
        spec = self._spec()
        if spec is None:
            return None
        return spec.name or _LOCALS.sub("", spec.function_name)

    def get_task_function_name(self) -> str | None:
        """The running task's function (or actor class and method) name, as Ray gives it:
        ``module.f`` or ``module.Class.method``."""
        spec = self._spec()
        if spec is None:
            return None
        name = _LOCALS.sub("", spec.function_name)
        actor = self._core().actor if spec.actor_id else None
        instance = getattr(actor, "instance", None)
        if instance is not None:
            name = f"{type(instance).__module__}.{name}"
        return name

    def get_node_labels(self) -> dict[str, str]:
        """The labels of the node this process runs on."""
        node_id = self.get_node_id()
        return next((dict(n["Labels"]) for n in worker.nodes() if n["NodeID"] == node_id), {})

    @property
    def current_actor(self):
        """A handle to the actor this code runs in (an error outside an actor)."""
        core = self._core()
        actor = core.actor
        if actor is None:
            raise RuntimeError("runtime_context.current_actor can only be used inside an "
                               "actor's methods (its __init__ included).")
        return actor_mod.ActorHandle(core.actor_id, actor.class_name,
                                     actor_mod.method_meta(type(actor.instance)), {})

    # Ray's older properties, returning ID objects; deprecated in Ray, with a warning.

    @property
    def job_id(self) -> JobID:
        _deprecated("job_id", "get_job_id")
        return JobID(self._core().job_id)

    @property
    def node_id(self) -> NodeID:
        _deprecated("node_id", "get_node_id")
        return NodeID(self._core().node_id)

    @property
    def task_id(self) -> TaskID | None:
        _deprecated("task_id", "get_task_id")
        spec = self._spec()
        return TaskID(spec.task_id) if spec is not None else None

    @property
    def actor_id(self) -> ActorID | None:
        _deprecated("actor_id", "get_actor_id")
        actor_id = self._core().actor_id
        return ActorID(actor_id) if actor_id else None

    @property
    def current_placement_group_id(self) -> PlacementGroupID | None:
        _deprecated("current_placement_group_id", "get_placement_group_id")
        pg_id = self.get_placement_group_id()
        return PlacementGroupID(bytes.fromhex(pg_id)) if pg_id else None

    def get_dashboard_url(self) -> str:
        """The dashboard's address ("" without a dashboard), as Ray gives it."""
        return worker.dashboard_url(self._core().session_dir) or ""

    def is_canceled(self) -> bool:
        """Whether ember.cancel() was called on the task or actor call running now.

        A running call of a plain (not async) actor is never interrupted: it
        may check this now and then to stop early.
        """
        spec = self._spec()
        executor = self._core().executor
        if spec is None or executor is None:
            raise RuntimeError("get_runtime_context().is_canceled() can only be called "
                               "inside a task or an actor method, not in the driver.")
        return executor.is_cancelled(spec.task_id)

    def get_actor_name(self) -> str | None:
        """The name of the actor this code runs in ("" if unnamed); None outside an
        actor, as in Ray."""
        actor = self._core().actor
        return actor.name if actor is not None else None

    def get_actor_id(self) -> str | None:
        actor_id = getattr(self._core(), "actor_id", b"")
        return actor_id.hex() if actor_id else None

    def get_assigned_resources(self) -> dict[str, float]:
        spec = self._spec()
        if spec is None:
            return {}
        core = self._core()
        actor = core.actor
        resources = actor.resources if actor is not None else spec.resources
        pg_id = spec.placement_group_id or core.actor_placement_group_id
        if pg_id:
            resources = ungroup_resources(resources, pg_id)
        return {k: v for k, v in resources.items() if v}

    def get_placement_group_id(self) -> str | None:
        """The placement group the running task or actor is in, or None."""
        spec = self._spec()
        pg_id = (spec.placement_group_id if spec is not None else b"") or \
            self._core().actor_placement_group_id
        return pg_id.hex() if pg_id else None

    @property
    def namespace(self) -> str:
        return self._core().namespace

    def get_namespace(self) -> str:
        return self.namespace

    @property
    def gcs_address(self) -> str:
        return self._core().gcs_address

    @property
    def was_current_actor_reconstructed(self) -> bool:
        """Whether this actor was restarted (a property, as in Ray)."""
        spec = self._spec()
        if spec is not None and spec.is_actor_creation:  # inside __init__
            return spec.attempt > 0
        actor = self._core().actor
        return actor is not None and actor.restarted

    @property
    def runtime_env(self):
        """The runtime env in force here, resolved (package URIs, not local paths):
        the job's in a driver, the task's or actor's (merged with the job's) in a
        worker; a ``RuntimeEnv`` dict."""
        return RuntimeEnv(_validate=False, **copy.deepcopy(decode(self._core().runtime_env)))

    def get_runtime_env_string(self) -> str:
        """The runtime env in force here as JSON ("{}" for none)."""
        return self._core().runtime_env or "{}"

    def get_accelerator_ids(self) -> dict[str, list[str]]:
        ctx = self._core().task_context
        return {"GPU": [str(i) for i in getattr(ctx, "gpu_ids", None) or []]}

    def get(self) -> dict:
        """As Ray: job, node and namespace; in a worker, the task and actor too."""
        core = self._core()
        out = {"job_id": JobID(core.job_id), "node_id": NodeID(core.node_id),
               "namespace": self.namespace}
        if not core.is_driver:
            spec = self._spec()
            if spec is not None:
                out["task_id"] = TaskID(spec.task_id)
            if core.actor_id:
                out["actor_id"] = ActorID(core.actor_id)
        return out


_context = RuntimeContext()


def get_runtime_context() -> RuntimeContext:
    """The context of this driver, task or actor; connects first if need be, as Ray."""
    if context.core is None:
        worker.init()
    return _context


def _deprecated(name: str, instead: str) -> None:
    warnings.warn(f"get_runtime_context().{name} is deprecated. Use {instead}() instead.",
                  DeprecationWarning, stacklevel=3)
