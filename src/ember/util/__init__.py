"""``ember.util``: utilities built on tasks and actors, as in ``ray.util``."""
from __future__ import annotations

from ..worker import list_named_actors
from . import accelerators, scheduling_strategies  # noqa: F401 - Ray's ray.util.X attributes
from .actor_pool import ActorPool
from .check_serialize import inspect_serializability
from .placement_group import (get_current_placement_group, get_placement_group,
                              placement_group, placement_group_table,
                              remove_placement_group)
from .serialization import deregister_serializer, register_serializer
from ..core_worker import context
from ..node import default_node_ip


def get_node_ip_address() -> str:
    """The IP address of this process's node (of this machine, outside a cluster)."""
    core = context.core
    return core.node_ip if core is not None else default_node_ip()


__all__ = ["ActorPool", "deregister_serializer", "get_current_placement_group",
           "get_node_ip_address", "get_placement_group", "inspect_serializability",
           "list_named_actors", "placement_group", "placement_group_table",
           "register_serializer", "remove_placement_group"]
