"""``ember.get_runtime_context()``: what the current driver, task or actor is."""
from __future__ import annotations

from .core_worker import context
from .runtime_env import RuntimeEnv, decode


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
        return (spec.name or spec.function_name) if spec is not None else None

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

    def get_actor_id(self) -> str | None:
        actor_id = getattr(self._core(), "actor_id", b"")
        return actor_id.hex() if actor_id else None

    def get_assigned_resources(self) -> dict[str, float]:
        spec = self._spec()
        if spec is None:
            return {}
        actor = self._core().actor
        resources = actor.resources if actor is not None else spec.resources
        return {k: v for k, v in resources.items() if v}

    def get_placement_group_id(self) -> str | None:
        return None

    @property
    def namespace(self) -> str:
        return self._core().namespace

    def get_namespace(self) -> str:
        return self.namespace

    @property
    def gcs_address(self) -> str:
        return self._core().gcs_address

    def was_current_actor_reconstructed(self) -> bool:
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
        import copy
        return RuntimeEnv(_validate=False, **copy.deepcopy(decode(self._core().runtime_env)))

    def get_runtime_env_string(self) -> str:
        """The runtime env in force here as JSON ("{}" for none)."""
        return self._core().runtime_env or "{}"

    def get_accelerator_ids(self) -> dict[str, list[str]]:
        ctx = self._core().task_context
        return {"GPU": [str(i) for i in getattr(ctx, "gpu_ids", None) or []]}

    def get(self) -> dict:
        return {"job_id": self.get_job_id(), "node_id": self.get_node_id(),
                "task_id": self.get_task_id(), "namespace": self.namespace}


_context = RuntimeContext()


def get_runtime_context() -> RuntimeContext:
    return _context
