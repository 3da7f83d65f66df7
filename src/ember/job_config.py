"""``ray.job_config.JobConfig``: a job's settings, passed as ``init(job_config=...)``.

ember applies ``runtime_env`` (merged under ``init(runtime_env=...)``),
``ray_namespace`` and ``code_search_path`` (added to the workers' import path).
``metadata`` and ``default_actor_lifetime`` are kept on the object and checked,
as Ray checks them.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class JobConfig:
    jvm_options: list | None = None
    code_search_path: list | None = None
    runtime_env: dict | None = None
    metadata: dict | None = None
    ray_namespace: str | None = None
    default_actor_lifetime: str = "non_detached"
    _py_driver_sys_path: list | None = None

    def __post_init__(self):
        if self.runtime_env is not None and not isinstance(self.runtime_env, dict):
            raise TypeError("JobConfig: runtime_env must be a dict, got "
                            f"{type(self.runtime_env).__name__}.")
        if self.metadata is not None and not isinstance(self.metadata, dict):
            raise TypeError(f"JobConfig: metadata must be a dict, got "
                            f"{type(self.metadata).__name__}.")
        if self.default_actor_lifetime not in ("detached", "non_detached"):
            raise ValueError("JobConfig: default_actor_lifetime must be 'detached' or "
                             f"'non_detached', got {self.default_actor_lifetime!r}.")
        self.code_search_path = list(self.code_search_path or [])
        self.metadata = dict(self.metadata or {})

    def set_runtime_env(self, runtime_env: dict | None, validate: bool = False) -> None:
        self.runtime_env = runtime_env

    def set_ray_namespace(self, ray_namespace: str) -> None:
        self.ray_namespace = ray_namespace

    def set_metadata(self, key: str, value: str) -> None:
        self.metadata[key] = value

    def set_default_actor_lifetime(self, default_actor_lifetime: str) -> None:
        self.default_actor_lifetime = default_actor_lifetime
        self.__post_init__()
