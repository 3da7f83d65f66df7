"""ember: a distributed computing framework with Ray Core's API, in pure Python.

    import ember as ray

    ray.init()

    @ray.remote
    def square(x):
        return x * x

    print(ray.get([square.remote(i) for i in range(4)]))  # [0, 1, 4, 9]
"""
from __future__ import annotations

import inspect

from ._version import __version__

from . import exceptions  # noqa: E402
from .generator import DynamicObjectRefGenerator, ObjectRefGenerator  # noqa: E402
from .ids import ActorID, JobID, NodeID, PlacementGroupID, TaskID, WorkerID  # noqa: E402
from .object_ref import ObjectRef  # noqa: E402
from .remote_function import RemoteFunction, not_remotable  # noqa: E402
from .runtime_context import get_runtime_context  # noqa: E402
from .worker import (available_resources, cancel, cluster_resources, get,  # noqa: E402
                     get_actor, get_gpu_ids, init, is_initialized, kill, nodes, put, shutdown,
                     wait)
from .actor import ActorClass, actor_class, method  # noqa: E402
from . import actor, job_config, util  # noqa: E402
from . import autoscaler  # noqa: E402  (ray.autoscaler.sdk.request_resources)
from .observability.timeline import timeline  # noqa: E402

from . import cloudpickle  # noqa: E402,F401 - Ray users reach it as ray.cloudpickle

ObjectID = ObjectRef  # Ray's old name, kept by Ray as an alias


def remote(*args, **kwargs):
    """Make a function a remote function (or a class an actor class).

    Use bare (``@ember.remote``) or with options (``@ember.remote(num_cpus=2)``).
    """
    if len(args) == 1 and not kwargs and callable(args[0]):
        return _make_remote(args[0], {})
    if len(args) == 1 and not kwargs:
        raise not_remotable(args[0])
    if args or not kwargs:  # @ember.remote(obj, ...) or @ember.remote()
        raise TypeError(
            "The @ember.remote decorator must be applied either with no arguments and no "
            "parentheses, for example '@ember.remote', or it must be applied using some of "
            "the arguments in the list ['num_returns', 'num_cpus', 'num_gpus', 'memory', "
            "'resources', 'max_calls', 'max_retries', 'retry_exceptions', "
            "'scheduling_strategy', ...], for example '@ember.remote(num_returns=2, "
            "resources={\"CustomResource\": 1})'.")

    def decorator(obj):
        return _make_remote(obj, kwargs)
    return decorator


def _make_remote(obj, options: dict):
    if inspect.isclass(obj):
        return actor_class(obj, options)
    if inspect.iscoroutinefunction(obj):
        raise ValueError(
            f"'async def' functions cannot be remote functions ({obj.__qualname__}): a task "
            "runs in a worker without an event loop of its own. Make it a plain function, or "
            "an async method of an actor (an async actor runs its methods on a loop).")
    return RemoteFunction(obj, options)


__all__ = [
    "init", "shutdown", "is_initialized", "remote", "get", "put", "wait", "cancel",
    "kill", "get_actor", "method", "actor", "util",
    "nodes", "cluster_resources", "available_resources", "get_gpu_ids",
    "get_runtime_context", "ObjectRef", "ObjectRefGenerator", "exceptions",
    "JobID", "TaskID", "ActorID", "NodeID", "ObjectID", "WorkerID", "PlacementGroupID",
    "timeline", "__version__", "job_config", "cloudpickle",
]
