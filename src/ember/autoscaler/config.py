"""The cluster config, in Ray's YAML shape, checked before anything starts.

A cluster config names the node types the autoscaler may launch and the
limits it keeps::

    cluster_name: demo
    max_workers: 4                 # worker nodes in all, the head not counted
    upscaling_speed: 1.0           # pending launches allowed, per running node
    idle_timeout_minutes: 5        # a worker idle this long is drained and removed
    provider: {type: local}        # or {type: command, create_command: ..., ...}
    head_node_type: head
    available_node_types:
      head: {resources: {CPU: 1}, node_config: {}, max_workers: 0}
      cpu4: {resources: {CPU: 4}, node_config: {}, min_workers: 0, max_workers: 2}

Why validate here, all at once: a mistake found by the monitor minutes after
start-up, in a log file, costs far more than a ValueError at ``ember start``
naming the field (``available_node_types.cpu4.max_workers``). Ray's keys for
cloud set-up (auth, setup_commands, docker, ...) are accepted and ignored, so
that a Ray cluster file loads unchanged; any other key is reported, since it
is most likely a typo of one that matters.

The defaults are Ray's: ``max_workers`` 2, ``upscaling_speed`` 1.0,
``idle_timeout_minutes`` 5; a node type's ``min_workers`` is 0 and its
``max_workers`` the cluster's.
"""
from __future__ import annotations

import dataclasses
import math
import typing

#: Provider types that ember ships (``provider.type``).
PROVIDER_TYPES = ("local", "command")

#: Ray's top-level keys that concern cloud set-up; accepted and ignored.
_IGNORED_KEYS = {
    "auth", "docker", "file_mounts", "cluster_synced_files", "file_mounts_sync_continuously",
    "rsync_exclude", "rsync_filter", "initialization_commands", "setup_commands",
    "head_setup_commands", "worker_setup_commands", "head_start_ray_commands",
    "worker_start_ray_commands", "min_workers", "target_utilization_fraction",
    "head_node", "worker_nodes", "worker_default_node_type", "metadata",
}
_KNOWN_KEYS = {"cluster_name", "max_workers", "upscaling_speed", "idle_timeout_minutes",
               "provider", "available_node_types", "head_node_type"}
_NODE_TYPE_KEYS = {"resources", "node_config", "min_workers", "max_workers", "labels",
                   "worker_setup_commands", "docker"}

DEFAULT_MAX_WORKERS = 2
DEFAULT_UPSCALING_SPEED = 1.0
DEFAULT_IDLE_TIMEOUT_MINUTES = 5.0


@dataclasses.dataclass(frozen=True)
class NodeTypeConfig:
    name: str
    #: What a node of this type advertises: {"CPU": 4, "GPU": 1, "custom": 2}.
    resources: dict[str, float]
    #: Provider-specific settings, passed through untouched.
    node_config: dict
    #: Invariant: 0 <= min_workers <= max_workers.
    min_workers: int
    max_workers: int
    labels: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class AutoscalerConfig:
    cluster_name: str
    #: Worker nodes in all (the head not counted).
    max_workers: int
    upscaling_speed: float
    idle_timeout_minutes: float
    #: ``{"type": "local" | "command", ...}``; the rest is the provider's.
    provider: dict
    node_types: dict[str, NodeTypeConfig]
    #: A key of ``node_types``; never launched or removed by the autoscaler.
    head_node_type: str

    @property
    def idle_timeout_s(self) -> float:
        return self.idle_timeout_minutes * 60.0

    def worker_types(self) -> dict[str, NodeTypeConfig]:
        return {name: t for name, t in self.node_types.items() if name != self.head_node_type}


def load_config(path: str) -> AutoscalerConfig:
    """Read and validate a cluster YAML file; ValueError names the file and the field."""
    import yaml  # the autoscaler's own dependency: drivers never pay its import
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except OSError as exc:
        raise ValueError(f"Cannot read the cluster config {path!r}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"The cluster config {path!r} is not valid YAML: {exc}") from exc
    try:
        return validate_config(raw)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def dump_config(config: AutoscalerConfig) -> dict:
    """The config as a YAML-able dict, in Ray's shape (what ``load_config`` reads)."""
    return {
        "cluster_name": config.cluster_name, "max_workers": config.max_workers,
        "upscaling_speed": config.upscaling_speed,
        "idle_timeout_minutes": config.idle_timeout_minutes, "provider": dict(config.provider),
        "head_node_type": config.head_node_type,
        "available_node_types": {
            name: {"resources": dict(t.resources), "node_config": dict(t.node_config),
                   "min_workers": t.min_workers, "max_workers": t.max_workers,
                   "labels": dict(t.labels)}
            for name, t in config.node_types.items()},
    }


def validate_config(raw: typing.Any) -> AutoscalerConfig:
    """Check a parsed cluster config; ValueError names the first wrong field."""
    if not isinstance(raw, dict):
        raise ValueError(f"The cluster config must be a mapping, got {type(raw).__name__}.")
    unknown = set(raw) - _KNOWN_KEYS - _IGNORED_KEYS
    if unknown:
        raise ValueError(f"Unknown field(s) {sorted(unknown)} in the cluster config; "
                         f"known fields: {sorted(_KNOWN_KEYS)}.")
    max_workers = _count(raw, "max_workers", DEFAULT_MAX_WORKERS, "max_workers")
    upscaling_speed = _number(raw, "upscaling_speed", DEFAULT_UPSCALING_SPEED)
    if upscaling_speed <= 0:
        raise ValueError(f"upscaling_speed must be > 0, got {upscaling_speed!r}.")
    idle = _number(raw, "idle_timeout_minutes", DEFAULT_IDLE_TIMEOUT_MINUTES)
    if idle < 0:
        raise ValueError(f"idle_timeout_minutes must be >= 0, got {idle!r}.")
    provider = raw.get("provider")
    if not isinstance(provider, dict) or "type" not in provider:
        raise ValueError("provider must be a mapping with a 'type' field, e.g. "
                         "{type: local}; got " + repr(provider) + ".")
    if provider["type"] not in PROVIDER_TYPES:
        raise ValueError(f"provider.type {provider['type']!r} is not a known node provider; "
                         f"ember has {list(PROVIDER_TYPES)}.")
    if provider["type"] == "command":
        _check_command_provider(provider)
    types_raw = raw.get("available_node_types")
    if not isinstance(types_raw, dict) or not types_raw:
        raise ValueError("available_node_types must be a non-empty mapping of node type "
                         "names to {resources, node_config, min_workers, max_workers}.")
    head = raw.get("head_node_type")
    if head not in types_raw:
        raise ValueError(f"head_node_type {head!r} must name one of available_node_types "
                         f"{sorted(types_raw)}.")
    node_types = {name: _node_type(name, spec, max_workers, name == head)
                  for name, spec in types_raw.items()}
    return AutoscalerConfig(
        cluster_name=str(raw.get("cluster_name", "default")), max_workers=max_workers,
        upscaling_speed=upscaling_speed, idle_timeout_minutes=idle, provider=dict(provider),
        node_types=node_types, head_node_type=head)


#: The placeholders the command provider fills in, per command.
COMMAND_PLACEHOLDERS = {
    "create_command": ("gcs_address", "node_type", "provider_node_id", "host", "num_cpus",
                       "num_gpus", "resources_json", "labels_json"),
    "terminate_command": ("gcs_address", "node_type", "provider_node_id", "host"),
}


def _check_command_provider(provider: dict) -> None:
    for key, names in COMMAND_PLACEHOLDERS.items():
        if not isinstance(provider.get(key), str) or not provider[key].strip():
            raise ValueError(f"provider.{key} must be a shell command (a string) for "
                             "provider.type 'command'.")
        try:
            provider[key].format(**{name: "" for name in names})
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"provider.{key} has a bad placeholder ({exc!r}); it may use "
                             f"{', '.join('{' + n + '}' for n in names)}, and {{{{ }}}} for a "
                             "literal brace.") from None
    hosts = provider.get("hosts")
    if hosts is not None and (not isinstance(hosts, list) or
                              not all(isinstance(h, str) for h in hosts)):
        raise ValueError(f"provider.hosts must be a list of host names, got {hosts!r}.")


def _node_type(name: str, spec: typing.Any, cluster_max: int, is_head: bool) -> NodeTypeConfig:
    field = f"available_node_types.{name}"
    if not isinstance(spec, dict):
        raise ValueError(f"{field} must be a mapping, got {spec!r}.")
    unknown = set(spec) - _NODE_TYPE_KEYS
    if unknown:
        raise ValueError(f"Unknown field(s) {sorted(unknown)} in {field}; known fields: "
                         f"{sorted(_NODE_TYPE_KEYS)}.")
    resources = spec.get("resources", {})
    if not isinstance(resources, dict):
        raise ValueError(f"{field}.resources must be a mapping, got {resources!r}.")
    for key, value in resources.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 \
                or not math.isfinite(value):
            raise ValueError(f"{field}.resources.{key} must be a non-negative number, "
                             f"got {value!r}.")
    if not is_head and not any(resources.values()):
        raise ValueError(f"{field}.resources is empty: a worker node type must provide some "
                         "resources (e.g. {CPU: 4}), or no demand could ever use it.")
    min_workers = _count(spec, "min_workers", 0, f"{field}.min_workers")
    max_workers = _count(spec, "max_workers", cluster_max, f"{field}.max_workers")
    if max_workers < min_workers:
        raise ValueError(f"{field}.max_workers ({max_workers}) is lower than "
                         f"{field}.min_workers ({min_workers}).")
    node_config = spec.get("node_config", {}) or {}
    if not isinstance(node_config, dict):
        raise ValueError(f"{field}.node_config must be a mapping, got {node_config!r}.")
    labels = spec.get("labels", {}) or {}
    if not isinstance(labels, dict):
        raise ValueError(f"{field}.labels must be a mapping, got {labels!r}.")
    return NodeTypeConfig(name, {k: float(v) for k, v in resources.items()}, node_config,
                          min_workers, max_workers, {str(k): str(v) for k, v in labels.items()})


def _count(raw: dict, key: str, default: int, field: str) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{field} must be a non-negative integer, got {value!r}.")
    return value


def _number(raw: dict, key: str, default: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{key} must be a number, got {value!r}.")
    return float(value)
