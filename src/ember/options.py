"""Validation of ``@remote`` and ``.options()`` arguments, shared by tasks and actors.

Each option has a type and a check, as in Ray: a value of the wrong type raises
``TypeError``, a value of the right type that makes no sense raises
``ValueError``, and an unknown keyword raises ``ValueError`` listing the valid
ones. Every message names the function or class it was given for. A check
returns its complaint, or raises TypeError itself for a nested value of the
wrong type (``runtime_env``, see ember/runtime_env.py).
"""
from __future__ import annotations

import dataclasses
import typing

from .protocol.common import (DefaultScheduling, NodeLabelScheduling, PlacementGroupScheduling,
                              SchedulingStrategy, SpreadScheduling)
from . import label_selector, runtime_env
from .core_worker import context
from .placement_group import group_resources
from .scheduling_strategies import PlacementGroupSchedulingStrategy


@dataclasses.dataclass(frozen=True)
class Option:
    types: tuple
    check: typing.Callable[[typing.Any], str | None] | None = None


def _non_negative(name):
    def check(value):
        if value is not None and value < 0:
            return (f"The resource {name!r} cannot be negative: it only accepts None, 0 or "
                    f"a positive number, got {value}.")
        return None
    return check


def _num_returns(value):
    if value is None or value in ("streaming", "dynamic"):
        return None
    if isinstance(value, int) and value >= 0:
        return None
    return ("'num_returns' only accepts None, a non-negative integer, 'streaming' "
            f"(for generators), or 'dynamic'; got {value!r}.")


def _resources(value):
    if value is None:
        return None
    for name, amount in value.items():
        if name in ("CPU", "GPU"):
            return (f"Use the 'num_{name.lower()}s' keyword instead of {name!r} in "
                    "'resources'.")
        if not isinstance(amount, (int, float)) or isinstance(amount, bool):
            return f"The resource {name!r} must be a number, got {amount!r}."
        if amount < 0:
            return (f"The resource {name!r} cannot be negative: it only accepts None, 0 or "
                    f"a positive number, got {amount}.")
    return None


def _retry_exceptions(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, (list, tuple)) and all(
            isinstance(v, type) and issubclass(v, BaseException) for v in value):
        return None
    return ("'retry_exceptions' must be a bool or a list of exception types, "
            f"got {value!r}.")


def _gpus(value):
    if value is not None and value > 1 and value != int(value):
        return f"'num_gpus' above 1 must be a whole number, got {value}."
    return _non_negative("num_gpus")(value)


def _runtime_env(value):
    runtime_env.validate(value)  # raises TypeError or ValueError naming the field
    return None


def _max_retries(value):
    if value is not None and value < -1:
        return f"'max_retries' must be -1 (retry forever) or >= 0, got {value}."
    return None


_number = (int, float, type(None))

COMMON_OPTIONS = {
    "num_cpus": Option(_number, _non_negative("num_cpus")),
    "num_gpus": Option(_number, _gpus),
    "resources": Option((dict, type(None)), _resources),
    "memory": Option(_number, _non_negative("memory")),
    "accelerator_type": Option((str, type(None))),
    "name": Option((str, type(None))),
    "scheduling_strategy": Option((str, object, type(None))),
    "runtime_env": Option((dict, type(None)), _runtime_env),
    "label_selector": Option((dict, type(None)), label_selector.selector_problem),
    "fallback_strategy": Option((list, type(None)), label_selector.fallback_problem),
    "_metadata": Option((dict, type(None))),
    "enable_task_events": Option((bool,)),
    "object_store_memory": Option(_number, _non_negative("object_store_memory")),
    "placement_group": Option((object,)),
    "placement_group_bundle_index": Option((int,)),
    "placement_group_capture_child_tasks": Option((bool, type(None))),
}

TASK_OPTIONS = dict(COMMON_OPTIONS, **{
    "num_returns": Option((int, str, type(None)), _num_returns),
    "max_retries": Option((int, type(None)), _max_retries),
    "retry_exceptions": Option((bool, list, tuple), _retry_exceptions),
    "max_calls": Option((int, type(None)), _non_negative("max_calls")),
    "_generator_backpressure_num_objects": Option((int, type(None))),
})

ACTOR_OPTIONS = dict(COMMON_OPTIONS, **{
    "max_restarts": Option((int,), lambda v: None if v >= -1 else
                           f"'max_restarts' must be -1 or >= 0, got {v}."),
    "max_task_retries": Option((int,), lambda v: None if v >= -1 else
                               f"'max_task_retries' must be -1 or >= 0, got {v}."),
    "max_concurrency": Option((int, type(None)), lambda v: None if v is None or v >= 1 else
                              f"'max_concurrency' must be >= 1, got {v}."),
    "max_pending_calls": Option((int,), lambda v: None if v == -1 or v >= 1 else
                                f"'max_pending_calls' must be -1 or >= 1, got {v}."),
    "namespace": Option((str, type(None))),
    "lifetime": Option((str, type(None)), lambda v: None if v in (None, "detached",
                                                                   "non_detached") else
                       f"'lifetime' must be 'detached' or 'non_detached', got {v!r}."),
    "get_if_exists": Option((bool,)),
    "concurrency_groups": Option((dict, list, type(None))),
    "allow_out_of_order_execution": Option((bool,)),
})


def validate(options: dict, valid: dict, what: str) -> None:
    """Raise for the first bad option in ``options``; ``what`` names the target."""
    for key, value in options.items():
        spec = valid.get(key)
        if spec is None:
            raise ValueError(
                f"Invalid option keyword {key!r} for {what}. "
                f"Valid ones are {sorted(valid)}.")
        if object not in spec.types and not isinstance(value, spec.types):
            raise TypeError(
                    f"The type of option {key!r} for {what} must be one of "
                f"{[t.__name__ for t in spec.types]}, but got {type(value).__name__} "
                f"({value!r}).")
        if isinstance(value, bool) and key in ("num_cpus", "num_gpus", "memory", "max_calls",
                                               "max_retries", "num_returns"):
            raise TypeError(f"Option {key!r} for {what} must be a number, not a bool.")
        if spec.check is not None and value is not None:
            try:
                problem = spec.check(value)
            except (TypeError, ValueError) as exc:  # checks of nested values raise
                raise type(exc)(f"{what}: {exc}") from None
            if problem:
                raise ValueError(f"{what}: {problem}")


def resource_request(options: dict, default_cpus: float) -> dict[str, float]:
    """The resources a task or actor asks for, in the names nodes advertise."""
    resources = {}
    cpus = options.get("num_cpus")
    resources["CPU"] = default_cpus if cpus is None else float(cpus)
    gpus = options.get("num_gpus")
    if gpus:
        resources["GPU"] = float(gpus)
    memory = options.get("memory")
    if memory:
        resources["memory"] = float(memory)
    for name, amount in (options.get("resources") or {}).items():
        resources[name] = float(amount)
    accelerator = options.get("accelerator_type")
    if accelerator:
        # As Ray: a node with such devices advertises "accelerator_type:<T>": 1
        # (ember start --resources '{"accelerator_type:A100": 1}').
        resources[f"accelerator_type:{accelerator}"] = 0.001
    return {k: v for k, v in resources.items() if v}


def placement(options: dict, what: str, resources: dict[str, float]):
    """(resources, strategy) to ask for, with placement groups applied.

    A task in a placement group asks for the group's resources instead of the
    node's (see ember.util.placement_group.group_resources). Without a strategy
    of its own, a task started by a task that captures child tasks joins its
    parent's group.
    """
    strategy = scheduling_strategy(options, what)
    if not isinstance(strategy, PlacementGroupScheduling):
        return resources, strategy
    return group_resources(resources, strategy.placement_group_id,
                           strategy.bundle_index), strategy


def captured_placement_group(core) -> bytes:
    """The group the running task captures its child tasks into, or b""."""
    spec = getattr(core.task_context, "spec", None) if core is not None else None
    if spec is not None and spec.placement_group_id and spec.capture_child_tasks:
        return spec.placement_group_id
    return b""


def placement_group_of(strategy: SchedulingStrategy) -> tuple[bytes, bool]:
    """(group id, whether it captures child tasks) for a task spec; (b"", False) if none."""
    if isinstance(strategy, PlacementGroupScheduling):
        return strategy.placement_group_id, strategy.capture_child_tasks
    return b"", False


def _inherited_strategy() -> PlacementGroupScheduling | None:
    pg_id = captured_placement_group(context.core)
    if pg_id:
        return PlacementGroupScheduling(pg_id, capture_child_tasks=True)
    return None


def scheduling_strategy(options: dict, what: str) -> SchedulingStrategy:
    """Convert the user's ``scheduling_strategy`` option to its wire form."""
    value = options.get("scheduling_strategy")
    legacy = options.get("placement_group")
    if value is None and legacy not in (None, "default"):
        value = PlacementGroupSchedulingStrategy(
            legacy, options.get("placement_group_bundle_index", -1),
            options.get("placement_group_capture_child_tasks"))
    if value is None:
        value = _inherited_strategy()
        if value is not None:
            return value
    if value is None or value == "DEFAULT":
        strategy = DefaultScheduling()
    elif value == "SPREAD":
        strategy = SpreadScheduling()
    elif isinstance(value, str):
        raise ValueError(
            f"{what}: scheduling_strategy {value!r} is not valid; use 'DEFAULT', 'SPREAD', "
            "or a strategy object from ember.util.scheduling_strategies.")
    elif hasattr(value, "to_wire"):
        strategy = value.to_wire()
    else:
        raise TypeError(
            f"{what}: scheduling_strategy must be 'DEFAULT', 'SPREAD' or a strategy object "
            f"from ember.util.scheduling_strategies, got {type(value).__name__}.")
    return _with_label_selector(strategy, options, what)


def _with_label_selector(strategy: SchedulingStrategy, options: dict,
                         what: str) -> SchedulingStrategy:
    """Apply ``label_selector`` and ``fallback_strategy`` as NODE_LABEL constraints."""
    selector = options.get("label_selector") or {}
    fallbacks = options.get("fallback_strategy") or []
    if not selector and not fallbacks:
        return strategy
    if not isinstance(strategy, (DefaultScheduling, NodeLabelScheduling)):
        raise ValueError(
            f"{what}: label_selector and fallback_strategy cannot be combined with the "
            f"{strategy.name} scheduling strategy in ember; use one or the other.")
    own = strategy if isinstance(strategy, NodeLabelScheduling) else NodeLabelScheduling()
    return NodeLabelScheduling(
        dict(own.hard_labels, **label_selector.constraints(selector)), own.soft_labels,
        [label_selector.constraints(f["label_selector"]) for f in fallbacks])
