"""``ray.util.scheduling_strategies``'s path: the classes live in ``ember.scheduling_strategies``.

They live outside ``ember.util`` for the reason ``ember.util.placement_group`` gives.
"""
from ..scheduling_strategies import (
    NodeAffinitySchedulingStrategy,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    NodeLabelSchedulingStrategy,
    PlacementGroupSchedulingStrategy)

__all__ = ["DoesNotExist", "Exists", "In", "NodeAffinitySchedulingStrategy",
           "NodeLabelSchedulingStrategy", "NotIn", "PlacementGroupSchedulingStrategy"]
