"""``ember.util``: utilities built on tasks and actors, as in ``ray.util``."""
from __future__ import annotations

from ..worker import list_named_actors
from .actor_pool import ActorPool

__all__ = ["ActorPool", "list_named_actors"]
