"""``ray.util.placement_group``'s path: the API lives in ``ember.placement_group``.

It lives outside ``ember.util`` because the task options below the API need it,
and ``ember.util``'s package face imports the API (ActorPool, ...) above them.
"""
from ..ids import PlacementGroupID
from ..placement_group import (VALID_PLACEMENT_GROUP_STRATEGIES, PlacementGroup,
                               get_current_placement_group,
                               get_placement_group, placement_group, placement_group_table,
                               remove_placement_group)

__all__ = ["VALID_PLACEMENT_GROUP_STRATEGIES", "PlacementGroup", "PlacementGroupID", "get_current_placement_group",
           "get_placement_group", "placement_group", "placement_group_table",
           "remove_placement_group"]
